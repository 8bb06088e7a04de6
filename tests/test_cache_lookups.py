"""The plan's cache lookups (one HEAD per narinfo) run in parallel, bounded, with the
answers and errors one lookup after another gives: a present narinfo is cached, a missing
one is not, one that errors fails the whole question with the cache's error."""

from __future__ import annotations

import threading
import time

import pytest

from cache_support import (  # noqa: F401  (fixtures)
    Fault, cache_settings, clean_proxy, proxy, s3_client, s3_server,
)
from redox_ci.cache import s3
from redox_ci.cache.errors import AccessDenied, PushFailed
from redox_ci.cache.narinfo import narinfo_key
from redox_ci.cache.push import cached_paths
from redox_ci.cache.status import status
from redox_ci.config import CacheSettings

# Enough paths that the lookups need several rounds of the pool.
PATHS = 3 * s3.LOOKUP_PARALLELISM + 5
NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"


def store_path(i: int) -> str:
    digits = "".join(NIX_BASE32[(i >> (5 * k)) % 32] for k in range(32))
    return f"/nix/store/{digits}-lookup-{i}"


@pytest.mark.unit
def test_run_parallel_runs_several_at_once_and_never_more_than_the_bound():
    running, most, lock = 0, 0, threading.Lock()

    def one(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return item * 2

    assert s3.run_parallel(one, list(range(40)), 4) == [i * 2 for i in range(40)]
    assert 1 < most <= 4


@pytest.mark.unit
def test_run_parallel_raises_the_first_error():
    def one(item: int) -> int:
        if item == 7:
            raise PushFailed("item 7")
        return item

    with pytest.raises(PushFailed, match="item 7"):
        s3.run_parallel(one, list(range(20)), 4)


@pytest.mark.unit
def test_the_lookup_bound_fits_the_connection_pool():
    settings = CacheSettings(bucket="redox-ci-test")
    assert s3.lookup_parallelism(settings) == min(s3.LOOKUP_PARALLELISM, s3.connection_pool_size(settings))
    small = settings.model_copy(update={"upload_parallelism": 1})
    assert s3.lookup_parallelism(small) == s3.PART_CONCURRENCY


def put_narinfos(client, settings, paths: list[str]) -> None:
    for p in paths:
        client.put_object(Bucket=settings.bucket, Key=narinfo_key(settings.prefix, p), Body=b"StorePath: " + p.encode())


@pytest.mark.e2e
def test_parallel_lookups_answer_as_one_after_another(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    present = paths[::3]
    put_narinfos(s3_client, cache_settings, present)
    client = s3.make_client(cache_settings, s3_server.credentials)
    one_by_one = {p for p in paths if s3.key_exists(client, cache_settings, narinfo_key(cache_settings.prefix, p))}
    clean_proxy.reset()

    found = cached_paths(cache_settings, paths, credentials=s3_server.credentials)

    assert found == one_by_one == set(present)
    assert len(clean_proxy.requests("HEAD", r"\.narinfo")) == len(paths)
    st = status(cache_settings, paths, credentials=s3_server.credentials)
    assert st.cached == present and st.missing == [p for p in paths if p not in present]


@pytest.mark.e2e
def test_a_narinfo_that_errors_fails_the_lookup_with_the_cache_s_error(s3_server, s3_client, cache_settings,
                                                                       clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths[:10])
    denied = paths[PATHS // 2].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([Fault("403", method="HEAD", path=denied, times=None)])
    with pytest.raises(AccessDenied, match="access denied"):
        cached_paths(cache_settings, paths, credentials=s3_server.credentials)


@pytest.mark.e2e
def test_a_narinfo_that_keeps_failing_is_retried_then_fails(s3_server, s3_client, cache_settings, clean_proxy):
    settings = cache_settings.model_copy(update={"max_attempts": 2})
    paths = [store_path(i) for i in range(PATHS)]
    broken = paths[-1].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([Fault("503", method="HEAD", path=broken, times=None)])
    with pytest.raises(PushFailed, match="kept failing after retries"):
        cached_paths(settings, paths, credentials=s3_server.credentials)
    assert len(clean_proxy.requests("HEAD", broken)) == 2


@pytest.mark.e2e
def test_a_narinfo_that_fails_once_is_retried_and_found(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths)
    flaky = paths[3].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([Fault("503", method="HEAD", path=flaky, times=1)])
    assert cached_paths(cache_settings, paths, credentials=s3_server.credentials) == set(paths)
