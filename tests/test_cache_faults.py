"""Faults injected over real HTTP: transient ones are retried, permanent ones leave no half-cache.

The proxy in front of the moto server fails chosen requests; the invariant checked after
every failure is the one readers rely on: no narinfo in the bucket without its NAR.
"""

from __future__ import annotations

import dataclasses

import pytest

from cache_support import (  # noqa: F401  (fixtures)
    SMALL_CLOSURE, Fault, bucket_objects, build_closure, cache_settings, clean_proxy, orphan_narinfos, proxy,
    s3_client, s3_server, signing_key, store_closure,
)
from redox_ci.cache.push import push
from redox_ci.cache.errors import AccessDenied, BucketNotFound, PushFailed

pytestmark = pytest.mark.e2e

# Few enough failures that botocore's default attempts (8) always get through.
TRANSIENT_FAILURES = 3


def _narinfos(client, settings) -> list[str]:
    return [k for k in bucket_objects(client, settings.bucket, settings.prefix) if k.endswith(".narinfo")]


@pytest.mark.parametrize("fault", [
    Fault("500", method="PUT", times=TRANSIENT_FAILURES),
    Fault("503", method="PUT", path="/nar/", times=TRANSIENT_FAILURES),
    Fault("drop", method="PUT", times=TRANSIENT_FAILURES),
    Fault("reset", method="PUT", path=r"\.narinfo", times=TRANSIENT_FAILURES),
    # The skip check lists the narinfos (s3.existing_keys) before any HEAD.
    Fault("503", method="GET", path="list-type=2", times=TRANSIENT_FAILURES),
    Fault("drop", method="HEAD", path="^/[^/]+$", times=1),  # the bucket check itself
], ids=["500-put", "503-nar", "drop-put", "reset-narinfo", "503-list", "drop-headbucket"])
def test_transient_faults_are_retried(tmp_path, s3_server, s3_client, cache_settings, clean_proxy,
                                      signing_key, fault):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    fault = dataclasses.replace(fault)  # fresh counters
    clean_proxy.reset([fault])

    result = push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert fault.fired == fault.times, "the fault was never hit, so nothing was retried"
    assert sorted(result.pushed) == sorted(paths)
    assert len(_narinfos(s3_client, cache_settings)) == len(paths)
    assert orphan_narinfos(s3_client, cache_settings.bucket, cache_settings.prefix) == []


def test_access_denied_on_nars_uploads_no_narinfo(tmp_path, s3_server, s3_client, cache_settings, clean_proxy,
                                                  signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    denied = Fault("403", method="PUT", path="/nar/", times=None)
    clean_proxy.reset([denied])

    with pytest.raises(AccessDenied, match="access denied") as err:
        push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert err.value.exit_code == 2 and cache_settings.bucket in str(err.value)
    # Permanent: not retried (at most one refused attempt per NAR), and no narinfo went up.
    assert denied.fired <= len(paths)
    assert clean_proxy.requests("PUT", r"\.narinfo") == []
    assert _narinfos(s3_client, cache_settings) == []

    clean_proxy.reset()
    healed = push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)
    assert sorted(healed.pushed) == sorted(paths)
    assert orphan_narinfos(s3_client, cache_settings.bucket, cache_settings.prefix) == []


def test_failure_after_some_nars_leaves_no_narinfo(tmp_path, s3_server, s3_client, cache_settings, clean_proxy,
                                                   signing_key):
    settings = cache_settings.model_copy(update={"upload_parallelism": 1})
    top = build_closure(tmp_path, SMALL_CLOSURE)
    clean_proxy.reset([Fault("403", method="PUT", path="/nar/", skip=1, times=None)])

    with pytest.raises(AccessDenied):
        push(settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    keys = bucket_objects(s3_client, settings.bucket, settings.prefix)
    assert [k for k in keys if "/nar/" in k], "one NAR should have gone up before the fault"
    assert _narinfos(s3_client, settings) == []


def test_bucket_vanishing_mid_push_leaves_no_narinfo(tmp_path, s3_server, s3_client, cache_settings,
                                                     clean_proxy, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    clean_proxy.reset([Fault("nosuchbucket", method="PUT", skip=1, times=None)])

    with pytest.raises(BucketNotFound, match="does not exist"):
        push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert _narinfos(s3_client, cache_settings) == []


def test_retries_run_out(tmp_path, s3_server, s3_client, cache_settings, clean_proxy, signing_key):
    settings = cache_settings.model_copy(update={"max_attempts": 2})
    top = build_closure(tmp_path, SMALL_CLOSURE)
    failing = Fault("503", method="PUT", times=None)
    clean_proxy.reset([failing])

    with pytest.raises(PushFailed, match="kept failing after retries") as err:
        push(settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert err.value.exit_code == 1
    assert failing.fired >= 2, "each request is tried max_attempts times"
    assert _narinfos(s3_client, settings) == []
