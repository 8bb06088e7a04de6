"""The plan's cache lookups (a listing of the narinfos as far as it pays, else one HEAD per
narinfo, in parallel, bounded) give the answers and errors one HEAD after another gives: a
present narinfo is cached, a missing one is not, one that errors fails the whole question
with the cache's error."""

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


# The listing request of list_objects_v2.
LISTING = r"list-type=2"
DENY_LISTING = Fault("403", method="GET", path=LISTING, times=None)


@pytest.mark.unit
def test_the_listing_budget_grows_with_the_lookups():
    assert s3.list_budget(1) == 1
    assert s3.list_budget(s3.HEADS_PER_LIST_PAGE * 4 + 1) == 4


def one_by_one(s3_server, settings, paths: list[str]) -> set[str]:
    """What one HEAD after another answers."""
    client = s3.make_client(settings, s3_server.credentials)
    return {p for p in paths if s3.key_exists(client, settings, narinfo_key(settings.prefix, p))}


@pytest.mark.e2e
def test_lookups_answer_as_one_after_another(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    present = paths[::3]
    put_narinfos(s3_client, cache_settings, present)
    expected = one_by_one(s3_server, cache_settings, paths)
    clean_proxy.reset()

    found = cached_paths(cache_settings, paths, credentials=s3_server.credentials)

    assert found == expected == set(present)
    # One listing page answered every lookup.
    assert len(clean_proxy.requests("GET", LISTING)) == 1 and clean_proxy.requests("HEAD", r"\.narinfo") == []
    st = status(cache_settings, paths, credentials=s3_server.credentials)
    assert st.cached == present and st.missing == [p for p in paths if p not in present]


@pytest.mark.e2e
def test_keys_past_the_listing_budget_are_asked_one_by_one(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths[::2])
    keys = {narinfo_key(cache_settings.prefix, p): p for p in paths}
    page = 10
    client = s3.make_client(cache_settings, s3_server.credentials)
    expected = one_by_one(s3_server, cache_settings, paths)
    clean_proxy.reset()

    found = {keys[k] for k in s3.existing_keys(client, cache_settings, keys, page_keys=page)}

    assert found == expected == set(paths[::2])
    # One page (the budget for this many lookups) listed 10 keys, which answered for every
    # key up to the last of them; the keys past it were asked.
    assert len(clean_proxy.requests("GET", LISTING)) == s3.list_budget(len(paths)) == 1
    assert 0 < len(clean_proxy.requests("HEAD", r"\.narinfo")) <= len(paths) - page


@pytest.mark.e2e
def test_lookups_in_several_folders_are_asked_one_by_one(s3_server, s3_client, cache_settings, clean_proxy):
    client = s3.make_client(cache_settings, s3_server.credentials)
    keys = [f"{cache_settings.prefix}/a/x", f"{cache_settings.prefix}/b/y"]
    s3_client.put_object(Bucket=cache_settings.bucket, Key=keys[0], Body=b"x")
    clean_proxy.reset()
    assert s3.existing_keys(client, cache_settings, keys) == {keys[0]}
    assert clean_proxy.requests("GET", LISTING) == [] and len(clean_proxy.requests("HEAD")) == 2


@pytest.mark.e2e
def test_a_denied_listing_falls_back_to_one_head_each(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths[1::4])
    expected = one_by_one(s3_server, cache_settings, paths)
    clean_proxy.reset([DENY_LISTING])

    found = cached_paths(cache_settings, paths, credentials=s3_server.credentials)

    assert found == expected == set(paths[1::4])
    assert DENY_LISTING.fired >= 1 and len(clean_proxy.requests("HEAD", r"\.narinfo")) == len(paths)


@pytest.mark.e2e
def test_a_listing_that_keeps_failing_fails_the_lookup(s3_server, s3_client, cache_settings, clean_proxy):
    settings = cache_settings.model_copy(update={"max_attempts": 2})
    clean_proxy.reset([Fault("503", method="GET", path=LISTING, times=None)])
    with pytest.raises(PushFailed, match="kept failing after retries"):
        cached_paths(settings, [store_path(i) for i in range(PATHS)], credentials=s3_server.credentials)


@pytest.mark.e2e
def test_a_narinfo_that_errors_fails_the_lookup_with_the_cache_s_error(s3_server, s3_client, cache_settings,
                                                                       clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths[:10])
    denied = paths[PATHS // 2].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([DENY_LISTING, Fault("403", method="HEAD", path=denied, times=None)])
    with pytest.raises(AccessDenied, match="access denied"):
        cached_paths(cache_settings, paths, credentials=s3_server.credentials)


@pytest.mark.e2e
def test_a_narinfo_that_keeps_failing_is_retried_then_fails(s3_server, s3_client, cache_settings, clean_proxy):
    settings = cache_settings.model_copy(update={"max_attempts": 2})
    paths = [store_path(i) for i in range(PATHS)]
    broken = paths[-1].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([DENY_LISTING, Fault("503", method="HEAD", path=broken, times=None)])
    with pytest.raises(PushFailed, match="kept failing after retries"):
        cached_paths(settings, paths, credentials=s3_server.credentials)
    assert len(clean_proxy.requests("HEAD", broken)) == 2


@pytest.mark.e2e
def test_a_narinfo_that_fails_once_is_retried_and_found(s3_server, s3_client, cache_settings, clean_proxy):
    paths = [store_path(i) for i in range(PATHS)]
    put_narinfos(s3_client, cache_settings, paths)
    flaky = paths[3].removeprefix("/nix/store/")[:32]
    clean_proxy.reset([DENY_LISTING, Fault("503", method="HEAD", path=flaky, times=1)])
    assert cached_paths(cache_settings, paths, credentials=s3_server.credentials) == set(paths)
