"""`mdseg predict` on awkward inputs: linear-power SAR, SAR on another grid, `--align strict`, `--threads`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

CLASSES = ["water", "forest", "city"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]
SIZE = 64
FAST = ["--tile", "64", "--overlap", "16", "--steps", "1"]
ORIGIN = (500_000.0, 4_000_000.0)


def write_raster(path: Path, data: np.ndarray, *, transform=None, crs: str = "EPSG:32633") -> Path:
    """(C, H, W) `data` as a GeoTIFF, by default on a 10 m UTM grid at ORIGIN."""
    c, h, w = data.shape
    transform = transform or from_origin(*ORIGIN, 10, 10)
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def sar_db(size: int = SIZE) -> np.ndarray:
    """Smooth SAR backscatter (1, size, size) in dB, about −18…−6."""
    y, x = np.mgrid[0:size, 0:size] / size
    return (-12 + 6 * np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y))[None].astype("float32")


def optical(folder: Path) -> Path:
    """Smooth optical uint16 (4, SIZE, SIZE) on the reference grid."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + x - y
    opt = np.stack([1000 + 400 * (i + 1) * field * (-1) ** i for i in range(4)]).astype("uint16")
    return write_raster(folder / "opt.tif", opt)


@pytest.fixture
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


def predict(mdseg, checkpoint: Path, opt: Path, sar: Path, out: Path, *extra: object) -> tuple[int, str, str]:
    return mdseg("predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint, *FAST, *extra)


def read_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_linear_power_sar_is_detected_converted_to_db_and_reported(tmp_path, checkpoint, mdseg):
    opt = optical(tmp_path)
    db = write_raster(tmp_path / "sar_db.tif", sar_db())
    linear = write_raster(tmp_path / "sar_linear.tif", (10.0 ** (sar_db() / 10.0)).astype("float32"))
    code, _, err = predict(mdseg, checkpoint, opt, db, tmp_path / "from_db.tif", "--quiet")
    assert code == 0, err
    code, out, err = predict(mdseg, checkpoint, opt, linear, tmp_path / "from_linear.tif", "--json")
    assert code == 0, err
    for record in (json.loads(out), json.loads((tmp_path / "from_linear.json").read_text())):
        scale = record["alignment"]["sar_scale"]
        assert (scale["input"], scale["detected"], scale["converts_to_db"]) == ("linear", True, True)
        assert "linear power (detected); converting to dB" in scale["message"]
    # The dB checkpoint sees the same inputs either way (up to float rounding of 10·log10(10^(x/10))).
    assert (read_map(tmp_path / "from_linear.tif") == read_map(tmp_path / "from_db.tif")).mean() > 0.999


def test_linear_power_sar_detection_is_said_on_the_terminal(tmp_path, checkpoint, mdseg):
    opt = optical(tmp_path)
    linear = write_raster(tmp_path / "sar_linear.tif", (10.0 ** (sar_db() / 10.0)).astype("float32"))
    code, _, err = predict(mdseg, checkpoint, opt, linear, tmp_path / "m.tif")
    assert code == 0, err
    assert "SAR values are linear power (detected); converting to dB" in err


def test_sar_scale_linear_is_taken_as_given_and_converted(tmp_path, checkpoint, mdseg):
    opt = optical(tmp_path)
    db = write_raster(tmp_path / "sar_db.tif", sar_db())
    linear = write_raster(tmp_path / "sar_linear.tif", (10.0 ** (sar_db() / 10.0)).astype("float32"))
    code, _, err = predict(mdseg, checkpoint, opt, db, tmp_path / "from_db.tif", "--quiet", "--sar-scale", "db")
    assert code == 0, err
    code, _, err = predict(
        mdseg, checkpoint, opt, linear, tmp_path / "from_linear.tif", "--quiet", "--sar-scale", "linear"
    )
    assert code == 0, err
    scale = json.loads((tmp_path / "from_linear.json").read_text())["alignment"]["sar_scale"]
    assert (scale["input"], scale["detected"], scale["converts_to_db"]) == ("linear", False, True)
    assert (read_map(tmp_path / "from_linear.tif") == read_map(tmp_path / "from_db.tif")).mean() > 0.999


def test_threads_holds_for_the_run_is_recorded_and_restored_after(tmp_path, checkpoint, mdseg):
    opt = optical(tmp_path)
    sar = write_raster(tmp_path / "sar.tif", sar_db())
    before = torch.get_num_threads()
    code, out, err = predict(mdseg, checkpoint, opt, sar, tmp_path / "m.tif", "--threads", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["threads"] == 1
    assert json.loads((tmp_path / "m.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == before


def offset_sar(folder: Path) -> Path:
    """SAR on a grid shifted by 3 m and 2 px larger on each side: same CRS, other transform and size."""
    data = np.pad(sar_db(SIZE), ((0, 0), (2, 2), (2, 2)), mode="edge")
    return write_raster(folder / "sar_offset.tif", data, transform=from_origin(ORIGIN[0] - 17, ORIGIN[1] + 17, 10, 10))


def other_crs_sar(folder: Path) -> Path:
    """SAR warped to Web Mercator (EPSG:3857), covering the optical footprint with a margin."""
    src_transform = from_origin(ORIGIN[0] - 50, ORIGIN[1] + 50, 10, 10)
    source = np.pad(sar_db(SIZE), ((0, 0), (5, 5), (5, 5)), mode="edge")
    size = SIZE + 10
    transform, width, height = calculate_default_transform(
        "EPSG:32633", "EPSG:3857", size, size, *rasterio.transform.array_bounds(size, size, src_transform)
    )
    data = np.zeros((1, height, width), dtype="float32")
    reproject(
        source, data, src_transform=src_transform, src_crs="EPSG:32633", dst_transform=transform,
        dst_crs="EPSG:3857", resampling=Resampling.bilinear,
    )  # fmt: skip
    return write_raster(folder / "sar_3857.tif", data, transform=transform, crs="EPSG:3857")


@pytest.mark.parametrize(
    ("make_sar", "reason"), [(offset_sar, "transform"), (other_crs_sar, "CRS EPSG:3857")], ids=["offset", "crs"]
)
def test_misaligned_sar_is_reprojected_onto_the_optical_grid_and_the_command_says_so(
    tmp_path, checkpoint, mdseg, make_sar, reason
):
    opt, sar, out = optical(tmp_path), make_sar(tmp_path), tmp_path / "m.tif"
    code, stdout, err = predict(mdseg, checkpoint, opt, sar, out)
    assert code == 0, err
    assert "SAR reprojected onto the optical grid (bilinear)" in err and reason in err
    with rasterio.open(opt) as src_opt, rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (src_opt.crs, src_opt.transform, src_opt.shape)
        assert (src.read(1) != 255).all()  # the SAR footprint covers the optical one: every pixel classified
    alignment = json.loads((tmp_path / "m.json").read_text())["alignment"]
    assert alignment["sar_reprojected"] and alignment["resampling"] == "bilinear" and reason in alignment["sar_grid"]


def test_align_strict_refuses_misaligned_sar_with_one_line_and_exit_2(tmp_path, checkpoint, mdseg):
    opt, sar, out = optical(tmp_path), offset_sar(tmp_path), tmp_path / "m.tif"
    code, _, err = predict(mdseg, checkpoint, opt, sar, out, "--align", "strict")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "sar_offset.tif" in lines[0] and "not on the optical grid" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.tif", "sar_offset.tif"]  # nothing written
