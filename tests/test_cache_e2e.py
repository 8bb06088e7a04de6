"""End to end: real Nix builds pushed over HTTP to a real S3 server, substituted back by Nix."""

from __future__ import annotations

import os
from dataclasses import asdict

import pytest

from cache_support import (  # noqa: F401  (fixtures)
    KEY_NAME, SMALL_CLOSURE, bucket_objects, build_closure, cache_settings, clean_proxy, delete_from_store,
    nar_hash, orphan_narinfos, proxy, s3_client, s3_server, signing_key, store_closure, substitute,
)
from redox_ci.cache.push import cached_paths, list_keys, push, substituter_url, upload_files
from redox_ci.cache.status import status
from redox_ci.cache.keys import generate_keypair
from redox_ci.cache.narinfo import hash_part, narinfo_key, parse_narinfo

pytestmark = pytest.mark.e2e

MISSING = "/nix/store/0000000000000000000000000000000z-never-built"


def _narinfo(client, settings, path):
    body = client.get_object(Bucket=settings.bucket, Key=narinfo_key(settings.prefix, path))["Body"]
    return parse_narinfo(body.read().decode())


@pytest.mark.parametrize("compression", ["xz", "zstd"])
def test_push_then_substitute_gives_the_same_nars(tmp_path, s3_server, s3_client, cache_settings, signing_key,
                                                  compression):
    cache_settings = cache_settings.model_copy(update={"compression": compression})
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    hashes = {p: nar_hash(p) for p in paths}

    result = push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert sorted(result.pushed) == sorted(paths) and result.skipped == []
    assert result.files_uploaded == 2 * len(paths) + 1  # NARs, narinfos, nix-cache-info
    assert result.bytes_uploaded > 0 and result.public_key == signing_key.public_key
    assert asdict(result)["pushed"] == result.pushed
    for p in paths:
        info = _narinfo(s3_client, cache_settings, p)
        assert info.signed_by(KEY_NAME) and info.nar_hash == hashes[p] and info.compression == compression
    assert orphan_narinfos(s3_client, cache_settings.bucket, cache_settings.prefix) == []

    delete_from_store(paths)
    url = substituter_url(s3_server.settings(prefix=cache_settings.prefix))
    proc = substitute(url, signing_key.public_key, top, tmp_path / "xdg")
    assert proc.returncode == 0, proc.stderr
    assert {p: nar_hash(p) for p in paths} == hashes


def test_wrong_public_key_makes_substitution_fail(tmp_path, s3_server, cache_settings, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)
    delete_from_store(paths)
    # Same key name, different key: only the signature itself can tell them apart.
    _, _, impostor = generate_keypair(KEY_NAME, tmp_path / "other")
    url = substituter_url(s3_server.settings(prefix=cache_settings.prefix))

    refused = substitute(url, impostor, top, tmp_path / "xdg1")
    assert refused.returncode != 0
    # Nix 2.8 says "is not signed by any of the keys", 2.26 "as it's not signed by any of the keys".
    assert "not signed by any of the keys" in refused.stderr, refused.stderr
    assert not any(os.path.exists(p) for p in paths)
    accepted = substitute(url, signing_key.public_key, top, tmp_path / "xdg2")
    assert accepted.returncode == 0, accepted.stderr


def test_second_push_uploads_nothing(tmp_path, s3_server, s3_client, cache_settings, clean_proxy, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)
    before = bucket_objects(s3_client, cache_settings.bucket, cache_settings.prefix)
    clean_proxy.reset()

    again = push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert again.pushed == [] and sorted(again.skipped) == sorted(paths)
    assert (again.bytes_uploaded, again.files_uploaded) == (0, 0)
    assert clean_proxy.requests("PUT") == [] and clean_proxy.requests("POST") == []
    # Skipping reads one listing page of the narinfos (s3.existing_keys) and never a NAR.
    assert clean_proxy.requests("GET", "/nar/") == [] and clean_proxy.requests("HEAD", "/nar/") == []
    assert len(clean_proxy.requests("GET", "list-type=2")) == 1 and clean_proxy.requests("HEAD", r"\.narinfo$") == []
    assert bucket_objects(s3_client, cache_settings.bucket, cache_settings.prefix) == before


