"""``redox-ci local``: the whole CI on one machine, with embedded defaults.

A Buildbot master with its web UI, a local worker, SQLite, and the bundled fixture
flake in a git repository of its own (commit to it and the poller builds it). All
state lives in one directory (``.local/`` by default) and survives restarts; the
admin password is generated once and printed.
"""

from __future__ import annotations

import argparse
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .fixture import make_fixture_repo

MASTER_CFG = Path(__file__).resolve().parent.parent / "master.cfg"
# Local commits should show up quickly; production polls less often (settings).
LOCAL_POLL_SECONDS = 10
# A master finishing its running steps on SIGTERM; past this it is killed.
MASTER_STOP_SECONDS = 30


@dataclass(frozen=True)
class CacheWiring:
    """Where the local pipeline pushes: an S3 endpoint, a bucket and a signing key."""

    endpoint_url: str
    bucket: str
    secret_key_file: Path
    public_key: str
    credentials: dict[str, str]

    def settings_toml(self) -> str:
        return f"""
[cache]
enabled = true
bucket = "{self.bucket}"
endpoint_url = "{self.endpoint_url}"
public_key = "{self.public_key}"
secret_key_file = "{self.secret_key_file}"
# Served straight over HTTP to Nix, so objects are world-readable.
public_read = true
"""

    def secrets_toml(self) -> str:
        return "\n[cache]\n" + "".join(f'{k} = "{v}"\n' for k, v in self.credentials.items())


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
    systems: list[str] = field(default_factory=lambda: ["x86_64-linux", "aarch64-linux"])
    # "local": a LocalWorker inside the master; "remote": a separate buildbot-worker process.
    worker_kind: str = "local"
    worker_name: str = "local-worker"
    worker_capabilities: list[str] = field(default_factory=list)
    max_builds: int = 2
    poll_interval: int = LOCAL_POLL_SECONDS
    github_webhook: bool = False
    db_url: str = "sqlite:///state.sqlite"
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
        return f"http://127.0.0.1:{self.www_port}/"


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def settings_text(s: LocalSetup) -> str:
    command = toml_list([sys.executable, "-m", "redox_ci"])
    return f"""# Written by redox-ci local; see README for every key.
[flake]
repo = "{s.repo}"
branches = ["main"]
poll_interval = {s.poll_interval}
systems = {toml_list(s.systems)}

[www]
port = {s.www_port}
url = "{s.url}"
github_webhook = {str(s.github_webhook).lower()}

[database]
url = "{s.db_url}"

[workers]
port = {s.pb_port}
command = {command}

[[workers.worker]]
name = "{s.worker_name}"
kind = "{s.worker_kind}"
systems = ["x86_64-linux"]
capabilities = {toml_list(s.worker_capabilities)}
max_builds = {s.max_builds}

[secrets]
file = "secrets.toml"
{s.cache.settings_toml() if s.cache else ""}{s.extra_toml}"""


def secrets_text(admin_password: str, worker: tuple[str, str] | None = None,
                 webhook_secret: str | None = None, cache: CacheWiring | None = None) -> str:
    text = f'[users]\nadmin = "{admin_password}"\n'
    if worker:
        text += f'\n[workers]\n{worker[0]} = "{worker[1]}"\n'
    if cache:
        text += cache.secrets_toml()
    if webhook_secret:
        text = f'github_webhook_secret = "{webhook_secret}"\n\n' + text
    return text


def prepare(s: LocalSetup, admin_password: str | None = None, worker_password: str | None = None,
            webhook_secret: str | None = None) -> str:
    """Write repo, settings, secrets and master directory; return the admin password."""
    s.state.mkdir(parents=True, exist_ok=True)
    if not (s.repo / ".git").exists():
        make_fixture_repo(s.repo)
    if s.secrets_file.exists() and admin_password is None:
        admin_password = s.secrets_file.read_text().split('admin = "', 1)[1].split('"', 1)[0]
    admin_password = admin_password or pysecrets.token_urlsafe(12)
    worker = (s.worker_name, worker_password or pysecrets.token_urlsafe(16)) if s.worker_kind == "remote" else None
    s.secrets_file.write_text(secrets_text(admin_password, worker, webhook_secret, s.cache))
    s.secrets_file.chmod(0o600)
    s.settings_file.write_text(settings_text(s))
    s.master_dir.mkdir(exist_ok=True)
    if not (s.master_dir / "buildbot.tac").exists():
        subprocess.run(["buildbot", "create-master", "-q", "--db", s.db_url, str(s.master_dir)], check=True)
    shutil.copyfile(MASTER_CFG, s.master_dir / "master.cfg")
    (s.master_dir / "settings.toml").unlink(missing_ok=True)
    (s.master_dir / "settings.toml").symlink_to(s.settings_file)
    return admin_password


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="run the whole CI on this machine (master, worker, web UI)")
    p.add_argument("--state-dir", default=".local", help="where state lives (default: .local)")
    p.add_argument("--port", type=int, default=8010, help="web UI port (default: 8010)")
    p.add_argument("--pb-port", type=int, default=9989, help="worker port (default: 9989)")
    p.add_argument("--s3-port", type=int, default=9000, help="local S3 server port (default: 9000)")
    p.add_argument("--flake-repo", help="a git repository holding a flake (default: the bundled fixture)")
    p.add_argument("--prepare-only", action="store_true", help="write the state directory and exit")
    p.set_defaults(func=run_local)


def local_capabilities() -> list[str]:
    """"kvm" when this host can run Cloud Hypervisor: a usable /dev/kvm and the binary."""
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and shutil.which("cloud-hypervisor")
    return ["kvm"] if usable else []


def run_local(args) -> int:
    from .cache.localserver import LocalS3Server
    if not shutil.which("buildbot"):
        raise UsageError("buildbot is not installed; run scripts/install.sh")
    state = Path(args.state_dir).resolve()
    repo = Path(args.flake_repo).resolve() if args.flake_repo else state / "redox-flake"
    if args.flake_repo and not (repo / ".git").exists():
        raise UsageError(f"--flake-repo {repo}: not a git repository (clone the flake there first)")
    setup = LocalSetup(state=state, repo=repo, www_port=args.port, pb_port=args.pb_port,
                       worker_capabilities=local_capabilities())
    with LocalS3Server(state_dir=state / "s3", port=args.s3_port) as s3:
        key_file, public_key = signing_key(state / "keys")
        setup.cache = CacheWiring(s3.url, s3.bucket, key_file, public_key, s3.credentials)
        password = prepare(setup)
        print(f"redox-ci local: state in {state}")
        print(f"  flake repository: {repo} (commit to it and a build starts within {LOCAL_POLL_SECONDS} s)")
        print(f"  web UI: {setup.url}  (log in as admin / {password} to force builds)")
        print(f"  binary cache: {s3.substituter}; to use it, add to nix.conf:")
        print(f"    extra-substituters = {s3.substituter}")
        print(f"    extra-trusted-public-keys = {public_key}")
        if args.prepare_only:
            return 0
        sys.stdout.flush()
        return run_master(setup.master_dir)


def run_master(master_dir: Path) -> int:
    """Run the master in the foreground; on Ctrl-C or SIGTERM stop it, then the S3 server."""
    master = subprocess.Popen(["buildbot", "start", "--nodaemon", str(master_dir)])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return master.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if master.poll() is None:
            master.terminate()
            try:
                master.wait(MASTER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                master.kill()
