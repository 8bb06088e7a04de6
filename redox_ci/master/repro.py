"""The nightly reproducibility run: scheduler, force button, builder and its step.

The step runs ``redox-ci repro`` on a worker, which rebuilds, compares, writes the
report and uploads it to the cache bucket under ``reports/``; the step shows the
verdicts, attaches each diffoscope report as an HTML log and keeps the counts as
properties.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buildbot.plugins import schedulers as bb_schedulers
from buildbot.plugins import steps, util
from buildbot.process.results import FAILURE, SUCCESS

from .. import names
from ..repro.cli import command_line
from . import schedulers as redox_schedulers
from .base import WORKER_SETTINGS, RedoxCiStep, ResolveFlake, one_line, settings_download
from .cache import cache_env
from .retries import PLAN_RETRIES, capped_build
from .workers import names_for

if TYPE_CHECKING:
    from ..config import LoadedSettings
    from ..secrets_file import Secrets

REPRO_BUILDER = "redox/repro"
FORCE_REPRO_SCHEDULER = "force-repro"


def report_dir(props) -> str:
    return f"repro-{props.getProperty('buildnumber')}"


def repro_args(loaded: LoadedSettings):
    settings = loaded.settings

    @util.renderer
    def render(props):
        attrs = names.parse_attrs(props.getProperty("attrs") or "") or None
        args = command_line(settings.repro, props.getProperty("flake_ref"), report_dir=report_dir(props),
                            attrs=attrs, program=[])
        if settings.cache.enabled:
            args += ["--upload", WORKER_SETTINGS]
        return args
    return render


class ReproStep(RedoxCiStep):
    """Verdicts per attribute; diffoscope reports as HTML logs; the upload's outcome."""

    async def interpret(self, data: dict, rc: int) -> int:
        results = data["results"]
        counts = data["counts"]
        bad = [r["attr"] for r in results if r["status"] == "unreproducible"]
        failed = [r["attr"] for r in results if r["status"] == "build-failed"]
        self.setProperty("repro_counts", counts, "ReproStep")
        self.setProperty("repro_unreproducible", bad, "ReproStep")
        self.setProperty("repro_report", data["key_prefix"], "ReproStep")
        await self.addCompleteLog("verdicts", "\n".join(
            f"{r['attr']:24} {r['status']:15} "
            + ", ".join(f"{o}: {h.get('first')} / {h.get('second')}" for o, h in r["hashes"].items())
            + "".join(f"\n    {d['output']}:{d['path']} ({d['kind']})" for d in r["differences"])
            for r in results))
        for r in results:
            for d in r["diffoscope"]:
                if d.get("html"):
                    html = await self.getFileContentFromWorker(f"{data['report_dir']}/{d['html']}")
                    if html:
                        await self.addHTMLLog(f"diffoscope {r['attr']} {d['output']}", html)
        text = f"{counts['reproducible']} reproducible"
        if bad:
            text += f", NOT reproducible: {', '.join(bad)}"
        if failed:
            text += f", failed to build: {', '.join(failed)}"
        upload = data.get("upload")
        if upload and not upload["ok"]:
            text += f"; report NOT uploaded: {upload['error']}"
        elif upload:
            text += f"; report in {upload['bucket']}/{upload['prefix']}"
        self._summary = one_line(text)
        if bad or failed or (upload and not upload["ok"]):
            return FAILURE
        return SUCCESS


def repro_factory(loaded: LoadedSettings, secrets: Secrets) -> util.BuildFactory:
    f = util.BuildFactory()
    # A nightly run whose worker is lost runs again once, not for ever.
    f.buildClass = capped_build(PLAN_RETRIES)
    # Old nights' reports must not be uploaded again with tonight's.
    f.addStep(steps.RemoveDirectory(dir="build", name="clean", hideStepIf=lambda r, s: r == SUCCESS))
    f.addStep(ResolveFlake(loaded.settings.flake.repo))
    f.addStep(settings_download(loaded))
    f.addStep(ReproStep(loaded.settings.workers.command, repro_args(loaded), name="reproducibility",
                        env=cache_env(secrets)))
    return f


def builders(loaded: LoadedSettings, secrets: Secrets) -> list[util.BuilderConfig]:
    workers = names_for(loaded.workers, loaded.settings.repro.system)
    if not workers:
        return []
    return [util.BuilderConfig(name=REPRO_BUILDER, workernames=workers, factory=repro_factory(loaded, secrets),
                               tags=["nightly", "repro"])]


def schedulers(loaded: LoadedSettings) -> list:
    r = loaded.settings.repro
    if not r.enabled or not names_for(loaded.workers, r.system):
        return []
    nightly = [bb_schedulers.Nightly(name=f"nightly-repro-{branch.replace('/', '-')}", builderNames=[REPRO_BUILDER],
                                  branch=branch, hour=r.hour, minute=r.minute, onlyIfChanged=False)
               for branch in r.branches]
    force = redox_schedulers.force_scheduler(
        loaded.settings, REPRO_BUILDER, name=FORCE_REPRO_SCHEDULER, label="Run the reproducibility check now",
        with_systems=False)
    return [*nightly, force]
