"""diffoscope on a differing output: an HTML and a text report, bounded in time and size.

The verdict (reproducible or not) comes from Nix and the file list from ``tree``;
diffoscope only explains *how* the files differ, and it can be slow (it unpacks
images and archives) or absent. So it runs in its own process group under a hard
deadline, its reports are capped with its own size options (Debian 12 ships
diffoscope 240: ``--max-report-size``, ``--max-text-report-size``,
``--max-page-size``), and every way it can fail becomes a ``reason`` in the report
instead of an exception: the verdict stands either way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..nix import shorten_error

DIFFOSCOPE = "diffoscope"
# diffoscope's own --timeout only stops it recursing into further archives; given half
# the budget it finishes with a partial report before the hard deadline kills it.
SOFT_TIMEOUT_FRACTION = 0.5
# After SIGTERM, seconds the process group gets to exit before SIGKILL.
KILL_GRACE_SECONDS = 5
# Lines of diffoscope's stderr quoted when it fails.
ERROR_TAIL_LINES = 8
# diffoscope exit codes: 0 no difference, 1 differences, anything else an error.
EXIT_SAME, EXIT_DIFFERENT = 0, 1
REPORT_SUBDIR = "diffoscope"
# diffoscope checks its size limits between diff blocks, so one huge block (a rebuilt
# 100 000-line file) overshoots them; capping the lines kept per block bounds that.
# 2000 lines is more than anyone reads of one file's diff.
MAX_DIFF_BLOCK_LINES_SAVED = 2000
# The HTML page's inline style and header (about 10 KB) lie outside diffoscope's
# --max-page-size; the hard cap on the HTML file allows for them.
HTML_PAGE_OVERHEAD_BYTES = 64 * 1024
TRUNCATION_NOTE = "[redox-ci: report cut at {limit} bytes; raise [repro].diffoscope_max_report_bytes]"


# What came of a diffoscope run: reports written, none needed, or why there are none.
DiffoscopeStatus = Literal["ok", "no-difference", "missing", "timeout", "failed"]


@dataclass
class DiffoscopeReport:
    """What came of running diffoscope on one output; paths relative to the report dir."""

    output: str
    status: DiffoscopeStatus
    html: str | None = None
    text: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    html_bytes: int = 0
    text_bytes: int = 0
    truncated: bool = False  # a report was cut to its size cap after diffoscope wrote it

    def to_json(self) -> dict:
        return asdict(self)


def diffoscope_command(first: str, second: str, html: str, text: str, *, max_report_bytes: int,
                       timeout: float, binary: str = DIFFOSCOPE) -> list[str]:
    """The argv comparing ``first`` with ``second``, writing both reports."""
    size = str(max_report_bytes)
    argv = [binary, "--no-progress", "--text-color", "never",
            "--html", html, "--text", text,
            "--max-report-size", size, "--max-text-report-size", size, "--max-page-size", size,
            "--max-diff-block-lines-saved", str(MAX_DIFF_BLOCK_LINES_SAVED)]
    soft = int(timeout * SOFT_TIMEOUT_FRACTION)
    if soft >= 1:
        argv += ["--timeout", str(soft)]
    return argv + ["--", first, second]


def find_binary(binary: str) -> str | None:
    """The full path of ``binary`` (a name on PATH or a path), or None when absent."""
    return shutil.which(binary)


def report_stem(attr: str, output: str) -> str:
    """File name stem of an output's reports: the attribute, and the output unless 'out'."""
    stem = attr if output == "out" else f"{attr}-{output}"
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in stem)


def cap_file(path: Path, limit: int, html: bool) -> bool:
    """Cut ``path`` to ``limit`` bytes at a line end, with a note; True when cut."""
    if path.stat().st_size <= limit:
        return False
    with path.open("rb") as f:
        head = f.read(limit)
    head = head[:head.rfind(b"\n") + 1] or head
    note = TRUNCATION_NOTE.format(limit=limit)
    note = f"<p><strong>{note}</strong></p>\n" if html else f"\n{note}\n"
    path.write_bytes(head + note.encode())
    return True


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop diffoscope and everything it started (it runs tools in subprocesses)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_diffoscope(first: str, second: str, report_dir: Path, *, attr: str, output: str,
                   timeout: float, max_report_bytes: int, binary: str = DIFFOSCOPE) -> DiffoscopeReport:
    """Compare two copies of an output; never raises for diffoscope's own failures."""
    stem = report_stem(attr, output)
    rel_html, rel_text = f"{REPORT_SUBDIR}/{stem}.html", f"{REPORT_SUBDIR}/{stem}.txt"
    html, text = report_dir / rel_html, report_dir / rel_text
    html.parent.mkdir(parents=True, exist_ok=True)
    for stale in (html, text):
        stale.unlink(missing_ok=True)
    found = find_binary(binary)
    if found is None:
        return DiffoscopeReport(output, "missing", reason=(
            f"diffoscope not found ({binary!r} is not an executable on PATH); no diff was made. "
            "Install it (Debian: apt-get install diffoscope)."))
    argv = diffoscope_command(first, second, str(html), str(text), max_report_bytes=max_report_bytes,
                              timeout=timeout, binary=found)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        proc.communicate()
        for partial in (html, text):
            partial.unlink(missing_ok=True)
        return DiffoscopeReport(output, "timeout", seconds=round(time.monotonic() - start, 3), reason=(
            f"diffoscope did not finish within {timeout:g} s and was stopped; no diff was kept "
            "(raise [repro].diffoscope_timeout or --diffoscope-timeout)."))
    seconds = round(time.monotonic() - start, 3)
    report = DiffoscopeReport(output, "ok", seconds=seconds)
    caps = {"html": max_report_bytes + HTML_PAGE_OVERHEAD_BYTES, "text": max_report_bytes}
    for rel, path, field in ((rel_html, html, "html"), (rel_text, text, "text")):
        if path.is_file():
            report.truncated |= cap_file(path, caps[field], html=field == "html")
            setattr(report, field, rel)
            setattr(report, f"{field}_bytes", path.stat().st_size)
    if proc.returncode == EXIT_SAME:
        report.status = "no-difference"
        report.reason = ("diffoscope saw no difference in content; the outputs differ only in "
                         "what it does not compare (see the differing files)")
    elif proc.returncode != EXIT_DIFFERENT:
        report.status = "failed"
        report.reason = (f"diffoscope exited with status {proc.returncode}:\n"
                         + shorten_error(stderr, ERROR_TAIL_LINES))
    return report
