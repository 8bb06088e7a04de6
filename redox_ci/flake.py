"""One evaluation of the flake: every package of every system, in one ``nix eval``.

Evaluating attribute by attribute costs one Nix start-up and one flake fetch each;
the Redox flake has dozens of packages per system. Instead one ``nix eval --json
REF#packages --apply F`` call returns, per system and attribute, the derivation
path, output paths and whether the tests run. The function F also applies the
``doCheck`` override for host tools whose tests are off, so the derivation the
plan names is the one that is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import names, nix
from .errors import FlakeError

# An evaluation that takes longer is stuck on a fetch or in infinite recursion.
EVAL_TIMEOUT_SECONDS = 1800


def check_flake_ref(ref: str) -> str:
    """``ref`` if it follows ``names.FLAKE_REF``, else a FlakeError."""
    try:
        return names.FLAKE_REF.check(ref)
    except ValueError as e:
        raise FlakeError(str(e)) from None


def nix_string(s: str) -> str:
    """A Nix string literal for ``s``: backslash, quote and ``${`` escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


# Applied to the flake's `packages` output. `params` is {systems, checks, runners}.
APPLY_TEMPLATE = """packages: let
  params = builtins.fromJSON PARAMS;
  inspect = name: pkg:
    let
      probe = builtins.tryEval (builtins.isAttrs pkg && (pkg.type or null) == "derivation");
      isDrv = probe.success && probe.value;
      wantCheck = builtins.elem name params.checks;
      doCheck = pkg.doCheck or false;
      canForce = pkg ? overrideAttrs;
      forced = wantCheck && !doCheck && canForce;
      final = if forced then pkg.overrideAttrs (_: { doCheck = true; }) else pkg;
      drv = builtins.tryEval final.drvPath;
      outs = builtins.tryEval (map (o: { name = o; path = final.${o}.outPath; }) (final.outputs or [ "out" ]));
    in
      if builtins.elem name params.runners then { kind = "runner"; }
      else if !probe.success then { kind = "eval-error"; }
      else if !isDrv then { kind = "not-a-derivation"; }
      else {
        kind = "package";
        drv = if drv.success then drv.value else null;
        outputs = if outs.success then outs.value else [ ];
        doCheck = doCheck == true;
        inherit forced canForce;
      };
in builtins.listToAttrs (map (system: {
  name = system;
  value = if packages ? ${system} then builtins.mapAttrs inspect packages.${system} else null;
}) params.systems)
"""


@dataclass(frozen=True)
class EvalParams:
    systems: tuple[str, ...]
    checks: tuple[str, ...]
    runners: tuple[str, ...]


def apply_expression(params: EvalParams) -> str:
    payload = json.dumps({"systems": list(params.systems), "checks": list(params.checks),
                          "runners": list(params.runners)})
    return APPLY_TEMPLATE.replace("PARAMS", nix_string(payload))


def evaluate(ref: str, params: EvalParams) -> dict:
    """Run the one evaluation; return ``{system: {attr: info} | None}``."""
    return nix.eval_json(f"{check_flake_ref(ref)}#packages", apply=apply_expression(params),
                         what=f"evaluating {ref}", error=FlakeError, timeout=EVAL_TIMEOUT_SECONDS)


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
