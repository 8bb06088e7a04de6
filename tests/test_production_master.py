"""End to end: a production master made by the README's steps, and GitHub's deliveries to it.

The steps as "A production master" in the README gives them: settings.toml from
settings.example.toml and secrets.toml from secrets.example (mode 0600), then
``scripts/create-master.sh BASEDIR SETTINGS`` as root, run twice (a new master, then the
upgrade after a new version), then the master started as its systemd unit starts it (its
user, environment, umask and ``ExecStart``; there is no systemd here) and a worker that
connects to it. What differs from a real host, and why: SQLite instead of PostgreSQL, the
fixture flake in a local repository instead of GitHub, the worker on the same host.

GitHub's own example payloads (tests/data/github), signed with the configured secret as
GitHub signs them (``X-Hub-Signature-256`` and ``X-Hub-Signature``), go to the hook of the
one running master: a foreign repository's push to ``main``, a tag push, a branch
deletion and a ``ping`` are answered and record nothing; our repository's push to ``main``
records one change and starts a pipeline. Both are read back from the REST API.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import pwd
import shlex
import stat
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import requests
import tomli_w

from redox_ci.fixture import git, make_fixture_repo
from redox_ci.local import LocalSetup
from redox_ci.workerproc import open_to_others
from tests.master_support import BUILD_WAIT_SECONDS, STARTUP_WAIT_SECONDS, Master, free_port, require_buildbot
from tests.support import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).parent / "data" / "github"
MASTER_USER = "redox-ci-master"  # create-master.sh's default
WORKER = "builder-1"
WEBHOOK_SECRET = "webhook-secret-Hq4z"
SUCCESS, WARNINGS = 0, 1


def service(unit: Path) -> dict[str, list[str]]:
    """The [Service] lines of a systemd unit: key -> values, in order."""
    out: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


class Production:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = tmp / "redox-flake"
        self.etc = tmp / "etc"
        self.basedir = tmp / "prod" / "master"
        self.units = tmp / "units"
        self.www_port, self.pb_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.runs: list[subprocess.CompletedProcess] = []
        self.master = Master(
            LocalSetup(state=tmp / "prod", repo=self.repo, www_port=self.www_port, pb_port=self.pb_port,
                       worker_kind="remote", worker_name=WORKER, max_builds=1, github_webhook=True),
            admin_password="admin-pass-Rt52", worker_password="worker-pass-Lm07",
            webhook_secret=WEBHOOK_SECRET)

    # --- README, "A production master" ----------------------------------------
    def write_settings(self) -> None:
        """settings.toml from settings.example.toml, with this host's values."""
        data = tomllib.loads((ROOT / "settings.example.toml").read_text())
        data["flake"].update(repo=str(self.repo), poll_interval=3600)
        data["www"].update(port=self.www_port, url=self.master.url)
        data["database"]["url"] = "sqlite:///state.sqlite"
        # One worker, on this host: inline instead of the inventory file, listening on loopback.
        data["workers"] = {"port": self.pb_port, "interface": "127.0.0.1",
                           "command": [sys.executable, "-m", "redox_ci"],
                           "worker": [{"name": WORKER, "systems": ["x86_64-linux"], "max_builds": 1}]}
        data["cache"] = {"enabled": False}
        self.etc.mkdir()
        (self.etc / "settings.toml").write_text(tomli_w.dumps(data))

    def write_secrets(self) -> None:
        """secrets.toml from secrets.example, mode 0600."""
        data = tomllib.loads((ROOT / "secrets.example").read_text())
        data["github_webhook_secret"] = WEBHOOK_SECRET
        data["users"] = {"admin": self.master.admin_password}
        data["workers"] = {WORKER: self.master.worker_password}
        del data["cache"]  # the cache is off
        secrets = self.etc / "secrets.toml"
        secrets.write_text(tomli_w.dumps(data))
        secrets.chmod(0o600)

    def create_master(self) -> subprocess.CompletedProcess:
        env = {**os.environ, "REDOX_CI_VENV": sys.prefix, "REDOX_CI_UNIT_DIR": str(self.units)}
        proc = subprocess.run([str(ROOT / "scripts" / "create-master.sh"), str(self.basedir),
                               str(self.etc / "settings.toml")], env=env, capture_output=True, text=True)
        self.runs.append(proc)
        return proc

    def start(self) -> None:
        """As systemd starts the unit create-master.sh wrote."""
        unit = service(self.units / "redox-ci-master.service")
        user = pwd.getpwnam(unit["User"][0])
        env = dict(e.split("=", 1) for e in unit["Environment"])
        # The fixture flake is a local repository of root's; the poller's git (as the
        # master user) refuses another user's repository unless it is named safe.
        gitconfig = Path(env["HOME"]) / ".gitconfig"
        gitconfig.write_text(f"[safe]\n\tdirectory = {self.repo}\n")
        os.chown(gitconfig, user.pw_uid, user.pw_gid)
        log = (self.tmp / "master.out").open("w")
        self.process = subprocess.Popen(
            shlex.split(unit["ExecStart"][0]), cwd=unit["WorkingDirectory"][0], env=env,
            user=user.pw_uid, group=user.pw_gid, extra_groups=[], umask=int(unit["UMask"][0], 8),
            stdout=log, stderr=subprocess.STDOUT)
        wait_for("the web UI", self.answers, STARTUP_WAIT_SECONDS)
        self.master.start_workers()

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the master exited with {self.process.returncode}:\n"
                                 f"{(self.tmp / 'master.out').read_text()[-3000:]}")
        try:
            return requests.get(self.master.url + "api/v2/builders", timeout=5).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.master.stop()  # the workers (`buildbot stop` needs a twistd.pid: --nodaemon writes none)
        if self.process:
            self.process.terminate()  # as systemd stops the unit
            self.process.wait(timeout=120)

    # --- acting as GitHub -----------------------------------------------------
    def deliver(self, event: str, payload: dict, secret: str | None = WEBHOOK_SECRET) -> requests.Response:
        body = json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                   "User-Agent": "GitHub-Hookshot/redox-ci-test", "Content-Type": "application/json"}
        if secret:
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        return requests.post(self.master.url + "change_hook/github", data=body, headers=headers, timeout=30)

    def recorded(self) -> tuple[list[dict], list[dict]]:
        """Every change and every build request the master has, from its REST API."""
        return self.master.api("changes")["changes"], self.master.api("buildrequests")["buildrequests"]

    def recorded_ids(self) -> tuple[list[int], list[int]]:
        changes, reqs = self.recorded()
        return [c["changeid"] for c in changes], [r["buildrequestid"] for r in reqs]

    def ours(self, payload: dict) -> dict:
        """A payload with its repository fields set to the flake repository of the settings."""
        payload = copy.deepcopy(payload)
        payload["repository"].update(
            name=self.repo.name, full_name=f"redox/{self.repo.name}", html_url=str(self.repo),
            url=str(self.repo), clone_url=str(self.repo), git_url=f"file://{self.repo}", ssh_url=str(self.repo),
            svn_url=str(self.repo))
        return payload


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    require_buildbot()
    if os.geteuid() != 0:
        pytest.skip("scripts/create-master.sh makes the master's system user: it runs as root")
    tmp = tmp_path_factory.mktemp("production")
    p = Production(tmp)
    make_fixture_repo(p.repo)
    p.write_settings()
    p.write_secrets()
    open_to_others(p.etc)  # pytest's temporary directories are 0700: let the master user in
    open_to_others(p.repo)
    for what in ("created", "upgraded"):
        proc = p.create_master()
        assert proc.returncode == 0, proc.stderr
        assert f"master {what} in {p.basedir}" in proc.stderr
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_the_documented_steps_make_a_master_of_its_own_user(prod):
    unit = service(prod.units / "redox-ci-master.service")
    assert unit["User"] == [MASTER_USER]
    assert unit["ExecStart"] == [f"{sys.prefix}/bin/buildbot start --nodaemon {prod.basedir}"]
    master_uid = pwd.getpwnam(MASTER_USER).pw_uid
    status = Path(f"/proc/{prod.process.pid}/status").read_text()
    assert f"Uid:\t{master_uid}\t" in status
    secrets = (prod.etc / "secrets.toml").stat()
    assert secrets.st_uid == master_uid and stat.S_IMODE(secrets.st_mode) == 0o600
    assert (prod.basedir / "settings.toml").resolve() == prod.etc / "settings.toml"
    assert (prod.basedir / "state.sqlite").stat().st_uid == master_uid
    assert "no systemd here: start it with runuser -u redox-ci-master" in prod.runs[-1].stderr


