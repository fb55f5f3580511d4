"""Rasters that are not plain north-up grids. Rotated and south-up optical grids: the map sits exactly on the
optical grid, with SAR read on it (same grid, or warped from a north-up one). Rasters georeferenced only by
ground control points or RPCs: refused in one sentence naming the cause and the gdalwarp command that fixes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.rpc import RPC

from mdseg.engine.predict import PredictOptions, TileModel, predict_scene
from mdseg.errors import GeoreferenceError
from mdseg.geo.pair import RasterPair

SIZE = 64
X0, Y0 = 500_000.0, 4_000_000.0
ROTATED = Affine.translation(X0, Y0) * Affine.rotation(30) * Affine.scale(10, -10)
SOUTH_UP = Affine(10, 0, X0, 0, 10, Y0 - SIZE * 10)
# A north-up 5 m SAR grid covering both optical footprints with a margin.
NORTH_UP_SAR = Affine(5, 0, X0 - 1000, 0, -5, Y0 + 500)


def write(path: Path, data: np.ndarray, transform: Affine | None = None, **georef: object) -> Path:
    """(C, H, W) `data` as a GeoTIFF: on `transform` in UTM 33N, or with `gcps` / `rpcs` and no map grid."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype)
    if transform is not None:
        profile.update(transform=transform, crs="EPSG:32633")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if "gcps" in georef:
            dst.gcps = (georef["gcps"], rasterio.crs.CRS.from_epsg(4326))
        if "rpcs" in georef:
            dst.rpcs = georef["rpcs"]
    return path


