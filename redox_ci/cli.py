"""The ``redox-ci`` command: thin faces over the worker-half modules.

Each verb returns its result (``outcome.py``) and this module prints it: a summary
for a person, or with ``--json`` one JSON document on stdout. Exit codes: 0 ok, 1 the checked thing failed, 2 usage or configuration
error. Errors are sentences on stderr, never tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .errors import RedoxCIError
from .extras import require
from .outcome import Outcome

# Modules that add their verbs through ``register(subparsers)``, in the order ``--help``
# lists them. A verb's handler returns an Outcome for this module to print, or an exit
# code when it has no result (``local``).
VERB_MODULES = ("plan_cli", "cache.cli", "boot.cli", "repro.cli", "local")
# The module of each verb: a command line that names its verb imports only that module
# (a job's `redox-ci build` runs once per job; `local` alone pulls in half the package).
VERB_MODULE = {"plan": "plan_cli", "build": "plan_cli", "cache": "cache.cli", "boot": "boot.cli",
               "repro": "repro.cli", "repro-history": "repro.cli", "local": "local"}
# Options before the verb that take a value.
GLOBAL_VALUE_OPTIONS = ("--json-out",)
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


def named_verb(argv: list[str]) -> str | None:
    """The verb ``argv`` names, or None (no verb yet, ``--help``, an unknown word)."""
    args = iter(argv)
    for arg in args:
        if arg in GLOBAL_VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in VERB_MODULE else None
    return None


def verb_modules(argv: list[str]) -> tuple[str, ...]:
    """The modules to register: the named verb's alone, else every one (for help and errors)."""
    verb = named_verb(argv)
    return (VERB_MODULE[verb],) if verb else VERB_MODULES


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv`` (only its verb's module imported); every verb without ``argv``."""
    parser = argparse.ArgumentParser(prog="redox-ci", description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", metavar="FILE",
                        help="also write the result as JSON to FILE (stdout gets the summary)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERB_MODULES if argv is None else verb_modules(argv):
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
