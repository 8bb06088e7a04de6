"""The shape of settings.toml: one strict, frozen pydantic model per table.

The master and the ``redox-ci`` command read the same file. These models say what
each key may hold and nothing else: reading the file, resolving its relative paths
and reporting every problem at once as ``file: key: message`` is ``settings_file.py``;
the names inside (attributes, systems, branches) follow the rules of ``names.py``;
the secrets file has its own model in ``secrets_file.py``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from . import names

KNOWN_CAPABILITIES = frozenset({"kvm", "big-parallel"})
FIRMWARE_KEY = names.Rule(f"(qemu|cloud-hypervisor)/{names.SYSTEM.pattern}",
                          "firmware keys are '<vmm>/<system>' like 'qemu/x86_64-linux', got {}")

# The real flake's names (../shared/redox-flake.md), each one it has: a name the flake lacks
# is a SKIPPED job. The images use the per-crate kernel and base; redox-default is also
# diskImage (an alias: one job).
DEFAULT_STAGES: dict[str, list[str]] = {
    "host-tools": ["cookbook", "redoxfs", "installer", "fstools"],
    "cross-system": ["relibc", "kernel", "kernelPerCrate", "bootloader", "base", "basePerCrate", "sysroot"],
    "cross-userspace": [
        "ion", "helix", "binutils", "netutils", "uutils", "redoxfsTarget", "extrautils", "sodium",
    ],
    "infrastructure": ["initfsTools", "bootstrap", "initfs", "redox-default", "redox-minimal"],
}
# Runner scripts are recognised by their derivation (writeShellScriptBin's); these names
# are runners whatever their derivation.
DEFAULT_RUNNERS = [
    "runQemu", "runQemuGraphical", "bootTest", "runCloudHypervisor", "runCloudHypervisorNet",
]
# The flake's VM test scripts (packages and checks) and the disk image each boots.
DEFAULT_VM_TESTS: dict[str, str] = {
    "bootTest": "redox-minimal", "boot-test": "redox-minimal",
    "functionalTest": "redox-functional-test", "functional-test": "redox-functional-test",
    "networkTest": "redox-network-test", "networkInstallTest": "redox-network-install-test",
    "bridgeTest": "redox-bridge-test", "bridge-test": "redox-bridge-test",
    "bridgeRebuildTest": "redox-bridge-rebuild-test", "httpsCacheTest": "redox-https-cache-test",
    "multi-user-test": "redox-multi-user-test", "self-hosting-test": "redox-self-hosting-test",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FlakeSettings(_Section):
    # The git repository that is polled and built. Builds always use this URL, never a
    # repository named by a webhook payload.
    repo: str
    branches: list[str] = ["main"]
    # Tags whose pushes the GitHub hook builds, as patterns ("v*"); none unless set. The
    # poller follows branches only.
    tags: list[str] = []
    # Seconds between polls of the repository; GitHub's webhook makes this a fallback.
    poll_interval: int = Field(default=300, ge=5)
    systems: list[str] = ["x86_64-linux", "aarch64-linux"]

    @field_validator("systems")
    @classmethod
    def _systems(cls, v: list[str]) -> list[str]:
        return names.check_systems(v)

    @field_validator("branches")
    @classmethod
    def _branches(cls, v: list[str]) -> list[str]:
        return [names.BRANCH.check(b) for b in v]

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return [names.TAG_PATTERN.check(t) for t in v]


class PlanSettings(_Section):
    # Ordered: the pipeline builds stage after stage in this order.
    stages: dict[str, list[str]] = DEFAULT_STAGES
    # Scripts that run a VM; they are not build artefacts and are not built.
    runners: list[str] = DEFAULT_RUNNERS
    # Packages whose tests must run: redox-ci turns doCheck on where the flake has it off.
    checks: list[str] = ["cookbook", "redoxfs", "installer"]
    # The flake outputs planned. legacyPackages, apps and devShells are never built.
    outputs: list[Literal["packages", "checks"]] = ["packages", "checks"]
    # Runners by name pattern too ("run-redox-*"), for scripts not made by writeShellScriptBin.
    runner_patterns: list[str] = []
    # VM test scripts -> the disk image each boots (shown with the ignored script).
    vm_tests: dict[str, str] = DEFAULT_VM_TESTS
    # One system's evaluation: seconds, and MiB of address space for `nix eval` (0: no
    # limit). The real flake imports nixpkgs several times per system.
    eval_timeout: int = Field(default=1800, ge=1)
    eval_memory_mb: int = Field(default=16384, ge=0)
    # Attributes that throw get their message from one `nix eval` each, this many per
    # system at most (each pays a whole evaluation on the real flake).
    error_messages: int = Field(default=20, ge=0)

    @field_validator("runners", "checks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return names.check_attrs(v)

    @field_validator("runner_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        return [names.ATTR_PATTERN.check(p) for p in v]

    @field_validator("vm_tests")
    @classmethod
    def _vm_tests(cls, v: dict[str, str]) -> dict[str, str]:
        names.check_attrs([*v, *v.values()])
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for stage, attrs in v.items():
            if not names.STAGE.fits(stage) or stage == "other":
                raise ValueError(names.STAGE.refusal.format(repr(stage)))
            names.check_attrs(attrs)
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
    # How many of a branch's newest commits the trends charts of the Commits page show: a
    # month of daily pushes reads at a glance, and each commit costs the page a data-API read
    # per job.
    trend_commits: int = Field(default=20, ge=2, le=200)


class DatabaseSettings(_Section):
    url: str = "sqlite:///state.sqlite"


class JobsSettings(_Section):
    # A job build whose worker is lost (Buildbot's RETRY) runs again at most this many
    # times, then fails with "worker lost N times": a job that kills its worker would
    # otherwise loop for ever (Buildbot issue 5354).
    retries: int = Field(default=2, ge=0, le=10)
    # A derivation whose build failed is not built again by a later commit for this many
    # days (0: always built); a force or Rebuild of its job builds it at once.
    known_failure_days: int = Field(default=7, ge=0, le=365)


class WorkerSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # "local" runs inside the master process (development); "remote" connects over PB.
    kind: Literal["local", "remote"] = "remote"
    systems: list[str] = ["x86_64-linux"]
    # Systems it builds by emulation (qemu-user and binfmt_misc; its Nix lists them in
    # extra-platforms): slower, so a job goes to a native worker when one is free.
    emulated_systems: list[str] = []
    capabilities: list[str] = []
    max_builds: int = Field(default=1, ge=1)

    @field_validator("emulated_systems")
    @classmethod
    def _emulated(cls, v: list[str]) -> list[str]:
        return names.check_systems(v) if v else v

    @model_validator(mode="after")
    def _native_or_emulated(self) -> WorkerSpec:
        both = sorted(set(self.systems) & set(self.emulated_systems))
        if both:
            raise ValueError(f"{both} both native (systems) and emulated (emulated_systems)")
        return self

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
    # Before a build the worker needs this much free space on disk_path's file system (the
    # store's), else the job is "not built: disk: ..." (0: no check). See redox_ci/disk.py.
    min_free_gib: float = Field(default=20.0, ge=0)
    disk_path: str = "/nix/store"
    # Where a worker keeps the default branch's outputs from garbage collection, one
    # directory of roots per job ("~": the worker user's home).
    gc_roots: str = "~/.local/state/redox-ci/gcroots"


class CacheSettings(_Section):
    enabled: bool = False
    bucket: str = ""
    region: str = "us-east-1"
    # For R2, MinIO or a local moto server; None means AWS itself.
    endpoint_url: str | None = None
    prefix: str = ""
    # "name:base64" as `nix key convert-secret-to-public` prints it.
    public_key: str = ""
    # The file `nix key generate-secret` wrote, on every worker; relative to the settings
    # file. Without it the key comes from the master: the secrets file's cache_signing_key.
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
        return self


# QEMU's names of the network cards the flake's runners use, and "none".
NicModel = Literal["e1000", "virtio-net-pci", "rtl8139", "none"]


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
    # The VM's size; unset: [boot].memory_mb and cpus (the flake's 1024 MB and 2 CPUs).
    memory_mb: int | None = Field(default=None, ge=128)
    cpus: int | None = Field(default=None, ge=1)
    # A network card on QEMU's user-mode network (SLiRP: no root, no tap), as the flake's
    # network test has it ("-netdev user,id=net0 -device e1000,netdev=net0"); "none": no
    # card at all; unset: QEMU's own default, as the flake's other runners leave it.
    nic: NicModel | None = None
    # The VMMs that boot it (each a job). Cloud Hypervisor networks only through a tap
    # device, which needs root: an image with a nic boots on QEMU only.
    vmms: list[Literal["qemu", "cloud-hypervisor"]] = Field(default=["qemu", "cloud-hypervisor"], min_length=1)

    @model_validator(mode="after")
    def _nic_needs_qemu(self) -> BootImage:
        if self.nic not in (None, "none") and "cloud-hypervisor" in self.vmms:
            raise ValueError(f"nic = {self.nic!r} is QEMU's user-mode network; Cloud Hypervisor cannot boot "
                             "it without a tap device: set vmms = [\"qemu\"]")
        return self


# The flake's own (nix/flake-modules/system.nix, nix/pkgs/infrastructure/*-test.nix):
# bootTest boots redox-minimal; functionalTest gets mkFunctionalTest's default timeout,
# 300 s; networkTest 120 s, 2048 MB, 4 CPUs and an e1000 card, on QEMU only.
DEFAULT_BOOT_IMAGES: dict[str, BootImage] = {
    "redox-minimal": BootImage(),
    "redox-functional-test": BootImage(tests="FUNC_TEST", timeout=300),
    "redox-network-test": BootImage(tests="NET_TEST", timeout=120, memory_mb=2048, cpus=4, nic="e1000",
                                    vmms=["qemu"]),
}
# The VM test images booted after the stages, beside [boot].image_attr: those that need
# nothing on the host beside the VM (the bridge, install and cache tests run a server).
DEFAULT_TEST_IMAGES = ["redox-functional-test", "redox-network-test"]


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
    # VM test images booted too, each by its rule and size in [boot.images]; an image the
    # plan lacks (a flake without it, a forced subset) is not booted.
    test_images: list[str] = DEFAULT_TEST_IMAGES
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

    @field_validator("test_images")
    @classmethod
    def _test_images(cls, v: list[str]) -> list[str]:
        return names.check_attrs(v)

    @field_validator("firmware")
    @classmethod
    def _firmware(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if not FIRMWARE_KEY.fits(k))
        if bad:
            raise ValueError(FIRMWARE_KEY.refusal.format(bad))
        return v

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        names.check_attrs(v)
        return {**DEFAULT_BOOT_IMAGES, **v}

    def image(self, attr: str) -> BootImage:
        """The rule for ``attr``: as set in [boot.images], else the flake's boot test."""
        return self.images.get(attr, BootImage())

    def booted_images(self) -> list[str]:
        """Every image booted after the stages: the boot test's, then the test images."""
        return list(dict.fromkeys([self.image_attr, *self.test_images]))

    def vm_size(self, attr: str) -> tuple[int, int]:
        """(MB of memory, CPUs) of the VM booting ``attr``."""
        image = self.image(attr)
        return image.memory_mb or self.memory_mb, image.cpus or self.cpus


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
        return names.check_attrs(v)

    @field_validator("branches")
    @classmethod
    def _repro_branches(cls, v: list[str]) -> list[str]:
        return [names.BRANCH.check(b) for b in v]

    @field_validator("system")
    @classmethod
    def _repro_system(cls, v: str) -> str:
        return names.SYSTEM.check(v)


