"""Reading reproducibility reports back from the bucket, for the web UI's history page.

Reports are written by ``redox-ci repro --upload`` under ``reports/<night>/``; the
page reads every ``summary.json`` and serves report files through the master, so a
private bucket works as well as a public one.
"""

from __future__ import annotations

import json
import re

from ..config import CacheSettings
from . import s3
from .narinfo import join_key

REPORTS_PREFIX = "reports/"
# <date>-<rev>: what redox_ci.repro.report.key_prefix writes.
NIGHT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[A-Za-z0-9._-]{1,64}$")
# A report file's path inside a night: plain names, no "..", no leading "/".
REPORT_PATH_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def read_summaries(settings: CacheSettings, credentials: dict | None = None) -> list[dict]:
    """Every night's summary.json in the bucket; unreadable documents are left out."""
    client = s3.make_client(settings, credentials)
    base = join_key(settings.prefix, REPORTS_PREFIX)
    out = []
    for key in s3.list_keys(client, settings, base):
        if not key.endswith("/summary.json"):
            continue
        body = s3.read_object(client, settings, key)
        try:
            out.append(json.loads(body or b""))
        except ValueError:
            continue
    return out


def read_report_file(settings: CacheSettings, night: str, path: str,
                     credentials: dict | None = None) -> bytes | None:
    """One file of one night's report, or None when it is not there or the name is not one."""
    if not NIGHT_RE.match(night) or not REPORT_PATH_RE.match(path):
        return None
    client = s3.make_client(settings, credentials)
    return s3.read_object(client, settings, join_key(settings.prefix, f"{REPORTS_PREFIX}{night}/{path}"))
