"""Whether this host builds another system by emulation, and why not when it does not.

An x86_64 host builds aarch64-linux derivations when two things hold: its Nix lists the
system in ``extra-platforms`` (``nix config show extra-platforms``), and the kernel runs
aarch64 programs through qemu-user (a ``binfmt_misc`` entry, enabled, with the ``F``
flag so that the interpreter is loaded once and reachable from inside Nix's sandbox;
Debian's ``qemu-user-static`` registers it so). Such a worker lists the system in its
``emulated_systems``: it builds the system's jobs, more slowly than a native worker.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from . import nix

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
# Nix system -> the machine name qemu-user's binfmt entries use (qemu-<machine>).
QEMU_MACHINE = {"aarch64-linux": "aarch64", "x86_64-linux": "x86_64", "riscv64-linux": "riscv64",
                "i686-linux": "i386", "armv7l-linux": "arm", "powerpc64le-linux": "ppc64le"}


@dataclass(frozen=True)
class Emulation:
    system: str
    ok: bool
    reason: str


def host_system() -> str:
    """This host's own Nix system, e.g. ``x86_64-linux``."""
    return f"{platform.machine()}-{platform.system().lower()}"


def binfmt_problem(system: str, binfmt: Path = BINFMT_MISC) -> str | None:
    """Why the kernel cannot run ``system``'s programs through qemu-user, or None."""
    machine = QEMU_MACHINE.get(system)
    if machine is None:
        return f"redox-ci does not know qemu-user's name for {system}"
    entry = binfmt / f"qemu-{machine}"
    install = "Debian: apt-get install qemu-user-static (binfmt-support registers it)"
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return f"no binfmt_misc entry {entry} for qemu-user ({install})"
    if not lines or lines[0].strip() != "enabled":
        return f"{entry} is disabled (echo 1 > {entry})"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"{entry} lacks the F flag (flags: {flags or 'none'}): Nix's sandbox cannot reach the "
                f"interpreter; use a statically linked qemu-user registered with F ({install})")
    return None


def probe(system: str, extra_platforms: list[str] | None = None, binfmt: Path = BINFMT_MISC,
          host: str | None = None) -> Emulation:
    """Whether this host builds ``system`` by emulation, with the reason either way."""
    host = host or host_system()
    if system == host:
        return Emulation(system, False, f"{system} is this host's own system: built natively, not emulated")
    platforms = nix.extra_platforms() if extra_platforms is None else extra_platforms
    if system not in platforms:
        return Emulation(system, False, f"this host's Nix does not list {system} in extra-platforms "
                                        f"(nix config show extra-platforms: {' '.join(platforms) or 'none'}); "
                                        f"add 'extra-platforms = {system}' to nix.conf")
    problem = binfmt_problem(system, binfmt)
    if problem:
        return Emulation(system, False, problem)
    return Emulation(system, True, f"{system} by emulation: qemu-user through binfmt_misc, "
                                   f"and extra-platforms lists it")


def emulated_systems(systems: list[str], **kwargs) -> tuple[list[str], dict[str, str]]:
    """Of ``systems`` other than the host's: those it emulates, and why not for the others."""
    host = kwargs.pop("host", None) or host_system()
    found = [probe(s, host=host, **kwargs) for s in systems if s != host]
    return [e.system for e in found if e.ok], {e.system: e.reason for e in found if not e.ok}
