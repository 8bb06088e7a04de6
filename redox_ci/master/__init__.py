"""The master half: Buildbot glue that runs ``redox-ci`` verbs on workers.

The only package that imports Buildbot. Steps run the worker-half command
(``redox-ci --json-out FILE VERB``) and turn its answer into step summaries, build
properties and logs; Nix's command lines and output belong to the worker half, with
one exception: before ``redox-ci boot`` runs, the boot builder fetches the image and
bootloader into the worker's store with ``nix-store --realise`` (``boot.py``; its
argv comes from ``redox_ci.nix``).
"""
