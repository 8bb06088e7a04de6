"""Prometheus metrics of the pipeline, served on the address ``[metrics].listen`` names.

A Buildbot service reads every finished build from the message queue, once, and counts
it: jobs by system, stage and result, job and plan durations, cache hits and misses of
the plans and what the pushes uploaded, boot times and verdicts, test counts and the
nightly reproducibility verdicts; build request events keep the queue length. Labels
are only the bounded names the settings and verbs define (system, stage, result, VMM,
verdict, test outcome): never an attribute, a build or a commit, so the number of
series does not grow with the builds. prometheus_client keeps the numbers and writes
the text Prometheus reads, from a registry of the master's own.
"""

from __future__ import annotations

from buildbot.data import resultspec
from buildbot.process.results import statusToString
from buildbot.util import service
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.twisted import MetricsResource
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.python import log
from twisted.web.resource import Resource
from twisted.web.server import Site

from ..config import LoadedSettings
from ..plan import JobStatus, Plan
from .commits import job_build_facts, unsourced
from .pipeline import PLAN_BUILDER
from .repro import REPRO_BUILDER

# Seconds: a cached job or a report takes seconds, a host tool minutes, a toolchain hours.
JOB_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# A plan whose outputs are all cached is minutes (its evaluation); a full build a day.
PLAN_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 57600, 86400)
# Seconds to Boot Complete: seconds with KVM, a minute or more under TCG (timeouts 90/180 s).
BOOT_BUCKETS = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300)
METRICS_PATH = b"metrics"


class Metrics:
    """The instruments, in a registry of their own."""

    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter("redox_ci_jobs", "Job builds finished, by system, stage and result",
                            ["system", "stage", "result"], registry=r)
        self.job_seconds = Histogram("redox_ci_job_duration_seconds", "Job build durations, by stage",
                                     ["stage"], buckets=JOB_BUCKETS, registry=r)
        self.plans = Counter("redox_ci_plans", "Pipelines (plan builds) finished, by result", ["result"], registry=r)
        self.plan_seconds = Histogram("redox_ci_plan_duration_seconds", "Pipeline durations, evaluation to last boot",
                                      buckets=PLAN_BUCKETS, registry=r)
        self.queue = Gauge("redox_ci_queue_length", "Build requests waiting for a worker", registry=r)
        self.cache_hits = Counter("redox_ci_cache_hits", "Planned jobs whose outputs the cache had (not built)",
                                  registry=r)
        self.cache_misses = Counter("redox_ci_cache_misses", "Planned jobs the cache lacked (built)", registry=r)
        self.pushed_paths = Counter("redox_ci_cache_pushed_paths", "Store paths uploaded to the cache", registry=r)
        self.pushed_bytes = Counter("redox_ci_cache_pushed_bytes", "Bytes uploaded to the cache", registry=r)
        self.boot_seconds = Histogram("redox_ci_boot_seconds", "Seconds from the VM's start to Boot Complete",
                                      ["system", "vmm"], buckets=BOOT_BUCKETS, registry=r)
        self.boots = Counter("redox_ci_boots", "Boots finished, by verdict", ["system", "vmm", "verdict"], registry=r)
        self.tests = Counter("redox_ci_tests", "Tests run by job builds and VM tests, by outcome",
                             ["stage", "outcome"], registry=r)
        self.repro = Counter("redox_ci_repro_verdicts", "Nightly reproducibility verdicts, per attribute compared",
                             ["verdict"], registry=r)


def duration(build: dict) -> float | None:
    start, end = build.get("started_at"), build.get("complete_at")
    return (end - start).total_seconds() if start and end else None


def record(m: Metrics, builder: str, build: dict, properties: dict, plan_builder: str, repro_builder: str) -> None:
    """Count one finished build (data API form) in ``m``."""
    result = statusToString(build["results"])
    seconds = duration(build)
    props = unsourced(properties)
    if builder == plan_builder:
        m.plans.labels(result).inc()
        if seconds is not None:
            m.plan_seconds.observe(seconds)
        if props.get("plan"):
            statuses = [j.status for j in Plan.from_json(props["plan"]).jobs]
            m.cache_hits.inc(statuses.count(JobStatus.CACHED))
            m.cache_misses.inc(statuses.count(JobStatus.BUILD))
        return
    if builder == repro_builder:
        for verdict, n in (props.get("repro_counts") or {}).items():
            m.repro.labels(verdict).inc(n)
        return
    facts = job_build_facts(props)
    if facts is None:
        return
    job = facts.job
    m.jobs.labels(job.system, job.stage, result).inc()
    if seconds is not None:
        m.job_seconds.labels(job.stage).observe(seconds)
    if facts.tests:
        for outcome, n in (("passed", facts.tests.passed), ("failed", facts.tests.failed),
                           ("ignored", facts.tests.ignored)):
            if n:
                m.tests.labels(job.stage, outcome).inc(n)
    if facts.cache:
        m.pushed_paths.inc(facts.cache[0])
    m.pushed_bytes.inc(facts.pushed_bytes)
    boot = facts.boot
    if boot and boot.verdict:
        vmm = boot.vmm or job.attr.removeprefix("boot-")
        m.boots.labels(job.system, vmm, boot.verdict).inc()
        if boot.seconds is not None:
            m.boot_seconds.labels(job.system, vmm).observe(boot.seconds)


