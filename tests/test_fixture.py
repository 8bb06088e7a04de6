"""Fixture repositories: busybox and the built boot stub go in, and every package builds in the sandbox."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from boot_support import require_clang
from redox_ci import fixture, nix
from redox_ci.fixture import REDOX_FIXTURE, REPRO_FIXTURE, FixtureError, bootstub, git, make_fixture_repo
from tests.support import requires

pytestmark = pytest.mark.e2e

# What the repro fixture must fail on, on purpose (tests/repro_support.py has the verdicts).
REPRO_FAILING = {"broken", "unevaluable"}


def tracked(repo: Path) -> dict[str, str]:
    """path -> git file mode of every committed file."""
    lines = git(repo, "ls-files", "-s").splitlines()
    return {line.split("\t")[1]: line.split()[0] for line in lines}


def test_redox_fixture_repo_carries_busybox_and_the_built_stub(tmp_path):
    require_clang()
    repo = tmp_path / "redox"
    make_fixture_repo(repo)
    files = tracked(repo)
    assert files["tools/busybox"] == "100755"
    assert (repo / "tools" / "busybox").read_bytes() == fixture.BUSYBOX.read_bytes()
    # Debian's static busybox for arm64, for the aarch64-linux outputs.
    arm = (repo / "tools-aarch64" / "busybox").read_bytes()
    assert files["tools-aarch64/busybox"] == "100755" and arm[:4] == b"\x7fELF"
    assert int.from_bytes(arm[0x12:0x14], "little") == fixture.EM_AARCH64 and not fixture._has_interpreter(arm)
    efi = (repo / "bootstub" / "BOOTX64.EFI").read_bytes()
    assert "bootstub/BOOTX64.EFI" in files and efi[:2] == b"MZ"
    functional = (repo / "bootstub" / "BOOTX64-functional-test.EFI").read_bytes()
    assert "bootstub/BOOTX64-functional-test.EFI" in files and functional == bootstub(scenario="functional-test")
    assert b"FUNC_TESTS_COMPLETE" in functional and b"FUNC_TEST" not in efi
    # Built into the generated repository only, never beside the source.
    assert not list((REDOX_FIXTURE / "bootstub").glob("*.EFI"))


def test_repro_fixture_repo_carries_busybox_and_no_stub(tmp_path):
    repo = tmp_path / "repro"
    make_fixture_repo(repo, source=REPRO_FIXTURE)
    files = tracked(repo)
    assert files["tools/busybox"] == "100755"
    assert not any(f.startswith(("bootstub/", "tools-aarch64/")) for f in files)


def test_the_stub_is_built_once_per_process(tmp_path):
    require_clang()
    first = bootstub()
    bootstub(scenario="functional-test")
    misses = fixture._build_bootstub.cache_info().misses
    make_fixture_repo(tmp_path / "a")
    make_fixture_repo(tmp_path / "b")
    assert fixture._build_bootstub.cache_info().misses == misses
    assert (tmp_path / "b" / "bootstub" / "BOOTX64.EFI").read_bytes() == first


def test_missing_busybox_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fixture, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(FixtureError, match=r"no-busybox is missing.*apt-get install busybox-static"):
        make_fixture_repo(tmp_path / "repo", source=REPRO_FIXTURE)


def test_dynamically_linked_busybox_is_refused(tmp_path, monkeypatch):
    dynamic = Path(shutil.which("git"))  # any dynamically linked program stands for Debian's `busybox`
    monkeypatch.setattr(fixture, "BUSYBOX", dynamic)
    with pytest.raises(FixtureError, match=r"dynamically linked.*busybox-static"):
        make_fixture_repo(tmp_path / "repo", source=REPRO_FIXTURE)


def build_all(repo: Path, skip: set[str] = frozenset(), rebuild: bool = False,
              output: str = "packages.x86_64-linux") -> dict[str, str]:
    """Build every attribute of ``output`` of the flake at ``repo`` with the sandbox asked
    for; attr -> out path.

    ``rebuild``: build each one again even if an earlier test built it (it must be
    deterministic then).
    """
    ref = f"{repo}#{output}"
    names = subprocess.run(["nix", "eval", "--json", ref, "--apply", "builtins.attrNames"],
                           capture_output=True, text=True, check=True)
    attrs = [a for a in json.loads(names.stdout) if a not in skip]
    argv = ["nix", "build", "--no-link", "--json", "--option", "sandbox", "true", *(f"{ref}.{a}" for a in attrs)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if rebuild:
        again = subprocess.run([*argv, "--rebuild"], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
    # One entry per derivation, not per attribute: aliases share one.
    by_drv = {b["drvPath"]: b["outputs"]["out"] for b in json.loads(proc.stdout)}
    drvs = subprocess.run(["nix", "eval", "--json", ref, "--apply",
                           f"p: map (a: p.${{a}}.drvPath) (builtins.fromJSON ''{json.dumps(attrs)}'')"],
                          capture_output=True, text=True, check=True)
    return {a: by_drv[d] for a, d in zip(attrs, json.loads(drvs.stdout))}


def test_every_redox_fixture_package_builds_in_the_sandbox(tmp_path):
    requires("nix")
    require_clang()
    repo = tmp_path / "redox"
    make_fixture_repo(repo)
    out = build_all(repo, rebuild=True)
    assert len(out) == 45
    efi = Path(out["bootloader"], "boot", "EFI", "BOOT", "BOOTX64.EFI")
    assert efi.read_bytes() == bootstub()
    assert Path(out["diskImage"], "redox.img").stat().st_size == 1 << 20
    # Test images as make-disk-image lays them out: the disk and the bootloader beside it.
    assert Path(out["redox-minimal"], "boot", "BOOTX64.EFI").read_bytes() == bootstub()
    assert Path(out["redox-functional-test"], "boot", "BOOTX64.EFI").read_bytes() == \
        bootstub(scenario="functional-test")
    assert Path(out["redox-functional-test"], "redox.img").stat().st_size == 1 << 20
    # Runner scripts as writeShellScriptBin makes them; they copy in their image.
    script = Path(out["runQemu"], "bin", "run-redox-default-qemu")
    assert script.read_text().startswith("#!/bin/sh\n") and f"{out['redox-default']}/redox.img" in script.read_text()
    assert script.stat().st_mode & 0o111
    assert Path(out["cookbook"], "name").read_text() == "cookbook\n"
    # Aliases are one derivation.
    assert out["diskImage"] == out["redox-default"] and out["default"] == out["redox-graphical"]
    checks = build_all(repo, output="checks.x86_64-linux")
    assert checks["cookbook-build"] == out["cookbook"] and checks["boot-test"] == out["bootTest"]


def test_aarch64_host_tools_build_under_emulation_in_the_sandbox(tmp_path):
    """An aarch64 busybox builds the aarch64-linux outputs (qemu-user and binfmt_misc, the
    host's Nix listing aarch64-linux in extra-platforms); some attributes throw there."""
    requires("nix")
    require_clang()
    if "aarch64-linux" not in nix.extra_platforms():
        pytest.skip("this host's Nix does not build aarch64-linux (extra-platforms)")
    repo = tmp_path / "redox"
    make_fixture_repo(repo)
    ref = f"{repo}#packages.aarch64-linux"
    proc = subprocess.run(["nix", "build", "--no-link", "--json", "-L", f"{ref}.cookbook", f"{ref}.installer",
                           f"{ref}.redox-minimal"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    built = {b["drvPath"].split("-", 1)[1]: b["drvPath"] for b in json.loads(proc.stdout)}
    # An earlier run may have built them (the fixture's derivations are the same in every
    # repository): the log Nix kept says what the build printed.
    assert "test result: ok. 9 passed" in nix.read_log(built["cookbook.drv"])
    assert "test result: ok. 0 passed" in nix.read_log(built["installer.drv"])
    drv = built["cookbook.drv"]
    shown = subprocess.run(["nix", "derivation", "show", drv], capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)[drv]["system"] == "aarch64-linux"
    thrown = subprocess.run(["nix", "eval", "--raw", f"{ref}.redox-libstdcxx-shim.drvPath"],
                            capture_output=True, text=True)
    assert thrown.returncode != 0 and "x86_64-only" in thrown.stderr


def test_repro_fixture_builds_in_the_sandbox(tmp_path):
    requires("nix")
    repo = tmp_path / "repro"
    make_fixture_repo(repo, source=REPRO_FIXTURE)
    (repo / "salt").write_text(f"{uuid.uuid4().hex}\n")  # nothing built yet
    fixture.commit_all(repo, "fresh salt")
    out = build_all(repo, skip=REPRO_FAILING)
    assert set(out) == {"stable", "noisy", "split"}
    assert Path(out["stable"], "share", "doc", "README").read_text() == "built on 1970-01-01\n"
    assert Path(out["noisy"], "share", "build-info.txt").read_text().startswith("built at ")
