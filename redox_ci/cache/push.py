"""Push a closure to the bucket: skip what is there, stage the rest, NARs before narinfos.

The order is the cache's one promise to readers: a narinfo only ever appears after
every NAR it points to is in the bucket, so a substituter never finds a narinfo whose
NAR is missing. A path counts as cached when its narinfo exists; that needs a HEAD
request per path and never reads a NAR.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import CacheSettings
from ..errors import UsageError
from . import s3
from .keys import read_signing_key
from .narinfo import CACHE_INFO_NAME, join_key, narinfo_key, narinfo_name
from .stage import PathInfo, Staged, check_store_paths, closure, stage

CONTENT_TYPES = {".narinfo": "text/x-nix-narinfo", "": "text/x-nix-cache-info"}


@dataclass
class PushResult:
    """What a push did; ``to_json`` is what ``cache push --json`` prints."""

    bucket: str
    pushed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    # Uncompressed size of what was pushed, to compare with bytes_uploaded.
    nar_bytes: int = 0
    seconds: float = 0.0
    stage_seconds: float = 0.0
    upload_seconds: float = 0.0
    public_key: str = ""
    substituter: str = ""
    # The key file used: its path and mode ("0600"), never its content.
    signing_key_file: str = ""
    signing_key_mode: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class UploadResult:
    """What ``upload_files`` sent: full keys, bytes, seconds."""

    keys: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    seconds: float = 0.0


def substituter_url(settings: CacheSettings) -> str:
    """The URL Nix substitutes from: path-style over the endpoint, else the AWS bucket."""
    if settings.endpoint_url:
        base = f"{settings.endpoint_url.rstrip('/')}/{settings.bucket}"
    else:
        base = f"s3://{settings.bucket}"
        return base + (f"?region={settings.region}" if settings.region else "")
    prefix = settings.prefix.strip("/")
    return f"{base}/{prefix}" if prefix else base


def _require_bucket(settings: CacheSettings) -> None:
    if not settings.bucket:
        raise UsageError("no bucket: pass --bucket or set [cache].bucket")


def cached_paths(settings: CacheSettings, store_paths: list[str], credentials: dict | None = None) -> set[str]:
    """The store paths whose narinfo is already in the bucket (the paths need not exist locally)."""
    _require_bucket(settings)
    check_store_paths(store_paths)
    if not store_paths:
        return set()
    client = s3.make_client(settings, credentials)
    # HEAD answers carry no body: without this a missing bucket would read as "nothing cached".
    s3.check_bucket(client, settings)
    keys = {narinfo_key(settings.prefix, p): p for p in store_paths}
    return {keys[k] for k in s3.existing_keys(client, settings, keys)}


def upload_plan(staged: Staged, prefix: str) -> tuple[list[s3.Upload], list[s3.Upload]]:
    """(first wave: NARs and nix-cache-info, second wave: narinfos).

    Largest NARs first: the wave ends when its last upload does, and a big NAR started
    last would leave the other workers idle while it alone runs.
    """
    nars = {p.nar_file: (p.info.file_size or 0, p.info.url) for p in staged.paths}
    by_size = sorted(nars.items(), key=lambda item: (-item[1][0], item[1][1]))
    first = [s3.Upload(f, join_key(prefix, url)) for f, (_, url) in by_size]
    if staged.paths:
        first.append(s3.Upload(staged.cache_info, join_key(prefix, CACHE_INFO_NAME)))
    second = [s3.Upload(p.narinfo_file, join_key(prefix, p.narinfo_file.name)) for p in staged.paths]
    return first, second


def referenced_present(missing: list[str], present: set[str], infos: dict[str, PathInfo]) -> list[str]:
    """Paths already in the bucket that a path about to be pushed refers to."""
    return sorted({r for p in missing for r in infos[p].references} & present)


def fetch_referenced_narinfos(client, settings: CacheSettings, root: Path, missing: list[str],
                              present: set[str], infos: dict[str, PathInfo]) -> None:
    """Copy the bucket's narinfos of skipped references into the staging cache (never their NARs)."""
    root.mkdir(parents=True, exist_ok=True)
    wanted = referenced_present(missing, present, infos)
    s3.download_all(client, settings, [s3.Upload(root / narinfo_name(p), narinfo_key(settings.prefix, p))
                                       for p in wanted])