class QuietSite(Site):
    """No access log: Prometheus scrapes every few seconds, and twistd.log is for builds."""

    def log(self, request):
        pass


class MetricsService(service.BuildbotService):
    """Counts finished builds from the message queue and serves /metrics."""

    name = "redox-ci-metrics"

    def checkConfig(self, interface: str, port: int, plan_builder: str, repro_builder: str):
        pass

    def reconfigService(self, interface: str, port: int, plan_builder: str, repro_builder: str):
        self.names = (plan_builder, repro_builder)
        if getattr(self, "metrics", None) is None:
            self.metrics = Metrics()
        address_changed = getattr(self, "address", None) not in (None, (interface, port))
        self.address = (interface, port)
        if address_changed and self.running:
            return defer.ensureDeferred(self._relisten())
        return defer.succeed(None)

    def startService(self):
        return defer.ensureDeferred(self._start())

    async def _start(self):
        await super().startService()  # configures the service first when it is not yet
        self._consumers = [
            await self.master.mq.startConsuming(self._finished, ("builds", None, "finished")),
            await self.master.mq.startConsuming(self._queue_changed, ("buildrequests", None, None)),
        ]
        self._refreshing = self._dirty = False
        self._listen()
        self._queue_changed(None, None)

    def _listen(self):
        root = Resource()
        root.putChild(METRICS_PATH, MetricsResource(self.metrics.registry))
        interface, port = self.address
        try:
            self._port = self.master.reactor.listenTCP(port, QuietSite(root), interface=interface)
        except CannotListenError as e:
            # The builds matter more than their numbers: the master runs on without them.
            self._port = None
            log.msg(f"metrics: NO Prometheus endpoint: cannot listen on {interface}:{port} ([metrics].listen): "
                    f"{e.socketError}")
            return
        log.msg(f"metrics: Prometheus endpoint on http://{interface}:{port}/metrics")

    async def _relisten(self):
        if self._port is not None:
            await self._port.stopListening()
        self._listen()

    def stopService(self):
        return defer.ensureDeferred(self._stop())

    async def _stop(self):
        for consumer in getattr(self, "_consumers", []):
            consumer.stopConsuming()
        self._consumers = []
        if getattr(self, "_port", None) is not None:
            await self._port.stopListening()
            self._port = None
        await super().stopService()

    def _finished(self, key, build):
        defer.ensureDeferred(self._count(build)).addErrback(log.err, "metrics: cannot count a build")

    async def _count(self, build: dict):
        builder = await self.master.data.get(("builders", build["builderid"]))
        properties = await self.master.data.get(("builds", build["buildid"], "properties"))
        record(self.metrics, builder["name"], build, properties, *self.names)

    def _queue_changed(self, key, msg):
        # One count at a time; events during a count ask for one more after it.
        if self._refreshing:
            self._dirty = True
            return
        defer.ensureDeferred(self._refresh_queue()).addErrback(log.err, "metrics: cannot count the queue")

    async def _refresh_queue(self):
        self._refreshing = True
        try:
            while True:
                self._dirty = False
                waiting = await self.master.data.get(("buildrequests",), filters=[
                    resultspec.Filter("claimed", "eq", [False]), resultspec.Filter("complete", "eq", [False])])
                self.metrics.queue.set(len(waiting))
                if not self._dirty:
                    return
        finally:
            self._refreshing = False


def services(loaded: LoadedSettings) -> list:
    """The metrics service, when [metrics].listen names an address."""
    address = loaded.settings.metrics.address
    if address is None:
        return []
    return [MetricsService(*address, plan_builder=PLAN_BUILDER, repro_builder=REPRO_BUILDER)]
