"""Evaluation where the system is built: by the plan build itself for the systems its
worker builds (natively or by emulation), else by one ``<system>/eval`` build per system
on a worker that builds it (natively first).

Why not one ``redox-ci plan`` for every system on any worker: the real flake needs
import-from-derivation (crane's vendored sources, patched trees), so forcing an
``aarch64-linux`` attribute builds aarch64 derivations during evaluation, which only a
worker that builds aarch64 (natively, or by emulation: qemu-user in its Nix's
extra-platforms) can do; an x86_64 worker without emulation fails them. Each system's
evaluation is also the slow, memory-hungry part of a commit, so two systems evaluate at
once on two workers.

The plan build runs on the worker that builds the most configured systems
(``pipeline.most_systems``) and evaluates those itself, in one ``redox-ci plan``: an
all-cached commit on a worker that builds every system is then that one step, with no
build to start and wait for. The other systems' evaluation builds are triggered and
their plans merged with the plan build's own into the one ``plan`` property the stages
read. A system no worker builds is evaluated by the plan build too, so that its jobs are
listed and SKIPPED with the reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from buildbot.plugins import steps, util
from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS, WARNINGS

from ..plan import Job, JobStatus, Plan
from ..plan_cli import plan_command_line
from . import schedulers as redox_schedulers
from .base import WORKER_SETTINGS, job_properties, one_line
from .cache import cache_env
from .pipeline import PlanStep, plan_listing
from .jobs import StageBuilder, stage_builders
from .retries import PLAN_RETRIES, capped_build
from .workers import prefer_native

if TYPE_CHECKING:
    from ..config import LoadedSettings
    from ..secrets_file import Secrets

EVAL_STAGE = "eval"
# The job name of a system's evaluation (``<system>.evaluation``) in the web UI.
EVAL_ATTR = "evaluation"
# What each system's evaluation answered (result, summary; not its plan), for the plan step.
SYSTEM_PLANS = "system_plans"
# Why the systems' plans could not be merged (PlanMismatch), for the plan step.
MERGE_ERROR = "merge_error"


def eval_builders(loaded: LoadedSettings) -> list[StageBuilder]:
    """One per system some worker builds, natively or by emulation: the workers of its jobs."""
    by_system: dict[str, StageBuilder] = {}
    for b in stage_builders(loaded):
        by_system.setdefault(b.system, replace(b, name=f"{b.system}/{EVAL_STAGE}", stage=EVAL_STAGE))
    return list(by_system.values())


def requested_systems(props, configured: list[str]) -> list[str]:
    """The systems a plan build evaluates: the force form's, else the settings'."""
    systems = props.getProperty("systems")
    if not systems:
        return list(configured)
    return systems if isinstance(systems, list) else [systems]


def split_systems(systems: list[str], routed: set[str], own: set[str] = frozenset()
                  ) -> tuple[list[str], list[str]]:
    """(evaluated by an evaluation build on a worker of the system, evaluated by the plan
    build itself): ``routed`` are the systems with an evaluation builder, ``own`` those the
    plan build's worker builds; it evaluates these and those no worker builds."""
    away = [s for s in systems if s in routed and s not in own]
    return away, [s for s in systems if s not in away]


def worker_builds(props) -> set[str]:
    """The systems the plan build's worker builds, natively or by emulation (its worker
    properties, ``workers.make_workers``)."""
    return set(props.getProperty("worker_systems") or []) | set(props.getProperty("worker_emulated_systems") or [])


def placement(props, configured: list[str], routed: set[str]) -> tuple[list[str], list[str]]:
    """``split_systems`` of a plan build's requested systems."""
    return split_systems(requested_systems(props, configured), routed, worker_builds(props))


class PlanMismatch(ValueError):
    """The systems' plans name different revisions: the reference moved between evaluations."""


def merge_plans(plans: list[Plan]) -> Plan:
    """One plan of several systems' plans, each evaluated alone: jobs, ignored attributes
    and evaluation figures side by side, in the order given; the revision they all name."""
    if not plans:
        return Plan("", [])
    revisions = {p.revision for p in plans}
    if len(revisions) > 1:
        raise PlanMismatch("the systems were evaluated at different revisions ("
                           + ", ".join(sorted(r or "unknown" for r in revisions))
                           + "): the branch moved between their evaluations")
    evaluation: dict = {}
    for p in plans:
        evaluation.update(p.evaluation)
    return Plan(plans[0].flake, [j for p in plans for j in p.jobs], [i for p in plans for i in p.ignored],
                evaluation, plans[0].revision)


def eval_job(system: str) -> Job:
    return Job(EVAL_ATTR, system, EVAL_STAGE, None, False, JobStatus.BUILD, "")


