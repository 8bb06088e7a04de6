"""The signed S3 binary cache: push closures, ask what is cached, run a local server.

Worker half: no Buildbot here. The plan asks :func:`cached_paths`; the push step runs
``redox-ci cache push --json``, which calls :func:`push`.

The names below are loaded on first use: they import boto3, which every ``redox-ci``
start would otherwise pay for (a job's ``redox-ci build`` never talks to S3).
"""

import importlib

_LAZY = {
    "PushResult": "push", "UploadResult": "push", "cached_paths": "push", "list_keys": "push",
    "push": "push", "substituter_url": "push", "upload_files": "push",
    "CacheStatus": "status", "status": "status",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    # Importing submodule "push" (or "status") set this package's attribute of that name
    # to the module; the function of the same name is what callers want.
    for public, source in _LAZY.items():
        if source == _LAZY[name]:
            globals()[public] = getattr(module, public)
    return globals()[name]
