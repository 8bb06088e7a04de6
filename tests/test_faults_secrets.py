"""Multi-line secrets (issue 11, item 6): the cache's signing key, wrapped over several lines
(Nix's key reader skips newlines), lives in the master's secrets file and reaches the worker
only as a file of mode 0600 in the build directory, for the push, removed after it.

A real master, a real worker process (the worker user), moto's S3 server over HTTP and a
real push of a package no earlier run built. Then every line of the key (each at least 8
characters) is looked for in every log of every build (REST API), in the REST API's
properties of every build, and in the raw bytes of the master's SQLite database; the key
file is gone from the worker's build directories, and the push's log said it was mode 0600.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from pathlib import Path

import pytest
from buildbot.process.results import FAILURE, SUCCESS

from redox_ci.cache.keys import generate_keypair, parse_secret_key
from redox_ci.cache.localserver import LocalS3Server
from redox_ci.fixture import commit_all
from redox_ci.local import CacheWiring
from redox_ci.master.cache import KEY_FILE
from tests.cache_support import Fault, FaultProxy, upstream_of
from tests.master_support import running_master

# Short lines, so that the key's 88 base64 characters make several lines to look for.
WRAP = 24
# A line shorter than this could turn up by chance (a hash, a word).
MIN_LINE = 8
JOB = "x86_64-linux.fstools"


def wrapped(text: str) -> str:
    name, b64 = text.strip().split(":", 1)
    lines = [f"{name}:{b64[:WRAP]}"] + [b64[i:i + WRAP] for i in range(WRAP, len(b64), WRAP)]
    return "\n".join(lines) + "\n"


def fresh_fstools(text: str) -> str:
    """fstools as a derivation no earlier run has built (so that there is something to push)."""
    old = 'fstools = simple "fstools" [ ];'
    if old in text:
        return text.replace(old, f'fstools = mkPkg {{ pname = "fstools"; buildPhase = "echo nonce-{uuid.uuid4().hex}"; }};')
    return re.sub(r"echo nonce-[0-9a-f]+", f"echo nonce-{uuid.uuid4().hex}", text)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with LocalS3Server(state_dir=tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(s3):
    """In front of the S3 server: the last test makes its uploads fail."""
    with FaultProxy(upstream_of(s3.url)) as p:
        yield p


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, str]:
    secret, _, public = generate_keypair(f"redox-ci-multiline-{secrets.token_hex(3)}", tmp_path_factory.mktemp("keys"))
    secret.write_text(wrapped(secret.read_text()))
    return secret, public


@pytest.fixture(scope="module")
def master(tmp_path_factory, s3, proxy, key):
    key_file, public_key = key
    credentials = {"aws_access_key_id": "AKIA" + secrets.token_hex(8).upper(),
                   "aws_secret_access_key": secrets.token_urlsafe(30)}
    wiring = CacheWiring(proxy.url, s3.bucket, key_file, public_key, credentials)
    # One attempt per S3 request: the last test's upload meets a 503 and fails at once.
    yield from running_master(tmp_path_factory, "multiline-secret", fresh_fstools, extra_toml="[cache]\nmax_attempts = 1\n",
                              cache=wiring, systems=["x86_64-linux"], worker_kind="remote",
                              poll_interval=3600)  # forced builds only: the commits here start nothing


@pytest.fixture(scope="module")
def pushed(master):
    build = master.forced_build(master.force(attrs="fstools", systems=["x86_64-linux"]))
    return build, master.jobs(build["buildid"])[JOB]


def key_lines(key_file: Path) -> list[str]:
    lines = [l for l in key_file.read_text().splitlines() if len(l) >= MIN_LINE]
    assert len(lines) >= 4, "the key is really multi-line"
    return lines


def all_builds(master) -> list[dict]:
    return master.api("builds", property="*")["builds"]


@pytest.mark.e2e
def test_multiline_secret_signs_the_push(master, key, pushed):
    _, job = pushed
    assert job["results"] == SUCCESS, job["state_string"]
    push = master.step(job["buildid"], "cache push")
    assert push["results"] == SUCCESS and "pushed 1 paths" in push["state_string"], push["state_string"]
    stdio = master.step_logs(job["buildid"], "cache push")["stdio"]
    # Nix signed with the wrapped key: the public key derived from it is ours.
    assert f"trusted public key: {key[1]}" in stdio
    # The file as the push found it: mode 0600 (the content is never printed).
    assert f"/build/{KEY_FILE} (mode 0600)" in stdio, stdio


@pytest.mark.e2e
def test_multiline_secret_file_removed_after_the_push(master, pushed):
    _, job = pushed
    names = [s["name"] for s in master.steps(job["buildid"])]
    assert names.index("signing key to worker") < names.index("cache push") < names.index("remove signing key")
    assert master.step(job["buildid"], "remove signing key")["results"] == SUCCESS
    assert_no_key_file(master)


def assert_no_key_file(master) -> None:
    build_dirs = list((master.setup.state / "workers").glob("*/*/build"))
    assert build_dirs, "the worker's build directories are where the test looks"
    assert not [p for d in build_dirs for p in d.iterdir() if p.name == KEY_FILE]


@pytest.mark.e2e
def test_multiline_secret_not_in_logs_properties_or_database(master, key, pushed):
    lines = key_lines(key[0])
    builds = all_builds(master)
    assert len(builds) >= 2
    texts = []
    for b in builds:
        for step in master.steps(b["buildid"]):
            for log in master.api(f"steps/{step['stepid']}/logs")["logs"]:
                texts.append(master.session.get(master.url + f"api/v2/logs/{log['logid']}/raw", timeout=30).text)
    assert any("cache push" in t or "pushed" in t for t in texts), "the push's logs were read"
    properties = json.dumps([b["properties"] for b in builds])
    database = b"".join(p.read_bytes() for p in master.setup.master_dir.glob("state.sqlite*"))
    assert len(database) > 0
    for line in lines:
        assert not any(line in t for t in texts), "a line of the key is in a log"
        assert line not in properties, "a line of the key is in the REST API's properties"
        assert line.encode() not in database, "a line of the key is in the database"


@pytest.mark.e2e
def test_multiline_secret_removed_after_a_failed_push(master, proxy, pushed):
    """Last in this module: every upload is answered 503, the push fails, the key file goes all the same."""
    flake = master.setup.repo / "flake.nix"
    flake.write_text(fresh_fstools(flake.read_text()))
    commit_all(master.setup.repo, "fstools changed")
    proxy.reset([Fault("503", method="PUT", times=None)])
    build = master.forced_build(master.force(attrs="fstools", systems=["x86_64-linux"]))
    job = master.jobs(build["buildid"])[JOB]
    assert master.step(job["buildid"], "cache push")["results"] == FAILURE
    assert proxy.requests("PUT"), "the push reached the upload"
    assert master.step(job["buildid"], "remove signing key")["results"] == SUCCESS
    assert_no_key_file(master)


@pytest.mark.unit
def test_multiline_secret_key_parses_as_nix_reads_it():
    """Nix's base64 reader skips newlines: a wrapped key is the same key; a CR is not skipped."""
    raw = bytes(range(64))
    one_line = "k-1:" + base64.b64encode(raw).decode()
    assert parse_secret_key(wrapped(one_line)) == parse_secret_key(one_line) == ("k-1", raw)
    assert len(wrapped(one_line).splitlines()) == 4
    with pytest.raises(ValueError, match="not valid base64"):
        parse_secret_key(wrapped(one_line).replace("\n", "\r\n"))
