"""Known failures: a derivation whose build failed is not built again by a later commit.

When a job's build verb answers "failed" (the build itself, never a cancelled build, a lost
worker or a step that could not run), the job's derivation gets a record: the failed build's
link and when it failed. A later job of the same derivation ends FAILURE at once with
"failed before in <link>" and runs no Nix, until the record expires (``[jobs]
known_failure_days``). A Rebuild of the job, or a force naming its attribute, clears the
record and builds; a later success clears it too.

Records are keyed by derivation (the store path's hash) and kept in the master's database
through Buildbot's object state (``master.db.state``, the ``KnownFailures`` service's), so
they work on SQLite and PostgreSQL alike and survive restarts.

The decision is the job build's first step, not the stage trigger: a Rebuild runs the job's
own build again (Buildbot copies its buildset to the same builder) and only a step of that
build sees it. The price is a worker slot for the moment the step takes, with no Nix; a
job of a derivation with no record (nearly every job) has neither step.
"""

from __future__ import annotations

import re

from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS
from buildbot.util import service
from twisted.internet import defer

from .base import job_of
from .schedulers import FORCE_SCHEDULER

# The service holding the records, and the name of its state (Buildbot's object state).
NAME = "known-failures"
STATE_NAME = "records"
DAY_SECONDS = 24 * 60 * 60
# A derivation path: the store hash names the derivation.
DRV_PATH = re.compile(r"\A/nix/store/([0-9a-df-np-sv-z]{32})-[^/]+\.drv\Z")


def record_key(drv: str | None) -> str | None:
    """The record's name for a derivation path (its store hash), or None for no derivation."""
    m = DRV_PATH.match(drv or "")
    return m.group(1) if m else None


def live(record: dict | None, now: float, days: int) -> bool:
    """Whether a record still stops the derivation from being built."""
    return bool(record) and now - record["at"] < days * DAY_SECONDS


def outcome_change(build_status: str | None) -> str | None:
    """What a finished build does to its derivation's record: "record", "clear" or nothing.

    Only the build verb's answer counts: a build that was cancelled, lost its worker or
    never ran the verb has no status and leaves the record as it was.
    """
    return {"failed": "record", "success": "clear"}.get(build_status or "")


def forces_job(scheduler: str | None, forced_attrs: str | None, job_names: set[str]) -> bool:
    """Whether the pipeline was forced with this job's attribute (or one of its aliases)."""
    return scheduler == FORCE_SCHEDULER and bool(set((forced_attrs or "").split()) & job_names)


def failed_before(record: dict) -> str:
    return f"failed before in {record['url']}"


def build_status(props) -> str | None:
    """The build verb's status (its ``build_result`` answer), None when it gave none."""
    result = props.getProperty("build_result")
    return result.get("status") if isinstance(result, dict) else None


def pruned(records: dict[str, dict], now: float, days: int) -> dict[str, dict]:
    """The records that still live."""
    return {key: r for key, r in records.items() if live(r, now, days)}


class KnownFailures(service.BuildbotService):
    """The records: one Buildbot state object (this service's) holding every live record by
    derivation hash, and a copy in memory, so that a job of a derivation with no record
    (nearly every job) asks nothing of the database and its steps are left out
    (``base.QuietSkips``). Expired records are dropped when the master starts and at each
    write; writes go one at a time, the whole set each."""

    name = NAME

    def checkConfig(self, days: int):
        if days < 0:
            raise ValueError("known_failure_days must be 0 or more")

    def reconfigService(self, days: int):
        self.days = days
        return super().reconfigService()

    @defer.inlineCallbacks
    def startService(self):
        self.records: dict[str, dict] = {}
        self._writes = defer.DeferredLock()
        yield super().startService()
        stored = yield self.master.db.state.getState(self.objectid, STATE_NAME, {})
        self.records = pruned(stored or {}, self.master.reactor.seconds(), self.days)

    def get(self, drv: str | None) -> dict | None:
        key = record_key(drv)
        return self.records.get(key) if key else None

    async def put(self, drv: str, record: dict) -> None:
        await self._write(record_key(drv), record)

    async def clear(self, drv: str) -> bool:
        """Remove the record; whether there was one."""
        had = self.get(drv) is not None
        if had:
            await self._write(record_key(drv), None)
        return had

    async def _write(self, key: str, record: dict | None) -> None:
        await self._writes.acquire()
        try:
            records = pruned(self.records, self.master.reactor.seconds(), self.days)
            records.pop(key, None)
            if record is not None:
                records[key] = record
            self.records = records
            await self.master.db.state.setState(self.objectid, STATE_NAME, records)
        finally:
            self._writes.release()


def known_failures(days: int) -> KnownFailures:
    return KnownFailures(days, name=NAME)


def store_of(step: buildstep.BuildStep) -> KnownFailures:
    return step.master.service_manager.namedServices[NAME]


async def built_anyway(step: buildstep.BuildStep) -> str | None:
    """Why the job is built whatever its record says: its Rebuild, or a force naming it."""
    buildset = await step.master.data.get(("buildsets", step.build.requests[0].bsid))
    if buildset.get("rebuilt_buildid") is not None:
        return "Rebuild"
    parent = buildset.get("parent_buildid")
    if parent is None:
        return None
    props = await step.master.data.get(("builds", parent, "properties"))
    job = job_of(step)
    names = {job.attr, *job.aliases}
    if forces_job(props.get("scheduler", (None,))[0], props.get("attrs", ("",))[0], names):
        return "forced"
    return None


class CheckKnownFailure(buildstep.BuildStep):
    """The job's first step: FAILURE "failed before in <link>" while its derivation's record
    lives, which halts the build before Nix runs."""

    name = "known failure"

    def __init__(self, **kwargs):
        # Left out when the derivation has no record (base.QuietSkips), as nearly always.
        super().__init__(haltOnFailure=True, doStepIf=lambda step: store_of(step).get(job_of(step).drv) is not None,
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)
        self._summary = ""

    async def run(self):
        drv = job_of(self).drv
        store = store_of(self)
        why = await built_anyway(self)
        if why:
            await store.clear(drv)
            self._summary = f"{why}: the failure record was cleared"
            return SUCCESS
        record = store.get(drv)
        if live(record, self.master.reactor.seconds(), store.days):
            self._summary = failed_before(record)
            return FAILURE
        self._summary = "failed before, the record expired" if record else "the failure record was cleared"
        return SUCCESS

    def getResultSummary(self):
        if self.results == FAILURE:
            return {"step": self._summary, "build": self._summary}
        return {"step": self._summary}


class RememberOutcome(buildstep.BuildStep):
    """The job's last step: a failed build records its derivation, a successful one clears it."""

    name = "remember outcome"

    def __init__(self, **kwargs):
        # Left out when there is nothing to change (base.QuietSkips): no answer from the
        # verb, or a success with no record to clear.
        super().__init__(alwaysRun=True, doStepIf=lambda step: step.change() is not None, hideStepIf=True,
                         **kwargs)

    def change(self) -> str | None:
        drv = job_of(self).drv
        change = outcome_change(build_status(self))
        if record_key(drv) is None or (change == "clear" and store_of(self).get(drv) is None):
            return None
        return change

    async def run(self):
        job, store = job_of(self), store_of(self)
        if self.change() == "clear":
            await store.clear(job.drv)
        else:
            await store.put(job.drv, {"url": await self.build.getUrl(), "buildid": self.build.buildid,
                                      "attr": job.attr, "at": self.master.reactor.seconds()})
        return SUCCESS
