"""Lost workers: a build whose worker went away runs again, but not for ever.

Buildbot 4.3 ends a build whose worker connection was lost (``Build.lostRemote``, or a
worker that vanished while the build started) with RETRY, and ``Builder.buildFinished``
then puts its build request back in the queue (``_resubmit_buildreqs``), with no limit
(Buildbot issue 5354): a job that kills its worker would loop for ever. ``capped_build``
gives a builder a ``Build`` class that counts the earlier builds of the same request
(the data API's builds with that ``buildrequestid``) and turns the RETRY that goes over
the limit into FAILURE, "worker lost N times"; Buildbot then completes the request as it
does any failed build.

A job builder allows ``[jobs] retries``; the plan builder one (the plan runs again once;
what it triggered before is answered by the cache and the known-failure records).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from buildbot.data import resultspec
from buildbot.process.build import Build
from buildbot.process.results import FAILURE, RETRY, worst_status
from twisted.internet import defer
from twisted.python import log

# The plan builder runs a lost plan once more: a second evaluation is cheap beside a loop.
PLAN_RETRIES = 1


def lost_times(earlier_results: Iterable[int | None]) -> int:
    """How many times the worker was lost, this build included, from the results of the
    request's earlier builds."""
    return 1 + sum(1 for r in earlier_results if r == RETRY)


def lost_verdict(earlier_results: Iterable[int | None], retries: int) -> str | None:
    """None when Buildbot may run the request again; otherwise the failed build's summary."""
    lost = lost_times(earlier_results)
    return None if lost <= retries else f"worker lost {lost} time{'' if lost == 1 else 's'}"


class RetryCappedBuild(Build):
    """A ``Build`` whose lost-worker RETRY becomes FAILURE after ``retries`` retries."""

    retries = 2

    @defer.inlineCallbacks
    def buildFinished(self, text, results):
        if worst_status(self.results, results) == RETRY and self.requests:
            try:
                verdict = yield self._verdict()
            except Exception:  # buildFinished must never fail: Buildbot retries as before
                log.err(None, "counting the earlier builds of a lost build")
                verdict = None
            if verdict:
                log.msg(f"{self}: {verdict}, not run again")
                self.results = results = FAILURE
                text = [verdict]
        result = yield super().buildFinished(text, results)
        return result

    @defer.inlineCallbacks
    def _verdict(self):
        earlier = yield self.master.data.get(
            ("builds",), filters=[resultspec.Filter("buildrequestid", "eq", [self.requests[0].id])])
        return lost_verdict([b["results"] for b in earlier if b["buildid"] != self.buildid], self.retries)


@cache  # one class per limit: a reconfiguration sees the same factory
def capped_build(retries: int) -> type[Build]:
    """The ``buildClass`` for a builder whose builds run again at most ``retries`` times
    after losing their worker."""
    return type(f"RetryCappedBuild{retries}", (RetryCappedBuild,), {"retries": retries})