def test_the_script_refuses_to_upgrade_a_running_master(prod):
    proc = prod.create_master()
    assert proc.returncode == 2
    assert f"the master in {prod.basedir} is running (pid" in proc.stderr


def test_a_delivery_without_the_signature_is_refused_before_anything_else(prod):
    before = prod.recorded_ids()
    r = prod.deliver("push", prod.ours(example("push.json") | {"ref": "refs/heads/main"}), secret=None)
    assert r.status_code == 400 and "no required signature" in r.text
    r = prod.deliver("push", prod.ours(example("push.json") | {"ref": "refs/heads/main"}), secret="not-the-secret")
    assert r.status_code == 400 and "Hash mismatch" in r.text
    assert prod.recorded_ids() == before


def _foreign_push() -> tuple[str, dict]:
    return "push", example("push.json") | {"ref": "refs/heads/main"}


def _tag_push(prod) -> tuple[str, dict]:
    return "push", prod.ours(example("push-tag.json"))


def _branch_deletion(prod) -> tuple[str, dict]:
    return "push", prod.ours(example("push-delete-tag.json")) | {"ref": "refs/heads/main"}


def _ping() -> tuple[str, dict]:
    return "ping", example("ping.json")


@pytest.mark.parametrize("delivery, answer", [
    ("foreign push", "ignored: a push to Codertocat/Hello-World, not to {repo}"),
    ("tag push", "ignored: tag simple-tag: tags are not built ([flake].tags names none)"),
    ("branch deletion", "ignored: refs/heads/main of redox/redox-flake was deleted: there is nothing to build"),
    ("ping", "pong: redox-ci hears this Repository hook on Octocoders/Hello-World; it builds pushes to {repo} on main"),
])
def test_what_is_not_our_push_is_answered_and_records_nothing(prod, delivery, answer):
    event, payload = {"foreign push": _foreign_push, "tag push": lambda: _tag_push(prod),
                      "branch deletion": lambda: _branch_deletion(prod), "ping": _ping}[delivery]()
    before = prod.recorded_ids()
    r = prod.deliver(event, payload)
    assert r.status_code == 200, r.text
    assert r.text.startswith(answer.format(repo=prod.repo)), r.text
    assert r.text.endswith("no change found")
    assert prod.recorded_ids() == before


