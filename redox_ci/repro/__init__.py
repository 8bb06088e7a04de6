"""Nightly reproducibility: rebuild each attribute, compare bit for bit, explain, report.

``run.run_repro`` is the entry point (the ``repro`` verb is its face):
``compare`` rebuilds and judges one attribute, ``tree`` names the differing files,
``diffoscope`` explains them within bounds, ``report`` writes a night's directory
(``summary.json``, ``index.html``, ``diffoscope/``) and ``history`` turns the nights'
summaries into the page that says which attribute became unreproducible on which
commit. Nothing here imports Buildbot; ``redox-ci repro --upload`` sends the report to
the cache's bucket through ``redox_ci.cache`` (``cli.py``).
"""
