"""The binary cache on the master: a job's outputs are signed and pushed after it built.

The push runs ``redox-ci cache push`` on the worker that built them; the S3
credentials of the secrets file reach it as environment, redacted from logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buildbot.plugins import util
from buildbot.steps.download_secret_to_worker import DownloadSecretsToWorker, RemoveWorkerFileSecret
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS

from ..cache.cli import push_command_line_for
from ..secrets_file import CACHE_SIGNING_KEY
from .base import RedoxCiStep

if TYPE_CHECKING:
    from ..config import CacheSettings, LoadedSettings
    from ..secrets_file import Secrets


def cache_env(secrets: Secrets) -> dict:
    """S3 credentials for worker commands, as util.Secret so that logs redact them.

    Only those in the secrets file; without them boto3 on the worker uses its own chain.
    """
    return {f"AWS_{k.removeprefix('cache-aws_').upper()}": util.Secret(k)
            for k in secrets.values if k.startswith("cache-aws_")}


# The signing key's file in the build directory, while a push runs.
KEY_FILE = "redox-ci-cache-signing-key"


def worker_key_path(props) -> str:
    """The key file's absolute path on the worker (Buildbot's rmfile wants one)."""
    return f"{props.getProperty('builddir')}/build/{KEY_FILE}"


key_path = util.renderer(worker_key_path)


def built_outputs(props) -> list[str]:
    """The outputs the job's ``redox-ci build`` answered with (``build_result``)."""
    return (props.getProperty("build_result") or {}).get("outputs") or []


def push_args(settings: CacheSettings, key_from_master: bool):
    """The ``[cache]`` table travels as flags: no settings file on the worker for a push."""
    @util.renderer
    def render(props):
        key = worker_key_path(props) if key_from_master else settings.secret_key_file
        return push_command_line_for(settings.model_copy(update={"secret_key_file": key}), built_outputs(props))
    return render


def job_succeeded(step) -> bool:
    return (step.getProperty("build_result") or {}).get("status") == "success" and bool(built_outputs(step))


class CachePush(RedoxCiStep):
    """Sign and upload a job's outputs to the binary cache.

    Outputs of a failed job are not pushed: a cached job is not built again, so its
    failing tests would never be seen again.
    """

    def __init__(self, redox_ci: list[str], settings: CacheSettings, key_from_master: bool = False, **kwargs):
        super().__init__(redox_ci, verb_args=push_args(settings, key_from_master), name="cache push",
                         doStepIf=job_succeeded, hideStepIf=lambda results, step: results == SKIPPED, **kwargs)

    async def interpret(self, data: dict, rc: int) -> int:
        # The verb's answer as it is, one property: pushed, skipped, bytes, seconds.
        self.setProperty("push_result", data, "CachePush")
        mib = data["bytes_uploaded"] / (1024 * 1024)
        self._summary = (f"pushed {len(data['pushed'])} paths ({mib:.1f} MiB) in {data['seconds']:.1f} s, "
                         f"{len(data['skipped'])} already cached")
        return SUCCESS if rc == 0 else FAILURE


def job_steps(loaded: LoadedSettings, secrets: Secrets) -> list:
    """The steps a job build runs after its build, when the cache is on."""
    if not loaded.settings.cache.enabled:
        return []
    push = CachePush(loaded.settings.workers.command, loaded.settings.cache,
                     key_from_master=bool(secrets.cache_signing_key), env=cache_env(secrets))
    if not secrets.cache_signing_key:  # the workers hold [cache].secret_key_file
        return [push]
    return key_steps(push)


def key_steps(push: CachePush) -> list:
    """The signing key as a file of mode 0600 (never argv, environment or a log) for the
    push, removed after it whatever the push's result: Buildbot's own secret steps."""
    key = [(key_path, util.Secret(CACHE_SIGNING_KEY))]
    hide = {"hideStepIf": lambda results, step: results in (SUCCESS, SKIPPED)}
    return [DownloadSecretsToWorker(key, name="signing key to worker", doStepIf=job_succeeded, **hide),
            push,
            RemoveWorkerFileSecret(key, name="remove signing key", doStepIf=job_succeeded, alwaysRun=True,
                                         **hide)]
