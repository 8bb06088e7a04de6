"""The flake's boot rule and its VM test images' protocol, judged as the flake judges them.

Pass is Boot Complete and then a shell (the prompt ``redox# `` has no newline after it);
Boot Complete without a shell is "partial"; a panic fails at once, after Boot Complete
too. A test image passes when its FUNC_TEST / NET_TEST lines complete with no FAIL.
Recorded consoles are played by the stand-in VMM as a real process, so every case
also checks that the VM is gone.
"""

from __future__ import annotations

import pytest

from boot_support import assert_vm_gone, transcript
from redox_ci.boot.markers import SerialFollower
from redox_ci.boot import protocol
from redox_ci.boot.protocol import parse_result
from redox_ci.boot.replay import write_transcript
from redox_ci.boot.run import follow_plan, replay
from redox_ci.config import BootImage, BootSettings, PlanSettings
from redox_ci.errors import ConfigError
from redox_ci.master.boot import boot_jobs, boot_report, longest_boot, results_listing
from redox_ci.plan import build_plan
from redox_ci.settings_file import load_table
from tests.support import run_json

pytestmark = pytest.mark.unit

# Patient overall timeouts: a verdict that came from timing out instead of from reading
# the console shows up as the wrong failure (and a slow test), never as a pass.
PATIENT = BootSettings(timeout=600, tcg_timeout=600)
FUNCTIONAL = "redox-functional-test"
NETWORK = "redox-network-test"
BANNER = '"  Redox OS Boot Complete!"\n'


def run(name_or_path, tmp_path, settings=PATIENT, attr=None, timeout=None):
    path = transcript(name_or_path) if isinstance(name_or_path, str) else name_or_path
    r = replay(path, settings, timeout, serial_log=tmp_path / "serial.log", vmm_log=tmp_path / "vmm.log",
               attr=attr)
    assert_vm_gone(r.vmm_pid)
    return r


def follower(*pieces: bytes, prefix=None) -> SerialFollower:
    f = SerialFollower(tests_prefix=prefix)
    for i, piece in enumerate(pieces):
        f.feed(piece, at=float(i))
    return f


def names(f: SerialFollower) -> list[str]:
    return [r.name for r in f.reached]


# --- the boot rule, on the console stream ---------------------------------------------

@pytest.mark.parametrize("banner", [b'"  Redox OS Boot Complete!"\n', b"Redox OS Boot Complete!\r\n",
                                    b"########## Redox OS Boot Complete! ##########\r\n"])
def test_the_banner_with_or_without_quotes(banner):
    f = follower(b"Redox OS Bootloader 1.0.0 on x86_64/UEFI\r\n",
                 b"kernel::arch::x86_shared::start:INFO -- Redox OS starting...\n", banner)
    assert names(f) == ["firmware", "kernel", "boot-complete"]


@pytest.mark.parametrize("prompt", [b"redox# ", b"Welcome to Redox OS!\n", b"ion> "])
def test_a_shell_counts_without_a_newline(prompt):
    f = follower(b"Redox OS starting...\n", BANNER.encode(), prompt)
    assert names(f) == ["firmware", "kernel", "boot-complete", "shell"]


def test_the_prompt_byte_by_byte():
    data = b"Redox OS starting...\n" + BANNER.encode() + b"\nredox# "
    f = follower(*(data[i:i + 1] for i in range(len(data))))
    assert names(f)[-1] == "shell" and f.reached[-1].at == len(data) - 1  # at its last byte


def test_a_shell_before_boot_complete_does_not_count():
    f = follower(b"Redox OS starting...\nWelcome to Redox OS!\nredox login: \n", BANNER.encode())
    assert names(f) == ["firmware", "kernel", "boot-complete"]


@pytest.mark.parametrize("text, line, kind", [
    ("KERNEL PANIC: page fault at 0x0\n", "KERNEL PANIC: page fault at 0x0", "kernel"),
    # Rust prints the message on the line after "panicked at <file>:<line>:<column>:".
    ("thread 'main' (1) panicked at src/bin/getty.rs:121:6:\ngetty: failed to create PTY\n",
     "thread 'main' (1) panicked at src/bin/getty.rs:121:6: getty: failed to create PTY", "userspace"),
    ("relibc: abort() called\n", "relibc: abort() called", "userspace"),
])
def test_panics_after_boot_complete(text, line, kind):
    f = follower(b"Redox OS starting...\n", BANNER.encode(), text.encode())
    assert names(f) == ["firmware", "kernel", "boot-complete"]
    assert (f.panic.line, f.panic.kind, f.panic.complete) == (line, kind, True)


