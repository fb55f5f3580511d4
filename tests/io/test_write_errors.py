"""Outputs that cannot be written — no space left, a read-only file system — are one `OutputError` naming the
output and the cause; through the command line: exit 2, one `error:` line, nothing partial left.

The file systems are real: small tmpfs mounts made by the test (root only; skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from mdseg.checkpoint import load_checkpoint, save_checkpoint
from mdseg.errors import OutputError
from mdseg.geo.vector import write_polygons
from mdseg.quicklook import quicklook

SIZE = 256
FAST = ["--tile", "64", "--overlap", "16", "--steps", "1", "--quiet"]
# Small enough that the probability raster of a SIZE² noise scene (about 180 KB) cannot fit; the map (8 KB) does.
SMALL_FS = "64k"


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(name)` mounts a SMALL_FS tmpfs at tmp_path/name and returns it; unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small or read-only file system needs root (mount -t tmpfs)")
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=True)  # still busy: detach it now, free later


def read_only(where: Path) -> Path:
    """Remount the tmpfs at `where` read-only (its files stay)."""
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    return where


def write_raster(path: Path, data: np.ndarray) -> Path:
    c, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs="EPSG:32633",
        transform=from_origin(500_000, 4_000_000, 10, 10),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def noise_scene(folder: Path) -> tuple[Path, Path]:
    """Optical and SAR of seeded noise: the model's probabilities vary pixel to pixel and compress badly."""
    rng = np.random.default_rng(0)
    opt = write_raster(folder / "opt.tif", rng.integers(200, 2000, (4, SIZE, SIZE)).astype("uint16"))
    sar = write_raster(folder / "sar.tif", rng.uniform(-20, -5, (1, SIZE, SIZE)).astype("float32"))
    return opt, sar


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cli_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, tiny_checkpoint, tmpfs):
    opt, sar = noise_scene(tmp_path)
    out = tmpfs("out")
    (out / "keep.txt").write_text("mine")
    before = listing(out)
    args = ["--opt", opt, "--sar", sar, "--out", out / "map.tif", "--prob", out / "prob.tif"]
    # A separate process: its whole stderr is the user's, lines printed by GDAL's libraries included.
    done = subprocess.run(
        [sys.executable, "-m", "mdseg", "predict", *map(str, args), "--checkpoint", str(tiny_checkpoint), *FAST],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip
    line = one_error_line(done.stderr)
    assert done.returncode == 3
    assert line.startswith(f"error: Cannot write probability raster '{out / 'prob.tif'}': no space left on device;")
    assert listing(out) == before


def test_cli_a_read_only_output_folder_is_one_line_and_leaves_nothing(tmp_path, tiny_checkpoint, mdseg, tmpfs):
    opt, sar = noise_scene(tmp_path)
    out = tmpfs("out")
    (out / "keep.txt").write_text("mine")
    read_only(out)
    args = ("--opt", opt, "--sar", sar, "--out", out / "map.tif", "--checkpoint", tiny_checkpoint, *FAST)
    code, _, err = mdseg("predict", *args)
    line = one_error_line(err)
    assert code == 3
    assert str(out) in line and "read-only file system" in line.lower()
    assert listing(out) == {"keep.txt": b"mine"}


def fill(where: Path) -> Path:
    """Fill the file system at `where` to the last byte with one file; returns it."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
    return filler


def test_the_last_resort_line_for_an_os_error_names_the_cause_and_the_file():
    from mdseg.cli import os_error_line

    assert os_error_line(OSError(28, "No space left on device", "out/map.tif")) == (
        "No space left on device ('out/map.tif')"
    )


def test_polygons_on_a_full_disk_are_an_output_error_naming_the_target(tmpfs):
    out = tmpfs("out")
    boxes = np.array([shapely.box(i, 0, i + 1, 1) for i in range(5000)], dtype=object)
    ids, areas, crs = np.zeros(5000, np.int32), np.ones(5000), rasterio.crs.CRS.from_epsg(32633)
    target = out / "polygons.gpkg"
    with pytest.raises(OutputError) as failed:
        write_polygons(out / ".polygons.partial.gpkg", boxes, ids, areas, ["a"], crs, "GPKG", target=target)
    assert str(failed.value).startswith(f"Cannot write polygons '{target}': no space left on device; free some space")


def test_a_checkpoint_on_a_full_disk_is_an_output_error_and_leaves_nothing(tiny_checkpoint, tmpfs):
    model, meta = load_checkpoint(tiny_checkpoint)
    target = tmpfs("weights") / "model.safetensors"
    with pytest.raises(OutputError, match=rf"^Cannot write checkpoint '{target}': no space left on device; "):
        save_checkpoint(target, model, meta)
    assert list(target.parent.iterdir()) == []


def test_a_quick_look_on_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, tmpfs):
    opt, sar = noise_scene(tmp_path)
    pred = write_raster(tmp_path / "pred.tif", np.zeros((1, SIZE, SIZE), "uint8"))
    folder = tmpfs("pictures")
    filler = fill(folder)
    with pytest.raises(OutputError, match=rf"^Cannot write .*'{folder}.*: no space left on device; free some space"):
        quicklook(opt, sar, pred, folder / "view.png", max_size=64)
    assert list(folder.iterdir()) == [filler]
