"""The engine against recorded consoles, played by the stand-in VMM as a real process.

Each test also checks that the VMM and its process group are gone afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from boot_support import alive, assert_vm_gone, children, group_members, transcript, wait_until
from redox_ci.boot import engine
from redox_ci.boot.run import replay
from redox_ci.boot.replay import write_transcript
from redox_ci.config import BootSettings
from tests.support import CLI

pytestmark = pytest.mark.unit

# Long enough that a verdict reached by timing out instead of by reading the marker
# would show up as failure == "timeout" (and as a very slow test), not as a pass.
PATIENT = BootSettings(timeout=600, tcg_timeout=600)


def run(name, tmp_path, settings=PATIENT, timeout=None):
    return replay(transcript(name), settings, timeout,
                  serial_log=tmp_path / "serial.log", vmm_log=tmp_path / "vmm.log")


def data_of(name):
    steps = [json.loads(line) for line in transcript(name).read_text().splitlines()]
    return "".join(s.get("data", "") for s in steps).encode()


def test_clean_boot_with_harmless_warnings(tmp_path):
    r = run("clean", tmp_path)
    assert (r.verdict, r.failure) == ("pass", None)
    assert [m["name"] for m in r.milestones] == ["firmware", "kernel", "boot-complete", "shell"]
    assert r.shell_reached
    assert r.harmless == ["WARN - Failed to locate Outputs",
                          "invalid virtio register dword read: 0xc",
                          "smolnetd: no network adapter found"]
    assert r.reason.startswith("Boot Complete after") and "shell after" in r.reason
    times = [m["at"] for m in r.milestones]
    assert times == sorted(times)
    assert (tmp_path / "serial.log").read_bytes() == data_of("clean")  # raw, escapes kept
    assert r.vmm_exit is None  # it never exits by itself: the engine stopped it
    assert_vm_gone(r.vmm_pid)


def test_panic_after_initfs_fails_at_once(tmp_path):
    r = run("panic", tmp_path)
    assert (r.verdict, r.failure) == ("fail", "panic")
    assert [m["name"] for m in r.milestones] == ["firmware", "kernel"]
    assert "KERNEL PANIC: page fault at 0x0000000000000000" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_a_panic_line_written_in_pieces_is_quoted_whole(tmp_path):
    t = write_transcript(tmp_path / "pieces.jsonl", [
        {"data": "Redox OS starting\r\nKERNEL PANIC: page"}, {"delay": 0.05, "data": " fault at 0x0\r\n"}])
    r = replay(t, PATIENT, serial_log=tmp_path / "s.log", vmm_log=tmp_path / "v.log")
    assert r.failure == "panic" and r.reason.endswith("KERNEL PANIC: page fault at 0x0")
    assert_vm_gone(r.vmm_pid)


def test_hang_times_out_naming_the_last_milestone(tmp_path):
    settings = BootSettings(timeouts={"boot-complete": 1.0})
    r = run("hang", tmp_path, settings)
    assert (r.verdict, r.failure) == ("fail", "timeout")
    assert "no boot-complete" in r.reason and "last milestone: kernel" in r.reason
    assert "1 s after kernel" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_overall_timeout_caps_the_milestones(tmp_path):
    r = run("hang", tmp_path, timeout=1.5)
    assert r.failure == "timeout"
    assert "overall timeout of 1.5 s" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_no_output_at_all_times_out_at_firmware(tmp_path):
    r = run("silent", tmp_path, BootSettings(timeouts={"firmware": 0.5}))
    assert r.failure == "timeout" and r.milestones == []
    assert "no firmware" in r.reason and "no milestone reached" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_marker_split_across_writes(tmp_path):
    r = run("split", tmp_path)
    assert r.verdict == "pass"
    assert [m["name"] for m in r.milestones][:3] == ["firmware", "kernel", "boot-complete"]
    assert_vm_gone(r.vmm_pid)


def test_escapes_and_line_ends(tmp_path):
    r = run("ansi", tmp_path)
    assert r.verdict == "pass" and r.shell_reached
    assert r.harmless == ["WARN - Failed to locate Outputs"]
    assert_vm_gone(r.vmm_pid)


def test_vmm_exiting_early_fails_at_once_with_status_and_output(tmp_path):
    r = run("early-exit", tmp_path)
    assert (r.verdict, r.failure, r.vmm_exit) == ("fail", "vmm-exit", 3)
    assert "exit status 3" in r.reason
    assert "Could not open 'redox.img': Permission denied" in r.reason
    assert "Permission denied" in (tmp_path / "vmm.log").read_text()
    assert_vm_gone(r.vmm_pid)


def test_vmm_fatal_message_fails_without_waiting(tmp_path):
    t = write_transcript(tmp_path / "kvm.jsonl", [
        {"delay": 0.05, "stderr": "KVM internal error. Suberror: 1\nemulation failure\n"}])
    r = replay(t, PATIENT, serial_log=tmp_path / "s.log", vmm_log=tmp_path / "v.log")
    assert r.failure == "vmm-error" and "KVM internal error" in r.reason
    assert_vm_gone(r.vmm_pid)


def test_boot_complete_then_exit_is_partial(tmp_path):
    t = write_transcript(tmp_path / "poweroff.jsonl", [
        {"data": "Redox OS starting\r\n"}, {"data": "Redox OS Boot Complete!\r\n"}, {"exit": 0}])
    r = replay(t, PATIENT, serial_log=tmp_path / "s.log", vmm_log=tmp_path / "v.log")
    assert (r.verdict, r.failure, r.shell_reached) == ("fail", "no-shell", False)
    assert r.reason.startswith("partial: no shell: the VMM exited (exit status 0)")
    assert_vm_gone(r.vmm_pid)


def test_an_exception_while_following_still_stops_the_vm(tmp_path, monkeypatch):
    started = []
    real_spawn = engine.spawn

    def spawn(*args, **kwargs):
        started.append(real_spawn(*args, **kwargs))
        return started[-1]

    def broken_feed(self, data, at):
        raise RuntimeError("follower broke")

    monkeypatch.setattr(engine, "spawn", spawn)
    monkeypatch.setattr(engine.SerialFollower, "feed", broken_feed)
    with pytest.raises(RuntimeError, match="follower broke"):
        run("clean", tmp_path)
    assert_vm_gone(started[0].pid)


def _boot_cli(tmp_path, name, *extra):
    return subprocess.Popen(
        [*CLI, "boot", "--replay", str(transcript(name)),
         "--serial-log", str(tmp_path / "serial.log"), "--vmm-log", str(tmp_path / "vmm.log"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_redox_ci_stops_the_vm(tmp_path, sig):
    cli = _boot_cli(tmp_path, "hang")
    vmm = wait_until(lambda: children(cli.pid), "the VMM to start")[0]
    wait_until(lambda: (tmp_path / "serial.log").exists() and (tmp_path / "serial.log").stat().st_size,
               "serial output")
    cli.send_signal(sig)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 128 + sig, err
    assert f"interrupted by {signal.Signals(sig).name}; the VM was stopped" in err
    assert_vm_gone(vmm)


def test_sigkill_to_redox_ci_still_kills_the_vm(tmp_path):
    cli = _boot_cli(tmp_path, "hang")
    vmm = wait_until(lambda: children(cli.pid), "the VMM to start")[0]
    wait_until(lambda: (tmp_path / "serial.log").exists() and (tmp_path / "serial.log").stat().st_size,
               "serial output")
    cli.kill()
    cli.communicate(timeout=60)
    wait_until(lambda: not alive(vmm), "the kernel to kill the orphaned VMM")
    assert group_members(vmm) == []


def test_cli_json_and_exit_codes(tmp_path):
    ok = subprocess.run([*CLI, "boot", "--replay", str(transcript("clean")),
                         "--json", "--serial-log", str(tmp_path / "s.log"), "--vmm-log", str(tmp_path / "v.log")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert {"verdict", "reason", "milestones", "elapsed", "vmm", "accel", "harmless",
            "serial_log", "vmm_log"} <= set(data)
    assert data["verdict"] == "pass" and data["accel"] is None
    assert data["milestones"][2]["name"] == "boot-complete"
    failed = subprocess.run([*CLI, "boot", "--replay", str(transcript("panic")),
                             "--serial-log", str(tmp_path / "s.log"), "--vmm-log", str(tmp_path / "v.log")],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stdout.startswith("boot FAIL: kernel panic")


@pytest.mark.parametrize("lines, message", [
    (['{"delay": -1, "data": "x"}'], "delay must be a number"),
    (['{"dalay": 1}'], "unknown key"),
    (["not json"], "not JSON"),
    ([], "is empty"),
])
def test_bad_transcript_is_a_usage_error(tmp_path, lines, message):
    t = tmp_path / "bad.jsonl"
    t.write_text("\n".join(lines))
    p = subprocess.run([*CLI, "boot", "--replay", str(t)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr


def test_cli_usage_errors(tmp_path):
    def cli(*args):
        return subprocess.run([*CLI, "boot", *args],
                              capture_output=True, text=True)
    missing = cli("--image", str(tmp_path / "nope.img"), "--bootloader", str(tmp_path))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    both = cli("--replay", str(transcript("clean")), "--probe")
    assert both.returncode == 2
    bad_settings = tmp_path / "settings.toml"
    bad_settings.write_text("[boot]\ntimeouts = { kernal = 5 }\n")
    conf = cli("--replay", str(transcript("clean")), "--settings", str(bad_settings))
    assert conf.returncode == 2 and "boot.timeouts" in conf.stderr and "kernal" in conf.stderr
    neg = cli("--replay", str(transcript("clean")), "--timeout", "0")
    assert neg.returncode == 2 and "--timeout" in neg.stderr
    for p in (missing, both, conf, neg):
        assert "Traceback" not in p.stderr
