"""Turn the evaluation into a plan: a job per (system, derivation).

Pure: it takes the evaluation's JSON (``flake.evaluate``) and the settings and returns
data, so every rule here is tested without Nix:

* ``packages`` and ``checks`` are planned ([plan].outputs); names that share a derivation
  (aliases such as ``diskImage`` = ``redox-default``, a check that is a package) are one
  job, built once. It is named by the settings: the first of its names in the stage lists
  (in their order); else a ``packages`` name before a ``checks`` one, the shortest, then
  the first alphabetically. The other names are its ``aliases`` (``checks.<name>`` for a
  check).
* Runner scripts (by derivation, by name, by pattern) and non-derivations are never
  jobs: they are listed as ignored with the reason; a VM test script says which image
  it boots ([plan].vm_tests).
* An attribute that does not evaluate is a ``failed`` job quoting Nix's message; a name
  the stage lists expect and the flake lacks is ``skipped``; a system whose outputs do
  not evaluate at all fails its expected jobs with the message.
* A job whose outputs are all in the binary cache is ``cached``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .config import PlanSettings

OTHER_STAGE = "other"
PACKAGES, CHECKS = "packages", "checks"


class JobStatus(StrEnum):
    BUILD = "build"  # to be built
    CACHED = "cached"  # every output is in the binary cache: not built again
    SKIPPED = "skipped"  # nothing to build: the flake lacks it, or no worker builds it
    FAILED = "failed"  # it does not evaluate


@dataclass(frozen=True)
class Job:
    """One derivation of one system: the worker's plan and the master's builds share it.

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
    # The flake output the attribute is in: "packages" or "checks".
    output: str = PACKAGES
    # The other names of the same derivation ("diskImage", "checks.redox-default-build").
    aliases: list[str] = field(default_factory=list)
    # The settings want its tests, and they cannot be turned on (no overrideAttrs).
    checks_unavailable: bool = False
    # The names of the other jobs to build whose derivation this one needs (the nearest in
    # its closure): the stage starts it after them, and not at all when one fails.
    after: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``<system>.<attr>``; ``<system>.checks.<attr>`` for a check that is no package."""
        return f"{self.system}.{self.attr}" if self.output == PACKAGES else f"{self.system}.{self.output}.{self.attr}"

    def names(self) -> list[str]:
        """The attribute and its aliases, as the settings and ``--attrs`` name them."""
        return [self.attr, *(a.removeprefix(f"{CHECKS}.") for a in self.aliases)]

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
    # A VM test script: the disk image it boots.
    boots: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ignored:
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class Plan:
    flake: str
    jobs: list[Job]
    ignored: list[Ignored] = field(default_factory=list)
    # Per system: how long its evaluation took and how many `nix eval` it needed.
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The commit the flake reference named when it was evaluated (a branch's tip, for a
    # reference without one); "" when Nix could not say (a dirty tree, a source without git).
    revision: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"flake": self.flake, "revision": self.revision, "jobs": [j.to_json() for j in self.jobs],
                "ignored": [asdict(i) for i in self.ignored], "evaluation": self.evaluation,
                "summary": self.summary()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """The plan ``to_json`` wrote; ``summary`` is derived, so it is not read back."""
        return cls(data["flake"], [Job.from_json(j) for j in data["jobs"]],
                   [Ignored.from_json(i) for i in data.get("ignored", [])], data.get("evaluation", {}),
                   data.get("revision", ""))

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for j in self.jobs:
            counts[j.status] += 1
        return counts

    def find(self, system: str, name: str) -> Job | None:
        """The job of ``system`` that ``name`` is the attribute or an alias of."""
        return next((j for j in self.jobs if j.system == system and name in j.names()), None)


def stage_of(attr: str, stages: dict[str, list[str]]) -> str:
    for stage, attrs in stages.items():
        if attr in attrs:
            return stage
    return OTHER_STAGE


@dataclass(frozen=True)
class _Entry:
    output: str
    name: str
    info: dict

    @property
    def qualified(self) -> str:
        return self.name if self.output == PACKAGES else f"{self.output}.{self.name}"


def primary(entries: list[_Entry], expected: list[str]) -> _Entry:
    """The name a group of names of one derivation is known by (see the module docstring)."""
    listed = [e for e in entries if e.name in expected]
    if listed:
        return min(listed, key=lambda e: (expected.index(e.name), e.output != PACKAGES))
    return min(entries, key=lambda e: (e.output != PACKAGES, len(e.name), e.name))


def build_plan(flake: str, evaluation: dict, settings: PlanSettings, systems: list[str],
               only_attrs: list[str] | None = None,
               cached: Callable[[list[str]], set[str]] | None = None) -> Plan:
    """Classify every attribute of every system.

    ``cached`` answers which store paths the binary cache already holds; a job whose
    outputs are all there is ``cached`` and not built.
    """
    stage_order = list(settings.stages) + [OTHER_STAGE]
    expected = [a for attrs in settings.stages.values() for a in attrs]
    if only_attrs:
        expected = [a for a in expected if a in only_attrs] + [a for a in only_attrs if a not in expected]
    jobs: list[Job] = []
    ignored: list[Ignored] = []
    stats: dict[str, dict[str, Any]] = {}
    for system in systems:
        result = evaluation.get(system) or {}
        stats[system] = {k: result[k] for k in ("stats", "split", "error") if k in result}
        if "error" in result:
            jobs += [Job(a, system, stage_of(a, settings.stages), None, a in settings.checks, JobStatus.FAILED,
                         f"{system} does not evaluate: {result['error']}") for a in expected]
            continue
        packages = result.get(PACKAGES)
        if packages is None:
            jobs += [Job(a, system, stage_of(a, settings.stages), None, a in settings.checks, JobStatus.SKIPPED,
                         f"the flake has no packages.{system}") for a in expected]
            continue
        sys_jobs, sys_ignored = _system_jobs(system, result, settings, expected)
        jobs += sys_jobs
        ignored += sys_ignored
    if cached is not None:
        jobs = _mark_cached(jobs, cached)
    jobs.sort(key=lambda j: stage_order.index(j.stage))
    return Plan(flake, jobs, ignored, stats)


def _runner_reason(entry: _Entry, settings: PlanSettings) -> str:
    if entry.info.get("script"):
        return f"runner script (writeShellScriptBin, {entry.info.get('destination', '/bin/...')}), not built"
    if entry.name in settings.runners:
        return "runner script ([plan].runners), not built"
    return "runner script ([plan].runner_patterns), not built"


def _system_jobs(system: str, result: dict, settings: PlanSettings,
                 expected: list[str]) -> tuple[list[Job], list[Ignored]]:
    entries = [_Entry(out, name, info) for out in (PACKAGES, CHECKS) if isinstance(result.get(out), dict)
               for name, info in sorted(result[out].items())]
    jobs: list[Job] = []
    ignored: list[Ignored] = []
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        kind = e.info.get("kind")
        runner = kind == "runner" or any(fnmatch.fnmatchcase(e.name, p) for p in settings.runner_patterns)
        if runner and kind in ("runner", "package", "eval-error"):
            image = settings.vm_tests.get(e.name, "")
            reason = f"VM test script booting {image} (redox-ci boots images itself), not built" if image \
                else _runner_reason(e, settings)
            ignored.append(Ignored(e.qualified, system, reason, image))
        elif kind == "not-a-derivation":
            ignored.append(Ignored(e.qualified, system, "not a derivation"))
        elif kind == "package" and e.info.get("drv"):
            groups.setdefault(e.info.get("plainDrv") or e.info["drv"], []).append(e)
        else:
            error = e.info.get("error") or f"tryEval caught an error; {e.info.get('error_unknown', 'no message')}"
            jobs.append(Job(e.name, system, stage_of(e.name, settings.stages), None, e.name in settings.checks, JobStatus.FAILED,
                            f"{e.output}.{system}.{e.name} does not evaluate: {error}", output=e.output))
    for group in groups.values():
        jobs.append(_package_job(system, group, settings, expected))
    seen = {e.name for e in entries}
    missing = [Job(a, system, stage_of(a, settings.stages), None, a in settings.checks, JobStatus.SKIPPED,
                   f"the flake has no packages.{system}.{a}") for a in expected if a not in seen]
    order = {a: i for i, a in enumerate(expected)}
    jobs = missing + jobs
    jobs.sort(key=lambda j: (order.get(j.attr, len(order)), j.output, j.attr))
    return jobs, ignored


def _package_job(system: str, group: list[_Entry], settings: PlanSettings, expected: list[str]) -> Job:
    first = primary(group, expected)
    aliases = [e.qualified for e in group if e is not first]
    # The tests are judged when any name of the derivation asks for them.
    tested = next((e for e in [first, *group] if e.output == PACKAGES and e.name in settings.checks), None)
    info = (tested or first).info
    outputs = [o["path"] for o in info.get("outputs", [])]
    checks = bool(tested) and bool(info.get("doCheck") or info.get("forced"))
    unavailable = bool(tested) and not checks
    reason = ""
    if info.get("forced"):
        reason = "doCheck is off in the flake; redox-ci turned it on"
    elif unavailable:
        reason = "tests wanted but the package has no overrideAttrs to turn doCheck on"
    return Job(first.name, system, stage_of(first.name, settings.stages), info["drv"], checks, JobStatus.BUILD, reason, outputs,
               checks_forced=bool(info.get("forced")), output=first.output, aliases=aliases,
               checks_unavailable=unavailable)


def with_dependencies(jobs: list[Job], references: Mapping[str, Sequence[str]]) -> list[Job]:
    """``jobs`` with ``after`` set on each job to build: the jobs to build whose derivation
    is the nearest in its closure, as ``references`` (a store path's references, for every
    path of the closure of the jobs' derivations) shows it.

    Nearest only: the later ones are after those already. Two jobs building at once when
    one needs the other would both build it, the second waiting on Nix's lock (5 s a
    poll), and a failure would be blamed on both.
    """
    planned = {j.drv: j.name for j in jobs if j.status == JobStatus.BUILD and j.drv}
    nearest: dict[str, frozenset[str]] = {}

    def below(path: str) -> frozenset[str]:
        # Iterative post-order: a closure is deeper than Python's recursion limit.
        stack = [(path, False)]
        while stack:
            node, expanded = stack.pop()
            if node in nearest:
                continue
            inputs = [r for r in references.get(node, ()) if r.endswith(".drv") and r != node]
            if not expanded:
                stack.append((node, True))
                stack += [(r, False) for r in inputs if r not in nearest and r not in planned]
                continue
            found: set[str] = set()
            for r in inputs:
                found |= {r} if r in planned else nearest.get(r, frozenset())
            nearest[node] = frozenset(found)
        return nearest[path]

    return [replace(j, after=sorted(planned[d] for d in below(j.drv))) if j.drv in planned else j for j in jobs]


def _mark_cached(jobs: list[Job], cached: Callable[[list[str]], set[str]]) -> list[Job]:
    wanted = sorted({o for j in jobs if j.status == JobStatus.BUILD for o in j.outputs})
    present = cached(wanted) if wanted else set()
    out = []
    for j in jobs:
        if j.status == JobStatus.BUILD and j.outputs and all(o in present for o in j.outputs):
            j = replace(j, status=JobStatus.CACHED, reason="all outputs are in the binary cache")
        out.append(j)
    return out
