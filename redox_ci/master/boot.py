"""Boot tests on the master: after the stages, the disk image of each system is booted
on QEMU and on Cloud Hypervisor, each a job of its own.

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
from .base import WORKER_SETTINGS, RedoxCiStep, one_line, settings_download
from .pipeline import StageJob, TriggerStage, planned
from .workers import host_of, names_for

if TYPE_CHECKING:
    from ..config import BootSettings, LoadedSettings

BOOT_STAGE = "boot"
# (VMM, capability it needs on the worker)
VMMS = (("qemu", None), ("cloud-hypervisor", "kvm"))
# One VM at a time per host (all its worker slots): a TCG boot takes both cores of a small host.
VM_LOCK_PREFIX = "vm@"
# Seconds of silence, beyond the boot timeouts, before Buildbot gives up on the step.
STEP_TIMEOUT_MARGIN = 120


def boot_builder_name(system: str, vmm: str) -> str:
    return f"{system}/boot-{vmm}"


def boot_jobs(plan: Plan, image_attr: str, bootloader_attr: str) -> list[StageJob]:
    """One boot job per system whose plan has the disk image, per VMM.

    Pure: from the plan to the jobs TriggerStage starts.
    """
    systems = list(dict.fromkeys(j.system for j in plan.jobs))
    ready = (JobStatus.BUILD, JobStatus.CACHED)
    jobs = []
    for system in systems:
        # By its name or an alias: the image job may be named otherwise (redox-default, diskImage).
        image = plan.find(system, image_attr)
        if image is None:
            continue  # a forced subset without the image: nothing to boot
        loader = plan.find(system, bootloader_attr)
        for vmm, capability in VMMS:
            status, reason = JobStatus.BUILD, ""
            if image.status not in ready:
                status, reason = JobStatus.SKIPPED, f"no disk image: {image.reason}"
            elif vmm == "qemu" and (loader is None or loader.status not in ready):
                status, reason = JobStatus.SKIPPED, f"no {bootloader_attr} for {system}, which QEMU boots"
            jobs.append(StageJob(
                Job(f"boot-{vmm}", system, BOOT_STAGE, None, False, status, reason),
                route=f"{system}/{vmm}",
                no_worker=f"no worker runs {system} VMs" + (f" with the {capability} capability" if capability else ""),
                extra={"vmm": vmm, "image_paths": list(image.outputs),
                       "bootloader_paths": list(loader.outputs) if loader else []},
            ))
    return jobs


class TriggerBoots(TriggerStage):
    def __init__(self, image_attr: str, bootloader_attr: str, job_schedulers: dict[str, str], **kwargs):
        self.image_attr, self.bootloader_attr = image_attr, bootloader_attr
        super().__init__(BOOT_STAGE, job_schedulers, **kwargs)

    def stage_jobs(self) -> list[StageJob]:
        return boot_jobs(planned(self), self.image_attr, self.bootloader_attr)


@util.renderer
def boot_args(props):
    vmm = props.getProperty("vmm")
    return command_line(vmm=vmm, system=props.getProperty("system"), image=props.getProperty("image_paths")[0],
                        bootloader=props.getProperty("bootloader_paths")[0] if vmm == "qemu" else None,
                        settings=WORKER_SETTINGS, serial_log="serial.log", vmm_log="vmm.log")


@util.renderer
def realise_args(props):
    # Run by the worker (the master runs no Nix): the image and bootloader built or substituted.
    return realise_paths_argv([*props.getProperty("image_paths"), *props.getProperty("bootloader_paths")])


def boot_report(data: dict) -> tuple[str, dict[str, object], dict[str, str]]:
    """Summary, properties and logs from ``redox-ci boot --json``; a test image's results
    are counted as a build's cargo tests are (``tests_passed``, ...)."""
    table = ", ".join(f"{m['name']} {m['at']:.2f} s" for m in data["milestones"])
    props: dict[str, object] = {"boot_verdict": data["verdict"], "boot_accel": data.get("accel")}
    complete = [m["at"] for m in data["milestones"] if m["name"] == "boot-complete"]
    if complete:
        props["boot_seconds"] = complete[0]
    logs = {"milestones": "\n".join(
        [f"{m['name']:15} {m['at']:8.2f} s" for m in data["milestones"]]
        + [f"harmless: {h}" for h in data.get("harmless", [])] + data.get("notes", []))}
    tests = data.get("tests")
    if tests:
        props.update({f"tests_{key}": tests[key] for key in ("passed", "failed", "skipped", "total")})
        table += (f"; {tests['prefix']}: {tests['passed']} passed, {tests['failed']} failed, "
                  f"{tests['skipped']} skipped")
        logs["tests"] = "\n".join(f"{t['status']:8} {t['name']}" + (f": {t['reason']}" if t["reason"] else "")
                                  for t in tests["results"])
    summary = f"{data['verdict']} ({data.get('accel') or '-'}): {data['reason']}" + (f"; {table}" if table else "")
    return one_line(summary), props, logs


class BootStep(RedoxCiStep):
    """Milestone table as the summary, serial and VMM logs attached, boot time as a property;
    a test image's results one by one in a log, counted in properties."""

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
    f.addStep(steps.ShellCommand(command=realise_args, name="fetch image", haltOnFailure=True,
                                 descriptionDone="image and bootloader in the store"))
    f.addStep(settings_download(loaded))
    f.addStep(BootStep(loaded.settings.workers.command, boot_args, name="boot",
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
    """The plan builder's last step: boot each system's image, after the stages."""
    boot = loaded.settings.boot
    if not boot.enabled:
        return []
    return [TriggerBoots(boot.image_attr, boot.bootloader_attr, {b.route: b.name for b in boot_builders(loaded)})]


def builders(loaded: LoadedSettings) -> list[util.BuilderConfig]:
    return [util.BuilderConfig(name=b.name, workernames=b.workers, factory=boot_factory(loaded),
                               locks=vm_lock(loaded), tags=[b.name.split("/")[0], BOOT_STAGE])
            for b in boot_builders(loaded)]


def schedulers(loaded: LoadedSettings) -> list:
    return [redox_schedulers.triggerable(b.name, b.name) for b in boot_builders(loaded)]
