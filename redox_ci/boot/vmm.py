"""VMM drivers: the command lines that boot a Redox image, and what this host can boot.

The command lines follow the flake's own runners (``bootTest``, ``runCloudHypervisor``,
see ARCHITECTURE and redox-flake.md) so that CI boots the image the way a developer
does, with two changes: the serial console goes to a pipe or FIFO that the engine
follows as it arrives instead of a file it polls, and the disk is a throw-away
copy-on-write overlay, never the Nix store path. The builders are pure: they take
paths and numbers and return argv lists; finding files and running them is elsewhere.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .errors import FirmwareNotFound, ImageError, VmmUnavailable

QEMU = "qemu"
CLOUD_HYPERVISOR = "cloud-hypervisor"
VMMS = (QEMU, CLOUD_HYPERVISOR)
SYSTEMS = ("x86_64-linux", "aarch64-linux")
KVM_DEVICE = Path("/dev/kvm")
# QEMU's isa-debug-exit device, as the flake's runner configures it: a guest write
# to port 0xf4 ends QEMU with status (value << 1) | 1.
ISA_DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"
# An image's nic setting for "no network card at all".
NO_NIC = "none"

Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class Firmware:
    """UEFI firmware: one combined image (-bios), or code plus a variable-store template."""

    code: Path
    vars_template: Path | None = None


# Where Debian (ovmf, qemu-efi-aarch64) and other distributions put UEFI firmware, in
# order of preference. A pflash pair keeps UEFI variables in a per-boot copy.
FIRMWARE_SEARCH: dict[tuple[str, str], tuple[Firmware, ...]] = {
    (QEMU, "x86_64-linux"): (
        Firmware(Path("/usr/share/ovmf/OVMF.fd")),
        Firmware(Path("/usr/share/OVMF/OVMF.fd")),
        Firmware(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
        Firmware(Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
        Firmware(Path("/usr/share/edk2/ovmf/OVMF_CODE.fd"), Path("/usr/share/edk2/ovmf/OVMF_VARS.fd")),
    ),
    (QEMU, "aarch64-linux"): (
        Firmware(Path("/usr/share/AAVMF/AAVMF_CODE.fd"), Path("/usr/share/AAVMF/AAVMF_VARS.fd")),
        Firmware(Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")),
        Firmware(Path("/usr/share/edk2/aarch64/QEMU_EFI.fd")),
    ),
    (CLOUD_HYPERVISOR, "x86_64-linux"): (
        Firmware(Path("/usr/share/cloud-hypervisor/CLOUDHV.fd")),
        Firmware(Path("/usr/share/ovmf/CLOUDHV.fd")),
        Firmware(Path("/usr/share/OVMF/CLOUDHV.fd")),
    ),
    (CLOUD_HYPERVISOR, "aarch64-linux"): (
        Firmware(Path("/usr/share/cloud-hypervisor/CLOUDHV_EFI.fd")),
    ),
}
FIRMWARE_PACKAGES = {
    (QEMU, "x86_64-linux"): "Debian: apt-get install ovmf",
    (QEMU, "aarch64-linux"): "Debian: apt-get install qemu-efi-aarch64",
    (CLOUD_HYPERVISOR, "x86_64-linux"): "Nix: OVMF-cloud-hypervisor.fd, FV/CLOUDHV.fd",
    (CLOUD_HYPERVISOR, "aarch64-linux"): "Nix: OVMF-cloud-hypervisor.fd, FV/CLOUDHV_EFI.fd",
}
EFI_LOADER = {"x86_64-linux": "BOOTX64.EFI", "aarch64-linux": "BOOTAA64.EFI"}
QEMU_BINARY = {"x86_64-linux": "qemu-system-x86_64", "aarch64-linux": "qemu-system-aarch64"}
CLOUD_HYPERVISOR_BINARY = "cloud-hypervisor"


@dataclass(frozen=True)
class VmmCommand:
    """What the engine runs: argv, and where the serial console comes out."""

    vmm: str
    argv: list[str]
    accel: Accel | None
    # None: the serial console is the process's stdout. A path: a FIFO the VMM writes.
    serial_fifo: Path | None = None
    env: dict[str, str] | None = field(default=None, compare=False)


def arch_of(system: str) -> str:
    return system.split("-", 1)[0]


def host_system() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine) + "-linux"


def kvm_status(system: str, device: Path = KVM_DEVICE) -> tuple[bool, str]:
    """Whether KVM can run a ``system`` guest here, and why (a sentence either way)."""
    host = host_system()
    if arch_of(system) != arch_of(host):
        return False, f"KVM cannot run {system} guests on this {host} host"
    if not device.exists():
        return False, f"{device} does not exist (no KVM in this kernel or container)"
    if not os.access(device, os.R_OK | os.W_OK):
        return False, f"{device} is not readable and writable by this user (add it to the kvm group)"
    return True, f"{device} is usable"


def choose_accel(requested: str, system: str, vmm: str) -> tuple[Accel, str]:
    """Resolve "auto" | "kvm" | "tcg" for this host; Cloud Hypervisor needs KVM."""
    ok, why = kvm_status(system)
    if vmm == CLOUD_HYPERVISOR or requested == "kvm":
        if not ok:
            need = "Cloud Hypervisor needs KVM" if vmm == CLOUD_HYPERVISOR else "KVM was asked for"
            raise VmmUnavailable(f"{need}, but {why}")
        return "kvm", why
    if requested == "tcg":
        return "tcg", "TCG was asked for"
    return ("kvm", why) if ok else ("tcg", why)


def qemu_drive(path: Path, fmt: str) -> str:
    # QEMU option values are comma-separated: a comma inside a path is written twice.
    return f"file={str(path).replace(',', ',,')},format={fmt},if=none,id=disk0"


def qemu_firmware_args(firmware: Firmware, vars_copy: Path | None) -> list[str]:
    if firmware.vars_template is None:
        return ["-bios", str(firmware.code)]
    if vars_copy is None:
        raise ValueError("a pflash firmware needs a writable copy of its variable store")
    code = str(firmware.code).replace(",", ",,")
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={str(vars_copy).replace(',', ',,')}"]


def qemu_nic_args(nic: str | None) -> list[str]:
    """The network card: None leaves QEMU's default, "none" has no card, a model sits on
    QEMU's user-mode network (SLiRP) as in the flake's network test."""
    if nic is None:
        return []
    if nic == NO_NIC:
        return ["-nic", "none"]
    return ["-netdev", "user,id=net0", "-device", f"{nic},netdev=net0"]


def qemu_argv(*, system: str, qemu: str, firmware: Firmware, vars_copy: Path | None,
              efi: Path, disk: Path, disk_format: str, accel: Accel,
              memory_mb: int, cpus: int, nic: str | None = None) -> list[str]:
    """QEMU booting ``efi`` through UEFI with ``disk`` on virtio-blk, serial on stdout,
    ``memory_mb`` and ``cpus`` as the image's settings say, and its network card."""
    if system == "x86_64-linux":
        machine = ["-M", "pc"]
        # qemu64 is what the flake's runner uses without KVM; with KVM the host CPU.
        cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "qemu64"]
        extra = ["-device", ISA_DEBUG_EXIT]
    elif system == "aarch64-linux":
        machine = ["-M", "virt"]
        cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
        extra = []
    else:
        raise VmmUnavailable(f"QEMU: no driver for system {system!r} (known: {', '.join(SYSTEMS)})")
    return [
        qemu, *machine, *(["-enable-kvm"] if accel == "kvm" else ["-accel", "tcg"]), *cpu,
        "-m", str(memory_mb), "-smp", str(cpus),
        *qemu_firmware_args(firmware, vars_copy),
        "-kernel", str(efi),
        "-drive", qemu_drive(disk, disk_format), "-device", "virtio-blk-pci,drive=disk0",
        "-serial", "stdio", "-monitor", "none", *extra,
        "-display", "none", "-no-reboot", *qemu_nic_args(nic),
    ]


