"""A local S3 server (moto) with one bucket, for the main job, the tests and a laptop.

It runs in its own process so that uploads and the server do not share one Python
interpreter lock, and so that a caller can stop it by pid. The bucket is public-read,
so Nix substitutes from ``http://127.0.0.1:PORT/BUCKET`` without credentials. moto keeps
objects in memory; with a state directory the objects are written there on shutdown and
loaded again on start, so the main job keeps its cache across restarts.

``auth=True`` makes the server check signatures against an IAM user it creates, so that
wrong credentials are refused as AWS would; anonymous reads are refused too then.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..extras import require

# boto3, moto and the settings are imported where they are used: `redox-ci` imports this
# module at every start for the flags of `cache serve`.
if TYPE_CHECKING:
    from ..config import CacheSettings

DEFAULT_BUCKET = "redox-ci-cache"
DEFAULT_HOST = "127.0.0.1"
REGION = "us-east-1"
# moto accepts any credentials unless auth is on; these only satisfy boto3's signer.
ANONYMOUS_CREDENTIALS = {"aws_access_key_id": "redox-ci-local", "aws_secret_access_key": "redox-ci-local"}
# Importing moto and werkzeug takes a few seconds on a loaded 2-core machine.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
# Pending connections: uploads run up to 64 x 4 at once (upload_parallelism x parts).
LISTEN_BACKLOG = 256
READY_FILE = "server.json"
OBJECTS_DIR = "objects"
LOG_FILE = "server.log"
# Enough of the server's log to show why it did not start.
LOG_TAIL_CHARS = 2000
# Nix asks for a narinfo with HEAD first; moto checks "s3:HeadObject" for that (AWS maps
# HEAD to s3:GetObject), so the policy names both.
PUBLIC_READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                   "Action": ["s3:GetObject", "s3:HeadObject"], "Resource": ["arn:aws:s3:::{bucket}/*"]}],
}
UPLOADER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def _client(service: str, url: str, credentials: dict):
    import boto3
    return boto3.session.Session(**credentials).client(service, endpoint_url=url, region_name=REGION)


def _create_user(url: str) -> dict:
    iam = _client("iam", url, ANONYMOUS_CREDENTIALS)
    iam.create_user(UserName="redox-ci")
    iam.put_user_policy(UserName="redox-ci", PolicyName="cache", PolicyDocument=json.dumps(UPLOADER_POLICY))
    key = iam.create_access_key(UserName="redox-ci")["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def restore(client, bucket: str, objects: Path) -> int:
    count = 0
    if objects.is_dir():
        for f in sorted(objects.rglob("*")):
            if f.is_file():
                client.upload_file(str(f), bucket, f.relative_to(objects).as_posix())
                count += 1
    return count


def dump(client, bucket: str, objects: Path) -> int:
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            dest = objects / obj["Key"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
            count += 1
    return count


def _write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(path)


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a port in use is our error, not a thread
    dying (moto's ThreadedMotoServer) or sys.exit (werkzeug)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _last_line(log: Path, since: int) -> str:
    """What the server said last since ``since``: its error, when it failed to start."""
    with open(log, "rb") as f:
        f.seek(since)
        lines = f.read()[-LOG_TAIL_CHARS:].decode(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("local S3 server: ") if lines else "no output"


def _create_public_bucket(client, bucket: str) -> None:
    from botocore.exceptions import ClientError
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as e:
        raise UsageError(f"cannot create bucket {bucket!r}: {e.response['Error'].get('Message')}") from None
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(PUBLIC_READ_POLICY).replace("{bucket}", bucket))


def serve(bucket: str = DEFAULT_BUCKET, host: str = DEFAULT_HOST, port: int = 0,
          state_dir: Path | None = None, auth: bool = False, persist: bool = True, announce=print) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT.

    With ``state_dir`` it writes its URL there and, if ``persist``, keeps the objects
    there across restarts.
    """
    from moto import settings as moto_settings
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sock = _listen(host, port)
    server = make_server(host, sock.getsockname()[1], DomainDispatcherApplication(create_backend_app),
                         threaded=True, fd=sock.fileno())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        url = f"http://{host}:{port}"
        client = _client("s3", url, ANONYMOUS_CREDENTIALS)
        _create_public_bucket(client, bucket)
        objects = state_dir / OBJECTS_DIR if state_dir and persist and not auth else None
        restored = restore(client, bucket, objects) if objects else 0
        credentials = ANONYMOUS_CREDENTIALS
        if auth:
            credentials = _create_user(url)
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        info = {"url": url, "port": port, "bucket": bucket, "pid": os.getpid(),
                "restored": restored, "auth": auth, "credentials": credentials}
        if state_dir:
            _write_atomic(state_dir / READY_FILE, info)
        announce(f"S3 server on {url}, bucket {bucket!r} ({restored} objects restored); "
                 f"substitute from {url}/{bucket}")
        stop.wait()
        if objects:
            client = _client("s3", url, credentials)
            announce(f"saved {dump(client, bucket, objects)} objects to {objects}")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        sock.close()


