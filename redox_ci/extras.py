"""The optional parts of redox-ci, installed as ``pip install 'redox-ci[EXTRA]'``.

The base install is the worker half, the ``redox-ci`` command. A verb that needs more
says which extra is missing, instead of failing on an import (see pyproject.toml).
"""

from __future__ import annotations

import importlib.util

from .errors import UsageError

# Extra -> the modules redox-ci imports or runs from it.
MODULES = {
    "worker": ("buildbot_worker",),
    "master": ("buildbot", "flask"),
    "local": ("buildbot", "buildbot_worker", "moto", "werkzeug", "tomli_w"),
}


class MissingExtra(UsageError):
    """A verb needs an extra that is not installed (exit 2)."""


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` can be imported."""
    missing = [m for m in MODULES[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{what} needs the {extra!r} extra, which is not installed here "
                           f"(no {', '.join(missing)}): pip install 'redox-ci[{extra}]'")
