"""Shared by the cache tests and bench: real Nix closures, a fault-injecting proxy, helpers.

The proxy sits between boto3 and the moto server and fails chosen requests (HTTP 500 or
503, a dropped or reset connection, 403, a vanished bucket) so the retry and ordering
rules are tested against real HTTP, not against mocked clients. It also records every
request, which is how a test proves that a second push sent no upload at all.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from redox_ci.cache.keys import generate_keypair, read_signing_key
from redox_ci.cache.localserver import LocalS3Server
from redox_ci.cache.narinfo import NARINFO_SUFFIX, parse_narinfo
from redox_ci.fixture import install_busybox
from redox_ci.nix import nix_env
from tests.support import requires

# Hop-by-hop headers the proxy must not copy from one connection to the other.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
UPSTREAM_TIMEOUT = 60
NO_SUCH_BUCKET_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code>'
                       b'<Message>The specified bucket does not exist</Message></Error>')
ACCESS_DENIED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                      b'<Message>Access Denied</Message></Error>')


# ---------------------------------------------------------------- Nix closures

def closure_expr(nonce: str, files: list[tuple[str, int, bool]]) -> str:
    """A Nix expression: one path per (name, KiB, compressible) plus a top path referring to all.

    Random bytes stand for compiled code that does not compress; repeated text for
    sources and docs that do. ``nonce`` makes every call build new paths. Built in the
    sandbox by busybox from ``tools/`` beside the expression (``install_busybox``).
    """
    deps = []
    for name, kib, compressible in files:
        if compressible:
            body = f"yes {name}-{nonce}-compressible-text | head -c {kib * 1024} > $out/data"
        else:
            body = f"head -c {kib * 1024} /dev/urandom > $out/data"
        deps.append(f'''  {name} = derivation {{
    name = "{name}"; system = builtins.currentSystem; builder = busybox;
    nonce = "{nonce}";
    args = [ "sh" "-c" "mkdir $out; {body}; echo {name} > $out/name" ];
  }};''')
    refs = " ".join(f"${{{name}}}" for name, _, _ in files)
    return ('let\n  busybox = "${./tools}/busybox";\n' + "\n".join(deps) + f'''
in derivation {{
  name = "top-{nonce[:8]}"; system = builtins.currentSystem; builder = busybox;
  args = [ "sh" "-c" "mkdir $out; for r in {refs}; do echo $r; done > $out/refs" ];
}}
''')


def build_closure(workdir: Path, files: list[tuple[str, int, bool]], nonce: str | None = None) -> str:
    """Build a fresh closure with real Nix; return the top store path."""
    nonce = nonce or uuid.uuid4().hex
    install_busybox(workdir)
    expr = workdir / f"closure-{nonce[:8]}.nix"
    expr.write_text(closure_expr(nonce, files))
    proc = subprocess.run(["nix-build", "--no-out-link", str(expr)], capture_output=True, text=True,
                          env=nix_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def nix_out(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, env=env or nix_env())


def store_closure(path: str) -> list[str]:
    proc = nix_out("nix-store", "--query", "--requisites", path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def nar_hash(path: str) -> str:
    """The NAR hash recomputed from the files on disk (not read from Nix's database)."""
    proc = nix_out("nix", "hash", "path", "--type", "sha256", "--base32", path)
    assert proc.returncode == 0, proc.stderr
    return "sha256:" + proc.stdout.strip()


def delete_from_store(paths: list[str]) -> None:
    proc = nix_out("nix", "store", "delete", *paths)
    assert proc.returncode == 0, proc.stderr
    assert not any(os.path.exists(p) for p in paths)


def substitute(cache_url: str, public_key: str, path: str, cache_home: Path) -> subprocess.CompletedProcess:
    """Fetch ``path`` from the cache alone, trusting only ``public_key``.

    A private XDG cache directory keeps Nix's narinfo lookup cache of one test from
    answering for another.
    """
    env = nix_env()
    env["XDG_CACHE_HOME"] = str(cache_home)
    return nix_out("nix-store", "--realise", path, "--option", "substituters", cache_url,
                   "--option", "trusted-public-keys", public_key, env=env)


# ---------------------------------------------------------------- bucket checks

def bucket_objects(client, bucket: str, prefix: str = "", field: str = "ETag") -> dict:
    """key -> ETag (or another listing field, e.g. Size) of every object under ``prefix``."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o[field] for o in page.get("Contents", [])})
    return out


def orphan_narinfos(client, bucket: str, prefix: str = "") -> list[str]:
    """Narinfos whose NAR is missing or not the size the narinfo promises: what a reader must never see."""
    sizes = bucket_objects(client, bucket, prefix, field="Size")
    base = prefix.rstrip("/") + "/" if prefix else ""
    orphans = []
    for key in sizes:
        if key.endswith(NARINFO_SUFFIX):
            info = parse_narinfo(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
            if sizes.get(base + info.url) != info.file_size:
                orphans.append(key)
    return orphans


# ---------------------------------------------------------------- fault proxy

@dataclass
class Fault:
    """Fail requests matching ``method`` and ``path`` (a regex on path?query).

    ``action``: an HTTP status ("500", "503", "403"), "nosuchbucket", "drop" (close
    without an answer) or "reset" (TCP RST). ``skip`` matching requests pass first;
    then ``times`` of them fail (None: all that follow).
    """

    action: str
    method: str | None = None
    path: str = ""
    times: int | None = 1
    skip: int = 0
    seen: int = 0
    fired: int = 0

    def applies(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass
class Request:
    method: str
    path: str
    status: int | str


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (host, port) that injects faults."""

    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def requests(self, method: str | None = None, path: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.log if (not method or r.method == method) and re.search(path, r.path)]

    def reset(self, faults: list[Fault] | None = None) -> None:
        with self._lock:
            self.faults, self.log = list(faults or []), []

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.applies(method, path):
                    return f
        return None

    def _record(self, method: str, path: str, status) -> None:
        with self._lock:
            self.log.append(Request(method, path, status))

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            # trailers until the blank line
                            while self.rfile.readline().strip():
                                pass
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", "application/xml")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None:
                    proxy._record(self.command, self.path, fault.action)
                    if fault.action in ("drop", "reset"):
                        self.close_connection = True
                        if fault.action == "reset":
                            # Linger 0: close() sends RST instead of FIN.
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       struct.pack("ii", 1, 0))
                        else:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.action == "nosuchbucket":
                        return self._answer(404, NO_SUCH_BUCKET_BODY)
                    if fault.action == "403":
                        return self._answer(403, ACCESS_DENIED_BODY)
                    return self._answer(int(fault.action))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=UPSTREAM_TIMEOUT)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                proxy._record(self.command, self.path, resp.status)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_HEADERS | {"content-length", "server", "date"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)) if self.command != "HEAD"
                                 else resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def upstream_of(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def cli_env(credentials: dict) -> dict[str, str]:
    """The environment boto3's chain reads credentials from, with nothing else from AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = credentials["aws_access_key_id"]
    env["AWS_SECRET_ACCESS_KEY"] = credentials["aws_secret_access_key"]
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


def parse_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- pytest fixtures
# Imported by the cache test modules; module scope shares one server per module.

KEY_NAME = "redox-ci-test-1"
# Two small paths and a top one: a closure with references, quick to build and push.
SMALL_CLOSURE = [("docs", 64, True), ("blob", 32, False)]


@pytest.fixture(scope="module")
def s3_server():
    requires("nix")
    with LocalS3Server(bucket="redox-ci-test") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(s3_server):
    with FaultProxy(upstream_of(s3_server.url)) as p:
        yield p


@pytest.fixture
def clean_proxy(proxy):
    proxy.reset()
    yield proxy
    proxy.reset()


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    secret, _, _ = generate_keypair(KEY_NAME, tmp_path_factory.mktemp("keys"))
    return read_signing_key(secret)


@pytest.fixture
def s3_client(s3_server):
    return boto3.session.Session(**s3_server.credentials).client(
        "s3", endpoint_url=s3_server.url, region_name="us-east-1")


@pytest.fixture
def cache_settings(s3_server, clean_proxy):
    """Settings that go through the proxy, under a prefix of their own."""
    return s3_server.settings(endpoint_url=clean_proxy.url, prefix=f"t-{uuid.uuid4().hex[:12]}",
                              compression="xz")