# --- the boot rule, through the engine -------------------------------------------------

def test_the_real_prompt_passes_at_once(tmp_path):
    settings = BootSettings(timeout=600, tcg_timeout=600, images={"redox-minimal": BootImage(shell_grace=60)})
    r = run("shell-prompt", tmp_path, settings)
    assert (r.verdict, r.failure, r.goal, r.attr) == ("pass", None, "shell", "redox-minimal")
    assert [m["name"] for m in r.milestones] == ["firmware", "kernel", "boot-complete", "shell"]
    assert r.reason.startswith("Boot Complete after") and "shell after" in r.reason
    assert r.harmless == [  # the flake's harmless lines, as Cloud Hypervisor and Redox print them
        'WARN - Failed to locate Outputs: Status(0x800000000000000E) "not found"',
        '[src/initnsmgr.rs:169 WARN] Scheme "file" not found in namespace',
        "cloud-hypervisor:   0.415153s: <vcpu0> WARN:virtio-devices/src/transport/pci_common_config.rs:320"
        " -- invalid virtio register dwordread: 0xc",
        "2026-03-09T14-38-14.455Z [smolnetd@smolnetd:194 ERROR] smoltcpd: no network adapter found"]


def test_no_shell_within_the_grace_period_is_partial(tmp_path):
    settings = BootSettings(timeout=600, tcg_timeout=600, images={"redox-minimal": BootImage(shell_grace=0.5)})
    r = run("no-shell", tmp_path, settings)
    assert (r.verdict, r.failure, r.shell_reached) == ("fail", "no-shell", False)
    assert r.reason.startswith("partial: no shell within 0.5 s of Boot Complete")
    assert r.milestones[-1]["name"] == "boot-complete"
    assert r.vmm_exit is None  # the VM was still up: redox-ci stopped it


def test_the_overall_timeout_ends_the_grace_period(tmp_path):
    r = run("no-shell", tmp_path, BootSettings(), timeout=1.0)
    assert r.failure == "no-shell" and "partial: no shell within the overall timeout of 1 s" in r.reason


def test_a_userspace_panic_after_boot_complete_fails_at_once(tmp_path):
    r = run("getty-panic", tmp_path)  # a real Cloud Hypervisor boot of the flake
    assert (r.verdict, r.failure) == ("fail", "panic")
    assert r.reason.startswith("userspace panic after boot-complete")
    assert r.reason.endswith("thread 'main' (1) panicked at src/bin/getty.rs:121:6: "
                             "getty: failed to create PTY: Error `No such device` 19")


def test_a_kernel_panic_fails_at_once(tmp_path):
    r = run("panic", tmp_path)
    assert (r.failure, r.milestones[-1]["name"]) == ("panic", "kernel")
    assert r.reason.startswith("kernel panic after kernel") and "KERNEL PANIC: page fault" in r.reason


def test_an_image_without_a_shell_passes_at_boot_complete(tmp_path):
    settings = BootSettings(images={"redox-minimal": BootImage(shell=False)})
    r = run("no-shell", tmp_path, settings)
    assert (r.verdict, r.goal, r.shell_reached) == ("pass", "boot-complete", False)


# --- the tests protocol ----------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("FUNC_TEST:shell-echo:PASS", protocol.TestCase("shell-echo", protocol.TestStatus.PASSED)),
    ("FUNC_TEST:nix-eval:FAIL:expected 42, got 41", protocol.TestCase("nix-eval", protocol.TestStatus.FAILED, "expected 42, got 41")),
    ("FUNC_TEST:store:FAIL:path /nix/store/x: not found", protocol.TestCase("store", protocol.TestStatus.FAILED,
                                                                    "path /nix/store/x: not found")),
    ("FUNC_TEST:fetch:FAIL", protocol.TestCase("fetch", protocol.TestStatus.FAILED)),
    ("FUNC_TEST:snix:SKIP", protocol.TestCase("snix", protocol.TestStatus.SKIPPED)),
    ("FUNC_TEST:snix:SKIPPED", None),
    ("FUNC_TEST::PASS", None),
    ("FUNC_TEST:shell-echo", None),
    ("FUNC_TEST:x:PASS:why", None),
    ("NET_TEST:dhcp:PASS", None),
])
def test_a_result_line(line, expected):
    assert parse_result(line, "FUNC_TEST") == expected


