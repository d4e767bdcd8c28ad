"""Durable file updates: a replaced file holds the old or the new content, never a mix or a leftover."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.replica.files import move, replacing, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_an_error_while_writing_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "export.ovr"
    target.write_bytes(b"old")

    def write_half() -> None:
        with replacing(target) as file:
            file.write(b"half of the new")
            raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError):
        write_half()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["export.ovr"]


def test_replacing_creates_the_file_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "disk.hrl"
    with replacing(target, mode=0o600) as file:
        file.write(b"header")
    assert target.read_bytes() == b"header"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_move_renames_over_the_target(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "header.bin").write_bytes(b"h")
    move(tmp_path / "staging", tmp_path / "journal")
    assert (tmp_path / "journal" / "header.bin").read_bytes() == b"h"
    assert not (tmp_path / "staging").exists()
