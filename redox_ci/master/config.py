"""Settings in, ``BuildmasterConfig`` out: the one function master.cfg calls."""

from __future__ import annotations

from pathlib import Path

from buildbot.config.errors import ConfigErrors

from ..config import LoadedSettings
from ..errors import ConfigError
from ..secrets_file import load_secrets
from ..settings_file import load
from . import boot, evaluation, github_status, jobs, metrics, pipeline, repro, sqlite, www
from .batched_properties import batched_build_properties
from .build_order import prioritize_builders
from .commits_app import commits_plugin
from .dashboard import dashboard_plugin
from .secrets import SecretsFileProvider
from .schedulers import poller
from .workers import make_workers


def build_config(loaded: LoadedSettings) -> dict:
    settings = loaded.settings
    secrets = load_secrets(loaded)
    # The plan build's steps that start the stages' jobs and the boots.
    stage_steps = [*jobs.stage_steps(loaded), *boot.stage_steps(loaded)]
    c: dict = {
        "title": "redox-ci",
        "titleURL": settings.flake.repo if "://" in settings.flake.repo else None,
        "buildbotURL": settings.www.url,
        # No usage data sent anywhere.
        "buildbotNetUsageData": None,
        "db": {"db_url": settings.database.url},
        "protocols": {"pb": {"port": www.listen_on(settings.workers.port, settings.workers.interface)}},
        "workers": [slot for w in loaded.workers for slot in make_workers(w)],
        "secretsProviders": [SecretsFileProvider(secrets.values)],
        "change_source": [poller(settings)],
        # Each triggered job is its own request; collapsing would merge different attributes.
        "collapseRequests": False,
        # One query per round of the build request distributor, not three per builder.
        "prioritizeBuilders": prioritize_builders,
        # Each slice's own, one after the other: the plan's stages start the jobs and boots.
        "builders": [
            *pipeline.builders(loaded, secrets, stage_steps, evaluation.plan_steps(loaded, secrets)),
            *evaluation.builders(loaded, secrets),
            *jobs.builders(loaded, secrets),
            *boot.builders(loaded),
            *repro.builders(loaded, secrets),
        ],
        "schedulers": [
            *pipeline.schedulers(settings),
            *evaluation.schedulers(loaded),
            *jobs.schedulers(loaded),
            *boot.schedulers(loaded),
            *repro.schedulers(loaded),
        ],
        "services": [batched_build_properties(), *sqlite.services(settings.database.url),
                     *pipeline.services(), *jobs.services(loaded),
                     *github_status.services(loaded, stage_steps),
                     *metrics.services(loaded)],
        "www": www.www_config(settings, secrets.users,
                              dashboard_plugin(settings.cache, settings.www.url, secrets.cache_credentials())),
    }
    c["www"]["plugins"]["wsgi_dashboards"].append(commits_plugin(settings, secrets.cache_credentials()))
    return c


def master_config(basedir: str | Path) -> dict:
    """For master.cfg: load settings beside the master (or $REDOX_CI_SETTINGS).

    A ConfigError becomes Buildbot's configuration error: the master refuses to
    start and prints the message, not a traceback.
    """
    try:
        return build_config(load(basedir=Path(basedir)))
    except ConfigError as e:
        raise ConfigErrors(str(e).splitlines()) from None
