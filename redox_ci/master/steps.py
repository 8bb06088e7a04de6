"""Steps that run ``redox-ci`` verbs on a worker and report their answer.

Each step builds an argv (never a shell string), runs ``redox-ci --json-out FILE
VERB ...``, reads the JSON file back from the worker and turns it into a result, a
one-line summary and properties. What the verb printed (its summary for a person,
Nix's build log, errors) is the step's log. Also here: what several builders share
(the flake reference of a change, the settings file for the worker, S3 credentials).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from buildbot.plugins import steps, util
from buildbot.process import buildstep
from buildbot.steps.worker import CompositeStepMixin
from buildbot.process.results import ALL_RESULTS, FAILURE, SKIPPED, SUCCESS, WARNINGS, statusToString

from ..errors import FlakeError
from ..flake import flake_ref_for
from ..plan import Job, JobStatus, Plan

if TYPE_CHECKING:
    from ..config import LoadedSettings
    from ..secrets_file import Secrets

# Settings file that steps download to the worker, beside the build.
WORKER_SETTINGS = "redox-ci-settings.toml"
# A step summary is one line in the web UI; longer reasons are in the log.
SUMMARY_CHARS = 200


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= SUMMARY_CHARS else line[:SUMMARY_CHARS - 1] + "…"


def parse_result(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def stderr_reason(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("redox-ci ")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["no output"])[-1]


class ResolveFlake(buildstep.BuildStep):
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


def cache_env(secrets: Secrets) -> dict:
    """S3 credentials for worker commands, as util.Secret so that logs redact them.

    Only those in the secrets file; without them boto3 on the worker uses its own chain.
    """
    return {f"AWS_{k.removeprefix('cache-aws_').upper()}": util.Secret(k)
            for k in secrets.values if k.startswith("cache-aws_")}


def settings_download(loaded: LoadedSettings, **kwargs) -> steps.StringDownload:
    """The settings file, for the worker's redox-ci (it holds no secrets)."""
    return steps.StringDownload(loaded.path.read_text(), workerdest=WORKER_SETTINGS, name="settings to worker",
                                hideStepIf=lambda r, s: r in (SUCCESS, SKIPPED), **kwargs)


class RedoxCiStep(buildstep.ShellMixin, CompositeStepMixin, buildstep.BuildStep):
    """Run ``redox-ci --json-out FILE <args>``; subclasses say what the JSON means.

    The JSON comes back as a file, not from stdout: the worker cuts long stdout lines
    into chunks, and stdout then holds the verb's summary for a person.
    """

    renderables = ["verb_args"]

    def __init__(self, redox_ci: list[str], verb_args, **kwargs):
        self.verb_args = verb_args
        self.redox_ci = list(redox_ci)
        kwargs = self.setupShellMixin(kwargs)
        super().__init__(**kwargs)
        self._summary = ""

    async def run(self):
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


class PlanStep(RedoxCiStep):
    """Evaluate the flake once; the plan (``Plan.to_json``) becomes the ``plan`` property."""

    async def interpret(self, data: dict, rc: int) -> int:
        plan = Plan.from_json(data)
        summary = plan.summary()
        self.setProperty("plan", plan.to_json(), "PlanStep")
        await self.addCompleteLog("plan", "\n".join(
            f"{j.status:8} {j.stage:16} {j.system:14} {j.name.split('.', 1)[1]}"
            + (f" (also {', '.join(j.aliases)})" if j.aliases else "")
            + (f"  - {j.reason}" if j.reason else "") for j in plan.jobs))
        if plan.ignored:
            await self.addCompleteLog("not built", "\n".join(
                f"{i.system:14} {i.attr}: {i.reason}" for i in plan.ignored))
        self._summary = "plan: " + ", ".join(f"{n} {s}" for s, n in summary.items() if n)
        return WARNINGS if summary[JobStatus.FAILED] else SUCCESS


def planned(step: buildstep.BuildStep) -> Plan:
    """The ``plan`` property PlanStep set (an empty plan before it)."""
    data = step.getProperty("plan")
    return Plan.from_json(data) if data else Plan("", [])


