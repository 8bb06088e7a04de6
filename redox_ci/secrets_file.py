"""The secrets file: passwords and keys the master needs, kept out of settings.toml.

settings.toml goes to every worker (a step downloads it); this file stays on the
master. Its shape is a strict pydantic model like the settings; on top of it,
``load_secrets`` checks it against the settings (a password for every remote worker,
the webhook secret when the hook is on, at least one user) and reports every problem
at once as ``file: key: message``. No message and no repr shows a value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import LoadedSettings
from .errors import ConfigError
from .settings_file import error_lines, read_toml


# The util.Secret name of the GitHub status token.
GITHUB_STATUS_TOKEN = "github-status-token"


# The util.Secret name of the cache's signing key.
CACHE_SIGNING_KEY = "cache-signing-key"


class _Secret(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class CacheCredentials(_Secret):
    """S3 credentials for the cache; unset, boto3 on the worker uses its own chain."""

    aws_access_key_id: str | None = Field(default=None, repr=False)
    aws_secret_access_key: str | None = Field(default=None, repr=False)
    aws_session_token: str | None = Field(default=None, repr=False)


class Secrets(_Secret):
    """What the secrets file holds."""

    # Web UI logins allowed to force builds: name = "password".
    users: dict[str, str] = Field(default={}, repr=False)
    # Passwords of remote workers: name = "password".
    workers: dict[str, str] = Field(default={}, repr=False)
    github_webhook_secret: str | None = Field(default=None, repr=False)
    # A token that may write commit statuses ([github_status]); GitHub's fine-grained
    # "Commit statuses: write" permission is enough.
    github_status_token: str | None = Field(default=None, repr=False)
    cache: CacheCredentials = CacheCredentials()
    # The binary cache's signing key, the text of the file `nix key generate-secret` writes
    # (it may be wrapped over several lines). The master hands it to each push as a file of
    # mode 0600 in the build directory, removed after the push (master/cache.py).
    cache_signing_key: str | None = Field(default=None, repr=False)

    @property
    def values(self) -> dict[str, str]:
        """Flat name -> value, the names steps give ``util.Secret``."""
        values = {f"worker-{k}": v for k, v in self.workers.items()}
        values.update({f"cache-{k}": v for k, v in (self.cache_credentials() or {}).items()})
        if self.github_webhook_secret:
            values["github-webhook-secret"] = self.github_webhook_secret
        if self.cache_signing_key:
            values[CACHE_SIGNING_KEY] = self.cache_signing_key
        if self.github_status_token:
            values[GITHUB_STATUS_TOKEN] = self.github_status_token
        return values

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def cache_credentials(self) -> dict[str, str] | None:
        """S3 credentials from [cache]; None leaves boto3 to its chain (environment, role)."""
        return self.cache.model_dump(exclude_none=True) or None


def load_secrets(loaded: LoadedSettings) -> Secrets:
    """The secrets file the settings name, checked against the settings."""
    path = Path(loaded.settings.secrets.file)  # already resolved beside the settings file
    data = read_toml(path, "secrets")
    try:
        secrets, errors, broken = Secrets.model_validate(data), [], set()
    except ValidationError as e:
        errors = error_lines(path, e)
        # The keys that are fine still get the checks below, so every problem shows at once.
        broken = {err["loc"][0] for err in e.errors() if err["loc"]}
        secrets = Secrets.model_validate({k: v for k, v in data.items()
                                          if k in Secrets.model_fields and k not in broken})
    errors += [f"{path}: {line}" for line in _missing(secrets, loaded, broken)]
    if errors:
        raise ConfigError("\n".join(errors))
    return secrets


def _missing(secrets: Secrets, loaded: LoadedSettings, broken: set) -> list[str]:
    out = []
    if "workers" not in broken:
        out += [f"workers.{w.name}: missing password for remote worker {w.name!r}"
                for w in loaded.workers if w.kind == "remote" and not secrets.workers.get(w.name)]
    if "github_webhook_secret" not in broken and loaded.settings.www.github_webhook \
            and not secrets.github_webhook_secret:
        out.append("github_webhook_secret: missing, and [www].github_webhook is on")
    if "github_status_token" not in broken and loaded.settings.github_status.enabled \
            and not secrets.github_status_token:
        out.append("github_status_token: missing, and [github_status] is enabled")
    cache = loaded.settings.cache
    if "cache_signing_key" not in broken and cache.enabled and not cache.secret_key_file \
            and not secrets.cache_signing_key:
        out.append("cache_signing_key: missing, and [cache] is enabled without a secret_key_file on the workers")
    if "users" not in broken and not secrets.users:
        out.append('users: no users; add [users] name = "password" to allow forcing builds')
    return out
