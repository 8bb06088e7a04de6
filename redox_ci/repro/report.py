"""One run's report: ``summary.json`` for machines, ``index.html`` for people.

The report directory is laid out to be uploaded as it is under
``reports/<date>-<rev>/`` in the cache bucket: the summary pages at its top, the
diffoscope reports in ``diffoscope/``, every link between them relative. The HTML
is self-contained (inline style, no script, nothing fetched) so it reads the same
from S3, from the web UI and from a local disk.

Rendering works on the summary as JSON, not on live objects, so a stored night can
be rendered again and the history (``history.py``) reads the same documents.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

from ..errors import UsageError
from .compare import STATUS_BUILD_FAILED, STATUS_REPRODUCIBLE, STATUS_UNREPRODUCIBLE

SCHEMA_VERSION = 1
SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "index.html"
REPORTS_PREFIX = "reports/"
# Characters of a commit id shown and used in report names; 12 stays unique in
# repositories far larger than the Redox flake.
REV_CHARS = 12
# A date and a revision end up in a directory name and an S3 key.
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
REV_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Differing files shown per attribute on the page; the JSON holds the listed ones.
MAX_FILES_SHOWN = 50

VERDICT_LABELS = {
    STATUS_REPRODUCIBLE: "reproducible",
    STATUS_UNREPRODUCIBLE: "NOT reproducible",
    STATUS_BUILD_FAILED: "build failed",
}

# Rules for tables and verdict colours. SCOPE is replaced by a selector so that a
# fragment embedded in another page (the web UI) styles only itself.
SCOPED_STYLE = """
SCOPE table { border-collapse: collapse; margin: 1em 0; }
SCOPE th, SCOPE td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
SCOPE th { background: #f3f3f3; }
SCOPE code, SCOPE pre { font-family: monospace; font-size: 0.9em; }
SCOPE pre { white-space: pre-wrap; margin: 0.2em 0; }
SCOPE .reproducible { background: #dff3df; }
SCOPE .unreproducible { background: #f8d7d7; }
SCOPE .build-failed { background: #fdeecf; }
SCOPE .missing { background: #eee; color: #888; }
SCOPE ul { margin: 0.2em 0; padding-left: 1.2em; }
SCOPE .note { color: #666; }
"""
PAGE_STYLE = "body { font-family: sans-serif; margin: 1.5em; color: #222; }" + SCOPED_STYLE.replace("SCOPE ", "")


def scoped_style(scope: str) -> str:
    """A <style> element whose rules apply only inside ``scope`` (a CSS selector)."""
    return f"<style>{SCOPED_STYLE.replace('SCOPE ', scope + ' ')}</style>"


def check_date(date: str) -> str:
    if not DATE_RE.match(date):
        raise UsageError(f"not a date (YYYY-MM-DD): {date!r}")
    return date


def check_rev(rev: str) -> str:
    if not REV_RE.match(rev):
        raise UsageError(f"not a revision name (letters, digits, '.', '_', '-'): {rev!r}")
    return rev


def run_name(date: str, rev: str) -> str:
    """The report directory's name: ``<date>-<rev>``, sorting night by night."""
    return f"{check_date(date)}-{check_rev(rev)}"


def key_prefix(date: str, rev: str) -> str:
    """Where the report directory goes in the bucket."""
    return f"{REPORTS_PREFIX}{run_name(date, rev)}/"


def counts(results: list[dict]) -> dict[str, int]:
    found = {status: 0 for status in VERDICT_LABELS}
    for r in results:
        found[r["status"]] = found.get(r["status"], 0) + 1
    return found


def page(title: str, body: str) -> str:
    """A complete HTML page around ``body``, with the shared inline style."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{PAGE_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _hashes_cell(result: dict) -> str:
    rows = []
    for output, h in result.get("hashes", {}).items():
        first, second = h.get("first"), h.get("second")
        same = first is not None and first == second
        second_text = "same" if same else (second or "not compared")
        rows.append(f"<li><code>{escape(output)}</code>: <code>{escape(first or '-')}</code>"
                    f" / <code>{escape(second_text)}</code></li>")
    return f"<ul>{''.join(rows)}</ul>" if rows else "-"


def _differences_cell(result: dict) -> str:
    diffs = result.get("differences", [])
    if not diffs:
        return "-"
    items = [f"<li><code>{escape(d['output'])}:{escape(d['path'])}</code> {escape(d['kind'])}"
             f" <span class=\"note\">{escape(d['detail'])}</span></li>" for d in diffs[:MAX_FILES_SHOWN]]
    total = result.get("differences_total", len(diffs))
    more = f"<li class=\"note\">... {total - len(items)} more</li>" if total > len(items) else ""
    return f"<ul>{''.join(items)}{more}</ul>"


def _diffoscope_cell(result: dict) -> str:
    items = []
    for d in result.get("diffoscope", []):
        links = [f"<a href=\"{escape(d[kind])}\">{kind}</a>" for kind in ("html", "text") if d.get(kind)]
        reason = f" <span class=\"note\">{escape(d['reason'])}</span>" if d.get("reason") else ""
        if d.get("truncated"):
            reason += " <span class=\"note\">(cut to the size cap)</span>"
        items.append(f"<li><code>{escape(d['output'])}</code>: {escape(d['status'])} "
                     f"{' '.join(links)}{reason}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "-"


def render_summary_html(summary: dict) -> str:
    """The run's page: header, counts, one row per attribute."""
    c = summary.get("counts") or counts(summary["results"])
    title = f"Reproducibility {summary['date']} {summary['rev']}"
    rows = []
    for r in summary["results"]:
        error = f"<pre>{escape(r['error'])}</pre>" if r.get("error") else ""
        rows.append(
            f"<tr class=\"{escape(r['status'])}\"><td><code>{escape(r['attr'])}</code></td>"
            f"<td>{escape(VERDICT_LABELS.get(r['status'], r['status']))}{error}</td>"
            f"<td>{_hashes_cell(r)}</td><td>{_differences_cell(r)}</td>"
            f"<td>{_diffoscope_cell(r)}</td></tr>")
    body = (
        f"<h1>{escape(title)}</h1>\n"
        f"<p>Flake <code>{escape(summary['flake'])}</code>, system <code>{escape(summary['system'])}</code>, "
        f"revision <code>{escape(summary['rev'])}</code>; started {escape(summary['started_at'])}, "
        f"finished {escape(summary['finished_at'])}.</p>\n"
        f"<p>{c.get('reproducible', 0)} reproducible, {c.get('unreproducible', 0)} not reproducible, "
        f"{c.get('build-failed', 0)} failed to build. <a href=\"{SUMMARY_JSON}\">summary.json</a></p>\n"
        "<table><tr><th>attribute</th><th>verdict</th><th>NAR hashes (first / second build)</th>"
        "<th>differing files</th><th>diffoscope</th></tr>\n" + "\n".join(rows) + "\n</table>")
    return page(title, body)


def write_report(summary: dict, report_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``index.html`` into ``report_dir``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / SUMMARY_JSON, report_dir / SUMMARY_HTML
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    html_path.write_text(render_summary_html(summary))
    return json_path, html_path
