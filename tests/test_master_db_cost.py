"""The master's database cost per job: the distributor's builder order from one query, a
build's properties in one transaction, and SQLite committing without waiting for the disk."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from buildbot.db import enginestrategy

from redox_ci.master import sqlite
from buildbot.process.properties import Interpolate

from redox_ci.master.batched_properties import changed_properties, plain
from redox_ci.master.build_order import ordered

pytestmark = pytest.mark.unit

# SQLite's numbers for the pragma's values.
SYNCHRONOUS_NORMAL, SYNCHRONOUS_FULL = 1, 2


def request(builderid: int, priority: int, minute: int) -> dict:
    return {"builderid": builderid, "priority": priority,
            "submitted_at": datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc)}


def builder(name: str):
    return SimpleNamespace(name=name)


def test_builders_in_buildbots_order_and_only_those_with_requests():
    a, b, c, idle = builder("a"), builder("b"), builder("c"), builder("idle")
    ids = {"a": 1, "b": 2, "c": 3, "idle": 4}
    unclaimed = [request(1, 0, 5), request(2, 0, 1), request(2, 0, 9), request(3, 10, 30)]
    # The highest priority first, then the oldest request; a builder with none is left out.
    assert ordered([idle, a, b, c], ids, unclaimed) == [c, b, a]


def test_equal_builders_by_name_and_unknown_ones_left_out():
    x, y, new = builder("x"), builder("y"), builder("new")
    same = [request(1, 0, 1), request(2, 0, 1)]
    assert ordered([y, x, new], {"x": 1, "y": 2}, same) == [x, y]
    assert ordered([x], {"x": 1}, []) == []


def test_plain_json_properties_need_no_rendering():
    # A plan property of hundreds of jobs is plain data: rendering it walked every value.
    assert plain({"plan": ({"jobs": [{"attr": "a", "outputs": ["/nix/store/x"], "n": 1, "ok": True,
                                      "reason": None, "t": 0.5}]}, "PlanStep")})
    assert not plain({"x": (Interpolate("%(prop:y)s"), "Step")})
    assert not plain({"x": ([1, {"deep": Interpolate("z")}], "Step")})
    assert not plain({1: "key not a string"})


def test_only_new_or_changed_properties_are_written():
    stored = {"job": ({"attr": "a"}, "Trigger"), "buildnumber": (1, "Build")}
    rendered = {"job": ({"attr": "a"}, "Trigger"), "buildnumber": (1, "Builder"), "build_result": ({}, "BuildJob")}
    assert changed_properties(stored, rendered) == {"buildnumber": (1, "Builder"), "build_result": ({}, "BuildJob")}


@pytest.fixture
def keepers():
    sqlite.release()
    yield
    sqlite.release()


def synchronous(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("pragma synchronous").scalar()


def test_postgresql_is_left_alone():
    assert sqlite.services("postgresql://buildbot@localhost/buildbot") == []
    engine = sa.create_engine("postgresql://buildbot@localhost/buildbot")
    sqlite.relax_engine(engine)
    assert not sa.event.contains(engine, "connect", sqlite._on_connect)


def test_sqlite_commits_with_synchronous_normal_on_its_engine_only(keepers, tmp_path):
    assert [type(s) for s in sqlite.services("sqlite:///state.sqlite")] == [sqlite.RelaxedSqliteCommits]
    engine = enginestrategy.create_engine("sqlite:///state.sqlite", basedir=str(tmp_path))
    other = enginestrategy.create_engine("sqlite:///other.sqlite", basedir=str(tmp_path))
    try:
        sqlite.relax_engine(engine)
        sqlite.relax_engine(engine)  # a reconfiguration adds no second listener
        assert synchronous(engine) == SYNCHRONOUS_NORMAL
        # Another engine in the process (a test's, a tool's) commits as SQLite's default.
        assert synchronous(other) == SYNCHRONOUS_FULL
    finally:
        engine.dispose()
        other.dispose()
    # The keeper holds the WAL open: the closed connection left it in place.
    assert str(tmp_path / "state.sqlite") in sqlite._keepers and (tmp_path / "state.sqlite-wal").exists()
    assert str(tmp_path / "other.sqlite") not in sqlite._keepers
    assert sqlite.is_sqlite("sqlite+pysqlite:///x") and not sqlite.is_sqlite("postgresql+psycopg2://h/db")
