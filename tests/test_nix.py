"""redox_ci.nix: every parser against what Nix really printed, the argv builders, the runners.

The captures in tests/data/nix/2.26/ come from Nix 2.26.3 through its daemon, made by
tests/data/nix/capture.py (NAME.stdout, NAME.stderr, NAME.rc per command). Shapes of
other versions that no capture here covers are written from Nix's documented format
and named as such. One test per surprise, in the spirit of buildbot-nix's
test_nix_eval_job.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from redox_ci import nix
from redox_ci.errors import FlakeError, NixError, UsageError

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "nix" / "2.26"
ABSENT = "/nix/store/00000000000000000000000000000000-capture-absent"


@dataclass(frozen=True)
class Captured:
    rc: int
    stdout: str
    stderr: str


def captured(name: str) -> Captured:
    return Captured(int((DATA / f"{name}.rc").read_text()), (DATA / f"{name}.stdout").read_text(),
                    (DATA / f"{name}.stderr").read_text())


# The evaluation (flake.evaluate's own expression) names every derivation and output the
# other captures speak of.
PACKAGES = json.loads(captured("eval-packages").stdout)["packages"]
DRV = {a: i["drv"] for a, i in PACKAGES.items() if i.get("drv")}
OUT = {a: {o["name"]: o["path"] for o in i["outputs"]} for a, i in PACKAGES.items() if i.get("drv")}
STABLE, DEP = OUT["stable"]["out"], OUT["dep"]["out"]
SPLIT, DOC = OUT["split"]["out"], OUT["split"]["doc"]


# ---------------------------------------------------------------- nix path-info --json

def test_path_info_2_26_is_an_object_keyed_by_path_without_path_in_the_values():
    raw = json.loads(captured("path-info-one").stdout)
    assert list(raw) == [STABLE] and "path" not in raw[STABLE]
    [(path, info)] = nix.parse_path_info(captured("path-info-one").stdout).items()
    assert path == info.path == STABLE
    assert info.nar_hash.startswith("sha256-") and info.nar_size > 0
    assert info.references == (DEP,)  # full store paths, not base names
    assert info.signatures == () and info.deriver == DRV["stable"] and info.ca is None


def test_path_info_2_26_gives_null_for_an_invalid_path_and_exits_0():
    c = captured("path-info-several-invalid")
    assert c.rc == 0 and "don't know how to build these paths" in c.stderr
    infos = nix.parse_path_info(c.stdout)
    assert infos[ABSENT] is None
    assert {p for p, i in infos.items() if i} == {STABLE, SPLIT, DOC}
    assert infos[SPLIT].references == (DOC,) and infos[DOC].references == ()


def test_path_info_recursive_is_the_closure():
    infos = nix.parse_path_info(captured("path-info-recursive").stdout)
    assert set(infos) == {STABLE, DEP, SPLIT, DOC}
    assert all(r in infos for i in infos.values() for r in i.references)


def test_path_info_recursive_over_an_invalid_path_fails_naming_it():
    c = captured("path-info-recursive-invalid")
    assert c.rc == 1 and c.stdout == ""
    assert nix.parse_not_valid(c.stderr) == ABSENT
    assert nix.parse_not_valid(captured("query-outputs-absent").stderr) is None


# Nix <= 2.18, from its documented format (Store::pathInfoToJSON of 2.18): a list of
# objects carrying "path" and "valid"; "signatures" only when there are some; an
# invalid path is {"path": ..., "valid": false}. No 2.18 is installed here to capture it.
PATH_INFO_2_18_DOCUMENTED = json.dumps([
    {"path": STABLE, "valid": True, "narHash": "sha256-mkLTzNRYq9dFbMlE2RbsmO6hK5UOjYk6iB7HvqW5Um8=",
     "narSize": 336, "references": [DEP], "deriver": DRV["stable"], "registrationTime": 1795642289,
     "ultimate": True, "signatures": ["cache-1:c2lnbmF0dXJl"]},
    {"path": DEP, "valid": True, "narHash": "sha256-Ca3TQl4NmLCLERRAUfOak+J4kPEi7KQzCbpunkOZ9b8=",
     "narSize": 288, "references": []},
    {"path": ABSENT, "valid": False},
])


def test_path_info_2_18_list_shape_from_the_documented_format():
    infos = nix.parse_path_info(PATH_INFO_2_18_DOCUMENTED)
    assert infos[ABSENT] is None
    assert infos[STABLE].references == (DEP,) and infos[STABLE].nar_size == 336
    assert infos[STABLE].signatures == ("cache-1:c2lnbmF0dXJl",) and infos[DEP].signatures == ()
    # The same store object reads the same from either shape.
    modern = nix.parse_path_info(captured("path-info-one").stdout)[STABLE]
    assert (modern.nar_hash, modern.nar_size, modern.references) == \
        (infos[STABLE].nar_hash, infos[STABLE].nar_size, infos[STABLE].references)


def test_path_info_that_is_not_json_is_a_nix_error():
    with pytest.raises(NixError, match="nix path-info: nix printed no JSON"):
        nix.parse_path_info("error: something\n")
    with pytest.raises(NixError, match="unexpected JSON"):
        nix.parse_path_info('"a string"')


def test_hash_path_is_in_the_form_path_info_records():
    recorded = nix.parse_path_info(captured("path-info-one").stdout)[STABLE].nar_hash
    assert captured("hash-path").stdout.strip() == recorded


# ---------------------------------------------------------------- nix derivation show

def test_derivation_show_2_26():
    drvs = nix.parse_derivations(captured("derivation-show").stdout)
    assert set(drvs) == {DRV["stable"], DRV["split"]}
    split = drvs[DRV["split"]]
    assert split.name == "capture-split" and split.system == "x86_64-linux"
    assert split.outputs == {"out": SPLIT, "doc": DOC}
    assert split.builder.endswith("/busybox") and split.args[:2] == ("sh", "-c")
    # 2.26: an input derivation maps to {"outputs": [...], "dynamicOutputs": {}}
    assert drvs[DRV["stable"]].input_drvs == {DRV["dep"]: ("out",)}
    assert drvs[DRV["stable"]].input_srcs and drvs[DRV["stable"]].env["out"] == STABLE


def test_derivation_show_is_pretty_printed_and_recursive_adds_the_inputs():
    c = captured("derivation-show-recursive")
    assert c.stdout.startswith("{\n  ")  # 2.26 indents it, unlike path-info
    assert set(nix.parse_derivations(c.stdout)) == {DRV["stable"], DRV["dep"]}


def test_derivation_show_input_drvs_as_a_list_of_outputs_from_the_older_documented_format():
    data = json.loads(captured("derivation-show").stdout)
    data[DRV["stable"]]["inputDrvs"] = {DRV["dep"]: ["out"]}
    assert nix.parse_derivations(json.dumps(data))[DRV["stable"]].input_drvs == {DRV["dep"]: ("out",)}


# ---------------------------------------------------------------- nix build --json

def test_build_json_times_only_what_the_call_built():
    built = nix.parse_build_json(captured("build").stdout)
    assert [b.drv for b in built] == [DRV["dep"], DRV["stable"], DRV["split"]]
    assert all(b.start_time and b.stop_time >= b.start_time for b in built)
    # The default output only, unless asked for more (split^*).
    assert built[2].outputs == {"out": SPLIT}
    [present] = nix.parse_build_json(captured("build-present").stdout)
    assert present.outputs == {"out": STABLE} and present.start_time is None is present.stop_time
    [every] = nix.parse_build_json(captured("build-all-outputs").stdout)
    assert every.outputs == {"out": SPLIT, "doc": DOC}


def test_failed_build_json_prints_nothing():
    c = captured("build-failed")
    assert c.rc == 1 and c.stdout == ""
    with pytest.raises(NixError, match="nix build: nix printed no JSON"):
        nix.parse_build_json(c.stdout)
    assert nix.log_tail(c.stderr).splitlines()[-1].strip() == f"nix log {DRV['broken']}"


# ---------------------------------------------------------------- nix eval

def test_eval_json_of_the_plan_expression():
    evaluation = nix.parse_json(captured("eval-packages").stdout, what="evaluating")
    assert evaluation["checks"] is None  # an output the flake lacks
    assert evaluation["packages"]["unevaluable"] == {"kind": "eval-error"}  # tryEval: no message
    assert PACKAGES["stable"]["forced"] is False and PACKAGES["stable"]["plainDrv"] == DRV["stable"]
    assert PACKAGES["split"]["outputs"] == [{"name": "out", "path": SPLIT}, {"name": "doc", "path": DOC}]
    assert captured("eval-raw-drv-path").stdout == DRV["stable"]  # --raw: no newline
    with pytest.raises(FlakeError, match="evaluating x: nix printed no JSON"):
        nix.parse_json("", what="evaluating x", error=FlakeError)


def test_eval_error_of_a_throw_keeps_the_message_after_the_trace():
    c = captured("eval-error-throw")
    short = nix.shorten_error(c.stderr)
    assert c.rc == 1 and short.startswith("error:")
    assert "does not evaluate on purpose" in short and "flake.nix:22" in short


def test_eval_message_is_the_last_error_and_where_the_flake_threw():
    # Without --show-trace a frame may stop short of the flake; with it the throw is there.
    assert nix.eval_message(captured("eval-error-throw").stderr) == "does not evaluate on purpose (flake.nix:22:21)"
    assert nix.eval_message(captured("eval-error-throw-trace").stderr) == \
        "does not evaluate on purpose (flake.nix:22:21)"
    assert nix.eval_message(captured("eval-error-not-a-flake").stderr) == "could not find a flake.nix file"
    # A message with its own position, then source lines: the source is left out.
    own = ("error: undefined variable 'fstools'\n       at /nix/store/" + "c" * 32 + "-source/flake.nix:210:84:\n"
           "          209|             fstools = simple \"fstools\" [ ];\n")
    assert nix.eval_message(own) == "undefined variable 'fstools' (flake.nix:210:84)"
    assert len(nix.eval_message("error: " + "x" * 1000)) == nix.EVAL_MESSAGE_CHARS


def test_out_of_memory_by_its_message_or_a_signal():
    def proc(rc, err):
        return subprocess.CompletedProcess([], rc, "", err)
    assert nix.out_of_memory(proc(1, "GC Warning: Out of Memory! Heap size: 820 MiB. Returning NULL!\n"
                                     "error: out of memory\n"))
    assert nix.out_of_memory(proc(-6, "terminate called after throwing an instance of 'std::bad_alloc'"))
    assert not nix.out_of_memory(proc(1, "GC Warning: Failed to expand heap by 393216 KiB\nerror: it broke"))


def test_extra_platforms_from_either_command():
    assert nix.parse_config_value(captured("config-show-extra-platforms").stdout) == ["aarch64-linux"]
    assert nix.parse_config_value(captured("show-config").stdout, "extra-platforms") == ["aarch64-linux"]
    assert nix.parse_config_value("platforms = x\n", "extra-platforms") == []


def test_memory_limit_applies_to_the_command():
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"
    assert nix.run_status([sys.executable, "-c", code], what="t", memory_mb=512).stdout.strip() == str(512 << 20)


def test_eval_error_lines_before_error_are_dropped():
    c = captured("eval-error-not-a-flake")
    assert "searching up" in c.stderr
    assert nix.shorten_error(c.stderr) == "error: could not find a flake.nix file"
    missing = nix.shorten_error(captured("eval-error-missing-attr").stderr)
    assert missing.startswith("error: flake ") and "does not provide attribute" in missing


# ---------------------------------------------------------------- nix flake metadata

def test_flake_metadata_of_a_clean_tree_has_the_revision():
    meta = nix.parse_flake_metadata(captured("flake-metadata-clean").stdout)
    assert len(meta.revision) == 40 and meta.dirty_revision is None
    assert meta.url.startswith("git+file://") and f"rev={meta.revision}" in meta.url
    assert meta.store_path.startswith("/nix/store/") and meta.description.startswith("redox-ci")


def test_flake_metadata_of_a_dirty_tree_has_only_a_dirty_revision():
    c = captured("flake-metadata-dirty")
    assert "is dirty" in c.stderr and "revision" not in json.loads(c.stdout)
    meta = nix.parse_flake_metadata(c.stdout)
    clean = nix.parse_flake_metadata(captured("flake-metadata-clean").stdout)
    assert meta.revision is None and meta.dirty_revision == clean.revision + "-dirty"


def test_flake_metadata_revision_from_locked_rev_when_nix_gives_no_revision():
    data = json.loads(captured("flake-metadata-clean").stdout)
    rev = data.pop("revision")
    assert nix.parse_flake_metadata(json.dumps(data)).revision == rev


# ---------------------------------------------------------------- nix-store

def test_store_queries_print_one_path_a_line():
    assert sorted(nix.parse_paths(captured("query-outputs").stdout)) == sorted([SPLIT, DOC])
    assert nix.parse_paths(captured("check-validity").stdout) == [ABSENT]
    assert nix.parse_paths(captured("realise-built").stdout) == [OUT["noisy"]["out"]]
    assert nix.parse_paths(captured("realise-present").stdout) == [OUT["noisy"]["out"]]
    assert nix.parse_paths(captured("realise-paths").stdout) == [STABLE, DOC]


def test_a_realisation_says_whether_it_built():
    """redox-ci build's one nix-store --realise: Nix 2.26's own words, built then present."""
    from redox_ci.build import did_work
    drv, outs = DRV["noisy"], [OUT["noisy"]["out"]]
    assert did_work(captured("realise-built").stderr, drv, outs)
    assert not did_work(captured("realise-present").stderr, drv, outs)


def test_read_log_and_its_absence():
    assert captured("read-log").stdout == "fails on purpose\n"
    c = captured("read-log-absent")
    assert c.rc == 1 and "is not available" in c.stderr


def test_a_failed_build_exits_1_through_the_daemon_and_100_from_a_local_store():
    daemon, local = captured("realise-failed"), captured("realise-failed-local-store")
    assert (daemon.rc, local.rc) == (1, 100)
    for c in (daemon, local):
        assert nix.rebuild_verdict(c.rc, c.stderr).verdict is nix.Rebuild.FAILED
        assert "failed with exit code 3" in nix.log_tail(c.stderr)


# ---------------------------------------------------------------- --check rebuilds

def test_check_rebuild_identical():
    c = captured("check-rebuild-same")
    check = nix.rebuild_verdict(c.rc, c.stderr)
    assert check.verdict is nix.Rebuild.SAME and check.differing == {}


def test_check_rebuild_difference_through_the_daemon_exits_1_and_is_told_by_the_message():
    c = captured("check-rebuild-differs")
    assert c.rc == 1  # not 104: the daemon protocol does not carry the status
    check = nix.rebuild_verdict(c.rc, c.stderr)
    noisy = OUT["noisy"]["out"]
    assert check.verdict is nix.Rebuild.DIFFERS and check.differing == {noisy: noisy + ".check"}


def test_check_rebuild_difference_from_a_local_store_exits_104():
    c = captured("check-rebuild-differs-local-store")
    assert c.rc == 104
    assert nix.not_deterministic_status(c.rc)
    assert nix.rebuild_verdict(c.rc, "").verdict is nix.Rebuild.DIFFERS


def test_check_rebuild_of_a_multi_output_derivation_names_the_first_differing_output():
    c = captured("check-rebuild-multi-output")
    check = nix.rebuild_verdict(c.rc, c.stderr)
    assert check.verdict is nix.Rebuild.DIFFERS and check.differing == {DOC: DOC + ".check"}


@pytest.mark.parametrize("status,differs", [
    (100, False),  # 0x60 | 0x04: a build failed
    (101, False),  # timed out
    (102, False),  # hash mismatch
    (104, True),  # 0x60 | 0x08: not deterministic
    (108, True),  # a build failed and another was not deterministic (--keep-going)
    (109, True),
    (1, False), (2, False), (4, False), (112, False), (120, False),
])
def test_local_store_status_bits(status, differs):
    """Nix's Worker::failingExitStatus: 0x60 | bits, 0x08 meaning 'not deterministic'."""
    assert nix.not_deterministic_status(status) is differs