def cloud_hypervisor_argv(*, binary: str, firmware: Path, disk: Path, serial: Path,
                          memory_mb: int, cpus: int, nic: str | None = None) -> list[str]:
    """Cloud Hypervisor as the flake's boot test runs it; the serial file is our FIFO.
    It has no network card unless given a tap device, which needs root: a ``nic`` is refused."""
    if nic not in (None, NO_NIC):
        raise VmmUnavailable(f"Cloud Hypervisor cannot give the VM a {nic} card (it networks only through "
                             "a tap device, which needs root): boot this image with QEMU")
    for what, path in (("firmware", firmware), ("disk", disk), ("serial", serial)):
        if "," in str(path):
            raise ImageError(f"Cloud Hypervisor cannot take a {what} path with a comma: {path}")
    return [
        binary, "--firmware", str(firmware), "--disk", f"path={disk}",
        "--cpus", f"boot={cpus}", "--memory", f"size={memory_mb}M",
        "--serial", f"file={serial}", "--console", "off",
    ]


def qemu_img_overlay_argv(base: Path, overlay: Path, base_format: str = "raw") -> list[str]:
    """A copy-on-write overlay: the VM writes to it, the base (a store path) stays untouched."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(overlay)]


def find_firmware(vmm: str, system: str, explicit: str | Path | None = None) -> Firmware:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FirmwareNotFound(f"{vmm} firmware {path} does not exist")
        return Firmware(path)
    candidates = FIRMWARE_SEARCH.get((vmm, system))
    if candidates is None:
        raise VmmUnavailable(f"{vmm} cannot boot {system} guests")
    for fw in candidates:
        if fw.code.is_file() and (fw.vars_template is None or fw.vars_template.is_file()):
            return fw
    looked = ", ".join(str(fw.code) for fw in candidates)
    raise FirmwareNotFound(f"no UEFI firmware for {vmm} {system}: looked for {looked} "
                           f"({FIRMWARE_PACKAGES[(vmm, system)]}; or set it in [boot] settings)")


def find_binary(name: str) -> str | None:
    return shutil.which(name)


def resolve_image(image: str | Path) -> Path:
    """IMG may be redox.img itself or a directory (a Nix output) holding redox.img."""
    p = Path(image).expanduser()
    if p.is_dir():
        p = p / "redox.img"
    if not p.is_file():
        raise ImageError(f"disk image {p} does not exist (give redox.img or the diskImage output)")
    return p


def resolve_bootloader(bootloader: str | Path, system: str) -> Path:
    """The EFI file, or a directory holding it: the bootloader output (boot/EFI/BOOT/<loader>.EFI)
    or a disk image output, where the flake's make-disk-image copies it (boot/<loader>.EFI)."""
    p = Path(bootloader).expanduser()
    if p.is_dir():
        p = _efi_in(p, system) or p / "boot" / "EFI" / "BOOT" / EFI_LOADER[system]
    if not p.is_file():
        raise ImageError(f"bootloader {p} does not exist "
                            f"(give the bootloader output or its boot/EFI/BOOT/{EFI_LOADER[system]})")
    return p


