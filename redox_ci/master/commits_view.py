"""The Commits pages as HTML: the branch's commits, one commit's jobs, the trends.

Pure: data from ``commits.py`` in, escaped HTML out. Pages carry their style inline and
no script; the charts are inline SVG (``svg.py``). The fragment shown inside Buildbot's
UI links to whole pages served beside it, since Buildbot's dashboard view loads one
page (``index.html``) with no parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from .commits import Commit, JobRow, Outcome, Pipeline, Series, Trends, outcome_counts, reason_of
from .svg import SHORT_REV, Line, legend, line_chart

DASHBOARD_NAME = "commits"
SCOPE = "redox-ci-commits"
STYLE = f"""
.{SCOPE} {{ font-family: sans-serif; font-size: 14px; }}
.{SCOPE} table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
.{SCOPE} th, .{SCOPE} td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }}
.{SCOPE} th {{ background: #f3f3f3; }}
.{SCOPE} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.{SCOPE} .failure, .{SCOPE} .exception {{ background: #fde0e0; }}
.{SCOPE} .cancelled {{ background: #eee; }}
.{SCOPE} .warnings {{ background: #fff1d6; }}
.{SCOPE} .success {{ background: #e3f5e1; }}
.{SCOPE} .skipped, .{SCOPE} .cached {{ background: #f6f6f6; color: #555; }}
.{SCOPE} .running {{ background: #e3eefc; }}
.{SCOPE} .note {{ color: #666; }}
.{SCOPE} code {{ font-size: 13px; }}
.{SCOPE} ul.legend {{ list-style: none; padding: 0; columns: 2; max-width: 640px; }}
.{SCOPE} figure {{ margin: 0 0 1.5em; }}
.{SCOPE} .charts {{ display: flex; flex-wrap: wrap; gap: 0 2em; }}
.{SCOPE} .reason {{ max-width: 40em; }}
"""
# A job's result as a word in the table.
OUTCOME_WORDS = {Outcome.CACHED: "cached", Outcome.RUNNING: "running"}


@dataclass(frozen=True)
class Urls:
    """Where things are: the dashboard's own pages, and Buildbot's UI and API."""

    www_url: str

    @property
    def base(self) -> str:
        return f"{self.www_url}plugins/wsgi_dashboards/{DASHBOARD_NAME}/"

    def branch(self, branch: str) -> str:
        return f"{self.base}branch.html?{urlencode({'branch': branch})}"

    def commit(self, commit: Commit, pipeline: Pipeline | None = None) -> str:
        params = {"rev": commit.revision} if commit.revision else {}
        if pipeline is not None or not commit.revision:
            params["build"] = str((pipeline or commit.latest).buildid)
        return f"{self.base}commit.html?{urlencode(params)}"

    def trends(self, branch: str) -> str:
        return f"{self.base}trends.html?{urlencode({'branch': branch})}"

    def badge(self, branch: str) -> str:
        return f"{self.base}badge/{quote(branch, safe='')}.svg"

    def build(self, builderid: int, number: int) -> str:
        return f"{self.www_url}#/builders/{builderid}/builds/{number}"

    def log(self, logid: int) -> str:
        return f"{self.www_url}api/v2/logs/{logid}/raw_inline"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"</head>\n<body>{fragment(body)}</body></html>\n")


def fragment(body: str) -> str:
    return f"<div class=\"{SCOPE}\"><style>{STYLE}</style>\n{body}\n</div>"


def _when(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if epoch else "-"


def _rev(commit: Commit) -> str:
    if commit.revision:
        return f"<code>{escape(commit.revision[:12])}</code>"
    return "<span class=\"note\">branch tip (forced; its plan has not named the revision)</span>"


def _outcome_cell(outcome: Outcome, text: str | None = None) -> str:
    return f"<td class=\"{outcome.value}\">{escape(text or OUTCOME_WORDS.get(outcome, outcome.value.upper()))}</td>"


def commit_list(branch: str, commits: list[Commit], urls: Urls, limit: int | None = None) -> str:
    """A table of the branch's commits, newest first."""
    if not commits:
        return f"<p class=\"note\">No pipeline has run on <code>{escape(branch)}</code> yet.</p>"
    rows = []
    for c in commits[:limit]:
        p = c.latest
        how = "forced" if p.forced else "pushed"
        more = f" ({len(c.pipelines)} pipelines)" if len(c.pipelines) > 1 else ""
        rows.append(f"<tr><td><a href=\"{escape(urls.commit(c))}\">{_rev(c)}</a></td>"
                    f"{_outcome_cell(p.outcome)}<td>{escape(how)}{escape(more)}</td>"
                    f"<td>{escape(_when(p.started_at))}</td><td>{escape(reason_of(p.state))}</td></tr>")
    return ("<table class=\"commits\"><tr><th>commit</th><th>pipeline</th><th>how</th><th>started</th>"
            "<th>summary</th></tr>\n" + "\n".join(rows) + "</table>")


def index_fragment(branches: list[str], commits: dict[str, list[Commit]], urls: Urls, limit: int) -> str:
    """What Buildbot's UI shows under "Commits": each branch's newest commits and its links."""
    parts = ["<h1>Commits</h1>"]
    for b in branches:
        parts.append(f"<h2>Branch <code>{escape(b)}</code></h2>")
        parts.append(f"<p><a href=\"{escape(urls.branch(b))}\">all commits</a> · "
                     f"<a href=\"{escape(urls.trends(b))}\">trends</a> · badge: "
                     f"<a href=\"{escape(urls.badge(b))}\"><code>{escape(urls.badge(b))}</code></a></p>")
        parts.append(commit_list(b, commits.get(b, []), urls, limit))
    return fragment("\n".join(parts))


def branch_page(branch: str, commits: list[Commit], urls: Urls) -> str:
    body = (f"<h1>Commits of <code>{escape(branch)}</code></h1>"
            f"<p><a href=\"{escape(urls.trends(branch))}\">trends</a> · <a href=\"{escape(urls.www_url)}\">"
            "back to Buildbot</a></p>" + commit_list(branch, commits, urls))
    return page(f"Commits of {branch}", body)


def _tests_cells(row: JobRow) -> str:
    t = row.facts.tests
    if t is None:
        return "<td class=\"num\">-</td><td class=\"num\">-</td><td class=\"num\">-</td><td></td>"
    return (f"<td class=\"num\">{t.passed}</td><td class=\"num\">{t.failed}</td>"
            f"<td class=\"num\">{t.ignored}</td><td>{escape(t.kind)}</td>")


def _boot_cell(row: JobRow) -> str:
    b = row.facts.boot
    if b is None:
        return "<td>-</td>"
    times = ", ".join(f"{escape(name)} {at:.2f} s" for name, at in b.milestones)
    accel = f" ({escape(b.accel)})" if b.accel else ""
    return f"<td><strong>{escape(b.verdict)}</strong>{accel}<br><span class=\"note\">{times}</span></td>"


def _cache_cell(row: JobRow) -> str:
    if row.outcome == Outcome.CACHED:
        return "<td>already cached</td>"
    if row.facts.cache is None:
        return "<td>-</td>"
    pushed, had = row.facts.cache
    return f"<td>{pushed} pushed, {had} already cached</td>"


def _repro_cell(row: JobRow) -> str:
    if row.repro is None:
        return "<td class=\"note\">-</td>"
    status, night = row.repro
    return f"<td>{escape(status)}<br><span class=\"note\">{escape(night)}</span></td>"


def _links_cell(row: JobRow) -> str:
    links = []
    if row.build_url:
        links.append(f"<a href=\"{escape(row.build_url)}\">build</a>")
    links += [f"<a href=\"{escape(l.url)}\">{escape(l.label)}</a>" for l in row.logs]
    return f"<td>{' '.join(links) or '-'}</td>"


def job_table(rows: list[JobRow]) -> str:
    head = ("<tr><th>system</th><th>attribute</th><th>stage</th><th>result</th><th>reason</th>"
            "<th>passed</th><th>failed</th><th>ignored</th><th>tests</th><th>boot</th><th>cache</th>"
            "<th>reproducible (nightly)</th><th>links</th></tr>")
    body = []
    for r in rows:
        job = r.facts.job
        aliases = (f"<br><span class=\"note\">also {escape(', '.join(job.aliases))}</span>"
                   if job.aliases else "")
        body.append(f"<tr class=\"job {r.outcome.value}\" data-job=\"{escape(r.name)}\">"
                    f"<td>{escape(job.system)}</td><td><code>{escape(job.attr)}</code>{aliases}</td>"
                    f"<td>{escape(job.stage)}</td>{_outcome_cell(r.outcome)}"
                    f"<td class=\"reason\">{escape(r.reason)}</td>{_tests_cells(r)}{_boot_cell(r)}"
                    f"{_cache_cell(r)}{_repro_cell(r)}{_links_cell(r)}</tr>")
    return "<table class=\"jobs\">" + head + "\n" + "\n".join(body) + "</table>"


def commit_page(commit: Commit, pipeline: Pipeline, rows: list[JobRow], urls: Urls, repro_note: str = "") -> str:
    counts = ", ".join(f"{n} {o.value}" for o, n in outcome_counts(rows).items()) or "no jobs"
    others = [p for p in commit.pipelines if p.buildid != pipeline.buildid]
    other = ""
    if others:
        other = "<p>Other pipelines of this commit: " + ", ".join(
            f"<a href=\"{escape(urls.commit(commit, p))}\">#{p.number} ({escape(p.outcome.value)}, "
            f"{escape(_when(p.started_at))})</a>" for p in others) + "</p>"
    title = f"commit {commit.revision[:12]}" if commit.revision else f"pipeline #{pipeline.number}"
    body = (f"<h1>{'Commit ' + _rev(commit) if commit.revision else escape(title)} on "
            f"<code>{escape(pipeline.branch)}</code></h1>"
            f"<p>Pipeline <a href=\"{escape(urls.build(pipeline.builderid, pipeline.number))}\">#{pipeline.number}</a>"
            f" ({'forced' if pipeline.forced else 'pushed'}, {escape(_when(pipeline.started_at))}): "
            f"<strong>{escape(pipeline.outcome.value)}</strong>, {escape(reason_of(pipeline.state))}. Jobs: {escape(counts)}.</p>"
            f"{other}<p><a href=\"{escape(urls.branch(pipeline.branch))}\">all commits of "
            f"<code>{escape(pipeline.branch)}</code></a> · <a href=\"{escape(urls.trends(pipeline.branch))}\">"
            "trends</a></p>"
            + (f"<p class=\"note\">{escape(repro_note)}</p>" if repro_note else "")
            + job_table(rows))
    return page(title, body)


def _chart(title: str, xlabels: list[str], series: list[Series], unit: str = "", counts: bool = False) -> str:
    if not series:
        return f"<section><h2>{escape(title)}</h2><p class=\"note\">Nothing to draw in these commits.</p></section>"
    lines = [Line(s.label, s.values, s.changes()) for s in series]
    changed = sorted({xlabels[i][:SHORT_REV] or "tip" for line in lines for i in line.changes})
    note = (f"<figcaption>changed at {escape(', '.join(changed))} (ringed)</figcaption>" if changed
            else "<figcaption class=\"note\">no change in these commits</figcaption>")
    return (f"<section><h2>{escape(title)}</h2><figure class=\"trend\" data-title=\"{escape(title)}\">"
            f"{line_chart(title, xlabels, lines, unit, whole=counts)}{legend(lines)}{note}</figure></section>")


def trends_page(branch: str, t: Trends, urls: Urls) -> str:
    xlabels = [rev or "tip" for rev in t.commits]
    body = (f"<h1>Trends of <code>{escape(branch)}</code></h1>"
            f"<p>The last {len(t.commits)} commits, oldest on the left; a ring marks a commit where a value "
            f"changed. <a href=\"{escape(urls.branch(branch))}\">all commits</a></p>"
            + "<div class=\"charts\">"
            + _chart("Boot seconds (boot-complete) per image and VMM", xlabels, t.boot_seconds, " s")
            + _chart("Build seconds per attribute", xlabels, t.build_seconds, " s")
            + _chart("Tests passed per host tool", xlabels, t.tests_passed, counts=True)
            + _chart("Tests failed per host tool", xlabels, t.tests_failed, counts=True)
            + "</div>")
    return page(f"Trends of {branch}", body)