class EvaluateSystems(steps.Trigger):
    """Start each system's evaluation on its builder and wait; then merge their plans with
    the plan build's own (``evaluate here``, when it ran) into the ``plan`` property. What
    each evaluation answered (its result and summary, not its plan again) is kept in
    ``system_plans`` for the ``plan`` step, which judges them."""

    def __init__(self, schedulers_by_system: dict[str, str], configured: list[str], **kwargs):
        self.by_system = schedulers_by_system
        self.configured = list(configured)
        super().__init__(name="evaluate", schedulerNames=sorted(set(schedulers_by_system.values())) or ["none"],
                         waitForFinish=True, haltOnFailure=False, flunkOnFailure=False,
                         doStepIf=lambda step: bool(step.routed()),
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    def routed(self) -> list[str]:
        return placement(self, self.configured, set(self.by_system))[0]

    def getSchedulersAndProperties(self):
        flake = self.getProperty("flake_ref") or ""
        return [{"sched_name": self.by_system[s],
                 "props_to_set": {**job_properties(eval_job(s), flake), "flake_ref": flake, "systems": [s],
                                  "attrs": self.getProperty("attrs") or ""},
                 "unimportant": False} for s in self.routed()]

    async def run(self):
        results = await super().run()
        answers, plans = [], []
        for brid in self.brids:
            builds = await self.master.data.get(("buildrequests", brid, "builds"))
            if not builds:
                continue
            build = builds[-1]  # after a retry, the last
            props = await self.master.data.get(("builds", build["buildid"], "properties"))
            answers.append({"system": props["systems"][0][0], "results": build["results"],
                            "state_string": build["state_string"], "planned": "plan" in props})
            if "plan" in props:
                plans.append(Plan.from_json(props["plan"][0]))
        answers.sort(key=lambda a: a["system"])
        self.setProperty(SYSTEM_PLANS, answers, "EvaluateSystems")
        if judge_evaluations(answers) is None:
            here = [Plan.from_json(self.getProperty("plan"))] if placement(self, self.configured,
                                                                           set(self.by_system))[1] else []
            plans.sort(key=lambda p: p.jobs[0].system if p.jobs else "")
            try:
                self.setProperty("plan", merge_plans(plans + here).to_json(), "EvaluateSystems")
            except PlanMismatch as e:
                self.setProperty(MERGE_ERROR, str(e), "EvaluateSystems")
        return results


def local_systems(configured: list[str], routed: set[str]):
    """The plan build's own evaluation: the systems its worker builds and those no worker builds."""
    @util.renderer
    def render(props):
        _, here = placement(props, configured, routed)
        return plan_command_line(props.getProperty("flake_ref"), settings=WORKER_SETTINGS, systems=here,
                                 attrs=(props.getProperty("attrs") or "").split() or None)
    return render


def judge_evaluations(answers: list[dict]) -> str | None:
    """Why the pipeline stops (a system's evaluation that gave no plan), or None."""
    failed = [a for a in answers if not a["planned"] or a["results"] not in (SUCCESS, WARNINGS)]
    if not failed:
        return None
    return "; ".join(f"{a['system']}: {a['state_string']}" for a in failed)


class JudgePlan(buildstep.BuildStep):
    """The merged plan, which the stages read: its summary and job list; a system whose
    evaluation failed fails this step with its reason, and the pipeline stops."""

    async def run(self):
        answers = self.getProperty(SYSTEM_PLANS) or []
        why = judge_evaluations(answers) or self.getProperty(MERGE_ERROR)
        if why:
            self._summary = one_line(why)
            return FAILURE
        plan = Plan.from_json(self.getProperty("plan"))
        summary = plan.summary()
        self._summary = "plan: " + ", ".join(f"{n} {s}" for s, n in summary.items() if n)
        await self.addCompleteLog("plan", plan_listing(plan))
        await self.addCompleteLog("evaluated on", "\n".join(
            [f"{a['system']:14} a worker of it: {a['state_string']}" for a in answers]
            + [f"{system:14} the plan build's worker" for system in
               dict.fromkeys(j.system for j in plan.jobs) if system not in {a["system"] for a in answers}]))
        return WARNINGS if summary[JobStatus.FAILED] else SUCCESS

    def getResultSummary(self):
        summary = getattr(self, "_summary", "")
        return {"step": summary, "build": summary} if summary else super().getResultSummary()


def plan_steps(loaded: LoadedSettings, secrets: Secrets) -> list[buildstep.BuildStep]:
    """The plan build's evaluation. When its worker evaluates every requested system, one
    step, ``plan``; else ``evaluate here`` (if it evaluates any), each other system's
    evaluation build, and the merged plan judged in ``plan``. A step with nothing to do
    is left out (``base.QuietSkips``)."""
    configured = loaded.settings.flake.systems
    routed = {b.system for b in eval_builders(loaded)}

    def here(step) -> bool:
        return bool(placement(step, configured, routed)[1])

    def away(step) -> bool:
        return bool(placement(step, configured, routed)[0])

    def hidden(results, step) -> bool:
        return results == SKIPPED

    def evaluate(name: str, do) -> PlanStep:
        return PlanStep(loaded.settings.workers.command, local_systems(configured, routed), name=name,
                        haltOnFailure=True, env=cache_env(secrets), doStepIf=do, hideStepIf=hidden,
                        settings_text=loaded.path.read_text())

    return [
        evaluate("plan", lambda step: not away(step)),
        evaluate("evaluate here", lambda step: here(step) and away(step)),
        EvaluateSystems({b.system: b.name for b in eval_builders(loaded)}, configured),
        JudgePlan(name="plan", haltOnFailure=True, doStepIf=away, hideStepIf=hidden),
    ]


def eval_factory(loaded: LoadedSettings, secrets: Secrets) -> util.BuildFactory:
    f = util.BuildFactory()
    # An evaluation that runs its worker out of memory runs again once, not for ever.
    f.buildClass = capped_build(PLAN_RETRIES)
    f.addStep(PlanStep(loaded.settings.workers.command, local_systems(loaded.settings.flake.systems, set()),
                       name="evaluate", haltOnFailure=True, env=cache_env(secrets),
                       settings_text=loaded.path.read_text()))
    return f


def builders(loaded: LoadedSettings, secrets: Secrets) -> list[util.BuilderConfig]:
    return [util.BuilderConfig(name=b.name, workernames=b.workers, nextWorker=prefer_native(b.native),
                               factory=eval_factory(loaded, secrets), tags=[b.system, EVAL_STAGE])
            for b in eval_builders(loaded)]


def schedulers(loaded: LoadedSettings) -> list:
    return [redox_schedulers.triggerable(b.name, b.name) for b in eval_builders(loaded)]
