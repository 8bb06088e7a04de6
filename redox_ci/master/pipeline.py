"""The pipeline of a commit: ``redox/plan`` evaluates the flake once, then starts its jobs
stage by stage; jobs that are not built get a visible result from ``redox/report``.

This slice owns the plan and report builders, the schedulers that start a plan (commits,
the force form) and the canceller of superseded commits. What a stage starts comes from
the other slices (``jobs.stage_steps``, ``boot.stage_steps``) as Trigger steps built on
``TriggerStage``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from buildbot.plugins import steps, util
from buildbot.process import buildstep
from buildbot.process.build import Build
from buildbot.process.results import (ALL_RESULTS, CANCELLED, EXCEPTION, FAILURE, SKIPPED, SUCCESS, WARNINGS,
                                      statusToString, worst_status)

from ..errors import FlakeError
from ..flake import flake_ref_for
from ..plan import Job, JobStatus, Plan
from ..plan_cli import plan_command_line
from . import schedulers as redox_schedulers
from .base import WORKER_SETTINGS, RedoxCiStep, ResolveFlake, ShortRepr, job_of, job_properties, lean_build, one_line
from .cache import cache_env
from .restart import restart_cleanup
from .retries import PLAN_RETRIES, capped_build
from .superseded import superseded_canceller
from .workers import busy, slot_names

if TYPE_CHECKING:
    from ..config import LoadedSettings, Settings, WorkerSpec
    from ..secrets_file import Secrets

PLAN_BUILDER = "redox/plan"
REPORT_BUILDER = "redox/report"


@util.renderer
def plan_args(props):
    systems = props.getProperty("systems")
    return plan_command_line(props.getProperty("flake_ref"), settings=WORKER_SETTINGS,
                             systems=(systems if isinstance(systems, list) else [systems]) if systems else None,
                             attrs=(props.getProperty("attrs") or "").split() or None)


def plan_listing(plan: Plan) -> str:
    """The plan's jobs, one a line: status, stage, system, attribute, aliases, reason."""
    return "\n".join(f"{j.status:8} {j.stage:16} {j.system:14} {j.name.split('.', 1)[1]}"
                     + (f" (also {', '.join(j.aliases)})" if j.aliases else "")
                     + (f"  - {j.reason}" if j.reason else "") for j in plan.jobs)


class PlanStep(RedoxCiStep):
    """Evaluate the flake once; the plan (``Plan.to_json``) becomes the ``plan`` property."""

    async def interpret(self, data: dict, rc: int) -> int:
        plan = Plan.from_json(data)
        summary = plan.summary()
        self.setProperty("plan", plan.to_json(), "PlanStep")
        await self.addCompleteLog("plan", plan_listing(plan))
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


# The plan build's property that names its jobs that did not succeed, stage after stage.
UNSUCCESSFUL_PROPERTY = "unsuccessful_jobs"


def job_waves(jobs: list[StageJob]) -> list[list[StageJob]]:
    """Pure: ``jobs`` in the waves they start in; a job's wave comes after the waves of the
    jobs among ``jobs`` it needs (``Job.after``). Order within a wave is kept."""
    names = {s.job.name for s in jobs}
    level = {s.job.name: 0 for s in jobs}
    for _ in jobs:  # a longest path has at most len(jobs) jobs; derivations have no cycles
        changed = False
        for s in jobs:
            deps = [level[d] + 1 for d in s.job.after if d in names]
            if deps and max(deps) > level[s.job.name]:
                level[s.job.name], changed = max(deps), True
        if not changed:
            break
    waves = [[s for s in jobs if level[s.job.name] == n] for n in range(max(level.values(), default=-1) + 1)]
    return [w for w in waves if w]


def needing_unsuccessful(stage_job: StageJob, unsuccessful: set[str]) -> StageJob:
    """Pure: ``stage_job`` reported as skipped when a job it needs did not succeed (Nix
    would build that one again, and fail the same way)."""
    job = stage_job.job
    missing = [d for d in job.after if d in unsuccessful]
    if job.status != JobStatus.BUILD or not missing:
        return stage_job
    reason = f"not built: it needs {', '.join(missing)}, which did not succeed"
    return replace(stage_job, job=replace(job, status=JobStatus.SKIPPED, reason=reason))


