"""S3 access: retries for the transient failures, a sentence for the permanent ones.

Every call to the cache's bucket goes through this module: push, status and the reports
(``reports.py``) use its client and functions; the local S3 server (``localserver.py``)
has a client of its own only to set up and save its moto server. Transient failures
(5xx, throttling, dropped or timed-out connections) are retried by botocore's "standard"
retry mode with exponential backoff and jitter; what is left when retries run out, and
every permanent failure (unknown bucket, rejected credentials, access denied), becomes one
of the cache's error classes with a message that names the bucket and endpoint and never
a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError, ClientError, HTTPClientError, NoCredentialsError, PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..config import CacheSettings
from ..errors import RedoxCIError
from .errors import AccessDenied, BucketNotFound, CredentialsRejected, PushFailed

MIB = 1024 * 1024
# A stuck connection should fail over to a retry well before a CI step times out, but a
# large part on a slow uplink needs time: S3 itself drops idle connections after ~20 s.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
# Parts of one multipart NAR uploaded at once; the file pool multiplies this, so keep it
# small (8 files x 4 parts = 32 connections at the default upload_parallelism).
PART_CONCURRENCY = 4
# Narinfo lookups at once (HEAD requests, one per output of a plan: about 760 for the
# real flake's two systems). A HEAD carries no body, so a lookup is one round trip and
# more at once pays until the client's connection pool is full: it holds
# upload_parallelism x PART_CONCURRENCY connections (32 by default), and a thread beyond
# it would only wait for a connection (urllib3 warns "Connection pool is full").
LOOKUP_PARALLELISM = 32
# Keys per listing page: S3's maximum.
LIST_PAGE_KEYS = 1000
# A listing page costs about as much time as this many HEAD requests at LOOKUP_PARALLELISM
# (a page is a few round trips, 32 HEADs in flight are 32 lookups per round trip); a
# commit's lookups read at most that many pages, so a bucket that holds many more
# narinfos than the plan asks about costs at most about twice the HEADs alone.
HEADS_PER_LIST_PAGE = 150
CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken",
    "InvalidToken", "AuthorizationHeaderMalformed", "UnrecognizedClientException",
}
NOT_FOUND_BUCKET = {"NoSuchBucket"}
NOT_FOUND_KEY = {"404", "NoSuchKey", "NotFound"}
CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


@dataclass(frozen=True)
class Upload:
    """A local file and its key in the bucket (either direction)."""

    path: Path
    key: str


def client_config(settings: CacheSettings) -> Config:
    return Config(
        region_name=settings.region,
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=connection_pool_size(settings),
        # Path-style URLs work with every S3-compatible server and with 127.0.0.1.
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
    )


def transfer_config(settings: CacheSettings) -> TransferConfig:
    threshold = settings.multipart_threshold_mb * MIB
    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold,
                          max_concurrency=PART_CONCURRENCY, use_threads=True)


def make_client(settings: CacheSettings, credentials: dict | None = None):
    """A client from explicit credentials, else boto3's chain (environment, profile, role)."""
    creds = {k: v for k, v in (credentials or {}).items() if v}
    unknown = set(creds) - set(CREDENTIAL_KEYS)
    if unknown:
        raise CredentialsRejected(f"unknown credential keys {sorted(unknown)}; use {', '.join(CREDENTIAL_KEYS)}")
    session = boto3.session.Session(**creds)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=client_config(settings))


def where(settings: CacheSettings) -> str:
    return f"bucket {settings.bucket!r} at {settings.endpoint_url or 'AWS S3 (' + settings.region + ')'}"


