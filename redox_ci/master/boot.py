"""Boot tests on the master: after the stages, each system's boot image ([boot].image_attr,
the flake's bootTest) and VM test images ([boot].test_images: redox-functional-test, ...)
are booted on QEMU and on Cloud Hypervisor (those an image's ``vmms`` allow), each a job
of its own. A test image's FUNC_TEST / NET_TEST results are the job's tests, one by one.

Cloud Hypervisor needs KVM, so it runs only on workers with the ``kvm`` capability;
a worker-wide lock keeps VMs from oversubscribing a worker. A boot that cannot run
(no image, no such worker) is SKIPPED with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildbot.plugins import steps, util
from buildbot.process.results import FAILURE, SUCCESS

from ..boot.cli import command_line
from ..nix import realise_paths_argv
from ..plan import Job, JobStatus, Plan
from . import schedulers as redox_schedulers
from .base import WORKER_SETTINGS, RedoxCiStep, job_of, one_line
from .pipeline import StageJob, TriggerStage
from .retries import capped_build
from .workers import host_of, names_for

if TYPE_CHECKING:
    from ..config import BootSettings, LoadedSettings

BOOT_STAGE = "boot"
# The property of a boot build beside ``job``: which VMM boots which image, with which loader.
BOOT_PROPERTY = "boot"
# (VMM, capability it needs on the worker)
VMMS = (("qemu", None), ("cloud-hypervisor", "kvm"))
# One VM at a time per host (all its worker slots): a TCG boot takes both cores of a small host.
VM_LOCK_PREFIX = "vm@"
# Seconds of silence, beyond the boot timeouts, before Buildbot gives up on the step.
STEP_TIMEOUT_MARGIN = 120


def boot_builder_name(system: str, vmm: str) -> str:
    return f"{system}/boot-{vmm}"


def boot_job_attr(vmm: str, image: str, boot_image: str) -> str:
    """``boot-<vmm>`` for the boot test's image, ``boot-<vmm>-<image>`` for a test image."""
    return f"boot-{vmm}" if image == boot_image else f"boot-{vmm}-{image}"


def boot_jobs(plan: Plan, boot: BootSettings) -> list[StageJob]:
    """One boot job per system, image the plan has and VMM the image boots on.

    Pure: from the plan to the jobs TriggerStage starts.
    """
    systems = list(dict.fromkeys(j.system for j in plan.jobs))
    ready = (JobStatus.BUILD, JobStatus.CACHED)
    jobs = []
    for system in systems:
        loader = plan.find(system, boot.bootloader_attr)
        for attr in boot.booted_images():
            # By its name or an alias: the image job may be named otherwise (redox-default, diskImage).
            image = plan.find(system, attr)
            if image is None:
                continue  # a flake without it, or a forced subset: nothing to boot
            for vmm, capability in VMMS:
                if vmm not in boot.image(attr).vmms:
                    continue
                status, reason = JobStatus.BUILD, ""
                if image.status not in ready:
                    status, reason = JobStatus.SKIPPED, f"no disk image: {image.reason}"
                elif vmm == "qemu" and (loader is None or loader.status not in ready):
                    status, reason = JobStatus.SKIPPED, f"no {boot.bootloader_attr} for {system}, which QEMU boots"
                # Not booted when the image (or QEMU's bootloader) was to be built and was not.
                needed = [image, loader] if vmm == "qemu" else [image]
                after = [j.name for j in needed if j is not None and j.status == JobStatus.BUILD]
                jobs.append(StageJob(
                    Job(boot_job_attr(vmm, attr, boot.image_attr), system, BOOT_STAGE, None, False, status, reason,
                        after=after),
                    route=f"{system}/{vmm}",
                    no_worker=f"no worker runs {system} VMs" + (f" with the {capability} capability" if capability else ""),
                    extra={BOOT_PROPERTY: {"vmm": vmm, "image_attr": attr, "image_paths": list(image.outputs),
                                           "bootloader_paths": list(loader.outputs) if loader else []}},
                ))
    return jobs


class TriggerBoots(TriggerStage):
    def __init__(self, boot: BootSettings, job_schedulers: dict[str, str], **kwargs):
        self.boot = boot
        super().__init__(BOOT_STAGE, job_schedulers, **kwargs)

    def jobs_of(self, plan: Plan) -> list[StageJob]:
        return boot_jobs(plan, self.boot)


@util.renderer
def boot_args(props):
    boot = props.getProperty(BOOT_PROPERTY)
    vmm = boot["vmm"]
    return command_line(vmm=vmm, system=job_of(props).system, image=boot["image_paths"][0],
                        # The image's own loader first (make-disk-image copies it in), as built with it.
                        bootloader_fallback=boot["bootloader_paths"][0] if vmm == "qemu" else None,
                        attr=boot["image_attr"], settings=WORKER_SETTINGS, serial_log="serial.log", vmm_log="vmm.log")


@util.renderer
def realise_args(props):
    # Run by the worker (the master runs no Nix): the image and bootloader built or substituted.
    boot = props.getProperty(BOOT_PROPERTY)
    return realise_paths_argv([*boot["image_paths"], *boot["bootloader_paths"]])


