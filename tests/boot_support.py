"""Shared by the boot tests: transcripts, the stub bootloader, and "is the VM gone?".

The stub is built from the fixture flake's own source (fixtures/redox-flake/bootstub)
with its build script, so the tests boot exactly what the fixture flake ships.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import alive, group_members, requires, wait_for

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = ROOT / "fixtures" / "boot" / "transcripts"
STUB_BUILD = ROOT / "fixtures" / "redox-flake" / "bootstub" / "build.sh"
FAKE_CH_DIR = Path(__file__).resolve().parent / "boot" / "bin"
EFI_NAMES = {"x86_64": "BOOTX64.EFI", "aarch64": "BOOTAA64.EFI"}
# Bounds for the tests' own waiting (never asserted on): generous for a loaded 2-core host.
WAIT_S = 60.0
WAIT_STEP_S = 0.02


def transcript(name: str) -> Path:
    return TRANSCRIPTS / f"{name}.jsonl"


def require_clang() -> None:
    requires("clang", "lld-link", hint="scripts/install.sh installs clang lld")


def build_stub(dest: Path, arch: str = "x86_64", scenario: str = "pass") -> Path:
    """A bootloader output directory holding the stub at boot/EFI/BOOT/<loader>.EFI."""
    require_clang()
    efi = dest / "boot" / "EFI" / "BOOT" / EFI_NAMES[arch]
    efi.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sh", str(STUB_BUILD), arch, str(efi), scenario], check=True)
    return dest


def make_image(path: Path, size: int = 1 << 20) -> Path:
    """A small raw disk, read-only like a store path: the VM must not be given it."""
    with path.open("wb") as f:
        f.write(b"REDOXFS test disk\n")
        f.truncate(size)
    path.chmod(0o444)
    return path


def assert_vm_gone(pid: int | None) -> None:
    assert pid is not None
    assert not alive(pid), f"VMM {pid} is still running"
    assert group_members(pid) == [], f"processes left in the VMM's group {pid}"


def wait_until(check, what: str, timeout: float = WAIT_S):
    """Wait for a condition the test needs before acting (not a measurement)."""
    return wait_for(what, check, timeout, step=WAIT_STEP_S)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(c) for c in text.split()]


def fake_ch_env(monkeypatch, transcript_path: Path, argv_log: Path | None = None) -> None:
    """Put the stand-in cloud-hypervisor first on PATH, playing ``transcript_path``."""
    monkeypatch.setenv("PATH", f"{FAKE_CH_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REDOX_CI_FAKE_CH_TRANSCRIPT", str(transcript_path))
    if argv_log is not None:
        monkeypatch.setenv("REDOX_CI_FAKE_CH_ARGV", str(argv_log))


def make_esp_image(path: Path, efi: Path) -> Path:
    """A disk that firmware alone boots: one FAT file system holding EFI/BOOT/BOOTX64.EFI.

    Cloud Hypervisor has no -kernel: its firmware boots the disk, as it boots redox.img.
    """
    requires("mkfs.fat", "mmd", "mcopy", hint="scripts/install.sh installs dosfstools mtools")
    subprocess.run(["mkfs.fat", "-C", "-n", "REDOXESP", str(path), "4096"], check=True, capture_output=True)
    subprocess.run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT"], check=True)
    subprocess.run(["mcopy", "-i", str(path), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], check=True)
    return path
