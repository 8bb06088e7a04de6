"""``redox-ci repro`` as a Buildbot step runs it: a child process, exit codes, JSON."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from redox_ci.fixture import commit_all, git
from repro_support import EXPECTED, NOISY_FILE, by_attr, make_repro_flake
from tests.support import requires, run_cli, run_json

pytestmark = pytest.mark.e2e

RESULT_KEYS = {"attr", "reproducible", "status", "hashes", "differences", "diffoscope"}


@pytest.fixture(scope="module")
def flake(tmp_path_factory) -> Path:
    requires("nix")
    return make_repro_flake(tmp_path_factory.mktemp("repro-cli") / "flake")


def test_all_attributes_exit_1_with_the_documented_json(flake, tmp_path):
    code, out = run_json("repro", "--flake", str(flake), "--report-dir", str(tmp_path / "r"), "--rev", "r1")
    assert code == 1
    assert out["report_dir"] == str(tmp_path / "r")
    assert {a: r["status"] for a, r in by_attr(out).items()} == EXPECTED
    for r in out["results"]:
        assert RESULT_KEYS <= set(r)
    noisy = by_attr(out)["noisy"]
    assert [d["path"] for d in noisy["differences"]] == [NOISY_FILE]
    assert (tmp_path / "r" / noisy["diffoscope"][0]["html"]).is_file()
    assert out["key_prefix"].startswith("reports/") and out["key_prefix"].endswith("-r1/")


def test_reproducible_only_exits_0_and_names_the_commit(flake, tmp_path):
    # No --report-dir: the report goes to repro-reports/<date>-<rev> under the current directory.
    code, out = run_json("repro", "--flake", str(flake), "--attr", "stable", cwd=tmp_path)
    assert code == 0
    [stable] = out["results"]
    assert stable["reproducible"] is True
    assert out["rev"] == git(flake, "rev-parse", "HEAD")[:12]
    assert Path(out["report_dir"]) == tmp_path / "repro-reports" / f"{out['date']}-{out['rev']}"
    assert (Path(out["report_dir"]) / "index.html").is_file()


def test_human_summary(flake, tmp_path):
    proc = run_cli("repro", "--flake", str(flake), "--attr", "noisy", "--attr", "broken",
                   "--report-dir", str(tmp_path / "r"), "--rev", "h")
    assert proc.returncode == 1, proc.stderr
    assert f"out:{NOISY_FILE}" in proc.stdout and "build-failed" in proc.stdout
    assert "fails on purpose" in proc.stdout and "diffoscope/noisy.html" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--flake", "{dir}"], "could not find a flake.nix file"),
    (["--flake", "{flake}", "--attr", "nope"], "has no attribute 'nope'"),
    (["--flake", "{flake}", "--system", "riscv64-linux"], "no packages for system 'riscv64-linux'"),
    (["--flake", "{flake}", "--attr", "stable", "--rev", "../up"], "not a revision name"),
    (["--flake", "{flake}", "--diffoscope-timeout", "0"], "must be more than 0"),
    (["--flake", "{flake}", "--max-report-bytes", "lots"], "not a whole number"),
])
def test_usage_errors_exit_2_with_a_sentence(flake, tmp_path, args, message):
    args = [a.format(dir=tmp_path, flake=flake) for a in args]
    proc = run_cli("repro", *args, "--report-dir", str(tmp_path / "r"), "--json")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _path_without_diffoscope(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("nix", "nix-store", "git"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    return str(bin_dir)


def test_diffoscope_missing_from_path_keeps_the_verdict(flake, tmp_path):
    env = {**os.environ, "PATH": _path_without_diffoscope(tmp_path)}
    code, out = run_json("repro", "--flake", str(flake), "--attr", "noisy",
                         "--report-dir", str(tmp_path / "r"), "--rev", "m", env=env)
    assert code == 1
    [noisy] = out["results"]
    assert noisy["status"] == "unreproducible"
    assert [d["path"] for d in noisy["differences"]] == [NOISY_FILE]
    [scope] = noisy["diffoscope"]
    assert scope["status"] == "missing" and scope["html"] is None
    assert "diffoscope not found" in (tmp_path / "r" / "index.html").read_text()


def test_diffoscope_flag_pointing_nowhere(flake, tmp_path):
    code, out = run_json("repro", "--flake", str(flake), "--attr", "noisy", "--rev", "n",
                         "--diffoscope", str(tmp_path / "absent" / "diffoscope"),
                         "--report-dir", str(tmp_path / "r"))
    assert code == 1
    assert out["results"][0]["diffoscope"][0]["status"] == "missing"


def test_diffoscope_timeout_keeps_the_verdict(flake, tmp_path):
    requires("diffoscope")
    code, out = run_json("repro", "--flake", str(flake), "--attr", "noisy", "--rev", "t",
                         "--diffoscope-timeout", "0.05", "--report-dir", str(tmp_path / "r"))
    assert code == 1
    [noisy] = out["results"]
    assert noisy["status"] == "unreproducible" and noisy["differences"]
    [scope] = noisy["diffoscope"]
    assert scope["status"] == "timeout" and scope["html"] is None
    assert "did not finish within 0.05 s" in (tmp_path / "r" / "index.html").read_text()
    assert not (tmp_path / "r" / "diffoscope" / "noisy.html").exists()


def test_history_names_the_commit_that_broke_reproducibility(tmp_path):
    requires("nix")
    repo = make_repro_flake(tmp_path / "flake")
    reproducible_rev = git(repo, "rev-parse", "HEAD")[:12]
    code, _ = run_json("repro", "--flake", str(repo), "--attr", "stable", cwd=tmp_path)
    assert code == 0
    flake_nix = repo / "flake.nix"
    text = flake_nix.read_text()
    pinned = 'echo "built on $(date -u -d @$SOURCE_DATE_EPOCH +%F)"'
    assert pinned in text
    # busybox's date has no %N: random bytes make two builds within a second differ.
    flake_nix.write_text(text.replace(pinned, 'echo "built at $(od -An -tx1 -N8 /dev/urandom)"'))
    broken_rev = commit_all(repo, "stable: stamp the build time")[:12]
    code, night = run_json("repro", "--flake", str(repo), "--attr", "stable", cwd=tmp_path)
    assert code == 1
    assert [d["path"] for d in night["results"][0]["differences"]] == ["share/doc/README"]

    page = tmp_path / "history.html"
    code, history = run_json("repro-history", "--reports", str(tmp_path / "repro-reports"),
                             "--html", str(page))
    assert code == 0
    [event] = history["events"]
    assert (event["attr"], event["kind"]) == ("stable", "became-unreproducible")
    assert (event["rev"], event["previous_rev"]) == (broken_rev, reproducible_rev)
    assert history["unreproducible"] == ["stable"]
    link = f"repro-reports/{event['night']}/index.html"
    assert f'href="{link}"' in page.read_text() and (tmp_path / link).is_file()
    human = run_cli("repro-history", "--reports", str(tmp_path / "repro-reports")).stdout
    assert f"stable became NOT reproducible on {event['date']} at {broken_rev}" in human


def test_history_of_a_missing_directory_is_a_usage_error(tmp_path):
    proc = run_cli("repro-history", "--reports", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a directory" in proc.stderr and "Traceback" not in proc.stderr
