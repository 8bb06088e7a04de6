"""SQLite, the trial and local default: commits that do not wait for the disk.

Buildbot gives SQLite one database thread and a new connection for every operation
(SQLAlchemy's ``NullPool``), a job build being about 140 operations, 38 of them writes. In
WAL mode (Buildbot's) SQLite checkpoints the WAL into the database and deletes it when the
last connection closes, with an fsync, so every write paid one; and with the default
``synchronous = FULL`` each commit waits for another. About 2 ms per write here, more
when the disk is busy: 0.075 ms with both changes below (a loop of one-row transactions).

- A keeper connection per database file, open for the master's life, reads once so that
  it holds the WAL open: closing the operations' connections then checkpoints nothing.
  SQLite checkpoints the WAL itself every 1000 pages (``wal_autocheckpoint``).
- ``synchronous = NORMAL``: a commit is in the WAL at once and reaches the disk at the
  next checkpoint.

Both on the engine Buildbot made for the master's database (a service, once it exists),
not on SQLAlchemy's pools at large: another engine in the process is left alone.

The trade-off, for SQLite only: a power cut or a crash of the machine (not of the master:
a killed master loses nothing) may lose the last commits, which the restart clean-up then
treats as builds that never finished; the database stays consistent. PostgreSQL
(production) is left alone.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from buildbot.util import service
from twisted.internet import defer

PRAGMA = "pragma synchronous = NORMAL"
# Database file -> its keeper connection (one per file, for the process's life).
_keepers: dict[str, sqlite3.Connection] = {}
# Database files whose keeper holds the WAL open.
_in_wal: set[str] = set()


def is_sqlite(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] == "sqlite"


def database_file(connection: sqlite3.Connection) -> str:
    """The main database's file, "" for an in-memory database."""
    rows = connection.execute("pragma database_list").fetchall()
    return next((file for _, name, file in rows if name == "main"), "") or ""


def keep_open(path: str) -> None:
    """Open ``path``'s keeper, and have it read until it has the WAL open: the first
    connection of a new database opens before Buildbot turns WAL on."""
    if not path or path in _in_wal:
        return
    keeper = _keepers.get(path) or _keepers.setdefault(path, sqlite3.connect(path, check_same_thread=False))
    keeper.execute("select count(*) from sqlite_master").fetchall()  # reads the header: WAL or not
    if keeper.execute("pragma journal_mode").fetchone()[0] == "wal":
        _in_wal.add(path)


def release() -> None:
    """Close the keepers (for tests; a master keeps them until it exits)."""
    _in_wal.clear()
    while _keepers:
        _keepers.popitem()[1].close()


def _on_connect(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(PRAGMA)
        keep_open(database_file(dbapi_connection))


def relax_engine(engine: sa.engine.Engine) -> None:
    """Every connection ``engine`` opens from now on commits with ``synchronous = NORMAL``
    and gives its database file a keeper; other engines are left alone. Idempotent, and
    nothing for an engine of another database."""
    if engine.dialect.name == "sqlite" and not sa.event.contains(engine, "connect", _on_connect):
        sa.event.listen(engine, "connect", _on_connect)


class RelaxedSqliteCommits(service.BuildbotService):
    """Applies ``relax_engine`` to the engine Buildbot made for the master's own database,
    once it exists (the few operations before, at start, commit as SQLite's default)."""

    name = "redox-ci-sqlite-commits"

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        relax_engine(self.master.db.pool.engine)
        # One operation now, so the keeper holds the WAL open from the start.
        yield self.master.db.pool.do(lambda _conn: None)


def services(url: str) -> list:
    """The master's services for its database ``url``: the tuning for SQLite only."""
    return [RelaxedSqliteCommits()] if is_sqlite(url) else []
