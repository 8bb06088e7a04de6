"""Settings in, ``BuildmasterConfig`` out: the one function master.cfg calls."""

from __future__ import annotations

from pathlib import Path

from buildbot.config.errors import ConfigErrors

from ..config import LoadedSettings
from ..errors import ConfigError
from ..secrets_file import load_secrets
from ..settings_file import load
from . import builders, repro, schedulers, www
from .boot import boot_builders
from .dashboard import dashboard_plugin
from .secrets import SecretsFileProvider
from .superseded import superseded_canceller
from .workers import make_workers


def build_config(loaded: LoadedSettings) -> dict:
    settings = loaded.settings
    secrets = load_secrets(loaded)
    jobs = builders.stage_builders(loaded)
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
        "change_source": [schedulers.poller(settings)],
        # Each triggered job is its own request; collapsing would merge different attributes.
        "collapseRequests": False,
        "builders": [*builders.builder_configs(loaded, secrets), *repro.repro_builders(loaded, secrets)],
        "schedulers": [
            schedulers.commit_scheduler(settings, builders.PLAN_BUILDER),
            schedulers.force_scheduler(settings, builders.PLAN_BUILDER),
            schedulers.triggerable(builders.REPORT_BUILDER, builders.REPORT_BUILDER),
            *[schedulers.triggerable(b.name, b.name) for b in jobs],
            *[schedulers.triggerable(name, name) for _, name, _ in boot_builders(loaded)
              if settings.boot.enabled],
            *repro.repro_schedulers(loaded),
        ],
        # A new commit on a branch cancels the older commit's pipeline (forced builds never).
        "services": [superseded_canceller(builders.PLAN_BUILDER, schedulers.PLAN_SCHEDULER)],
        "www": www.www_config(settings, secrets.users,
                              dashboard_plugin(settings.cache, settings.www.url, secrets.cache_credentials())),
    }
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
