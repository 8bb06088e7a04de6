"""Turn one evaluation into a plan: a job per (system, attribute).

Pure: it takes the evaluation's JSON and the settings and returns data, so every
rule here (stages, skipped attributes, unknown attributes, runners, forced checks,
cached outputs) is tested without Nix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .config import PlanSettings

OTHER_STAGE = "other"


class JobStatus(StrEnum):
    BUILD = "build"  # to be built
    CACHED = "cached"  # every output is in the binary cache: not built again
    SKIPPED = "skipped"  # nothing to build: the flake lacks it, or no worker builds it
    FAILED = "failed"  # it does not evaluate


@dataclass(frozen=True)
class Job:
    """One attribute of one system: the worker's plan and the master's builds share it.

    ``to_json`` is its only JSON form (the ``plan`` property of a pipeline build holds
    it); the master reads it back with ``from_json``.
    """

    attr: str
    system: str
    stage: str
    drv: str | None
    checks: bool
    status: JobStatus
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    # True when the flake has doCheck off and redox-ci turned it on.
    checks_forced: bool = False

    @property
    def name(self) -> str:
        return f"{self.system}.{self.attr}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Keys it does not know are left out: a newer worker may say more."""
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "status": JobStatus(data["status"])})


@dataclass(frozen=True)
class Ignored:
    """An attribute that is not built (a runner script, not a derivation), and why."""

    attr: str
    system: str
    reason: str


@dataclass(frozen=True)
class Plan:
    flake: str
    jobs: list[Job]
    ignored: list[Ignored] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"flake": self.flake, "jobs": [j.to_json() for j in self.jobs],
                "ignored": [asdict(i) for i in self.ignored], "summary": self.summary()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """The plan ``to_json`` wrote; ``summary`` is derived, so it is not read back."""
        return cls(data["flake"], [Job.from_json(j) for j in data["jobs"]],
                   [Ignored(i["attr"], i["system"], i["reason"]) for i in data.get("ignored", [])])

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for j in self.jobs:
            counts[j.status] += 1
        return counts


def stage_of(attr: str, stages: dict[str, list[str]]) -> str:
    for stage, attrs in stages.items():
        if attr in attrs:
            return stage
    return OTHER_STAGE


def build_plan(flake: str, evaluation: dict, settings: PlanSettings, systems: list[str],
               only_attrs: list[str] | None = None,
               cached: Callable[[list[str]], set[str]] | None = None) -> Plan:
    """Classify every attribute of every system.

    ``cached`` answers which store paths the binary cache already holds; a job whose
    outputs are all there is ``cached`` and not built.
    """
    stage_order = list(settings.stages) + [OTHER_STAGE]
    expected = [a for attrs in settings.stages.values() for a in attrs]
    jobs: list[Job] = []
    ignored: list[Ignored] = []
    for system in systems:
        packages = evaluation.get(system)
        names = list(expected) + sorted(set(packages or {}) - set(expected))
        if only_attrs:
            names = [n for n in names if n in only_attrs] + [n for n in only_attrs if n not in names]
        for attr in names:
            stage = stage_of(attr, settings.stages)
            wants_checks = attr in settings.checks
            if packages is None:
                jobs.append(Job(attr, system, stage, None, wants_checks, JobStatus.SKIPPED,
                                f"the flake has no packages.{system}"))
                continue
            info = packages.get(attr)
            if info is None:
                jobs.append(Job(attr, system, stage, None, wants_checks, JobStatus.SKIPPED,
                                f"the flake has no packages.{system}.{attr}"))
            elif info["kind"] == "runner":
                ignored.append(Ignored(attr, system, "runner script, not a build artefact"))
            elif info["kind"] == "not-a-derivation":
                ignored.append(Ignored(attr, system, "not a derivation"))
            elif info["kind"] == "eval-error" or not info.get("drv"):
                jobs.append(Job(attr, system, stage, None, wants_checks, JobStatus.FAILED,
                                f"packages.{system}.{attr} does not evaluate"))
            else:
                jobs.append(_package_job(attr, system, stage, wants_checks, info))
    if cached is not None:
        jobs = _mark_cached(jobs, cached)
    jobs.sort(key=lambda j: stage_order.index(j.stage))
    return Plan(flake, jobs, ignored)


def _package_job(attr: str, system: str, stage: str, wants_checks: bool, info: dict) -> Job:
    outputs = [o["path"] for o in info.get("outputs", [])]
    checks = bool(info["doCheck"] or info["forced"])
    reason = ""
    if info["forced"]:
        reason = "doCheck is off in the flake; redox-ci turned it on"
    elif wants_checks and not checks:
        reason = "tests wanted but the package has no overrideAttrs to turn doCheck on"
    return Job(attr, system, stage, info["drv"], checks, JobStatus.BUILD, reason, outputs,
               checks_forced=bool(info["forced"]))


def _mark_cached(jobs: list[Job], cached: Callable[[list[str]], set[str]]) -> list[Job]:
    wanted = sorted({o for j in jobs if j.status == JobStatus.BUILD for o in j.outputs})
    present = cached(wanted) if wanted else set()
    out = []
    for j in jobs:
        if j.status == JobStatus.BUILD and j.outputs and all(o in present for o in j.outputs):
            j = replace(j, status=JobStatus.CACHED, reason="all outputs are in the binary cache")
        out.append(j)
    return out