def test_a_run_counts_like_cargo():
    run_ = protocol.TestRun("NET_TEST")
    lines = ["noise", "NET_TESTS_START", "NET_TEST:dhcp:PASS", "FUNC_TEST:other:PASS", "NET_TEST:dns:FAIL:timeout",
             "NET_TEST:http:SKIP", "NET_TEST:garbled", "NET_TESTS_COMPLETE"]
    for i, line in enumerate(lines):
        run_.read_line(line, float(i))
    assert (run_.started_at, run_.completed_at) == (1.0, 7.0)
    assert run_.to_json() == {
        "prefix": "NET_TEST", "started": True, "complete": True, "passed": 1, "failed": 1, "skipped": 1,
        "total": 3, "unreadable": ["NET_TEST:garbled"],
        "results": [{"name": "dhcp", "status": "passed", "reason": "", "at": 2.0},
                    {"name": "dns", "status": "failed", "reason": "timeout", "at": 4.0},
                    {"name": "http", "status": "skipped", "reason": "", "at": 5.0}]}
    assert not run_.ok and run_.describe() == "1 passed, 1 failed, 1 skipped"


def test_results_need_a_whole_line_and_the_start_of_a_line():
    f = follower(b"FUNC_TESTS_START\r\nFUNC_TEST:a:PA", b"SS\r\nlog: FUNC_TEST:b:PASS\r\nFUNC_TEST:c:FAIL:cut",
                 prefix="FUNC_TEST")
    assert [c.name for c in f.tests.cases] == ["a"]
    f.feed(b" short\r\nFUNC_TESTS_COMPLETE", at=9.0)  # COMPLETE needs no newline
    assert [(c.name, c.reason) for c in f.tests.cases] == [("a", ""), ("c", "cut short")]
    assert f.tests.complete and f.tests.completed_at == 9.0


def test_a_failing_test_fails_the_image_with_every_result(tmp_path):
    r = run("functional-tests", tmp_path, attr=FUNCTIONAL)
    assert (r.verdict, r.failure, r.goal) == ("fail", "tests-failed", "tests")
    assert r.reason == "1 of 5 tests failed: nix-eval-arith: expected 42, got 41 (3 passed, 1 failed, 1 skipped)"
    tests = r.to_json()["tests"]
    assert (tests["passed"], tests["failed"], tests["skipped"], tests["complete"]) == (3, 1, 1, True)
    assert [(t["name"], t["status"]) for t in tests["results"]] == [
        ("shell-echo", "passed"), ("fs-write-read", "passed"), ("nix-eval-arith", "failed"),
        ("snix-fetchers", "skipped"), ("generations-list", "passed")]


def test_every_test_passing_passes(tmp_path):
    t = write_transcript(tmp_path / "ok.jsonl", [
        {"data": "Redox OS starting...\n" + BANNER + "FUNC_TESTS_START\n"},
        {"delay": 0.02, "data": "FUNC_TEST:a:PASS\nFUNC_TEST:b:SKIP\n"}, {"data": "FUNC_TESTS_COMPLETE\n"}])
    r = run(t, tmp_path, attr=FUNCTIONAL)
    assert (r.verdict, r.failure) == ("pass", None)
    assert r.reason.startswith("FUNC_TESTS_COMPLETE after") and r.reason.endswith("1 passed, 0 failed, 1 skipped")


def test_complete_with_no_results_fails(tmp_path):
    t = write_transcript(tmp_path / "none.jsonl", [{"data": "FUNC_TESTS_START\nFUNC_TESTS_COMPLETE\n"}])
    r = run(t, tmp_path, attr=FUNCTIONAL)
    assert (r.failure, r.reason) == ("tests-failed", "FUNC_TESTS_COMPLETE with no test results")


def test_the_vmm_exiting_before_complete_fails(tmp_path):
    r = run("functional-incomplete", tmp_path, attr=FUNCTIONAL)
    assert (r.verdict, r.failure, r.vmm_exit) == ("fail", "vmm-exit", 0)
    assert r.reason.startswith("the VMM exited (exit status 0) before FUNC_TESTS_COMPLETE")
    assert "tests so far: 1 passed, 1 failed, 0 skipped; failed: fs-write-read: read back 0 bytes" in r.reason
    assert not r.tests.complete and [c.name for c in r.tests.cases] == ["shell-echo", "fs-write-read"]


