"""One evaluation of the flake per system: every package and check, each on its own.

Evaluating attribute by attribute costs one Nix start-up, one flake fetch and (on the
real flake) several nixpkgs imports each. Instead one ``nix eval --json REF#. --apply F``
per system returns, for every attribute of the planned outputs (``packages``,
``checks``), its derivation, outputs and whether its tests run. F also applies the
``doCheck`` override for host tools whose tests are off, so the derivation the plan
names is the one that is built, and it recognises runner scripts by their derivation
(writeShellScriptBin's ``executable = true``, ``destination = "/bin/<name>"``) without
evaluating their ``drvPath``.

Each attribute is evaluated inside ``builtins.tryEval``, so a ``throw`` (many on
aarch64-linux) sinks only that attribute. tryEval gives no message and does not catch
every error (a failed import-from-derivation build, a missing attribute, ``abort``):

* an attribute tryEval caught gets its message from a ``nix eval`` of its own
  (``[plan].error_messages`` of them per system: each is a whole evaluation);
* when an uncaught error sinks the one evaluation, the attributes are evaluated again in
  halves, and halves of those, until each failing attribute stands alone with its
  message (about 2·log2(n) evaluations per failing attribute).

A system's evaluation has a time limit and a memory limit (``[plan].eval_timeout``,
``eval_memory_mb``, the latter as RLIMIT_AS of ``nix eval``); exceeding either fails the
plan with a sentence saying which.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import names, nix
from .errors import FlakeError

# An evaluation that takes longer is stuck on a fetch or in infinite recursion.
EVAL_TIMEOUT_SECONDS = 1800
# The outputs a plan may take; legacyPackages, apps and devShells are never built.
PLANNED_OUTPUTS = ("packages", "checks")


class EvalLimitError(FlakeError):
    """A system's evaluation went past its time or memory limit: the plan fails."""


def check_flake_ref(ref: str) -> str:
    """``ref`` if it follows ``names.FLAKE_REF``, else a FlakeError."""
    try:
        return names.FLAKE_REF.check(ref)
    except ValueError as e:
        raise FlakeError(str(e)) from None


def nix_string(s: str) -> str:
    """A Nix string literal for ``s``: backslash, quote and ``${`` escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def glob_regex(pattern: str) -> str:
    """An fnmatch pattern (``*``, ``?``, ``[...]``, ``[!...]``) as a POSIX regular
    expression for ``builtins.match``, which matches the whole name."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2:]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1:j]
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = j
        else:
            out.append("[" + c + "]" if not c.isalnum() and c != "_" else c)
        i += 1
    return "".join(out)


# Applied to the flake's outputs for one system. PARAMS: {system, outputs, checks,
# runners, runnerRegexes, only: null | {output: [names]}}.
APPLY_TEMPLATE = """outputs: let
  params = builtins.fromJSON PARAMS;
  system = params.system;
  ok = r: r.success && r.value;
  strictly = v: builtins.deepSeq v v;
  runnerName = name: builtins.elem name params.runners
    || builtins.any (re: builtins.match re name != null) params.runnerRegexes;
  inspect = name: pkg:
    let
      probe = builtins.tryEval (builtins.isAttrs pkg && (pkg.type or null) == "derivation");
      # writeTextFile (writeShellScriptBin): executable = true, destination = "/bin/<name>".
      script = ok (builtins.tryEval ((pkg.executable or false) == true
        && builtins.isString (pkg.destination or null)
        && builtins.substring 0 5 pkg.destination == "/bin/"));
      doCheck = ok (builtins.tryEval ((pkg.doCheck or false) == true));
      canForce = pkg ? overrideAttrs;
      forced = builtins.elem name params.checks && !doCheck && canForce;
      final = if forced then pkg.overrideAttrs (_: { doCheck = true; }) else pkg;
      plain = builtins.tryEval pkg.drvPath;
      drv = if forced then builtins.tryEval final.drvPath else plain;
      outs = builtins.tryEval (strictly
        (map (o: { name = o; path = final.${o}.outPath; }) (final.outputs or [ "out" ])));
    in
      if runnerName name then { kind = "runner"; script = false; }
      else if !probe.success then { kind = "eval-error"; }
      else if !probe.value then { kind = "not-a-derivation"; }
      else if script then { kind = "runner"; script = true; destination = pkg.destination; }
      else if !(plain.success && drv.success && outs.success) then { kind = "eval-error"; }
      else {
        kind = "package";
        plainDrv = plain.value;
        drv = drv.value;
        outputs = outs.value;
        inherit doCheck forced canForce;
      };
  of = out:
    if outputs ? ${out} && outputs.${out} ? ${system} then
      let
        set = outputs.${out}.${system};
        names = if params.only == null then builtins.attrNames set
                else builtins.filter (n: set ? ${n}) (params.only.${out} or [ ]);
      in builtins.listToAttrs (map (n: { name = n; value = inspect n set.${n}; }) names)
    else null;
in builtins.listToAttrs (map (out: { name = out; value = of out; }) params.outputs)
"""

