"""The ``repro`` verb: rebuild attributes, compare bit for bit, write the night's report.

Exit 0 when every attribute is reproducible, 1 when one is not or fails to build,
2 when the flake, system or an attribute is wrong. Defaults come from
``[repro]`` in the settings model; the master passes its settings as flags
(``command_line``), so the worker needs no settings file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import UsageError
from ..outcome import Outcome

# The settings (pydantic) and the rebuild machinery are imported when the verb runs:
# `redox-ci` imports this module at every start for its flags. So the flags default to
# None and ``handle`` fills in the ``[repro]`` defaults of the settings model.
if TYPE_CHECKING:
    from ..config import ReproSettings


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _report_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if value < 1024:
        raise argparse.ArgumentTypeError(f"at least 1024 bytes: {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser("repro", help="rebuild attributes and compare the builds bit for bit",
                       description=__doc__.splitlines()[0])
    p.add_argument("--flake", required=True, metavar="REF", help="flake reference, e.g. github:owner/repo/REV")
    p.add_argument("--attr", action="append", default=[], metavar="A",
                   help="attribute of packages.<system> (repeatable; default: every package)")
    p.add_argument("--system", metavar="S", help="default: [repro].system")
    p.add_argument("--report-dir", metavar="DIR",
                   help="where the report goes (default: repro-reports/<date>-<rev>)")
    p.add_argument("--rev", metavar="REV", help="revision name in the report (default: the flake's commit)")
    p.add_argument("--diffoscope", metavar="BIN",
                   help="diffoscope executable (name on PATH or path)")
    p.add_argument("--diffoscope-timeout", type=_positive_float, metavar="SECONDS", help="stop diffoscope after this long; the verdict stands")
    p.add_argument("--max-report-bytes", type=_report_bytes, metavar="N", help="size cap of each diffoscope report")
    p.add_argument("--keep-check", action="store_true", default=None,
                   help="keep the differing copy <out>.check in the store")
    p.add_argument("--upload", metavar="SETTINGS",
                   help="upload the report to the cache bucket of this settings file, under reports/")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=handle)

    h = sub.add_parser("repro-history", help="night-by-night history of reproducibility reports",
                       description="Read <DIR>/*/summary.json and show which attribute became "
                                   "unreproducible on which commit.")
    h.add_argument("--reports", required=True, metavar="DIR",
                   help="a local copy of the bucket's reports/ (one directory per night)")
    h.add_argument("--html", metavar="FILE", help="also write the history page here")
    h.add_argument("--json", action="store_true", help="print one JSON document")
    h.set_defaults(func=handle_history)


def command_line(settings: ReproSettings, flake: str, *, report_dir: str, rev: str | None = None,
                 attrs: list[str] | None = None, system: str | None = None,
                 program: list[str] | None = None) -> list[str]:
    """The argv a nightly step runs on a worker, from the master's ``[repro]`` settings."""
    argv = [*(["redox-ci"] if program is None else program), "repro", "--json", "--flake", flake,
            "--system", system or settings.system, "--report-dir", report_dir,
            "--diffoscope", settings.diffoscope,
            "--diffoscope-timeout", str(settings.diffoscope_timeout),
            "--max-report-bytes", str(settings.diffoscope_max_report_bytes)]
    if rev:
        argv += ["--rev", rev]
    if settings.keep_check:
        argv.append("--keep-check")
    for attr in (settings.attrs if attrs is None else attrs):
        argv += ["--attr", attr]
    return argv


