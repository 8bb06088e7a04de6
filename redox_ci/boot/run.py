"""Boot a Redox image end to end: the function the CLI and the master rely on.

It turns a request (VMM, image, bootloader, system) into a VMM command on a
throw-away copy of the disk, with the firmware and accelerator this host has,
and hands it to the engine with the image's rule from the settings (a shell after
Boot Complete, or a test image's protocol) and its timeouts. Where KVM is there but does not work (nested
virtualisation often fails this way) and the accelerator was left on "auto",
QEMU is started once more with TCG instead of failing the commit for the host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import BootImage, BootSettings
from .engine import BootResult, FollowPlan, follow
from ..errors import UsageError
from .errors import ImageError, VmmNotFound
from .replay import load_transcript
from .vmm import (CLOUD_HYPERVISOR, CLOUD_HYPERVISOR_BINARY, QEMU, QEMU_BINARY, SYSTEMS, Accel,
                  Firmware, VmmCommand, choose_accel, cloud_hypervisor_argv, find_binary,
                  find_firmware, image_bootloader, qemu_argv, qemu_img_overlay_argv,
                  resolve_bootloader, resolve_image)

SERIAL_FIFO_NAME = "serial.fifo"


@dataclass(frozen=True)
class BootRequest:
    vmm: str
    image: str | Path
    bootloader: str | Path | None = None
    # Used when there is no ``bootloader`` and the image output carries no loader of its own.
    bootloader_fallback: str | Path | None = None
    system: str = "x86_64-linux"
    # The image's attribute, whose rule judges it ([boot.images]); None: [boot].image_attr.
    attr: str | None = None
    # Seconds from start to the verdict; None: the image's timeout for this accelerator.
    timeout: float | None = None
    serial_log: str | Path | None = None
    vmm_log: str | Path | None = None
    accel: str | None = None          # None: settings.accel
    firmware: str | Path | None = None  # None: settings.firmware, then the usual places


def scaled_timeouts(settings: BootSettings, accel: str | None) -> dict[str, float]:
    """Per-milestone limits: as set for TCG, a fraction of them under KVM."""
    factor = settings.kvm_timeout_factor if accel == "kvm" else 1.0
    return {name: limit * factor for name, limit in settings.timeouts.items()}


def overall_timeout(settings: BootSettings, image: BootImage, accel: str | None) -> float:
    """The flake's: its timeout with KVM; without, at least its TCG floor (a replay counts as TCG)."""
    timeout = image.timeout or settings.timeout
    return timeout if accel == "kvm" else max(timeout, image.tcg_timeout or settings.tcg_timeout)


def follow_plan(settings: BootSettings, accel: str | None, timeout: float | None,
                attr: str | None = None) -> FollowPlan:
    """How the engine judges the image ``attr`` (default: [boot].image_attr)."""
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}")
    image = settings.image(attr or settings.image_attr)
    goal = "tests" if image.tests else "shell" if image.shell else "boot-complete"
    return FollowPlan(overall=timeout or overall_timeout(settings, image, accel),
                      timeouts=scaled_timeouts(settings, accel), harmless=tuple(settings.harmless),
                      goal=goal, shell_grace=image.shell_grace, tests_prefix=image.tests)


def log_paths(serial_log: str | Path | None, vmm_log: str | Path | None) -> tuple[Path, Path]:
    """Where the logs go: as asked, or a new directory that outlives the boot."""
    if serial_log is None or vmm_log is None:
        keep = Path(tempfile.mkdtemp(prefix="redox-ci-boot-"))
        serial_log = serial_log or keep / "serial.log"
        vmm_log = vmm_log or keep / "vmm.log"
    paths = Path(serial_log), Path(vmm_log)
    for p in paths:
        if not p.parent.is_dir():
            raise UsageError(f"cannot write {p}: directory {p.parent} does not exist")
    return paths


def prepare_disk(image: Path, workdir: Path, overlay: bool) -> tuple[Path, str]:
    """A disk the VM may write: a qcow2 overlay on the image, or a plain copy."""
    if overlay and find_binary("qemu-img"):
        disk = workdir / "disk.qcow2"
        proc = subprocess.run(qemu_img_overlay_argv(image.resolve(), disk),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"qemu-img could not make an overlay on {image}: {proc.stderr.strip()}")
        return disk, "qcow2"
    disk = workdir / "disk.img"
    try:
        shutil.copyfile(image, disk)
    except OSError as e:
        raise ImageError(f"cannot copy {image} to {disk}: {e.strerror}") from None
    disk.chmod(0o600)
    return disk, "raw"


def _firmware(request: BootRequest, settings: BootSettings) -> Firmware:
    explicit = request.firmware or settings.firmware.get(f"{request.vmm}/{request.system}")
    return find_firmware(request.vmm, request.system, explicit)


