"""Opening optical + SAR pairs: band selection, alignment, footprints, nodata and SAR scale, with real GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from mdseg.errors import BandSelectionError, GeoreferenceError, InputFileError
from mdseg.geo.pair import RasterPair
from mdseg.geo.sar import DB_FLOOR, decide_sar_scale, linear_to_db

UTM = "EPSG:32633"


def write_raster(path: Path, data: np.ndarray, *, crs=UTM, transform=None, nodata=None) -> Path:
    """Write (C, H, W) `data` as a GeoTIFF (default: 10 m UTM grid at 500000, 4000000)."""
    transform = transform or from_origin(500_000, 4_000_000, 10, 10)
    c, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs=crs, transform=transform,
        nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


@pytest.fixture
def pair_files(tmp_path):
    rng = np.random.default_rng(0)
    opt = write_raster(tmp_path / "opt.tif", rng.integers(1, 3000, (4, 40, 50)).astype("uint16"), nodata=0)
    sar = write_raster(tmp_path / "sar.tif", rng.normal(-12, 3, (2, 40, 50)).astype("float32"))
    return opt, sar


def test_same_grid_reads_windows_without_reprojection(pair_files):
    opt_path, sar_path = pair_files
    with RasterPair(opt_path, sar_path, opt_bands=[3, 1], sar_bands=[2]) as pair:
        assert not pair.reprojected and pair.window == Window(0, 0, 50, 40)
        opt, sar, valid = pair.read(Window(5, 6, 20, 10))
        assert opt.shape == (2, 10, 20) and sar.shape == (1, 10, 20) and valid.shape == (10, 20)
        assert opt.dtype == sar.dtype == np.float32 and valid.all()
    with rasterio.open(opt_path) as src:
        np.testing.assert_array_equal(opt[0], src.read(3, window=Window(5, 6, 20, 10)))


def test_missing_and_non_raster_files_are_clear_errors(pair_files, tmp_path):
    opt, sar = pair_files
    with pytest.raises(InputFileError, match="does not exist"):
        RasterPair(tmp_path / "nope.tif", sar)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputFileError, match="not a raster GDAL can read"):
        RasterPair(opt, text)


def test_band_selection_and_expected_band_count_are_checked(pair_files):
    opt, sar = pair_files
    with pytest.raises(BandSelectionError, match=r"has 4 band\(s\).*\[5\]"):
        RasterPair(opt, sar, opt_bands=[1, 5])
    with pytest.raises(BandSelectionError, match=r"expects 1 sar band\(s\) but 2 were selected"):
        RasterPair(opt, sar, sar_band_count=1)


def test_missing_crs_is_a_clear_error(pair_files, tmp_path):
    opt, _ = pair_files
    sar = write_raster(tmp_path / "nocrs.tif", np.zeros((1, 40, 50), "float32"), crs=None)
    with pytest.raises(GeoreferenceError, match="has no CRS"):
        RasterPair(opt, sar)


def test_non_overlapping_pair_is_a_clear_error(pair_files, tmp_path):
    opt, _ = pair_files
    far = write_raster(tmp_path / "far.tif", np.zeros((1, 40, 50), "float32"), transform=from_origin(0, 0, 10, 10))
    with pytest.raises(GeoreferenceError, match="does not overlap"):
        RasterPair(opt, far)


def test_strict_alignment_refuses_another_grid(pair_files, tmp_path):
    opt, _ = pair_files
    sar = write_raster(
        tmp_path / "s20.tif", np.zeros((1, 20, 25), "float32"), transform=from_origin(500_000, 4_000_000, 20, 20)
    )
    with pytest.raises(GeoreferenceError, match="not on the optical grid"):
        RasterPair(opt, sar, align="strict")


def test_offset_coarser_sar_is_reprojected_onto_the_optical_grid(pair_files, tmp_path):
    opt, _ = pair_files
    # 20 m SAR whose footprint starts 100 m east of the optical origin: columns 0..9 have no SAR.
    east = np.tile(np.arange(25, dtype="float32"), (20, 1))[None]
    sar = write_raster(tmp_path / "s20.tif", east, transform=from_origin(500_100, 4_000_000, 20, 20))
    with RasterPair(opt, sar) as pair:
        assert pair.reprojected and pair.alignment()["sar_reprojected"]
        assert pair.window == Window(10, 0, 40, 40)
        _, values, valid = pair.read(Window(0, 0, 50, 40))
    assert not valid[:, :10].any() and valid[:, 11:-1].all()
    # Bilinear: optical column c sits at SAR column (c − 10 + 0.5) / 2 − 0.5.
    np.testing.assert_allclose(values[0, 5, 12:48], (np.arange(12, 48) - 10 + 0.5) / 2 - 0.5, atol=1e-4)


def test_sar_in_another_crs_is_reprojected(pair_files, tmp_path):
    opt, _ = pair_files
    with rasterio.open(opt) as src:
        bounds = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    transform = rasterio.transform.from_bounds(*bounds, 60, 60)
    sar = write_raster(
        tmp_path / "geo.tif", np.full((1, 60, 60), -8.0, "float32"), crs="EPSG:4326", transform=transform
    )
    with RasterPair(opt, sar) as pair:
        assert pair.reprojected and "CRS" in pair.alignment_reason
        _, values, valid = pair.read(pair.window)
    assert valid[5:-5, 5:-5].all()
    np.testing.assert_allclose(values[0][valid], -8.0)


def test_nodata_from_declaration_nan_and_overrides(tmp_path):
    opt_data = np.full((2, 8, 8), 7, "uint16")
    opt_data[0, 0, :] = 0  # declared nodata in one band is enough
    opt_data[:, 1, :] = 9  # wrongly undeclared fill value
    sar_data = np.full((1, 8, 8), -5.0, "float32")
    sar_data[0, 2, :] = np.nan
    sar_data[0, 3, :] = -9999
    opt = write_raster(tmp_path / "o.tif", opt_data, nodata=0)
    sar = write_raster(tmp_path / "s.tif", sar_data)
    with RasterPair(opt, sar) as pair:
        valid = pair.read(Window(0, 0, 8, 8))[2]
    assert not valid[0].any() and valid[1].all() and not valid[2].any() and valid[3].all()
    with RasterPair(opt, sar, opt_nodata=9, sar_nodata=-9999) as pair:
        valid = pair.read(Window(0, 0, 8, 8))[2]
    assert valid[0].all() and not valid[1].any() and not valid[2].any() and not valid[3].any()
    assert valid[4:].all()


def test_linear_power_sar_is_detected_and_converted_to_db(pair_files, tmp_path):
    opt, _ = pair_files
    power = np.random.default_rng(1).gamma(2.0, 0.05, (1, 40, 50)).astype("float32")
    power[0, 0, 0] = 0.0
    sar = write_raster(tmp_path / "lin.tif", power)
    with RasterPair(opt, sar) as pair:
        assert pair.sar_scaling.input == "linear" and pair.sar_scaling.detected
        assert "converting to dB" in pair.alignment()["sar_scale"]["message"]
        _, db, _ = pair.read(Window(0, 0, 50, 40))
    np.testing.assert_allclose(db[0, 1:, :], 10 * np.log10(power[0, 1:, :]), rtol=1e-5)
    assert db[0, 0, 0] == pytest.approx(DB_FLOOR, abs=1e-4)
    with RasterPair(opt, sar, sar_scale="db") as pair:
        assert not pair.sar_scaling.converts


def test_db_sar_is_left_alone():
    assert decide_sar_scale(np.array([-20.0, -12.0, 3.0]), "auto").input == "db"
    assert decide_sar_scale(np.array([0.0, 0.2, 40.0] * 50), "auto").input == "db"  # too large for power
    assert decide_sar_scale(np.array([]), "auto").input == "db"
    assert np.isnan(linear_to_db(np.array([np.nan], "float32"))[0])
