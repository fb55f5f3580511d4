"""All-or-nothing outputs: missing folders are made, and removed again when the block fails."""

from __future__ import annotations

import pytest

from mdseg.errors import OutputExistsError
from mdseg.io.atomic import AtomicOutputs


def test_missing_output_folder_is_created_on_success(tmp_path):
    target = tmp_path / "out" / "maps" / "a.tif"
    with AtomicOutputs() as outputs:
        outputs.reserve(target).write_bytes(b"map")
    assert target.read_bytes() == b"map"


def test_folders_made_for_a_failed_block_are_removed(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt), AtomicOutputs() as outputs:
        outputs.reserve(tmp_path / "out" / "new" / "deeper" / "a.tif").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]  # the folder that existed stays, empty
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_target_refused_before_anything_is_made(tmp_path):
    target = tmp_path / "a.tif"
    target.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="--overwrite"), AtomicOutputs() as outputs:
        outputs.reserve(target)
    assert target.read_bytes() == b"mine" and list(tmp_path.iterdir()) == [target]


def test_check_refuses_like_reserve_but_creates_nothing(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        AtomicOutputs().check(tmp_path / "a.tif")
    AtomicOutputs().check(tmp_path / "new" / "b.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_outputs_get_plain_file_permissions_under_the_umask(tmp_path):
    import os

    target = tmp_path / "weights.safetensors"
    with AtomicOutputs() as outputs:
        tmp = outputs.reserve(target)
        tmp.write_bytes(b"x")
        tmp.chmod(0o600)  # what safetensors' writer leaves
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
