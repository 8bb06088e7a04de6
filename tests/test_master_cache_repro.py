"""End to end through the master with a real S3 server (moto, over HTTP): the cache push
after each job, cached jobs skipped on the next run, and a forced nightly
reproducibility run whose report lands in the bucket and on the web UI's page.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from redox_ci.cache.push import cached_paths, list_keys
from redox_ci.cache.localserver import LocalS3Server
from redox_ci.local import CacheWiring, signing_key
from tests.master_support import answer, running_master

pytestmark = pytest.mark.e2e

SUCCESS, FAILURE = 0, 2


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with LocalS3Server(state_dir=tmp_path_factory.mktemp("s3")) as server:
        yield server


def with_noisy_package(text: str) -> str:
    """One package that is not reproducible: it records random bytes (busybox's date has no %N,
    and a rebuild within the same second would record the same time)."""
    return text.replace('fstools = simple "fstools" [ ];',
                        'fstools = simple "fstools" [ ];\n        noisy = mkPkg { pname = "noisy"; '
                        'buildPhase = "od -An -tx1 -N16 /dev/urandom > $out/stamp; echo fixed > $out/same"; };')


@pytest.fixture(scope="module")
def master(tmp_path_factory, s3):
    key_file, public_key = signing_key(tmp_path_factory.mktemp("keys"))
    # The server takes any credentials; random ones make the "secret not in any log" check mean something.
    credentials = {"aws_access_key_id": "AKIA" + secrets.token_hex(8).upper(),
                   "aws_secret_access_key": secrets.token_urlsafe(30)}
    wiring = CacheWiring(s3.url, s3.bucket, key_file, public_key, credentials)
    # A separate worker process, as the unprivileged worker user under root: signing for
    # the cache goes through the Nix daemon, which trusts that user (scripts/nix-setup.sh).
    yield from running_master(tmp_path_factory, "cache-repro", with_noisy_package,
                              cache=wiring, systems=["x86_64-linux"], worker_kind="remote")


def forced_jobs(master, **params):
    build = master.forced_build(master.force(**params))
    return build, master.jobs(build["buildid"])


@pytest.fixture(scope="module")
def first_run(master):
    return forced_jobs(master, attrs="cookbook installer", systems=["x86_64-linux"])


def test_successful_jobs_are_pushed_failed_ones_are_not(master, s3, first_run):
    _, jobs = first_run
    cookbook, installer = jobs["x86_64-linux.cookbook"], jobs["x86_64-linux.installer"]
    assert cookbook["results"] == SUCCESS
    assert len(answer(cookbook, "push_result")["pushed"]) >= 1
    assert "pushed" in master.step(cookbook["buildid"], "cache push")["state_string"]
    settings = s3.settings()
    outs = answer(cookbook)["outputs"] + answer(installer)["outputs"]
    held = cached_paths(settings, outs, credentials=s3.credentials)
    assert set(answer(cookbook)["outputs"]) <= held
    assert not set(answer(installer)["outputs"]) & held
    assert "push_result" not in installer["properties"]


def test_cached_jobs_are_not_built_again(master, first_run):
    build, jobs = forced_jobs(master, attrs="cookbook installer", systems=["x86_64-linux"])
    # No build at all for the cached job: the stage step counts and lists it.
    assert "x86_64-linux.cookbook" not in jobs
    assert "1 cached" in master.step(build["buildid"], "stage host-tools")["state_string"]
    assert master.step_logs(build["buildid"], "stage host-tools")["cached"].strip() == "x86_64-linux.cookbook"
    plan = master.api(f"builds/{build['buildid']}", property="plan")["builds"][0]["properties"]["plan"][0]
    assert {j["attr"]: j["status"] for j in plan["jobs"]} == {"cookbook": "cached", "installer": "build"}
    # The failing job was never pushed, so it runs (and fails) again.
    assert jobs["x86_64-linux.installer"]["results"] == FAILURE


def test_secrets_do_not_reach_logs(master, s3, first_run):
    _, jobs = first_run
    cookbook = jobs["x86_64-linux.cookbook"]
    secret = master.setup.cache.credentials["aws_secret_access_key"]
    for step in master.steps(cookbook["buildid"]):
        for text in master.step_logs(cookbook["buildid"], step["name"]).values():
            assert secret not in text


@pytest.fixture(scope="module")
def nightly(master):
    repro_id = master.builder_id("redox/repro")
    r = master.login().post(master.url + "api/v2/forceschedulers/force-repro", json={
        "jsonrpc": "2.0", "method": "force", "id": 1,
        "params": {"builderid": str(repro_id), "branch": "main", "revision": "", "attrs": "cookbook noisy",
                   "reason": "test"}}, timeout=30)
    return master.forced_build(r)


def test_forced_nightly_names_the_unreproducible_attribute(master, nightly):
    assert nightly["results"] == FAILURE
    step = master.step(nightly["buildid"], "reproducibility")
    assert "NOT reproducible: noisy" in step["state_string"]
    assert "1 reproducible" in step["state_string"]
    logs = master.step_logs(nightly["buildid"], "reproducibility")
    assert "stamp" in logs["diffoscope noisy out"]


def test_nightly_report_is_in_the_bucket_and_on_the_page(master, s3, nightly):
    props = master.api(f"builds/{nightly['buildid']}", property="repro_report")["builds"][0]["properties"]
    prefix = props["repro_report"][0]
    keys = list_keys(s3.settings(), prefix, credentials=s3.credentials)
    assert f"{prefix}summary.json" in keys and f"{prefix}index.html" in keys
    page = requests.get(master.url + "plugins/wsgi_dashboards/reproducibility/index.html", timeout=30)
    assert page.ok and "noisy" in page.text
    night = prefix.removeprefix("reports/").strip("/")
    report = requests.get(master.url + f"plugins/wsgi_dashboards/reproducibility/report/{night}/index.html",
                          timeout=30)
    assert report.ok and "noisy" in report.text
    assert requests.get(master.url + "plugins/wsgi_dashboards/reproducibility/report/x/../../etc/passwd",
                        timeout=30).status_code == 404