def results_listing(tests: dict) -> str:
    """A test image's results one by one: verdict, name, a failure's reason."""
    lines = [f"{t['status']:8} {t['name']}" + (f": {t['reason']}" if t["reason"] else "") for t in tests["results"]]
    lines += [f"unreadable {line}" for line in tests.get("unreadable", [])]
    if not tests["complete"]:
        lines.append(f"(no {tests['prefix']}S_COMPLETE: the image did not finish its tests)")
    return "\n".join(lines)


def boot_report(data: dict) -> tuple[str, dict[str, object], dict[str, str]]:
    """Summary, properties and logs from ``redox-ci boot --json``: the answer itself is the
    one property ``boot_result`` (verdict, accel, milestones, a test image's tests); a test
    image's results are listed in the ``tests`` log."""
    table = ", ".join(f"{m['name']} {m['at']:.2f} s" for m in data["milestones"])
    props: dict[str, object] = {"boot_result": data}
    logs = {"milestones": "\n".join(
        [f"{m['name']:15} {m['at']:8.2f} s" for m in data["milestones"]]
        + [f"harmless: {h}" for h in data.get("harmless", [])] + data.get("notes", []))}
    tests = data.get("tests")
    if tests:
        table += (f"; {tests['prefix']}: {tests['passed']} passed, {tests['failed']} failed, "
                  f"{tests['skipped']} skipped")
        logs["tests"] = results_listing(tests)
    summary = f"{data['verdict']} ({data.get('accel') or '-'}): {data['reason']}" + (f"; {table}" if table else "")
    return one_line(summary), props, logs


class BootStep(RedoxCiStep):
    """Milestone table as the summary, serial and VMM logs attached, the answer as the
    ``boot_result`` property; a test image's results one by one in a log."""

    async def interpret(self, data: dict, rc: int) -> int:
        for name, path in (("serial", data.get("serial_log")), ("vmm", data.get("vmm_log"))):
            text = await self.getFileContentFromWorker(path) if path else None
            if text:
                await self.addCompleteLog(name, text)
        summary, props, logs = boot_report(data)
        for name, text in logs.items():
            await self.addCompleteLog(name, text)
        for name, value in props.items():
            self.setProperty(name, value, "BootStep")
        self._summary = summary
        return SUCCESS if data["verdict"] == "pass" else FAILURE


def longest_boot(boot: BootSettings) -> float:
    """Seconds the longest boot may take: the step's silence timeout must outlast it."""
    return max([boot.timeout, boot.tcg_timeout,
                *(t for image in boot.images.values() for t in (image.timeout, image.tcg_timeout) if t)])


def boot_factory(loaded: LoadedSettings) -> util.BuildFactory:
    boot = loaded.settings.boot
    f = util.BuildFactory()
    # A boot that takes its worker down (a VM eating the host) runs again only so often.
    f.buildClass = capped_build(loaded.settings.jobs.retries)
    f.addStep(steps.ShellCommand(command=realise_args, name="fetch image", haltOnFailure=True,
                                 descriptionDone="image and bootloader in the store"))
    f.addStep(BootStep(loaded.settings.workers.command, boot_args, name="boot",
                       settings_text=loaded.path.read_text(),
                       # TERM, not KILL: redox-ci then stops the VM's whole process group.
                       interruptSignal="TERM",
                       timeout=int(longest_boot(boot) + STEP_TIMEOUT_MARGIN)))
    return f


@dataclass(frozen=True)
class BootBuilder:
    """The builder of one system's boots on one VMM; ``route`` is ``StageJob.route``."""

    route: str
    name: str
    workers: list[str]


def boot_builders(loaded: LoadedSettings) -> list[BootBuilder]:
    """One for each system and VMM some worker can run; none when boots are off."""
    if not loaded.settings.boot.enabled:
        return []
    out = []
    for system in loaded.settings.flake.systems:
        for vmm, capability in VMMS:
            workers = names_for(loaded.workers, system, capability)
            if workers:
                out.append(BootBuilder(f"{system}/{vmm}", boot_builder_name(system, vmm), workers))
    return out


def vm_lock(loaded: LoadedSettings):
    """The lock of the host the build runs on, whichever of its slots that is."""
    hosts = host_of(loaded.workers)

    @util.renderer
    def render(props):
        host = hosts.get(props.getProperty("workername"), props.getProperty("workername"))
        return [util.MasterLock(VM_LOCK_PREFIX + host, maxCount=1).access("counting")]
    return render


def stage_steps(loaded: LoadedSettings) -> list[TriggerStage]:
    """The plan builder's last step: boot each system's images, after the stages."""
    boot = loaded.settings.boot
    if not boot.enabled:
        return []
    return [TriggerBoots(boot, {b.route: b.name for b in boot_builders(loaded)})]


def builders(loaded: LoadedSettings) -> list[util.BuilderConfig]:
    return [util.BuilderConfig(name=b.name, workernames=b.workers, factory=boot_factory(loaded),
                               locks=vm_lock(loaded), tags=[b.name.split("/")[0], BOOT_STAGE])
            for b in boot_builders(loaded)]


def schedulers(loaded: LoadedSettings) -> list:
    return [redox_schedulers.triggerable(b.name, b.name) for b in boot_builders(loaded)]
