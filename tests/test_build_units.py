"""What ``redox-ci build`` reads from one ``nix-store --realise``: built or already there."""

from __future__ import annotations

import pytest

from redox_ci.build import did_work

pytestmark = pytest.mark.unit

DRV = "/nix/store/7qsn2060yjy436011iyv7ihh7g9g5adn-t.drv"
OUT = "/nix/store/xq41121is6i8pi8slmpvnna28cs9zgd8-t"
DEP = "/nix/store/00000000000000000000000000000000-dep.drv"


def test_a_built_derivation_is_named_in_nix_s_plan():
    stderr = f"this derivation will be built:\n  {DRV}\nbuilding '{DRV}'...\nhi\n"
    assert did_work(stderr, DRV, [OUT])


def test_a_substituted_output_is_named_in_nix_s_plan():
    stderr = f"this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):\n  {OUT}\ncopying path '{OUT}'\n"
    assert did_work(stderr, DRV, [OUT])


def test_nothing_printed_means_already_built():
    assert not did_work("", DRV, [OUT])
    assert not did_work("warning: unknown setting 'foo'\n", DRV, [OUT])


def test_only_a_dependency_built_is_not_this_job_built():
    # Nix would have listed the job's own derivation if its outputs were missing.
    assert not did_work(f"these 1 derivations will be built:\n  {DEP}\n", DRV, [OUT])


def test_a_log_line_naming_the_path_unindented_does_not_count():
    assert not did_work(f"{OUT}\nsomething about {DRV}\n", DRV, [OUT])
