"""``redox-ci cache``: push, status, serve, keygen; thin faces over the cache modules.

The Buildbot step runs exactly these commands with ``--json``. Settings come from the
``[cache]`` section of the settings file (``--settings``, else ``$REDOX_CI_SETTINGS``,
else none) and flags override it. Credentials come from boto3's chain: environment,
profile, instance role.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from ..outcome import Outcome
from . import localserver

# The handlers import the settings (pydantic), push, status and keys (boto3) when they
# run: a job's `redox-ci build` needs none of them, and they are most of the start-up.
if TYPE_CHECKING:
    from ..config import CacheSettings

KIB = 1024
# Flag name -> CacheSettings field, for the flags that override the settings file.
OVERRIDES = {"bucket": "bucket", "endpoint_url": "endpoint_url", "region": "region",
             "prefix": "prefix", "compression": "compression", "parallelism": "upload_parallelism",
             "max_attempts": "max_attempts", "multipart_threshold_mb": "multipart_threshold_mb",
             "public_read": "public_read"}


def settings_from_args(args: argparse.Namespace) -> CacheSettings:
    """The ``[cache]`` table alone (a worker needs nothing else), then the flags over it."""
    from ..config import CacheSettings
    from ..settings_file import given_path, load_table, validate
    base = load_table(CacheSettings, given_path(args.settings))
    # A flag a caller's namespace lacks (an older face, a test) is simply not given.
    flags = {field: getattr(args, flag, None) for flag, field in OVERRIDES.items()
             if getattr(args, flag, None) is not None}
    return validate(CacheSettings, {**base.model_dump(), **flags}, "command line", prefix="--")


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < KIB or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KIB
    raise AssertionError("unreachable")


def human_push(r: dict) -> str:
    lines = [
        f"pushed {len(r['pushed'])} paths, skipped {len(r['skipped'])} already in bucket {r['bucket']!r}",
        f"uploaded {size(r['bytes_uploaded'])} in {r['files_uploaded']} files "
        f"({size(r['nar_bytes'])} uncompressed NARs) in {r['seconds']:.1f} s "
        f"(staging {r['stage_seconds']:.1f} s, upload {r['upload_seconds']:.1f} s)",
        f"substituter: {r['substituter']}",
        f"trusted public key: {r['public_key']}",
        f"signed with the key file {r['signing_key_file']} (mode {r['signing_key_mode']})",
    ]
    return "\n".join(lines + [f"  pushed {p}" for p in r["pushed"]])


def human_status(r: dict) -> str:
    lines = [f"{len(r['cached'])} cached, {len(r['missing'])} missing in bucket {r['bucket']!r}"]
    lines += [f"  cached  {p}" for p in r["cached"]] + [f"  missing {p}" for p in r["missing"]]
    return "\n".join(lines)


def do_push(args: argparse.Namespace) -> Outcome:
    from .push import push
    result = push(settings_from_args(args), args.store_paths, signing_key_file=args.signing_key,
                  stage_dir=args.stage_dir)
    return Outcome(result.to_json(), human_push)


def do_status(args: argparse.Namespace) -> Outcome:
    from .status import status
    result = status(settings_from_args(args), args.store_paths)
    return Outcome(result.to_json(), human_status, 0 if result.complete else 1)


def do_keygen(args: argparse.Namespace) -> Outcome:
    from .keys import generate_keypair
    secret, public, key = generate_keypair(args.name, args.out_dir)
    result = {"name": args.name, "secret_key_file": str(secret), "public_key_file": str(public), "public_key": key}
    return Outcome(result, lambda r: (f"wrote {r['secret_key_file']} (keep it secret) and "
                                      f"{r['public_key_file']}\npublic key: {r['public_key']}"))


def push_command_line(store_paths: list[str], *, settings: str | None = None, bucket: str | None = None,
                      endpoint_url: str | None = None, region: str | None = None, prefix: str | None = None,
                      signing_key: str | None = None, compression: str | None = None,
                      parallelism: int | None = None, stage_dir: str | None = None,
                      max_attempts: int | None = None, multipart_threshold_mb: int | None = None,
                      public_read: bool | None = None) -> list[str]:
    """The argv after ``redox-ci`` of a ``cache push``, as ``register``'s parser reads it back.

    ``--flag=value`` and ``--`` before the paths: values that start with "-" stay values.
    """
    flags = {"settings": settings, "bucket": bucket, "endpoint-url": endpoint_url, "region": region,
             "prefix": prefix, "signing-key": signing_key, "compression": compression,
             "parallelism": parallelism, "stage-dir": stage_dir, "max-attempts": max_attempts,
             "multipart-threshold-mb": multipart_threshold_mb}
    read = [] if public_read is None else ["--public-read" if public_read else "--no-public-read"]
    return ["cache", "push", *(f"--{flag}={value}" for flag, value in flags.items() if value is not None),
            *read, "--", *store_paths]


def push_command_line_for(settings: CacheSettings, store_paths: list[str]) -> list[str]:
    """A push to the bucket of ``settings`` (the master's ``[cache]``), no settings file needed."""
    return push_command_line(
        store_paths, bucket=settings.bucket, endpoint_url=settings.endpoint_url, region=settings.region,
        prefix=settings.prefix, signing_key=settings.secret_key_file, compression=settings.compression,
        parallelism=settings.upload_parallelism, max_attempts=settings.max_attempts,
        multipart_threshold_mb=settings.multipart_threshold_mb, public_read=settings.public_read)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", help="settings file with a [cache] section (default $REDOX_CI_SETTINGS)")
    p.add_argument("--bucket", help="S3 bucket")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (R2, MinIO, a local server)")
    p.add_argument("--region", help="S3 region")
    p.add_argument("--prefix", help="key prefix inside the bucket")
    p.add_argument("--max-attempts", type=int, help="attempts per S3 request (default [cache].max_attempts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("store_paths", nargs="+", metavar="STORE_PATH")


def register(sub) -> None:
    cache = sub.add_parser("cache", help="signed S3 binary cache", description=__doc__.splitlines()[0])
    verbs = cache.add_subparsers(dest="cache_verb", required=True, metavar="ACTION")

    p = verbs.add_parser("push", help="sign and upload the closure of store paths")
    _common(p)
    p.add_argument("--signing-key", help="Nix secret key file (default [cache].secret_key_file)")
    p.add_argument("--compression", choices=["xz", "zstd", "none"], help="NAR compression (default zstd)")
    p.add_argument("--parallelism", type=int, help="uploads at once (default 8)")
    p.add_argument("--multipart-threshold-mb", type=int, help="NARs this large go up in parts (default 64)")
    p.add_argument("--public-read", action=argparse.BooleanOptionalAction, default=None,
                   help="give every object a public-read ACL (default [cache].public_read)")
    p.add_argument("--stage-dir", type=Path, help="where compressed NARs are staged before upload; needs "
                   "room for the pushed paths (default $TMPDIR)")
    p.set_defaults(func=do_push)

    p = verbs.add_parser("status", help="which store paths the bucket holds (exit 1 if any is missing)")
    _common(p)
    p.set_defaults(func=do_status, compression=None, parallelism=None)

    p = verbs.add_parser("serve", help="run a local S3 server with a public-read bucket (foreground)")
    localserver.add_arguments(p)
    p.set_defaults(func=localserver.run_from_args)

    p = verbs.add_parser("keygen", help="generate a cache signing key pair with Nix")
    p.add_argument("--name", required=True, help="key name, e.g. redox-ci-cache-1")
    p.add_argument("--out-dir", required=True, type=Path, help="directory for NAME.secret and NAME.public")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=do_keygen)
