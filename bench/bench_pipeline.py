"""Benchmark: the whole pipeline through a real master against one plain ``nix build``.

Over a generated Redox-like flake (``bench/flakegen.py``, 200 packages by default),
each round writes two fresh revisions (new salts, so nothing is built yet) and times

* nix: one ``nix build --max-jobs 2`` of every package of the one revision;
* pipeline: a plan build of the other, forced through the REST API of a real master
  with a LocalWorker (max_builds 2, one per core), from the force until the plan build
  is complete: evaluation, the four stage triggers, one build per job.

The master is started once (its start-up is printed apart) with the generated
attributes as stages in its settings. After the rounds, where the pipeline's time goes:
the steps of the plan build, the job builds as the REST API records them, and the cost
of one ``redox-ci build`` on the worker side against ``nix-store --realise`` alone.

    python bench/bench_pipeline.py [--attrs N] [--rounds R] [--work ITERATIONS] [--workers K] [--no-profile]
                                   [--cprofile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
from flakegen import (SYSTEM, attr_count, flake_ref, layout, nix_env, plan_settings_toml, positive,
                      timing_line, write_flake)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.master_support import POLL_SECONDS, Master, free_port  # noqa: E402

from redox_ci import flake  # noqa: E402
from redox_ci.config import DEFAULT_RUNNERS  # noqa: E402
from redox_ci.local import LocalSetup, prepare  # noqa: E402

DEFAULT_ATTRS = 200
# One round of each already takes minutes at 200 packages; --rounds for a median.
DEFAULT_ROUNDS = 1
# Builds at once: one per core of the 2-core benchmark machine, on both sides.
MAX_BUILDS = 2
# No poller builds during the benchmark: only the forced ones run.
POLL_NEVER_SECONDS = 10**7
# Jobs whose worker-side cost is measured one by one in the profile.
PROFILE_JOBS = 20
# Functions of the master's profile shown, by own time and by cumulative time.
PROFILE_LINES = 40
# Kinds of database operation shown, the most frequent first.
DB_LINES = 25
TARGET_RATIO = 2.0
# Issue 13: what a job may cost beyond its build, on this 2-core machine.
TARGET_OVERHEAD_SECONDS = 0.15
SUCCESS = 0


def extra_workers_toml(workers: int) -> str:
    """More LocalWorkers beside the one LocalSetup writes, for the --workers experiment."""
    return "".join(f'\n[[workers.worker]]\nname = "local-worker-{i}"\nkind = "local"\n'
                   f'systems = ["{SYSTEM}"]\nmax_builds = {MAX_BUILDS}\n' for i in range(2, workers + 1))


def profiling_cfg(stats: Path) -> str:
    """Lines for master.cfg: profile the master's reactor thread until it stops, stats to
    ``stats``. Buildbot reads master.cfg in a pool thread, so the profile starts in the
    reactor's thread by callFromThread."""
    return (f"\nimport cProfile as _cProfile\nfrom twisted.internet import reactor as _reactor\n"
            f"_profile = _cProfile.Profile()\n_reactor.callFromThread(_profile.enable)\n"
            f"_reactor.addSystemEventTrigger('before', 'shutdown', lambda: (_profile.disable(), "
            f"_profile.dump_stats({str(stats)!r})))\n")


def db_timing_cfg(out: Path) -> str:
    """Lines for master.cfg: count Buildbot's database operations by function and the time its
    database thread spends in them (the reactor's profile does not see that thread), written
    to ``out`` as JSON when the master stops."""
    return (f"\nimport json as _json, time as _time\nfrom collections import Counter as _Counter\n"
            f"from buildbot.db import pool as _pool\n_db = [_Counter(), _Counter()]\n"
            f"_thd = _pool.DBThreadPool._DBThreadPool__thd\n"
            f"def _timed(self, with_engine, fn, *a, **k):\n    t = _time.perf_counter()\n    try:\n"
            f"        return _thd(self, with_engine, fn, *a, **k)\n    finally:\n"
            f"        _db[0][fn.__qualname__] += 1\n        _db[1][fn.__qualname__] += _time.perf_counter() - t\n"
            f"_pool.DBThreadPool._DBThreadPool__thd = _timed\n"
            f"_reactor.addSystemEventTrigger('before', 'shutdown', lambda: open({str(out)!r}, 'w')"
            f".write(_json.dumps(_db)))\n")


def start_master(tmp: Path, repo: Path, n: int, workers: int = 1, cprofile: Path | None = None) -> Master:
    setup = LocalSetup(state=tmp / "ci", repo=repo, www_port=free_port(), pb_port=free_port(),
                       systems=[SYSTEM], worker_kind="local", max_builds=MAX_BUILDS,
                       poll_interval=POLL_NEVER_SECONDS,
                       extra_toml=extra_workers_toml(workers) + "\n" + plan_settings_toml(layout(n)))
    master = Master(setup, prepare(setup, admin_password=uuid.uuid4().hex))
    if cprofile:
        with open(setup.master_dir / "master.cfg", "a") as cfg:
            cfg.write(profiling_cfg(cprofile.resolve()))
            cfg.write(db_timing_cfg(db_timing_file(cprofile)))
    master.start()
    return master


