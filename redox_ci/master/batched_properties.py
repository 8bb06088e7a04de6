"""A build's properties written in one database transaction, not one per property.

Buildbot's ``setBuildProperties`` (called when a build starts, after each step and at its
end) writes each new or changed property in a transaction of its own: a job build's 22
properties are 22 transactions on the master's one SQLite thread (about 2 ms each here),
a third of a job's database transactions. ``BatchedBuildProperties`` replaces this master's
``data.updates.setBuildProperties`` (the one update method, on this master's data
connector only) with the same steps (read the stored properties, render, keep the new
or changed ones, write each as Buildbot's ``setBuildProperty`` does, one update event),
but the writes share one transaction. ``setBuildProperty`` for a single property (a step's
``setProperty`` goes through the build's properties, not through it) is left as it is.
"""

from __future__ import annotations

import json

from buildbot.util import service
from twisted.internet import defer

NAME = "batched-build-properties"


def changed_properties(stored: dict, rendered: dict) -> dict:
    """Pure: the (value, source) pairs of ``rendered`` that ``stored`` lacks or holds otherwise."""
    return {k: v for k, v in rendered.items() if k not in stored or stored[k] != v}


def write_properties(db, conn, buildid: int, properties: dict) -> None:
    """In one transaction (``conn``), what Buildbot's ``setBuildProperty`` does for each."""
    table = db.model.build_properties
    for name, (value, source) in properties.items():
        db.builds.checkLength(table.c.name, name)
        db.builds.checkLength(table.c.source, source)
        where = (table.c.buildid == buildid) & (table.c.name == name)
        row = conn.execute(table.select().with_only_columns(table.c.value, table.c.source).where(where)).fetchone()
        value_js = json.dumps(value)
        if row is None:
            conn.execute(table.insert(), {"buildid": buildid, "name": name, "value": value_js, "source": source})
        elif row.value != value_js or row.source != source:
            conn.execute(table.update().where(where), {"value": value_js, "source": source})


def plain(value) -> bool:
    """Whether ``value`` is JSON data alone (nothing to render)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


class BatchedBuildProperties(service.BuildbotService):
    name = NAME

    @defer.inlineCallbacks
    def startService(self):
        updates = self.master.data.updates
        self._buildbots = updates.setBuildProperties
        updates.setBuildProperties = self.set_build_properties
        yield super().startService()

    def stopService(self):
        self.master.data.updates.setBuildProperties = self._buildbots
        return super().stopService()

    @defer.inlineCallbacks
    def set_build_properties(self, buildid: int, properties):
        master = self.master
        stored = yield master.data.get(("builds", str(buildid), "properties"))
        real = properties.getProperties()
        values = real.asDict()
        rendered = values if plain(values) else (yield real.render(values))
        changed = changed_properties(stored, rendered)
        if changed:
            yield master.db.pool.do_with_transaction(
                lambda conn: write_properties(master.db, conn, buildid, changed))
            yield master.data.rtypes.property.generateUpdateEvent(buildid, changed)


def batched_build_properties() -> BatchedBuildProperties:
    return BatchedBuildProperties(name=NAME)
