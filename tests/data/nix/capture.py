"""Capture what the installed Nix prints for every command redox-ci runs, into
tests/data/nix/<major.minor>/, for tests/test_nix.py.

    python tests/data/nix/capture.py [--local-store]

It writes a small flake (busybox from /bin/busybox as the only tool, so it builds in the
sandbox) into a temporary git repository, then runs each command through the argv
builders of redox_ci.nix and stores, per capture NAME, NAME.stdout, NAME.stderr and
NAME.rc exactly as Nix gave them. The flake's derivations carry the Nix version, so
their first build on a host is a real build. --local-store also captures the --check
and failed-build exit statuses of a local store (run as root, next to the daemon).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from redox_ci import flake, nix  # noqa: E402

FLAKE = """{
  description = "redox-ci: captures of Nix output";
  outputs = { self }: let
    system = "x86_64-linux";
    bb = "${./tools}/busybox";
    mk = name: script: extra: derivation ({
      inherit name system;
      builder = bb;
      args = [ "sh" "-c" script ];
      nonce = "NONCE";
    } // extra);
    dep = mk "capture-dep" "${bb} mkdir -p $out && ${bb} echo dep > $out/dep.txt" { };
  in {
    packages.${system} = {
      inherit dep;
      stable = mk "capture-stable" "${bb} mkdir -p $out && ${bb} echo ${dep} > $out/ref.txt" { };
      split = mk "capture-split"
        "${bb} mkdir -p $out $doc && ${bb} echo $doc > $out/doc-path && ${bb} od -An -tx1 -N8 /dev/urandom > $doc/manual.txt"
        { outputs = [ "out" "doc" ]; };
      noisy = mk "capture-noisy" "${bb} mkdir -p $out && ${bb} od -An -tx1 -N8 /dev/urandom > $out/noise.txt" { };
      broken = mk "capture-broken" "${bb} echo 'fails on purpose' >&2; exit 3" { };
      unevaluable = throw "does not evaluate on purpose";
    };
  };
}
"""
ABSENT = "/nix/store/00000000000000000000000000000000-capture-absent"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=capture", "-c", "user.email=capture@localhost",
                    *args], check=True, capture_output=True)


def make_flake(repo: Path, nonce: str) -> str:
    (repo / "tools").mkdir(parents=True)
    shutil.copy("/bin/busybox", repo / "tools" / "busybox")
    (repo / "flake.nix").write_text(FLAKE.replace("NONCE", nonce))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "capture")
    return f"git+file://{repo}"


class Capture:
    def __init__(self, out: Path):
        self.out = out

    def __call__(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env or nix.nix_env(),
                              stdin=subprocess.DEVNULL)
        (self.out / f"{name}.stdout").write_text(proc.stdout)
        (self.out / f"{name}.stderr").write_text(proc.stderr)
        (self.out / f"{name}.rc").write_text(f"{proc.returncode}\n")
        print(f"{name}: exit {proc.returncode}", file=sys.stderr)
        return proc


def remove_check_copies(paths: list[str]) -> None:
    """The .check copies and kept build directories the --check captures leave (as root)."""
    kept = Path(tempfile.gettempdir()).glob("nix-build-capture-*.drv-*")
    for copy in [Path(p + ".check") for p in paths] + list(kept):
        if copy.exists():
            subprocess.run(["chmod", "-R", "u+w", str(copy)], capture_output=True)
            shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--local-store", action="store_true", help="also capture a local store's exit statuses")
    args = ap.parse_args()
    version = nix.nix_version()
    if version is None:
        sys.exit("capture.py: no working nix on PATH")
    out = Path(__file__).resolve().parent / f"{version[0]}.{version[1]}"
    out.mkdir(exist_ok=True)
    cap = Capture(out)
    with tempfile.TemporaryDirectory(prefix="redox-ci-capture-") as tmp:
        repo = Path(tmp) / "flake"
        ref = make_flake(repo, ".".join(map(str, version)))
        cap("version", nix.version_argv())
        params = flake.EvalParams(systems=("x86_64-linux",), checks=("stable",), outputs=flake.PLANNED_OUTPUTS)
        packages = nix.parse_json(cap("eval-packages", nix.eval_json_argv(
            nix.outputs_installable(ref), flake.apply_expression(params, "x86_64-linux"))).stdout,
            what="eval")["packages"]
        drv = {a: i["drv"] for a, i in packages.items() if i.get("drv")}
        outs = {a: {o["name"]: o["path"] for o in i["outputs"]} for a, i in packages.items() if i.get("drv")}
        cap("eval-error-throw", nix.eval_json_argv(f"{ref}#packages.x86_64-linux.unevaluable.drvPath"))
        cap("eval-error-throw-trace", nix.eval_json_argv(f"{ref}#packages.x86_64-linux.unevaluable.drvPath",
                                                         show_trace=True))
        cap("config-show-extra-platforms", nix.config_show_argv("extra-platforms"))
        cap("show-config", nix.show_config_argv())
        cap("eval-error-missing-attr", nix.eval_json_argv(f"{ref}#packages.x86_64-linux.nope"))
        (Path(tmp) / "empty").mkdir()
        cap("eval-error-not-a-flake", nix.eval_json_argv(f"{tmp}/empty#packages"))
        cap("eval-raw-drv-path", nix.eval_raw_argv(f"{ref}#packages.x86_64-linux.stable", "p: p.drvPath"))

        cap("build", nix.build_json_argv([f"{ref}#dep", f"{ref}#stable", f"{ref}#split"]))
        cap("build-present", nix.build_json_argv([f"{ref}#stable"]))
        cap("build-all-outputs", nix.build_json_argv([f"{ref}#split^*"]))
        cap("build-failed", nix.build_json_argv([f"{ref}#broken"]))

        stable, split, doc = outs["stable"]["out"], outs["split"]["out"], outs["split"]["doc"]
        cap("path-info-one", nix.path_info_argv([stable]))
        cap("path-info-several-invalid", nix.path_info_argv([stable, split, doc, ABSENT]))
        cap("path-info-recursive", nix.path_info_argv([stable, split], recursive=True))
        cap("path-info-recursive-invalid", nix.path_info_argv([stable, ABSENT], recursive=True))
        cap("derivation-show", nix.derivation_show_argv([drv["stable"], drv["split"]]))
        cap("derivation-show-recursive", nix.derivation_show_argv([drv["stable"]], recursive=True))
        cap("hash-path", nix.hash_path_argv(stable))

        cap("flake-metadata-clean", nix.flake_metadata_argv(ref))
        with open(repo / "flake.nix", "a") as f:
            f.write("# dirty\n")
        cap("flake-metadata-dirty", nix.flake_metadata_argv(ref))
        git(repo, "checkout", "-q", "flake.nix")

        cap("query-outputs", nix.query_outputs_argv(drv["split"]))
        cap("query-outputs-absent", nix.query_outputs_argv(ABSENT + ".drv"))
        cap("check-validity", ["nix-store", "--check-validity", "--print-invalid", stable, ABSENT])
        cap("realise-built", nix.realise_argv(drv["noisy"]))
        cap("realise-present", nix.realise_argv(drv["noisy"]))
        cap("realise-failed", nix.realise_argv(drv["broken"]))
        cap("read-log", nix.read_log_argv(drv["broken"]))
        cap("read-log-absent", nix.read_log_argv(ABSENT + ".drv"))
        cap("realise-paths", nix.realise_paths_argv([stable, doc]))

        checked = [outs["noisy"]["out"], *outs["split"].values(), stable]
        remove_check_copies(checked)
        cap("check-rebuild-same", nix.check_rebuild_argv(drv["stable"]))
        cap("check-rebuild-differs", nix.check_rebuild_argv(drv["noisy"]))
        cap("check-rebuild-multi-output", nix.check_rebuild_argv(drv["split"]))
        remove_check_copies(checked)
        if args.local_store:
            local = {**nix.nix_env(), "NIX_REMOTE": "local"}
            cap("check-rebuild-differs-local-store", nix.check_rebuild_argv(drv["noisy"]), env=local)
            cap("realise-failed-local-store", nix.realise_argv(drv["broken"]), env=local)
            remove_check_copies(checked)
    print(f"captured into {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