class TriggerStage(ShortRepr, steps.Trigger):
    """Start one build per job of a stage, on the builder of its system and stage.

    Jobs that will not be built (skipped, failed to evaluate, or for a system no
    worker builds) go to the report builder, so every job has a visible result with
    its reason. Cached jobs cost no build at all: the step counts them and lists them
    in its "cached" log; a stage with nothing else has no step at all (``lean_build``),
    so a commit whose outputs are all cached costs little more than its evaluation.
    """

    def __init__(self, stage: str, job_schedulers: dict[str, str], report_scheduler: str = REPORT_BUILDER,
                 **kwargs):
        self.stage = stage
        # A job's route (StageJob.route) -> scheduler name.
        self.job_schedulers = job_schedulers
        self.report_scheduler = report_scheduler
        # The jobs run() starts now, and what each came to (worstStatus).
        self._wave: list[StageJob] = []
        self._wave_results: list[int] = []
        names = sorted(set(job_schedulers.values()) | {report_scheduler})
        super().__init__(name=f"stage {stage}", schedulerNames=names, waitForFinish=True,
                         haltOnFailure=False, flunkOnFailure=True,
                         doStepIf=lambda step: any(s.job.status != JobStatus.CACHED for s in step.stage_jobs()),
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    def jobs_of(self, plan: Plan) -> list[StageJob]:
        """Pure: the jobs of ``plan`` this stage starts or reports."""
        return [StageJob.of(j) for j in plan.jobs if j.stage == self.stage]

    def stage_jobs(self) -> list[StageJob]:
        return self.jobs_of(planned(self))

    def cached_jobs(self) -> list[Job]:
        return [s.job for s in self.stage_jobs() if s.job.status == JobStatus.CACHED]

    async def run(self):
        """Wave after wave (job_waves): each job after the jobs of the stage it needs; a
        job whose dependency did not succeed is reported, not built."""
        cached = self.cached_jobs()
        if cached:
            await self.addCompleteLog("cached", "\n".join(j.name for j in cached))
        results, unsuccessful = SUCCESS, set(self.getProperty(UNSUCCESSFUL_PROPERTY) or [])
        for wave in job_waves([s for s in self.stage_jobs() if s.job.status != JobStatus.CACHED]):
            self._wave = [needing_unsuccessful(s, unsuccessful) for s in wave]
            self._wave_results = []
            results = worst_status(results, await super().run())
            if self.ended:
                return CANCELLED
            unsuccessful |= {s.job.name for s, r in zip(self._wave, self._wave_results)
                             if not self.built(s) or r not in (SUCCESS, WARNINGS)}
        # For the later stages: a job there that needs one of these is not built either.
        self.setProperty(UNSUCCESSFUL_PROPERTY, sorted(unsuccessful), "TriggerStage")
        return results

    def built(self, stage_job: StageJob) -> bool:
        """Whether ``stage_job`` goes to a builder of its own; the rest are reported (and a
        reported job's buildset says SUCCESS: Buildbot ranks SKIPPED below it)."""
        return stage_job.job.status == JobStatus.BUILD and stage_job.route in self.job_schedulers

    def worstStatus(self, overall_results, rclist, unimportant_brids):
        # One result per scheduler call, in the order of getSchedulersAndProperties: one a job.
        self._wave_results = [r[0] if ok and isinstance(r, tuple) else EXCEPTION for ok, r in rclist]
        return super().worstStatus(overall_results, rclist, unimportant_brids)

    def getSchedulersAndProperties(self):
        return self.scheduler_calls(self._wave)

    def scheduler_calls(self, stage_jobs: list[StageJob]) -> list[dict]:
        """One scheduler call a job of ``stage_jobs``; a cached job needs none."""
        flake = self.getProperty("flake_ref") or ""
        out = []
        for s in stage_jobs:
            job = s.job
            if job.status == JobStatus.CACHED:
                continue
            if job.status == JobStatus.BUILD and not self.built(s):
                job = replace(job, status=JobStatus.SKIPPED, reason=s.no_worker)
            sched = self.job_schedulers[s.route] if self.built(s) else self.report_scheduler
            # Which scheduler started the plan: only the commits' keep their outputs (jobs.build_args).
            extra = {**s.extra, "plan_scheduler": self.getProperty("scheduler")}
            out.append({"sched_name": sched, "props_to_set": job_properties(job, flake, extra),
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


class ReportJob(ShortRepr, buildstep.BuildStep):
    """The result of a job that is not built: skipped, or failed to evaluate."""

    name = "report"

    async def run(self):
        job = job_of(self)
        self._summary = one_line(f"{job.attr}: {job.reason}")
        if job.status == JobStatus.SKIPPED:
            # Without this the build would end SUCCESS: SKIPPED steps do not lower it.
            self.build.results = SKIPPED
            return SKIPPED
        return FAILURE

    def getResultSummary(self):
        return {"step": self._summary, "build": self._summary}


class ReportBuild(Build):
    """Says "skipped" for a SKIPPED build; Buildbot would say "build successful"."""

    def allStepsDone(self):
        if self.results == SKIPPED and self.stopped_reason is None:
            return self.buildFinished(["skipped:", *self.text], self.results)
        return super().allStepsDone()


def report_factory() -> util.BuildFactory:
    f = util.BuildFactory()
    f.buildClass = lean_build(ReportBuild)
    f.addStep(ReportJob())
    return f


class FlakeAtStart:
    """A ``Build`` that sets ``flake_ref`` (``ResolveFlake``'s work) as it sets itself up,
    so that the ResolveFlake step is left out (``QuietSkips``) unless the branch or revision
    is refused; then that step runs and fails with the reason. One step less per commit."""

    repo = ""

    def setupBuild(self):
        super().setupBuild()
        try:
            ref = flake_ref_for(self.repo, self.getProperty("branch") or None, self.getProperty("revision") or None)
        except FlakeError:
            return
        self.setProperty("flake_ref", ref, "ResolveFlake")


def plan_build_class(repo: str) -> type:
    return type("PlanBuild", (FlakeAtStart, lean_build(capped_build(PLAN_RETRIES))), {"repo": repo})


def plan_factory(loaded: LoadedSettings, secrets: Secrets, stage_steps: list[TriggerStage],
                 plan_steps: list[buildstep.BuildStep] | None = None) -> util.BuildFactory:
    """``plan_steps`` set the ``plan`` property (evaluation.plan_steps: each system on a
    worker of it); without them one PlanStep evaluates every system here. Each sends the
    settings file within itself; a step with nothing to do leaves no trace (``lean_build``)."""
    settings = loaded.settings
    f = util.BuildFactory()
    f.buildClass = plan_build_class(settings.flake.repo)
    f.addStep(ResolveFlake(settings.flake.repo, doStepIf=lambda step: not step.getProperty("flake_ref"),
                           hideStepIf=lambda results, step: results == SKIPPED))
    for step in plan_steps or [PlanStep(settings.workers.command, plan_args, name="plan", haltOnFailure=True,
                                        env=cache_env(secrets), settings_text=loaded.path.read_text())]:
        f.addStep(step)
    for step in stage_steps:
        f.addStep(step)
    return f


def systems_built(specs: list[WorkerSpec], configured: list[str]) -> dict[str, int]:
    """Slot name -> how many of the ``configured`` systems its host builds, natively or by
    emulation: the plan build evaluates those itself (``evaluation.split_systems``)."""
    return {slot: len(set(configured) & (set(w.systems) | set(w.emulated_systems)))
            for w in specs for slot in slot_names(w)}


def most_systems(counts: dict[str, int]):
    """The plan builder's ``nextWorker``: a free slot of a host that builds the most
    configured systems (each system it does not build is one evaluation build more to
    start and wait for); among those an idle one first, then any."""
    def next_worker(builder, workers, buildrequest):
        if not workers:
            return None
        best = max(counts.get(w.worker.workername, 0) for w in workers)
        ours = [w for w in workers if counts.get(w.worker.workername, 0) == best]
        return random.choice([w for w in ours if not busy(w.worker)] or ours)
    return next_worker


def builders(loaded: LoadedSettings, secrets: Secrets, stage_steps: list[TriggerStage],
             plan_steps: list[buildstep.BuildStep] | None = None) -> list[util.BuilderConfig]:
    """The plan builder, whose stages are ``stage_steps``, and the report builder."""
    all_workers = [slot for w in loaded.workers for slot in slot_names(w)]
    counts = systems_built(loaded.workers, loaded.settings.flake.systems)
    return [
        util.BuilderConfig(name=PLAN_BUILDER, workernames=all_workers, nextWorker=most_systems(counts),
                           factory=plan_factory(loaded, secrets, stage_steps, plan_steps), tags=["plan"]),
        util.BuilderConfig(name=REPORT_BUILDER, workernames=all_workers, factory=report_factory(),
                           tags=["report"]),
    ]


def schedulers(settings: Settings) -> list:
    return [redox_schedulers.commit_scheduler(settings, PLAN_BUILDER),
            redox_schedulers.force_scheduler(settings, PLAN_BUILDER),
            redox_schedulers.triggerable(REPORT_BUILDER, REPORT_BUILDER)]


def services() -> list:
    # A new commit on a branch cancels the older commit's pipeline (forced builds never).
    # After a master restart: the interrupted plan's orphaned requests cancelled, the plan run once more.
    return [superseded_canceller(PLAN_BUILDER, redox_schedulers.PLAN_SCHEDULER),
            restart_cleanup(PLAN_BUILDER, PLAN_RETRIES)]
