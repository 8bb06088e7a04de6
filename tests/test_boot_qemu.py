"""Real QEMU boots of the stub bootloader, built here from the fixture flake's source.

The stub prints the lines a real Redox boot prints (harmless warnings among them, the
quoted Boot Complete banner) and waits at the prompt ``redox# ``, or panics and hangs,
or, as a VM test image, prints the FUNC_TEST protocol with one failing test and powers
off: real firmware, real VMM, real console.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from boot_support import assert_vm_gone, build_stub, make_image
from redox_ci.boot.run import BootRequest, boot
from redox_ci.boot.vmm import QEMU_BINARY, find_binary, host_system, kvm_status
from redox_ci.config import BootImage, BootSettings
from tests.support import requires, run_json

pytestmark = pytest.mark.e2e

STUB_BANNER = b"Redox OS Bootloader 1.0.0 on %s/UEFI"
STUB_HARMLESS = ["WARN - Failed to locate Outputs", '[src/initnsmgr.rs:169 WARN] Scheme "file" not found in namespace',
                 "smoltcpd: no network adapter found"]
FUNCTIONAL = "redox-functional-test"
KVM_FALLBACK_NOTE = "KVM is there but QEMU could not use it"


def require_qemu(system: str) -> None:
    if not find_binary(QEMU_BINARY[system]):
        pytest.skip(f"{QEMU_BINARY[system]} not installed (scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    base = tmp_path_factory.mktemp("stubs")
    return {
        ("x86_64", "pass"): build_stub(base / "x86_64-pass", "x86_64", "pass"),
        ("x86_64", "panic"): build_stub(base / "x86_64-panic", "x86_64", "panic"),
        ("x86_64", "functional-test"): build_stub(base / "x86_64-functional", "x86_64", "functional-test"),
        ("aarch64", "pass"): build_stub(base / "aarch64-pass", "aarch64", "pass"),
    }


def qemu_boot(tmp_path, bootloader, system="x86_64-linux", **kw):
    require_qemu(system)
    request = BootRequest(vmm="qemu", image=make_image(tmp_path / "redox.img"), bootloader=bootloader,
                          system=system, serial_log=tmp_path / "serial.log", vmm_log=tmp_path / "vmm.log", **kw)
    return boot(request, BootSettings())


def test_x86_64_boots_with_kvm_when_present_else_tcg(tmp_path, stubs):
    r = qemu_boot(tmp_path, stubs[("x86_64", "pass")])
    assert r.verdict == "pass", r.reason
    assert [m["name"] for m in r.milestones] == ["firmware", "kernel", "boot-complete", "shell"]
    assert r.harmless == STUB_HARMLESS
    assert r.vmm_exit is None  # the stub waits at its prompt, as a shell does: redox-ci stopped it
    kvm_ok, _ = kvm_status("x86_64-linux")
    if not kvm_ok:
        assert r.accel == "tcg" and not r.notes
    elif r.accel == "tcg":  # KVM is there but does not work (nested virtualisation)
        assert KVM_FALLBACK_NOTE in r.notes[0]
    assert STUB_BANNER % b"x86_64" in (tmp_path / "serial.log").read_bytes()
    assert_vm_gone(r.vmm_pid)


def test_x86_64_tcg(tmp_path, stubs):
    r = qemu_boot(tmp_path, stubs[("x86_64", "pass")], accel="tcg")
    assert (r.verdict, r.accel) == ("pass", "tcg"), r.reason
    assert_vm_gone(r.vmm_pid)


def test_x86_64_kvm(tmp_path, stubs):
    ok, why = kvm_status("x86_64-linux")
    if not ok:
        pytest.skip(f"no KVM: {why}")
    r = qemu_boot(tmp_path, stubs[("x86_64", "pass")], accel="kvm")
    assert_vm_gone(r.vmm_pid)
    if r.failure in ("vmm-exit", "vmm-error") and not r.milestones:
        pytest.skip(f"/dev/kvm is there but QEMU cannot use it on this host: {r.reason}")
    assert (r.verdict, r.accel) == ("pass", "kvm"), r.reason


def test_x86_64_panic_fails_and_the_hung_vm_is_stopped(tmp_path, stubs):
    r = qemu_boot(tmp_path, stubs[("x86_64", "panic")], accel="tcg")
    assert (r.verdict, r.failure) == ("fail", "panic")
    assert "KERNEL PANIC: redox-ci stub panicked at" in r.reason
    assert r.vmm_exit is None  # the stub hangs after the panic: redox-ci stopped it
    assert_vm_gone(r.vmm_pid)


def test_aarch64_boots_on_aavmf(tmp_path, stubs):
    r = qemu_boot(tmp_path, stubs[("aarch64", "pass")], system="aarch64-linux")
    assert r.verdict == "pass", r.reason
    assert r.accel == ("kvm" if host_system() == "aarch64-linux" and kvm_status("aarch64-linux")[0] else "tcg")
    assert STUB_BANNER % b"aarch64" in (tmp_path / "serial.log").read_bytes()
    assert_vm_gone(r.vmm_pid)


def test_x86_64_functional_test_image_reports_each_test(tmp_path, stubs):
    r = qemu_boot(tmp_path, stubs[("x86_64", "functional-test")], attr=FUNCTIONAL, accel="tcg")
    assert (r.verdict, r.failure, r.goal) == ("fail", "tests-failed", "tests"), r.reason
    assert r.reason.startswith("1 of 5 tests failed: nix-eval-arith: expected 42, got 41")
    assert r.tests.complete and r.tests.describe() == "3 passed, 1 failed, 1 skipped"
    assert_vm_gone(r.vmm_pid)


def test_an_image_boots_in_a_vm_of_its_size_with_its_network_card(tmp_path, stubs):
    """The network test's VM (2048 MB, 4 CPUs, an e1000 card on QEMU's user-mode network)
    started for real: QEMU takes the command line and the image's tests are read as ever."""
    require_qemu("x86_64-linux")
    sized = BootImage(tests="FUNC_TEST", memory_mb=2048, cpus=4, nic="e1000", vmms=["qemu"])
    settings = BootSettings(images={"redox-sized-test": sized})
    request = BootRequest(vmm="qemu", image=make_image(tmp_path / "redox.img"),
                          bootloader=stubs[("x86_64", "functional-test")], attr="redox-sized-test", accel="tcg",
                          serial_log=tmp_path / "serial.log", vmm_log=tmp_path / "vmm.log")
    r = boot(request, settings)
    assert (r.failure, r.vm) == ("tests-failed", {"memory_mb": 2048, "cpus": 4, "nic": "e1000"}), r.reason
    assert r.tests.complete and r.tests.describe() == "3 passed, 1 failed, 1 skipped"
    assert_vm_gone(r.vmm_pid)


