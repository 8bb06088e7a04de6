"""Each verb's argv, as the master's renderers build it (``command_line`` beside the verb's
parser), parses back with that verb's own parser to the values it was built from, odd
values included: leading dashes, spaces, "=", commas, non-ASCII."""

from __future__ import annotations

from pathlib import Path

import pytest

from redox_ci.boot.cli import command_line as boot_command_line
from redox_ci.cache.cli import push_command_line
from redox_ci.cli import build_parser
from redox_ci.plan_cli import build_command_line, plan_command_line

pytestmark = pytest.mark.unit

ODD = ["-starts-with-dash", "has space", "a=b", "--looks-like-a-flag", "é/ü", "x" * 300]


def parsed(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("odd", ODD)
def test_plan_round_trip(odd):
    args = parsed(plan_command_line(odd, settings=odd, systems=["x86_64-linux", "aarch64-linux"],
                                    attrs=["cookbook", "redox-default"], no_cache=True))
    assert (args.verb, args.flake, args.settings, args.no_cache) == ("plan", odd, odd, True)
    assert args.systems == "x86_64-linux,aarch64-linux" and args.attrs == "cookbook redox-default"


def test_plan_defaults_round_trip():
    args = parsed(plan_command_line("github:o/r"))
    assert (args.flake, args.settings, args.systems, args.attrs, args.no_cache) == ("github:o/r", None, None, None, False)


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("flags", [(False, False, False), (True, True, True), (True, False, True)])
def test_build_round_trip(odd, flags):
    checks, forced, unavailable = flags
    args = parsed(build_command_line(odd, attr=odd, system=odd, checks=checks, checks_forced=forced,
                                     checks_unavailable=unavailable, output="checks", flake=odd))
    assert (args.verb, args.drv, args.attr, args.system, args.flake, args.output) == ("build", odd, odd, odd, odd, "checks")
    assert (args.checks, args.checks_forced, args.checks_unavailable) == flags


def test_build_defaults_round_trip():
    args = parsed(build_command_line("/nix/store/a.drv", attr="a", system="x86_64-linux"))
    assert (args.output, args.flake, args.checks) == ("packages", None, False)


@pytest.mark.parametrize("odd", ODD)
def test_cache_push_round_trip(odd):
    paths = [odd, "/nix/store/" + "a" * 32 + "-x", "--"]
    args = parsed(push_command_line(paths, settings=odd, bucket=odd, endpoint_url=odd, region=odd, prefix=odd,
                                    signing_key=odd, compression="xz", parallelism=3, stage_dir=odd))
    assert (args.verb, args.cache_verb, args.store_paths) == ("cache", "push", paths)
    assert (args.settings, args.bucket, args.endpoint_url, args.region, args.prefix, args.signing_key) == (odd,) * 6
    assert (args.compression, args.parallelism, args.stage_dir) == ("xz", 3, Path(odd))


def test_cache_push_defaults_round_trip():
    args = parsed(push_command_line(["/nix/store/p"]))
    assert (args.settings, args.bucket, args.compression, args.parallelism) == (None, None, None, None)
    assert (args.max_attempts, args.multipart_threshold_mb, args.public_read) == (None, None, None)


@pytest.mark.parametrize("public_read", [True, False])
def test_the_masters_cache_table_round_trips_as_flags(public_read, monkeypatch):
    """A push needs no settings file: the master's [cache] table travels as flags and the
    verb's own reading of them (settings_from_args) gives the same table back."""
    from redox_ci.cache.cli import push_command_line_for, settings_from_args
    from redox_ci.config import CacheSettings

    monkeypatch.delenv("REDOX_CI_SETTINGS", raising=False)  # no settings file under the flags
    table = CacheSettings(enabled=True, bucket="-b", endpoint_url="http://127.0.0.1:9/x=y", region="eu-west-3",
                          prefix="a b/", secret_key_file="/k/-key", upload_parallelism=3, compression="xz",
                          max_attempts=5, multipart_threshold_mb=7, public_read=public_read)
    args = parsed(push_command_line_for(table, ["/nix/store/p"]))
    assert args.signing_key == "/k/-key" and args.store_paths == ["/nix/store/p"]
    # enabled and public_key are the master's business: a push neither reads nor needs them.
    assert settings_from_args(args) == table.model_copy(update={"enabled": False, "secret_key_file": None})


@pytest.mark.parametrize("odd", ODD)
def test_boot_round_trip(odd):
    args = parsed(boot_command_line(image=odd, vmm="cloud-hypervisor", system="aarch64-linux", bootloader=odd,
                                    bootloader_fallback=odd, attr=odd, timeout=12.5, accel="tcg", firmware=odd, settings=odd,
                                    serial_log=odd, vmm_log=odd))
    assert (args.verb, args.image, args.vmm, args.system, args.accel, args.timeout) == (
        "boot", odd, "cloud-hypervisor", "aarch64-linux", "tcg", 12.5)
    assert (args.bootloader, args.attr, args.firmware, args.settings, args.serial_log, args.vmm_log) == (odd,) * 6
    assert args.bootloader_fallback == odd


def test_boot_defaults_round_trip():
    args = parsed(boot_command_line(image="/nix/store/i"))
    assert (args.vmm, args.system, args.bootloader, args.timeout, args.replay, args.probe) == (
        "qemu", None, None, None, None, False)