# The names of each planned output of one system (null: the flake lacks the output).
NAMES_TEMPLATE = """outputs: let
  params = builtins.fromJSON PARAMS;
in builtins.listToAttrs (map (out: {
  name = out;
  value = if outputs ? ${out} && outputs.${out} ? ${params.system}
          then builtins.attrNames outputs.${out}.${params.system} else null;
}) params.outputs)
"""

# One attribute without tryEval, so that its error is Nix's own message.
MESSAGE_TEMPLATE = """outputs: let
  params = builtins.fromJSON PARAMS;
  pkg = outputs.${params.output}.${params.system}.${params.name};
in builtins.deepSeq (map (o: pkg.${o}.outPath) (pkg.outputs or [ "out" ])) pkg.drvPath
"""


@dataclass(frozen=True)
class EvalParams:
    systems: tuple[str, ...]
    checks: tuple[str, ...] = ()
    runners: tuple[str, ...] = ()
    runner_patterns: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("packages",)
    # Only these names (of every output), e.g. `redox-ci plan --attrs`; None: all.
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EvalLimits:
    timeout: float = EVAL_TIMEOUT_SECONDS
    memory_mb: int | None = None
    # Attributes that tryEval caught whose message is asked for, per system.
    error_messages: int = 20


def _expression(template: str, payload: dict) -> str:
    return template.replace("PARAMS", nix_string(json.dumps(payload)))


def apply_expression(params: EvalParams, system: str, only: dict[str, list[str]] | None = None) -> str:
    if only is None and params.only is not None:
        only = {out: list(params.only) for out in params.outputs}
    return _expression(APPLY_TEMPLATE, {
        "system": system, "outputs": list(params.outputs), "checks": list(params.checks),
        "runners": list(params.runners), "runnerRegexes": [glob_regex(p) for p in params.runner_patterns],
        "only": only})


