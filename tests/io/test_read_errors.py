"""Inputs that cannot be read — cut short, a damaged block, empty, no read permission — are one `InputFileError`
naming the file, its role and GDAL's cause, whenever the read fails (in the middle of a scene too); through the
command line: exit 2, one `error:` line, no traceback, the output folder as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from mdseg.engine.predict import PredictOptions, TileModel, predict_scene
from mdseg.errors import InputFileError
from mdseg.io.raster import open_raster, read_bands, read_classes, sample_values

SIZE = 256
BLOCK = 64
FAST = ["--tile", "64", "--overlap", "16", "--steps", "1", "--quiet"]


def write_tiled(path: Path, data: np.ndarray) -> Path:
    """(C, SIZE, SIZE) `data` as a tiled (BLOCK px), DEFLATE-compressed GeoTIFF on a 10 m UTM grid."""
    c, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs="EPSG:32633",
        transform=from_origin(500_000, 4_000_000, 10, 10), tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
        compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def scene(folder: Path) -> tuple[Path, Path]:
    """Optical (4 bands of seeded noise, uint16) and SAR (dB) on the same grid: every block holds data."""
    rng = np.random.default_rng(0)
    opt = write_tiled(folder / "opt.tif", rng.integers(200, 2000, (4, SIZE, SIZE)).astype("uint16"))
    sar = write_tiled(folder / "sar.tif", rng.uniform(-20, -5, (1, SIZE, SIZE)).astype("float32"))
    return opt, sar


def truncate_to_half(path: Path) -> Path:
    """Cut the file to half its bytes: the header (at the start) still opens, the later tiles are gone."""
    os.truncate(path, path.stat().st_size // 2)
    return path


def damage_block(path: Path, row: int, col: int) -> Path:
    """Overwrite the compressed bytes of the block at pixel (row, col) with 0xFF, which DEFLATE cannot decode."""
    with rasterio.open(path) as src:
        key = f"{col // BLOCK}_{row // BLOCK}"
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{key}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{key}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return path


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def uniform(opt, sar, generators, steps, samples):
    import torch

    return torch.full((opt.shape[0], 3, *opt.shape[-2:]), 1 / 3)


def test_a_truncated_optical_raster_fails_in_the_middle_of_the_scene_naming_file_and_block(tmp_path):
    opt, sar = scene(tmp_path)
    truncate_to_half(opt)
    out = tmp_path / "out"
    out.mkdir()
    done: list[int] = []
    with pytest.raises(InputFileError) as failed:
        predict_scene(
            opt, sar, out / "map.tif", TileModel(uniform, ["a", "b", "c"], [(0, 0, 0)] * 3),
            PredictOptions(tile=64, overlap=16), progress=lambda tiles, total: done.append(tiles),
        )  # fmt: skip
    message = str(failed.value)
    assert message.startswith(f"Optical raster '{opt}' cannot be read at block (row ")
    assert "truncated or damaged" in message and "\n" not in message
    assert done and done[-1] > 0  # some tiles were predicted before the read failed
    assert list(out.iterdir()) == []  # nothing partial left


def test_a_damaged_block_names_its_position_and_the_decoder_s_words(tmp_path):
    opt, _ = scene(tmp_path)
    damage_block(opt, row=128, col=64)
    with open_raster(opt, "Optical") as src:
        read_bands(src, [1, 2], Window(0, 0, SIZE, 128))  # the blocks above read fine
        with pytest.raises(InputFileError) as failed:
            read_bands(src, [1, 2], Window(0, 128, SIZE, 64))
    assert str(failed.value).startswith(f"Optical raster '{opt}' cannot be read at block (row 128, col 64) of band 1: ")
    assert "Decoding error" in str(failed.value)


def test_a_damaged_block_seen_through_a_decimated_read_or_as_classes_is_an_input_error(tmp_path):
    opt, _ = scene(tmp_path)
    damage_block(opt, row=0, col=0)
    with open_raster(opt, "Label") as src:
        with pytest.raises(InputFileError, match=rf"^Label raster '{opt}' cannot be read: "):
            sample_values(src, [1], side=32)
        with pytest.raises(InputFileError, match=r"at block \(row 0, col 0\)"):
            read_classes(src, Window(0, 0, BLOCK, BLOCK))


def test_an_empty_file_is_named_as_empty(tmp_path):
    empty = tmp_path / "opt.tif"
    empty.touch()
    with pytest.raises(InputFileError, match=r"^Optical raster '.*opt\.tif' is empty \(0 bytes\)"):
        open_raster(empty, "Optical")


def test_a_tiff_cut_inside_its_header_is_called_truncated(tmp_path):
    opt, _ = scene(tmp_path)
    os.truncate(opt, 16)
    with pytest.raises(InputFileError, match=r"is a TIFF GDAL cannot open .*truncated or damaged"):
        open_raster(opt, "Optical")


@pytest.mark.parametrize("damage", ["truncated", "damaged block", "empty"])
def test_cli_read_failures_are_one_line_exit_2_and_leave_the_output_folder_as_it_was(
    tmp_path, tiny_checkpoint, mdseg, damage
):
    opt, sar = scene(tmp_path)
    if damage == "truncated":
        truncate_to_half(opt)
    elif damage == "damaged block":
        damage_block(opt, row=192, col=128)
    else:
        opt.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = listing(out)
    args = ("--opt", opt, "--sar", sar, "--out", out / "map.tif", "--checkpoint", tiny_checkpoint, *FAST)
    code, _, err = mdseg("predict", *args, "--prob", out / "prob.tif", "--vector", out / "poly.gpkg")
    line = one_error_line(err)
    assert code == 3
    assert f"Optical raster '{opt}'" in line
    assert listing(out) == before


def run_as_a_plain_user(*argv: object) -> subprocess.CompletedProcess:
    """Run `python argv…`; as root, under `setpriv` without the capabilities that let root read any file, so the
    program (uid 0 still) is held to the permission bits like anyone else."""
    wrapper: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file; setpriv (util-linux), needed to drop that override, is not installed")
        wrapper = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    return subprocess.run(
        [*wrapper, sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=1800,
        env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip


def test_a_raster_without_read_permission_is_named_with_the_cause(tmp_path):
    opt, _ = scene(tmp_path)
    opt.chmod(0)
    code = "from mdseg.io.raster import open_raster; import sys; open_raster(sys.argv[1], 'Optical')"
    done = run_as_a_plain_user("-c", code, opt)
    assert done.returncode == 1
    assert (
        f"InputFileError: Optical raster '{opt}' cannot be read: permission denied; ask for read access or copy "
        "it elsewhere." in done.stderr
    )


def test_cli_an_optical_raster_without_read_permission_is_one_line(tmp_path, tiny_checkpoint):
    opt, sar = scene(tmp_path)
    opt.chmod(0)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--opt", opt, "--sar", sar, "--out", out / "map.tif", "--checkpoint", tiny_checkpoint, *FAST]
    done = run_as_a_plain_user("-m", "mdseg", "predict", *args)
    line = one_error_line(done.stderr)
    assert done.returncode == 3
    assert f"'{opt}'" in line and ("not readable" in line or "permission denied" in line)
    assert list(out.iterdir()) == []