@dataclass(frozen=True)
class StageJob:
    """A job as a stage step starts it.

    ``route`` picks its scheduler (its system; ``<system>/<vmm>`` for a boot),
    ``no_worker`` is the reason it is skipped when no worker takes that route, and
    ``extra`` holds more properties for its build.
    """

    job: Job
    route: str
    no_worker: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, job: Job) -> StageJob:
        return cls(job, job.system, f"no worker builds {job.system}, natively or by emulation "
                                    "(a worker's systems or emulated_systems)")


def job_properties(job: Job, flake: str, extra: dict[str, Any] | None = None) -> dict:
    return {
        "attr": job.attr, "system": job.system, "stage": job.stage, "drv": job.drv or "",
        "checks": job.checks, "checks_forced": job.checks_forced, "checks_unavailable": job.checks_unavailable,
        "output": job.output, "aliases": list(job.aliases),
        "outputs": list(job.outputs), "job_status": job.status.value, "job_reason": job.reason,
        "flake": flake,
        # Each attribute shows as a builder of its own in the web UI, with its own history.
        "virtual_builder_name": job.name,
        "virtual_builder_tags": [job.system, job.stage],
        **(extra or {}),
    }


class TriggerStage(steps.Trigger):
    """Start one build per job of a stage, on the builder of its system and stage.

    Jobs that will not be built (skipped, failed to evaluate, or for a system no
    worker builds) go to the report builder, so every job has a visible result with
    its reason. Cached jobs cost no build at all: the step counts them and lists them
    in its "cached" log, so a commit whose outputs are all cached costs little more
    than its evaluation.
    """

    def __init__(self, stage: str, job_schedulers: dict[str, str], report_scheduler: str, **kwargs):
        self.stage = stage
        # A job's route (StageJob.route) -> scheduler name.
        self.job_schedulers = job_schedulers
        self.report_scheduler = report_scheduler
        names = sorted(set(job_schedulers.values()) | {report_scheduler})
        super().__init__(name=f"stage {stage}", schedulerNames=names, waitForFinish=True,
                         haltOnFailure=False, flunkOnFailure=True,
                         doStepIf=lambda step: bool(step.stage_jobs()),
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    def stage_jobs(self) -> list[StageJob]:
        return [StageJob.of(j) for j in planned(self).jobs if j.stage == self.stage]

    def cached_jobs(self) -> list[Job]:
        return [s.job for s in self.stage_jobs() if s.job.status == JobStatus.CACHED]

    async def run(self):
        cached = self.cached_jobs()
        if cached:
            await self.addCompleteLog("cached", "\n".join(j.name for j in cached))
        return await super().run()

    def getSchedulersAndProperties(self):
        flake = self.getProperty("flake_ref") or ""
        out = []
        for s in self.stage_jobs():
            job = s.job
            if job.status == JobStatus.CACHED:
                continue
            sched = self.job_schedulers.get(s.route)
            if job.status == JobStatus.BUILD and sched is None:
                job = replace(job, status=JobStatus.SKIPPED, reason=s.no_worker)
            if job.status != JobStatus.BUILD:
                sched = self.report_scheduler
            out.append({"sched_name": sched, "props_to_set": job_properties(job, flake, s.extra),
                        "unimportant": False})
        return out

    def getCurrentSummary(self):
        cached = len(self.cached_jobs())
        tail = f", {cached} cached" if cached else ""
        if not self.triggeredNames:
            return {"step": f"{self.stage}: {cached} cached" if cached else f"{self.stage}: starting"}
        counts = ", ".join(f"{self._result_list.count(r)} {statusToString(r, self._result_list.count(r))}"
                           for r in ALL_RESULTS if self._result_list.count(r))
        return {"step": f"{self.stage}: {len(self.brids)} jobs" + (f", {counts}" if counts else "") + tail}

    def getResultSummary(self):
        if not self.triggeredNames and self.cached_jobs():
            return self.getCurrentSummary()
        return super().getResultSummary()


def emulated(props) -> bool:
    """Whether the worker running this build emulates the job's system (worker property)."""
    return props.getProperty("system") in (props.getProperty("worker_emulated_systems") or [])


class BuildJob(RedoxCiStep):
    """Build one planned derivation; judge its tests from cargo's output.

    WARNINGS when it built but something wants a look (0 tests ran, tests that cannot be
    turned on); the summary names the aliases built with it and an emulated build.
    """

    def __init__(self, redox_ci: list[str], **kwargs):
        # warnOnWarnings: the step's WARNINGS is the job's (Buildbot's default ignores it).
        super().__init__(redox_ci, verb_args=build_args, name="build", warnOnWarnings=True, **kwargs)

    async def interpret(self, data: dict, rc: int) -> int:
        tests = data.get("tests")
        if tests:
            for key in ("passed", "failed", "ignored", "suites"):
                self.setProperty(f"tests_{key}", tests[key], "BuildJob")
        self.setProperty("out_paths", data.get("outputs", []), "BuildJob")
        self.setProperty("build_status", data["status"], "BuildJob")
        prefix = "doCheck turned on by redox-ci; " if data.get("checks_forced") else ""
        first = (data.get("reason") or data["status"]).splitlines()[0]
        aliases = self.getProperty("aliases") or []
        tail = f" (also {', '.join(aliases)})" if aliases else ""
        if emulated(self):
            tail += f"; built by emulation on {self.getProperty('worker_host') or 'this worker'}"
        self._summary = one_line(f"{data['attr']}: {prefix}{first}{tail}")
        if data["status"] != "success":
            await self.addCompleteLog("failure", data.get("reason", ""))
            return FAILURE
        if data.get("warnings"):
            await self.addCompleteLog("warnings", "\n".join(data["warnings"]))
            return WARNINGS
        return SUCCESS


@util.renderer
def build_args(props):
    args = ["build", "--drv", props.getProperty("drv"), "--attr", props.getProperty("attr"),
            "--system", props.getProperty("system")]
    if props.getProperty("checks"):
        args.append("--checks")
    if props.getProperty("checks_forced"):
        args.append("--checks-forced")
    if props.getProperty("checks_unavailable"):
        args.append("--checks-unavailable")
    if (props.getProperty("output") or "packages") != "packages":
        args += ["--output", props.getProperty("output")]
    if props.getProperty("flake"):
        args += ["--flake", props.getProperty("flake")]
    return args


@util.renderer
def push_args(props):
    return ["cache", "push", "--settings", WORKER_SETTINGS, *props.getProperty("out_paths")]


def job_succeeded(step) -> bool:
    return step.getProperty("build_status") == "success" and bool(step.getProperty("out_paths"))


class CachePush(RedoxCiStep):
    """Sign and upload a job's outputs to the binary cache.

    Outputs of a failed job are not pushed: a cached job is not built again, so its
    failing tests would never be seen again.
    """

    def __init__(self, redox_ci: list[str], **kwargs):
        super().__init__(redox_ci, verb_args=push_args, name="cache push", doStepIf=job_succeeded,
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    async def interpret(self, data: dict, rc: int) -> int:
        self.setProperty("cache_pushed", len(data["pushed"]), "CachePush")
        self.setProperty("cache_skipped", len(data["skipped"]), "CachePush")
        mib = data["bytes_uploaded"] / (1024 * 1024)
        self._summary = (f"pushed {len(data['pushed'])} paths ({mib:.1f} MiB) in {data['seconds']:.1f} s, "
                         f"{len(data['skipped'])} already cached")
        return SUCCESS if rc == 0 else FAILURE


class ReportJob(buildstep.BuildStep):
    """The result of a job that is not built: skipped, or failed to evaluate."""

    name = "report"

    async def run(self):
        status = self.getProperty("job_status")
        reason = self.getProperty("job_reason")
        self._summary = one_line(f"{self.getProperty('attr')}: {reason}")
        if status == JobStatus.SKIPPED:
            # Without this the build would end SUCCESS: SKIPPED steps do not lower it.
            self.build.results = SKIPPED
            return SKIPPED
        return FAILURE

    def getResultSummary(self):
        return {"step": self._summary, "build": self._summary}
