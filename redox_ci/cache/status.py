"""Which store paths the cache already holds: the question ``cache status`` and the plan ask."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import CacheSettings
from .push import cached_paths, substituter_url


@dataclass
class CacheStatus:
    """Which paths the bucket holds; ``to_json`` is what ``cache status --json`` prints."""

    bucket: str
    substituter: str
    cached: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> dict:
        return asdict(self)


def status(settings: CacheSettings, store_paths: list[str], credentials: dict | None = None) -> CacheStatus:
    found = cached_paths(settings, store_paths, credentials)
    ordered = list(dict.fromkeys(store_paths))
    return CacheStatus(bucket=settings.bucket, substituter=substituter_url(settings),
                       cached=[p for p in ordered if p in found],
                       missing=[p for p in ordered if p not in found])