def test_push_skips_what_is_there_and_uploads_the_rest(tmp_path, s3_server, cache_settings, clean_proxy,
                                                       signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    dep = next(p for p in store_closure(top) if p.endswith("-docs"))
    first = push(cache_settings, [dep], credentials=s3_server.credentials, signing_key_file=signing_key.path)
    assert first.pushed == [dep]
    clean_proxy.reset()

    second = push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert second.skipped == [dep]
    assert sorted(second.pushed) == sorted(set(store_closure(top)) - {dep})
    # The skipped reference's narinfo is read (Nix needs it to stage its referrer), never rewritten,
    # and its NAR is neither read nor written again.
    assert clean_proxy.requests("PUT", hash_part(dep)) == []
    assert len(clean_proxy.requests("PUT", "/nar/")) == len(second.pushed)
    assert clean_proxy.requests("GET", "/nar/") == []


def test_cached_paths_and_status(tmp_path, s3_server, cache_settings, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    assert cached_paths(cache_settings, [top], credentials=s3_server.credentials) == set()
    push(cache_settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    found = cached_paths(cache_settings, [top, MISSING], credentials=s3_server.credentials)
    assert found == {top}
    st = status(cache_settings, [MISSING, top], credentials=s3_server.credentials)
    assert (st.cached, st.missing, st.complete) == ([top], [MISSING], False)


def test_large_nar_goes_up_in_parts(tmp_path, s3_server, s3_client, cache_settings, clean_proxy, signing_key):
    settings = cache_settings.model_copy(update={"multipart_threshold_mb": 5, "compression": "none"})
    top = build_closure(tmp_path, [("big", 12 * 1024, False)])
    paths = store_closure(top)
    hashes = {p: nar_hash(p) for p in paths}

    push(settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)

    assert clean_proxy.requests("POST", r"\?uploads") and len(clean_proxy.requests("PUT", "partNumber=")) >= 3
    assert orphan_narinfos(s3_client, settings.bucket, settings.prefix) == []
    delete_from_store(paths)
    proc = substitute(substituter_url(s3_server.settings(prefix=settings.prefix)), signing_key.public_key,
                      top, tmp_path / "xdg")
    assert proc.returncode == 0, proc.stderr
    assert {p: nar_hash(p) for p in paths} == hashes


def test_upload_files_and_list_keys(tmp_path, s3_server, s3_client, cache_settings):
    tree = tmp_path / "report"
    (tree / "diffs").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>report</h1>")
    (tree / "diffs" / "kernel.txt").write_text("no differences")

    up = upload_files(cache_settings, tree, "reports/2026-11-25/", credentials=s3_server.credentials)

    base = f"{cache_settings.prefix}/reports/2026-11-25"
    assert sorted(up.keys) == [f"{base}/diffs/kernel.txt", f"{base}/index.html"]
    assert up.bytes_uploaded == len("<h1>report</h1>") + len("no differences")
    assert sorted(list_keys(cache_settings, "reports/", credentials=s3_server.credentials)) == sorted(up.keys)
    body = s3_client.get_object(Bucket=cache_settings.bucket, Key=f"{base}/diffs/kernel.txt")["Body"].read()
    assert body == b"no differences"


def test_public_read_objects(tmp_path, s3_server, s3_client, cache_settings, signing_key):
    settings = cache_settings.model_copy(update={"public_read": True})
    top = build_closure(tmp_path, SMALL_CLOSURE)
    push(settings, [top], credentials=s3_server.credentials, signing_key_file=signing_key.path)
    keys = bucket_objects(s3_client, settings.bucket, settings.prefix)
    assert keys
    for key in keys:
        grants = s3_client.get_object_acl(Bucket=settings.bucket, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/global/AllUsers") and g["Permission"] == "READ"
                   for g in grants), (key, grants)
