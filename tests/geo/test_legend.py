"""GDAL itself reads the map's legend: class names in band tags, colour table, and the `.aux.xml` RAT and categories.

rasterio exposes band tags, descriptions, the colour table and the files GDAL opened (`ds.files`, which lists a
sidecar GDAL found), but not raster attribute tables or category names. For those, the GDAL library rasterio is
linked against is called directly through ctypes: what QGIS and gdalinfo would see.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from mdseg.engine.predict import PredictOptions, TileModel, predict_scene

# Names with characters XML must escape, and a non-ASCII one.
CLASSES = ["water", "forest <dense>", "city & roads", "prairie — dry"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0), (230, 200, 90)]


def class_of_band_1(opt, sar, generators, steps, samples):
    """Stand-in model: probability 0.7 on the class id held in optical band 1."""
    cls = opt[:, 0].round().long().clamp(0, len(CLASSES) - 1)
    return 0.1 + 0.6 * torch.nn.functional.one_hot(cls, len(CLASSES)).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def class_map(tmp_path_factory) -> Path:
    """A predicted map of a 48×48 scene in which every class occurs."""
    folder = tmp_path_factory.mktemp("legend")
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=48, height=48, crs="EPSG:32633", transform=from_origin(5e5, 4e6, 10, 10))
    with rasterio.open(folder / "opt.tif", "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(rng.integers(0, len(CLASSES), (1, 48, 48)).astype("uint8"))
    with rasterio.open(folder / "sar.tif", "w", count=1, dtype="float32", **profile) as dst:
        dst.write(rng.normal(-12, 3, (1, 48, 48)).astype("float32"))
    out = folder / "map.tif"
    predict_scene(
        folder / "opt.tif", folder / "sar.tif", out, TileModel(class_of_band_1, CLASSES, PALETTE),
        PredictOptions(tile=32, overlap=8), progress=False,
    )  # fmt: skip
    return out


def test_rasterio_reads_class_names_descriptions_and_colours_and_gdal_found_the_sidecar(class_map):
    with rasterio.open(class_map) as ds:
        tags = ds.tags(1)
        assert [tags[f"CLASS_{i}"] for i in range(len(CLASSES))] == CLASSES
        assert json.loads(tags["CLASS_NAMES"]) == CLASSES
        assert ds.descriptions == ("land cover class",)
        assert [ds.colormap(1)[i][:3] for i in range(len(CLASSES))] == PALETTE
        assert ds.colormap(1)[255] == (0, 0, 0, 0)
        assert str(class_map) + ".aux.xml" in ds.files  # GDAL opened our PAM sidecar with the map


def _libgdal() -> ctypes.CDLL:
    """The GDAL library this process already loaded for rasterio (so the same drivers and version)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps (Linux) to find rasterio's GDAL library")
    # Other packages (pyogrio) may bring their own GDAL: take the one whose version is rasterio's.
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "libgdal" in line.split("/")[-1]}
    libs = []
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        lib.GDALVersionInfo.restype, lib.GDALVersionInfo.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
        if lib.GDALVersionInfo(b"RELEASE_NAME").decode() == rasterio.__gdal_version__:
            libs.append(lib)
    if len(libs) != 1:
        pytest.skip(f"could not tell which of {sorted(paths)} is rasterio's GDAL {rasterio.__gdal_version__}")
    lib = libs[0]
    signatures = {
        "GDALOpen": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
        "GDALClose": (None, [ctypes.c_void_p]),
        "GDALGetRasterBand": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
        "GDALGetMetadata": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        "GDALGetRasterCategoryNames": (ctypes.POINTER(ctypes.c_char_p), [ctypes.c_void_p]),
        "GDALGetDefaultRAT": (ctypes.c_void_p, [ctypes.c_void_p]),
        "GDALRATGetRowCount": (ctypes.c_int, [ctypes.c_void_p]),
        "GDALRATGetColumnCount": (ctypes.c_int, [ctypes.c_void_p]),
        "GDALRATGetNameOfCol": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]),
        "GDALRATGetUsageOfCol": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
        "GDALRATGetValueAsString": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]),
        "CPLErrorReset": (None, []),
        "CPLGetLastErrorType": (ctypes.c_int, []),
        "CPLGetLastErrorMsg": (ctypes.c_char_p, []),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    lib.GDALAllRegister()
    return lib


@pytest.fixture
def gdal_band(class_map):
    """(libgdal, band handle) of the map's band 1, opened read-only by GDAL with no error raised on the way."""
    lib = _libgdal()
    lib.CPLErrorReset()
    ds = lib.GDALOpen(str(class_map).encode(), 0)
    assert ds, lib.CPLGetLastErrorMsg()
    try:
        band = lib.GDALGetRasterBand(ds, 1)
        # gdalinfo reads metadata first; GDAL's GeoTIFF driver loads the .aux.xml lazily on such a call (and not
        # on GetCategoryNames alone, in GDAL 3.10), so do as gdalinfo and QGIS do.
        lib.GDALGetMetadata(band, None)
        yield lib, band
        assert lib.CPLGetLastErrorType() < 2, lib.CPLGetLastErrorMsg()  # nothing above CE_Debug/CE_Warning
    finally:
        lib.GDALClose(ds)


def test_gdal_reads_the_raster_attribute_table_with_names_and_colours(gdal_band):
    lib, band = gdal_band
    rat = lib.GDALGetDefaultRAT(band)
    assert rat, "GDAL found no raster attribute table"
    columns = [lib.GDALRATGetNameOfCol(rat, c).decode() for c in range(lib.GDALRATGetColumnCount(rat))]
    assert columns == ["Value", "Class", "Red", "Green", "Blue"]
    # GDAL field usages: 5 min-max (the value), 2 name, 6/7/8 red/green/blue — what QGIS keys its legend on.
    assert [lib.GDALRATGetUsageOfCol(rat, c) for c in range(len(columns))] == [5, 2, 6, 7, 8]
    rows = [
        [lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(len(columns))]
        for r in range(lib.GDALRATGetRowCount(rat))
    ]
    assert rows == [[str(i), name, *map(str, PALETTE[i])] for i, name in enumerate(CLASSES)]


def test_gdal_reads_the_category_names(gdal_band):
    lib, band = gdal_band
    names = lib.GDALGetRasterCategoryNames(band)
    assert names, "GDAL found no category names"
    found = []
    while names[len(found)] is not None:
        found.append(names[len(found)].decode())
    assert found == CLASSES
