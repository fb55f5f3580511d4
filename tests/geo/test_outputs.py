"""What GIS readers find in a run's outputs (as `gdalinfo`/`ogrinfo` would report it, read through rasterio,
pyogrio, sqlite3 and pystac): probabilities and confidence as scaled fractions with nodata and no mask band;
GeoJSON per RFC 7946; GeoPackage 1.2 holding its QGIS style; a STAC Item linking every output; `--co` creation
options applied to every raster, unknown ones refused in one line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pyogrio
import pystac
import pytest
import rasterio
import torch
from rasterio.enums import MaskFlags
from rasterio.transform import from_origin

from mdseg.engine.predict import PredictOptions, PredictOutputs, TileModel, predict_scene
from mdseg.errors import OptionError

CLASSES = ["water", "forest", "city"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]


def predictor(opt, sar, generators, steps, samples):
    """Probability 0.7 on the class in optical band 1, 0.15 on the others."""
    cls = opt[:, 0].round().long().clamp(0, 2)
    return 0.15 + 0.55 * torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float()


def scene(folder: Path, h: int = 30, w: int = 40) -> tuple[Path, Path]:
    """Optical band 1: class ids in vertical stripes, the first 8 columns nodata (99); SAR zeros; 10 m UTM."""
    cls = np.repeat(np.arange(w) * 3 // w, h).reshape(w, h).T.astype("uint16")
    cls[:, :8] = 99
    transform = from_origin(500_000, 4_000_000, 10, 10)
    paths = []
    for name, data, nodata in (("opt", np.stack([cls, cls]), 99), ("sar", np.zeros((1, h, w), "float32"), None)):
        profile = dict(driver="GTiff", width=w, height=h, count=data.shape[0], dtype=data.dtype, crs="EPSG:32633")
        with rasterio.open(folder / f"{name}.tif", "w", transform=transform, nodata=nodata, **profile) as dst:
            dst.write(data)
        paths.append(folder / f"{name}.tif")
    return paths[0], paths[1]


def run(folder: Path, co: tuple[str, ...] = (), **outputs: Path):
    opt, sar = scene(folder)
    model = TileModel(predictor, CLASSES, PALETTE)
    options = PredictOptions(tile=32, overlap=8, co=co)
    return predict_scene(opt, sar, PredictOutputs(folder / "map.tif", **outputs), model, options, progress=False)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rasters")
    run(folder, prob=folder / "p.tif", confidence=folder / "c.tif")
    return folder


@pytest.mark.parametrize("name", ["p.tif", "c.tif"])
def test_probabilities_and_confidence_carry_scale_offset_and_nodata_not_a_mask(rasters, name):
    with rasterio.open(rasters / name) as src:
        assert set(src.scales) == {1 / 254} and set(src.offsets) == {0.0} and src.nodata == 255
        assert all(flags == [MaskFlags.nodata] for flags in src.mask_flag_enums)
        data = src.read(1)
    assert (data[:, :8] == 255).all()  # outside the optical footprint
    assert data[:, 8:].max() < 255


def test_scaled_values_are_the_probabilities(rasters):
    with rasterio.open(rasters / "c.tif") as src:
        confidence = src.read(1, masked=True) * src.scales[0] + src.offsets[0]
    assert confidence.mask[:, :8].all() and not confidence.mask[:, 8:].any()
    assert np.allclose(confidence[:, 8:], 0.7, atol=0.5 / 254)


def test_gdal_statistics_leave_nodata_out(rasters):
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(rasters / "c.tif") as src:  # no .aux.xml left behind
        stats = src.stats(indexes=[1], approx=False)[0]
    assert stats.min == stats.max == 178  # round(0.7 × 254): the nodata columns do not count as 0


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    """A run writing GeoJSON polygons and one writing a GeoPackage, in one folder each; the folder of both."""
    folder = tmp_path_factory.mktemp("vectors")
    for kind in ("geojson", "gpkg"):
        (folder / kind).mkdir()
        run(folder / kind, vector=folder / f"v.{kind}")
    return folder


def test_geojson_is_rfc7946_lon_lat_without_a_crs_member(vectors):
    data = json.loads((vectors / "v.geojson").read_text())
    assert "crs" not in data and data["features"]
    lons, lats = np.concatenate([np.array(f["geometry"]["coordinates"][0]) for f in data["features"]]).T
    assert np.all((lons > 14.9) & (lons < 15.1)) and np.all((lats > 36.0) & (lats < 36.2))  # UTM 33N, 4000 km N
    assert pyogrio.read_info(vectors / "v.geojson")["crs"] in ("EPSG:4326", "OGC:CRS84")


def test_geopackage_is_version_1_2(vectors):
    with sqlite3.connect(vectors / "v.gpkg") as db:
        application_id, user_version = (
            db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version")
        )
    assert (application_id, user_version) == (0x47504B47, 10200)  # 'GPKG', 1.2.0


def test_geopackage_holds_its_class_style_as_qgis_default(vectors):
    with sqlite3.connect(vectors / "v.gpkg") as db:
        rows = db.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles").fetchall()
        registered = db.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("landcover", "geom", 1) and registered == [("attributes",)]
    assert 'attr="class_id"' in rows[0][3] and all(f'label="{name}"' in rows[0][3] for name in CLASSES)


def test_stac_item_round_trips_with_relative_hrefs_to_every_output(rasters):
    item = pystac.Item.from_file(str(rasters / "map.stac.json"))
    assert item.id == "map" and item.to_dict(include_self_link=False, transform_hrefs=False) == json.loads(
        (rasters / "map.stac.json").read_text()
    )
    hrefs = {key: asset.href for key, asset in item.assets.items()}
    assert all(href.startswith("./") for href in hrefs.values()), hrefs
    assert all(Path(asset.get_absolute_href()).is_file() for asset in item.assets.values())
    written = {p.name for p in rasters.iterdir()} - {"opt.tif", "sar.tif", "map.stac.json"}
    assert {Path(href).name for href in hrefs.values()} == written


def test_stac_item_describes_classes_fractions_and_provenance(rasters):
    data = json.loads((rasters / "map.stac.json").read_text())
    classes = data["assets"]["landcover"]["classification:classes"]
    assert [c["title"] for c in classes[:3]] == CLASSES and classes[3] == {
        "value": 255,
        "name": "nodata",
        "title": "no data",
        "nodata": True,
    }
    assert sum(c["count"] for c in classes[:3]) == 30 * 32  # the optical footprint: 8 nodata columns of 40
    bands = data["assets"]["probabilities"]["raster:bands"]
    assert len(bands) == 3 and bands[0]["scale"] == 1 / 254 and bands[0]["nodata"] == 255
    props = data["properties"]
    assert props["proj:code"] == "EPSG:32633" and props["mdseg:options"]["tile"] == 32
    assert "mdseg:version" in props and "mdseg:checkpoint_sha256" in props


def test_creation_options_apply_to_every_raster(tmp_path):
    run(tmp_path, co=("compress=zstd", "BLOCKSIZE=256"), prob=tmp_path / "p.tif", confidence=tmp_path / "c.tif")
    for name in ("map.tif", "p.tif", "c.tif"):
        with rasterio.open(tmp_path / name) as src:
            assert src.compression.value == "ZSTD" and src.block_shapes[0] == (256, 256), name
    record = json.loads((tmp_path / "map.json").read_text())
    assert record["options"]["co"] == ["COMPRESS=zstd", "BLOCKSIZE=256"]


@pytest.mark.parametrize(
    ("co", "says"),
    [
        ("COMPRESS", "--co takes KEY=VALUE"),
        ("TILED=YES", "--co TILED: GDAL's COG driver has no such option; it takes "),
        ("TARGET_SRS=EPSG:4326", "--co TARGET_SRS would change the raster's grid"),
        ("COMPRESS=FOO", "--co COMPRESS=FOO: GDAL's COG driver takes COMPRESS one of NONE, LZW, JPEG, DEFLATE"),
    ],
)
def test_creation_options_the_cog_driver_does_not_take_are_refused(co, says):
    with pytest.raises(OptionError, match=says.replace("(", r"\(")) as refused:
        PredictOptions(co=(co,))
    assert "\n" not in str(refused.value)


def test_cli_refuses_an_unknown_creation_option_in_one_line(tmp_path, mdseg):
    opt, sar = scene(tmp_path)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "m.tif", "--co", "TILED=YES")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--co TILED" in lines[0], err
    assert not (tmp_path / "m.tif").exists()
