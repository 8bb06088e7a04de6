"""diffoscope runs, with its bounds: real diffoscope on real trees."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from redox_ci.repro.diffoscope import (HTML_PAGE_OVERHEAD_BYTES, TRUNCATION_NOTE, _stop_group, cap_file,
                                       diffoscope_command, report_stem, run_diffoscope)
from tests.support import group_members, requires, wait_for

pytestmark = pytest.mark.unit

# How long to wait for the kernel to reap a killed process group before giving up.
REAP_WAIT_SECONDS = 10


def _require_diffoscope():
    requires("diffoscope")


def _pair(tmp_path):
    a, b = tmp_path / "first", tmp_path / "second"
    for root, stamp in ((a, "1700000000"), (b, "1700000042")):
        (root / "share").mkdir(parents=True)
        (root / "share" / "constant.txt").write_text("same\n")
        (root / "share" / "build-info.txt").write_text(f"built at {stamp}\n")
        for path in [root, *root.rglob("*")]:
            os.utime(path, (1, 1))  # as in the Nix store, so only contents differ
    return a, b


def test_command_bounds_size_and_time():
    argv = diffoscope_command("/a", "/b", "r.html", "r.txt", max_report_bytes=4096, timeout=600)
    assert argv[0] == "diffoscope" and argv[-3:] == ["--", "/a", "/b"]
    for flag in ("--max-report-size", "--max-text-report-size", "--max-page-size"):
        assert argv[argv.index(flag) + 1] == "4096"
    assert argv[argv.index("--timeout") + 1] == "300"
    # Below a second, diffoscope's own (whole-second) timeout is left out.
    assert "--timeout" not in diffoscope_command("/a", "/b", "h", "t", max_report_bytes=4096, timeout=0.5)


def test_report_stem():
    assert report_stem("kernel", "out") == "kernel"
    assert report_stem("split", "doc") == "split-doc"
    assert report_stem("we'ird", "out") == "we_ird"


def test_reports_name_the_differing_file(tmp_path):
    _require_diffoscope()
    a, b = _pair(tmp_path)
    report = run_diffoscope(str(a), str(b), tmp_path / "report", attr="noisy", output="out",
                            timeout=120, max_report_bytes=1 << 20)
    assert report.status == "ok", report.reason
    assert (report.html, report.text) == ("diffoscope/noisy.html", "diffoscope/noisy.txt")
    text = (tmp_path / "report" / report.text).read_text()
    assert "build-info.txt" in text and "1700000042" in text
    assert "constant.txt" not in text
    assert "build-info.txt" in (tmp_path / "report" / report.html).read_text()
    assert report.text_bytes == len(text.encode())


def test_reports_stay_within_the_size_cap(tmp_path):
    _require_diffoscope()
    a, b = tmp_path / "first", tmp_path / "second"
    for root, shift in ((a, 0), (b, 1)):
        root.mkdir()
        # One file whose every line differs: one huge diff block.
        (root / "image.txt").write_text("".join(f"block {i + shift}\n" for i in range(60_000)))
    limit = 8192
    report = run_diffoscope(str(a), str(b), tmp_path / "report", attr="big", output="out",
                            timeout=120, max_report_bytes=limit)
    assert report.status == "ok", report.reason
    note = TRUNCATION_NOTE.format(limit=limit)
    assert report.text_bytes <= limit + len(note) + 2
    assert report.html_bytes <= limit + HTML_PAGE_OVERHEAD_BYTES + len(note) + 40
    text = (tmp_path / "report" / report.text).read_text()
    assert "image.txt" in text


def test_cap_file_cuts_at_a_line_end(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert cap_file(path, 100, html=False)
    kept = "".join(f"line {i}\n" for i in range(13))  # 94 bytes: the whole lines within 100
    assert path.read_text() == kept + "\n" + TRUNCATION_NOTE.format(limit=100) + "\n"
    assert not cap_file(path, 10_000, html=False)


def test_missing_binary_is_a_reason_not_an_error(tmp_path):
    a, b = _pair(tmp_path)
    report = run_diffoscope(str(a), str(b), tmp_path / "report", attr="noisy", output="out",
                            timeout=60, max_report_bytes=1 << 20, binary=str(tmp_path / "no-diffoscope"))
    assert report.status == "missing"
    assert "not found" in report.reason and report.html is None
    assert not list((tmp_path / "report").rglob("*.html"))


def test_timeout_kills_it_and_keeps_no_partial_report(tmp_path):
    _require_diffoscope()
    a, b = _pair(tmp_path)
    report = run_diffoscope(str(a), str(b), tmp_path / "report", attr="noisy", output="out",
                            timeout=0.05, max_report_bytes=1 << 20)
    assert report.status == "timeout"
    assert "did not finish within 0.05 s" in report.reason
    assert report.html is None and report.text is None
    assert not list((tmp_path / "report").rglob("noisy.*"))


def test_diffoscope_error_is_reported(tmp_path):
    _require_diffoscope()
    report = run_diffoscope(str(tmp_path / "absent-a"), str(tmp_path / "absent-b"), tmp_path / "report",
                            attr="x", output="out", timeout=120, max_report_bytes=1 << 20)
    assert report.status == "failed"
    assert "exited with status" in report.reason


def test_stop_group_kills_the_children_too():
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    _stop_group(proc)
    assert proc.returncode == -signal.SIGTERM
    try:
        wait_for("the sleeps in diffoscope's process group to go", lambda: not group_alive(proc.pid),
                 REAP_WAIT_SECONDS, step=0.05)
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))
