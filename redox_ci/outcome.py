"""What a verb of the ``redox-ci`` command hands back: its result as data, and how to say it.

Verbs do not print their result; the CLI does, one way for every verb: the data as one
JSON document on stdout with ``--json``, the data in FILE and the text on stdout with
``--json-out FILE`` (Buildbot steps read the file: a worker may cut a long stdout line
into chunks), else the text alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    data: Any  # JSON-ready: dicts, lists, strings, numbers, booleans, None
    text: Callable[[Any], str]  # the summary for a person, from ``data``
    exit_code: int = 0