def fixture_outputs(repo, *attrs: str) -> list[str]:
    """The fixture flake's ``attrs`` built with Nix: their output paths."""
    requires("nix")
    require_qemu("x86_64-linux")
    built = subprocess.run(["nix", "build", "--no-link", "--json", *(f"{repo}#{a}" for a in attrs)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return [b["outputs"]["out"] for b in json.loads(built.stdout)]


def boot_cli(tmp_path, image: str, *extra: str) -> tuple[int, dict]:
    return run_json("boot", "--vmm", "qemu", "--image", image, *extra,
                    "--serial-log", str(tmp_path / "serial.log"), "--vmm-log", str(tmp_path / "vmm.log"))


def test_fixture_flake_outputs_boot_through_the_cli(fixture_repo, tmp_path):
    bootloader, disk_image = fixture_outputs(fixture_repo, "bootloader", "diskImage")
    code, result = boot_cli(tmp_path, disk_image, "--bootloader", bootloader)
    assert code == 0, result["reason"]
    assert result["verdict"] == "pass" and result["shell_reached"]
    assert result["harmless"] == STUB_HARMLESS
    assert_vm_gone(result["vmm_pid"])


def test_fixture_flake_test_images_boot_through_the_cli(fixture_repo, tmp_path):
    """redox-minimal passes at its shell; the functional test image fails on its one FAIL.
    Each image output carries its bootloader (boot/BOOTX64.EFI): no --bootloader."""
    minimal, functional = fixture_outputs(fixture_repo, "redox-minimal", FUNCTIONAL)
    code, result = boot_cli(tmp_path, minimal)
    assert code == 0, result["reason"]
    assert (result["attr"], result["goal"], result["shell_reached"]) == ("redox-minimal", "shell", True)
    assert_vm_gone(result["vmm_pid"])
    code, result = boot_cli(tmp_path, functional, "--attr", FUNCTIONAL)
    assert code == 1 and result["failure"] == "tests-failed", result["reason"]
    assert [(t["name"], t["status"], t["reason"]) for t in result["tests"]["results"]] == [
        ("shell-echo", "passed", ""), ("fs-write-read", "passed", ""),
        ("nix-eval-arith", "failed", "expected 42, got 41"), ("snix-fetchers", "skipped", ""),
        ("generations-list", "passed", "")]
    assert (result["tests"]["passed"], result["tests"]["failed"], result["tests"]["skipped"]) == (3, 1, 1)
    assert_vm_gone(result["vmm_pid"])
