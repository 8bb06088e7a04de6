"""The master half: Buildbot glue that runs ``redox-ci`` verbs on workers.

The only package that imports Buildbot. It knows nothing of Nix internals: steps
run the worker-half command with ``--json`` and turn its answer into step
summaries, build properties and logs.
"""
