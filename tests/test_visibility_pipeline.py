"""End to end: GitHub commit statuses and Prometheus metrics of one pipeline.

One real master and worker process build a subset of the fixture flake (two packages
broken on purpose besides the installer's failing test) with statuses posted to a fake
GitHub API in this process and metrics on an endpoint of their own. The fake records
every post and answers some with 5xx, one with a rate limit (403 and X-RateLimit-Reset),
one with 429 and Retry-After, and one context with 502 to the end; the builds must end
as they would without it. The metrics are scraped over HTTP and compared with the builds
the REST API lists. What GitHub was sent and the last scrape are kept in
$REDOX_CI_TEST_ARTEFACTS/visibility (default test-artefacts/visibility).
"""

from __future__ import annotations

import json
import os
import threading
import time
import tomllib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from redox_ci.cache.localserver import LocalS3Server
from redox_ci.fixture import commit_all, git, make_fixture_repo
from redox_ci.local import CacheWiring, signing_key
from tests.master_support import BUILD_WAIT_SECONDS, free_port, make_master, require_buildbot
from tests.support import wait_for

pytestmark = pytest.mark.e2e

# The statuses GitHub was sent and the last scrape, kept for a person to read.
ARTEFACTS = Path(os.environ.get("REDOX_CI_TEST_ARTEFACTS", Path(__file__).resolve().parent.parent / "test-artefacts")) \
    / "visibility"

TOKEN = "ghp_statusTokenQ8x2Lm4Rv7"
REPOSITORY = "redox-os/redox-flake"
ATTRS = "cookbook installer redoxfs bootloader redox-minimal brokenA brokenB"
# The cap of the test: installer (the first stage) gets its own status, brokenA and
# brokenB (stage other) are named in their stage's.
CAP = 1
MAX_ATTEMPTS = 3
# A context GitHub answers 502 to the end.
ALWAYS_FAILING = "redox-ci/stage/infrastructure"


def with_broken_packages(text: str) -> str:
    broken = ('\n            brokenA = mkPkg { pname = "brokenA"; buildPhase = "echo broken on purpose >&2; exit 1"; };'
              '\n            brokenB = mkPkg { pname = "brokenB"; buildPhase = "echo broken on purpose >&2; exit 1"; };')
    anchor = 'fstools = simple "fstools" [ ];'
    assert anchor in text
    return text.replace(anchor, anchor + broken, 1)


class FakeGitHub:
    """GitHub's status API as the reporter uses it: every post recorded, the first posts
    of some (context, state) answered from a script, the rest 201."""

    def __init__(self):
        self.posts: list[dict] = []
        self.gets: list[dict] = []
        self.lock = threading.Lock()
        self.script = {
            ("redox-ci/plan", "pending"): [lambda: (500, {})],
            ("redox-ci/x86_64-linux/installer", "failure"): [
                lambda: (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 2)})],
            ("redox-ci/stage/cross-system", "success"): [lambda: (429, {"Retry-After": "1"})],
        }
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (body.get("context"), body.get("state"))
                with fake.lock:
                    answers = fake.script.get(key)
                    code, headers = answers.pop(0)() if answers else (201, {})
                    if body.get("context") == ALWAYS_FAILING:
                        code, headers = 502, {}
                    fake.posts.append({**body, "path": self.path, "auth": self.headers.get("Authorization"),
                                       "at": time.time(), "code": code})
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"message": "fake"}).encode())

            def do_GET(self):  # the reporter's access check at start
                with fake.lock:
                    fake.gets.append({"path": self.path, "auth": self.headers.get("Authorization")})
                known = self.path == f"/repos/{REPOSITORY}"
                self.send_response(200 if known else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"full_name": REPOSITORY} if known else {"message": "Not Found"}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def recorded(self) -> list[dict]:
        with self.lock:
            return list(self.posts)

    def final(self) -> dict[str, dict]:
        """The status GitHub kept for each context: its last accepted post."""
        return {p["context"]: p for p in self.recorded() if p["code"] == 201}


