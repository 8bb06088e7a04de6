"""The run summary: names, keys and the self-contained HTML page (pure parts)."""

from __future__ import annotations

import json
import re

import pytest

from redox_ci.errors import UsageError
from redox_ci.repro.report import key_prefix, render_summary_html, run_name, write_report

pytestmark = pytest.mark.unit


def _summary() -> dict:
    return {
        "flake": "git+file:///src/redox", "rev": "0123456789ab", "date": "2026-11-25",
        "system": "x86_64-linux", "started_at": "2026-11-25T03:00:00+00:00",
        "finished_at": "2026-11-25T03:10:00+00:00",
        "results": [
            {"attr": "kernel", "status": "reproducible", "reproducible": True, "error": None,
             "hashes": {"out": {"first": "sha256-AAA=", "second": "sha256-AAA="}},
             "differences": [], "differences_total": 0, "diffoscope": []},
            {"attr": "initfs", "status": "unreproducible", "reproducible": False, "error": None,
             "hashes": {"out": {"first": "sha256-AAA=", "second": "sha256-BBB="}},
             "differences": [{"output": "out", "path": "etc/<stamp>", "kind": "content", "detail": "x"}],
             "differences_total": 1,
             "diffoscope": [{"output": "out", "status": "ok", "html": "diffoscope/initfs.html",
                             "text": "diffoscope/initfs.txt", "reason": None}]},
            {"attr": "relibc", "status": "build-failed", "reproducible": None,
             "error": "error: builder failed", "hashes": {}, "differences": [],
             "differences_total": 0, "diffoscope": []},
        ],
    }


def test_names_and_keys():
    assert run_name("2026-11-25", "0123456789ab") == "2026-11-25-0123456789ab"
    assert key_prefix("2026-11-25", "0123456789ab") == "reports/2026-11-25-0123456789ab/"
    for bad_date, bad_rev in (("25/11/2026", "abc"), ("2026-11-25", "../x"), ("2026-11-25", "a b")):
        with pytest.raises(UsageError):
            key_prefix(bad_date, bad_rev)


def test_html_is_self_contained_with_relative_links():
    html = render_summary_html(_summary())
    links = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert links == ["summary.json", "diffoscope/initfs.html", "diffoscope/initfs.txt"]
    assert "<script" not in html and "http" not in html.replace("git+file", "")
    assert "etc/&lt;stamp&gt;" in html
    assert "NOT reproducible" in html and "build failed" in html and "builder failed" in html
    assert "sha256-BBB=" in html
    assert "1 reproducible, 1 not reproducible, 1 failed to build" in html


def test_write_report_writes_both_files(tmp_path):
    json_path, html_path = write_report(_summary(), tmp_path / "night")
    assert json.loads(json_path.read_text())["rev"] == "0123456789ab"
    assert html_path.name == "index.html" and "initfs" in html_path.read_text()
