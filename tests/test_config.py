"""Settings and secrets: every bad case names the file and the key; the master refuses to start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from redox_ci.config import BootSettings, CacheSettings
from redox_ci.secrets_file import load_secrets
from redox_ci.settings_file import load, load_table
from redox_ci.errors import ConfigError
from redox_ci.local import LocalSetup, prepare, settings_text

pytestmark = pytest.mark.unit

GOOD = """
[flake]
repo = "/srv/redox-flake"

[[workers.worker]]
name = "w1"
kind = "local"
"""

SECRETS = '[users]\nadmin = "pw"\n'


def write(tmp_path: Path, settings: str, secrets: str = SECRETS) -> Path:
    (tmp_path / "secrets.toml").write_text(secrets)
    p = tmp_path / "settings.toml"
    p.write_text(settings)
    return p


def error_of(tmp_path: Path, settings: str, secrets: str = SECRETS) -> str:
    with pytest.raises(ConfigError) as e:
        loaded = load(write(tmp_path, settings, secrets))
        load_secrets(loaded)
    return str(e.value)


def test_good_settings_load_with_defaults(tmp_path):
    loaded = load(write(tmp_path, GOOD))
    s = loaded.settings
    assert s.flake.systems == ["x86_64-linux", "aarch64-linux"]
    assert list(s.plan.stages) == ["host-tools", "cross-system", "cross-userspace", "infrastructure"]
    assert s.plan.checks == ["cookbook", "redoxfs", "installer"]
    assert loaded.workers[0].name == "w1"
    assert load_secrets(loaded).users == {"admin": "pw"}


@pytest.mark.parametrize("settings, expected", [
    (GOOD + "\n[www]\nprot = 1\n", "www.prot: unknown key"),
    (GOOD + "\n[www]\nport = \"8010\"\n", "www.port: Input should be a valid integer"),
    (GOOD + "\n[www]\nport = 70000\n", "www.port"),
    (GOOD.replace('repo = "/srv/redox-flake"', ""), "flake.repo: Field required"),
    (GOOD + "\n[plan]\nchecks = [\"cook book\"]\n", "plan.checks: not Nix attribute names"),
    (GOOD + "\n[plan.stages]\nother = [\"x\"]\n", "plan.stages"),
    (GOOD.replace("[flake]", "[flake]\nsystems = [\"x86\"]"), "flake.systems"),
    (GOOD + "\n[cache]\nenabled = true\n", "cache: cache is enabled but [cache].bucket is empty"),
    (GOOD.replace('kind = "local"', 'kind = "local"\ncapabilities = ["gpu"]'), "unknown capabilities"),
    (GOOD + "\n[[workers.worker]]\nname = \"w1\"\n", "duplicate worker names"),
    ("[flake\nrepo=", "not valid TOML"),
])
def test_bad_settings_name_file_and_key(tmp_path, settings, expected):
    msg = error_of(tmp_path, settings)
    assert expected in msg
    assert str(tmp_path / "settings.toml") in msg


def test_missing_settings_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="REDOX_CI_SETTINGS"):
        load(tmp_path / "nope.toml")


@pytest.mark.parametrize("settings, secrets, expected", [
    (GOOD.replace('kind = "local"', 'kind = "remote"'), SECRETS, "workers.w1: missing password"),
    (GOOD + "\n[www]\ngithub_webhook = true\n", SECRETS, "github_webhook_secret: missing"),
    (GOOD, "", "users: no users"),
    (GOOD, "pasword = \"x\"\n" + SECRETS, "pasword: unknown key"),
    (GOOD, SECRETS + "[cache]\naws_secret = \"x\"\n", "cache.aws_secret: unknown key"),
])
def test_missing_or_wrong_secrets(tmp_path, settings, secrets, expected):
    assert expected in error_of(tmp_path, settings, secrets)


def test_secret_values_never_in_error_messages(tmp_path):
    msg = error_of(tmp_path, GOOD + "\n[www]\ngithub_webhook = true\n", '[users]\nadmin = "s3cr3t-Value"\n')
    assert "s3cr3t-Value" not in msg


def test_inventory_file(tmp_path):
    (tmp_path / "inv.toml").write_text(
        '[[worker]]\nname = "arm1"\nsystems = ["aarch64-linux"]\ncapabilities = ["kvm"]\nmax_builds = 3\n')
    loaded = load(write(tmp_path, '[flake]\nrepo = "/r"\n[workers]\ninventory = "inv.toml"\n'))
    assert loaded.workers[0].systems == ["aarch64-linux"] and loaded.workers[0].max_builds == 3
    (tmp_path / "inv.toml").write_text('[[worker]]\nname = "arm1"\nmax_builds = 0\n')
    with pytest.raises(ConfigError, match=r"inv.toml: worker\[0\].max_builds"):
        load(tmp_path / "settings.toml")


def test_shipped_inventory_and_examples_are_valid(tmp_path):
    root = Path(__file__).resolve().parent.parent
    settings = (root / "settings.example.toml").read_text().replace(
        'inventory = "workers/inventory.toml"', f'inventory = "{root / "workers" / "inventory.toml"}"')
    (tmp_path / "secrets.toml").write_text((root / "secrets.example").read_text())
    p = tmp_path / "settings.toml"
    p.write_text(settings.replace('file = "secrets.toml"', f'file = "{tmp_path / "secrets.toml"}"'))
    loaded = load(p)
    load_secrets(loaded)
    assert {w.name for w in loaded.workers} >= {"x86-kvm-1", "arm64-1"}


def test_master_refuses_bad_settings_without_traceback(tmp_path):
    setup = LocalSetup(state=tmp_path / "ci", repo=tmp_path / "repo", www_port=18011, pb_port=18012)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / ".git").mkdir()  # prepare() only needs it to exist
    prepare(setup, admin_password="pw")
    setup.settings_file.write_text(settings_text(setup).replace("[www]", "[www]\nprot = 1"))
    proc = subprocess.run(["buildbot", "checkconfig", str(setup.master_dir)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "www.prot: unknown key" in out and str(setup.settings_file) in out
    assert "Traceback" not in out


def test_relative_paths_are_resolved_once_beside_the_file(tmp_path):
    (tmp_path / "inv.toml").write_text('[[worker]]\nname = "w1"\nkind = "local"\n')
    loaded = load(write(tmp_path, '[flake]\nrepo = "/r"\n[workers]\ninventory = "inv.toml"\n'
                                  '[cache]\nsecret_key_file = "keys/ci.secret"\n[secrets]\nfile = "secrets.toml"\n'))
    s = loaded.settings
    assert s.workers.inventory == str(tmp_path / "inv.toml")
    assert s.cache.secret_key_file == str(tmp_path / "keys" / "ci.secret")
    assert s.secrets.file == str(tmp_path / "secrets.toml")


def test_a_worker_verb_reads_only_its_table(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text('[cache]\nbucket = "b"\nsecret_key_file = "ci.secret"\n[boot]\ncpus = 4\n[www]\nnewer_key = 1\n')
    cache = load_table(CacheSettings, p)
    assert cache.bucket == "b" and cache.secret_key_file == str(tmp_path / "ci.secret")
    assert load_table(BootSettings, p).cpus == 4
    assert load_table(BootSettings, None) == BootSettings()
    p.write_text("[boot]\ncpus = 0\n")
    with pytest.raises(ConfigError, match=f"{p}: boot.cpus: "):
        load_table(BootSettings, p)


def test_bad_branch_names_in_settings(tmp_path):
    assert "flake.branches: not a branch name: 'a..b'" in error_of(
        tmp_path, GOOD.replace("[flake]", '[flake]\nbranches = ["main", "a..b"]'))


def test_every_secrets_problem_at_once(tmp_path):
    msg = error_of(tmp_path, GOOD.replace('kind = "local"', 'kind = "remote"'),
                   'users = "admin"\n[workers]\nw2 = "x"\n[cache]\naws_secret = "x"\n')
    lines = msg.splitlines()
    assert any(line.endswith("users: Input should be a valid dictionary") for line in lines)
    assert any("cache.aws_secret: unknown key" in line for line in lines)
    assert any("workers.w1: missing password" in line for line in lines)
    assert not any("no users" in line for line in lines)  # users is wrong, not missing
    assert all(line.startswith(str(tmp_path / "secrets.toml") + ": ") for line in lines)


def test_secrets_are_typed_and_never_shown(tmp_path):
    secrets = load_secrets(load(write(tmp_path, GOOD, 'github_webhook_secret = "hook-s3cr3t"\n' + SECRETS
                                      + '[cache]\naws_access_key_id = "AKIA-s3cr3t"\n')))
    assert secrets.users == {"admin": "pw"} and secrets.get("github-webhook-secret") == "hook-s3cr3t"
    assert secrets.cache_credentials() == {"aws_access_key_id": "AKIA-s3cr3t"}
    assert secrets.values == {"cache-aws_access_key_id": "AKIA-s3cr3t", "github-webhook-secret": "hook-s3cr3t"}
    assert "s3cr3t" not in repr(secrets) and "pw" not in repr(secrets)
    msg = error_of(tmp_path, GOOD, '[users]\nadmin = 12345678\n')
    assert "users.admin: Input should be a valid string" in msg and "12345678" not in msg
