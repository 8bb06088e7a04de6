"""Cloud Hypervisor: the driver with a stand-in binary, and a real run where one exists.

The stand-in (tests/boot/bin/cloud-hypervisor) checks the command line and plays a
transcript onto ``--serial file=PATH``, which the engine made a FIFO: so the FIFO
path of the engine is exercised by a separate executable found on PATH, as the
real one would be.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from boot_support import (FAKE_CH_DIR, assert_vm_gone, build_stub, fake_ch_env, make_esp_image, make_image,
                          transcript)
from redox_ci.boot.errors import FirmwareNotFound
from redox_ci.boot.run import BootRequest, boot
from redox_ci.boot.vmm import find_firmware, host_system, kvm_status
from redox_ci.config import BootSettings
from tests.support import CLI

pytestmark = pytest.mark.e2e


def require_kvm() -> None:
    ok, why = kvm_status(host_system())
    if not ok:
        pytest.skip(f"the Cloud Hypervisor driver needs KVM and this host has none: {why}")


def ch_boot(tmp_path, monkeypatch, name, argv_log=None):
    require_kvm()
    fake_ch_env(monkeypatch, transcript(name), argv_log)
    firmware = tmp_path / "CLOUDHV.fd"
    firmware.write_bytes(b"\0" * 4096)
    request = BootRequest(vmm="cloud-hypervisor", image=make_image(tmp_path / "redox.img"),
                          firmware=firmware, serial_log=tmp_path / "serial.log", vmm_log=tmp_path / "vmm.log")
    return boot(request, BootSettings()), firmware


def test_stand_in_through_the_real_driver(tmp_path, monkeypatch):
    argv_log = tmp_path / "argv.json"
    r, firmware = ch_boot(tmp_path, monkeypatch, "clean", argv_log)
    assert (r.verdict, r.vmm, r.accel) == ("pass", "cloud-hypervisor", "kvm"), r.reason
    assert r.harmless[0] == "WARN - Failed to locate Outputs"
    argv = json.loads(argv_log.read_text())
    assert argv[0] == str(FAKE_CH_DIR / "cloud-hypervisor")
    assert argv[1:] == ["--firmware", str(firmware), "--disk", argv[4], "--cpus", "boot=2",
                        "--memory", "size=1024M", "--serial", argv[10], "--console", "off"]
    disk = Path(argv[4].removeprefix("path="))
    serial = Path(argv[10].removeprefix("file="))
    assert disk != tmp_path / "redox.img" and disk.name == "disk.img"
    assert not disk.parent.exists()  # the throw-away copy and the FIFO went with the boot
    assert serial.parent == disk.parent
    assert (tmp_path / "serial.log").read_bytes().startswith(b"\x1b[2J")
    assert_vm_gone(r.vmm_pid)


def test_stand_in_panic(tmp_path, monkeypatch):
    r, _ = ch_boot(tmp_path, monkeypatch, "panic")
    assert r.failure == "panic" and "KERNEL PANIC" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_stand_in_refuses_a_wrong_command_line(tmp_path):
    p = subprocess.run([str(FAKE_CH_DIR / "cloud-hypervisor"), "--firmware", "x", "--disk", "path=y",
                        "--cpus", "boot=2", "--memory", "size=1024M", "--serial", "file=z"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "missing --console" in p.stderr


def test_without_kvm_the_reason_is_clear(tmp_path):
    other = "aarch64-linux" if host_system() == "x86_64-linux" else "x86_64-linux"
    p = subprocess.run([*CLI, "boot", "--vmm", "cloud-hypervisor", "--system", other,
                        "--image", str(make_image(tmp_path / "redox.img"))], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Cloud Hypervisor needs KVM, but KVM cannot run" in p.stderr and "Traceback" not in p.stderr


def test_real_cloud_hypervisor(tmp_path):
    binary = shutil.which("cloud-hypervisor")
    if binary is None:
        pytest.skip("cloud-hypervisor is not on PATH (not packaged in Debian 12)")
    require_kvm()
    try:
        find_firmware("cloud-hypervisor", host_system())
    except FirmwareNotFound as e:
        pytest.skip(str(e))
    if host_system() != "x86_64-linux":
        pytest.skip("the ESP test image holds an x86_64 stub")
    efi = build_stub(tmp_path / "bl") / "boot" / "EFI" / "BOOT" / "BOOTX64.EFI"
    image = make_esp_image(tmp_path / "redox.img", efi)
    image.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    r = boot(BootRequest(vmm="cloud-hypervisor", image=image, serial_log=tmp_path / "serial.log",
                         vmm_log=tmp_path / "vmm.log"), BootSettings())
    assert r.verdict == "pass", r.reason + " | " + (tmp_path / "vmm.log").read_text()
    assert_vm_gone(r.vmm_pid)
