"""Charts and badges drawn by the server as SVG: no script, nothing fetched from elsewhere.

Pure functions from numbers to SVG text, so the pages keep their strict Content Security
Policy and the drawings are tested as text. Every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Chart geometry, in SVG user units (pixels at 100 %): wide enough for 20 commits with a
# readable gap, tall enough for a handful of lines.
WIDTH, HEIGHT = 640, 220
# The right margin holds half of the last commit's label, centred under its point.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 40, 16, 40
# Ten colours that stay apart for the colour-blind (Okabe-Ito and Tol's bright), cycled.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000",
           "#ee6677", "#228833", "#aa3377")
# Steps of the value axis, at most: more would crowd a 164 px tall plot.
MAX_TICKS = 5
# Short revisions under the x axis, as git abbreviates them.
SHORT_REV = 8
# Rough width of a character of an 11 px sans-serif font, to size a badge's halves.
BADGE_CHAR_WIDTH = 7
BADGE_PADDING = 10
BADGE_HEIGHT = 20
BADGE_COLOURS = {"success": "#2e7d32", "warnings": "#ef6c00", "failure": "#c62828", "exception": "#6a1b9a",
                 "cancelled": "#616161", "skipped": "#616161", "running": "#1565c0", "unknown": "#9e9e9e"}


@dataclass(frozen=True)
class Line:
    label: str
    values: Sequence[float | None]  # one per x position; None: no point there
    changes: Sequence[int] = ()  # x positions where the value changed


def _ticks(top: float, whole: bool = False) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart; whole numbers for counts) from 0
    to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    base = 10 ** math.floor(math.log10(top))
    step = next(base * f for f in (0.1, 0.2, 0.5, 1, 2, 5)
                if math.ceil(round(top / (base * f), 9)) <= MAX_TICKS and (not whole or base * f >= 1))
    return [round(i * step, 9) for i in range(math.ceil(round(top / step, 9)) + 1)]


def _number(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def line_chart(title: str, xlabels: Sequence[str], lines: Sequence[Line], unit: str = "", whole: bool = False) -> str:
    """A line chart: one polyline per line, a dot per value, a ring around a changed value.

    Each dot and ring carries a <title> (the browser's tooltip) naming the line, the x label
    and the value; each changed value also a ``data-change`` attribute with its x label, so
    the change is found in the page as well as seen.
    """
    n = len(xlabels)
    values = [v for line in lines for v in line.values if v is not None]
    ticks = _ticks(max(values, default=0.0), whole)
    top = ticks[-1] or 1.0
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(i: int) -> float:
        return MARGIN_LEFT + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return MARGIN_TOP + plot_h * (1 - v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" '
             f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for t in ticks:
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="11">'
                     f"{escape(_number(t))}{escape(unit)}</text>")
    for i, label in enumerate(xlabels):
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="11" font-family="monospace">{escape(label[:SHORT_REV])}</text>')
    for k, line in enumerate(lines):
        colour = PALETTE[k % len(PALETTE)]
        points = [(i, v) for i, v in enumerate(line.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in points:
            tip = escape(f"{line.label} at {xlabels[i][:SHORT_REV]}: {_number(v)}{unit}")
            parts.append(f'<circle class="point" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">'
                         f"<title>{tip}</title></circle>")
            if i in line.changes:
                parts.append(f'<circle class="change" data-change="{escape(xlabels[i])}" cx="{x(i):.1f}" '
                             f'cy="{y(v):.1f}" r="8" fill="none" stroke="{colour}" stroke-width="2">'
                             f"<title>changed: {tip}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def legend(lines: Sequence[Line]) -> str:
    """The lines' colours and labels, as an HTML list beside the chart."""
    items = "".join(f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
                    f'fill="{PALETTE[k % len(PALETTE)]}"/></svg> {escape(line.label)}</li>'
                    for k, line in enumerate(lines))
    return f'<ul class="legend">{items}</ul>'


def badge(label: str, message: str, state: str) -> str:
    """A flat two-part badge ("label | message"), coloured by ``state`` (an outcome name)."""
    colour = BADGE_COLOURS.get(state, BADGE_COLOURS["unknown"])
    lw = len(label) * BADGE_CHAR_WIDTH + BADGE_PADDING
    mw = len(message) * BADGE_CHAR_WIDTH + BADGE_PADDING
    w = lw + mw
    text = f"{label}: {message}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{BADGE_HEIGHT}" role="img" '
            f'aria-label="{escape(text)}"><title>{escape(text)}</title>'
            f'<rect width="{lw}" height="{BADGE_HEIGHT}" fill="#555"/>'
            f'<rect x="{lw}" width="{mw}" height="{BADGE_HEIGHT}" fill="{colour}"/>'
            f'<g fill="#fff" text-anchor="middle" font-family="DejaVu Sans,Verdana,sans-serif" font-size="11">'
            f'<text x="{lw / 2:.1f}" y="14">{escape(label)}</text>'
            f'<text x="{lw + mw / 2:.1f}" y="14">{escape(message)}</text></g></svg>')