def db_timing_file(cprofile: Path) -> Path:
    return cprofile.resolve().with_suffix(".db")


def print_profile(stats: Path, lines: int, n: int) -> None:
    """The database thread's operations, then the master's functions by their own time and by
    cumulative time."""
    import pstats
    ops, seconds = json.loads(db_timing_file(stats).read_text())
    print(f"  database thread: {sum(ops.values()) / n:.0f} operations per job, {sum(seconds.values()) / n:.3f} s "
          f"per job (from start to stop); the most frequent, per job:")
    for name, count in sorted(ops.items(), key=lambda kv: -kv[1])[:DB_LINES]:
        print(f"    {count / n:5.1f}  {seconds[name] / n:.3f} s  {name}")
    for order in ("tottime", "cumulative"):
        print(f"  master profile by {order} (cProfile, from start to stop):")
        pstats.Stats(str(stats), stream=sys.stdout).sort_stats(order).print_stats(lines)


def nix_build(repo: Path, n: int, work: int) -> float:
    ref = flake_ref(repo, write_flake(repo, n, uuid.uuid4().hex, work))
    installables = [f"{ref}#packages.{SYSTEM}.{a}" for a in layout(n).attrs]
    start = time.perf_counter()
    proc = subprocess.run(["nix", "build", "--no-link", "--max-jobs", str(MAX_BUILDS), *installables],
                          capture_output=True, text=True, env=nix_env())
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"nix build exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


@dataclass
class Run:
    """One forced pipeline: its time, its plan build, and what was seen while it ran."""

    seconds: float
    build: dict
    master_cpu: float
    # Job builds in progress, sampled every POLL_SECONDS while the pipeline ran.
    running: list[int] = field(default_factory=list)


