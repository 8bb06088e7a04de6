"""The serial follower on its own: pieces of any size, escapes, line ends, order."""

from __future__ import annotations

import json

import pytest

from boot_support import transcript
from redox_ci.boot.engine import FollowPlan, deadline_for
from redox_ci.boot.markers import Reached, SerialFollower

pytestmark = pytest.mark.unit

HARMLESS = ("WARN - Failed to locate Outputs", "invalid virtio register dword read: 0xc",
            "smolnetd: no network adapter found")


def console(name: str) -> bytes:
    steps = [json.loads(line) for line in transcript(name).read_text().splitlines()]
    return "".join(s.get("data", "") for s in steps).encode()


def feed_in_pieces(data: bytes, size: int) -> SerialFollower:
    f = SerialFollower(HARMLESS)
    for i in range(0, len(data), size):
        f.feed(data[i:i + size], at=float(i))
    return f


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_any_piece_size_gives_the_same_milestones(size):
    f = feed_in_pieces(console("clean"), size)
    assert [r.name for r in f.reached] == ["firmware", "kernel", "boot-complete", "shell"]
    assert f.panic is None
    assert f.harmless == list(HARMLESS)


@pytest.mark.parametrize("size", [1, 5, 1 << 20])
def test_escapes_and_lone_carriage_returns(size):
    f = feed_in_pieces(console("ansi"), size)
    assert [r.name for r in f.reached] == ["firmware", "kernel", "boot-complete", "shell"]
    assert f.harmless == ["WARN - Failed to locate Outputs"]  # colour codes gone, one line


def test_escape_cut_in_the_middle_of_a_marker():
    f = SerialFollower()
    for piece in (b"Boot\x1b[3", b"2m Comp", b"\x1b", b"[0mlete\r", b"\n"):
        f.feed(piece, at=1.0)
    f2 = SerialFollower()
    f2.feed(b"Redox OS starting\r\n", 0.5)
    for piece in (b"Boot\x1b[3", b"2m Comp", b"\x1b", b"[0mlete\r"):
        f2.feed(piece, at=1.0)
    assert "boot-complete" not in [r.name for r in f.reached]  # kernel never seen
    assert [r.name for r in f2.reached] == ["firmware", "kernel", "boot-complete"]


def test_a_utf8_character_cut_between_pieces():
    f = SerialFollower(("Ünïcode warning",))
    data = "Ünïcode warning\r\n".encode()
    for i in range(len(data)):
        f.feed(data[i:i + 1], at=0.0)
    assert f.harmless == ["Ünïcode warning"]


def test_milestones_count_only_in_order():
    f = SerialFollower()
    f.feed(b"Boot Complete (a stray line)\r\n", at=0.1)
    f.feed(b"Redox OS starting\r\n", at=0.2)
    assert [r.name for r in f.reached] == ["firmware", "kernel"]
    f.feed(b"Redox OS Boot Complete!\r\n", at=0.3)
    assert f.reached[-1] == Reached("boot-complete", 0.3)


def test_panic_split_across_pieces_names_its_line():
    f = SerialFollower()
    f.feed(b"Redox OS starting\r\nkernel: pani", at=0.1)
    events = f.feed(b"cked at src/li", at=0.2)
    assert f.panic in events and f.panic.at == 0.2
    assert (f.panic.line, f.panic.complete) == ("kernel: panicked at src/li", False)
    f.feed(b"b.rs:1:1\r\nbacktrace:\r\n", at=0.3)
    assert f.panic.at == 0.2 and f.panic.complete
    assert f.panic.line == "kernel: panicked at src/lib.rs:1:1"


def test_deadlines_count_from_the_previous_milestone_and_respect_the_cap():
    plan = FollowPlan(overall=90, timeouts={"firmware": 10, "kernel": 20, "boot-complete": 30})
    fw, kernel = Reached("firmware", 4.0), Reached("kernel", 5.0)
    assert deadline_for([], plan) == 10
    assert deadline_for([fw], plan) == 24.0
    capped = FollowPlan(overall=15, timeouts=plan.timeouts)
    assert deadline_for([fw], capped) == 15
    # The shell's wait is the grace period after Boot Complete, within the overall timeout.
    assert deadline_for([fw, kernel, Reached("boot-complete", 14.0)], plan) == 24.0
    assert deadline_for([fw, kernel, Reached("boot-complete", 14.0)], capped) == 15
    tests = FollowPlan(overall=120, goal="tests", tests_prefix="FUNC_TEST")
    assert deadline_for([fw, kernel, Reached("boot-complete", 14.0)], tests) == 120
    assert deadline_for([], FollowPlan(overall=90)) == 90  # no milestone limit unless set
