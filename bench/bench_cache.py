"""Benchmark: ``redox-ci cache push`` against a plain parallel boto3 upload of the same files.

Builds a closure of a few hundred MB of varied paths (random bytes that do not compress,
text that does; a few large paths, many small ones) with real Nix, starts a local S3
server (moto, its own process) and then, in alternating rounds:

* push: ``redox_ci.cache.push`` (closure query, narinfo HEAD checks, signing, staging
  with ``nix copy``, upload of NARs then narinfos), into a fresh key prefix;
* plain: the files of one staged copy uploaded by a ThreadPoolExecutor of
  ``client.upload_file`` calls with the same parallelism, into another fresh prefix.

It prints the upload throughput of both (the issue's target: push >= 0.9 of plain),
push's end-to-end time with its phases, and a second push where everything is cached.

    python bench/bench_cache.py [--size-mb 300] [--paths 40] [--compression zstd] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import boto3  # noqa: E402

from cache_support import build_closure, delete_from_store, store_closure  # noqa: E402
from redox_ci.cache.push import push  # noqa: E402
from redox_ci.cache.keys import generate_keypair, read_signing_key  # noqa: E402
from redox_ci.cache.localserver import LocalS3Server  # noqa: E402
from redox_ci.cache.s3 import client_config, transfer_config  # noqa: E402
from redox_ci.cache.stage import stage  # noqa: E402

MIB = 1024 * 1024
# Fixed seed: the same mix of sizes on every run, so figures compare across runs.
SEED = 4
# Share of paths holding random (incompressible) bytes, like compiled code.
RANDOM_SHARE = 0.5


def closure_spec(size_mb: int, paths: int) -> list[tuple[str, int, bool]]:
    """(name, KiB, compressible) per path: sizes drawn log-uniformly, scaled to ``size_mb``."""
    rng = random.Random(SEED)
    weights = [2 ** rng.uniform(0, 8) for _ in range(paths)]
    total = sum(weights)
    return [(f"p{i:03d}", max(4, int(size_mb * 1024 * w / total)), rng.random() >= RANDOM_SHARE)
            for i, w in enumerate(weights)]


def plain_upload(settings, credentials: dict, files: list[Path], root: Path, prefix: str) -> tuple[int, float]:
    """The baseline: every file uploaded in a bounded thread pool, nothing else."""
    client = boto3.session.Session(**credentials).client("s3", endpoint_url=settings.endpoint_url,
                                                         config=client_config(settings))
    config = transfer_config(settings)
    start = time.monotonic()
    with ThreadPoolExecutor(settings.upload_parallelism) as pool:
        list(pool.map(lambda f: client.upload_file(str(f), settings.bucket,
                                                   f"{prefix}/{f.relative_to(root).as_posix()}", Config=config),
                      files))
    return sum(f.stat().st_size for f in files), time.monotonic() - start


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds if seconds > 0 else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=300, help="closure size before compression (default 300)")
    ap.add_argument("--paths", type=int, default=40, help="number of store paths (default 40)")
    ap.add_argument("--compression", default="zstd", choices=["xz", "zstd", "none"],
                    help="NAR compression (default zstd; xz costs ~4 MB/s of CPU per core here)")
    ap.add_argument("--parallelism", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        top = build_closure(tmp / "build", closure_spec(args.size_mb, args.paths))
        paths = store_closure(top)
        print(f"built {len(paths)} paths ({args.size_mb} MB before compression) in {time.monotonic() - t0:.1f} s")
        secret, _, _ = generate_keypair("bench-1", tmp / "keys")
        key = read_signing_key(secret)
        try:
            with LocalS3Server(bucket="bench") as server:
                settings = server.settings(compression=args.compression, upload_parallelism=args.parallelism)
                creds = server.credentials
                # One staged copy for the baseline; nix copy writes the same files push uploads.
                staged_root = tmp / "staged"
                staged = stage(paths, key.path, key.name, staged_root, args.compression)
                files = sorted(f for f in staged_root.rglob("*") if f.is_file())
                assert len(staged.paths) == len(paths)

                # Warm-up, not counted: the server's first uploads pay for its own start-up.
                plain_upload(settings, creds, files, staged_root, "warm-up")
                push_runs, plain_runs = [], []
                for r in range(args.rounds):
                    run_id = uuid.uuid4().hex[:8]
                    # Alternate which goes first, so neither always meets a warmer server.
                    if r % 2:
                        plain_runs.append(plain_upload(settings, creds, files, staged_root, f"plain-{run_id}"))
                    res = push(settings.model_copy(update={"prefix": f"push-{run_id}"}), [top],
                               credentials=creds, signing_key_file=key.path)
                    assert len(res.pushed) == len(paths)
                    push_runs.append(res)
                    if not r % 2:
                        plain_runs.append(plain_upload(settings, creds, files, staged_root, f"plain-{run_id}"))
                    print(f"round {r + 1}: push upload {mbps(res.bytes_uploaded, res.upload_seconds):.0f} MiB/s "
                          f"({res.upload_seconds:.2f} s), plain {mbps(*plain_runs[-1]):.0f} MiB/s "
                          f"({plain_runs[-1][1]:.2f} s), push end to end {res.seconds:.2f} s")
                cached = push(settings.model_copy(update={"prefix": f"push-{run_id}"}), [top],
                              credentials=creds, signing_key_file=key.path)
                assert cached.pushed == [] and len(cached.skipped) == len(paths)
        finally:
            delete_from_store(paths)

    up = statistics.median(mbps(r.bytes_uploaded, r.upload_seconds) for r in push_runs)
    plain = statistics.median(mbps(b, s) for b, s in plain_runs)
    total = statistics.median(r.seconds for r in push_runs)
    stage_s = statistics.median(r.stage_seconds for r in push_runs)
    plain_s = statistics.median(s for _, s in plain_runs)
    res = push_runs[-1]
    print()
    print(f"closure: {len(paths)} paths, {res.nar_bytes / MIB:.0f} MiB of NARs, "
          f"{res.bytes_uploaded / MIB:.0f} MiB uploaded ({args.compression}), {res.files_uploaded} files, "
          f"parallelism {args.parallelism}, median of {args.rounds} rounds")
    print(f"plain boto3 upload:      {plain:7.1f} MiB/s  ({plain_s:.2f} s)")
    paired = statistics.median(mbps(r.bytes_uploaded, r.upload_seconds) / mbps(b, s)
                               for r, (b, s) in zip(push_runs, plain_runs))
    print(f"push, upload phase:      {up:7.1f} MiB/s  ratio push/plain = {up / plain:.2f} "
          f"(median of per-round ratios {paired:.2f}; target >= 0.9)")
    print(f"push, end to end:        {total:7.2f} s    (staging {stage_s:.2f} s) = {total / plain_s:.2f}x plain")
    print(f"push, all {len(paths)} cached: {cached.seconds:7.2f} s    ({len(paths)} HEAD requests, nothing uploaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
