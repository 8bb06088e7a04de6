"""Command lines against the flake's runners, firmware and image lookup, the probe."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from boot_support import make_image
from redox_ci.boot.errors import FirmwareNotFound, ImageError, VmmUnavailable
from redox_ci.boot.run import BootRequest, boot, build_command, prepare_disk
from redox_ci.config import BootImage, BootSettings
from redox_ci.boot.vmm import (Firmware, choose_accel, cloud_hypervisor_argv, find_firmware,
                               host_system, image_bootloader, kvm_status, qemu_argv, resolve_bootloader,
                               resolve_image)
from tests.support import CLI

pytestmark = pytest.mark.unit

# The flake's boot test (nix/pkgs/infrastructure/boot-test.nix), word for word.
FLAKE_QEMU = """qemu-system-x86_64 -M pc -cpu qemu64 -m 1024 -smp 2 -serial file:SERIAL
 -device isa-debug-exit,iobase=0xf4,iosize=0x04 -bios OVMF -kernel EFI
 -drive file=IMAGE,format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0
 -display none -no-reboot""".split()
FLAKE_CH = """cloud-hypervisor --firmware FIRMWARE --disk path=IMAGE --cpus boot=2
 --memory size=1024M --serial file=SERIAL --console off""".split()


def options(argv: list[str]) -> list[tuple[str, str | None]]:
    """argv as (option, value) pairs, in order; flags have None."""
    pairs, i = [], 1
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            pairs.append((argv[i], argv[i + 1]))
            i += 2
        else:
            pairs.append((argv[i], None))
            i += 1
    return pairs


def test_qemu_tcg_matches_the_flake_but_for_the_serial_console():
    argv = qemu_argv(system="x86_64-linux", qemu="qemu-system-x86_64", firmware=Firmware(Path("OVMF")),
                     vars_copy=None, efi=Path("EFI"), disk=Path("IMAGE"), disk_format="raw",
                     accel="tcg", memory_mb=1024, cpus=2)
    ours, flake = options(argv), options(FLAKE_QEMU)
    assert argv[0] == FLAKE_QEMU[0]
    assert sorted(o for o in flake if o[0] != "-serial") == sorted(o for o in ours if o in flake)
    assert ("-serial", "stdio") in ours  # followed live instead of a polled file
    assert set(ours) - set(flake) == {("-serial", "stdio"), ("-monitor", "none"), ("-accel", "tcg")}


def test_qemu_kvm_uses_the_host_cpu_and_pflash_firmware_gets_its_own_variables():
    argv = qemu_argv(system="x86_64-linux", qemu="q", firmware=Firmware(Path("/fw/CODE.fd"), Path("/fw/VARS.fd")),
                     vars_copy=Path("/tmp/w,1/vars.fd"), efi=Path("EFI"), disk=Path("/tmp/w,1/disk.qcow2"),
                     disk_format="qcow2", accel="kvm", memory_mb=2048, cpus=4)
    assert "-enable-kvm" in argv and argv[argv.index("-cpu") + 1] == "host"
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in argv
    assert "if=pflash,format=raw,unit=1,file=/tmp/w,,1/vars.fd" in argv  # QEMU's comma escape
    assert "file=/tmp/w,,1/disk.qcow2,format=qcow2,if=none,id=disk0" in argv
    assert ("-m", "2048") in options(argv) and ("-smp", "4") in options(argv)


def test_qemu_aarch64_uses_virt():
    argv = qemu_argv(system="aarch64-linux", qemu="qemu-system-aarch64", firmware=Firmware(Path("AAVMF")),
                     vars_copy=None, efi=Path("EFI"), disk=Path("IMAGE"), disk_format="raw",
                     accel="tcg", memory_mb=1024, cpus=2)
    assert ("-M", "virt") in options(argv) and ("-cpu", "max") in options(argv)
    assert not any("isa-debug-exit" in a for a in argv)


def test_cloud_hypervisor_matches_the_flake():
    argv = cloud_hypervisor_argv(binary="cloud-hypervisor", firmware=Path("FIRMWARE"), disk=Path("IMAGE"),
                                 serial=Path("SERIAL"), memory_mb=1024, cpus=2)
    assert argv == FLAKE_CH
    with pytest.raises(ImageError, match="comma"):
        cloud_hypervisor_argv(binary="ch", firmware=Path("F"), disk=Path("a,b"), serial=Path("S"),
                              memory_mb=1024, cpus=2)


# The flake's network test (network-test.nix through mk-vm-test.nix's launchQemu): 2048 MB,
# 4 CPUs and an e1000 card on QEMU's user-mode network.
FLAKE_NETWORK_QEMU = FLAKE_QEMU[:FLAKE_QEMU.index("-m")] + "-m 2048 -smp 4".split() + \
    FLAKE_QEMU[FLAKE_QEMU.index("-serial"):] + "-netdev user,id=net0 -device e1000,netdev=net0".split()


def test_qemu_takes_the_network_tests_size_and_card():
    argv = qemu_argv(system="x86_64-linux", qemu="qemu-system-x86_64", firmware=Firmware(Path("OVMF")),
                     vars_copy=None, efi=Path("EFI"), disk=Path("IMAGE"), disk_format="raw",
                     accel="tcg", memory_mb=2048, cpus=4, nic="e1000")
    ours, flake = options(argv), options(FLAKE_NETWORK_QEMU)
    assert sorted(o for o in flake if o[0] != "-serial") == sorted(o for o in ours if o in flake)
    assert set(ours) - set(flake) == {("-serial", "stdio"), ("-monitor", "none"), ("-accel", "tcg")}
    none = qemu_argv(system="x86_64-linux", qemu="q", firmware=Firmware(Path("OVMF")), vars_copy=None,
                     efi=Path("EFI"), disk=Path("IMAGE"), disk_format="raw", accel="tcg", memory_mb=1024,
                     cpus=2, nic="none")
    assert ("-nic", "none") in options(none) and "-netdev" not in none


def test_cloud_hypervisor_takes_a_size_but_no_card():
    argv = cloud_hypervisor_argv(binary="ch", firmware=Path("F"), disk=Path("D"), serial=Path("S"),
                                 memory_mb=4096, cpus=4)
    assert ("--memory", "size=4096M") in options(argv) and ("--cpus", "boot=4") in options(argv)
    with pytest.raises(VmmUnavailable, match="tap device"):
        cloud_hypervisor_argv(binary="ch", firmware=Path("F"), disk=Path("D"), serial=Path("S"),
                              memory_mb=2048, cpus=4, nic="e1000")


@pytest.mark.parametrize("attr, expected", [
    ("redox-minimal", [("-m", "1024"), ("-smp", "2")]),
    ("redox-functional-test", [("-m", "1024"), ("-smp", "2")]),
    ("redox-network-test", [("-m", "2048"), ("-smp", "4"), ("-netdev", "user,id=net0"),
                            ("-device", "e1000,netdev=net0")]),
    ("redox-self-hosting-test", [("-m", "8192"), ("-smp", "4")]),
])
def test_each_image_boots_in_a_vm_of_its_size(tmp_path, attr, expected):
    """The command the boot verb runs, made for real (overlay and all) but not started."""
    settings = BootSettings(images={"redox-self-hosting-test": BootImage(tests="FUNC_TEST", memory_mb=8192, cpus=4)})
    img = make_image(tmp_path / "redox.img")
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(b"MZ")
    work = tmp_path / "work"
    work.mkdir()
    request = BootRequest(vmm="qemu", image=img, bootloader=efi, attr=attr, firmware=tmp_path / "redox.img")
    argv = options(build_command(request, settings, "tcg", work).argv)
    assert all(pair in argv for pair in expected), argv
    if attr != "redox-network-test":
        assert "-netdev" not in dict(argv)


def test_an_image_boots_its_own_loader_before_the_fallback(tmp_path):
    """The master gives the flake's bootloader as a fallback: an image output carrying its own
    (make-disk-image copies the one it was built with) boots that; --bootloader overrides both."""
    out = tmp_path / "image"
    out.mkdir()
    make_image(out / "redox.img")
    (out / "boot").mkdir()
    (out / "boot" / "BOOTX64.EFI").write_bytes(b"MZ own")
    fallback = tmp_path / "BOOTX64.EFI"
    fallback.write_bytes(b"MZ fallback")
    work = tmp_path / "work"

    def kernel(**request) -> str:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        argv = build_command(BootRequest(vmm="qemu", firmware=fallback, **request), BootSettings(), "tcg", work).argv
        return argv[argv.index("-kernel") + 1]
    assert kernel(image=out, bootloader_fallback=fallback) == str(out / "boot" / "BOOTX64.EFI")
    assert kernel(image=out / "redox.img", bootloader_fallback=fallback) == str(fallback)
    assert kernel(image=out, bootloader=fallback) == str(fallback)


HOST = host_system()
OTHER = "aarch64-linux" if HOST == "x86_64-linux" else "x86_64-linux"


def test_kvm_status_reasons(tmp_path):
    ok, why = kvm_status(OTHER)
    assert not ok and "cannot run" in why
    ok, why = kvm_status(HOST, device=tmp_path / "kvm")
    assert not ok and "does not exist" in why


def test_accel_choice():
    assert choose_accel("auto", OTHER, "qemu")[0] == "tcg"
    assert choose_accel("tcg", HOST, "qemu")[0] == "tcg"
    with pytest.raises(VmmUnavailable, match="KVM was asked for"):
        choose_accel("kvm", OTHER, "qemu")
    with pytest.raises(VmmUnavailable, match="Cloud Hypervisor needs KVM"):
        choose_accel("tcg", OTHER, "cloud-hypervisor")


def test_firmware_lookup(tmp_path):
    with pytest.raises(FirmwareNotFound, match="does not exist"):
        find_firmware("qemu", "x86_64-linux", tmp_path / "none.fd")
    fw = tmp_path / "OVMF.fd"
    fw.write_bytes(b"\0")
    assert find_firmware("qemu", "x86_64-linux", fw) == Firmware(fw)
    with pytest.raises(VmmUnavailable):
        find_firmware("qemu", "riscv64-linux")


def test_image_and_bootloader_lookup(tmp_path):
    img = make_image(tmp_path / "redox.img")
    assert resolve_image(tmp_path) == img and resolve_image(img) == img
    with pytest.raises(ImageError, match="redox.img"):
        resolve_image(tmp_path / "missing")
    efi = tmp_path / "bl" / "boot" / "EFI" / "BOOT" / "BOOTX64.EFI"
    efi.parent.mkdir(parents=True)
    efi.write_bytes(b"MZ")
    assert resolve_bootloader(tmp_path / "bl", "x86_64-linux") == efi
    assert resolve_bootloader(efi, "x86_64-linux") == efi
    with pytest.raises(ImageError, match="BOOTAA64.EFI"):
        resolve_bootloader(tmp_path / "bl", "aarch64-linux")
    assert image_bootloader(tmp_path, "x86_64-linux") is None


def test_a_disk_image_output_carries_its_bootloader(tmp_path):
    """The flake's make-disk-image copies the bootloader to $out/boot/BOOTX64.EFI."""
    make_image(tmp_path / "redox.img")
    efi = tmp_path / "boot" / "BOOTX64.EFI"
    efi.parent.mkdir()
    efi.write_bytes(b"MZ")
    assert image_bootloader(tmp_path, "x86_64-linux") == efi
    assert resolve_bootloader(tmp_path, "x86_64-linux") == efi
    assert image_bootloader(tmp_path / "redox.img", "x86_64-linux") is None
    assert image_bootloader(tmp_path, "aarch64-linux") is None