@dataclass
class LocalS3Server:
    """Context manager: ``with LocalS3Server() as srv: srv.settings()`` gives a working cache."""

    bucket: str = DEFAULT_BUCKET
    # Objects persist here across restarts; without it they live only as long as the server.
    state_dir: Path | None = None
    auth: bool = False
    # 0 picks a free port; after start() it is the port in use.
    port: int = 0
    host: str = DEFAULT_HOST
    url: str = ""
    credentials: dict | None = None
    _proc: subprocess.Popen | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    def argv(self, state_dir: Path) -> list[str]:
        argv = [sys.executable, "-m", "redox_ci.cache.localserver", "--host", self.host, "--port", str(self.port),
                "--bucket", self.bucket, "--state-dir", str(state_dir)]
        return argv + (["--auth"] if self.auth else []) + (["--ephemeral"] if self._tmp else [])

    def start(self) -> LocalS3Server:
        """Start the server and wait until it serves; on any failure, or a signal while
        waiting, stop it again (``with`` calls no ``__exit__`` when this raises)."""
        from ..processes import spawn
        require("local", "the local S3 server")
        if self.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="redox-ci-s3-")
            self.state_dir = Path(self._tmp.name)
        state = Path(self.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        ready, log_path = state / READY_FILE, state / LOG_FILE
        ready.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            since = log.tell()
            self._proc = spawn(self.argv(state), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not ready.exists():
                if self._proc.poll() is not None:
                    raise UsageError(f"the local S3 server did not start: {_last_line(log_path, since)} "
                                     f"(see {log_path})")
                if time.monotonic() > deadline:
                    raise UsageError(f"the local S3 server did not start within {READY_TIMEOUT:.0f} s "
                                     f"(see {log_path})")
                time.sleep(POLL_INTERVAL)
        except BaseException:
            self.stop()
            raise
        info = json.loads(ready.read_text())
        self.url, self.port, self.credentials = info["url"], info["port"], info["credentials"]
        return self

    def stop(self) -> None:
        from ..processes import stop
        if self._proc:
            stop(self._proc, STOP_TIMEOUT)
        self._proc = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def substituter(self) -> str:
        return f"{self.url}/{self.bucket}"

    def settings(self, **overrides) -> CacheSettings:
        from ..config import CacheSettings
        values = {"bucket": self.bucket, "endpoint_url": self.url, "region": REGION}
        return CacheSettings(**{**values, **overrides})

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, help="keep objects here across restarts; "
                        f"{READY_FILE} there tells the URL and port")
    parser.add_argument("--ephemeral", action="store_true", help="do not save objects in --state-dir on exit")
    parser.add_argument("--auth", action="store_true", help="check credentials (for tests); "
                        "anonymous reads are refused then")


def run_from_args(args: argparse.Namespace) -> int:
    require("local", "the local S3 server")
    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    serve(bucket=args.bucket, host=args.host, port=args.port, state_dir=args.state_dir,
          auth=args.auth, persist=not args.ephemeral, announce=lambda m: print(m, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redox_ci.cache.localserver", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except UsageError as e:
        print(f"local S3 server: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
