"""What the Commits page knows: pipelines grouped by commit, one row per job, trend series.

Pure functions over what Buildbot's data API returns (build dicts, property dicts with
the sources stripped, the ``plan`` property) and the nightly reproducibility summaries:
the web app (``commits_app.py``) fetches, these decide, ``commits_view.py`` draws. A
job build's properties are read only through :func:`job_facts`, so a change of the
property contract is one edit there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from buildbot.process.results import Results

from ..plan import Job, JobStatus
from .evaluation import EVAL_STAGE

# Scheduler name Buildbot records (property "scheduler") on builds a person forced.
FORCED_BY = "force"
# A boot's time in the trends and the boot column: when the OS said it was up.
BOOT_COMPLETE = "boot-complete"
# A full revision has 40 hex digits; nightly reports may name a commit by a shorter prefix,
# never shorter than git's own default abbreviation.
MIN_REV_PREFIX = 7


class Outcome(StrEnum):
    """A job's result on the page; the order of the members is the table's order."""

    FAILURE = "failure"
    EXCEPTION = "exception"
    CANCELLED = "cancelled"
    WARNINGS = "warnings"
    RUNNING = "running"
    SUCCESS = "success"
    SKIPPED = "skipped"
    CACHED = "cached"

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILURE, Outcome.EXCEPTION, Outcome.CANCELLED)


# Buildbot's result codes that are not a member name: RETRY is a build about to run again.
_RESULT_OUTCOMES = {"retry": Outcome.RUNNING}


# Words Buildbot (and the report builder) put before a finished build's summary; the page
# shows the result in a column of its own.
_RESULT_WORDS = re.compile(r"^(build successful|failed|warnings|exception|retry|cancelled|skipped:)\s+(?=\S)")


def reason_of(state_string: str) -> str:
    """A finished build's summary without the result words in front of it."""
    return _RESULT_WORDS.sub("", state_string or "")


def outcome_of(build: dict | None) -> Outcome:
    if build is None or not build.get("complete") or build.get("results") is None:
        return Outcome.RUNNING
    name = Results[build["results"]]
    return _RESULT_OUTCOMES.get(name, Outcome(name) if name in Outcome._value2member_map_ else Outcome.FAILURE)


# --- one job build's properties --------------------------------------------------------

@dataclass(frozen=True)
class BootFacts:
    vmm: str
    verdict: str
    reason: str = ""
    accel: str | None = None
    # [(milestone, seconds after the VMM started)], in the order they came.
    milestones: list[tuple[str, float]] = field(default_factory=list)
    image: str = ""

    @property
    def seconds(self) -> float | None:
        return next((at for name, at in self.milestones if name == BOOT_COMPLETE), None)


@dataclass(frozen=True)
class TestCounts:
    passed: int
    failed: int
    # cargo's "ignored", FUNC_TEST's SKIP.
    ignored: int
    kind: str  # "cargo" or the boot protocol's prefix ("FUNC_TEST")


@dataclass(frozen=True)
class JobFacts:
    """One job as its build's properties describe it."""

    job: Job
    tests: TestCounts | None = None
    boot: BootFacts | None = None
    # (paths pushed, paths the cache already held); None when nothing was pushed.
    cache: tuple[int, int] | None = None
    # Seconds the build verb took, when it said.
    build_seconds: float | None = None
    # Bytes the cache push uploaded (0 when not known).
    pushed_bytes: int = 0


def unsourced(props: dict) -> dict:
    """Buildbot's ``{name: (value, source)}`` as ``{name: value}``."""
    return {k: (v[0] if isinstance(v, (list, tuple)) and len(v) == 2 else v) for k, v in props.items()}


def job_facts(props: dict) -> JobFacts:
    """The one reader of a job build's properties (plain ``{name: value}``).

    The contract of the master's steps: ``job`` (``Job.to_json()``) and one property per
    verb answer (``build_result``, ``push_result``, ``boot_result``). Builds made before
    it carry one property per field (``attr``, ``tests_passed``, ``boot_verdict``, ...).
    """
    if "job" in props:
        return _from_verb_answers(props)
    return _from_fields(props)


