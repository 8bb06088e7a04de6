"""``redox-ci local``: the whole CI on one machine, with embedded defaults.

A Buildbot master with its web UI, a local worker, SQLite, a local S3 cache server and
the bundled fixture flake in a git repository of its own (commit to it and the poller
builds it). All state lives in one directory (``.local/`` by default) and survives
restarts; the admin password is generated once and printed.

Every port listens on 127.0.0.1 only. One instance runs per state directory. A part
that cannot start stops the whole start with a sentence saying which and why, and
whatever had started is stopped again; the web UI's address is printed only once the
master answers on it. On a fresh state directory the flake's current commit is built
once without being asked, so that the first page a newcomer opens has a pipeline on it.
"""

from __future__ import annotations

import argparse
import secrets as pysecrets
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .fixture import make_fixture_repo

MASTER_CFG = Path(__file__).resolve().parent.parent / "master.cfg"
# Local commits should show up quickly; production polls less often (settings).
LOCAL_POLL_SECONDS = 10
# The local default is for this machine only: nothing listens on other interfaces.
LOOPBACK = "127.0.0.1"
SETTINGS_HEADER = "# Written by redox-ci local at every start; see README for every key.\n"


@dataclass(frozen=True)
class CacheWiring:
    """Where the local pipeline pushes: an S3 endpoint, a bucket and a signing key."""

    endpoint_url: str
    bucket: str
    secret_key_file: Path
    public_key: str
    credentials: dict[str, str]

    def settings(self) -> dict:
        # The signing key is in the secrets file, handed to each push by the master.
        return {"enabled": True, "bucket": self.bucket, "endpoint_url": self.endpoint_url,
                "public_key": self.public_key,
                # Served straight over HTTP to Nix, so objects are world-readable.
                "public_read": True}


def signing_key(keys_dir: Path, name: str = "redox-ci-local-1") -> tuple[Path, str]:
    """The local cache's signing key, made once and kept with the state."""
    from .cache.keys import generate_keypair
    secret, public = keys_dir / f"{name}.secret", keys_dir / f"{name}.public"
    if secret.exists() and public.exists():
        return secret, public.read_text().strip()
    secret_path, _, key = generate_keypair(name, keys_dir)
    return secret_path, key


@dataclass
class LocalSetup:
    """Everything a local deployment needs written to disk."""

    state: Path
    repo: Path
    www_port: int = 8010
    pb_port: int = 9989
    # Where the web UI and the worker port listen.
    interface: str = LOOPBACK
    systems: list[str] = field(default_factory=lambda: ["x86_64-linux", "aarch64-linux"])
    # "local": a LocalWorker inside the master; "remote": a separate buildbot-worker process.
    worker_kind: str = "local"
    worker_name: str = "local-worker"
    worker_capabilities: list[str] = field(default_factory=list)
    # Systems the worker builds by emulation besides x86_64-linux (redox_ci.emulation).
    worker_emulated_systems: list[str] = field(default_factory=list)
    max_builds: int = 2
    poll_interval: int = LOCAL_POLL_SECONDS
    github_webhook: bool = False
    db_url: str = "sqlite:///state.sqlite"
    # More settings as TOML, merged into the written ones (tables merge, lists of tables
    # such as [[workers.worker]] are appended to).
    extra_toml: str = ""
    # A [cache] section and its credentials, from cache_settings() below.
    cache: CacheWiring | None = None

    @property
    def master_dir(self) -> Path:
        return self.state / "master"

    @property
    def settings_file(self) -> Path:
        return self.state / "settings.toml"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.toml"

    @property
    def url(self) -> str:
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        return f"http://{host}:{self.www_port}/"


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def settings_data(s: LocalSetup) -> dict:
    data = {
        "flake": {"repo": str(s.repo), "branches": ["main"], "poll_interval": s.poll_interval,
                  "systems": list(s.systems)},
        "www": {"port": s.www_port, "interface": s.interface, "url": s.url, "github_webhook": s.github_webhook},
        "database": {"url": s.db_url},
        "workers": {"port": s.pb_port, "interface": s.interface, "command": [sys.executable, "-m", "redox_ci"],
                    "worker": [{"name": s.worker_name, "kind": s.worker_kind, "systems": ["x86_64-linux"],
                                "capabilities": list(s.worker_capabilities), "max_builds": s.max_builds,
                                "emulated_systems": list(s.worker_emulated_systems)}]},
        "secrets": {"file": s.secrets_file.name},
    }
    if s.cache:
        data["cache"] = s.cache.settings()
    if s.extra_toml:
        try:
            data = _merge(data, tomllib.loads(s.extra_toml))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"extra settings: not valid TOML: {e}") from None
    return data