@pytest.fixture(scope="module")
def github():
    fake = FakeGitHub()
    yield fake
    fake.server.shutdown()
    # What GitHub was sent, to read (the token left out).
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "github-statuses.json").write_text(json.dumps(
        [{k: v for k, v in p.items() if k != "auth"} for p in fake.recorded()], indent=1))


@pytest.fixture(scope="module")
def metrics_port():
    return free_port()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with LocalS3Server(state_dir=tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def master(tmp_path_factory, github, metrics_port, s3):
    settings = f"""
[github_status]
enabled = true
repository = "{REPOSITORY}"
api_url = "{github.url}"
max_attribute_statuses = {CAP}
max_attempts = {MAX_ATTEMPTS}

[metrics]
listen = "127.0.0.1:{metrics_port}"
"""
    require_buildbot()
    tmp = tmp_path_factory.mktemp("visibility")
    repo = tmp / "redox-flake"
    make_fixture_repo(repo)
    (repo / "flake.nix").write_text(with_broken_packages((repo / "flake.nix").read_text()))
    commit_all(repo, "two packages broken on purpose")
    # A cache, so that the metrics have pushes and, on a second run, hits.
    key_file, public_key = signing_key(tmp_path_factory.mktemp("keys"))
    # The server takes any credentials (unless it checks them).
    credentials = s3.credentials or {"aws_access_key_id": "AKIAVISIBILITY0TEST", "aws_secret_access_key": "visibility"}
    cache = CacheWiring(s3.url, s3.bucket, key_file, public_key, credentials)
    m = make_master(tmp, repo, worker_kind="remote", extra_toml=settings, cache=cache)
    # The token must be in the secrets file before the master starts (it checks at start).
    secrets = m.setup.secrets_file
    secrets.write_text(tomli_w.dumps({**tomllib.loads(secrets.read_text()), "github_status_token": TOKEN}))
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def pipeline(master, github):
    sha = git(master.setup.repo, "rev-parse", "HEAD").strip()
    build = master.forced_build(master.force(revision=sha, attrs=ATTRS, systems=["x86_64-linux"]))
    # The last statuses go out after the plan build ends.
    wait_for("the plan's final status", lambda: github.final().get("redox-ci/plan", {}).get("state") not in
             (None, "pending"), BUILD_WAIT_SECONDS)
    wait_for(f"every try of {ALWAYS_FAILING}",
             lambda: sum(p["context"] == ALWAYS_FAILING and p["state"] != "pending" for p in github.recorded())
             >= MAX_ATTEMPTS, BUILD_WAIT_SECONDS)
    return sha, build, master.jobs(build["buildid"])


def job_results(jobs: dict) -> dict[str, int]:
    return {name: b["results"] for name, b in jobs.items()}


def test_github_status_contexts_states_and_links(pipeline, github, master):
    sha, _, _ = pipeline
    final = github.final()
    states = {c: p["state"] for c, p in final.items()}
    assert states == {
        "redox-ci/plan": "failure",
        "redox-ci/stage/host-tools": "failure",
        "redox-ci/stage/cross-system": "success",
        "redox-ci/stage/other": "failure",
        "redox-ci/x86_64-linux/installer": "failure",
        "redox-ci/x86_64-linux/boot-qemu": "success",
        "redox-ci/x86_64-linux/boot-cloud-hypervisor": "success",
    }, states
    for p in github.recorded():
        assert p["path"] == f"/repos/{REPOSITORY}/statuses/{sha}"
        assert p["target_url"] == f"{master.url}plugins/wsgi_dashboards/commits/commit.html?rev={sha}"
        assert p["auth"] == f"token {TOKEN}"
        assert len(p["description"]) <= 140
    # Each stage was pending once its jobs were known; the boot went pending, then passed.
    contexts_pending = {p["context"] for p in github.recorded() if p["state"] == "pending"}
    assert {"redox-ci/plan", "redox-ci/stage/host-tools", "redox-ci/stage/other",
            "redox-ci/x86_64-linux/boot-qemu"} <= contexts_pending
    assert final["redox-ci/stage/host-tools"]["description"] == "3 jobs: 2 successes, 1 failure"
    assert final["redox-ci/plan"]["description"].startswith("failure: ")
    assert final["redox-ci/plan"]["description"].endswith("; failures in host-tools, other")
    assert "skipped" in final["redox-ci/x86_64-linux/boot-cloud-hypervisor"]["description"]


def test_github_status_cap_names_the_rest_in_the_stage(pipeline, github):
    _, _, jobs = pipeline
    assert jobs["x86_64-linux.brokenA"]["results"] == jobs["x86_64-linux.brokenB"]["results"] == 2  # FAILURE
    posted = {p["context"] for p in github.recorded()}
    assert not {"redox-ci/x86_64-linux/brokenA", "redox-ci/x86_64-linux/brokenB"} & posted
    other = github.final()["redox-ci/stage/other"]["description"]
    assert "also failed: x86_64-linux.brokenA, x86_64-linux.brokenB" in other, other


def test_github_status_retries_5xx_and_rate_limits(github):
    posts = github.recorded()

    def tries(context, state):
        return [p for p in posts if p["context"] == context and p["state"] == state]

    plan = tries("redox-ci/plan", "pending")
    assert [p["code"] for p in plan] == [500, 201]
    assert plan[1]["at"] - plan[0]["at"] >= 1  # the first backoff
    installer = tries("redox-ci/x86_64-linux/installer", "failure")
    assert [p["code"] for p in installer] == [403, 201]
    # X-RateLimit-Reset was two seconds ahead (whole seconds: at least one later).
    assert installer[1]["at"] - installer[0]["at"] >= 1
    stage = tries("redox-ci/stage/cross-system", "success")
    assert [p["code"] for p in stage] == [429, 201]
    assert stage[1]["at"] - stage[0]["at"] >= 1  # Retry-After: 1
    # A context that never gets through is tried max_attempts times, then dropped.
    assert len([p for p in posts if p["context"] == ALWAYS_FAILING and p["state"] != "pending"]) == MAX_ATTEMPTS


def test_github_status_failures_leave_builds_alone(pipeline, master):
    _, build, jobs = pipeline
    results = job_results(jobs)
    # The infrastructure stage's status never got through; its job built as ever.
    assert results["x86_64-linux.redox-minimal"] == 0
    assert {n: r for n, r in results.items() if r == 2} == {
        "x86_64-linux.installer": 2, "x86_64-linux.brokenA": 2, "x86_64-linux.brokenB": 2}
    assert build["results"] == 2
    log = (master.setup.master_dir / "twistd.log").read_text()
    assert f"GitHub status {ALWAYS_FAILING} success" in log and f"after {MAX_ATTEMPTS} attempt(s): HTTP 502" in log


def test_github_status_checks_the_token_at_start(pipeline, master, github):
    assert github.gets[0] == {"path": f"/repos/{REPOSITORY}", "auth": f"token {TOKEN}"}
    log = (master.setup.master_dir / "twistd.log").read_text()
    assert f"GitHub statuses for {REPOSITORY}: the token is accepted" in log


def test_github_status_token_stays_secret(pipeline, master):
    log = (master.setup.master_dir / "twistd.log").read_text()
    assert TOKEN not in log
    assert TOKEN not in json.dumps(master.api("builds", property="*"))
    for db in master.setup.master_dir.glob("*.sqlite"):
        assert TOKEN.encode() not in db.read_bytes()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "metrics.txt").write_text(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def job_of(props: dict) -> dict | None:
    """The job a build's REST properties describe (the ``job`` property, or its fields)."""
    if "job" in props:
        return props["job"][0]
    if "attr" in props and "stage" in props:
        return {k: props[k][0] for k in ("attr", "system", "stage")}
    return None


def reported_tests(props: dict) -> dict:
    for key in ("build_result", "boot_result"):
        if key in props and (props[key][0] or {}).get("tests"):
            return props[key][0]["tests"]
    return {k.removeprefix("tests_"): v[0] for k, v in props.items() if k.startswith("tests_")}


def boot_complete(props: dict) -> float | None:
    """Seconds to Boot Complete of a boot build (``boot_result``, or ``boot_seconds``)."""
    if "boot_result" in props:
        return next((m["at"] for m in props["boot_result"][0]["milestones"] if m["name"] == "boot-complete"), None)
    return props["boot_seconds"][0] if "boot_seconds" in props else None


def test_metrics_match_the_builds_that_ran(pipeline, master, metrics_port):
    from buildbot.process.results import statusToString

    # Again at the branch tip: what the first run pushed is cached now. Forced without a
    # revision, it has no commit to post statuses to.
    again = master.forced_build(master.force(attrs="cookbook redoxfs", systems=["x86_64-linux"]))
    assert again["results"] == 0

    builds = [b for b in master.api("builds", property="*")["builds"] if b["complete"]]
    plan_id = master.builder_id("redox/plan")
    plans = [b for b in builds if b["builderid"] == plan_id]
    wait_for("the metrics to count every plan", lambda: sum(
        v for (name, _), v in scrape(metrics_port).items() if name == "redox_ci_plans_total") == len(plans),
        BUILD_WAIT_SECONDS)
    m = scrape(metrics_port)

    expected_plans = Counter(statusToString(b["results"]) for b in plans)
    assert {dict(labels)["result"]: v for (name, labels), v in m.items()
            if name == "redox_ci_plans_total"} == expected_plans
    assert m[("redox_ci_plan_duration_seconds_count", ())] == len(plans)

    jobs = [(job_of(b["properties"]), b) for b in builds if job_of(b["properties"])]
    expected_jobs = Counter((j["system"], j["stage"], statusToString(b["results"])) for j, b in jobs)
    counted = {(l["system"], l["stage"], l["result"]): v for (name, labels), v in m.items()
               if name == "redox_ci_jobs_total" for l in [dict(labels)]}
    assert counted == expected_jobs
    assert sum(v for (name, _), v in m.items() if name == "redox_ci_job_duration_seconds_count") == len(jobs)

    expected_tests = Counter()
    for j, b in jobs:
        for outcome, n in reported_tests(b["properties"]).items():
            if outcome in ("passed", "failed", "ignored", "skipped") and n:
                expected_tests[(j["stage"], outcome)] += n
    assert {(dict(labels)["stage"], dict(labels)["outcome"]): v for (name, labels), v in m.items()
            if name == "redox_ci_tests_total"} == expected_tests
    assert expected_tests[("host-tools", "passed")] >= 9 + 38 + 3  # cookbook, redoxfs, installer

    boots = [seconds for j, b in jobs if j["stage"] == "boot"
             for seconds in [boot_complete(b["properties"])] if seconds is not None]
    assert m[("redox_ci_boot_seconds_count", (("system", "x86_64-linux"), ("vmm", "qemu")))] == len(boots) == 1
    assert m[("redox_ci_boot_seconds_sum", (("system", "x86_64-linux"), ("vmm", "qemu")))] == \
        pytest.approx(boots[0])

    planned = [j for b in plans for j in b["properties"]["plan"][0]["jobs"]]
    assert m[("redox_ci_cache_misses_total", ())] == sum(j["status"] == "build" for j in planned)
    assert m[("redox_ci_cache_hits_total", ())] == sum(j["status"] == "cached" for j in planned)
    assert m[("redox_ci_cache_hits_total", ())] >= 2  # cookbook and redoxfs, the second time
    pushes = [b["properties"]["push_result"][0] for _, b in jobs if "push_result" in b["properties"]]
    assert m[("redox_ci_cache_pushed_paths_total", ())] == sum(len(p["pushed"]) for p in pushes) > 0
    assert m[("redox_ci_cache_pushed_bytes_total", ())] == sum(p["bytes_uploaded"] for p in pushes) > 0
    assert m[("redox_ci_queue_length", ())] == 0
    # Bounded labels: nothing names an attribute or a build.
    assert not any(k in dict(labels) for (_, labels) in m for k in ("attr", "buildid", "build", "revision"))
