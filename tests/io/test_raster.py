"""The one reader's validity rules (`mdseg.io.raster`): each band by its own mask, overrides, decimated reads."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from mdseg.errors import ClassValueError
from mdseg.geo.pair import RasterPair
from mdseg.io.raster import read_bands, read_classes

PROFILE = dict(driver="GTiff", width=8, height=6, crs="EPSG:32633", transform=from_origin(5e5, 4e6, 10, 10))


def two_band_vrt(folder, band2_nodata: float):
    """A 2-band VRT over a plain GeoTIFF in which only band 2 declares a nodata value (GDAL allows that per band
    in a VRT, unlike in a GeoTIFF). Band 1 counts 0..47; band 2 is 7 in its top-left 2×3 corner, 1 elsewhere."""
    data = np.stack([np.arange(48).reshape(6, 8), np.ones((6, 8))]).astype("float32")
    data[1, :2, :3] = band2_nodata
    with rasterio.open(folder / "base.tif", "w", count=2, dtype="float32", **PROFILE) as dst:
        dst.write(data)
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{b}">{nodata}<SimpleSource>'
        f'<SourceFilename relativeToVRT="1">base.tif</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b, nodata in ((1, ""), (2, f"<NoDataValue>{band2_nodata}</NoDataValue>"))
    )
    transform = ", ".join(str(v) for v in PROFILE["transform"].to_gdal())
    with rasterio.open(folder / "base.tif") as src:
        srs = src.crs.to_wkt()
    vrt = folder / "two.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="8" rasterYSize="6"><SRS>{srs}</SRS><GeoTransform>{transform}</GeoTransform>'
        f"{bands}</VRTDataset>"
    )
    return vrt


def test_each_band_is_judged_by_its_own_nodata(tmp_path):
    vrt = two_band_vrt(tmp_path, band2_nodata=7)
    with rasterio.open(vrt) as src:
        _, valid = read_bands(src, [1, 2])
    assert valid[0].all()  # band 1 declares no nodata
    assert not valid[1, :2, :3].any() and valid[1].sum() == 48 - 6


def test_a_pair_drops_pixels_where_only_the_second_optical_band_is_nodata(tmp_path):
    vrt = two_band_vrt(tmp_path, band2_nodata=7)
    sar = tmp_path / "sar.tif"
    with rasterio.open(sar, "w", count=1, dtype="float32", **PROFILE) as dst:
        dst.write(np.full((1, 6, 8), -12, "float32"))
    with RasterPair(vrt, sar) as pair:
        _, _, valid = pair.read(Window(0, 0, 8, 6))
    assert not valid[:2, :3].any() and valid.sum() == 48 - 6


def test_a_nodata_override_replaces_the_declared_value_but_keeps_an_internal_mask(tmp_path):
    path = tmp_path / "masked.tif"
    data = np.full((1, 6, 8), 5, "float32")
    data[0, 0, 0] = 0  # the declared nodata value
    data[0, 5, 7] = 9  # the override
    with rasterio.open(path, "w", count=1, dtype="float32", nodata=0, **PROFILE) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        _, declared = read_bands(src, [1])
        _, overridden = read_bands(src, [1], nodata=9)
    assert not declared[0, 0, 0] and declared[0, 5, 7]
    assert overridden[0, 0, 0] and not overridden[0, 5, 7]

    internal = tmp_path / "internal.tif"
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(internal, "w", count=1, dtype="float32", **PROFILE) as dst,
    ):
        dst.write(np.full((1, 6, 8), 5, "float32"))
        mask = np.full((6, 8), 255, "uint8")
        mask[2, 2] = 0
        dst.write_mask(mask)
    with rasterio.open(internal) as src:
        _, valid = read_bands(src, [1], nodata=9)
    assert not valid[0, 2, 2] and valid.sum() == 47


def test_a_decimated_read_never_invents_valid_pixels(tmp_path):
    path = tmp_path / "half.tif"
    data = np.full((1, 6, 8), 3, "float32")
    data[0, :, :4] = -1
    with rasterio.open(path, "w", count=1, dtype="float32", nodata=-1, **PROFILE) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        values, valid = read_bands(src, [1], out_shape=(3, 4))
    assert not valid[0, :, :2].any() and valid[0, :, 2:].all()
    assert (values[valid] == 3).all()


def test_class_rasters_with_fractional_values_are_refused_with_their_name(tmp_path):
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", count=1, dtype="float32", **PROFILE) as dst:
        dst.write(np.full((1, 6, 8), 1.5, "float32"))
    with rasterio.open(path) as src, pytest.raises(ClassValueError, match="labels.tif"):
        read_classes(src, role="label")