def test_no_complete_before_the_timeout_fails(tmp_path):
    t = write_transcript(tmp_path / "stuck.jsonl", [{"data": "FUNC_TESTS_START\nFUNC_TEST:a:PASS\n"}])
    r = run(t, tmp_path, attr=FUNCTIONAL, timeout=0.5)
    assert r.failure == "timeout"
    assert r.reason.startswith("timed out: no FUNC_TESTS_COMPLETE within the overall timeout of 0.5 s")
    assert r.reason.endswith("tests so far: 1 passed, 0 failed, 0 skipped")


def test_network_tests_use_their_prefix(tmp_path):
    settings = BootSettings(timeout=600, tcg_timeout=600,
                            images={"redox-network-test": BootImage(tests="NET_TEST")})
    r = run("network-tests", tmp_path, settings, attr="redox-network-test")
    assert (r.verdict, r.tests.prefix, r.tests.describe()) == ("pass", "NET_TEST", "2 passed, 0 failed, 1 skipped")


def test_the_cli_reports_each_test(tmp_path):
    code, data = run_json("boot", "--replay", str(transcript("functional-tests")), "--attr", FUNCTIONAL,
                          "--serial-log", str(tmp_path / "s.log"), "--vmm-log", str(tmp_path / "v.log"))
    assert code == 1 and data["failure"] == "tests-failed" and data["attr"] == FUNCTIONAL
    assert data["tests"]["total"] == 5 and data["tests"]["results"][2]["reason"] == "expected 42, got 41"


# --- settings --------------------------------------------------------------------------

def test_defaults_are_the_flakes():
    s = BootSettings()
    assert s.image_attr == "redox-minimal" and s.timeouts == {}
    minimal = follow_plan(s, "kvm", None)
    assert (minimal.goal, minimal.overall, minimal.shell_grace) == ("shell", 90, 10)
    assert follow_plan(s, "tcg", None).overall == 180
    functional = follow_plan(s, "kvm", None, FUNCTIONAL)
    # mkFunctionalTest's default timeout (the flake's infrastructure/default.nix), 300 s.
    assert (functional.goal, functional.tests_prefix, functional.overall) == ("tests", "FUNC_TEST", 300)
    assert follow_plan(s, "tcg", None, FUNCTIONAL).overall == 300
    network = follow_plan(s, "kvm", None, NETWORK)
    assert (network.goal, network.tests_prefix, network.overall) == ("tests", "NET_TEST", 120)
    assert s.booted_images() == ["redox-minimal", FUNCTIONAL, NETWORK]
    assert s.vm_size("redox-minimal") == s.vm_size(FUNCTIONAL) == (1024, 2)
    assert s.vm_size(NETWORK) == (2048, 4) and s.image(NETWORK).nic == "e1000"
    assert s.image(NETWORK).vmms == ["qemu"] and s.image(FUNCTIONAL).vmms == ["qemu", "cloud-hypervisor"]
    assert follow_plan(s, "kvm", None, "redox-graphical").goal == "shell"  # not listed: the boot test's rule
    assert follow_plan(s, "kvm", 7, FUNCTIONAL).overall == 7


