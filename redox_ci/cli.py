"""The ``redox-ci`` command: thin faces over the worker-half modules.

Each verb returns its result (``outcome.py``) and this module prints it: a summary
for a person, or with ``--json`` one JSON document on stdout. Exit codes: 0 ok, 1 the checked thing failed, 2 usage or configuration
error. Errors are sentences on stderr, never tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import local, plan_cli
from .boot import cli as boot_cli
from .cache import cli as cache_cli
from .errors import RedoxCIError
from .extras import require
from .outcome import Outcome
from .repro import cli as repro_cli

# Modules that add their verbs through ``register(subparsers)``. A verb's handler returns an
# Outcome for this module to print, or an exit code when it has no result (``local``).
VERB_MODULES = (plan_cli, cache_cli, boot_cli, repro_cli, local)
# Verbs that need an optional part of redox-ci (see extras.py).
VERB_EXTRAS = {"local": "local"}


def write(outcome: Outcome, as_json: bool, json_out: str | None) -> None:
    """Print ``outcome`` as JSON or as text; with ``json_out`` the JSON goes to that file."""
    if json_out:
        with open(json_out, "w") as f:
            json.dump(outcome.data, f)
        as_json = False
    if as_json:
        json.dump(outcome.data, sys.stdout, indent=None, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(outcome.text(outcome.data).rstrip("\n") + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redox-ci", description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write the result as JSON to FILE (stdout gets the summary)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json_out:
        try:
            os.unlink(args.json_out)
        except FileNotFoundError:
            pass
    try:
        if args.verb in VERB_EXTRAS:
            require(VERB_EXTRAS[args.verb], "this verb")
        outcome = args.func(args)
    except RedoxCIError as e:
        print(f"redox-ci {args.verb}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"redox-ci {args.verb}: interrupted", file=sys.stderr)
        return 130
    if isinstance(outcome, Outcome):
        write(outcome, getattr(args, "json", False), args.json_out)
        return outcome.exit_code
    return int(outcome or 0)


if __name__ == "__main__":
    sys.exit(main())