# GitHub's "owner/name", as its full_name spells a repository.
GITHUB_REPOSITORY = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"


class GithubStatusSettings(_Section):
    """Commit statuses on GitHub; the token is the secrets file's github_status_token."""

    enabled: bool = False
    # The repository the statuses go to, "owner/name".
    repository: str = ""
    # GitHub's REST API; a GitHub Enterprise server's is "https://HOST/api/v3".
    api_url: str = "https://api.github.com"
    # Failed attributes of one commit that get a status each; GitHub's page lists a few
    # dozen contexts usefully. The plan, stage and boot statuses come on top, and further
    # failures are named in their stage's status.
    max_attribute_statuses: int = Field(default=20, ge=0, le=200)
    # Tries per status (the first included) on GitHub's 5xx answers, its rate limits and
    # unreachable networks; the waits double from 1 s (or are what GitHub asks for).
    max_attempts: int = Field(default=6, ge=1, le=20)

    @model_validator(mode="after")
    def _needs_repository(self) -> GithubStatusSettings:
        if self.enabled and not re.fullmatch(GITHUB_REPOSITORY, self.repository):
            raise ValueError(f"repository must be GitHub's 'owner/name' when enabled, got {self.repository!r}")
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError(f"api_url must be an http(s) URL, got {self.api_url!r}")
        return self