def _human(summary: dict) -> str:
    lines = [f"reproducibility of {summary['flake']} ({summary['rev']}, {summary['system']})"]
    for r in summary["results"]:
        line = f"  {r['attr']:<20} {r['status']}"
        if r["differences"]:
            shown = ", ".join(f"{d['output']}:{d['path']}" for d in r["differences"][:5])
            more = r["differences_total"] - min(5, len(r["differences"]))
            line += f": {shown}" + (f" and {more} more" if more > 0 else "")
        lines.append(line)
        for d in r["diffoscope"]:
            where = d["html"] or d["reason"]
            lines.append(f"  {'':<20} diffoscope ({d['output']}): {d['status']}: {where}")
        if r["error"]:
            lines += [f"  {'':<20} {text}" for text in r["error"].splitlines()]
    c = summary["counts"]
    lines.append(f"{c['reproducible']} reproducible, {c['unreproducible']} not, "
                 f"{c['build-failed']} failed to build; report: {summary['report_dir']}")
    return "\n".join(lines)


def _given(value, default):
    return default if value is None else value


def handle(args: argparse.Namespace) -> Outcome:
    from ..config import ReproSettings
    from .compare import CompareOptions
    from .run import run_repro
    if not args.flake.strip():
        raise UsageError("--flake is empty")
    defaults = ReproSettings()
    options = CompareOptions(
        diffoscope=_given(args.diffoscope, defaults.diffoscope),
        diffoscope_timeout=_given(args.diffoscope_timeout, float(defaults.diffoscope_timeout)),
        max_report_bytes=_given(args.max_report_bytes, defaults.diffoscope_max_report_bytes),
        keep_check=_given(args.keep_check, defaults.keep_check))
    cache = _upload_target(args.upload) if args.upload else None
    run = run_repro(args.flake, args.attr, system=_given(args.system, defaults.system),
                    report_dir=args.report_dir, rev=args.rev, options=options)
    result = run.to_json()
    if cache is not None:
        result["upload"] = _upload(cache, result)
    return Outcome(result, _human, 0 if run.ok and result.get("upload", {}).get("ok", True) else 1)


def _upload_target(settings_file: str):
    """The cache settings to upload to; checked before anything is built."""
    from ..settings_file import load
    cache = load(settings_file, workers=False).settings.cache
    if not cache.enabled:
        raise UsageError(f"--upload {settings_file}: [cache] is not enabled, so there is no bucket for reports")
    return cache


def _upload(cache, result: dict) -> dict:
    """Upload the report directory; a failure is reported, the verdicts stand."""
    from ..cache.push import upload_files
    from ..errors import RedoxCIError
    try:
        up = upload_files(cache, result["report_dir"], result["key_prefix"])
    except RedoxCIError as e:
        return {"ok": False, "error": str(e), "bucket": cache.bucket, "prefix": result["key_prefix"]}
    return {"ok": True, "bucket": cache.bucket, "prefix": result["key_prefix"], "files": len(up.keys)}


def _human_history(data: dict) -> str:
    from .history import BECAME_UNREPRODUCIBLE
    lines = [f"{len(data['nights'])} nights, {len(data['attrs'])} attributes"]
    for e in data["events"]:
        broke = e["kind"] == BECAME_UNREPRODUCIBLE
        lines.append(f"  {e['attr']} became {'NOT ' if broke else ''}reproducible on {e['date']} at "
                     f"{e['rev']}; last {'' if broke else 'not '}reproducible on {e['previous_date']} "
                     f"at {e['previous_rev']}")
    lines.append("not reproducible now: " + (", ".join(data["unreproducible"]) or "none"))
    if data["skipped"]:
        lines.append(f"skipped {data['skipped']} file(s) that are not run summaries")
    return "\n".join(lines)


def handle_history(args: argparse.Namespace) -> Outcome:
    from .history import build_history, read_summaries, render_history_html
    from .report import SUMMARY_HTML
    reports = Path(args.reports)
    if not reports.is_dir():
        raise UsageError(f"{reports}: not a directory")
    history = build_history(read_summaries(reports))
    if args.html:
        page = Path(args.html).resolve()
        nights = os.path.relpath(reports.resolve(), page.parent)
        page.write_text(render_history_html(
            history, href=lambda night: f"{nights}/{night}/{SUMMARY_HTML}", full_page=True))
    return Outcome(history.to_json(), _human_history)