class _SystemEval:
    """The evaluations of one system, against one deadline."""

    def __init__(self, ref: str, system: str, params: EvalParams, limits: EvalLimits):
        self.ref, self.system, self.params, self.limits = ref, system, params, limits
        self.deadline = time.monotonic() + limits.timeout
        self.started = time.monotonic()
        self.processes = 0

    def run(self, apply: str, what: str, show_trace: bool = False):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._timed_out()
        self.processes += 1
        try:
            proc = nix.eval_json_status(nix.outputs_installable(self.ref), apply=apply, what=what,
                                        error=EvalLimitError, timeout=left, memory_mb=self.limits.memory_mb,
                                        show_trace=show_trace)
        except EvalLimitError as e:
            if "timed out" in str(e):
                raise self._timed_out() from None
            raise
        if proc.returncode != 0 and self.limits.memory_mb and nix.out_of_memory(proc):
            raise EvalLimitError(
                f"evaluating {self.system} ran out of memory: it needs more than the limit of "
                f"{self.limits.memory_mb} MiB ([plan].eval_memory_mb); flake {self.ref}; "
                f"Nix said: {nix.eval_message(proc.stderr)}")
        return proc

    def _timed_out(self) -> EvalLimitError:
        # The limit before the (long) flake reference: a step summary is cut at 200 characters.
        return EvalLimitError(f"evaluating {self.system} took longer than the limit of "
                              f"{self.limits.timeout:.0f} s ([plan].eval_timeout); flake {self.ref}")

    def parse(self, proc, what: str) -> dict:
        return nix.parse_json(proc.stdout, what=what, error=FlakeError)

    def evaluate(self) -> dict:
        what = f"evaluating {self.system} of {self.ref}"
        proc = self.run(apply_expression(self.params, self.system), what)
        if proc.returncode == 0:
            result = self.parse(proc, what)
        else:
            result = self.split(nix.eval_message(proc.stderr))
        if "error" not in result:
            self.fill_messages(result)
        result["stats"] = {"seconds": round(time.monotonic() - self.started, 2), "evaluations": self.processes}
        return result

    def split(self, first_error: str) -> dict:
        """The one evaluation failed: find the attributes that fail, each with its message."""
        what = f"listing the attributes of {self.system} of {self.ref}"
        proc = self.run(_expression(NAMES_TEMPLATE, {"system": self.system, "outputs": list(self.params.outputs)}),
                        what)
        if proc.returncode != 0:
            return {"error": nix.eval_message(proc.stderr)}
        listing = self.parse(proc, what)
        result: dict = {out: (None if listing.get(out) is None else {}) for out in self.params.outputs}
        items = [(out, n) for out, found in listing.items() if found is not None for n in found
                 if self.params.only is None or n in self.params.only]
        for (out, name), info in self.bisect(items).items():
            result[out][name] = info
        # Nix's first word on it, for the plan's log: the halves tell the attributes apart.
        result["split"] = first_error
        return result

    def bisect(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        if not items:
            return {}
        only: dict[str, list[str]] = {}
        for out, name in items:
            only.setdefault(out, []).append(name)
        what = f"evaluating {len(items)} attributes of {self.system} of {self.ref}"
        proc = self.run(apply_expression(self.params, self.system, only), what)
        if proc.returncode == 0:
            data = self.parse(proc, what)
            return {(out, n): info for out, found in data.items() if found for n, info in found.items()}
        if len(items) == 1:
            proc = self.run(apply_expression(self.params, self.system, only), what, show_trace=True)
            return {items[0]: {"kind": "eval-error", "error": nix.eval_message(proc.stderr)}}
        mid = len(items) // 2
        return {**self.bisect(items[:mid]), **self.bisect(items[mid:])}

    def fill_messages(self, result: dict) -> None:
        """Ask Nix for the message of each attribute tryEval caught, as many as allowed."""
        failing = [(out, n, info) for out, found in result.items() if isinstance(found, dict)
                   for n, info in sorted(found.items()) if info.get("kind") == "eval-error" and "error" not in info]
        for i, (out, name, info) in enumerate(failing):
            if i >= self.limits.error_messages:
                info["error_unknown"] = (f"its message was not asked for: only the first {self.limits.error_messages} "
                                         "are, one evaluation each ([plan].error_messages)")
                continue
            payload = {"system": self.system, "output": out, "name": name}
            try:
                proc = self.run(_expression(MESSAGE_TEMPLATE, payload), f"evaluating {out}.{self.system}.{name}",
                                show_trace=True)
            except EvalLimitError as e:
                info["error_unknown"] = f"its message was not asked for: {e}"
                continue
            info["error"] = nix.eval_message(proc.stderr) if proc.returncode != 0 else \
                "tryEval failed, but it evaluates on its own (an error inside tryEval that Nix does not catch)"


def evaluate(ref: str, params: EvalParams, limits: EvalLimits = EvalLimits()) -> dict:
    """Evaluate every system; return ``{system: {output: {attr: info} | None, "stats": ...}}``,
    or ``{system: {"error": message, ...}}`` for a system whose outputs do not evaluate at
    all. A FlakeError when no system evaluates (the flake itself is broken)."""
    check_flake_ref(ref)
    out = {system: _SystemEval(ref, system, params, limits).evaluate() for system in params.systems}
    broken = {s: r["error"] for s, r in out.items() if "error" in r}
    if broken and len(broken) == len(out):
        raise FlakeError(f"evaluating {ref} failed:\n" + "\n".join(f"{s}: {m}" for s, m in broken.items()))
    return out


def flake_ref_for(repo: str, branch: str | None = None, rev: str | None = None) -> str:
    """The flake reference of ``repo`` (a path, git URL or flake ref) at a branch/revision.

    Branch and revision follow ``names``: a revision is all 40 hex digits.
    """
    try:
        branch = names.BRANCH.check(branch) if branch else None
        rev = names.REVISION.check(rev) if rev else None
    except ValueError as e:
        raise FlakeError(str(e)) from None
    if repo.startswith("/"):
        base = f"git+file://{repo}"
    elif repo.startswith(("http://", "https://", "ssh://", "file://")):
        base = f"git+{repo}"
    else:
        base = repo
    query = [f"ref={branch}"] if branch and not (rev and base.startswith("github:")) else []
    if rev:
        query.append(f"rev={rev}")
    if not query:
        return check_flake_ref(base)
    sep = "&" if "?" in base else "?"
    return check_flake_ref(base + sep + "&".join(query))
