"""Reading settings.toml, and the inventory it names, into the models of ``config.py``.

One loader for the master and every verb, so that a file means the same everywhere:
``load`` takes the whole file (the master, ``redox-ci plan``), ``load_table`` one
table of it (a worker verb that needs only ``[cache]`` or ``[boot]``: a worker takes
the master's file, which the master has checked, and a worker one version behind
must not refuse a key the master has learnt). Both resolve the file's relative paths
beside it, once, here; nothing downstream resolves a path again.

Every problem is reported at once, one line each, ``file: key: message``, so that a
wrong setting stops the master with a sentence instead of a traceback half-way
through start-up. ``secrets_file.py`` reads the secrets file the same way.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .config import LoadedSettings, Settings, WorkerSpec
from .errors import ConfigError

SETTINGS_ENV = "REDOX_CI_SETTINGS"
DEFAULT_SETTINGS_NAME = "settings.toml"
# Table -> its key that names a file relative to the settings file.
PATH_KEYS = {"workers": "inventory", "cache": "secret_key_file", "secrets": "file"}

M = TypeVar("M", bound=BaseModel)


def settings_path(explicit: str | os.PathLike | None = None, basedir: Path | None = None) -> Path:
    """The file given, else ``$REDOX_CI_SETTINGS``, else settings.toml in ``basedir``."""
    return given_path(explicit) or (basedir or Path.cwd()) / DEFAULT_SETTINGS_NAME


def given_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The file given, else ``$REDOX_CI_SETTINGS``, else None: a verb then runs on defaults."""
    if explicit:
        return Path(explicit)
    return Path(os.environ[SETTINGS_ENV]) if os.environ.get(SETTINGS_ENV) else None


def read_toml(path: Path, what: str) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found (set {SETTINGS_ENV} or create it)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} file: {e.strerror}") from None


def error_lines(path: Path | str, err: ValidationError, prefix: str = "") -> list[str]:
    """One ``file: key: message`` line per problem; never the value (it may be a secret)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        key = prefix + loc if loc else prefix.rstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        lines.append(f"{path}: {key}: {msg}")
    return lines


def validate(model: type[M], data: object, path: Path | str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError("\n".join(error_lines(path, e, prefix))) from None


def _resolved(table: str, value: M, base: Path) -> M:
    key = PATH_KEYS.get(table)
    relative = getattr(value, key) if key else None
    if not relative:
        return value
    p = Path(relative).expanduser()
    return value.model_copy(update={key: str(p if p.is_absolute() else (base / p).resolve())})


def load(path: str | os.PathLike | None = None, *, basedir: Path | None = None,
         workers: bool = True) -> LoadedSettings:
    """The whole settings file, checked, with its relative paths resolved.

    ``path`` as ``settings_path`` finds it. ``workers=False`` on a worker host, which
    has the settings file but not the master's inventory.
    """
    p = settings_path(path, basedir).resolve()
    settings = validate(Settings, read_toml(p, "settings"), p)
    settings = settings.model_copy(update={
        name: _resolved(name, getattr(settings, name), p.parent) for name in PATH_KEYS})
    if not workers:
        return LoadedSettings(settings, p)
    found = load_inventory(Path(settings.workers.inventory)) if settings.workers.inventory \
        else list(settings.workers.worker)
    names = [w.name for w in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: workers: duplicate worker names {dupes}")
    if not found:
        raise ConfigError(f"{p}: workers: no workers; add [[workers.worker]] or [workers].inventory")
    return LoadedSettings(settings, p, found)


def load_table(model: type[M], path: str | os.PathLike | None) -> M:
    """One table of the settings file at ``path`` (None: the defaults), relative paths resolved."""
    name = next(n for n, f in Settings.model_fields.items() if f.annotation is model)
    if path is None:
        return model()
    p = Path(path).resolve()
    table = read_toml(p, "settings").get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: {name}: must be a table")
    return _resolved(name, validate(model, table, p, prefix=f"{name}."), p.parent)


def load_inventory(path: Path) -> list[WorkerSpec]:
    """The workers of a TOML inventory (see workers/inventory.toml)."""
    data = read_toml(path, "worker inventory")
    unknown = set(data) - {"worker"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}: the inventory holds [[worker]] tables")
    return [validate(WorkerSpec, w, path, prefix=f"worker[{i}].") for i, w in enumerate(data.get("worker", []))]