def _check_listen(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be 'ADDRESS:PORT' such as '127.0.0.1:9101', got {v!r}")
    _check_interface(host.strip("[]"))
    return v


class MetricsSettings(_Section):
    # Where Prometheus scrapes /metrics, "ADDRESS:PORT"; unset, no endpoint. The numbers
    # are not secret but not public either: loopback, or a network Prometheus alone reaches.
    listen: Annotated[str, AfterValidator(_check_listen)] | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(interface, port) of ``listen``."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class SecretsSettings(_Section):
    # TOML file with [users], [workers], github_webhook_secret, [cache] credentials.
    file: str = "secrets.toml"


class Settings(_Section):
    flake: FlakeSettings
    plan: PlanSettings = PlanSettings()
    www: WwwSettings = WwwSettings()
    database: DatabaseSettings = DatabaseSettings()
    jobs: JobsSettings = JobsSettings()
    workers: WorkersSettings = WorkersSettings()
    cache: CacheSettings = CacheSettings()
    boot: BootSettings = BootSettings()
    repro: ReproSettings = ReproSettings()
    secrets: SecretsSettings = SecretsSettings()
    github_status: GithubStatusSettings = GithubStatusSettings()
    metrics: MetricsSettings = MetricsSettings()


@dataclass(frozen=True)
class LoadedSettings:
    """Settings as ``settings_file.load`` returns them: relative paths already resolved
    beside the file, and the workers of the inventory (none on a worker host)."""

    settings: Settings
    path: Path
    workers: list[WorkerSpec] = field(default_factory=list)
