"""The signed S3 binary cache: push closures, ask what is cached, run a local server.

Worker half: no Buildbot here. The plan asks :func:`cached_paths`; the push step runs
``redox-ci cache push --json``, which calls :func:`push`.
"""

from .push import PushResult, UploadResult, cached_paths, list_keys, push, substituter_url, upload_files
from .status import CacheStatus, status

__all__ = ["PushResult", "UploadResult", "CacheStatus", "cached_paths", "list_keys", "push", "status",
           "substituter_url", "upload_files"]
