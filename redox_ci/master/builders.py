"""The table of builders: what runs where.

``redox/plan`` evaluates the flake and triggers, stage by stage, one build per job
on ``<system>/<stage>``; jobs that are not built get a visible result from
``redox/report``. Builders exist only for systems some worker builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from buildbot.plugins import util
from buildbot.process.results import SKIPPED
from buildbot.process.build import Build

from ..config import LoadedSettings
from ..secrets_file import Secrets
from ..plan import OTHER_STAGE
from . import steps as redox_steps
from .boot import TriggerBoots, boot_builder_configs, boot_builders
from .steps import WORKER_SETTINGS, ResolveFlake, cache_env, settings_download
from .workers import names_for, prefer_native, slot_names

PLAN_BUILDER = "redox/plan"
REPORT_BUILDER = "redox/report"


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


@util.renderer
def plan_args(props):
    args = ["plan", "--flake", props.getProperty("flake_ref"), "--settings", WORKER_SETTINGS]
    systems = props.getProperty("systems")
    if systems:
        args += ["--systems", ",".join(systems if isinstance(systems, list) else [systems])]
    if props.getProperty("attrs"):
        args += ["--attrs", props.getProperty("attrs")]
    return args


def plan_factory(loaded: LoadedSettings, secrets: Secrets, job_builders: list[StageBuilder]) -> util.BuildFactory:
    settings = loaded.settings
    cmd = settings.workers.command
    f = util.BuildFactory()
    f.addStep(ResolveFlake(settings.flake.repo))
    f.addStep(settings_download(loaded))
    f.addStep(redox_steps.PlanStep(cmd, plan_args, name="plan", haltOnFailure=True, env=cache_env(secrets)))
    for stage in [*settings.plan.stages, OTHER_STAGE]:
        scheds = {b.system: b.name for b in job_builders if b.stage == stage}
        f.addStep(redox_steps.TriggerStage(stage, scheds, REPORT_BUILDER))
    if settings.boot.enabled:
        f.addStep(TriggerBoots(settings.boot.image_attr, settings.boot.bootloader_attr,
                               {route: name for route, name, _ in boot_builders(loaded)}, REPORT_BUILDER))
    return f


def job_factory(loaded: LoadedSettings, secrets: Secrets) -> util.BuildFactory:
    cmd = loaded.settings.workers.command
    f = util.BuildFactory()
    f.addStep(redox_steps.BuildJob(cmd))
    if loaded.settings.cache.enabled:
        f.addStep(settings_download(loaded, doStepIf=redox_steps.job_succeeded))
        f.addStep(redox_steps.CachePush(cmd, env=cache_env(secrets)))
    return f


class ReportBuild(Build):
    """Says "skipped" for a SKIPPED build; Buildbot would say "build successful"."""

    def allStepsDone(self):
        if self.results == SKIPPED and self.stopped_reason is None:
            return self.buildFinished(["skipped:", *self.text], self.results)
        return super().allStepsDone()


def report_factory() -> util.BuildFactory:
    f = util.BuildFactory()
    f.buildClass = ReportBuild
    f.addStep(redox_steps.ReportJob())
    return f


def builder_configs(loaded: LoadedSettings, secrets: Secrets) -> list[util.BuilderConfig]:
    all_workers = [slot for w in loaded.workers for slot in slot_names(w)]
    jobs = stage_builders(loaded)
    configs = [
        util.BuilderConfig(name=PLAN_BUILDER, workernames=all_workers,
                           factory=plan_factory(loaded, secrets, jobs), tags=["plan"]),
        util.BuilderConfig(name=REPORT_BUILDER, workernames=all_workers,
                           factory=report_factory(), tags=["report"]),
    ]
    for b in jobs:
        configs.append(util.BuilderConfig(name=b.name, workernames=b.workers, nextWorker=prefer_native(b.native),
                                          factory=job_factory(loaded, secrets), tags=[b.system, b.stage]))
    if loaded.settings.boot.enabled:
        configs += boot_builder_configs(loaded)
    return configs
