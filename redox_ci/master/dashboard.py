"""The "Reproducibility" page of the web UI: the nightly history, read from the bucket.

A Buildbot WSGI dashboard (Flask): the page lists, night by night, which attribute
became unreproducible and on which commit, and links to each night's report, served
through the master so that the bucket can stay private.
"""

from __future__ import annotations

import html
import mimetypes

from flask import Flask, Response, abort

from ..cache.reports import read_report_file, read_summaries
from ..config import CacheSettings
from ..errors import RedoxCIError
from ..repro.history import build_history, render_history_html

DASHBOARD_NAME = "reproducibility"


def report_url(www_url: str, night: str) -> str:
    return f"{www_url}plugins/wsgi_dashboards/{DASHBOARD_NAME}/report/{night}/index.html"


def make_app(cache: CacheSettings, www_url: str, credentials: dict | None = None) -> Flask:
    app = Flask("redox_ci_reproducibility")

    @app.route("/index.html")
    def index():
        if not cache.enabled:
            return "<p>The binary cache is not configured ([cache] in settings), so no nightly reports are kept.</p>"
        try:
            history = build_history(read_summaries(cache, credentials))
        except RedoxCIError as e:
            return f"<p>Cannot read the nightly reports: {html.escape(str(e))}</p>"
        return render_history_html(history, href=lambda night: report_url(www_url, night), full_page=False)

    @app.route("/report/<night>/<path:path>")
    def report(night: str, path: str):
        if not cache.enabled:
            abort(404)
        try:
            body = read_report_file(cache, night, path, credentials)
        except RedoxCIError:
            abort(502)
        if body is None:
            abort(404)
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        # Reports are diffoscope output of untrusted builds: never let them run scripts here.
        return Response(body, mimetype=mime, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                                                      "X-Content-Type-Options": "nosniff"})

    return app


def dashboard_plugin(cache: CacheSettings, www_url: str, credentials: dict | None = None) -> dict:
    return {"wsgi_dashboards": [{"name": DASHBOARD_NAME, "caption": "Reproducibility",
                                 "app": make_app(cache, www_url, credentials), "order": 20, "icon": "FaBalanceScale"}]}
