"""The ``redox-ci cache`` command run as a child process, as a Buildbot step runs it.

Exit codes, JSON, and the bad-input errors a person sees: each names the problem, none is
a traceback, and no secret (signing key, AWS secret) is ever printed.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import boto3
import pytest

from cache_support import (  # noqa: F401  (fixtures)
    SMALL_CLOSURE, build_closure, cache_settings, clean_proxy, cli_env, parse_json_line, proxy, s3_client,
    s3_server, signing_key, store_closure,
)
from redox_ci.cache.keys import read_signing_key
from redox_ci.cache.localserver import READY_FILE, LocalS3Server
from redox_ci.errors import UsageError
from tests.support import CLI, run_cli, wait_for

pytestmark = pytest.mark.e2e

MISSING = "/nix/store/0000000000000000000000000000000z-never-built"
SECRET_ACCESS = "s3cr3t-value-that-must-never-be-printed"


def _args(settings) -> list[str]:
    return ["--bucket", settings.bucket, "--endpoint-url", settings.endpoint_url, "--prefix", settings.prefix]


def _key_material(path: Path) -> str:
    return path.read_text().strip().partition(":")[2]


def _assert_clean_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr


def test_push_json_then_status(tmp_path, s3_server, cache_settings, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    paths = store_closure(top)
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f'[cache]\nbucket = "{cache_settings.bucket}"\n'
                             f'endpoint_url = "{cache_settings.endpoint_url}"\n'
                             f'secret_key_file = "{signing_key.path}"\ncompression = "zstd"\n')
    env = cli_env(s3_server.credentials) | {"REDOX_CI_SETTINGS": str(settings_file)}

    proc = run_cli("cache", "push", "--prefix", cache_settings.prefix, "--json", top, env=env)

    assert proc.returncode == 0, proc.stderr
    result = parse_json_line(proc.stdout)
    assert sorted(result["pushed"]) == sorted(paths) and result["skipped"] == []
    assert result["bytes_uploaded"] > 0 and result["public_key"] == signing_key.public_key
    assert result["substituter"].endswith(f"/{cache_settings.bucket}/{cache_settings.prefix}")
    output = proc.stdout + proc.stderr
    assert _key_material(signing_key.path) not in output
    assert s3_server.credentials["aws_secret_access_key"] not in output

    without_env = {k: v for k, v in env.items() if k != "REDOX_CI_SETTINGS"}
    human = run_cli("cache", "push", "--settings", str(settings_file), "--prefix", cache_settings.prefix,
                    "--stage-dir", str(tmp_path), top, env=without_env)
    assert human.returncode == 0 and f"pushed 0 paths, skipped {len(paths)}" in human.stdout

    ok = run_cli("cache", "status", "--prefix", cache_settings.prefix, "--json", *paths, env=env)
    assert ok.returncode == 0 and parse_json_line(ok.stdout)["missing"] == []
    partial = run_cli("cache", "status", "--prefix", cache_settings.prefix, top, MISSING, env=env)
    assert partial.returncode == 1
    assert f"missing {MISSING}" in partial.stdout and f"cached  {top}" in partial.stdout


def test_unknown_bucket(tmp_path, s3_server, cache_settings, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    args = _args(cache_settings.model_copy(update={"bucket": "no-such-bucket"}))
    proc = run_cli("cache", "push", *args, "--signing-key", str(signing_key.path), top,
                   env=cli_env(s3_server.credentials))
    _assert_clean_error(proc, 2, "bucket 'no-such-bucket'", "does not exist")
    status = run_cli("cache", "status", *args, top, env=cli_env(s3_server.credentials))
    _assert_clean_error(status, 2, "no-such-bucket")


def test_unreadable_or_bad_signing_key(tmp_path, s3_server, cache_settings):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    env = cli_env(s3_server.credentials)
    missing = tmp_path / "missing.secret"
    garbage = tmp_path / "garbage.secret"
    garbage.write_text("ci-1:" + "QUJD" * 5 + "\n")
    for key, reason in [(missing, "file not found"), (garbage, "bytes, a Nix secret key has 64"),
                        (tmp_path, "is a directory")]:
        proc = run_cli("cache", "push", *_args(cache_settings), "--signing-key", str(key), top, env=env)
        _assert_clean_error(proc, 2, f"signing key {key}", reason)
        assert "QUJD" not in proc.stderr
    no_key = run_cli("cache", "push", *_args(cache_settings), top, env=env)
    _assert_clean_error(no_key, 2, "no signing key")


def test_paths_not_in_the_store(s3_server, cache_settings, signing_key):
    env = cli_env(s3_server.credentials)
    proc = run_cli("cache", "push", *_args(cache_settings), "--signing-key", str(signing_key.path), MISSING, env=env)
    _assert_clean_error(proc, 2, MISSING, "is not in the local Nix store")
    proc = run_cli("cache", "push", *_args(cache_settings), "--signing-key", str(signing_key.path), "/tmp/x", env=env)
    _assert_clean_error(proc, 2, "not a Nix store path: /tmp/x")


def test_no_credentials(tmp_path, cache_settings, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    env = {k: v for k, v in cli_env({"aws_access_key_id": "", "aws_secret_access_key": ""}).items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance role to wait for on a test machine
    proc = run_cli("cache", "push", *_args(cache_settings), "--signing-key", str(signing_key.path), top, env=env)
    _assert_clean_error(proc, 2, "no usable AWS credentials", "AWS_ACCESS_KEY_ID")


def test_bad_credentials_are_rejected_by_a_checking_server(tmp_path, signing_key):
    top = build_closure(tmp_path, SMALL_CLOSURE)
    with LocalS3Server(bucket="auth-test", auth=True) as server:
        args = ["--bucket", server.bucket, "--endpoint-url", server.url]
        wrong = {"aws_access_key_id": server.credentials["aws_access_key_id"],
                 "aws_secret_access_key": SECRET_ACCESS}
        proc = run_cli("cache", "push", *args, "--signing-key", str(signing_key.path), top, env=cli_env(wrong))
        _assert_clean_error(proc, 2, "rejected the credentials", "SignatureDoesNotMatch")
        unknown = run_cli("cache", "push", *args, "--signing-key", str(signing_key.path), top,
                          env=cli_env({"aws_access_key_id": "AKIAUNKNOWN", "aws_secret_access_key": SECRET_ACCESS}))
        _assert_clean_error(unknown, 2, "rejected the credentials", "InvalidAccessKeyId")
        for p in (proc, unknown):
            assert SECRET_ACCESS not in p.stdout + p.stderr
        right = run_cli("cache", "push", *args, "--signing-key", str(signing_key.path), "--json", top,
                        env=cli_env(server.credentials))
        assert right.returncode == 0, right.stderr
        assert sorted(parse_json_line(right.stdout)["pushed"]) == sorted(store_closure(top))


def test_keygen(tmp_path):
    out = tmp_path / "keys"
    proc = run_cli("cache", "keygen", "--name", "redox-ci-cache-1", "--out-dir", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = parse_json_line(proc.stdout)
    secret = Path(result["secret_key_file"])
    assert secret.stat().st_mode & 0o777 == 0o600
    assert Path(result["public_key_file"]).read_text().strip() == result["public_key"]
    assert read_signing_key(secret).public_key == result["public_key"]
    assert _key_material(secret) not in proc.stdout + proc.stderr
    again = run_cli("cache", "keygen", "--name", "redox-ci-cache-1", "--out-dir", str(out))
    _assert_clean_error(again, 2, "already exists")
    bad = run_cli("cache", "keygen", "--name", "bad name", "--out-dir", str(out))
    _assert_clean_error(bad, 2, "key name 'bad name'")


def _wait_ready(state: Path, proc: subprocess.Popen) -> dict:
    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read()
        return (state / READY_FILE).exists()
    wait_for("the server to start", ready, 60, step=0.05)
    return json.loads((state / READY_FILE).read_text())


def test_serve_keeps_objects_across_restarts(tmp_path):
    state = tmp_path / "state"
    argv = [*CLI, "cache", "serve", "--port", "0", "--bucket", "kept",
            "--state-dir", str(state)]

    def start():
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        info = _wait_ready(state, proc)
        (state / READY_FILE).unlink()
        client = boto3.session.Session(**info["credentials"]).client("s3", endpoint_url=info["url"],
                                                                    region_name="us-east-1")
        return proc, info, client

    def stop(proc):
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        return out

    proc, info, client = start()
    try:
        assert info["restored"] == 0
        client.put_object(Bucket="kept", Key="nar/x.nar", Body=b"payload")
    finally:
        out = stop(proc)
    assert "saved 1 objects" in out
    proc, info, client = start()
    try:
        assert info["restored"] == 1
        assert client.get_object(Bucket="kept", Key="nar/x.nar")["Body"].read() == b"payload"
    finally:
        stop(proc)


def test_serve_port_in_use(s3_server):
    proc = run_cli("cache", "serve", "--port", str(s3_server.port))
    _assert_clean_error(proc, 2, f"cannot listen on 127.0.0.1:{s3_server.port}")
    with pytest.raises(UsageError, match=f"did not start: .*cannot listen on 127.0.0.1:{s3_server.port}"):
        LocalS3Server(port=s3_server.port).start()


def test_serve_bad_bucket_name():
    proc = run_cli("cache", "serve", "--bucket", "x")
    _assert_clean_error(proc, 2, "cannot create bucket 'x'", "not valid")