def master_cpu_seconds(master: Master) -> float:
    pid = (master.setup.master_dir / "twistd.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def sample_running(master: Master, stop: threading.Event, out: list[int]) -> None:
    plan_builder = master.builder_id("redox/plan")
    with requests.Session() as session:  # its own: a Session is not for two threads at once
        while not stop.wait(POLL_SECONDS):
            r = session.get(master.url + "api/v2/builds", params={"complete": "false"}, timeout=30)
            r.raise_for_status()
            out.append(sum(1 for b in r.json()["builds"] if b["builderid"] != plan_builder))


def pipeline(master: Master, repo: Path, n: int, work: int) -> Run:
    rev = write_flake(repo, n, uuid.uuid4().hex, work)
    session = master.login()
    stop, running = threading.Event(), []
    sampler = threading.Thread(target=sample_running, args=(master, stop, running))
    cpu = master_cpu_seconds(master)
    start = time.perf_counter()
    r = master.force(session, branch="main", revision=rev, systems=[SYSTEM], reason="benchmark")
    if not r.ok or "error" in r.json():
        sys.exit(f"force refused: {r.text}")
    sampler.start()
    try:
        build = master.forced_build(r)
    finally:
        stop.set()
        sampler.join()
    run = Run(time.perf_counter() - start, build, master_cpu_seconds(master) - cpu, running)
    jobs = list(master.jobs(build["buildid"]).values())  # the systems' evaluations apart
    bad = [b for b in jobs if b["results"] != SUCCESS]
    if build["results"] != SUCCESS or len(jobs) != n or bad:
        sys.exit(f"pipeline: result {build['results']}, {len(jobs)} jobs of {n}, "
                 f"not successful: {[b['state_string'] for b in bad[:5]]}")
    return run


def profile_master(master: Master, run: Run, n: int) -> None:
    """Where the pipeline's time went, from the REST API (whole seconds) and the master process."""
    print("  where the last pipeline's time went:")
    for step in master.steps(run.build["buildid"]):
        if step["started_at"] is not None:
            print(f"    step {step['name']:26} {step['complete_at'] - step['started_at']:4d} s"
                  f"  {step['state_string'][:70]}")
    jobs = list(master.jobs(run.build["buildid"]).values())
    build_steps = [s for b in jobs for s in master.steps(b["buildid"]) if s["name"] == "build"]
    step_time = sum(s["complete_at"] - s["started_at"] for s in build_steps)
    job_time = sum(b["complete_at"] - b["started_at"] for b in jobs)
    props = statistics.mean(len(b["properties"]) for b in jobs)
    print(f"    job builds: {job_time / len(jobs):.2f} s each from start to end, of which the 'build' step "
          f"(redox-ci build on the worker) {step_time / len(build_steps):.2f} s")
    print(f"    job builds running at once (sampled every {POLL_SECONDS} s): mean "
          f"{statistics.mean(run.running or [0]):.2f}, max {max(run.running or [0])}")
    print(f"    master process CPU: {run.master_cpu:.1f} s = {run.master_cpu / n:.3f} s per job; "
          f"{props:.0f} build properties per job")


def profile_worker(tmp: Path, n: int, work: int) -> None:
    """One ``redox-ci build`` against ``nix-store --realise`` of the same kind of job."""
    repo = tmp / "profile"
    plans = []
    for _ in range(2):
        ref = flake_ref(repo, write_flake(repo, n, uuid.uuid4().hex, work))
        params = flake.EvalParams((SYSTEM,), (), tuple(DEFAULT_RUNNERS))
        evaluation = flake.evaluate(ref, params)[SYSTEM]["packages"]
        # Host tools have no dependencies: each build is one derivation, as in a job.
        plans.append((ref, [(a, evaluation[a]["drv"]) for a in layout(n).checks[:PROFILE_JOBS]]))

    def each(argvs: list[list[str]]) -> float:
        start = time.perf_counter()
        for argv in argvs:
            subprocess.run(argv, capture_output=True, check=True, env=nix_env())
        return (time.perf_counter() - start) / len(argvs)

    (ref, jobs), (_, plain) = plans
    redox = each([[sys.executable, "-m", "redox_ci", "build", "--json", "--drv", drv, "--attr", a,
                   "--system", SYSTEM, "--flake", ref] for a, drv in jobs])
    realise = each([["nix-store", "--realise", drv] for _, drv in plain])
    startup = each([[sys.executable, "-m", "redox_ci", "--help"]] * len(jobs))
    print(f"  worker side, one job at a time ({len(jobs)} host tools):")
    print(f"    redox-ci build                : {redox:6.3f} s per job")
    print(f"    nix-store --realise alone     : {realise:6.3f} s per job")
    print(f"    of which redox-ci start-up    : {startup:6.3f} s (redox-ci --help)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attrs", type=attr_count, default=DEFAULT_ATTRS, help=f"packages (default {DEFAULT_ATTRS})")
    parser.add_argument("--rounds", type=positive, default=DEFAULT_ROUNDS, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--work", type=int, default=0, help="busy-loop iterations per build (default 0)")
    parser.add_argument("--workers", type=positive, default=1,
                        help=f"LocalWorkers of max_builds {MAX_BUILDS} each (default 1, as redox-ci local)")
    parser.add_argument("--no-profile", action="store_true", help="skip the breakdown after the rounds")
    parser.add_argument("--cprofile", type=Path, metavar="FILE",
                        help="run the master under cProfile (slower), keep its stats in FILE and print the top")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    # The master and its worker inherit it: no substituter to ask (and time out on).
    os.environ["NIX_CONFIG"] = nix_env()["NIX_CONFIG"]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "flake"
        write_flake(repo, args.attrs, uuid.uuid4().hex, args.work)
        start = time.perf_counter()
        master = start_master(tmp, repo, args.attrs, args.workers, args.cprofile)
        try:
            print(f"master and {args.workers} LocalWorker(s) (max_builds {MAX_BUILDS}) up in "
                  f"{time.perf_counter() - start:.1f} s (not counted)")
            times: dict[str, list[float]] = {"nix": [], "pipeline": []}
            for _ in range(args.rounds):
                times["nix"].append(nix_build(repo, args.attrs, args.work))
                run = pipeline(master, repo, args.attrs, args.work)
                times["pipeline"].append(run.seconds)
            report(args, times)
            if not args.no_profile:
                profile_master(master, run, args.attrs)
                profile_worker(tmp, args.attrs, args.work)
        finally:
            master.stop()
        if args.cprofile:
            print_profile(args.cprofile, PROFILE_LINES, args.attrs)


def report(args, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["pipeline"] / med["nix"]
    print(f"pipeline of a generated flake: {args.attrs} packages, work {args.work} iterations per build, "
          f"{args.workers} LocalWorker(s), "
          f"{args.rounds} round(s), fresh revision each")
    print(timing_line(f"nix build --max-jobs {MAX_BUILDS} of all packages", times["nix"]))
    print(timing_line("forced pipeline, master + worker", times["pipeline"]))
    print(f"  {'ratio pipeline / nix build':44}: {ratio:7.2f}x  (target <= {TARGET_RATIO:.0f}x: "
          f"{'met' if ratio <= TARGET_RATIO else 'MISSED'})")
    overhead = (med["pipeline"] - med["nix"]) / args.attrs
    print(f"  {f'overhead per job (pipeline - nix) / {args.attrs}':44}: {overhead:7.3f} s  "
          f"(target <= {TARGET_OVERHEAD_SECONDS} s: {'met' if overhead <= TARGET_OVERHEAD_SECONDS else 'MISSED'})")


if __name__ == "__main__":
    main()
