"""The binary cache on the master: a job's outputs are signed and pushed after it built.

The push runs ``redox-ci cache push`` on the worker that built them; the S3
credentials of the secrets file reach it as environment, redacted from logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buildbot.plugins import util
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS

from ..cache.cli import push_command_line
from .base import WORKER_SETTINGS, RedoxCiStep, settings_download

if TYPE_CHECKING:
    from ..config import LoadedSettings
    from ..secrets_file import Secrets


def cache_env(secrets: Secrets) -> dict:
    """S3 credentials for worker commands, as util.Secret so that logs redact them.

    Only those in the secrets file; without them boto3 on the worker uses its own chain.
    """
    return {f"AWS_{k.removeprefix('cache-aws_').upper()}": util.Secret(k)
            for k in secrets.values if k.startswith("cache-aws_")}


@util.renderer
def push_args(props):
    return push_command_line(props.getProperty("out_paths"), settings=WORKER_SETTINGS)


def job_succeeded(step) -> bool:
    return step.getProperty("build_status") == "success" and bool(step.getProperty("out_paths"))


class CachePush(RedoxCiStep):
    """Sign and upload a job's outputs to the binary cache.

    Outputs of a failed job are not pushed: a cached job is not built again, so its
    failing tests would never be seen again.
    """

    def __init__(self, redox_ci: list[str], **kwargs):
        super().__init__(redox_ci, verb_args=push_args, name="cache push", doStepIf=job_succeeded,
                         hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    async def interpret(self, data: dict, rc: int) -> int:
        self.setProperty("cache_pushed", len(data["pushed"]), "CachePush")
        self.setProperty("cache_skipped", len(data["skipped"]), "CachePush")
        mib = data["bytes_uploaded"] / (1024 * 1024)
        self._summary = (f"pushed {len(data['pushed'])} paths ({mib:.1f} MiB) in {data['seconds']:.1f} s, "
                         f"{len(data['skipped'])} already cached")
        return SUCCESS if rc == 0 else FAILURE


def job_steps(loaded: LoadedSettings, secrets: Secrets) -> list:
    """The steps a job build runs after its build, when the cache is on."""
    if not loaded.settings.cache.enabled:
        return []
    return [settings_download(loaded, doStepIf=job_succeeded),
            CachePush(loaded.settings.workers.command, env=cache_env(secrets))]