def build_command(request: BootRequest, settings: BootSettings, accel: Accel, workdir: Path) -> VmmCommand:
    """Everything the VMM needs, made in ``workdir``; the argv comes from vmm.py."""
    image = resolve_image(request.image)
    firmware = _firmware(request, settings)
    attr = request.attr or settings.image_attr
    memory_mb, cpus = settings.vm_size(attr)
    nic = settings.image(attr).nic
    if request.vmm == CLOUD_HYPERVISOR:
        binary = find_binary(CLOUD_HYPERVISOR_BINARY)
        if binary is None:
            raise VmmNotFound(f"{CLOUD_HYPERVISOR_BINARY} is not on PATH")
        disk, _ = prepare_disk(image, workdir, overlay=False)
        fifo = workdir / SERIAL_FIFO_NAME
        argv = cloud_hypervisor_argv(binary=binary, firmware=firmware.code, disk=disk, serial=fifo,
                                     memory_mb=memory_mb, cpus=cpus, nic=nic)
        return VmmCommand(CLOUD_HYPERVISOR, argv, accel, serial_fifo=fifo)
    binary = find_binary(QEMU_BINARY[request.system])
    if binary is None:
        raise VmmNotFound(f"{QEMU_BINARY[request.system]} is not on PATH "
                          "(Debian: apt-get install qemu-system-x86 qemu-system-arm)")
    efi = (resolve_bootloader(request.bootloader, request.system) if request.bootloader is not None
           else image_bootloader(request.image, request.system))
    if efi is None and request.bootloader_fallback is not None:
        efi = resolve_bootloader(request.bootloader_fallback, request.system)
    if efi is None:
        raise UsageError("QEMU starts the bootloader with -kernel: give --bootloader "
                         "(the bootloader output or its EFI file); an image output with "
                         "boot/BOOTX64.EFI in it needs none")
    disk, fmt = prepare_disk(image, workdir, overlay=True)
    vars_copy = None
    if firmware.vars_template is not None:
        vars_copy = workdir / "efivars.fd"
        shutil.copyfile(firmware.vars_template, vars_copy)
        vars_copy.chmod(0o600)
    argv = qemu_argv(system=request.system, qemu=binary, firmware=firmware, vars_copy=vars_copy,
                     efi=efi, disk=disk, disk_format=fmt, accel=accel,
                     memory_mb=memory_mb, cpus=cpus, nic=nic)
    return VmmCommand(QEMU, argv, accel)


def _kvm_did_not_start(result: BootResult) -> bool:
    return result.accel == "kvm" and not result.milestones and result.failure in ("vmm-exit", "vmm-error")


def boot(request: BootRequest, settings: BootSettings | None = None) -> BootResult:
    """Boot ``request.image`` and judge it; the VM is stopped when this returns or raises."""
    settings = settings or BootSettings()
    if request.vmm not in (QEMU, CLOUD_HYPERVISOR):
        raise UsageError(f"unknown VMM {request.vmm!r}: use qemu or cloud-hypervisor")
    if request.system not in SYSTEMS:
        raise UsageError(f"unknown system {request.system!r}: use one of {', '.join(SYSTEMS)}")
    requested = request.accel or settings.accel
    accel, _ = choose_accel(requested, request.system, request.vmm)
    serial_log, vmm_log = log_paths(request.serial_log, request.vmm_log)
    attr = request.attr or settings.image_attr
    with tempfile.TemporaryDirectory(prefix="redox-ci-vm-") as tmp:
        command = build_command(request, settings, accel, Path(tmp))
        result = follow(command, follow_plan(settings, accel, request.timeout, attr), serial_log, vmm_log)
    if requested == "auto" and request.vmm == QEMU and _kvm_did_not_start(result):
        first = result.reason
        with tempfile.TemporaryDirectory(prefix="redox-ci-vm-") as tmp:
            command = build_command(request, settings, "tcg", Path(tmp))
            result = follow(command, follow_plan(settings, "tcg", request.timeout, attr),
                            serial_log, vmm_log, append_vmm_log=True)
        result.notes.insert(0, f"KVM is there but QEMU could not use it ({first}); booted with TCG")
    result.attr = attr
    memory_mb, cpus = settings.vm_size(attr)
    result.vm = {"memory_mb": memory_mb, "cpus": cpus, "nic": settings.image(attr).nic}
    return result


def replay_command(transcript: str | Path, env: Mapping[str, str] | None = None) -> VmmCommand:
    """The stand-in VMM playing ``transcript`` on its stdout."""
    return VmmCommand("replay", [sys.executable, "-m", "redox_ci.boot.replay", str(transcript)],
                      None, env=dict(env) if env is not None else None)


def replay(transcript: str | Path, settings: BootSettings | None = None, timeout: float | None = None,
           serial_log: str | Path | None = None, vmm_log: str | Path | None = None,
           attr: str | None = None) -> BootResult:
    """Judge a recorded console played by the stand-in VMM, through the same engine, by the
    rule of image ``attr`` (default: [boot].image_attr)."""
    settings = settings or BootSettings()
    load_transcript(transcript)  # a bad transcript is a usage error, not a failed boot
    serial, vmm = log_paths(serial_log, vmm_log)
    attr = attr or settings.image_attr
    result = follow(replay_command(transcript), follow_plan(settings, None, timeout, attr), serial, vmm)
    result.attr = attr
    return result
