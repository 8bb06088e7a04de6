"""Workers from the inventory: data in, Buildbot worker objects out.

Buildbot runs at most one build per builder on a worker, so the jobs of a stage (one
builder) would run one at a time on a host however large its ``max_builds``. A host
with ``max_builds = N`` is therefore N worker slots, ``NAME-1`` to ``NAME-N`` (as
buildbot-nix does): N jobs of a stage at once. Each slot takes two builds, one a job
and one the plan build that waits for it. Things that are per host, such as the VM
lock, key on the host name.

A worker builds its ``systems`` natively and its ``emulated_systems`` by emulation
(qemu-user): a job's builder takes both, and picks a free native slot first.
"""

from __future__ import annotations

import random

from buildbot.plugins import util, worker

from ..config import WorkerSpec

# A slot runs one job and, beside it, the plan build that is waiting for its stage.
BUILDS_PER_SLOT = 2


def slot_names(spec: WorkerSpec) -> list[str]:
    if spec.max_builds == 1:
        return [spec.name]
    return [f"{spec.name}-{i}" for i in range(1, spec.max_builds + 1)]


def make_workers(spec: WorkerSpec) -> list:
    props = {"worker_systems": list(spec.systems), "worker_emulated_systems": list(spec.emulated_systems),
             "worker_capabilities": list(spec.capabilities), "worker_host": spec.name}
    if spec.kind == "local":
        return [worker.LocalWorker(n, max_builds=BUILDS_PER_SLOT, properties=props) for n in slot_names(spec)]
    return [worker.Worker(n, util.Secret(f"worker-{spec.name}"), max_builds=BUILDS_PER_SLOT, properties=props)
            for n in slot_names(spec)]


def host_of(specs: list[WorkerSpec]) -> dict[str, str]:
    """Slot name -> host (inventory) name."""
    return {slot: w.name for w in specs for slot in slot_names(w)}


def names_for(specs: list[WorkerSpec], system: str, capability: str | None = None,
              emulated: bool = False) -> list[str]:
    """Worker slots that build ``system`` natively (and have ``capability``, when given);
    with ``emulated``, then those that build it by emulation. VMs boot on native ones only."""
    native = [slot for w in specs
              if system in w.systems and (capability is None or capability in w.capabilities)
              for slot in slot_names(w)]
    if not emulated:
        return native
    return native + [slot for w in specs if system in w.emulated_systems
                     and (capability is None or capability in w.capabilities) for slot in slot_names(w)]


def busy(worker) -> bool:
    """Whether a slot runs a build (a plan build waiting for its stages, say)."""
    return any(wfb.isBusy() for wfb in worker.workerforbuilders.values())


def prefer_native(native: list[str] | None):
    """A builder's ``nextWorker``: a free native slot when there is one, else any free slot
    (an emulating one: slower, but the job does not wait); among those, an idle one first,
    so that a job does not share its slot's connection with the plan build (a job that
    loses its worker then takes only itself down). ``None``: every slot is native."""
    native_set = set(native or [])

    def next_worker(builder, workers, buildrequest):
        if not workers:
            return None
        ours = [w for w in workers if native is None or w.worker.workername in native_set] or workers
        return random.choice([w for w in ours if not busy(w.worker)] or ours)
    return next_worker
