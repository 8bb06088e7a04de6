"""Settings: one TOML file, typed and validated before anything starts.

The master and the ``redox-ci`` command read the same file. Every problem is
reported at once, each naming the file and the key, so that a wrong setting
stops the master with a sentence instead of a traceback half-way through start-up.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

SETTINGS_ENV = "REDOX_CI_SETTINGS"
DEFAULT_SETTINGS_NAME = "settings.toml"

# Nix attribute names as the flake uses them (camelCase, dashes in checks).
ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
SYSTEM_RE = re.compile(r"^[a-z0-9_]+-[a-z0-9_]+$")
KNOWN_CAPABILITIES = frozenset({"kvm", "big-parallel"})

DEFAULT_STAGES: dict[str, list[str]] = {
    "host-tools": ["cookbook", "redoxfs", "installer", "fstools"],
    "cross-system": ["relibc", "kernel", "bootloader", "base", "sysroot"],
    "cross-userspace": [
        "ion", "helix", "binutils", "netutils", "uutils", "redoxfsTarget", "extrautils", "sodium",
    ],
    "infrastructure": ["initfsTools", "bootstrap", "initfs", "diskImage", "redox-minimal"],
}
DEFAULT_RUNNERS = [
    "runQemu", "runQemuGraphical", "bootTest", "runCloudHypervisor", "runCloudHypervisorNet",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_attrs(names: list[str]) -> list[str]:
    bad = [n for n in names if not ATTR_RE.match(n)]
    if bad:
        raise ValueError(f"not Nix attribute names: {', '.join(map(repr, bad))}")
    return names


class FlakeSettings(_Section):
    # The git repository that is polled and built. Builds always use this URL, never a
    # repository named by a webhook payload.
    repo: str
    branches: list[str] = ["main"]
    # Seconds between polls of the repository; GitHub's webhook makes this a fallback.
    poll_interval: int = Field(default=300, ge=5)
    systems: list[str] = ["x86_64-linux", "aarch64-linux"]

    @field_validator("systems")
    @classmethod
    def _systems(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not SYSTEM_RE.match(s)]
        if bad or not v:
            raise ValueError(f"systems must be like 'x86_64-linux', got {v!r}")
        return v


class PlanSettings(_Section):
    # Ordered: the pipeline builds stage after stage in this order.
    stages: dict[str, list[str]] = DEFAULT_STAGES
    # Scripts that run a VM; they are not build artefacts and are not built.
    runners: list[str] = DEFAULT_RUNNERS
    # Packages whose tests must run: redox-ci turns doCheck on where the flake has it off.
    checks: list[str] = ["cookbook", "redoxfs", "installer"]

    @field_validator("runners", "checks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return _check_attrs(v)

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for stage, attrs in v.items():
            if not re.match(r"^[a-z][a-z0-9-]*$", stage) or stage == "other":
                raise ValueError(f"stage name {stage!r} must be lower-case words joined by '-', not 'other'")
            _check_attrs(attrs)
        return v


def _check_interface(v: str) -> str:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"must be an IP address such as '127.0.0.1' (this host only) or "
                         f"'0.0.0.0' (every IPv4 interface), got {v!r}") from None
    return v


# The address a port listens on. Loopback unless the settings say otherwise: the web UI
# lets admins start builds, and the worker port takes worker logins.
Interface = Annotated[str, AfterValidator(_check_interface)]


class WwwSettings(_Section):
    port: int = Field(default=8010, ge=1, le=65535)
    # Plain HTTP: serve it to others through a TLS reverse proxy on this host.
    interface: Interface = "127.0.0.1"
    url: str = "http://localhost:8010/"
    # The GitHub change hook at /change_hook/github; it needs github_webhook_secret.
    github_webhook: bool = False


class DatabaseSettings(_Section):
    url: str = "sqlite:///state.sqlite"


class WorkerSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # "local" runs inside the master process (development); "remote" connects over PB.
    kind: Literal["local", "remote"] = "remote"
    systems: list[str] = ["x86_64-linux"]
    capabilities: list[str] = []
    max_builds: int = Field(default=1, ge=1)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - KNOWN_CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {unknown}; known: {sorted(KNOWN_CAPABILITIES)}")
        return v


class WorkersSettings(_Section):
    # A TOML inventory (see workers/inventory.toml), relative to the settings file.
    inventory: str | None = None
    # Port remote workers connect to.
    port: int = Field(default=9989, ge=1, le=65535)
    # Remote workers need an address they reach ("0.0.0.0", or a private network's).
    interface: Interface = "127.0.0.1"
    # Inline workers, used when there is no inventory file.
    worker: list[WorkerSpec] = []
    # How steps start redox-ci on a worker (argv prefix).
    command: list[str] = ["redox-ci"]


class CacheSettings(_Section):
    enabled: bool = False
    bucket: str = ""
    region: str = "us-east-1"
    # For R2, MinIO or a local moto server; None means AWS itself.
    endpoint_url: str | None = None
    prefix: str = ""
    # "name:base64" as `nix key convert-secret-to-public` prints it.
    public_key: str = ""
    # The file `nix key generate-secret` wrote; relative to the settings file.
    secret_key_file: str | None = None
    # Parallel uploads; S3 handles far more, a worker's uplink usually does not.
    upload_parallelism: int = Field(default=8, ge=1, le=64)
    # zstd: xz packs tighter but staged at ~4 MB/s here (minutes per GB of toolchain);
    # zstd keeps up with the uplink, and Nix 2.8 (what the tests run) substitutes it.
    compression: Literal["xz", "zstd", "none"] = "zstd"
    # Attempts per S3 request (first try included) for 5xx, throttling, dropped connections;
    # botocore backs off exponentially with jitter, capped at 20 s between attempts.
    max_attempts: int = Field(default=8, ge=1, le=20)
    # NARs at least this large go up in parts of this size (S3's minimum part is 5 MiB).
    multipart_threshold_mb: int = Field(default=64, ge=5, le=5 * 1024)
    # Give every object a public-read ACL, for buckets served straight over HTTP. Off for
    # AWS buckets with ACLs disabled (the default there), which refuse such uploads.
    public_read: bool = False

    @model_validator(mode="after")
    def _needs_bucket(self) -> CacheSettings:
        if self.enabled and not self.bucket:
            raise ValueError("cache is enabled but [cache].bucket is empty")
        if self.enabled and not self.secret_key_file:
            raise ValueError("cache is enabled but [cache].secret_key_file is not set")
        return self


class BootImage(_Section):
    """How a boot of one image is judged (``[boot.images.<attribute>]``), as the flake's tests."""

    # The flake's boot test: Boot Complete, then a shell prompt within shell_grace seconds,
    # else "partial: no shell". shell = false passes at Boot Complete.
    shell: bool = True
    shell_grace: float = Field(default=10, gt=0)
    # A VM test image: it passes when its FUNC_TEST or NET_TEST lines end with
    # <prefix>S_COMPLETE and none failed (shell is then not waited for).
    tests: Literal["FUNC_TEST", "NET_TEST"] | None = None
    # Seconds from start to the verdict with KVM and without; unset: [boot].timeout and
    # tcg_timeout. Without KVM the larger of the two counts, as in the flake.
    timeout: float | None = Field(default=None, gt=0)
    tcg_timeout: float | None = Field(default=None, gt=0)