def test_exit_1_without_the_message_is_a_failed_rebuild():
    assert nix.rebuild_verdict(1, "error: cannot connect to the daemon\n").verdict is nix.Rebuild.FAILED


# ---------------------------------------------------------------- versions

@pytest.mark.parametrize("text,version", [
    (captured("version").stdout, (2, 26, 3)),
    # Other builds' wording, from their documented --version lines:
    ("nix (Nix) 2.18.1\n", (2, 18, 1)),
    ("nix (Nix) 2.8.0\n", (2, 8, 0)),
    ("nix (Lix, like Nix) 2.91.1\n", (2, 91, 1)),
    ("nix (Determinate Nix 3.6.2) 2.29.0\n", (2, 29, 0)),
    ("nix (Nix) 2.24pre20240101_dirty\n", (2, 24, 0)),
    ("", None), ("nix\n", None),
])
def test_parse_version(text, version):
    assert nix.parse_version(text) == version


def test_nix_older_than_2_18_is_refused_with_a_reason():
    assert nix.version_problem((2, 26, 3)) is None and nix.version_problem((2, 18, 0)) is None
    assert nix.version_problem(None) is None
    problem = nix.version_problem((2, 8, 0))
    assert "Nix 2.8.0, older than 2.18" in problem and "install Nix >= 2.18" in problem
    assert "2.17.9, older than 2.18" in nix.version_problem((2, 17, 9))