def image_bootloader(image: str | Path, system: str) -> Path | None:
    """The bootloader a disk image output carries (boot/<loader>.EFI), if it has one."""
    p = Path(image).expanduser()
    return _efi_in(p, system) if p.is_dir() else None


def _efi_in(directory: Path, system: str) -> Path | None:
    for where in (directory / "boot" / "EFI" / "BOOT", directory / "boot"):
        if (where / EFI_LOADER[system]).is_file():
            return where / EFI_LOADER[system]
    return None


@dataclass(frozen=True)
class Capability:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Probe:
    """What this host can boot: a Buildbot step skips with ``reason`` where ``ok`` is false."""

    host: str
    kvm: bool
    kvm_reason: str
    qemu: dict[str, str | None]
    cloud_hypervisor: str | None
    can_boot: dict[str, Capability]

    def to_json(self) -> dict:
        return asdict(self)


def probe(firmware: dict[tuple[str, str], str | None] | None = None) -> Probe:
    """Look at binaries, firmware and /dev/kvm; start nothing."""
    firmware = firmware or {}
    host = host_system()
    kvm, kvm_reason = kvm_status(host)
    qemus = {s: find_binary(QEMU_BINARY[s]) for s in SYSTEMS}
    ch = find_binary(CLOUD_HYPERVISOR_BINARY)
    can: dict[str, Capability] = {}
    for system in SYSTEMS:
        for vmm, binary in ((QEMU, qemus[system]), (CLOUD_HYPERVISOR, ch)):
            key = f"{vmm}/{system}"
            try:
                if binary is None:
                    name = QEMU_BINARY[system] if vmm == QEMU else CLOUD_HYPERVISOR_BINARY
                    raise VmmUnavailable(f"{name} is not on PATH")
                accel, why = choose_accel("auto", system, vmm)
                find_firmware(vmm, system, firmware.get((vmm, system)))
                can[key] = Capability(True, f"{accel}: {why}")
            except (VmmUnavailable, FirmwareNotFound) as e:
                can[key] = Capability(False, str(e))
    return Probe(host, kvm, kvm_reason, qemus, ch, can)
