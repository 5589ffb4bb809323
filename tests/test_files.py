"""taxoclip.files: the one atomic-replace mechanism (files, groups of files, folders)."""

from __future__ import annotations

import os
import time

import pytest

from taxoclip.files import (
    remove_stale_temps,
    replacing,
    replacing_dir,
    replacing_files,
    temp_sibling,
    write_text_atomic,
)


def test_a_file_is_replaced_only_when_writing_succeeds(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), replacing(target, durable=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    with replacing(target, durable=True) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".a.txt.")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_several_files_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ValueError), replacing_files() as temp_for:
        temp_for(a).write_text("a")
        temp_for(b).write_text("b")
        raise ValueError
    assert list(tmp_path.iterdir()) == []
    with replacing_files() as temp_for:
        temp_for(a).write_text("a")
        assert not a.exists()  # nothing is renamed before the block ends
        temp_for(b).write_text("b")
    assert (a.read_text(), b.read_text()) == ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_folder_is_built_beside_its_place(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyError), replacing_dir(out) as tmp:
        (tmp / "x").write_text("x")
        raise KeyError
    assert list(tmp_path.iterdir()) == []
    out.mkdir()  # an empty folder may be replaced
    with replacing_dir(out) as tmp:
        (tmp / "x").write_text("x")
    assert [p.name for p in out.iterdir()] == ["x"]
    with pytest.raises(OSError), replacing_dir(out) as tmp:  # a full one may not
        (tmp / "y").write_text("y")
    assert [p.name for p in out.iterdir()] == ["x"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_only_old_temporaries_of_the_path_are_removed(tmp_path):
    target = tmp_path / "f[1].bin"
    old, young = temp_sibling(target), temp_sibling(target)
    other = temp_sibling(tmp_path / "g.bin")
    for path in (old, young, other, target):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(other, (an_hour_ago, an_hour_ago))
    assert remove_stale_temps(target, older_than=60) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (young, other, target)
    )
