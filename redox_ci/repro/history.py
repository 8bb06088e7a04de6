"""Night by night: which attribute became unreproducible, and on which commit.

The input is the list of ``summary.json`` documents the nightly runs left in the
bucket (``reports/*/summary.json``); the output is a grid (attribute x night) and
the events that matter the next morning: the first night an attribute was not
reproducible after a night it was, with the commits on both sides, so the culprit
lies between two revisions. A night where the attribute failed to build, or was not
compared, says nothing about reproducibility and is skipped when looking for the
previous verdict. Everything here is pure: data in, data or HTML out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

from ..errors import UsageError
from .compare import STATUS_BUILD_FAILED, STATUS_REPRODUCIBLE, STATUS_UNREPRODUCIBLE
from .report import SUMMARY_HTML, SUMMARY_JSON, VERDICT_LABELS, page, run_name, scoped_style

BECAME_UNREPRODUCIBLE = "became-unreproducible"
BECAME_REPRODUCIBLE = "became-reproducible"
# Nights shown in the grid: a month fits on one screen; older nights stay in the bucket.
MAX_NIGHTS_SHOWN = 31
CELL_MARKS = {STATUS_REPRODUCIBLE: "ok", STATUS_UNREPRODUCIBLE: "DIFF", STATUS_BUILD_FAILED: "fail"}
SCOPE = ".redox-ci-repro-history"


@dataclass(frozen=True)
class Night:
    name: str  # <date>-<rev>, the report directory in the bucket
    date: str
    rev: str
    started_at: str
    statuses: dict[str, str]  # attr -> status


@dataclass(frozen=True)
class Event:
    attr: str
    kind: str  # BECAME_UNREPRODUCIBLE | BECAME_REPRODUCIBLE
    night: str  # the first night with the new verdict
    date: str
    rev: str
    previous_night: str  # the last night with the old verdict
    previous_date: str
    previous_rev: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class History:
    nights: list[Night] = field(default_factory=list)  # oldest first
    attrs: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # newest first
    skipped: int = 0  # documents that were not run summaries

    def currently_unreproducible(self) -> list[str]:
        """Attributes whose latest verdict is 'not reproducible'."""
        latest = {}
        for night in self.nights:
            for attr, status in night.statuses.items():
                if status in (STATUS_REPRODUCIBLE, STATUS_UNREPRODUCIBLE):
                    latest[attr] = status
        return sorted(a for a, s in latest.items() if s == STATUS_UNREPRODUCIBLE)

    def to_json(self) -> dict:
        return {"nights": [asdict(n) for n in self.nights], "attrs": self.attrs,
                "events": [e.to_json() for e in self.events],
                "unreproducible": self.currently_unreproducible(), "skipped": self.skipped}


def night_of(summary: dict) -> Night | None:
    """The night a summary describes, or None when it is not a run summary."""
    try:
        return Night(name=run_name(summary["date"], summary["rev"]), date=summary["date"],
                     rev=summary["rev"], started_at=str(summary.get("started_at", "")),
                     statuses={r["attr"]: r["status"] for r in summary["results"]})
    except (KeyError, TypeError, UsageError):
        return None


def build_history(summaries: Iterable[dict]) -> History:
    """The history of the given nightly summaries, in any order.

    A document that is not a run summary (a stray or truncated object in the
    bucket) is counted in ``skipped`` instead of breaking the page.
    """
    parsed = [night_of(s) for s in summaries]
    nights = sorted((n for n in parsed if n), key=lambda n: (n.date, n.started_at, n.name))
    attrs = sorted({a for n in nights for a in n.statuses})
    events = []
    for attr in attrs:
        last: Night | None = None  # the last night with a verdict on attr
        for night in nights:
            status = night.statuses.get(attr)
            if status not in (STATUS_REPRODUCIBLE, STATUS_UNREPRODUCIBLE):
                continue
            if last is not None and last.statuses[attr] != status:
                kind = BECAME_UNREPRODUCIBLE if status == STATUS_UNREPRODUCIBLE else BECAME_REPRODUCIBLE
                events.append(Event(attr, kind, night.name, night.date, night.rev,
                                    last.name, last.date, last.rev))
            last = night
    order = {n.name: i for i, n in enumerate(nights)}
    events.sort(key=lambda e: (order[e.night], e.attr), reverse=True)
    return History(nights, attrs, events, skipped=sum(n is None for n in parsed))


def read_summaries(reports_dir: str | Path) -> list:
    """The ``<night>/summary.json`` documents below a local copy of ``reports/``.

    An unreadable or non-JSON file is passed on as None, which ``build_history``
    counts as skipped, so one bad night does not hide the others.
    """
    found = []
    for path in sorted(Path(reports_dir).glob(f"*/{SUMMARY_JSON}")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            found.append(None)
    return found


def default_href(night_name: str) -> str:
    """Link from a page beside the report directories (``reports/``) to a night's page."""
    return f"{night_name}/{SUMMARY_HTML}"


def _event_item(e: Event, href: Callable[[str], str]) -> str:
    verb = "became NOT reproducible" if e.kind == BECAME_UNREPRODUCIBLE else "became reproducible again"
    return (f"<li class=\"{'unreproducible' if e.kind == BECAME_UNREPRODUCIBLE else 'reproducible'}\">"
            f"<code>{escape(e.attr)}</code> {verb} on <a href=\"{escape(href(e.night))}\">{escape(e.date)}</a>"
            f" at commit <code>{escape(e.rev)}</code>; it was "
            f"{'reproducible' if e.kind == BECAME_UNREPRODUCIBLE else 'not reproducible'} on "
            f"<a href=\"{escape(href(e.previous_night))}\">{escape(e.previous_date)}</a> at commit "
            f"<code>{escape(e.previous_rev)}</code>: the change lies between the two.</li>")


def render_history_html(history: History, href: Callable[[str], str] = default_href,
                        full_page: bool = False, max_nights: int = MAX_NIGHTS_SHOWN) -> str:
    """The history as an HTML fragment (or a whole page): events, then the grid.

    ``href`` maps a night's name (``<date>-<rev>``) to the link of its report page.
    """
    nights = history.nights[-max_nights:][::-1]  # newest first
    if not nights:
        body = "<p class=\"note\">No nightly reproducibility report yet.</p>"
    else:
        events = "".join(_event_item(e, href) for e in history.events) or \
            "<li class=\"note\">No attribute changed verdict in these nights.</li>"
        head = "".join(f"<th><a href=\"{escape(href(n.name))}\">{escape(n.date)}</a><br>"
                       f"<code>{escape(n.rev)}</code></th>" for n in nights)
        rows = []
        for attr in history.attrs:
            cells = []
            for n in nights:
                status = n.statuses.get(attr)
                label = VERDICT_LABELS.get(status, "not compared") if status else "not compared"
                cells.append(f"<td class=\"{escape(status or 'missing')}\" title=\"{escape(label)}\">"
                             f"{escape(CELL_MARKS.get(status, '-'))}</td>")
            rows.append(f"<tr><th><code>{escape(attr)}</code></th>{''.join(cells)}</tr>")
        body = (f"<h2>Changes</h2>\n<ul>{events}</ul>\n<h2>Night by night</h2>\n"
                f"<table><tr><th>attribute</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>")
    fragment = f"<div class=\"{SCOPE[1:]}\">{scoped_style(SCOPE)}\n<h1>Reproducibility history</h1>\n{body}\n</div>"
    return page("Reproducibility history", fragment) if full_page else fragment
