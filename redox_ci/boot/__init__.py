"""Boot tests: boot a Redox disk image in QEMU or Cloud Hypervisor and judge its console.

For the master and for scripts (the CLI is ``redox-ci boot``)::

    from redox_ci.boot.run import BootRequest, boot
    result = boot(BootRequest(vmm="qemu", image=img_dir, bootloader=bl_dir))
    result.passed, result.to_json()

``engine`` follows the console, judges it by the image's rule and stops the VM,
``markers`` reads milestones and panics from it, ``protocol`` a test image's
FUNC_TEST / NET_TEST results, ``vmm`` builds the command lines (and ``probe``
tells what this host can boot), ``run`` ties them together with the settings,
``replay`` is a stand-in VMM for tests and benchmarks.
The package imports nothing, so that ``python -m redox_ci.boot.replay`` starts light.
"""