def backscatter(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SAR in dB as a linear function of map coordinates (m): bilinear warping reproduces it exactly."""
    return (-20 + (x - X0) / 100 + (Y0 - y) / 1000).astype("float32")


def centres(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:height, 0:width]
    return transform * (cols + 0.5, rows + 0.5)


def optical(folder: Path, transform: Affine) -> Path:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return write(folder / "opt.tif", np.stack([1000 + 10 * cols + rows] * 4).astype("uint16"), transform)


def sar_on(folder: Path, transform: Affine, height: int = SIZE, width: int = SIZE) -> Path:
    return write(folder / "sar.tif", backscatter(*centres(transform, height, width))[None], transform)


def north_up_sar(folder: Path) -> Path:
    return sar_on(folder, NORTH_UP_SAR, 400, 600)


def first_class(opt, sar, generators, steps, samples):
    probs = torch.zeros((opt.shape[0], 3, *opt.shape[-2:]))
    probs[:, 0] = 1
    return probs


def predict(folder: Path, opt: Path, sar: Path) -> Path:
    model = TileModel(first_class, ["a", "b", "c"], [(0, 0, 0)] * 3)
    out = folder / "map.tif"
    predict_scene(opt, sar, out, model, PredictOptions(tile=32, overlap=8), progress=False)
    return out


@pytest.mark.parametrize("grid", [ROTATED, SOUTH_UP], ids=["rotated", "south-up"])
@pytest.mark.parametrize("sar_grid", ["same", "north-up"])
def test_the_map_sits_exactly_on_a_rotated_or_south_up_optical_grid(tmp_path, grid, sar_grid):
    opt = optical(tmp_path, grid)
    sar = sar_on(tmp_path, grid) if sar_grid == "same" else north_up_sar(tmp_path)
    out = predict(tmp_path, opt, sar)
    with rasterio.open(opt) as src_opt, rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (src_opt.crs, src_opt.transform, src_opt.shape)
        assert (src.read(1) == 0).all()  # every pixel has SAR and was classified


@pytest.mark.parametrize("grid", [ROTATED, SOUTH_UP], ids=["rotated", "south-up"])
def test_north_up_sar_is_read_where_each_optical_pixel_lies(tmp_path, grid):
    opt, sar = optical(tmp_path, grid), north_up_sar(tmp_path)
    with RasterPair(opt, sar) as pair:
        assert pair.reprojected
        _, values, valid = pair.read(pair.window)
    assert valid.all()
    # Bilinear warping of a linear field is exact up to float32 rounding of the map coordinates.
    np.testing.assert_allclose(values[0], backscatter(*centres(grid, SIZE, SIZE)), atol=0.01)


def test_sar_on_the_same_rotated_grid_is_read_as_is(tmp_path):
    opt, sar = optical(tmp_path, ROTATED), sar_on(tmp_path, ROTATED)
    with RasterPair(opt, sar) as pair:
        assert not pair.reprojected
        _, values, _ = pair.read(pair.window)
    with rasterio.open(sar) as src:
        np.testing.assert_array_equal(values[0], src.read(1))


def gcps() -> list[GroundControlPoint]:
    """Nine control points of a 64 px image near 12.5° E, 45° N (UTM zone 33 N)."""
    return [
        GroundControlPoint(row=r, col=c, x=12.5 + c * 1e-4, y=45.0 - r * 1e-4) for r in (0, 32, 64) for c in (0, 32, 64)
    ]


def rpcs() -> RPC:
    """A trivial sensor model near 18.4° E, 33.9° S (UTM zone 34 S)."""
    zeros = [0.0] * 20
    return RPC(
        height_off=0, height_scale=1, lat_off=-33.9, lat_scale=0.1, long_off=18.4, long_scale=0.1,
        line_off=32, line_scale=32, samp_off=32, samp_scale=32, line_num_coeff=[0, 0, -1, *zeros[3:]],
        line_den_coeff=[1, *zeros[1:]], samp_num_coeff=[0, 1, *zeros[2:]], samp_den_coeff=[1, *zeros[1:]],
    )  # fmt: skip


def test_an_optical_raster_with_ground_control_points_only_is_refused_with_the_gdalwarp_fix(tmp_path):
    opt = write(tmp_path / "scene.tif", np.zeros((4, SIZE, SIZE), "uint16"), gcps=gcps())
    sar = sar_on(tmp_path, SOUTH_UP)
    with pytest.raises(GeoreferenceError) as refused:
        RasterPair(opt, sar)
    assert str(refused.value) == (
        f"Optical raster '{opt}' is georeferenced by 9 ground control points, not a map grid; warp it first: "
        f"gdalwarp -t_srs EPSG:32633 -r bilinear {opt} {tmp_path / 'scene_warped.tif'}"
    )


def test_sar_with_ground_control_points_only_is_refused_with_a_warp_into_the_optical_crs(tmp_path):
    opt = optical(tmp_path, SOUTH_UP)
    sar = write(tmp_path / "s1.tif", np.zeros((1, SIZE, SIZE), "float32"), gcps=gcps())
    with pytest.raises(GeoreferenceError, match=r"^SAR raster '.*s1\.tif' is georeferenced by 9 ground control"):
        RasterPair(opt, sar)


@pytest.mark.parametrize("role", ["Optical", "SAR"])
def test_a_raster_with_rpcs_only_is_refused_with_the_orthorectification_fix(tmp_path, role):
    grid_file = optical(tmp_path, SOUTH_UP) if role == "SAR" else sar_on(tmp_path, SOUTH_UP)
    sensor = write(tmp_path / "l1.tif", np.zeros((4 if role == "Optical" else 1, SIZE, SIZE), "uint16"), rpcs=rpcs())
    pair = (sensor, grid_file) if role == "Optical" else (grid_file, sensor)
    with pytest.raises(GeoreferenceError) as refused:
        RasterPair(*pair)
    # The optical raster is warped into its own UTM zone; SAR into the optical raster's CRS.
    crs = "EPSG:32734" if role == "Optical" else "EPSG:32633"
    assert str(refused.value) == (
        f"{role} raster '{sensor}' is georeferenced by RPCs (a sensor model), not a map grid; orthorectify it "
        f"first: gdalwarp -rpc -to RPC_DEM=<your DEM> -t_srs {crs} -r bilinear {sensor} {tmp_path / 'l1_warped.tif'}"
    )


def test_cli_refuses_a_gcp_raster_in_one_line(tmp_path, tiny_checkpoint, mdseg):
    opt = write(tmp_path / "scene.tif", np.zeros((4, SIZE, SIZE), "uint16"), gcps=gcps())
    sar = sar_on(tmp_path, SOUTH_UP)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "map.tif", "--checkpoint",
                         tiny_checkpoint, "--quiet")  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith(f"error: Optical raster '{opt}' is georeferenced by 9 ground control points")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sar.tif", "scene.tif"]
