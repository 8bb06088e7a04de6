"""The production database: a real master on PostgreSQL builds, and its results are in PostgreSQL.

A private PostgreSQL cluster (Debian's server binaries) runs on a free port for the
module; the master's ``[database] url`` points at it, ``redox-ci local``'s
``prepare`` creates the schema with ``buildbot create-master --db``, and a forced
build is read back both through the REST API and straight from the tables,
also after a restart of the master. The URL is the plain ``postgresql://`` form the
README documents; which driver SQLAlchemy picks for it depends on its version, and
both are dependencies.

PostgreSQL refuses to run as root. Run as root, the cluster belongs to the
``postgres`` user and lives in a directory of its own under the system temporary
directory: pytest's ``tmp_path`` sits below a directory only root may enter.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.master_support import cargo_counts, free_port, running_master

pytestmark = pytest.mark.e2e

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[master]')")

SUCCESS = 0
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
# The account that owns the cluster when the tests run as root (Debian's package creates it).
PG_OWNER = "postgres"
SUPERUSER = "redox"
DATABASE = "redoxci"
# pg_ctl's own wait for the server to accept connections (or to stop).
PG_CTL_WAIT_SECONDS = 60


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    dirs = [Path(d) for d in glob.glob(PG_BIN_GLOB) if (Path(d) / "initdb").exists()]
    return max(dirs, key=lambda d: int(d.parent.name)) if dirs else None


def as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


def initdb_argv(bin_dir: Path, data: Path, password_file: Path) -> list[str]:
    return [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={password_file}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"]


def start_argv(bin_dir: Path, data: Path, log: Path, port: int) -> list[str]:
    # Only 127.0.0.1, the socket beside the data; fsync off: a throw-away test cluster.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={data.parent} -c fsync=off"
    return [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(PG_CTL_WAIT_SECONDS),
            "-o", options, "start"]


def stop_argv(bin_dir: Path, data: Path) -> list[str]:
    return [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", str(PG_CTL_WAIT_SECONDS), "stop"]


@dataclass
class Cluster:
    root: Path
    port: int
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                                password=self.password, dbname=database)
        conn.autocommit = True
        return conn

    def query(self, sql: str, *args) -> list[tuple]:
        conn = self.connect(DATABASE)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def cluster():
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL server in {PG_BIN_GLOB} (scripts/install.sh installs postgresql)")
    owner = PG_OWNER if os.geteuid() == 0 else None
    if owner:
        try:
            pwd.getpwnam(owner)
        except KeyError:
            pytest.skip(f"running as root and there is no {owner!r} user to own the PostgreSQL cluster")
    root = Path(tempfile.mkdtemp(prefix="redox-ci-pg-"))
    data, log, password_file = root / "data", root / "server.log", root / "password"
    password = secrets.token_urlsafe(16)
    password_file.write_text(password + "\n")
    if owner:
        for path in (root, password_file):
            shutil.chown(path, owner)
    pg = Cluster(root, free_port(), password)
    started = False
    try:
        run(as_owner(initdb_argv(bin_dir, data, password_file), owner))
        run(as_owner(start_argv(bin_dir, data, log, pg.port), owner))
        started = True
        conn = pg.connect("postgres")
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
        conn.close()
        yield pg
    finally:
        if started:
            subprocess.run(as_owner(stop_argv(bin_dir, data), owner), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def master(cluster, tmp_path_factory):
    yield from running_master(tmp_path_factory, "postgres", worker_kind="local", db_url=cluster.url(DATABASE))


@pytest.fixture(scope="module")
def forced(master):
    r = master.force(attrs="cookbook", systems=["x86_64-linux"], reason="postgres test")
    build = master.forced_build(r)
    return build, master.jobs(build["buildid"])


def test_schema_is_in_postgres_not_sqlite(master, cluster):
    tables = {t for (t,) in cluster.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"builds", "builders", "buildrequests", "build_properties", "steps", "logs"} <= tables
    assert not list(master.setup.master_dir.glob("*.sqlite"))


def test_forced_build_reads_back_through_rest(forced):
    build, jobs = forced
    assert build["results"] == SUCCESS
    assert list(jobs) == ["x86_64-linux.cookbook"]
    cookbook = jobs["x86_64-linux.cookbook"]
    assert cookbook["results"] == SUCCESS
    assert cargo_counts(cookbook)["passed"] == 9


def test_build_rows_are_in_postgres(cluster, forced):
    build, jobs = forced
    rows = {name: (buildid, number, results) for buildid, number, results, name in cluster.query(
        "SELECT b.id, b.number, b.results, bu.name FROM builds b JOIN builders bu ON bu.id = b.builderid")}
    cookbook = jobs["x86_64-linux.cookbook"]
    assert rows["redox/plan"] == (build["buildid"], build["number"], build["results"])
    assert rows["x86_64-linux.cookbook"] == (cookbook["buildid"], cookbook["number"], cookbook["results"])
    (result,), = cluster.query(
        "SELECT value FROM build_properties WHERE buildid = %s AND name = 'build_result'", cookbook["buildid"])
    # The verb's answer as JSON, as Buildbot stores a property's value.
    assert json.loads(result)["tests"]["passed"] == 9


def test_results_survive_a_master_restart(master, forced):
    build, _ = forced
    master.stop()
    master.start()
    again = master.api(f"builds/{build['buildid']}")["builds"][0]
    assert (again["number"], again["results"], again["complete"]) == (build["number"], SUCCESS, True)
