"""Superseded commits: a new commit on a branch cancels the older commit's pipeline.

Buildbot's ``OldBuildCanceller`` does the tracking: when a change on a branch arrives and a
new plan request follows it, the plan requests of that branch made before the change are
cancelled (queued or running; a running plan build is stopped, and its Trigger steps
cancel the job builds they started, with Buildbot's reason "parent build was interrupted").

Two things differ from Buildbot's service, both in ``_on_buildrequest_new``:
- only requests of the commit scheduler take part, so a forced build (or a nightly one)
  is never cancelled by a later commit and never cancels anything;
- the reason is "superseded by <rev>", the new request's revision, instead of Buildbot's
  fixed "Build request has been obsoleted by a newer commit".
"""

from __future__ import annotations

from buildbot.schedulers.canceller import OldBuildCanceller
from buildbot.util.ssfilter import SourceStampFilter
from twisted.internet import defer

NAME = "superseded"


class SupersededCanceller(OldBuildCanceller):
    """``OldBuildCanceller`` for the requests of one scheduler, with the new revision as
    the reason."""

    def checkConfig(self, name, filters, branch_key=None, *, scheduler: str):
        super().checkConfig(name, filters, branch_key)

    def reconfigService(self, name, filters, branch_key=None, *, scheduler: str):
        self.scheduler = scheduler
        self._superseding: str | None = None
        return super().reconfigService(name, filters, branch_key)

    @defer.inlineCallbacks
    def _on_buildrequest_new(self, key, breq):
        props = yield self.master.db.buildsets.getBuildsetProperties(breq["buildsetid"])
        if props.get("scheduler", (None, None))[0] != self.scheduler:
            return  # forced, triggered or nightly: neither cancelled nor cancelling
        builder = yield self.master.data.get(("builders", breq["builderid"]))
        buildset = yield self.master.data.get(("buildsets", breq["buildsetid"]))
        # The tracker cancels synchronously inside this call: nothing else runs meanwhile.
        self._superseding = ", ".join(ss["revision"] or "the branch tip" for ss in buildset["sourcestamps"])
        try:
            self._build_tracker.on_new_buildrequest(breq["buildrequestid"], builder["name"],
                                                    buildset["sourcestamps"])
        finally:
            self._superseding = None

    def _cancel_buildrequest(self, brid):
        reason = f"superseded by {self._superseding}" if self._superseding else "superseded by a newer commit"
        self.master.data.control("cancel", {"reason": reason}, ("buildrequests", str(brid)))


def superseded_canceller(plan_builder: str, scheduler: str) -> SupersededCanceller:
    """The service that cancels ``plan_builder``'s older pipelines of a branch when
    ``scheduler`` (the commit scheduler) queues a newer one."""
    return SupersededCanceller(NAME, [([plan_builder], SourceStampFilter())], scheduler=scheduler)
