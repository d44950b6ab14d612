"""OutputGroup / check_writable: a result's files appear together or not at all; bad paths fail first."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common import publish
from common.errors import InputError
from common.images import read_image, write_array, write_image
from common.publish import OutputGroup, check_writable, write_atomic


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_failed_rename_of_the_second_file_publishes_none_and_restores_the_old_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "out.png").write_bytes(b"old result")
    real_replace, calls = os.replace, []

    def replace(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", replace)
    with pytest.raises(InputError, match=r"cannot write .*variance.npy: No space left on device; nothing of "
                                         r"this result was written"):
        with OutputGroup() as group:
            group.add(tmp_path / "out.png", b"new result")
            group.add(tmp_path / "sub" / "variance.npy", b"variance")
    assert len(calls) == 3  # out.png, variance.npy (fails), then the old out.png put back
    assert (tmp_path / "out.png").read_bytes() == b"old result"
    assert _listing(tmp_path) == ["out.png", "sub"]  # no temporary or backup file


def test_failure_while_writing_the_second_file_leaves_nothing(tmp_path: Path) -> None:
    def broken(handle: object) -> None:
        raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        with OutputGroup() as group:
            group.add(tmp_path / "a.png", b"first")
            group.add(tmp_path / "b.npy", broken)
    assert _listing(tmp_path) == []


def test_target_that_is_a_directory_fails_before_any_file_is_published(tmp_path: Path) -> None:
    (tmp_path / "out_variance.tif").mkdir()
    with pytest.raises(InputError, match=r"out_variance.tif: it is a directory; give a file name$"):
        with OutputGroup() as group:
            group.add(tmp_path / "out.png", b"denoised")
            group.add(tmp_path / "out_variance.tif", b"variance")
    assert _listing(tmp_path) == ["out_variance.tif"]
    group = OutputGroup()  # a folder appearing after staging is caught before the first rename
    group.add(tmp_path / "a.png", b"a")
    group.add(tmp_path / "b.png", b"b")
    (tmp_path / "b.png").mkdir()
    with pytest.raises(InputError, match="b.png: it is a directory"):
        group.publish()
    assert _listing(tmp_path) == ["b.png", "out_variance.tif"]


def test_group_publishes_all_files_with_ordinary_permissions(tmp_path: Path) -> None:
    noisy = tmp_path / "noisy.png"
    write_image(noisy, torch.full((1, 4, 5), 0.5))
    with OutputGroup(protect=[noisy]) as group:
        write_image(tmp_path / "o" / "den.png", torch.zeros(1, 4, 5), group=group)
        write_array(tmp_path / "o" / "var.npy", torch.ones(4, 5), group=group)
        group.add(tmp_path / "o" / "raw.npy", lambda handle: np.save(handle, np.arange(3)))
        staged = _listing(tmp_path / "o")
        assert len(staged) == 3 and all(name.startswith(".") and name.endswith(".tmp") for name in staged)
        assert not (tmp_path / "o" / "den.png").exists()  # staged, not yet published
        with pytest.raises(InputError, match="refusing to overwrite the input"):
            write_image(noisy, torch.zeros(1, 4, 5), group=group)
    # the refused input ended the group: nothing of it was published
    assert _listing(tmp_path) == ["noisy.png", "o"]
    with OutputGroup(protect=[noisy]) as group:
        write_image(tmp_path / "o" / "den.png", torch.zeros(1, 4, 5), group=group)
        write_array(tmp_path / "o" / "var.npy", torch.ones(4, 5), group=group)
    assert group.paths == []
    assert read_image(tmp_path / "o" / "den.png").pixels.shape == (1, 4, 5)
    assert np.load(tmp_path / "o" / "var.npy").shape == (4, 5)
    assert (tmp_path / "o" / "var.npy").stat().st_mode & 0o777 == publish.FILE_MODE
    assert _listing(tmp_path / "o") == ["den.png", "var.npy"]


def test_check_writable_reports_each_impossible_path_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    noisy = tmp_path / "noisy.png"
    noisy.write_bytes(b"x")
    check_writable([tmp_path / "new" / "deeper" / "out.png", tmp_path / "out.png"], protect=[noisy])
    cases = [
        ([tmp_path / "file" / "out.png"], r"cannot write .*file/out.png: .*file is a file, not a folder"),
        ([tmp_path / "file" / "a" / "out.png"], r"file is a file, not a folder"),
        ([tmp_path / "folder"], r"folder: it is a directory"),
        ([tmp_path / "sub" / ".." / "noisy.png"], r"refusing to overwrite the input"),
        ([tmp_path / "a.png", tmp_path / "." / "a.png"], r"given twice"),
    ]
    for paths, message in cases:
        with pytest.raises(InputError, match=message):
            check_writable(paths, protect=[noisy])
    with pytest.raises(InputError, match=r"file is a file, not a folder; choose another output path$"):
        write_image(tmp_path / "file" / "sub" / "out.png", torch.zeros(1, 2, 2))  # not "File exists"
    assert _listing(tmp_path) == ["file", "folder", "noisy.png"]


def test_read_only_folder_is_found_before_any_work(tmp_path: Path, read_only_folder: Path) -> None:
    folder = read_only_folder
    for target in (folder / "out.png", folder / "new" / "out.png"):
        with pytest.raises(InputError, match=r"folder .*ro is not writable \(.*\); choose another output"):
            check_writable([tmp_path / "ok.png", target])
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(folder / "out.png", b"x")
    assert _listing(tmp_path) == ["ro"]