# ---------------------------------------------------------------- argv builders

DRV_PATH = DRV["stable"]


def test_argv_builders():
    assert nix.eval_json_argv("f#packages", "x: x") == \
        ["nix", "eval", "--json", "--no-write-lock-file", "f#packages", "--apply", "x: x"]
    assert nix.eval_json_argv("f#.", "x: x", show_trace=True) == \
        ["nix", "eval", "--json", "--no-write-lock-file", "--show-trace", "f#.", "--apply", "x: x"]
    assert nix.outputs_installable("git+file:///r?rev=abc") == "git+file:///r?rev=abc#."
    assert nix.config_show_argv("extra-platforms") == ["nix", "config", "show", "extra-platforms"]
    assert nix.eval_raw_argv("f#p", "p: p.drvPath") == \
        ["nix", "eval", "--raw", "--no-write-lock-file", "f#p", "--apply", "p: p.drvPath"]
    assert nix.flake_metadata_argv("github:o/r") == \
        ["nix", "flake", "metadata", "--json", "--no-write-lock-file", "github:o/r"]
    assert nix.path_info_argv([STABLE]) == ["nix", "path-info", "--json", STABLE]
    assert nix.path_info_argv([STABLE], recursive=True) == ["nix", "path-info", "--json", "--recursive", STABLE]
    assert nix.derivation_show_argv([DRV_PATH]) == ["nix", "derivation", "show", DRV_PATH]
    assert nix.build_json_argv(["f#a"]) == ["nix", "build", "--no-link", "--json", "f#a"]
    assert nix.realise_argv(DRV_PATH) == ["nix-store", "--realise", "--no-gc-warning", DRV_PATH]
    assert nix.realise_paths_argv([STABLE, DOC]) == ["nix-store", "--realise", STABLE, DOC]
    assert nix.check_rebuild_argv(DRV_PATH) == ["nix-store", "--realise", "--check", "--keep-failed", DRV_PATH]
    assert nix.query_outputs_argv(DRV_PATH) == ["nix-store", "--query", "--outputs", DRV_PATH]
    assert nix.read_log_argv(DRV_PATH) == ["nix-store", "--read-log", DRV_PATH]
    assert nix.hash_path_argv(STABLE) == ["nix", "hash", "path", "--type", "sha256", "--sri", STABLE]
    assert nix.copy_argv("file:///s", [STABLE]) == ["nix", "copy", "--no-recursive", "--to", "file:///s", STABLE]
    assert nix.generate_secret_argv("ci-1") == ["nix", "key", "generate-secret", "--key-name", "ci-1"]
    assert nix.convert_to_public_argv() == ["nix", "key", "convert-secret-to-public"]
    assert nix.version_argv() == ["nix", "--version"]