def test_our_push_to_main_records_a_change_and_starts_a_pipeline(prod):
    head = git(prod.repo, "rev-parse", "HEAD")
    payload = prod.ours(example("push.json"))
    payload.update(ref="refs/heads/main", created=False, after=head)
    payload["head_commit"]["id"] = payload["commits"][0]["id"] = head
    changes_before, requests_before = prod.recorded()
    r = prod.deliver("push", payload)
    assert r.status_code == 200 and r.text == "1 change found", r.text

    changes, _ = prod.recorded()
    new = changes[len(changes_before):]
    assert [(c["revision"], c["branch"], c["repository"]) for c in new] == [(head, "main", str(prod.repo))]

    plan = prod.master.builder_id("redox/plan")

    def plan_requests():
        return [r for r in prod.recorded()[1][len(requests_before):] if r["builderid"] == plan]
    reqs = wait_for("the pipeline's build request", plan_requests, STARTUP_WAIT_SECONDS)
    assert len(reqs) == 1
    buildset = prod.master.api(f"buildsets/{reqs[0]['buildsetid']}")["buildsets"][0]
    assert [(s["revision"], s["branch"]) for s in buildset["sourcestamps"]] == [(head, "main")]

    def planned():
        builds = prod.master.api("builds", buildrequestid=reqs[0]["buildrequestid"])["builds"]
        if not builds:
            return None
        step = [s for s in prod.master.steps(builds[0]["buildid"]) if s["name"] == "plan"]
        return (builds[0], step[0]) if step and step[0]["complete"] else None
    build, step = wait_for("the pipeline's plan", planned, BUILD_WAIT_SECONDS)
    # The plan ran at our revision: WARNINGS, since the fixture's aarch64-linux attributes that
    # throw on purpose are failed jobs of the plan (the rest stands).
    assert step["results"] in (SUCCESS, WARNINGS) and " build" in step["state_string"], step["state_string"]
    flake_ref = prod.master.api(f"builds/{build['buildid']}", property="flake_ref")["builds"][0]
    assert flake_ref["properties"]["flake_ref"][0] == f"git+file://{prod.repo}?ref=main&rev={head}"


def test_only_our_push_was_recorded(prod):
    changes, reqs = prod.recorded()
    assert [c["revision"] for c in changes] == [git(prod.repo, "rev-parse", "HEAD")]
    # One pipeline: one plan request; every other request is a job the plan triggered.
    plan = prod.master.builder_id("redox/plan")
    assert len([r for r in reqs if r["builderid"] == plan]) == 1
    top = [bs for bs in prod.master.api("buildsets")["buildsets"] if bs["parent_buildid"] is None]
    assert len(top) == 1