def describe(exc: BaseException, settings: CacheSettings, doing: str) -> RedoxCIError:
    """Turn a boto3/botocore exception into the cache error a person can act on."""
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        exc = exc.__context__
    place = where(settings)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsRejected(
            f"{doing}: no usable AWS credentials for {place}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "a profile, or [cache] in the secrets file")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in NOT_FOUND_BUCKET or (exc.operation_name == "HeadBucket" and status == 404):
            return BucketNotFound(f"{doing}: {place} does not exist")
        if code in CREDENTIAL_ERRORS:
            return CredentialsRejected(f"{doing}: {place} rejected the credentials ({code}): "
                                       "check the access key id and secret")
        if code == "AccessDenied" or status == 403:
            return AccessDenied(f"{doing}: access denied by {place} (HTTP 403 on {exc.operation_name})")
        return PushFailed(f"{doing}: {place} answered {code or status} on {exc.operation_name}"
                          " and kept failing after retries")
    if isinstance(exc, (HTTPClientError, BotoConnectionError)):
        return PushFailed(f"{doing}: cannot talk to {place} after {settings.max_attempts} attempts: "
                          f"{type(exc).__name__}")
    return PushFailed(f"{doing}: {place}: {exc}")


def check_bucket(client, settings: CacheSettings) -> None:
    """Fail at once, before any work, when the bucket is missing or the credentials are wrong."""
    try:
        client.head_bucket(Bucket=settings.bucket)
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 403:
            raise describe(e, settings, "checking the bucket") from None
        # HEAD answers carry no body, so a 403 does not say whether the key is unknown or
        # merely not allowed; a listing of one key returns the error code that does.
        try:
            client.list_objects_v2(Bucket=settings.bucket, MaxKeys=1)
        except (BotoCoreError, ClientError) as e2:
            raise describe(e2, settings, "checking the bucket") from None
    except BotoCoreError as e:
        raise describe(e, settings, "checking the bucket") from None


def key_exists(client, settings: CacheSettings, key: str) -> bool:
    try:
        client.head_object(Bucket=settings.bucket, Key=key)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in NOT_FOUND_KEY:
            return False
        raise describe(e, settings, f"looking up {key}") from None
    except BotoCoreError as e:
        raise describe(e, settings, f"looking up {key}") from None
    return True


def read_object(client, settings: CacheSettings, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key."""
    try:
        return client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code", "")) in NOT_FOUND_KEY:
            return None
        raise describe(e, settings, f"reading {key}") from None
    except BotoCoreError as e:
        raise describe(e, settings, f"reading {key}") from None


def existing_keys(client, settings: CacheSettings, keys: Iterable[str], page_keys: int = LIST_PAGE_KEYS) -> set[str]:
    """Which of ``keys`` exist; no object is read.

    Keys of one folder (the narinfos) are first answered from a listing of that folder, as
    far as LIST_BUDGET allows: a page of ``page_keys`` keys is one request where a HEAD per
    key is hundreds. The keys past what the listing reached, all keys when the listing is
    not allowed (a read-only credential may lack s3:ListBucket), and keys of several
    folders are asked with HEAD requests in parallel. The first failure for another reason
    than "no such key" (or a listing denied) raises its error.
    """
    keys = sorted(set(keys))
    found: set[str] = set()
    folders = {k.rpartition("/")[0] for k in keys}
    if len(folders) == 1:
        listed, reached = list_folder(client, settings, folders.pop(), list_budget(len(keys)), page_keys)
        found = {k for k in keys if k in listed}
        keys = [k for k in keys if reached is not None and k > reached]
    return found | {k for k, there in zip(keys, run_parallel(lambda k: key_exists(client, settings, k),
                                                             keys, lookup_parallelism(settings))) if there}


def lookup_parallelism(settings: CacheSettings) -> int:
    return min(LOOKUP_PARALLELISM, connection_pool_size(settings))


def list_budget(lookups: int) -> int:
    """Listing pages worth reading instead of ``lookups`` HEAD requests (at least one)."""
    return max(1, lookups // HEADS_PER_LIST_PAGE)


def list_folder(client, settings: CacheSettings, folder: str, pages: int,
                page_keys: int = LIST_PAGE_KEYS) -> tuple[set[str], str | None]:
    """The keys directly in ``folder``, at most ``pages`` pages of them, and how far the
    listing reached: None when it was complete, else the last key listed (every key up to
    it, in S3's order, was listed). Nothing listed and "" reached when listing is denied."""
    listed: set[str] = set()
    pager = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.bucket, Prefix=f"{folder}/" if folder else "", Delimiter="/",
        PaginationConfig={"PageSize": page_keys})
    try:
        for n, page in enumerate(pager, 1):
            contents = [o["Key"] for o in page.get("Contents", [])]
            listed.update(contents)
            if page.get("IsTruncated") and n >= pages:
                # Keys and folders come in S3's order (bytes of UTF-8: str order for ASCII keys).
                return listed, max([*contents, *(p["Prefix"] for p in page.get("CommonPrefixes", []))])
    except (BotoCoreError, ClientError) as e:
        error = describe(e, settings, f"listing {folder or 'the bucket'}")
        if isinstance(error, AccessDenied):
            return set(), ""
        raise error from None
    return listed, None


def run_parallel(fn: Callable, items: list, parallelism: int) -> list:
    """``fn`` over ``items`` with at most ``parallelism`` at once; the first error stops the rest."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(parallelism, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()
        return [f.result() for f in futures]


def connection_pool_size(settings: CacheSettings) -> int:
    return settings.upload_parallelism * PART_CONCURRENCY


def upload_all(client, settings: CacheSettings, uploads: list[Upload], doing: str,
               content_types: dict[str, str] | None = None, parallelism: int | None = None) -> int:
    """Upload every file (multipart when large); return the bytes sent, or raise one cache error.

    ``parallelism`` defaults to ``upload_parallelism``; small files, bound by round trips
    rather than by the uplink, may use every pooled connection.
    """
    config = transfer_config(settings)

    def one(u: Upload) -> int:
        extra = {}
        if settings.public_read:
            extra["ACL"] = "public-read"
        ctype = (content_types or {}).get(u.path.suffix)
        if ctype:
            extra["ContentType"] = ctype
        size = u.path.stat().st_size
        try:
            if size < config.multipart_threshold:
                # One PUT: upload_file would start a transfer manager and its threads for each
                # file, which costs more than the PUT itself for a narinfo. botocore rewinds
                # the file when it retries.
                with u.path.open("rb") as body:
                    client.put_object(Bucket=settings.bucket, Key=u.key, Body=body, **extra)
            else:
                client.upload_file(str(u.path), settings.bucket, u.key, ExtraArgs=extra or None, Config=config)
        except (BotoCoreError, ClientError, S3UploadFailedError) as e:
            raise describe(e, settings, f"{doing} {u.key}") from None
        return size

    return sum(run_parallel(one, uploads, parallelism or settings.upload_parallelism))


def download_all(client, settings: CacheSettings, items: list[Upload]) -> None:
    """Fetch small objects (``Upload.key`` to ``Upload.path``) in parallel."""
    def one(item: Upload) -> None:
        try:
            client.download_file(settings.bucket, item.key, str(item.path))
        except (BotoCoreError, ClientError) as e:
            raise describe(e, settings, f"downloading {item.key}") from None

    run_parallel(one, items, settings.upload_parallelism)


def list_keys(client, settings: CacheSettings, prefix: str) -> list[str]:
    keys = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise describe(e, settings, f"listing {prefix or 'the bucket'}") from None
    return keys
