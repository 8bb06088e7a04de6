"""The file-level comparison of two builds: manifests from real trees, then the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from redox_ci.repro.tree import Entry, diff_entries, diff_trees, scan_tree

pytestmark = pytest.mark.unit


def _tree(root: Path, files: dict[str, str], links: dict[str, str] = {}, modes: dict[str, int] = {}) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(modes.get(rel, 0o444))
    for rel, target in links.items():
        os.symlink(target, root / rel)
    return root


def _kinds(diffs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in diffs:
        out.setdefault(d.path, []).append(d.kind)
    return out


def test_identical_trees_have_no_difference(tmp_path):
    files = {"bin/tool": "#!/bin/sh\n", "share/doc/README": "hello\n"}
    a = _tree(tmp_path / "a", files, {"run": "bin/tool"})
    b = _tree(tmp_path / "b", files, {"run": "bin/tool"})
    assert diff_trees(scan_tree(a), scan_tree(b)) == []


def test_content_mode_symlink_added_removed_are_each_named(tmp_path):
    a = _tree(tmp_path / "a", {"same": "x", "stamp": "t=1", "bin/tool": "sh", "old": "gone"},
              {"link": "same"}, {"bin/tool": 0o555})
    b = _tree(tmp_path / "b", {"same": "x", "stamp": "t=2", "bin/tool": "sh", "new/file": "n"},
              {"link": "stamp"}, {"bin/tool": 0o444})
    kinds = _kinds(diff_trees(scan_tree(a), scan_tree(b)))
    assert kinds == {
        "stamp": ["content"],
        "bin/tool": ["mode"],
        "link": ["symlink"],
        "old": ["removed"],
        "new": ["added"],
        "new/file": ["added"],
    }


def test_type_change_is_one_difference(tmp_path):
    a = _tree(tmp_path / "a", {"thing": "file"})
    b = _tree(tmp_path / "b", {"thing/inner": "now a dir"})
    diffs = diff_trees(scan_tree(a), scan_tree(b))
    assert [(d.path, d.kind) for d in diffs] == [("thing", "type"), ("thing/inner", "added")]
    assert diffs[0].detail == "file -> dir"


def test_an_output_that_is_a_single_file(tmp_path):
    (tmp_path / "a").write_text("one")
    (tmp_path / "b").write_text("two")
    diffs = diff_trees(scan_tree(tmp_path / "a"), scan_tree(tmp_path / "b"))
    assert [(d.path, d.kind) for d in diffs] == [(".", "content")]


def test_content_detail_names_sizes_and_hashes():
    a = Entry("file", 0o444, size=3, sha256="a" * 64)
    b = Entry("file", 0o444, size=4, sha256="b" * 64)
    [d] = diff_entries("f", a, b)
    assert d.detail == f"3 bytes sha256:{'a' * 16} -> 4 bytes sha256:{'b' * 16}"


def test_content_and_mode_both_reported():
    a = Entry("file", 0o444, size=1, sha256="1" * 64)
    b = Entry("file", 0o555, size=1, sha256="2" * 64)
    assert [d.kind for d in diff_entries("f", a, b)] == ["content", "mode"]
    assert diff_entries("f", a, a) == []