def job_build_facts(props: dict) -> JobFacts | None:
    """``job_facts`` of a job build; None for any other build (a plan, a system's
    evaluation build, which is part of the plan, the nightly run)."""
    if not ("job" in props or props.get("attr")):
        return None
    facts = job_facts(props)
    return None if facts.job.stage == EVAL_STAGE else facts


def _from_verb_answers(props: dict) -> JobFacts:
    job = Job.from_json(props["job"])
    build, push, boot = (props.get(k) or {} for k in ("build_result", "push_result", "boot_result"))
    tests = _cargo(build.get("tests"))
    boot_facts = None
    if boot:
        boot_facts = BootFacts(boot.get("vmm") or "", boot.get("verdict", ""), boot.get("reason", ""),
                               boot.get("accel"), [(m["name"], float(m["at"])) for m in boot.get("milestones", [])],
                               boot.get("attr") or "")
        tests = _boot_tests(boot.get("tests")) or tests
    cache = (len(push.get("pushed", [])), len(push.get("skipped", []))) if push else None
    return JobFacts(job, tests, boot_facts, cache, build.get("seconds"), int(push.get("bytes_uploaded") or 0))


def _from_fields(props: dict) -> JobFacts:
    job = Job(props.get("attr") or "", props.get("system") or "", props.get("stage") or "", props.get("drv") or None,
              bool(props.get("checks")), JobStatus(props.get("job_status") or JobStatus.BUILD),
              props.get("job_reason") or "", list(props.get("outputs") or []),
              output=props.get("output") or "packages", aliases=list(props.get("aliases") or []))
    boot = None
    tests = None
    if props.get("boot_verdict"):
        at = props.get("boot_seconds")
        boot = BootFacts(props.get("vmm") or "", props["boot_verdict"], accel=props.get("boot_accel"),
                         milestones=[(BOOT_COMPLETE, float(at))] if at is not None else [])
        if props.get("tests_total") is not None:
            tests = TestCounts(props.get("tests_passed", 0), props.get("tests_failed", 0),
                               props.get("tests_skipped", 0), "FUNC_TEST")
    elif props.get("tests_passed") is not None:
        tests = TestCounts(props["tests_passed"], props.get("tests_failed", 0), props.get("tests_ignored", 0), "cargo")
    cache = None
    if props.get("cache_pushed") is not None:
        cache = (props["cache_pushed"], props.get("cache_skipped", 0))
    return JobFacts(job, tests, boot, cache)


def _cargo(tests: dict | None) -> TestCounts | None:
    return TestCounts(tests["passed"], tests["failed"], tests.get("ignored", 0), "cargo") if tests else None


def _boot_tests(tests: dict | None) -> TestCounts | None:
    if not tests:
        return None
    return TestCounts(tests["passed"], tests["failed"], tests.get("skipped", 0), tests.get("prefix") or "FUNC_TEST")


# --- pipelines and commits ---------------------------------------------------------------

@dataclass(frozen=True)
class Pipeline:
    """One build of the plan builder: a commit's (or a forced) pipeline."""

    buildid: int
    builderid: int
    number: int
    branch: str
    # The revision it built: its change's or the one it was forced at, else (forced at a
    # branch tip) the one its plan evaluated; "" before the plan says.
    revision: str
    forced: bool
    started_at: int
    outcome: Outcome
    state: str
    plan: dict | None

    @classmethod
    def of(cls, build: dict, props: dict) -> Pipeline:
        """From a plan build's dict and its properties (``{name: value}``)."""
        revision = props.get("revision") or (props.get("plan") or {}).get("revision") or ""
        return cls(build["buildid"], build["builderid"], build["number"], props.get("branch") or "",
                   revision, props.get("scheduler") == FORCED_BY,
                   _epoch(build.get("started_at")), outcome_of(build), build.get("state_string") or "",
                   props.get("plan"))


def _epoch(value) -> int:
    """Buildbot's data API gives datetimes; the REST API and tests give epoch seconds."""
    if value is None:
        return 0
    return int(value.timestamp()) if hasattr(value, "timestamp") else int(value)


