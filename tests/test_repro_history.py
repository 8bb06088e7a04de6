"""The night-by-night history: pure functions over summary documents."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from redox_ci.repro.history import (BECAME_REPRODUCIBLE, BECAME_UNREPRODUCIBLE, build_history, read_summaries,
                                    render_history_html)

pytestmark = pytest.mark.unit


def summary(date: str, rev: str, started: str = "03:00", **statuses: str) -> dict:
    return {"date": date, "rev": rev, "started_at": f"{date}T{started}:00+00:00",
            "results": [{"attr": a, "status": s} for a, s in statuses.items()]}


NIGHTS = [
    # Deliberately out of order: the bucket lists keys in any order.
    summary("2026-11-03", "ccc", kernel="unreproducible", ion="reproducible"),
    summary("2026-11-01", "aaa", kernel="reproducible", ion="reproducible"),
    summary("2026-11-02", "bbb", kernel="reproducible", ion="build-failed"),
    summary("2026-11-04", "ddd", kernel="unreproducible", ion="unreproducible"),
    summary("2026-11-05", "eee", kernel="reproducible"),
]


def test_first_unreproducible_night_after_a_reproducible_one():
    history = build_history(NIGHTS)
    assert [n.rev for n in history.nights] == ["aaa", "bbb", "ccc", "ddd", "eee"]
    assert history.attrs == ["ion", "kernel"]
    events = [(e.attr, e.kind, e.rev, e.previous_rev) for e in history.events]
    assert events == [
        ("kernel", BECAME_REPRODUCIBLE, "eee", "ddd"),
        ("ion", BECAME_UNREPRODUCIBLE, "ddd", "ccc"),
        ("kernel", BECAME_UNREPRODUCIBLE, "ccc", "bbb"),
    ]


def test_build_failures_and_absent_nights_do_not_hide_the_last_verdict():
    history = build_history([
        summary("2026-11-01", "aaa", relibc="reproducible"),
        summary("2026-11-02", "bbb", relibc="build-failed"),
        summary("2026-11-03", "ccc"),
        summary("2026-11-04", "ddd", relibc="unreproducible"),
    ])
    [event] = history.events
    assert (event.night, event.previous_night) == ("2026-11-04-ddd", "2026-11-01-aaa")
    assert history.currently_unreproducible() == ["relibc"]


def test_unreproducible_from_the_start_is_no_event():
    history = build_history([summary("2026-11-01", "aaa", base="unreproducible"),
                             summary("2026-11-02", "bbb", base="unreproducible")])
    assert history.events == []
    assert history.currently_unreproducible() == ["base"]


def test_two_runs_on_one_date_are_ordered_by_start_time():
    history = build_history([summary("2026-11-01", "late", "15:00", base="unreproducible"),
                             summary("2026-11-01", "early", "03:00", base="reproducible")])
    [event] = history.events
    assert (event.previous_rev, event.rev) == ("early", "late")


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        self.text.append(data)


def test_html_links_each_night_and_names_the_commits():
    html = render_history_html(build_history(NIGHTS), href=lambda name: f"/reports/{name}/index.html")
    parsed = _Collect()
    parsed.feed(html)
    text = " ".join(parsed.text)
    assert "/reports/2026-11-03-ccc/index.html" in parsed.links
    assert "/reports/2026-11-02-bbb/index.html" in parsed.links
    assert "became NOT reproducible" in text and "ccc" in text and "bbb" in text
    assert html.startswith("<div") and "<style>" in html and "<html" not in html


def test_html_escapes_and_full_page():
    history = build_history([summary("2026-11-01", "aaa", **{"<script>": "reproducible"})])
    html = render_history_html(history, full_page=True)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    # The default links are relative, from reports/ to each night's directory.
    assert 'href="2026-11-01-aaa/index.html"' in html


def test_empty_history_says_so():
    assert "No nightly reproducibility report yet" in render_history_html(build_history([]))


def test_to_json_round_trip_fields():
    data = build_history(NIGHTS).to_json()
    assert data["unreproducible"] == ["ion"]
    assert data["events"][0]["kind"] == BECAME_REPRODUCIBLE
    assert [n["name"] for n in data["nights"]][0] == "2026-11-01-aaa"


def test_documents_that_are_not_summaries_are_skipped():
    history = build_history([summary("2026-11-01", "aaa", base="reproducible"), {"hello": 1},
                             {"date": "yesterday", "rev": "x", "results": []}, {"date": "2026-11-02"}])
    assert [n.rev for n in history.nights] == ["aaa"] and history.skipped == 3


def test_read_summaries_passes_bad_files_on_as_skipped(tmp_path):
    import json

    good = tmp_path / "2026-11-01-aaa"
    good.mkdir()
    (good / "summary.json").write_text(json.dumps(summary("2026-11-01", "aaa", base="reproducible")))
    bad = tmp_path / "2026-11-02-bbb"
    bad.mkdir()
    (bad / "summary.json").write_text('{"date": "2026-11-02", "rev"')  # cut short by a failed upload
    (tmp_path / "index.html").write_text("not a night")
    history = build_history(read_summaries(tmp_path))
    assert [n.rev for n in history.nights] == ["aaa"] and history.skipped == 1
