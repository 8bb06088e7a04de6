"""The aarch64 matrix: which host emulates which system and why not, and which worker a job
goes to (native first, emulating when no native one is free); no Nix, no master."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from redox_ci import emulation
from redox_ci.config import WorkerSpec

pytestmark = pytest.mark.unit

# Debian 12's qemu-user-static registers this (/proc/sys/fs/binfmt_misc/qemu-aarch64).
QEMU_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def binfmt(tmp_path: Path, text: str | None) -> Path:
    if text is not None:
        (tmp_path / "qemu-aarch64").write_text(text)
    return tmp_path


def test_a_host_that_emulates_aarch64(tmp_path):
    e = emulation.probe("aarch64-linux", ["aarch64-linux"], binfmt(tmp_path, QEMU_AARCH64), host="x86_64-linux")
    assert e.ok and "qemu-user through binfmt_misc" in e.reason


@pytest.mark.parametrize("platforms, entry, why", [
    ([], QEMU_AARCH64, "does not list aarch64-linux in extra-platforms (nix config show extra-platforms: none)"),
    (["aarch64-linux"], None, "no binfmt_misc entry"),
    (["aarch64-linux"], QEMU_AARCH64.replace("enabled", "disabled"), "is disabled"),
    (["aarch64-linux"], QEMU_AARCH64.replace("flags: POF", "flags: P"), "lacks the F flag"),
])
def test_why_a_host_does_not_emulate(tmp_path, platforms, entry, why):
    e = emulation.probe("aarch64-linux", platforms, binfmt(tmp_path, entry), host="x86_64-linux")
    assert not e.ok and why in e.reason


def test_the_host_system_is_native_not_emulated(tmp_path):
    found, why = emulation.emulated_systems(["x86_64-linux", "aarch64-linux", "riscv64-linux"],
                                            extra_platforms=["aarch64-linux"],
                                            binfmt=binfmt(tmp_path, QEMU_AARCH64), host="x86_64-linux")
    assert found == ["aarch64-linux"]
    assert list(why) == ["riscv64-linux"] and "extra-platforms" in why["riscv64-linux"]


def test_a_worker_emulates_what_it_does_not_build_natively():
    assert WorkerSpec(name="w", emulated_systems=["aarch64-linux"]).emulated_systems == ["aarch64-linux"]
    with pytest.raises(ValidationError, match="both native"):
        WorkerSpec(name="w", systems=["x86_64-linux"], emulated_systems=["x86_64-linux"])
    with pytest.raises(ValidationError, match="systems must be like"):
        WorkerSpec(name="w", emulated_systems=["arm64"])


INVENTORY = [WorkerSpec(name="x86", systems=["x86_64-linux"], emulated_systems=["aarch64-linux"], max_builds=2),
             WorkerSpec(name="arm", systems=["aarch64-linux"], capabilities=["kvm"])]


def test_builders_take_native_then_emulating_slots_and_vms_native_only():
    from redox_ci.master.workers import names_for
    assert names_for(INVENTORY, "aarch64-linux", emulated=True) == ["arm", "x86-1", "x86-2"]
    assert names_for(INVENTORY, "aarch64-linux") == ["arm"]  # boots: VMs run on native hosts
    assert names_for(INVENTORY[:1], "aarch64-linux") == []


@dataclass
class _Worker:
    workername: str
    # Builder name -> its WorkerForBuilder; none busy here.
    workerforbuilders: dict = field(default_factory=dict)


@dataclass
class _Slot:
    worker: _Worker


def test_a_job_goes_to_a_free_native_worker_first():
    from redox_ci.master.workers import prefer_native
    pick = prefer_native(["arm"])
    arm, x86 = _Slot(_Worker("arm")), _Slot(_Worker("x86-1"))
    assert all(pick(None, [x86, arm], None) is arm for _ in range(20))
    assert pick(None, [x86], None) is x86  # the native one is busy: emulate rather than wait
    assert pick(None, [], None) is None
