"""redox-ci: Buildbot CI/CD for the RedoxOS Nix flake.

The package has two halves: the worker half (``redox-ci`` command: plan, build,
cache, boot, repro) that knows nothing of Buildbot, and ``redox_ci.master``, the
Buildbot glue that runs it. ``redox-ci local`` starts both on one machine (the
``local`` extra).
"""
