"""What the master's slices share: the step that runs a ``redox-ci`` verb on a worker.

Each step builds an argv (never a shell string), runs ``redox-ci --json-out FILE
VERB ...``, reads the JSON file back from the worker and turns it into a result, a
one-line summary and properties. What the verb printed (its summary for a person,
Nix's build log, errors) is the step's log. Also here: the flake reference of a
change, and the settings file for the worker.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar
from weakref import WeakKeyDictionary

from buildbot.plugins import steps
from buildbot.process import buildstep
from buildbot.steps.worker import CompositeStepMixin
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS
from twisted.internet import defer

from ..errors import FlakeError
from ..flake import flake_ref_for
from ..plan import Job

if TYPE_CHECKING:
    from ..config import LoadedSettings

# Settings file that steps download to the worker, beside the build.
WORKER_SETTINGS = "redox-ci-settings.toml"
# A step summary is one line in the web UI; longer reasons are in the log.
SUMMARY_CHARS = 200


class ShortRepr:
    """A step shown in the master's log by its class and name alone.

    Buildbot writes a step into twistd.log with every argument it was made with, twice a
    step (acquireLocks, releaseLocks): a step given the settings, or the settings file's
    text, would write kilobytes per step, hundreds of times per commit.
    """

    def __str__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'name', '')!r})"

    __repr__ = __str__


def invisible_skip(step: buildstep.BuildStep) -> bool:
    """Whether ``step`` would be skipped and then hidden: its ``doStepIf`` says no now, and
    its ``hideStepIf`` hides a SKIPPED step."""
    do, hide = step.doStepIf, step.hideStepIf
    if not callable(do) or do(step) is not False:
        return False
    return hide is True or (callable(hide) and hide(SKIPPED, step) is True)


class QuietSkips:
    """A ``Build`` that leaves out the steps ``invisible_skip`` finds, before they start.

    Buildbot gives a step its database row, state strings and transactions before it asks
    ``doStepIf``; a skipped, hidden step costs them all and shows nothing. Asking here,
    when the steps before it have finished (as Buildbot would ask a moment later), the
    step costs nothing. A job build skips its push after a failure, a plan build the
    stages with nothing to start.
    """

    def getNextStep(self):
        while True:
            step = super().getNextStep()
            if step is None or not invisible_skip(step):
                return step


class BuilderInfoOnce:
    """A ``Build`` of a virtual builder (``virtual_builder_name``, one per job) that looks
    its builder up and writes the builder's description and tags once per master process,
    not at every build.

    Buildbot's ``Build.getBuilderId`` finds the builder's row and rewrites its description
    and tags (a transaction, a lookup per tag, an event) at every build; a job's builder
    is the same at every commit, and a commit has hundreds of jobs. A builder whose info
    the properties change (another description or tags) is written again.
    """

    _known: ClassVar[WeakKeyDictionary] = WeakKeyDictionary()

    @defer.inlineCallbacks
    def getBuilderId(self):
        if self._builderid is not None or not self.hasProperty(self.VIRTUAL_BUILDERNAME_PROP):
            return (yield super().getBuilderId())
        name = self.getProperty(self.VIRTUAL_BUILDERNAME_PROP)
        info = repr([self.getProperty(p, getattr(self.builder.config, attr))
                     for p, attr in ((self.VIRTUAL_BUILDERDESCRIPTION_PROP, "description"),
                                     (self.VIRTUAL_BUILDER_PROJECT_PROP, "project"),
                                     (self.VIRTUAL_BUILDERTAGS_PROP, "tags"))])
        known = self._known.setdefault(self.master, {})
        if name in known and known[name][1] == info:
            self._builderid = known[name][0]
            return self._builderid
        builderid = yield super().getBuilderId()
        known[name] = (builderid, info)
        return builderid


def lean_build(build_class: type) -> type:
    """``build_class`` with ``QuietSkips`` and ``BuilderInfoOnce``: a build that costs the
    database what it shows and little more."""
    return type(f"Lean{build_class.__name__}", (QuietSkips, BuilderInfoOnce, build_class), {})


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= SUMMARY_CHARS else line[:SUMMARY_CHARS - 1] + "…"


def parse_result(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def job_properties(job: Job, flake: str, extra: dict[str, Any] | None = None) -> dict:
    """The properties of a job build: the job as one JSON document (one database row,
    not one per field), the flake to instantiate it from, and its name in the web UI."""
    return {
        "job": job.to_json(),
        "flake": flake,
        # Each attribute shows as a builder of its own in the web UI, with its own history.
        "virtual_builder_name": job.name,
        "virtual_builder_tags": [job.system, job.stage],
        **(extra or {}),
    }


def job_of(props) -> Job:
    """The job a job build runs (its ``job`` property): the one reader of job data."""
    return Job.from_json(props.getProperty("job"))


def stderr_reason(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("redox-ci ")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["no output"])[-1]


class ResolveFlake(ShortRepr, buildstep.BuildStep):
    """Set ``flake_ref`` from the configured repository and the change's branch and revision.

    The repository always comes from the settings, never from a change or webhook.
    """

    name = "resolve flake"

    def __init__(self, repo: str, **kwargs):
        self.repo = repo
        super().__init__(haltOnFailure=True, **kwargs)
        self._summary = ""

    async def run(self):
        try:
            ref = flake_ref_for(self.repo, self.getProperty("branch") or None,
                                self.getProperty("revision") or None)
        except FlakeError as e:
            self._summary = str(e)
            return FAILURE
        self.setProperty("flake_ref", ref, "ResolveFlake")
        self._summary = ref
        return SUCCESS

    def getResultSummary(self):
        return {"step": self._summary}


class SettingsDownload(ShortRepr, steps.StringDownload):
    pass


def settings_download(loaded: LoadedSettings, **kwargs) -> steps.StringDownload:
    """The settings file, for the worker's redox-ci (it holds no secrets)."""
    return SettingsDownload(loaded.path.read_text(), workerdest=WORKER_SETTINGS, name="settings to worker",
                                hideStepIf=lambda r, s: r in (SUCCESS, SKIPPED), **kwargs)


