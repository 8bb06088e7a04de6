"""End to end: a real master and a real worker process build the fixture flake with Nix.

One pipeline is forced through the REST API and every job's result is read back
from the REST API; further tests reuse the same master (module scope) for commit
builds, the GitHub hook and refused force parameters. The worker builds x86_64-linux
natively and, where this host can (qemu-user, extra-platforms), aarch64-linux by
emulation: the aarch64 matrix is built and its tests counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import requests

from redox_ci.emulation import emulated_systems
from redox_ci.fixture import commit_all, git
from tests.master_support import BUILD_WAIT_SECONDS, answer, cargo_counts, job_field, running_master
from tests.support import wait_for

pytestmark = pytest.mark.e2e

SUCCESS, WARNINGS, FAILURE, SKIPPED = 0, 1, 2, 3


def without_sodium_with_extra_tool(text: str) -> str:
    """The fixture differs from the settings both ways: one expected attribute missing,
    one the settings do not know."""
    text = text.replace('"extrautils" "sodium" ]', '"extrautils" ]')
    return text.replace("fstools = simple \"fstools\" [ ];",
                        "fstools = simple \"fstools\" [ ];\n        extraTool = simple \"extraTool\" [ ];")


@pytest.fixture(scope="module")
def emulation() -> tuple[list[str], dict[str, str]]:
    """What this host emulates, and why not (the aarch64 jobs are then skipped with a reason).
    A fixture, not a module constant: asking Nix at import would break collecting without it."""
    return emulated_systems(["aarch64-linux"])


@pytest.fixture(scope="module")
def master(tmp_path_factory, emulation):
    yield from running_master(tmp_path_factory, "pipeline", without_sodium_with_extra_tool,
                              worker_kind="remote", github_webhook=True, poll_interval=5,
                              emulated_systems=emulation[0])


@pytest.fixture(scope="module")
def forced(master):
    build = master.forced_build(master.force(reason="end-to-end test"))
    return build, master.jobs(build["buildid"])


def test_every_job_has_its_own_result(forced):
    build, jobs = forced
    x86 = {n.split(".", 1)[1]: b for n, b in jobs.items() if n.startswith("x86_64-linux.")}
    for attr in ["cookbook", "redoxfs", "fstools", "relibc", "kernel", "kernelPerCrate", "bootloader", "base",
                 "sysroot", "ion", "helix", "initfs", "redox-default", "checks.eval-users"]:
        assert x86[attr]["results"] == SUCCESS, (attr, x86[attr]["state_string"])
    # The one failing job does not hide the others: the pipeline went on to the last stage.
    assert x86["redox-minimal"]["results"] == SUCCESS
    assert build["results"] == FAILURE


def test_no_alias_is_built_twice(forced, emulation):
    _, jobs = forced
    for system in ["x86_64-linux", *emulation[0]]:
        # Boots build no derivation of their own.
        drvs = [job_field(b, "drv") for n, b in jobs.items()
                if n.startswith(system + ".") and job_field(b, "status") == "build" and job_field(b, "drv")]
        assert len(drvs) == len(set(drvs))
        assert f"{system}.diskImage" not in jobs and f"{system}.checks.redox-default-build" not in jobs
        image = jobs[f"{system}.redox-default"]
        assert job_field(image, "aliases") == ["diskImage", "checks.redox-default-build"]
        assert "also diskImage, checks.redox-default-build" in image["state_string"]
        assert "checks.cookbook-build" in jobs[f"{system}.cookbook"]["state_string"]


def test_host_tool_test_counts(forced):
    _, jobs = forced
    cookbook, redoxfs = jobs["x86_64-linux.cookbook"], jobs["x86_64-linux.redoxfs"]
    assert cargo_counts(cookbook)["passed"] == 9
    assert cargo_counts(cookbook)["failed"] == 0
    assert cargo_counts(redoxfs)["passed"] == 38
    assert "doCheck turned on by redox-ci" in redoxfs["state_string"]
    assert "38 passed" in redoxfs["state_string"]


def test_swallowed_installer_failure_fails_the_job(forced):
    _, jobs = forced
    installer = jobs["x86_64-linux.installer"]
    assert installer["results"] == FAILURE
    assert "swallowed" in installer["state_string"]
    assert cargo_counts(installer)["failed"] == 1
    assert cargo_counts(installer)["passed"] == 3


def test_missing_and_unknown_attributes(forced):
    _, jobs = forced
    sodium = jobs["x86_64-linux.sodium"]
    assert sodium["results"] == SKIPPED
    assert "the flake has no packages.x86_64-linux.sodium" in sodium["state_string"]
    extra = jobs["x86_64-linux.extraTool"]
    assert extra["results"] == SUCCESS
    assert job_field(extra, "stage") == "other"
    # Runner scripts, by any name, are not build artefacts.
    assert not any(n.endswith((".runQemu", ".bootTest", ".snapshotRedox", ".serve-cache", ".run-redox-default",
                               ".checks.boot-test")) for n in jobs)


def test_aarch64_matrix_is_built_by_emulation_and_its_tests_counted(forced, emulation):
    _, jobs = forced
    emulated, cannot_emulate = emulation
    arm = {n.split(".", 1)[1]: b for n, b in jobs.items() if n.startswith("aarch64-linux.")}
    # The same names (adios-flake copies them); aliases of what throws there are jobs apart.
    assert {n.split(".", 1)[1] for n in jobs if n.startswith("x86_64-linux.")} <= set(arm)
    if not emulated:
        for name, b in arm.items():
            if job_field(b, "status") == "build":
                assert b["results"] == SKIPPED and "no worker builds aarch64-linux" in b["state_string"], name
        pytest.skip(f"this host does not emulate aarch64-linux: {cannot_emulate['aarch64-linux']}")
    cookbook, redoxfs, installer = arm["cookbook"], arm["redoxfs"], arm["installer"]
    assert cookbook["results"] == SUCCESS, cookbook["state_string"]
    assert "built by emulation on local-worker" in cookbook["state_string"]
    assert cargo_counts(cookbook)["passed"] == 9
    assert cargo_counts(redoxfs)["passed"] == 38 and "doCheck turned on" in redoxfs["state_string"]
    # The installer has no tests, as the real one today: a warning that says so, not a failure.
    assert installer["results"] == WARNINGS, installer["state_string"]
    assert "0 tests" in installer["state_string"] and cargo_counts(installer)["passed"] == 0
    for attr in ["fstools", "kernel", "relibc", "ion", "redox-default", "redox-minimal", "checks.eval-users"]:
        assert arm[attr]["results"] == SUCCESS, (attr, arm[attr]["state_string"])
    # What throws on aarch64-linux fails alone, quoting the evaluation error.
    shim = arm["redox-libstdcxx-shim"]
    assert shim["results"] == FAILURE
    assert "does not evaluate: redox-libstdcxx-shim is x86_64-only" in shim["state_string"]
    assert arm["sodium"]["results"] == SKIPPED


def test_job_logs_hold_the_build_output(master, forced):
    _, jobs = forced
    text = master.step_logs(jobs["x86_64-linux.installer"]["buildid"], "build")["stdio"]
    assert "installer" in text and "tests failed" in text


def test_force_subset_of_attributes_and_systems(master):
    build = master.forced_build(master.force(attrs="cookbook redoxfs", systems=["x86_64-linux"]))
    jobs = master.jobs(build["buildid"])
    assert sorted(jobs) == ["x86_64-linux.cookbook", "x86_64-linux.redoxfs"]
    # The plan build's worker builds x86_64-linux: it evaluated it itself, no evaluation build.
    assert master.evaluations(build["buildid"]) == {}
    assert build["results"] == SUCCESS


@pytest.mark.parametrize("params, field", [
    ({"attrs": "cookbook; rm -rf /"}, "attrs"),
    ({"attrs": "$(touch /tmp/pwned)"}, "attrs"),
    ({"branch": "main; rm -rf /"}, "branch"),
    ({"branch": "--upload-pack=evil"}, "branch"),
    ({"branch": "main\n"}, "branch"),
    ({"revision": "HEAD~1"}, "revision"),
    ({"revision": "abc"}, "revision"),
    ({"systems": ["x86_64-linux", "riscv64-linux"]}, "systems"),
])
def test_hostile_force_parameters_are_refused(master, params, field):
    before = len(master.api("buildrequests")["buildrequests"])
    r = master.force(**params)
    body = r.json()
    assert "error" in body, body
    message = json.dumps(body["error"])
    assert field in message and "pattern" not in message  # said in words, not as a regex
    assert len(master.api("buildrequests")["buildrequests"]) == before


def test_anonymous_user_cannot_force(master):
    r = master.force(session=requests.Session())
    assert r.status_code == 403 or "error" in r.json()
    r = requests.Session()
    assert master.login().get(master.url + "api/v2/builders", timeout=30).ok
    assert r.get(master.url + "api/v2/builders", timeout=30).ok  # anonymous users read


def test_wrong_password_cannot_log_in(master):
    r = requests.get(master.url + "auth/login", auth=("admin", "wrong"), timeout=30)
    assert r.status_code == 401


def _new_commit(repo: Path, name: str) -> str:
    (repo / f"{name}.txt").write_text(name)
    return commit_all(repo, f"change {name}")


def test_new_commit_builds_without_a_force(master):
    rev = _new_commit(master.setup.repo, "poller")

    def built():
        return [b for b in master.plan_builds()
                if b["complete"] and master.api(f"builds/{b['buildid']}", property="revision")
                ["builds"][0]["properties"].get("revision", [None])[0] == rev]
    build = wait_for(f"a build of {rev}", built, BUILD_WAIT_SECONDS)[0]
    flake_ref = master.api(f"builds/{build['buildid']}", property="flake_ref")["builds"][0]
    assert rev in flake_ref["properties"]["flake_ref"][0]


def _github_push(master, rev: str, secret: str | None) -> requests.Response:
    payload = json.dumps({
        "ref": "refs/heads/main", "before": "0" * 40, "after": rev,
        # The master's flake repository (a path here): the hook takes only its pushes.
        "repository": {"name": "redox-flake", "full_name": "redox/redox-flake",
                       "html_url": str(master.setup.repo), "clone_url": str(master.setup.repo)},
        "pusher": {"name": "dev", "email": "dev@example.invalid"},
        "sender": {"login": "dev"},
        "head_commit": {"id": rev, "message": "hook", "timestamp": "2026-11-25T12:00:00Z",
                        "url": "https://example.invalid", "author": {"name": "dev", "email": "d@e"},
                     "committer": {"name": "dev", "email": "d@e"},
                        "added": [], "removed": [], "modified": []},
        "commits": [{"id": rev, "message": "hook", "timestamp": "2026-11-25T12:00:00Z",
                     "url": "https://example.invalid", "author": {"name": "dev", "email": "d@e"},
                     "committer": {"name": "dev", "email": "d@e"},
                     "added": [], "removed": [], "modified": ["flake.nix"]}],
    }).encode()
    headers = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
    if secret:
        # Both headers, as GitHub sends them; the hook requires the SHA-256 one.
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret.encode(), payload, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return requests.post(master.url + "change_hook/github", data=payload, headers=headers, timeout=30)


def test_github_hook_needs_a_valid_signature(master):
    rev = git(master.setup.repo, "rev-parse", "HEAD")
    changes_before = len(master.api("changes")["changes"])
    assert _github_push(master, rev, None).status_code == 400
    assert _github_push(master, rev, "not-the-secret").status_code == 400
    assert len(master.api("changes")["changes"]) == changes_before
    r = _github_push(master, rev, master.webhook_secret)
    assert r.ok, r.text
    changes = master.api("changes")["changes"]
    assert len(changes) == changes_before + 1
    assert changes[-1]["revision"] == rev


def test_disk_image_boots_on_qemu_through_the_master(master, forced):
    _, jobs = forced
    boot = jobs["x86_64-linux.boot-qemu"]
    assert boot["results"] == SUCCESS, boot["state_string"]
    result = answer(boot, "boot_result")
    assert result["verdict"] == "pass"
    assert [m["at"] for m in result["milestones"] if m["name"] == "boot-complete"][0] > 0
    assert "boot-complete" in boot["state_string"] and "shell" in boot["state_string"]  # the flake's rule
    logs = master.step_logs(boot["buildid"], "boot")
    assert {"serial", "vmm", "milestones"} <= set(logs)
    assert "Boot Complete" in logs["serial"]


def test_boots_that_cannot_run_are_skipped_with_the_reason(forced):
    _, jobs = forced
    ch = jobs["x86_64-linux.boot-cloud-hypervisor"]
    assert ch["results"] == SKIPPED
    assert "no worker runs x86_64-linux VMs with the kvm capability" in ch["state_string"]
    # An emulating worker builds aarch64-linux but runs no aarch64 VM.
    arm = jobs["aarch64-linux.boot-qemu"]
    assert arm["results"] == SKIPPED
    assert "no worker runs aarch64-linux VMs" in arm["state_string"]


def test_functional_test_image_shows_its_tests_one_by_one(master, forced):
    """The fixture's redox-functional-test prints the FUNC_TEST protocol, one test failing:
    the boot job counts them like cargo's, lists each with its verdict, keeps the verb's answer."""
    _, jobs = forced
    boot = jobs["x86_64-linux.boot-qemu-redox-functional-test"]
    assert boot["results"] == FAILURE, boot["state_string"]
    assert "1 of 5 tests failed: nix-eval-arith: expected 42, got 41 (3 passed, 1 failed, 1 skipped)" \
        in boot["state_string"]
    result = answer(boot, "boot_result")
    assert result["attr"] == "redox-functional-test" and result["failure"] == "tests-failed"
    assert result["vm"] == {"memory_mb": 1024, "cpus": 2, "nic": None}
    tests = result["tests"]
    assert (tests["passed"], tests["failed"], tests["skipped"], tests["complete"]) == (3, 1, 1, True)
    assert [(t["name"], t["status"], t["reason"]) for t in tests["results"]] == [
        ("shell-echo", "passed", ""), ("fs-write-read", "passed", ""),
        ("nix-eval-arith", "failed", "expected 42, got 41"), ("snix-fetchers", "skipped", ""),
        ("generations-list", "passed", "")]
    assert master.step_logs(boot["buildid"], "boot")["tests"].splitlines() == [
        "passed   shell-echo", "passed   fs-write-read", "failed   nix-eval-arith: expected 42, got 41",
        "skipped  snix-fetchers", "passed   generations-list"]
    # Cloud Hypervisor needs a worker with KVM; the fixture has no network test image.
    assert jobs["x86_64-linux.boot-cloud-hypervisor-redox-functional-test"]["results"] == SKIPPED
    assert not any("redox-network-test" in name for name in jobs)


def plan_property(master, build: dict, name: str = "plan"):
    return master.api(f"builds/{build['buildid']}", property=name)["builds"][0]["properties"][name][0]


def test_the_plan_build_evaluates_the_systems_its_worker_builds(master, forced, emulation):
    build, jobs = forced
    props = master.api(f"builds/{build['buildid']}", property="*")["builds"][0]["properties"]
    assert "x86_64-linux" in props["worker_systems"][0]
    plan = plan_property(master, build)
    assert {j["system"] for j in plan["jobs"]} == {"x86_64-linux", "aarch64-linux"}
    # Forced at the branch's tip: the plan says which commit that was.
    assert len(plan["revision"]) == 40 and set(plan["revision"]) <= set("0123456789abcdef")
    # One worker builds x86_64 and (emulating) aarch64, or no worker builds aarch64: either
    # way the plan build evaluates both in its one "plan" step, with no evaluation build.
    assert master.evaluations(build["buildid"]) == {}
    names = [s["name"] for s in master.steps(build["buildid"])]
    assert "evaluate here" not in names and "evaluate" not in names and "resolve flake" not in names
    assert master.step(build["buildid"], "plan")["state_string"].startswith("plan: ")


ARM_WORKER = '[[workers.worker]]\nname = "arm-box"\nkind = "local"\nsystems = ["aarch64-linux"]\n'


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """The x86_64 worker (no emulation) and a second worker that alone builds aarch64-linux."""
    yield from running_master(tmp_path_factory, "twoworkers", extra_toml=ARM_WORKER, poll_interval=3600)


def test_a_system_only_a_second_worker_builds_is_evaluated_there(two_workers):
    master = two_workers
    # The aarch64 evaluation fails this attribute (x86_64-only): nothing is built on arm-box.
    build = master.forced_build(master.force(attrs="redox-libstdcxx-shim"))
    props = master.api(f"builds/{build['buildid']}", property="*")["builds"][0]["properties"]
    own = set(props["worker_systems"][0]) | set(props["worker_emulated_systems"][0])
    away = {"x86_64-linux", "aarch64-linux"} - own
    assert len(own & {"x86_64-linux", "aarch64-linux"}) == 1  # each worker builds one of the two
    evaluations = master.evaluations(build["buildid"])
    assert set(evaluations) == away, (props["workername"][0], sorted(evaluations))
    system = away.pop()
    evaluated = evaluations[system]
    assert evaluated["results"] in (SUCCESS, WARNINGS), evaluated["state_string"]
    assert system in evaluated["properties"]["worker_systems"][0]
    plan = plan_property(master, build)
    assert {j["system"] for j in plan["jobs"]} == {"x86_64-linux", "aarch64-linux"}
    assert len(plan["revision"]) == 40
    names = [s["name"] for s in master.steps(build["buildid"])]
    assert names.count("evaluate") == 1 and names.count("evaluate here") == 1
    log = master.step_logs(build["buildid"], "plan")["evaluated on"]
    assert f"{system:14} a worker of it" in log and "the plan build's worker" in log


@pytest.mark.e2e
def test_the_masters_sqlite_keeps_its_wal_open_between_operations(forced, master):
    """The master's own engine has redox_ci.master.sqlite's keeper: with every operation's
    connection closed, the WAL stays (without it, the last close checkpoints and deletes it)."""
    assert (master.setup.master_dir / "state.sqlite-wal").exists()
