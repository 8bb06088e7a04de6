"""What ``redox-ci local`` prints when its first build ends: every job's result counted,
the jobs that did not succeed with their reason, and each VM test image's tests one by
one (name, verdict, a failure's reason), so the terminal of ``./run.sh`` shows what the
pipeline did without opening the web UI.

Read from the master's REST API (anonymous users read) by a thread that waits for the
first build's buildset to complete; formatting is pure, apart from the reading.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

# The REST API's result codes, as Buildbot numbers them.
RESULT_NAMES = {0: "success", 1: "warnings", 2: "failure", 3: "skipped", 4: "exception", 5: "retry",
                6: "cancelled"}
SUCCESS = 0
# Seconds between looks at the first build: it takes minutes; a look is one small request.
POLL_SECONDS = 5.0
HTTP_TIMEOUT = 30


# The word Buildbot puts before a finished build's summary (and the report builder's
# "skipped:"): the report names the result itself, so it is not said twice.
STATE_WORDS = ("failed ", "warnings ", "skipped: ", "exception ", "cancelled ", "retry ")


def result_name(code: int | None) -> str:
    return RESULT_NAMES.get(code, "unfinished") if code is not None else "unfinished"


def summary_of(state_string: str) -> str:
    """A build's ``state_string`` without Buildbot's leading result word."""
    for word in STATE_WORDS:
        if state_string.startswith(word):
            return state_string[len(word):]
    return state_string


def tests_of(props: dict) -> dict | None:
    """A boot job's FUNC_TEST / NET_TEST results (its ``boot_result``), if it is a test image's."""
    boot = props.get("boot_result")
    value = boot[0] if isinstance(boot, (list, tuple)) else boot
    return value.get("tests") if isinstance(value, dict) else None


def report_lines(plan_build: dict, jobs: dict[str, dict]) -> list[str]:
    """``jobs``: the triggered builds by job name, each with its ``properties`` (REST form)."""
    counts = Counter(result_name(b.get("results")) for b in jobs.values())
    lines = [f"first build finished: {result_name(plan_build.get('results'))}: {len(jobs)} jobs, "
             + ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))]
    for name in sorted(jobs):
        b = jobs[name]
        tests = tests_of(b.get("properties", {}))
        if b.get("results") != SUCCESS or tests:
            lines.append(f"  {name}: {result_name(b.get('results'))}: {summary_of(b.get('state_string', ''))}")
        if tests:
            lines.append(f"    {tests['prefix']}: {tests['passed']} passed, {tests['failed']} failed, "
                         f"{tests['skipped']} skipped" + ("" if tests["complete"] else ", not complete"))
            lines += [f"    {t['status']:8} {t['name']}" + (f": {t['reason']}" if t["reason"] else "")
                      for t in tests["results"]]
    return lines


class RestReader:
    """The few REST reads the report needs."""

    def __init__(self, url: str):
        self.api = url.rstrip("/") + "/api/v2/"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.api + path, timeout=HTTP_TIMEOUT) as r:
            return json.load(r)

    def builds_of(self, buildsetid: int, properties: bool = False) -> list[dict]:
        out = []
        for br in self.get(f"buildrequests?buildsetid={buildsetid}")["buildrequests"]:
            out += self.get(f"builds?buildrequestid={br['buildrequestid']}"
                            + ("&property=*" if properties else ""))["builds"]
        return out

    def first_build(self, buildsetid: int) -> tuple[dict, dict[str, dict]] | None:
        """The plan build and its jobs by name once the buildset is complete, else None."""
        if not self.get(f"buildsets/{buildsetid}")["buildsets"][0]["complete"]:
            return None
        plan = self.builds_of(buildsetid)[-1]
        jobs = {}
        for bs in self.get(f"buildsets?parent_buildid={plan['buildid']}")["buildsets"]:
            for b in self.builds_of(bs["bsid"], properties=True):
                jobs[b["properties"].get("virtual_builder_name", [str(b["buildid"])])[0]] = b
        return plan, jobs


def watch(url: str, buildsetid: int, out: Callable[[str], None] | None = None,
          poll: float = POLL_SECONDS) -> threading.Thread:
    """Print the report when the first build ends (a daemon thread: it dies with the run)."""
    def say(text: str) -> None:
        print(text, flush=True) if out is None else out(text)

    def run() -> None:
        reader = RestReader(url)
        while True:
            try:
                done = reader.first_build(buildsetid)
            except (OSError, ValueError, KeyError, IndexError) as e:
                print(f"redox-ci local: cannot read the first build's result ({e}); see the web UI",
                      file=sys.stderr)
                return
            if done is not None:
                say("\n".join(report_lines(*done)))
                return
            time.sleep(poll)
    thread = threading.Thread(target=run, name="first-build-report", daemon=True)
    thread.start()
    return thread
