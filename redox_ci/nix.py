"""Running Nix: the environment every call needs and errors a person can read.

Command lines are built by the modules that own them (``flake``, ``build``,
``cache``, ``repro``); this module only runs them and shortens Nix's errors.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence

from .errors import NixError, RedoxCIError

FLAKE_FEATURES = "experimental-features = nix-command flakes"
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# Enough of an evaluation error to see the cause and the position, short enough for a
# step summary or a terminal.
ERROR_TAIL_LINES = 12


def nix_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with flakes enabled, keeping any NIX_CONFIG the caller set."""
    env = dict(os.environ if base is None else base)
    config = env.get("NIX_CONFIG", "")
    if "experimental-features" not in config:
        env["NIX_CONFIG"] = (config + "\n" + FLAKE_FEATURES).strip()
    return env


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def shorten_error(stderr: str, max_lines: int = ERROR_TAIL_LINES) -> str:
    """The useful part of a Nix error: from the first 'error:' on, trace noise dropped."""
    lines = [line.rstrip() for line in strip_ansi(stderr).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("error:"):
            lines = lines[i:]
            break
    lines = [line for line in lines if "(use '--show-trace'" not in line]
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [f"... ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines) or "(no output)"


def run(argv: Sequence[str], *, what: str, error: type[RedoxCIError] = NixError,
        input: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a Nix command, returning its output or raising ``error`` with a short message."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=nix_env(),
                              input=input, timeout=timeout)
    except FileNotFoundError:
        raise error(f"{what}: {argv[0]} not found; install Nix (Debian: apt-get install nix-bin)") from None
    except subprocess.TimeoutExpired:
        raise error(f"{what}: timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise error(f"{what} failed:\n{shorten_error(proc.stderr)}")
    return proc