@pytest.mark.parametrize("build", [
    lambda: nix.eval_json_argv("--impure"),
    lambda: nix.flake_metadata_argv("-f"),
    lambda: nix.path_info_argv(["/tmp/x"]),
    lambda: nix.path_info_argv(["--all"]),
    lambda: nix.realise_paths_argv([STABLE, "-v"]),
    lambda: nix.realise_argv(STABLE),  # an output, not a .drv
    lambda: nix.check_rebuild_argv("/nix/store/short-x.drv"),
    lambda: nix.generate_secret_argv(""),
])
def test_argv_builders_refuse_what_nix_would_read_as_an_option_or_what_is_not_a_store_path(build):
    with pytest.raises(UsageError):
        build()


# ---------------------------------------------------------------- runners

def test_run_returns_output_and_raises_a_short_error(monkeypatch):
    assert nix.run([sys.executable, "-c", "print('ok')"], what="t").stdout == "ok\n"
    monkeypatch.setattr(nix, "nix_version", lambda: (2, 26, 3))
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('noise\\nerror: it broke\\n'); sys.exit(1)"]
    with pytest.raises(FlakeError) as err:
        nix.run(failing, what="evaluating x", error=FlakeError)
    assert str(err.value) == "evaluating x failed:\nerror: it broke"
    monkeypatch.setattr(nix, "nix_version", lambda: (2, 8, 0))
    with pytest.raises(NixError, match=r"it broke\n\(this is Nix 2.8.0, older than 2.18"):
        nix.run(failing, what="t")


