"""Fixture flakes: copies of the Redox flake's layout in a real git repository.

Nix only builds a flake from committed files, so the bundled fixture is copied into
a fresh repository and committed. The main job and the tests use this; it is not
part of what a production worker runs.

The fixtures build inside Nix's sandbox, where no host path exists: every derivation
runs a static busybox that the generated repository carries as ``tools/busybox``
(busybox picks its applet from its file name, so the file must keep that name). The
Redox fixture's aarch64-linux outputs run an aarch64 one, ``tools-aarch64/busybox``:
Debian's ``busybox-static`` for arm64, fetched once with ``apt-get download`` through a
private apt tree for that architecture (the system's sources, its own lists, cache and
state: the system's dpkg architectures stay as they are) into a cache directory. The
boot stub, a UEFI program, needs clang and lld, which the sandbox lacks: it is built
here on the host and committed into the generated repository as ``bootstub/BOOTX64.EFI``,
and in its functional-test scenario (the FUNC_TEST protocol) as
``bootstub/BOOTX64-functional-test.EFI`` for the fixture's test image.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from .errors import RedoxCIError

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
REDOX_FIXTURE = FIXTURES_DIR / "redox-flake"
REPRO_FIXTURE = FIXTURES_DIR / "repro-flake"
GIT_IDENTITY = ["-c", "user.name=redox-ci fixture", "-c", "user.email=fixture@redox-ci.invalid"]
# Debian's busybox-static; the plain `busybox` package installs a dynamically linked one
# at the same path, which cannot start in the sandbox (no loader, no libc there).
BUSYBOX = Path("/bin/busybox")
BUSYBOX_PACKAGE = "busybox-static"
# Where a generated repository keeps it; the fixture flakes say `${./tools}/busybox`.
TOOLS_DIR = "tools"
# The aarch64 one, for a fixture that has aarch64-linux outputs (`${./tools-aarch64}/busybox`).
TOOLS_AARCH64_DIR = "tools-aarch64"
# ELF e_machine of aarch64.
EM_AARCH64 = 183
# A fixture with this directory boots: its built stub goes in beside the source.
BOOTSTUB_DIR = "bootstub"
BOOTSTUB_EFI = {"x86_64": "BOOTX64.EFI", "aarch64": "BOOTAA64.EFI"}
# The scenarios a generated repository carries, by file name (build.sh knows them all).
BOOTSTUB_SCENARIOS = {"pass": "BOOTX64.EFI", "functional-test": "BOOTX64-functional-test.EFI"}
# ELF program header type of the dynamic loader's name: a static binary has none.
PT_INTERP = 3


class FixtureError(RedoxCIError):
    """A fixture repository cannot be made on this host (a tool is missing)."""


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, check=True,
                          capture_output=True, text=True)
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit every file in ``repo``; return the new revision."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_fixture_repo(dest: Path, source: Path = REDOX_FIXTURE, branch: str = "main") -> str:
    """Copy ``source`` into a new git repository at ``dest``; return the first revision.

    The repository gets busybox, and the built boot stubs if ``source`` has one.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, dirs_exist_ok=True)
    install_busybox(dest)
    if "tools-aarch64" in (source / "flake.nix").read_text():
        install_aarch64_busybox(dest)
    if (source / BOOTSTUB_DIR).is_dir():
        for scenario, name in BOOTSTUB_SCENARIOS.items():
            (dest / BOOTSTUB_DIR / name).write_bytes(bootstub(scenario=scenario, source=source / BOOTSTUB_DIR))
    git(dest, "init", "-q", "-b", branch)
    return commit_all(dest, "fixture flake")


def install_busybox(dest: Path) -> Path:
    """Copy the host's static busybox to ``dest/tools/busybox`` (kept if already there)."""
    target = dest / TOOLS_DIR / "busybox"
    if not target.exists():
        check_static_busybox(BUSYBOX)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUSYBOX, target)
        target.chmod(0o755)
    return target


def install_aarch64_busybox(dest: Path) -> Path:
    """Copy the aarch64 static busybox to ``dest/tools-aarch64/busybox`` (kept if already there)."""
    target = dest / TOOLS_AARCH64_DIR / "busybox"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(aarch64_busybox(), target)
        target.chmod(0o755)
    return target


def check_static_busybox(path: Path) -> None:
    """Refuse a missing or dynamically linked busybox with what to install."""
    install = f"install Debian's {BUSYBOX_PACKAGE} (apt-get install {BUSYBOX_PACKAGE})"
    if not path.is_file():
        raise FixtureError(f"{path} is missing: the fixture flakes build with a static busybox; {install}")
    if _has_interpreter(path.read_bytes()):
        raise FixtureError(f"{path} is dynamically linked and cannot run in Nix's sandbox; {install}")