def test_images_in_a_settings_file_add_to_the_defaults(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text('[boot]\ntimeout = 60\ntest_images = ["redox-multi-user-test"]\n'
                 '[boot.images.redox-multi-user-test]\ntests = "FUNC_TEST"\n'
                 "tcg_timeout = 400\nmemory_mb = 4096\n[boot.images.redox-minimal]\nshell_grace = 20\n")
    s = load_table(BootSettings, p)
    assert set(s.images) == {"redox-minimal", FUNCTIONAL, NETWORK, "redox-multi-user-test"}
    assert follow_plan(s, "tcg", None, "redox-multi-user-test").overall == 400
    assert s.vm_size("redox-multi-user-test") == (4096, 2)
    assert s.booted_images() == ["redox-minimal", "redox-multi-user-test"]
    assert follow_plan(s, "kvm", None).shell_grace == 20 and follow_plan(s, "kvm", None).overall == 60


@pytest.mark.parametrize("table, message", [
    ("timeouts = { shell = 60 }", "shell_grace"),
    ('images = { "bad name" = { shell = false } }', "not Nix attribute names"),
    ('images = { x = { tests = "UNIT_TEST" } }', "boot.images.x.tests"),
    ("images = { x = { shell_grace = 0 } }", "boot.images.x.shell_grace"),
    ("tcg_timeout = -1", "boot.tcg_timeout"),
    ('images = { x = { nic = "e1000" } }', "tap device"),
    ('images = { x = { nic = "ne2k" } }', "boot.images.x.nic"),
    ('images = { x = { vmms = [] } }', "boot.images.x.vmms"),
    ("images = { x = { memory_mb = 64 } }", "boot.images.x.memory_mb"),
    ('test_images = ["bad name"]', "not Nix attribute names"),
])
def test_bad_boot_settings(tmp_path, table, message):
    p = tmp_path / "settings.toml"
    p.write_text(f"[boot]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_table(BootSettings, p)


# --- the master's step -------------------------------------------------------------------

def test_the_boot_step_counts_the_tests(tmp_path):
    data = run("functional-tests", tmp_path, attr=FUNCTIONAL).to_json()
    summary, props, logs = boot_report(data)
    assert summary.startswith("fail (-): 1 of 5 tests failed: nix-eval-arith")
    assert "FUNC_TEST: 3 passed, 1 failed, 1 skipped" in summary
    assert props == {"boot_result": data}  # the verb's answer, whole, is the one property
    assert "failed   nix-eval-arith: expected 42, got 41" in logs["tests"].splitlines()
    plain, plain_props, plain_logs = boot_report(run("shell-prompt", tmp_path).to_json())
    assert set(plain_props) == {"boot_result"} and "tests" not in plain_logs and plain.startswith("pass (-)")


def test_each_configured_image_is_a_boot_job_on_the_vmms_it_allows():
    """The boot test's image and each test image the plan has, per VMM the image allows;
    the network test on QEMU only; an image the plan lacks is not booted."""
    images = ["redox-minimal", FUNCTIONAL, NETWORK, "bootloader"]
    evaluation = {"x86_64-linux": {"packages": {
        name: {"kind": "package", "drv": f"/nix/store/{'d' * 32}-{name}.drv", "doCheck": False, "forced": False,
               "outputs": [{"name": "out", "path": f"/nix/store/{'o' * 32}-{name}"}]} for name in images}}}
    plan = build_plan("F", evaluation, PlanSettings(runners=[]), ["x86_64-linux"])
    settings = BootSettings(test_images=[FUNCTIONAL, NETWORK, "redox-multi-user-test"])
    jobs = {s.job.attr: s for s in boot_jobs(plan, settings)}
    assert set(jobs) == {"boot-qemu", "boot-cloud-hypervisor", f"boot-qemu-{FUNCTIONAL}",
                         f"boot-cloud-hypervisor-{FUNCTIONAL}", f"boot-qemu-{NETWORK}"}
    functional = jobs[f"boot-qemu-{FUNCTIONAL}"]
    boot = functional.extra["boot"]
    assert boot["image_attr"] == FUNCTIONAL and functional.route == "x86_64-linux/qemu"
    assert boot["image_paths"] == [f"/nix/store/{'o' * 32}-{FUNCTIONAL}"]
    assert boot["bootloader_paths"] == [f"/nix/store/{'o' * 32}-bootloader"]
    assert jobs["boot-qemu"].extra["boot"]["image_attr"] == "redox-minimal"
    assert all(j.job.status == "build" and j.job.stage == "boot" for j in jobs.values())


def test_the_boot_step_lists_each_test_and_an_unfinished_run():
    tests = {"prefix": "FUNC_TEST", "complete": False, "results": [
        {"name": "shell-echo", "status": "passed", "reason": ""},
        {"name": "nix-eval-arith", "status": "failed", "reason": "expected 42, got 41"}],
        "unreadable": ["FUNC_TEST:odd"], "passed": 1, "failed": 1, "skipped": 0, "total": 2}
    assert results_listing(tests).splitlines() == [
        "passed   shell-echo", "failed   nix-eval-arith: expected 42, got 41", "unreadable FUNC_TEST:odd",
        "(no FUNC_TESTS_COMPLETE: the image did not finish its tests)"]


def test_the_boot_step_outlasts_the_longest_boot():
    assert longest_boot(BootSettings()) == 300  # the functional test image's
    assert longest_boot(BootSettings(images={"slow": BootImage(tcg_timeout=900)})) == 900