class RedoxCiStep(ShortRepr, buildstep.ShellMixin, CompositeStepMixin, buildstep.BuildStep):
    """Run ``redox-ci --json-out FILE <args>``; subclasses say what the JSON means.

    The JSON comes back as a file, not from stdout: the worker cuts long stdout lines
    into chunks, and stdout then holds the verb's summary for a person.
    """

    renderables = ["verb_args"]

    def __init__(self, redox_ci: list[str], verb_args, settings_text: str | None = None, **kwargs):
        self.verb_args = verb_args
        self.redox_ci = list(redox_ci)
        # The settings file for the verb, sent within this step (no step of its own).
        self.settings_text = settings_text
        # Not the worker's environment in every log: it is long, and may hold what is not
        # a Buildbot secret (redaction knows only those).
        kwargs.setdefault("logEnviron", False)
        kwargs = self.setupShellMixin(kwargs)
        super().__init__(**kwargs)
        self._summary = ""

    async def run(self):
        if self.settings_text is not None:
            await self.downloadFileContentToWorker(WORKER_SETTINGS, self.settings_text, abandonOnFailure=True)
        result_file = f"redox-ci-result-{self.stepid}.json"
        self.command = [*self.redox_ci, "--json-out", result_file, *self.verb_args]
        cmd = await self.makeRemoteShellCommand(collectStderr=True)
        await self.runCommand(cmd)
        data = parse_result(await self.getFileContentFromWorker(result_file))
        if data is None:
            reason = stderr_reason(cmd.stderr) if cmd.stderr.strip() else f"exit {cmd.rc}, no result"
            self._summary = one_line(reason)
            return FAILURE
        return await self.interpret(data, cmd.rc)

    async def interpret(self, data: dict, rc: int) -> int:
        raise NotImplementedError

    def getResultSummary(self):
        if self._summary:
            return {"step": self._summary, "build": self._summary}
        return super().getResultSummary()