def test_run_without_nix_says_to_install_it():
    with pytest.raises(NixError, match="t: nix-that-is-not-there not found; install Nix >= 2.18"):
        nix.run(["nix-that-is-not-there"], what="t")
    with pytest.raises(NixError, match="not found"):
        nix.run_streaming(["nix-that-is-not-there"], what="t")


def test_run_status_returns_a_failure_as_an_answer():
    proc = nix.run_status([sys.executable, "-c", "import sys; sys.exit(3)"], what="t")
    assert proc.returncode == 3


def test_run_streaming_passes_the_log_on_and_keeps_it(capfd):
    script = ("import sys\nfor i in range(3): print(f'log {i}', file=sys.stderr, flush=True)\n"
              "print('/nix/store/x'); sys.exit(104)")
    proc = nix.run_streaming([sys.executable, "-c", script], what="t")
    assert (proc.returncode, proc.stdout) == (104, "/nix/store/x\n")
    assert proc.stderr == "log 0\nlog 1\nlog 2\n"
    assert capfd.readouterr().err == proc.stderr


def test_run_streaming_sets_tmpdir(tmp_path):
    proc = nix.run_streaming([sys.executable, "-c", "import os; print(os.environ['TMPDIR'])"], what="t",
                             tmpdir=str(tmp_path))
    assert proc.stdout.strip() == str(tmp_path)
