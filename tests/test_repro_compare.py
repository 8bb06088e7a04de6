"""Rebuild-and-compare through real Nix builds of the repro fixture flake."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import requires
from redox_ci.errors import FlakeError, UsageError
from redox_ci.nix import nix_env
from redox_ci.repro.compare import CHECK_SUFFIX, CompareOptions, remove_copy
from redox_ci.repro.run import run_repro
from repro_support import EXPECTED, NOISY_FILE, by_attr, make_repro_flake

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def flake(tmp_path_factory) -> Path:
    requires("nix")
    return make_repro_flake(tmp_path_factory.mktemp("repro") / "flake")


@pytest.fixture(scope="module")
def night(flake, tmp_path_factory):
    """One run over every attribute of the fixture, shared by the tests that read it."""
    run = run_repro(str(flake), report_dir=tmp_path_factory.mktemp("night") / "report", date="2026-11-25")
    return run, by_attr(run.to_json())


def _nar_hash(path: str) -> str:
    return subprocess.run(["nix", "hash", "path", "--sri", path], capture_output=True, text=True,
                          env=nix_env(), check=True).stdout.strip()


def test_every_attribute_gets_its_verdict(night):
    run, results = night
    assert {a: r["status"] for a, r in results.items()} == EXPECTED
    assert not run.ok
    assert {a: r["reproducible"] for a, r in results.items()} == {
        "stable": True, "noisy": False, "split": False, "broken": None, "unevaluable": None}


def test_reproducible_attribute_has_the_stored_nar_hash(night):
    _, results = night
    stable = results["stable"]
    out = stable["outputs"]["out"]
    assert stable["hashes"]["out"]["first"] == stable["hashes"]["out"]["second"] == _nar_hash(out)
    assert stable["differences"] == [] and stable["diffoscope"] == []


def test_unreproducible_attribute_names_the_one_differing_file(night):
    run, results = night
    noisy = results["noisy"]
    [diff] = noisy["differences"]
    assert (diff["output"], diff["path"], diff["kind"]) == ("out", NOISY_FILE, "content")
    hashes = noisy["hashes"]["out"]
    assert hashes["first"] == _nar_hash(noisy["outputs"]["out"])
    assert hashes["second"].startswith("sha256-") and hashes["second"] != hashes["first"]
    [scope] = noisy["diffoscope"]
    assert scope["status"] == "ok" and scope["reason"] is None
    text = (run.report_dir / scope["text"]).read_text()
    assert NOISY_FILE in text and "built at" in text and "constant.txt" not in text
    assert NOISY_FILE in (run.report_dir / scope["html"]).read_text()
    # The differing copy is gone from the store once the report is made.
    assert not os.path.lexists(noisy["outputs"]["out"] + CHECK_SUFFIX)


def test_multi_output_derivation_reports_the_differing_output(night):
    run, results = night
    split = results["split"]
    assert [(d["output"], d["path"]) for d in split["differences"]] == [("doc", "manual.txt")]
    assert split["hashes"]["doc"]["first"] != split["hashes"]["doc"]["second"]
    assert split["hashes"]["out"]["second"] is None  # Nix stops at the first differing output
    [scope] = split["diffoscope"]
    assert scope["html"] == "diffoscope/split-doc.html" and (run.report_dir / scope["html"]).is_file()


def test_failing_attribute_is_a_build_failure_not_a_difference(night):
    _, results = night
    broken = results["broken"]
    assert broken["status"] == "build-failed" and broken["reproducible"] is None
    assert "fails on purpose" in broken["error"]
    assert broken["differences"] == [] and broken["diffoscope"] == [] and broken["hashes"] == {}


def test_attribute_that_does_not_evaluate_is_a_build_failure(night, flake):
    _, results = night
    unevaluable = results["unevaluable"]
    assert unevaluable["status"] == "build-failed" and unevaluable["drv"] is None
    assert f"nix eval {flake}#packages.x86_64-linux.unevaluable.drvPath" in unevaluable["error"]


def test_report_directory_is_complete_and_links_resolve(night):
    run, _ = night
    summary = json.loads((run.report_dir / "summary.json").read_text())
    assert summary == run.to_json()
    assert summary["key_prefix"] == f"reports/2026-11-25-{summary['rev']}/"
    html = (run.report_dir / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', html)
    assert "diffoscope/noisy.html" in links and "diffoscope/split-doc.txt" in links
    for link in links:
        assert not link.startswith(("/", "http")) and (run.report_dir / link).is_file(), link


def test_keep_check_leaves_the_differing_copy(flake, tmp_path):
    run = run_repro(str(flake), ["noisy"], report_dir=tmp_path / "r", rev="kept",
                    options=CompareOptions(keep_check=True))
    copy = run.results[0].outputs["out"] + CHECK_SUFFIX
    try:
        assert run.results[0].status == "unreproducible"
        assert Path(copy, NOISY_FILE).read_text() != Path(run.results[0].outputs["out"], NOISY_FILE).read_text()
        assert _nar_hash(copy) == run.results[0].hashes["out"]["second"]
    finally:
        remove_copy(copy)
    assert not os.path.lexists(copy)


def test_usage_errors_before_anything_is_built(flake, tmp_path):
    with pytest.raises(UsageError, match=r"no attribute 'nope'.*it has: broken, noisy, split, stable, unevaluable"):
        run_repro(str(flake), ["stable", "nope"], report_dir=tmp_path / "r")
    with pytest.raises(FlakeError, match="no packages for system 'aarch64-linux'"):
        run_repro(str(flake), report_dir=tmp_path / "r", system="aarch64-linux")
    with pytest.raises(FlakeError):
        run_repro(str(tmp_path), report_dir=tmp_path / "r")
    with pytest.raises(UsageError, match="not attribute names"):
        run_repro(str(flake), ["a b"], report_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