@dataclass(frozen=True)
class Commit:
    """A revision of a branch and its pipelines, newest first."""

    revision: str
    pipelines: list[Pipeline]

    @property
    def latest(self) -> Pipeline:
        return self.pipelines[0]

    @property
    def first_seen(self) -> int:
        return min(p.started_at for p in self.pipelines)


def commits_of(pipelines: Iterable[Pipeline], branch: str) -> list[Commit]:
    """The branch's commits, newest first, each with its pipelines (newest first).

    Forced builds count under the revision they built. One forced at the branch tip whose
    plan has not said its revision yet is a commit of its own, keyed by its pipeline. A
    commit's age is its first pipeline's, so forcing an old revision again does not move it up.
    """
    groups: dict[str, list[Pipeline]] = {}
    for p in pipelines:
        if p.branch == branch:
            groups.setdefault(p.revision or f"build-{p.buildid}", []).append(p)
    commits = [Commit(rev if not rev.startswith("build-") else "", sorted(ps, key=_newest))
               for rev, ps in groups.items()]
    return sorted(commits, key=lambda c: (c.first_seen, c.latest.buildid), reverse=True)


def _newest(p: Pipeline) -> tuple:
    return (-p.started_at, -p.buildid)


def branches_of(pipelines: Iterable[Pipeline], configured: Iterable[str]) -> list[str]:
    """The configured branches first, then any other a pipeline built (a forced branch)."""
    seen = list(dict.fromkeys(configured))
    return seen + sorted({p.branch for p in pipelines if p.branch} - set(seen))


# --- the job table ----------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class JobRow:
    name: str
    facts: JobFacts
    outcome: Outcome
    reason: str
    build_url: str | None = None
    logs: list[Link] = field(default_factory=list)
    repro: tuple[str, str] | None = None  # (verdict, night)
    seconds: float | None = None  # the build's own duration when the verb did not say


@dataclass(frozen=True)
class JobBuild:
    """A triggered build as the app fetched it: the build dict, its properties, its logs."""

    build: dict
    props: dict
    logs: list[Link] = field(default_factory=list)
    url: str | None = None


def job_rows(pipeline: Pipeline, builds: Iterable[JobBuild],
             repro: dict[tuple[str, str], tuple[str, str]] | None = None) -> list[JobRow]:
    """Every job of a pipeline, failures first.

    Built jobs come from the builds the plan triggered (a rebuilt job: its newest build);
    the plan's other jobs were found cached, are waiting for their stage, or never started.
    """
    repro = repro or {}
    rows: dict[str, JobRow] = {}
    for jb in sorted(builds, key=lambda b: b.build["buildid"]):
        facts = job_facts(jb.props)
        name = jb.props.get("virtual_builder_name") or facts.job.name
        outcome = outcome_of(jb.build)
        reason = reason_of(jb.build.get("state_string") or "") or facts.job.reason
        rows[name] = JobRow(name, facts, outcome, reason, jb.url, list(jb.logs),
                            repro.get((facts.job.system, facts.job.attr)), _duration(jb.build))
    for data in (pipeline.plan or {}).get("jobs", []):
        job = Job.from_json(data)
        if job.name in rows:
            continue
        if job.status == JobStatus.CACHED:
            outcome, reason = Outcome.CACHED, "every output in the binary cache"
        elif pipeline.outcome == Outcome.RUNNING:
            outcome, reason = Outcome.RUNNING, "waiting for its stage"
        else:
            outcome, reason = Outcome.CANCELLED, "never started: the pipeline ended before its stage"
        rows[job.name] = JobRow(job.name, JobFacts(job), outcome, reason, repro=repro.get((job.system, job.attr)))
    order = list(Outcome)
    return sorted(rows.values(), key=lambda r: (order.index(r.outcome), r.facts.job.system, r.facts.job.stage, r.name))


def _duration(build: dict) -> float | None:
    if build.get("started_at") is None or build.get("complete_at") is None:
        return None
    return float(_epoch(build["complete_at"]) - _epoch(build["started_at"]))


