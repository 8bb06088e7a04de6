"""Turn one evaluation into a plan: a job per (system, attribute).

Pure: it takes the evaluation's JSON and the settings and returns data, so every
rule here (stages, skipped attributes, unknown attributes, runners, forced checks,
cached outputs) is tested without Nix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from .config import ATTR_RE, PlanSettings

OTHER_STAGE = "other"
STATUSES = ("build", "cached", "skipped", "failed")


@dataclass(frozen=True)
class Job:
    attr: str
    system: str
    stage: str
    drv: str | None
    checks: bool
    status: str
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    # True when the flake has doCheck off and redox-ci turned it on.
    checks_forced: bool = False

    @property
    def name(self) -> str:
        return f"{self.system}.{self.attr}"


@dataclass(frozen=True)
class Plan:
    flake: str
    jobs: list[Job]
    # Attributes that are not built: runner scripts and non-derivations.
    ignored: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"flake": self.flake, "jobs": [asdict(j) for j in self.jobs], "ignored": self.ignored,
                "summary": self.summary()}

    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for j in self.jobs:
            counts[j.status] += 1
        return counts


def stage_of(attr: str, stages: dict[str, list[str]]) -> str:
    for stage, attrs in stages.items():
        if attr in attrs:
            return stage
    return OTHER_STAGE


def parse_attr_list(text: str | Iterable[str] | None) -> list[str]:
    """Attribute names from "a, b c" or a list; raises ValueError naming a bad one."""
    if text is None:
        return []
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    bad = [a for a in items if not ATTR_RE.match(a)]
    if bad:
        raise ValueError(f"not Nix attribute names: {', '.join(map(repr, bad))}")
    return list(dict.fromkeys(items))


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
    ignored: list[dict] = []
    for system in systems:
        packages = evaluation.get(system)
        names = list(expected) + sorted(set(packages or {}) - set(expected))
        if only_attrs:
            names = [n for n in names if n in only_attrs] + [n for n in only_attrs if n not in names]
        for attr in names:
            stage = stage_of(attr, settings.stages)
            wants_checks = attr in settings.checks
            if packages is None:
                jobs.append(Job(attr, system, stage, None, wants_checks, "skipped",
                                f"the flake has no packages.{system}"))
                continue
            info = packages.get(attr)
            if info is None:
                jobs.append(Job(attr, system, stage, None, wants_checks, "skipped",
                                f"the flake has no packages.{system}.{attr}"))
            elif info["kind"] == "runner":
                ignored.append({"attr": attr, "system": system, "reason": "runner script, not a build artefact"})
            elif info["kind"] == "not-a-derivation":
                ignored.append({"attr": attr, "system": system, "reason": "not a derivation"})
            elif info["kind"] == "eval-error" or not info.get("drv"):
                jobs.append(Job(attr, system, stage, None, wants_checks, "failed",
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
    return Job(attr, system, stage, info["drv"], checks, "build", reason, outputs,
               checks_forced=bool(info["forced"]))


def _mark_cached(jobs: list[Job], cached: Callable[[list[str]], set[str]]) -> list[Job]:
    wanted = sorted({o for j in jobs if j.status == "build" for o in j.outputs})
    present = cached(wanted) if wanted else set()
    out = []
    for j in jobs:
        if j.status == "build" and j.outputs and all(o in present for o in j.outputs):
            j = Job(**{**asdict(j), "status": "cached", "reason": "all outputs are in the binary cache"})
        out.append(j)
    return out