def test_the_vm_gets_an_overlay_or_a_copy_never_the_image(tmp_path):
    img = make_image(tmp_path / "redox.img")
    work = tmp_path / "work"
    work.mkdir()
    overlay, fmt = prepare_disk(img, work, overlay=True)
    assert fmt == "qcow2" and overlay.parent == work
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(img)
    copy, fmt = prepare_disk(img, work, overlay=False)
    assert fmt == "raw" and copy.read_bytes() == img.read_bytes() and copy.stat().st_mode & 0o200


def test_request_errors_are_usage_errors(tmp_path):
    with pytest.raises(Exception, match="unknown VMM"):
        boot(BootRequest(vmm="bochs", image=tmp_path))
    img = make_image(tmp_path / "redox.img")
    with pytest.raises(Exception, match="give --bootloader"):
        boot(BootRequest(vmm="qemu", image=img, accel="tcg", serial_log=tmp_path / "s", vmm_log=tmp_path / "v"))


def test_probe_json():
    p = subprocess.run([*CLI, "boot", "--probe", "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert set(data["can_boot"]) == {"qemu/x86_64-linux", "qemu/aarch64-linux",
                                     "cloud-hypervisor/x86_64-linux", "cloud-hypervisor/aarch64-linux"}
    assert isinstance(data["kvm"], bool)
    for cap in data["can_boot"].values():
        assert cap["reason"]
    qemu_here = data["qemu"]["x86_64-linux"] is not None and Path("/usr/share/ovmf/OVMF.fd").exists()
    assert data["can_boot"]["qemu/x86_64-linux"]["ok"] == qemu_here
