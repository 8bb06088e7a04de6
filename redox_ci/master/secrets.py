"""Secrets for ``util.Secret``: read from the validated secrets file.

Buildbot redacts rendered secrets from logs, so every password and key reaches a
step only through ``util.Secret(name)`` and this provider.
"""

from __future__ import annotations

from buildbot.secrets.providers.base import SecretProviderBase


class SecretsFileProvider(SecretProviderBase):
    name = "SecretsFileProvider"

    def checkConfig(self, values: dict[str, str]) -> None:
        pass

    def reconfigService(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def get(self, entry: str) -> str | None:
        return self._values.get(entry)
