"""Workers from the inventory: data in, Buildbot worker objects out."""

from __future__ import annotations

from buildbot.plugins import util, worker

from ..config import WorkerSpec


def make_worker(spec: WorkerSpec):
    props = {"worker_systems": list(spec.systems), "worker_capabilities": list(spec.capabilities)}
    if spec.kind == "local":
        return worker.LocalWorker(spec.name, max_builds=spec.max_builds, properties=props)
    return worker.Worker(spec.name, util.Secret(f"worker-{spec.name}"),
                         max_builds=spec.max_builds, properties=props)


def names_for(specs: list[WorkerSpec], system: str, capability: str | None = None) -> list[str]:
    """Workers that build ``system`` (and have ``capability``, when given)."""
    return [w.name for w in specs
            if system in w.systems and (capability is None or capability in w.capabilities)]
