"""Boot tests: boot a Redox disk image in QEMU or Cloud Hypervisor and judge its console.

Public API for the master and for scripts (the CLI is ``redox-ci boot``)::

    from redox_ci.boot import BootRequest, boot, replay, probe
    result = boot(BootRequest(vmm="qemu", image=img_dir, bootloader=bl_dir))
    result.passed, result.to_json()

``engine`` follows the console and stops the VM, ``markers`` reads milestones from
it, ``vmm`` builds the command lines, ``run`` ties them together, ``replay`` is a
stand-in VMM for tests and benchmarks.
"""

from __future__ import annotations

from .engine import BootResult
from .run import BootRequest, boot, replay
from .vmm import probe

__all__ = ["BootRequest", "BootResult", "boot", "probe", "replay"]