def outcome_counts(rows: Iterable[JobRow]) -> dict[Outcome, int]:
    counts: dict[Outcome, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return {o: counts[o] for o in Outcome if o in counts}


# --- the nightly reproducibility verdicts -------------------------------------------------

def repro_verdicts(summaries: Iterable[dict | None], revision: str,
                   default_system: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(system, attr): (status, night)}`` from the nightly summaries that ran at ``revision``.

    A night names its commit by a prefix of it; when several nights ran the same commit
    the latest verdict stands. A summary that is not one is left out.
    """
    from ..repro.history import night_of  # the repro package imports diffoscope helpers; only here

    if not revision:
        return {}
    found: dict[tuple[str, str], tuple[str, str]] = {}
    nights = []
    for s in summaries:
        night = night_of(s) if isinstance(s, dict) else None
        if night and len(night.rev) >= MIN_REV_PREFIX and revision.startswith(night.rev):
            nights.append((night, s.get("system") or default_system))
    for night, system in sorted(nights, key=lambda n: (n[0].date, n[0].started_at, n[0].name)):
        for attr, status in night.statuses.items():
            found[(system, attr)] = (status, night.name)
    return found


# --- trends -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    """One line of a chart: a value per commit (oldest first), None where it has none."""

    label: str
    values: list[float | None]
    # Smallest change that counts as one: counts change by any amount, times by more
    # than noise (see TIME_CHANGE_*).
    tolerance: Callable[[float], float] = lambda previous: 0.0

    def changes(self) -> list[int]:
        """Indexes of the commits where the value changed from the last commit that had one."""
        out, last = [], None
        for i, v in enumerate(self.values):
            if v is None:
                continue
            if last is not None and abs(v - last) > self.tolerance(last):
                out.append(i)
            last = v
        return out


# A time changed when it moved by more than this fraction of its last value and at least
# this many seconds: boots under TCG and builds on a shared worker vary by a few seconds
# from run to run with nothing changed.
TIME_CHANGE_FRACTION = 0.25
TIME_CHANGE_SECONDS = 2.0


def time_tolerance(previous: float) -> float:
    return max(TIME_CHANGE_SECONDS, abs(previous) * TIME_CHANGE_FRACTION)


@dataclass(frozen=True)
class Trends:
    commits: list[str]  # revisions (or "" for a tip build), oldest first
    boot_seconds: list[Series]
    tests_passed: list[Series]
    tests_failed: list[Series]
    build_seconds: list[Series]


def trends(columns: list[tuple[str, list[JobRow]]], image: str = "") -> Trends:
    """Series from each commit's job rows (``columns`` oldest first).

    Boot seconds per image and VMM, tests per host tool (a job with cargo tests), build
    time per attribute (built jobs only: a cached job took no time). ``image`` names the
    booted image when a boot's answer does not ([boot].image_attr).
    """
    boot: dict[str, dict[int, float]] = {}
    passed: dict[str, dict[int, float]] = {}
    failed: dict[str, dict[int, float]] = {}
    built: dict[str, dict[int, float]] = {}
    for i, (_, rows) in enumerate(columns):
        for r in rows:
            f = r.facts
            if f.boot and f.boot.seconds is not None:
                shown = f.boot.image or image or f.job.attr
                label = f"{shown} on {f.boot.vmm}" if f.boot.vmm else shown
                boot.setdefault(f"{label} ({f.job.system})", {})[i] = f.boot.seconds
            elif f.tests and f.tests.kind == "cargo":
                passed.setdefault(r.name, {})[i] = f.tests.passed
                failed.setdefault(r.name, {})[i] = f.tests.failed
            seconds = f.build_seconds if f.build_seconds is not None else r.seconds
            if not f.boot and seconds is not None and r.outcome not in (Outcome.CACHED, Outcome.SKIPPED):
                built.setdefault(r.name, {})[i] = seconds

    def series(table: dict[str, dict[int, float]], tolerance=lambda previous: 0.0) -> list[Series]:
        return [Series(label, [values.get(i) for i in range(len(columns))], tolerance)
                for label, values in sorted(table.items())]

    return Trends([rev for rev, _ in columns], series(boot, time_tolerance), series(passed), series(failed),
                  series(built, time_tolerance))
