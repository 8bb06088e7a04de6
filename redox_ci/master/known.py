"""Known failures: a derivation whose build failed is not built again by a later commit.

When a job's build verb answers "failed" (the build itself, never a cancelled build, a lost
worker or a step that could not run), the job's derivation gets a record: the failed build's
link and when it failed. A later job of the same derivation ends FAILURE at once with
"failed before in <link>" and runs no Nix, until the record expires (``[jobs]
known_failure_days``). A Rebuild of the job, or a force naming its attribute, clears the
record and builds; a later success clears it too.

Records are keyed by derivation (one Buildbot state object per derivation, named by the
store path's hash) in the master's database through ``master.db.state``, so they work on
SQLite and PostgreSQL alike and survive restarts.

The decision is the job build's first step, not the stage trigger: a Rebuild runs the job's
own build again (Buildbot copies its buildset to the same builder) and only a step of that
build sees it. The price is a worker slot for the moment the step takes, with no Nix.
"""

from __future__ import annotations

import re
from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS

from .base import job_of
from .schedulers import FORCE_SCHEDULER

# The Buildbot state object class of the records; its object name is the derivation's hash.
STATE_CLASS = "redox_ci.known_failure"
STATE_NAME = "failure"
DAY_SECONDS = 24 * 60 * 60
# A derivation path: the store hash names the derivation.
DRV_PATH = re.compile(r"\A/nix/store/([0-9a-df-np-sv-z]{32})-[^/]+\.drv\Z")
NO_RECORD = "no failure record"


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


class KnownFailures:
    """The records, in Buildbot's object state."""

    def __init__(self, master):
        self.state = master.db.state

    async def _object(self, drv: str) -> int:
        return await self.state.getObjectId(record_key(drv), STATE_CLASS)

    async def get(self, drv: str) -> dict | None:
        return await self.state.getState(await self._object(drv), STATE_NAME, None)

    async def put(self, drv: str, record: dict) -> None:
        await self.state.setState(await self._object(drv), STATE_NAME, record)

    async def clear(self, drv: str) -> bool:
        """Remove the record; whether there was one."""
        had = await self.get(drv)
        if had:
            await self.put(drv, None)
        return bool(had)


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

    def __init__(self, days: int, **kwargs):
        self.days = days
        # Shown only when it has something to say.
        super().__init__(haltOnFailure=True, hideStepIf=lambda results, step: results == SKIPPED
                         or step._summary == NO_RECORD, **kwargs)
        self._summary = ""

    async def run(self):
        drv = job_of(self).drv
        if record_key(drv) is None:
            self._summary = "no derivation"
            return SKIPPED
        store = KnownFailures(self.master)
        why = await built_anyway(self)
        if why:
            cleared = await store.clear(drv)
            self._summary = f"{why}: the failure record was cleared" if cleared else f"{why}: {NO_RECORD}"
            return SUCCESS
        record = await store.get(drv)
        if live(record, self.master.reactor.seconds(), self.days):
            self._summary = failed_before(record)
            return FAILURE
        self._summary = "failed before, the record expired" if record else NO_RECORD
        return SUCCESS

    def getResultSummary(self):
        if self.results == FAILURE:
            return {"step": self._summary, "build": self._summary}
        return {"step": self._summary}


class RememberOutcome(buildstep.BuildStep):
    """The job's last step: a failed build records its derivation, a successful one clears it."""

    name = "remember outcome"

    def __init__(self, **kwargs):
        super().__init__(alwaysRun=True, hideStepIf=True, **kwargs)

    async def run(self):
        job = job_of(self)
        drv = job.drv
        change = outcome_change(build_status(self))
        if record_key(drv) is None or change is None:
            return SKIPPED
        store = KnownFailures(self.master)
        if change == "clear":
            await store.clear(drv)
        else:
            await store.put(drv, {"url": await self.build.getUrl(), "buildid": self.build.buildid,
                                  "attr": job.attr, "at": self.master.reactor.seconds()})
        return SUCCESS
