"""The jobs of a pipeline: one builder per system and stage, one build per planned job.

A job build runs ``redox-ci build`` on a worker of its system (native slots first, then
emulating ones), then, when the cache is on, pushes what it built (``cache.job_steps``).
The stage steps of the plan builder that start these builds are made here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildbot.plugins import util
from buildbot.process.results import EXCEPTION, FAILURE, SUCCESS, WARNINGS

from ..plan import OTHER_STAGE
from ..plan_cli import build_command_line
from . import cache
from . import schedulers as redox_schedulers
from .base import RedoxCiStep, job_of, lean_build, one_line
from .known import CheckKnownFailure, RememberOutcome, known_failures
from .pipeline import TriggerStage
from .retries import capped_build
from .workers import names_for, prefer_native

if TYPE_CHECKING:
    from ..config import LoadedSettings, Settings
    from ..secrets_file import Secrets


@dataclass(frozen=True)
class StageBuilder:
    name: str
    system: str
    stage: str
    # Native slots first, then emulating ones.
    workers: list[str]
    native: list[str]


def stage_builders(loaded: LoadedSettings) -> list[StageBuilder]:
    out = []
    for system in loaded.settings.flake.systems:
        workers = names_for(loaded.workers, system, emulated=True)
        native = names_for(loaded.workers, system)
        if workers:
            for stage in [*loaded.settings.plan.stages, OTHER_STAGE]:
                out.append(StageBuilder(f"{system}/{stage}", system, stage, workers, native))
    return out


def emulated(props) -> bool:
    """Whether the worker running this build emulates the job's system (worker property)."""
    return job_of(props).system in (props.getProperty("worker_emulated_systems") or [])


def keeps_outputs(props, default_branch: str) -> bool:
    """Whether a job's outputs get garbage-collection roots: a commit's build on the default
    branch (the first of [flake].branches), never another branch's or a forced one."""
    return (props.getProperty("plan_scheduler") == redox_schedulers.PLAN_SCHEDULER
            and props.getProperty("branch") == default_branch)


def build_args(settings: Settings):
    workers = settings.workers

    @util.renderer
    def render(props):
        job = job_of(props)
        return build_command_line(
            job.drv or "", attr=job.attr, system=job.system, checks=job.checks, checks_forced=job.checks_forced,
            checks_unavailable=job.checks_unavailable, output=job.output, flake=props.getProperty("flake") or None,
            min_free_gib=workers.min_free_gib, disk_path=workers.disk_path,
            gc_roots=workers.gc_roots if keeps_outputs(props, settings.flake.branches[0]) else None)
    return render


class BuildJob(RedoxCiStep):
    """Build one planned derivation; judge its tests from cargo's output.

    WARNINGS when it built but something wants a look (0 tests ran, tests that cannot be
    turned on); the summary names the aliases built with it and an emulated build.
    """

    def __init__(self, settings: Settings, **kwargs):
        # warnOnWarnings: the step's WARNINGS is the job's (Buildbot's default ignores it).
        super().__init__(settings.workers.command, verb_args=build_args(settings), name="build",
                         warnOnWarnings=True, **kwargs)

    async def interpret(self, data: dict, rc: int) -> int:
        # The verb's answer as it is, one property: tests, outputs, status, reason, warnings.
        self.setProperty("build_result", data, "BuildJob")
        prefix = "doCheck turned on by redox-ci; " if data.get("checks_forced") else ""
        first = (data.get("reason") or data["status"]).splitlines()[0]
        aliases = job_of(self).aliases
        tail = f" (also {', '.join(aliases)})" if aliases else ""
        if emulated(self):
            tail += f"; built by emulation on {self.getProperty('worker_host') or 'this worker'}"
        if data["status"] == "not-built":
            # The worker's trouble (too little disk), not the job's: Buildbot's EXCEPTION,
            # shown apart from failures. Not RETRY: Buildbot would queue it again at once,
            # on the same worker when it is the only one, without end.
            self._summary = one_line(f"{data['attr']}: not built: {first}")
            await self.addCompleteLog("not built", data.get("reason", ""))
            return EXCEPTION
        self._summary = one_line(f"{data['attr']}: {prefix}{first}{tail}")
        if data["status"] != "success":
            await self.addCompleteLog("failure", data.get("reason", ""))
            return FAILURE
        if data.get("warnings"):
            await self.addCompleteLog("warnings", "\n".join(data["warnings"]))
            return WARNINGS
        return SUCCESS


def job_factory(loaded: LoadedSettings, secrets: Secrets) -> util.BuildFactory:
    f = util.BuildFactory()
    f.buildClass = lean_build(capped_build(loaded.settings.jobs.retries))
    f.addStep(CheckKnownFailure())
    f.addStep(BuildJob(loaded.settings))
    for step in cache.job_steps(loaded, secrets):
        f.addStep(step)
    f.addStep(RememberOutcome())
    return f


def stage_steps(loaded: LoadedSettings) -> list[TriggerStage]:
    """The plan builder's steps that start each stage's jobs."""
    table = stage_builders(loaded)
    return [TriggerStage(stage, {b.system: b.name for b in table if b.stage == stage})
            for stage in [*loaded.settings.plan.stages, OTHER_STAGE]]


def builders(loaded: LoadedSettings, secrets: Secrets) -> list[util.BuilderConfig]:
    return [util.BuilderConfig(name=b.name, workernames=b.workers, nextWorker=prefer_native(b.native),
                               factory=job_factory(loaded, secrets), tags=[b.system, b.stage])
            for b in stage_builders(loaded)]


def services(loaded: LoadedSettings) -> list:
    # The derivations whose build failed, not built again by later commits for a while.
    return [known_failures(loaded.settings.jobs.known_failure_days)]


def schedulers(loaded: LoadedSettings) -> list:
    return [redox_schedulers.triggerable(b.name, b.name) for b in stage_builders(loaded)]
