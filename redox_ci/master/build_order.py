"""The order in which Buildbot's distributor looks at builders: one query, not three per builder.

Every finished build makes Buildbot's ``BuildRequestDistributor`` look at every builder
(``maybeStartBuildsForAllBuilders``). Its default order asks the database twice per
builder (the highest priority and the oldest submission of its unclaimed requests), and
then each builder in that order asks once more for its unclaimed requests: with a dozen
builders, about 36 queries per finished job, nearly all answering "none".

``prioritize_builders`` (Buildbot's ``prioritizeBuilders`` setting) asks once for every
unclaimed request and keeps Buildbot's order (highest priority first, then the oldest
request, then the name) for the builders that have one; a builder with none is left out
of this round, as it has nothing to start. A request submitted later makes Buildbot look
at its builder again (``Builder`` reacts to every new request), so nothing waits.
"""

from __future__ import annotations

from datetime import datetime

from buildbot.data import resultspec
from twisted.internet import defer


def order_key(requests: list[dict], name: str) -> tuple:
    """Buildbot's default sort key of a builder (``_defaultSorter``) from its unclaimed requests."""
    priority = max(r["priority"] for r in requests)
    oldest = min(r["submitted_at"] for r in requests)
    return (-priority, oldest.timestamp() if isinstance(oldest, datetime) else oldest, name)


def ordered(builders: list, builderids: dict[str, int], unclaimed: list[dict]) -> list:
    """Pure: the builders with unclaimed requests, in Buildbot's default order."""
    by_id: dict[int, list[dict]] = {}
    for r in unclaimed:
        by_id.setdefault(r["builderid"], []).append(r)
    waiting = [(order_key(by_id[builderids[b.name]], b.name), b) for b in builders
               if b.name in builderids and builderids[b.name] in by_id]
    return [b for _, b in sorted(waiting, key=lambda kb: kb[0])]


async def _prioritize(master, builders: list) -> list:
    if not builders:
        return []
    unclaimed = await master.data.get(("buildrequests",), filters=[resultspec.Filter("claimed", "eq", [False])])
    # getBuilderId is answered from memory once the builder is known to the database.
    ids = {b.name: await b.getBuilderId() for b in builders}
    return ordered(builders, ids, unclaimed)


def prioritize_builders(master, builders: list):
    """Buildbot's ``prioritizeBuilders``: a Deferred of the builders to look at, in order."""
    return defer.ensureDeferred(_prioritize(master, builders))
