"""The signed S3 binary cache: push closures, ask what is cached, run a local server.

Worker half: no Buildbot here. The plan asks ``push.cached_paths``; the push step runs
``redox-ci cache push --json``, which calls ``push.push``. ``stage`` signs and compresses
NARs, ``narinfo`` and ``keys`` are the formats, ``s3`` the client, ``status`` what a bucket
holds, ``reports`` the nightly reports in the bucket, ``localserver`` a local S3 (moto).
Import from the submodule (``from redox_ci.cache.push import push``): the package
imports nothing, so that ``redox-ci`` starts without boto3.
"""