def cache_dir() -> Path:
    """Where downloads are kept between runs: $XDG_CACHE_HOME/redox-ci or ~/.cache/redox-ci."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redox-ci"


def apt_download_argv(tree: Path, verb: str, *args: str) -> list[str]:
    """``apt-get`` with a private tree for arm64: the system's sources, its own package
    lists, archives and (empty) dpkg status, no lock, so no system file changes."""
    return ["apt-get", "-q", "-o", f"Dir::State::Lists={tree / 'lists'}", "-o", f"Dir::Cache={tree}",
            "-o", f"Dir::Cache::Archives={tree / 'archives'}", "-o", f"Dir::State::status={tree / 'status'}",
            "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root", verb, *args]


def aarch64_busybox(cache: Path | None = None) -> Path:
    """Debian's static busybox for arm64, downloaded once into the cache directory."""
    base = (cache or cache_dir()) / "busybox-static-arm64"
    binary = base / "busybox"
    if binary.is_file():
        return binary
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise FixtureError(f"{tool} not found: the fixture's aarch64 busybox is Debian's "
                               f"{BUSYBOX_PACKAGE}:arm64, fetched with apt-get download")
    tree = base / "apt"
    for d in (tree / "lists" / "partial", tree / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (tree / "status").touch()
    for verb, args in (("update", ()), ("download", (f"{BUSYBOX_PACKAGE}:arm64",))):
        proc = subprocess.run(apt_download_argv(tree, verb, *args), cwd=tree, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FixtureError(f"cannot fetch {BUSYBOX_PACKAGE}:arm64 for the fixture's aarch64-linux outputs "
                               f"(apt-get {verb} failed):\n{proc.stderr.strip()[-1000:]}")
    debs = sorted(tree.glob(f"{BUSYBOX_PACKAGE}_*_arm64.deb"))
    if not debs:
        raise FixtureError(f"apt-get download left no {BUSYBOX_PACKAGE} arm64 package in {tree}")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), tmp], check=True, capture_output=True)
        extracted = Path(tmp) / "bin" / "busybox"
        elf = extracted.read_bytes()
        if elf[:4] != b"\x7fELF" or struct.unpack_from("<H", elf, 0x12)[0] != EM_AARCH64 or _has_interpreter(elf):
            raise FixtureError(f"{debs[-1].name} holds no static aarch64 busybox")
        extracted.chmod(0o755)
        os.replace(extracted, binary)
    shutil.rmtree(tree / "lists", ignore_errors=True)  # 20 MB of indexes, needed once
    return binary


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF names a dynamic loader (anything else: assume not)."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == PT_INTERP for i in range(phnum))


def bootstub(arch: str = "x86_64", scenario: str = "pass", source: Path = REDOX_FIXTURE / BOOTSTUB_DIR,
             delay_us: int = 0) -> bytes:
    """The UEFI boot stub built from ``source`` (stub.c, build.sh) with the host's clang and lld;
    ``delay_us`` microseconds more before Boot Complete.

    Built once per process and content of ``source``: the tests make dozens of fixture
    repositories.
    """
    digest = hashlib.sha256()
    for f in sorted(p for p in source.iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return _build_bootstub(arch, scenario, source, digest.hexdigest(), delay_us)


def slow_boot(repo: Path, delay_us: int) -> None:
    """Make a fixture repository's disk images boot ``delay_us`` microseconds slower (uncommitted)."""
    (repo / BOOTSTUB_DIR / BOOTSTUB_SCENARIOS["pass"]).write_bytes(bootstub(delay_us=delay_us))


def set_host_tool_tests(repo: Path, tool: str, count: int) -> None:
    """Set how many tests a host tool of a fixture repository runs (uncommitted).

    The counts are the fixture flake's import-from-derivation file (``cargo-tests.nix``).
    """
    flake = repo / "flake.nix"
    text = flake.read_text()
    new, n = re.subn(rf"\b{re.escape(tool)} = \d+;", f"{tool} = {count};", text, count=1)
    if n != 1:
        raise FixtureError(f"{flake}: no test count of host tool {tool!r}")
    flake.write_text(new)


BUILDERS_IMPORT = "import ./builders.nix { inherit system; }"


def salt_derivations(repo: Path, salt: str) -> None:
    """Give every package of a fixture repository its own derivation (uncommitted).

    The salt goes into every ``mkPkg`` derivation (builders.nix's ``extra``), so nothing
    another test or an earlier run built or rooted is one of them.
    """
    flake = repo / "flake.nix"
    text = flake.read_text()
    if BUILDERS_IMPORT not in text:
        raise FixtureError(f"{flake}: no {BUILDERS_IMPORT!r} to salt")
    flake.write_text(text.replace(BUILDERS_IMPORT, f'import ./builders.nix {{ inherit system; extra = {{ salt = "{salt}"; }}; }}'))


@functools.cache
def _build_bootstub(arch: str, scenario: str, source: Path, digest: str, delay_us: int = 0) -> bytes:
    missing = [t for t in ("clang", "lld-link") if not shutil.which(t)]
    if missing:
        raise FixtureError(f"{' and '.join(missing)} not found: the fixture's boot stub is built with "
                           "clang and lld (Debian: apt-get install clang lld)")
    with tempfile.TemporaryDirectory(prefix="redox-ci-bootstub-") as tmp:
        out = Path(tmp) / BOOTSTUB_EFI[arch]
        proc = subprocess.run(["sh", str(source / "build.sh"), arch, str(out), scenario, str(delay_us)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise FixtureError(f"building the boot stub ({arch}, {scenario}) failed:\n{proc.stderr.strip()}")
        return out.read_bytes()