# The flake's own: bootTest boots redox-minimal; functionalTest gives its image 120 s.
DEFAULT_BOOT_IMAGES: dict[str, BootImage] = {
    "redox-minimal": BootImage(),
    "redox-functional-test": BootImage(tests="FUNC_TEST", timeout=120),
}


class BootSettings(_Section):
    enabled: bool = True
    # Seconds from the VMM's start to the verdict, with KVM and without: the flake's
    # boot test gives 90 s, and at least 180 s under TCG. [boot.images] may say otherwise.
    timeout: float = Field(default=90, gt=0)
    tcg_timeout: float = Field(default=180, gt=0)
    # Optional earlier limits per milestone (firmware, kernel, boot-complete), each counted
    # from the milestone before, for TCG; KVM uses kvm_timeout_factor of them.
    timeouts: dict[str, float] = {}
    kvm_timeout_factor: float = Field(default=0.25, gt=0, le=1)
    memory_mb: int = Field(default=1024, ge=128)
    cpus: int = Field(default=2, ge=1)
    # Lines listed as harmless, matched as parts of a line: real boots print them (Cloud
    # Hypervisor writes "dwordread", older logs "dword read"; smolnetd or smoltcpd).
    harmless: list[str] = [
        "WARN - Failed to locate Outputs",
        "invalid virtio register dword",
        "no network adapter found",
        "not found in namespace",
    ]
    # Attribute holding the disk image (redox.img) booted after the stages, as bootTest does.
    image_attr: str = "redox-minimal"
    bootloader_attr: str = "bootloader"
    # "auto": KVM when /dev/kvm is usable (and QEMU falls back to TCG if KVM fails to
    # start), else TCG. "kvm" fails when KVM is not there; "tcg" never uses it.
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    # How each image is judged, by attribute, on top of DEFAULT_BOOT_IMAGES; an image not
    # named follows the flake's boot test (Boot Complete, then a shell).
    images: dict[str, BootImage] = DEFAULT_BOOT_IMAGES
    # UEFI firmware per "<vmm>/<system>" (e.g. "cloud-hypervisor/x86_64-linux" =
    # "/opt/ch/CLOUDHV.fd"); unset ones are looked up where distributions install them.
    firmware: dict[str, str] = {}

    @field_validator("timeouts", mode="before")
    @classmethod
    def _timeouts(cls, v: object) -> object:
        from .boot.markers import SHELL, TIMED_MILESTONES  # the engine owns the milestone names

        if not isinstance(v, dict):
            return v
        unknown = sorted(set(v) - set(TIMED_MILESTONES))
        if unknown:
            shell = " (the shell's wait is [boot.images.<attribute>].shell_grace)" if SHELL in unknown else ""
            raise ValueError(f"unknown milestone(s) {unknown}; known: {list(TIMED_MILESTONES)}{shell}")
        bad = sorted(k for k, t in v.items() if isinstance(t, (int, float)) and t <= 0)
        if bad:
            raise ValueError(f"timeouts must be > 0 seconds: {bad}")
        return v

    @field_validator("firmware")
    @classmethod
    def _firmware(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if not re.match(r"^(qemu|cloud-hypervisor)/[a-z0-9_]+-[a-z0-9_]+$", k))
        if bad:
            raise ValueError(f"firmware keys are '<vmm>/<system>' like 'qemu/x86_64-linux', got {bad}")
        return v

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        _check_attrs(list(v))
        return {**DEFAULT_BOOT_IMAGES, **v}

    def image(self, attr: str) -> BootImage:
        """The rule for ``attr``: as set in [boot.images], else the flake's boot test."""
        return self.images.get(attr, BootImage())

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BootSettings:
        """Only the [boot] table of a settings file: a worker needs no other section."""
        p = Path(path)
        table = _read_toml(p, "settings").get("boot", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: boot: must be a table")
        try:
            return cls.model_validate(table)
        except ValidationError as e:
            raise ConfigError(_format_errors(p, e, prefix="boot.")) from None


class ReproSettings(_Section):
    enabled: bool = True
    # Cron-like: hour and minute (UTC) of the nightly run.
    hour: int = Field(default=3, ge=0, le=23)
    minute: int = Field(default=0, ge=0, le=59)
    branches: list[str] = ["main"]
    # Attributes of packages.<system> to compare; empty means every package there.
    attrs: list[str] = []
    # diffoscope bounds: seconds and bytes of report.
    diffoscope_timeout: int = Field(default=600, ge=1)
    diffoscope_max_report_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # The diffoscope executable: a name on PATH or a path. Missing, the verdicts stand
    # and the reports say why they have no diff.
    diffoscope: str = "diffoscope"
    # The system whose packages are compared.
    system: str = "x86_64-linux"
    # Keep the differing copy <out>.check in the store after the report (for a person to
    # look at); otherwise it is removed so nightly runs do not fill the store.
    keep_check: bool = False

    @field_validator("attrs")
    @classmethod
    def _repro_attrs(cls, v: list[str]) -> list[str]:
        return _check_attrs(v)

    @field_validator("system")
    @classmethod
    def _repro_system(cls, v: str) -> str:
        if not SYSTEM_RE.match(v):
            raise ValueError(f"system must be like 'x86_64-linux', got {v!r}")
        return v


class SecretsSettings(_Section):
    # TOML file with [users], [workers], github_webhook_secret, [cache] credentials.
    file: str = "secrets.toml"


class Settings(_Section):
    flake: FlakeSettings
    plan: PlanSettings = PlanSettings()
    www: WwwSettings = WwwSettings()
    database: DatabaseSettings = DatabaseSettings()
    workers: WorkersSettings = WorkersSettings()
    cache: CacheSettings = CacheSettings()
    boot: BootSettings = BootSettings()
    repro: ReproSettings = ReproSettings()
    secrets: SecretsSettings = SecretsSettings()


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where they came from, so relative paths resolve beside the file."""

    settings: Settings
    path: Path
    workers: list[WorkerSpec] = field(default_factory=list)

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()


def settings_path(explicit: str | os.PathLike | None = None, basedir: Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(SETTINGS_ENV):
        return Path(os.environ[SETTINGS_ENV])
    return (basedir or Path.cwd()) / DEFAULT_SETTINGS_NAME


def _format_errors(path: Path, err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        key = prefix + loc if loc else prefix.rstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        lines.append(f"{path}: {key}: {msg}")
    return "\n".join(lines)


def _read_toml(path: Path, what: str) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found (set {SETTINGS_ENV} or create it)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} file: {e.strerror}") from None


def parse_settings(data: dict, path: Path) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None


def load_inventory(path: Path) -> list[WorkerSpec]:
    data = _read_toml(path, "worker inventory")
    unknown = set(data) - {"worker"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}: the inventory holds [[worker]] tables")
    specs = []
    for i, w in enumerate(data.get("worker", [])):
        try:
            specs.append(WorkerSpec.model_validate(w))
        except ValidationError as e:
            raise ConfigError(_format_errors(path, e, prefix=f"worker[{i}].")) from None
    return specs


def load_settings(path: str | os.PathLike | None = None, with_workers: bool = True) -> LoadedSettings:
    """Read and validate the settings; ``with_workers=False`` on a worker host, which
    has the settings file but not the master's inventory."""
    p = settings_path(path).resolve()
    settings = parse_settings(_read_toml(p, "settings"), p)
    loaded = LoadedSettings(settings, p)
    if not with_workers:
        return loaded
    if settings.workers.inventory:
        workers = load_inventory(loaded.resolve(settings.workers.inventory))
    else:
        workers = list(settings.workers.worker)
    names = [w.name for w in workers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: workers: duplicate worker names {dupes}")
    if not workers:
        raise ConfigError(f"{p}: workers: no workers; add [[workers.worker]] or [workers].inventory")
    return LoadedSettings(settings, p, workers)


@dataclass(frozen=True)
class Secrets:
    """What the secrets file holds. Values are never logged or shown."""

    users: dict[str, str]
    worker_passwords: dict[str, str]
    values: dict[str, str]  # flat: name -> value, for util.Secret lookups

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def cache_credentials(self) -> dict[str, str] | None:
        """S3 credentials from [cache]; None leaves boto3 to its chain (environment, role)."""
        creds = {k.removeprefix("cache-"): v for k, v in self.values.items() if k.startswith("cache-")}
        return creds or None


SECRET_KEYS = {"users", "workers", "github_webhook_secret", "cache"}
CACHE_SECRET_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}


def load_secrets(loaded: LoadedSettings) -> Secrets:
    path = loaded.resolve(loaded.settings.secrets.file)
    data = _read_toml(path, "secrets")
    errors = [f"{path}: {k}: unknown key (misspelt?)" for k in sorted(set(data) - SECRET_KEYS)]

    def table(name: str) -> dict[str, str]:
        t = data.get(name, {})
        if not isinstance(t, dict) or not all(isinstance(v, str) for v in t.values()):
            errors.append(f"{path}: {name}: must be a table of strings")
            return {}
        return t

    users, workers, cache = table("users"), table("workers"), table("cache")
    errors += [f"{path}: cache.{k}: unknown key" for k in sorted(set(cache) - CACHE_SECRET_KEYS)]
    webhook = data.get("github_webhook_secret")
    if webhook is not None and not isinstance(webhook, str):
        errors.append(f"{path}: github_webhook_secret: must be a string")
    s = loaded.settings
    for w in loaded.workers:
        if w.kind == "remote" and not workers.get(w.name):
            errors.append(f"{path}: workers.{w.name}: missing password for remote worker {w.name!r}")
    if s.www.github_webhook and not webhook:
        errors.append(f"{path}: github_webhook_secret: missing, and [www].github_webhook is on")
    if not users:
        errors.append(f"{path}: users: no users; add [users] name = \"password\" to allow forcing builds")
    if errors:
        raise ConfigError("\n".join(errors))
    values = {f"worker-{k}": v for k, v in workers.items()}
    values.update({f"cache-{k}": v for k, v in cache.items()})
    if webhook:
        values["github-webhook-secret"] = webhook
    return Secrets(users=users, worker_passwords=workers, values=values)