def push(settings: CacheSettings, store_paths: list[str], credentials: dict | None = None,
         signing_key_file: str | os.PathLike | None = None, stage_dir: str | os.PathLike | None = None,
         ) -> PushResult:
    """Push the closure of ``store_paths``: sign, stage and upload every path the bucket lacks."""
    start = time.monotonic()
    _require_bucket(settings)
    key_file = signing_key_file or settings.secret_key_file
    if not key_file:
        raise UsageError("no signing key: pass --signing-key FILE or set [cache].secret_key_file")
    key = read_signing_key(key_file)
    if stage_dir is not None and not Path(stage_dir).is_dir():
        raise UsageError(f"staging directory {stage_dir}: not a directory")
    infos = closure(store_paths)
    client = s3.make_client(settings, credentials)
    s3.check_bucket(client, settings)
    result = PushResult(bucket=settings.bucket, public_key=key.public_key, substituter=substituter_url(settings),
                        signing_key_file=str(key_file), signing_key_mode=f"{key.mode:04o}")

    keys = {narinfo_key(settings.prefix, p): p for p in infos}
    present = {keys[k] for k in s3.existing_keys(client, settings, keys)}
    result.skipped = sorted(present)
    missing = sorted(set(infos) - present)
    if missing:
        with tempfile.TemporaryDirectory(prefix="redox-ci-stage-", dir=stage_dir) as tmp:
            t0 = time.monotonic()
            root = Path(tmp) / "cache"
            fetch_referenced_narinfos(client, settings, root, missing, present, infos)
            staged = stage(missing, key.path, key.name, root, settings.compression)
            t1 = time.monotonic()
            first, second = upload_plan(staged, settings.prefix)
            result.bytes_uploaded = s3.upload_all(client, settings, first, "uploading NAR", CONTENT_TYPES)
            # Narinfos are a few hundred bytes: their wave waits on round trips, not bandwidth.
            result.bytes_uploaded += s3.upload_all(client, settings, second, "uploading narinfo", CONTENT_TYPES,
                                                   parallelism=s3.connection_pool_size(settings))
            result.files_uploaded = len(first) + len(second)
            result.stage_seconds, result.upload_seconds = t1 - t0, time.monotonic() - t1
        result.pushed = missing
        result.nar_bytes = sum(infos[p].nar_size for p in missing)
    result.seconds = time.monotonic() - start
    return result


def upload_files(settings: CacheSettings, local_dir: str | os.PathLike, key_prefix: str,
                 credentials: dict | None = None) -> UploadResult:
    """Upload a directory tree under ``<[cache].prefix>/<key_prefix>/`` (reports, logs)."""
    _require_bucket(settings)
    start = time.monotonic()
    root = Path(local_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    base = join_key(settings.prefix, key_prefix.strip("/"))
    uploads = [s3.Upload(p, join_key(base, p.relative_to(root).as_posix())) for p in files]
    client = s3.make_client(settings, credentials)
    s3.check_bucket(client, settings)
    sent = s3.upload_all(client, settings, uploads, "uploading")
    return UploadResult([u.key for u in uploads], sent, time.monotonic() - start)


def list_keys(settings: CacheSettings, prefix: str = "", credentials: dict | None = None) -> list[str]:
    """Keys under ``<[cache].prefix>/<prefix>``, full keys as stored in the bucket."""
    _require_bucket(settings)
    client = s3.make_client(settings, credentials)
    return s3.list_keys(client, settings, join_key(settings.prefix, prefix))