def settings_text(s: LocalSetup) -> str:
    """The settings file, checked as the master will check it before it is written."""
    import tomli_w

    from .config import Settings
    from .settings_file import validate
    data = settings_data(s)
    validate(Settings, data, s.settings_file)
    return SETTINGS_HEADER + tomli_w.dumps(data)


def secrets_text(admin_password: str, worker: tuple[str, str] | None = None,
                 webhook_secret: str | None = None, cache: CacheWiring | None = None) -> str:
    import tomli_w
    data: dict = {"users": {"admin": admin_password}}
    if webhook_secret:
        data["github_webhook_secret"] = webhook_secret
    if worker:
        data["workers"] = {worker[0]: worker[1]}
    if cache:
        data["cache"] = dict(cache.credentials)
        data["cache_signing_key"] = cache.secret_key_file.read_text()
    return tomli_w.dumps(data)


def saved_admin_password(secrets_file: Path) -> str | None:
    """The admin password an earlier start generated, if there was one."""
    if not secrets_file.exists():
        return None
    try:
        password = tomllib.loads(secrets_file.read_text()).get("users", {}).get("admin")
    except (tomllib.TOMLDecodeError, AttributeError) as e:
        raise ConfigError(f"{secrets_file}: cannot read the admin password ({e}); "
                          "remove the file to have a new one made") from None
    return password if isinstance(password, str) and password else None


def prepare(s: LocalSetup, admin_password: str | None = None, worker_password: str | None = None,
            webhook_secret: str | None = None) -> str:
    """Write repo, settings, secrets and master directory; return the admin password."""
    s.state.mkdir(parents=True, exist_ok=True)
    if not (s.repo / ".git").exists():
        make_fixture_repo(s.repo)
    admin_password = admin_password or saved_admin_password(s.secrets_file) or pysecrets.token_urlsafe(12)
    worker = (s.worker_name, worker_password or pysecrets.token_urlsafe(16)) if s.worker_kind == "remote" else None
    settings = settings_text(s)
    s.secrets_file.write_text(secrets_text(admin_password, worker, webhook_secret, s.cache))
    s.secrets_file.chmod(0o600)
    s.settings_file.write_text(settings)
    s.master_dir.mkdir(exist_ok=True)
    if not (s.master_dir / "buildbot.tac").exists():
        subprocess.run(["buildbot", "create-master", "-q", "--db", s.db_url, str(s.master_dir)], check=True)
    shutil.copyfile(MASTER_CFG, s.master_dir / "master.cfg")
    (s.master_dir / "settings.toml").unlink(missing_ok=True)
    (s.master_dir / "settings.toml").symlink_to(s.settings_file)
    return admin_password


def tcp_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="run the whole CI on this machine (master, worker, web UI)")
    p.add_argument("--state-dir", default=".local", help="where state lives (default: .local)")
    p.add_argument("--port", type=tcp_port, default=8010, help="web UI port (default: 8010)")
    p.add_argument("--pb-port", type=tcp_port, default=9989, help="worker port (default: 9989)")
    p.add_argument("--s3-port", type=tcp_port, default=9000, help="local S3 server port (default: 9000)")
    p.add_argument("--flake-repo", help="a git repository holding a flake (default: the bundled fixture)")
    p.add_argument("--no-first-build", action="store_true",
                   help="on a fresh state directory, do not build the flake's current commit by itself")
    p.add_argument("--prepare-only", action="store_true", help="write the state directory and exit")
    p.set_defaults(func=run_local)


def run_local(args) -> int:
    from .localrun import run_local as run
    return run(args)
