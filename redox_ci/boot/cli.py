"""Boot a disk image in a VM and judge its console, replay a transcript, or probe the host.

    redox-ci boot --vmm qemu --image IMG [--bootloader DIR] [--attr ATTR] [--system S] [--timeout SEC] [--json]
    redox-ci boot --replay TRANSCRIPT [--attr ATTR] [--timeout SEC] [--json]
    redox-ci boot --probe [--json]

The image is judged by the rule of its attribute in ``[boot.images]``: Boot Complete and
then a shell (the flake's boot test), or a test image's FUNC_TEST / NET_TEST results.
Exit 0 when the boot passed, 1 when it failed, 2 on a usage or configuration error
(including "this host cannot run that VMM": ``--probe`` tells that beforehand).
"""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..errors import UsageError
from ..outcome import Outcome
from .vmm import SYSTEMS, VMMS, host_system, probe

# The settings (pydantic) and the engine are imported when a boot runs: `redox-ci`
# imports this module at every start for its flags.
if TYPE_CHECKING:
    from ..config import BootSettings


def register(sub) -> None:
    p = sub.add_parser("boot", help="boot a disk image in a VM and judge its serial console",
                       description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", metavar="IMG", help="redox.img, or a directory (the diskImage output) holding it")
    what.add_argument("--replay", metavar="TRANSCRIPT", help="judge a recorded console (JSON lines) played by a stand-in VMM")
    what.add_argument("--probe", action="store_true", help="print what this host can boot")
    p.add_argument("--vmm", choices=VMMS, default="qemu")
    p.add_argument("--bootloader", metavar="DIR_OR_EFI",
                   help="the bootloader output (boot/EFI/BOOT/BOOTX64.EFI inside) or the EFI file; QEMU needs "
                        "it unless the image output carries boot/BOOTX64.EFI")
    p.add_argument("--bootloader-fallback", metavar="DIR_OR_EFI",
                   help="the bootloader QEMU starts when there is no --bootloader and the image output carries "
                        "none of its own (the master passes the flake's bootloader so: each image boots the "
                        "loader it was built with)")
    p.add_argument("--attr", metavar="ATTR",
                   help="the image's flake attribute, whose rule judges the boot (default: [boot].image_attr)")
    p.add_argument("--system", choices=SYSTEMS, default=None, help="guest system (default: this host's)")
    p.add_argument("--timeout", type=float, metavar="SEC",
                   help="seconds from start to the verdict (default: the image's, [boot].timeout with KVM, "
                        "tcg_timeout without)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: [boot].accel, auto")
    p.add_argument("--firmware", metavar="FILE", help="UEFI firmware (default: [boot].firmware, then the usual places)")
    p.add_argument("--settings", metavar="FILE", help="settings file with a [boot] table (default: $REDOX_CI_SETTINGS)")
    p.add_argument("--serial-log", metavar="PATH", help="where to keep the serial console")
    p.add_argument("--vmm-log", metavar="PATH", help="where to keep the VMM's own output")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=handle)


def command_line(*, image: str, vmm: str = "qemu", system: str | None = None, bootloader: str | None = None,
                 bootloader_fallback: str | None = None, attr: str | None = None, timeout: float | None = None,
                 accel: str | None = None, firmware: str | None = None, settings: str | None = None, serial_log: str | None = None,
                 vmm_log: str | None = None) -> list[str]:
    """The argv after ``redox-ci`` of a boot of ``image``, as ``register``'s parser reads it back.

    ``--flag=value``: a value that starts with "-" stays a value.
    """
    flags = {"vmm": vmm, "image": image, "system": system, "bootloader": bootloader,
             "bootloader-fallback": bootloader_fallback, "attr": attr,
             "timeout": None if timeout is None else repr(float(timeout)), "accel": accel, "firmware": firmware,
             "settings": settings, "serial-log": serial_log, "vmm-log": vmm_log}
    return ["boot", *(f"--{flag}={value}" for flag, value in flags.items() if value is not None)]


def load_boot_settings(explicit: str | None) -> BootSettings:
    """The ``[boot]`` table alone: a worker needs no other."""
    from ..config import BootSettings
    from ..settings_file import given_path, load_table
    return load_table(BootSettings, given_path(explicit))


def handle(args: argparse.Namespace) -> Outcome:
    from .run import BootRequest, boot, replay
    if args.probe:
        settings = load_boot_settings(args.settings)
        firmware = {tuple(k.split("/", 1)): v for k, v in settings.firmware.items()}
        return Outcome(probe(firmware).to_json(), format_probe)
    settings = load_boot_settings(args.settings)
    if args.replay:
        if args.bootloader or args.bootloader_fallback or args.firmware or args.accel:
            raise UsageError("--replay takes no --bootloader, --bootloader-fallback, --firmware or --accel: "
                             "it runs no VM")
        result = replay(args.replay, settings, args.timeout, args.serial_log, args.vmm_log, args.attr)
    else:
        result = boot(BootRequest(
            vmm=args.vmm, image=args.image, bootloader=args.bootloader, bootloader_fallback=args.bootloader_fallback,
            system=args.system or host_system(), attr=args.attr, timeout=args.timeout,
            serial_log=args.serial_log, vmm_log=args.vmm_log, accel=args.accel,
            firmware=args.firmware), settings)
    return Outcome(result.to_json(), format_result, 0 if result.passed else 1)


def format_result(data: dict) -> str:
    head = f"boot {data['verdict'].upper()}: {data['reason']}"
    lines = [head, f"  vmm {data['vmm']}, accel {data['accel'] or '-'}, "
                   f"verdict after {data['verdict_after']:.2f} s, VM stopped after {data['elapsed']:.2f} s"]
    vm = data.get("vm")
    if vm:
        lines.append(f"  vm {vm['memory_mb']} MB, {vm['cpus']} CPUs" + (f", {vm['nic']} network card" if vm['nic'] else ""))
    lines += [f"  {m['name']:<14} {m['at']:8.2f} s" for m in data["milestones"]]
    tests = data.get("tests")
    if tests:
        lines.append(f"  tests ({tests['prefix']}): {tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['skipped']} skipped" + ("" if tests["complete"] else ", not complete"))
        lines += [f"    {t['status']:<8} {t['name']}" + (f": {t['reason']}" if t["reason"] else "")
                  for t in tests["results"]]
    lines += [f"  harmless: {h}" for h in data["harmless"]]
    lines += [f"  note: {n}" for n in data["notes"]]
    lines += [f"  serial log: {data['serial_log']}", f"  vmm log:    {data['vmm_log']}"]
    return "\n".join(lines)


def format_probe(data: dict) -> str:
    lines = [f"host {data['host']}: KVM {'yes' if data['kvm'] else 'no'} ({data['kvm_reason']})"]
    for key, cap in data["can_boot"].items():
        lines.append(f"  {key:<32} {'yes' if cap['ok'] else 'no '}  {cap['reason']}")
    return "\n".join(lines)

