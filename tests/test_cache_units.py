"""Unit tests of the cache's pure parts: narinfo, keys, argv builders, error mapping."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from tests.support import requires
from redox_ci.cache import errors as E
from redox_ci.cache.cli import settings_from_args, size
from redox_ci.cache.keys import parse_secret_key, public_key_of, read_signing_key
from redox_ci.cache.narinfo import (
    NarInfo, NarInfoError, format_narinfo, hash_part, is_store_path, join_key, narinfo_key, parse_narinfo,
)
from redox_ci.cache.push import substituter_url, upload_plan
from redox_ci.cache.s3 import describe
from redox_ci.cache.stage import Staged, StagedPath, check_staged, stage_url
from redox_ci.config import CacheSettings
from redox_ci.errors import ConfigError
from redox_ci.nix import copy_argv, generate_secret_key, public_key

pytestmark = pytest.mark.unit

TOP = "/nix/store/16kzwc66vv4hymaj28rakcm0i7a1f67i-top"
NARINFO = """StorePath: /nix/store/16kzwc66vv4hymaj28rakcm0i7a1f67i-top
URL: nar/1nvzf8ldbl9c2m6sskpbp3ffkqbyffm79k86n1jw79piifxs80hn.nar.xz
Compression: xz
FileHash: sha256:1nvzf8ldbl9c2m6sskpbp3ffkqbyffm79k86n1jw79piifxs80hn
FileSize: 216
NarHash: sha256:0h69kkafrvvsymh356vkl4c17c3png4lna7xra06n84cz0d2jzq1
NarSize: 328
References: m3vjfvmqvx0rvya95831bwnwcyspr6zn-dep
Deriver: bivfxdry1j0c1s3haw7bf2bvf1siqirv-top.drv
Sig: test-1:GVStnQv+ZxwT+hzQoI8yKpGHG2bPmplKCDMpk3DdeioJKLF7Yp1U95LMuBKFQcjnYaMReyfozjLn8hGJqmc2AA==
"""


def test_parse_narinfo_fields():
    info = parse_narinfo(NARINFO)
    assert info.store_path == TOP
    assert info.url.startswith("nar/1nvzf8") and info.compression == "xz"
    assert (info.file_size, info.nar_size) == (216, 328)
    assert info.references == ("m3vjfvmqvx0rvya95831bwnwcyspr6zn-dep",)
    assert info.signed_by("test-1") and not info.signed_by("other-1")


def test_format_narinfo_round_trips():
    assert format_narinfo(parse_narinfo(NARINFO)) == NARINFO
    info = NarInfo(store_path=TOP, url="nar/x.nar", nar_hash="sha256:abc", nar_size=1,
                   sigs=("a:1", "b:2"))
    assert parse_narinfo(format_narinfo(info)) == info


def test_parse_narinfo_empty_references_and_several_sigs():
    text = NARINFO.replace("References: m3vjfvmqvx0rvya95831bwnwcyspr6zn-dep", "References:")
    text += "Sig: other-1:abc\n"
    info = parse_narinfo(text)
    assert info.references == () and len(info.sigs) == 2 and info.signed_by("other-1")


@pytest.mark.parametrize("text,message", [
    ("URL: nar/x\nNarHash: h\nNarSize: 1\n", "missing StorePath"),
    (NARINFO.replace("NarSize: 328", "NarSize: big"), "not a number"),
    (NARINFO + "garbage line\n", "expected 'Key: value'"),
    (NARINFO + "URL: again\n", "URL given twice"),
    (NARINFO.replace(TOP, "/tmp/top"), "not a store path"),
])
def test_parse_narinfo_rejects(text, message):
    with pytest.raises(NarInfoError, match=message):
        parse_narinfo(text)


def test_store_path_names_and_keys():
    assert hash_part(TOP) == "16kzwc66vv4hymaj28rakcm0i7a1f67i"
    assert is_store_path(TOP) and not is_store_path("/tmp/x") and not is_store_path(TOP + "/bin")
    # 'e', 'o', 'u', 't' are not in Nix's base-32 alphabet
    assert not is_store_path("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x")
    with pytest.raises(ValueError, match="not a Nix store path"):
        hash_part("/nix/store/short-x")
    assert join_key("", "a.narinfo") == "a.narinfo"
    assert join_key("/ci/redox/", "a.narinfo") == "ci/redox/a.narinfo"
    assert narinfo_key("p", TOP) == "p/16kzwc66vv4hymaj28rakcm0i7a1f67i.narinfo"


def test_secret_key_parsing_never_quotes_the_key():
    raw = bytes(range(64))
    text = "ci-1:" + base64.b64encode(raw).decode()
    assert parse_secret_key(text + "\n") == ("ci-1", raw)
    assert public_key_of("ci-1", raw) == "ci-1:" + base64.b64encode(raw[32:]).decode()
    short = "ci-1:" + base64.b64encode(raw[:40]).decode()
    for bad in (short, "ci-1:!!notbase64!!", "no-colon", ":" + base64.b64encode(raw).decode()):
        with pytest.raises(ValueError) as err:
            parse_secret_key(bad)
        assert bad.partition(":")[2] not in str(err.value) or not bad.partition(":")[2]


def test_public_key_matches_nix(tmp_path):
    requires("nix")
    secret = generate_secret_key("units-1")
    public = public_key(secret)
    (tmp_path / "k").write_text(secret)
    assert read_signing_key(tmp_path / "k").public_key == public


@pytest.mark.parametrize("content,message", [
    (None, "file not found"),
    ("", "not a Nix secret key"),
    ("name:" + base64.b64encode(b"x" * 10).decode(), "10 bytes"),
])
def test_read_signing_key_errors(tmp_path, content, message):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(E.SigningKeyError, match=message) as err:
        read_signing_key(path)
    assert str(path) in str(err.value)


def test_read_signing_key_directory(tmp_path):
    with pytest.raises(E.SigningKeyError, match="is a directory"):
        read_signing_key(tmp_path)


def test_argv_builders():
    assert copy_argv("file:///s", [TOP]) == ["nix", "copy", "--no-recursive", "--to", "file:///s", TOP]
    assert stage_url(Path("/s"), "xz") == "file:///s?compression=xz&parallel-compression=true"
    assert stage_url(Path("/s"), "none") == "file:///s?compression=none"
    # The staging store signs what it writes; a key path is percent-encoded as Nix decodes it.
    assert stage_url(Path("/s"), "none", Path("/k/a b&c.secret")) == \
        "file:///s?compression=none&secret-key=/k/a%20b%26c.secret"


def test_substituter_url():
    s = CacheSettings(bucket="b", endpoint_url="http://127.0.0.1:9000/", prefix="/redox/")
    assert substituter_url(s) == "http://127.0.0.1:9000/b/redox"
    assert substituter_url(CacheSettings(bucket="b", region="eu-west-1")) == "s3://b?region=eu-west-1"


def _staged(tmp_path: Path) -> Staged:
    paths = []
    for name, file_size in (("16kzwc66vv4hymaj28rakcm0i7a1f67i-top", 10), ("m3vjfvmqvx0rvya95831bwnwcyspr6zn-dep", 99)):
        info = NarInfo(store_path=f"/nix/store/{name}", url=f"nar/{name[:4]}.nar.xz", nar_hash="h",
                       nar_size=1, file_size=file_size, sigs=("k-1:sig",))
        paths.append(StagedPath(info.store_path, tmp_path / f"{name[:32]}.narinfo",
                                tmp_path / info.url, info))
    return Staged(tmp_path, paths)


def test_upload_plan_puts_every_nar_before_any_narinfo_largest_first(tmp_path):
    first, second = upload_plan(_staged(tmp_path), "pre")
    assert [u.key for u in first] == ["pre/nar/m3vj.nar.xz", "pre/nar/16kz.nar.xz", "pre/nix-cache-info"]
    assert all(u.key.endswith(".narinfo") for u in second) and len(second) == 2
    assert upload_plan(Staged(tmp_path, []), "pre") == ([], [])


def test_check_staged_finds_every_gap(tmp_path):
    dep = "/nix/store/m3vjfvmqvx0rvya95831bwnwcyspr6zn-dep"
    (tmp_path / "16kzwc66vv4hymaj28rakcm0i7a1f67i.narinfo").write_text(NARINFO)
    nar = tmp_path / "nar" / "1nvzf8ldbl9c2m6sskpbp3ffkqbyffm79k86n1jw79piifxs80hn.nar.xz"
    nar.parent.mkdir()
    nar.write_bytes(b"x" * 216)
    assert [p.store_path for p in check_staged(tmp_path, [TOP], "test-1")] == [TOP]
    with pytest.raises(E.StagingError) as err:
        check_staged(tmp_path, [TOP, dep], "other-1")
    assert "not signed by key 'other-1'" in str(err.value) and f"{dep}: no " in str(err.value)
    nar.write_bytes(b"x" * 100)
    with pytest.raises(E.StagingError, match="has 100 bytes, narinfo says 216"):
        check_staged(tmp_path, [TOP], "test-1")


def _client_error(code: str, status: int, op: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


@pytest.mark.parametrize("exc,cls,text", [
    (_client_error("NoSuchBucket", 404), E.BucketNotFound, "does not exist"),
    (_client_error("404", 404, "HeadBucket"), E.BucketNotFound, "does not exist"),
    (_client_error("InvalidAccessKeyId", 403), E.CredentialsRejected, "rejected the credentials"),
    (_client_error("SignatureDoesNotMatch", 403), E.CredentialsRejected, "SignatureDoesNotMatch"),
    (_client_error("AccessDenied", 403), E.AccessDenied, "access denied"),
    (_client_error("InternalError", 500), E.PushFailed, "kept failing after retries"),
    (_client_error("SlowDown", 503), E.PushFailed, "SlowDown"),
    (NoCredentialsError(), E.CredentialsRejected, "no usable AWS credentials"),
    (EndpointConnectionError(endpoint_url="http://x"), E.PushFailed, "cannot talk to"),
])
def test_describe_maps_s3_errors(exc, cls, text):
    s = CacheSettings(bucket="bkt", endpoint_url="http://127.0.0.1:1")
    err = describe(exc, s, "doing")
    assert type(err) is cls and text in str(err) and "bkt" in str(err)
    assert err.exit_code == (1 if cls is E.PushFailed else 2)


def test_settings_file_and_flags(tmp_path, monkeypatch):
    import argparse
    monkeypatch.delenv("REDOX_CI_SETTINGS", raising=False)
    f = tmp_path / "settings.toml"
    f.write_text('[cache]\nbucket = "from-file"\nprefix = "p"\nsecret_key_file = "keys/ci.secret"\n')
    args = argparse.Namespace(settings=str(f), bucket=None, endpoint_url="http://h:1", region=None,
                              prefix=None, compression="zstd", parallelism=None)
    s = settings_from_args(args)
    assert (s.bucket, s.prefix, s.endpoint_url, s.compression) == ("from-file", "p", "http://h:1", "zstd")
    assert s.secret_key_file == str(tmp_path / "keys" / "ci.secret")
    args.bucket, args.parallelism = "flag", 0
    with pytest.raises(ConfigError, match="upload_parallelism"):
        settings_from_args(args)
    f.write_text('[cache]\nbuckett = "typo"\n')
    args.parallelism = None
    with pytest.raises(ConfigError, match="cache.buckett: unknown key"):
        settings_from_args(args)


def test_size():
    assert [size(0), size(1536), size(5 * 1024 ** 3)] == ["0 B", "1.5 KiB", "5.0 GiB"]
