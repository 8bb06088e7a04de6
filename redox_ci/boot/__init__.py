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

__all__ = ["BootRequest", "BootResult", "boot", "probe", "replay"]
_HOMES = {"BootResult": "engine", "BootRequest": "run", "boot": "run", "replay": "run", "probe": "vmm"}


def __getattr__(name: str):
    # Imported on first use, so that `python -m redox_ci.boot.replay` (the stand-in VMM)
    # starts without loading the engine, and without runpy's double-import warning.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
