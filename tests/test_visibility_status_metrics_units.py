"""The pure parts of GitHub statuses and metrics: contexts from a plan, the cap, the
waits between tries from GitHub's answers, the counting of one build, and their settings."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from buildbot.process.results import CANCELLED, EXCEPTION, FAILURE, SKIPPED, SUCCESS, WARNINGS
from prometheus_client import generate_latest

from redox_ci.config import GithubStatusSettings, MetricsSettings
from redox_ci.errors import ConfigError
from redox_ci.master import github_status as gs
from redox_ci.master.commits import job_build_facts
from redox_ci.master.evaluation import eval_job
from redox_ci.master.metrics import Metrics, record
from redox_ci.plan import Job, JobStatus, Plan
from redox_ci.secrets_file import GITHUB_STATUS_TOKEN, load_secrets
from redox_ci.settings_file import load

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"
URL = "https://ci.example/"


def job(attr, stage, status=JobStatus.BUILD, system="x86_64-linux"):
    return Job(attr, system, stage, f"/nix/store/{attr}.drv", False, status)


PLAN = Plan("flake", [job("cookbook", "host-tools"), job("installer", "host-tools"),
                      job("relibc", "cross-system", JobStatus.CACHED), job("kernel", "cross-system"),
                      job("kernel", "cross-system", system="aarch64-linux"), job("boot-qemu", "boot")])


# --- contexts ------------------------------------------------------------------
def test_github_status_contexts_from_a_plan():
    statuses = gs.stage_pending(PLAN, SHA, gs.commit_page_url(URL, SHA), skip=("boot",))
    assert [(s.context, s.state, s.description) for s in statuses] == [
        ("redox-ci/stage/host-tools", "pending", "2 jobs, waiting"),
        ("redox-ci/stage/cross-system", "pending", "3 jobs, 1 cached, waiting"),
    ]
    one = Plan("flake", [job("cookbook", "host-tools")])
    assert [s.description for s in gs.stage_pending(one, SHA, URL)] == ["1 job, waiting"]
    assert all(s.target_url == f"{URL}plugins/wsgi_dashboards/commits/commit.html?rev={SHA}" for s in statuses)
    assert gs.job_context(job("boot-qemu", "boot", system="aarch64-linux")) == "redox-ci/aarch64-linux/boot-qemu"
    check = Job("eval-users", "x86_64-linux", "other", None, False, JobStatus.BUILD, output="checks")
    assert gs.job_context(check) == "redox-ci/x86_64-linux/checks.eval-users"
    assert gs.PLAN_CONTEXT == "redox-ci/plan"


def test_github_status_stages_not_run_end_with_the_pipeline():
    statuses = gs.stages_not_run(PLAN, {"host-tools"}, CANCELLED, SHA, URL, skip=("boot",))
    assert [(s.context, s.state, s.description) for s in statuses] == [
        ("redox-ci/stage/cross-system", "error", "not run: the pipeline ended cancelled")]
    assert gs.stages_not_run(PLAN, {"host-tools", "cross-system"}, SUCCESS, SHA, URL, skip=("boot",)) == []


@pytest.mark.parametrize("results, complete, state", [
    (None, False, "pending"), (SUCCESS, True, "success"), (WARNINGS, True, "success"),
    (SKIPPED, True, "success"), (FAILURE, True, "failure"), (EXCEPTION, True, "error"),
    (CANCELLED, True, "error"),
])
def test_github_status_states(results, complete, state):
    assert gs.state_of(results, complete) == state


def test_github_status_stage_summary_and_length():
    results = {"x86_64-linux.a": SUCCESS, "x86_64-linux.b": FAILURE, "x86_64-linux.c": SUCCESS}
    assert gs.stage_summary(results, 2, []) == "5 jobs: 2 successes, 1 failure, 2 cached"
    assert gs.stage_state(results, FAILURE) == "failure"
    assert gs.stage_state({"x86_64-linux.a": SUCCESS}, SUCCESS) == "success"
    many = [f"x86_64-linux.package-number-{i}" for i in range(30)]
    text = gs.stage_summary({n: FAILURE for n in many}, 0, many)
    assert len(text) == gs.DESCRIPTION_CHARS and text.endswith("…")
    assert text.startswith("30 jobs: 30 failures; also failed: x86_64-linux.package-number-0, ")


def test_github_status_plan_summary():
    jobs = {"x86_64-linux.cookbook": ("host-tools", SUCCESS), "x86_64-linux.installer": ("host-tools", FAILURE),
            "x86_64-linux.kernel": ("cross-system", SUCCESS), "x86_64-linux.brokenA": ("other", EXCEPTION)}
    assert gs.plan_summary(FAILURE, jobs, 3) == (
        "failure: 7 jobs: 2 successes, 1 failure, 1 exception, 3 cached; failures in host-tools, other")
    assert gs.plan_summary(SUCCESS, {"x86_64-linux.kernel": ("cross-system", SUCCESS)}, 0) == "success: 1 job: 1 success"


# --- the cap -------------------------------------------------------------------------
def test_github_status_cap_per_plan():
    cap = gs.FailureCap(2)
    assert [cap.claim(1, n) for n in ["a", "b", "c", "a"]] == [True, True, False, True]
    assert cap.claim(2, "c")  # another plan has its own
    cap.forget(1)
    assert cap.claim(1, "c")
    assert not gs.FailureCap(0).claim(1, "a")


# --- waits between tries ----------------------------------------------------------------
def test_github_status_backoff_on_5xx_and_no_answer():
    assert [gs.retry_delay(502, {}, a, 20, 0) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert gs.retry_delay(None, {}, 1, 3, 0) == 1
    assert gs.retry_delay(500, {}, 3, 3, 0) is None  # the last try


@pytest.mark.parametrize("code, headers, wait", [
    (429, {"Retry-After": "7"}, 7),
    (403, {"retry-after": "30"}, 30),
    (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1120"}, 120),
    (429, {"X-RateLimit-Reset": "1005"}, 5),
    # A reset already past: try again after the shortest wait.
    (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "990"}, 1),
    (429, {}, 1),
    # A plain 403 is a refusal (a token without the permission), not a rate limit.
    (403, {}, None),
    (403, {"X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": "1120"}, None),
    (404, {}, None), (422, {}, None),
    # Further than GitHub's hourly reset: something is wrong; give up.
    (403, {"Retry-After": "7200"}, None),
    (429, {"Retry-After": "soon"}, None),
])
def test_github_status_waits_from_headers(code, headers, wait):
    assert gs.retry_delay(code, headers, 1, 5, now=1000) == wait


def test_github_status_response_headers():
    from twisted.web.http_headers import Headers

    class Treq:
        headers = Headers({b"Retry-After": [b"3"], b"X-RateLimit-Reset": [b"99"]})

    class Wrapper:
        _res = Treq()

    assert gs.response_headers(Wrapper()) == {"Retry-After": "3", "X-Ratelimit-Reset": "99"}
    assert gs.response_headers(object()) == {}


# --- settings and secrets -------------------------------------------------------------
GOOD = '[flake]\nrepo = "/srv/redox-flake"\n[[workers.worker]]\nname = "w1"\nkind = "local"\n'
SECRETS = '[users]\nadmin = "pw"\n'


def loaded(tmp_path: Path, settings: str, secrets: str = SECRETS):
    (tmp_path / "secrets.toml").write_text(secrets)
    (tmp_path / "settings.toml").write_text(settings)
    return load(tmp_path / "settings.toml")


def test_github_status_and_metrics_settings(tmp_path):
    s = loaded(tmp_path, GOOD).settings
    assert not s.github_status.enabled and s.metrics.listen is None  # off by default
    on = GOOD + '[github_status]\nenabled = true\nrepository = "redox-os/redox"\n[metrics]\nlisten = "127.0.0.1:9101"\n'
    with pytest.raises(ConfigError, match="github_status_token: missing, and \\[github_status\\] is enabled"):
        load_secrets(loaded(tmp_path, on))
    secrets = load_secrets(loaded(tmp_path, on, 'github_status_token = "ghp_x1"\n' + SECRETS))
    assert secrets.values[GITHUB_STATUS_TOKEN] == "ghp_x1" and "ghp_x1" not in repr(secrets)
    assert loaded(tmp_path, on).settings.metrics.address == ("127.0.0.1", 9101)
    with pytest.raises(ConfigError, match="github_status: .*owner/name"):
        loaded(tmp_path, GOOD + '[github_status]\nenabled = true\nrepository = "https://github.com/x"\n')
    with pytest.raises(ConfigError, match="metrics.listen: .*ADDRESS:PORT"):
        loaded(tmp_path, GOOD + '[metrics]\nlisten = "9101"\n')
    assert GithubStatusSettings().api_url == "https://api.github.com"
    assert MetricsSettings(listen="[::1]:9101").address == ("::1", 9101)


# --- one build counted ------------------------------------------------------------------
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def build(results, seconds):
    return {"results": results, "started_at": T0, "complete_at": T0 + datetime.timedelta(seconds=seconds)}


def props(**values):
    return {k: (v, "test") for k, v in values.items()}


NAMES = ("redox/plan", "redox/repro")


def value(m: Metrics, name: str, **labels) -> float:
    return m.registry.get_sample_value(name, labels) or 0


def test_metrics_count_a_plan_jobs_boots_and_repro():
    m = Metrics()
    record(m, "redox/plan", build(FAILURE, 600), props(plan=PLAN.to_json()), *NAMES)
    record(m, "x86_64-linux/host-tools", build(SUCCESS, 40), props(
        job=job("cookbook", "host-tools").to_json(),
        build_result={"status": "success", "tests": {"passed": 9, "failed": 0, "ignored": 1, "suites": 2}},
        push_result={"pushed": ["/nix/store/a", "/nix/store/b"], "skipped": [], "bytes_uploaded": 4096}), *NAMES)
    # The per-field properties of builds made before the job property.
    record(m, "x86_64-linux/host-tools", build(FAILURE, 20), props(
        attr="installer", system="x86_64-linux", stage="host-tools", tests_passed=3, tests_failed=1), *NAMES)
    record(m, "x86_64-linux/boot-qemu", build(SUCCESS, 30), props(
        job=job("boot-qemu", "boot").to_json(),
        boot_result={"verdict": "pass", "milestones": [{"name": "kernel", "at": 1.0},
                                                       {"name": "boot-complete", "at": 4.5}]}), *NAMES)
    record(m, "redox/repro", build(FAILURE, 900), props(repro_counts={"reproducible": 5, "unreproducible": 1}),
           *NAMES)
    record(m, "redox/report", build(SKIPPED, 1), props(), *NAMES)  # not a job: not counted

    assert value(m, "redox_ci_plans_total", result="failure") == 1
    assert value(m, "redox_ci_plan_duration_seconds_sum") == 600
    assert value(m, "redox_ci_cache_hits_total") == 1 and value(m, "redox_ci_cache_misses_total") == 5
    assert value(m, "redox_ci_jobs_total", system="x86_64-linux", stage="host-tools", result="success") == 1
    assert value(m, "redox_ci_jobs_total", system="x86_64-linux", stage="host-tools", result="failure") == 1
    assert value(m, "redox_ci_job_duration_seconds_count", stage="host-tools") == 2
    assert value(m, "redox_ci_tests_total", stage="host-tools", outcome="passed") == 12
    assert value(m, "redox_ci_tests_total", stage="host-tools", outcome="failed") == 1
    assert value(m, "redox_ci_tests_total", stage="host-tools", outcome="ignored") == 1
    assert value(m, "redox_ci_cache_pushed_paths_total") == 2 and value(m, "redox_ci_cache_pushed_bytes_total") == 4096
    assert value(m, "redox_ci_boots_total", system="x86_64-linux", vmm="qemu", verdict="pass") == 1
    assert value(m, "redox_ci_boot_seconds_sum", system="x86_64-linux", vmm="qemu") == 4.5
    assert value(m, "redox_ci_repro_verdicts_total", verdict="unreproducible") == 1
    text = generate_latest(m.registry).decode()
    assert "cookbook" not in text and "installer" not in text  # no attribute labels


def test_only_job_builds_are_jobs():
    assert job_build_facts({"job": job("kernel", "cross-system").to_json()}).job.name == "x86_64-linux.kernel"
    assert job_build_facts({"attr": "kernel", "system": "x86_64-linux", "stage": "cross-system"}) is not None
    assert job_build_facts({"plan": {}}) is None and job_build_facts({}) is None
    # A system's evaluation build is part of the plan: no job row, status or job metric.
    assert job_build_facts({"job": eval_job("aarch64-linux").to_json()}) is None


# --- posting: order, supersession, giving up --------------------------------------------
class Answer:
    def __init__(self, code, headers=None):
        self.code = code
        self._res = type("Raw", (), {"headers": headers or {}})()

    def content(self):
        from twisted.internet import defer
        return defer.succeed(b'{"message": "scripted"}')


def scripted_push(answers: dict, max_attempts: int = 3):
    """A CommitStatusPush that posts to a script (context, state) -> codes, on a fake clock."""
    from types import SimpleNamespace

    from twisted.internet import defer, task

    class ScriptedPush(gs.CommitStatusPush):
        master = None  # a plain attribute: no running master, only its reactor

    push = ScriptedPush.__new__(ScriptedPush)
    clock = task.Clock()
    push.master, push.owner, push.repo, push.max_attempts = SimpleNamespace(reactor=clock), "o", "r", max_attempts
    push._last, push._waits, push.posted = {}, set(), []

    def create_status(owner, repo, sha, state, props, target_url=None, context=None, description=None):
        codes = answers.get((context, state), [])
        code = codes.pop(0) if codes else 201
        push.posted.append((context, state, code, clock.seconds()))
        return defer.succeed(Answer(code))

    push.createStatus = create_status
    return push, clock


def status(context, state):
    return gs.Status(SHA, context, state, "", URL)


def test_github_status_a_newer_status_replaces_a_retried_one():
    from twisted.internet import defer

    push, clock = scripted_push({("redox-ci/plan", "pending"): [502, 502]})
    first = defer.ensureDeferred(push._post_in_order(status("redox-ci/plan", "pending")))
    second = defer.ensureDeferred(push._post_in_order(status("redox-ci/plan", "failure")))
    clock.advance(1)
    assert first.called and second.called
    # The pending status is not tried again once the final one waits (GitHub keeps the last);
    # the final one goes out when the pending one's wait is over.
    assert push.posted == [("redox-ci/plan", "pending", 502, 0), ("redox-ci/plan", "failure", 201, 1)]
    assert push._last == {}


def test_github_status_gives_up_after_max_attempts_and_other_contexts_go_on():
    from twisted.internet import defer

    push, clock = scripted_push({("redox-ci/stage/a", "success"): [500, 500, 500]})
    failing = defer.ensureDeferred(push._post_in_order(status("redox-ci/stage/a", "success")))
    other = defer.ensureDeferred(push._post_in_order(status("redox-ci/stage/b", "success")))
    assert other.called  # another context does not wait for a retried one
    clock.advance(1)
    clock.advance(2)
    assert failing.called and failing.result is None
    assert [p for p in push.posted if p[0] == "redox-ci/stage/a"] == [
        ("redox-ci/stage/a", "success", 500, 0), ("redox-ci/stage/a", "success", 500, 1),
        ("redox-ci/stage/a", "success", 500, 3)]


def test_metrics_queue_length_counts_once_at_a_time():
    from types import SimpleNamespace

    from twisted.internet import defer

    from redox_ci.master.metrics import MetricsService

    class Service(MetricsService):
        master = None  # a plain attribute: no running master, only its data API

    answers: list[defer.Deferred] = []
    waiting = [["r1", "r2", "r3"], ["r1"]]

    def get(path, filters=()):
        assert path == ("buildrequests",)
        assert {(f.field, f.op, tuple(f.values)) for f in filters} == {("claimed", "eq", (False,)),
                                                                      ("complete", "eq", (False,))}
        answers.append(defer.Deferred())
        return answers[-1]

    s = Service.__new__(Service)
    s.master, s.metrics, s._refreshing, s._dirty = SimpleNamespace(data=SimpleNamespace(get=get)), Metrics(), False, False
    s._queue_changed(None, None)
    s._queue_changed(None, None)  # while counting: one more count afterwards, not a second at once
    s._queue_changed(None, None)
    assert len(answers) == 1
    answers[0].callback(waiting[0])
    assert len(answers) == 2 and value(s.metrics, "redox_ci_queue_length") == 3
    answers[1].callback(waiting[1])
    assert len(answers) == 2 and value(s.metrics, "redox_ci_queue_length") == 1 and not s._refreshing


def test_metrics_port_in_use_is_said_and_the_master_goes_on():
    import socket
    from types import SimpleNamespace

    from twisted.internet import reactor
    from twisted.python import log

    from redox_ci.master.metrics import MetricsService

    class Service(MetricsService):
        master = None

    lines = []
    log.addObserver(lines.append)
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            s = Service.__new__(Service)
            s.master, s.metrics = SimpleNamespace(reactor=reactor), Metrics()
            s.address = ("127.0.0.1", taken.getsockname()[1])
            s._listen()
    finally:
        log.removeObserver(lines.append)
    assert s._port is None
    text = " ".join(" ".join(map(str, e.get("message", ()))) for e in lines)
    assert f"metrics: NO Prometheus endpoint: cannot listen on 127.0.0.1:{s.address[1]}" in text
