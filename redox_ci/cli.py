"""The ``redox-ci`` command: thin faces over the worker-half modules.

Each verb prints a summary for a person, or with ``--json`` one JSON document on
stdout. Exit codes: 0 ok, 1 the checked thing failed, 2 usage or configuration
error. Errors are sentences on stderr, never tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable

from .errors import RedoxCIError

# Packages that add their own verbs through a ``register(subparsers)`` function.
VERB_MODULES = (
    "redox_ci.plan_cli",
    "redox_ci.cache.cli",
    "redox_ci.boot.cli",
    "redox_ci.repro.cli",
    "redox_ci.local",
)


# Set by --json-out: the result is also written there as JSON. Buildbot steps use it,
# since a worker may cut a long stdout line into chunks.
_json_out: str | None = None


def emit(result: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON (dataclasses already turned to dicts) or as text."""
    if _json_out:
        with open(_json_out, "w") as f:
            json.dump(result, f)
        as_json = False
    if as_json:
        json.dump(result, sys.stdout, indent=None, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human(result).rstrip("\n") + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redox-ci", description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write the result as JSON to FILE (stdout gets the summary)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    global _json_out
    _json_out = args.json_out
    if _json_out:
        try:
            os.unlink(_json_out)
        except FileNotFoundError:
            pass
    try:
        return int(args.func(args) or 0)
    except RedoxCIError as e:
        print(f"redox-ci {args.verb}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"redox-ci {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the imported module, not this __main__ copy, so that verbs and main
    # share one module state (--json-out).
    from redox_ci.cli import main as _main
    sys.exit(_main())
