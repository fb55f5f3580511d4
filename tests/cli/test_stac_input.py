"""`mdseg predict --stac`: STAC items (made with pystac) as input — bands matched to the checkpoint's by name,
common name or polarisation; single-band assets stacked by a VRT, a multi-band asset read directly; items and
assets local or served over HTTP on the loopback address; batches of items."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.shutil
from range_server import served
from rasterio.transform import from_origin

from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.engine.options import PredictOptions
from mdseg.errors import InputFileError
from mdseg.io.stac_input import StacItem, match_item

SIZE = 96
FAST = ["--tile", "64", "--overlap", "16", "--steps", "1", "--quiet"]
S2 = {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir"}  # the tiny checkpoint's bands, in its order
COG = pystac.MediaType.COG


def write_cog(path: Path, data: np.ndarray, pixel: float = 10.0) -> Path:
    """(C, H, W) `data` as a COG on a UTM grid (`pixel` m), made by GDAL's COG driver."""
    c, h, w = data.shape
    transform = from_origin(500_000, 4_000_000, pixel, pixel)
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs="EPSG:32633", transform=transform)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        with mem.open() as src:
            rasterio.shutil.copy(src, path, driver="COG", compress="DEFLATE", blocksize=256)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tiny_checkpoint) -> Path:
    """One band per file (B04.tif, B03.tif, B02.tif, B08.tif, vv.tif, vh.tif), the four optical bands stacked in
    blue, green, red, nir order (bgrn.tif), and map.tif: their map from the files (B04, B03, B02, B08 + VV)."""
    root = tmp_path_factory.mktemp("stac")
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + x - y
    bands = {name: (1000 + 400 * (i + 1) * field * (-1) ** i).astype("uint16") for i, name in enumerate(S2)}
    for name, band in bands.items():
        write_cog(root / f"{name}.tif", band[None])
    write_cog(root / "bgrn.tif", np.stack([bands[n] for n in ("B02", "B03", "B04", "B08")]))
    write_cog(root / "vv.tif", (-12 + 6 * field)[None].astype("float32"))
    write_cog(root / "vh.tif", (-18 + 4 * field)[None].astype("float32"))
    options = PredictOptions(tile=64, overlap=16, steps=1, opt_bands=(3, 2, 1, 4))
    model = SceneModel.load(tiny_checkpoint, "cpu")
    model.predict(root / "bgrn.tif", root / "vv.tif", root / "map.tif", options, progress=False)
    return root


def band_asset(href: str, name: str | None = None, common: str | None = None, **extra) -> pystac.Asset:
    bands = [{k: v for k, v in (("name", name), ("common_name", common)) if v}] if name or common else None
    fields = {"eo:bands": bands} if bands else {}
    return pystac.Asset(href, media_type=COG, roles=["data"], extra_fields={**fields, **extra})


def write_item(folder: Path, item_id: str, assets: dict[str, pystac.Asset]) -> Path:
    """A STAC item (pystac) with `assets`, saved as folder/<id>.json with asset hrefs relative to it."""
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[[15, 36], [15.01, 36], [15.01, 36.01], [15, 36]]]},
        bbox=[15, 36, 15.01, 36.01],
        datetime=datetime(2024, 6, 1, tzinfo=timezone.utc),
        properties={},
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    path = folder / f"{item_id}.json"
    item.set_self_href(str(path))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    return path


def sentinel_assets(root: Path, drop: str | None = None) -> dict[str, pystac.Asset]:
    """Earth Search style: assets keyed by common name, eo:bands naming the Sentinel-2 band; a thumbnail and a
    'visual' true-colour asset beside them (never picked: a thumbnail is no raster, visual loses to data)."""
    assets = {
        common: band_asset(str(root / f"{name}.tif"), name, common) for name, common in S2.items() if name != drop
    }
    assets["vv"] = band_asset(str(root / "vv.tif"), **{"sar:polarizations": ["VV"]})
    assets["vh"] = band_asset(str(root / "vh.tif"), **{"sar:polarizations": ["VH"]})
    assets["thumbnail"] = pystac.Asset(str(root / "B04.tif"), media_type=pystac.MediaType.PNG, roles=["thumbnail"])
    visual = [{"name": n, "common_name": S2[n]} for n in ("B04", "B03", "B02")]
    assets["visual"] = pystac.Asset(
        str(root / "bgrn.tif"), media_type=COG, roles=["visual"], extra_fields={"eo:bands": visual}
    )
    return assets


def keyed_assets(root: Path) -> dict[str, pystac.Asset]:
    """Assets known by their keys only (Sentinel-2 names without leading zeros; a 'VV' key), no band metadata."""
    assets = {name.replace("0", ""): pystac.Asset(str(root / f"{name}.tif")) for name in S2}
    return {**assets, "VV": pystac.Asset(str(root / "vv.tif"))}


def stacked_assets(root: Path) -> dict[str, pystac.Asset]:
    """One 4-band asset described by STAC 1.1 `bands` (blue, green, red, nir order) and a SAR asset."""
    bands = [{"name": n, "eo:common_name": S2[n]} for n in ("B02", "B03", "B04", "B08")]
    reflectance = pystac.Asset(str(root / "bgrn.tif"), media_type=COG, roles=["data"], extra_fields={"bands": bands})
    return {"reflectance": reflectance, "vv": band_asset(str(root / "vv.tif"), "VV")}


def predict_item(mdseg, checkpoint: Path, item: str | Path, out: Path, *extra: object) -> tuple[int, str, str]:
    return mdseg("predict", "--stac", item, "--out", out, "--checkpoint", checkpoint, *FAST, *extra)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.mark.parametrize("assets", [sentinel_assets, keyed_assets, stacked_assets])
def test_an_items_bands_predict_the_map_of_the_same_files(tmp_path, scene, mdseg, tiny_checkpoint, assets):
    item = write_item(tmp_path, "S2_T33SVB", assets(scene))
    code, _, err = predict_item(mdseg, tiny_checkpoint, item, tmp_path / "m.tif")
    assert code == 0, err
    assert (tmp_path / "m.tif").read_bytes() == (scene / "map.tif").read_bytes()
    inputs = json.loads((tmp_path / "m.json").read_text())["inputs"]
    assert inputs["stac_item"] == str(item) and inputs["stac_id"] == "S2_T33SVB"
    assert [Path(b["href"]).name for b in inputs["sar"]] == ["vv.tif"]


def test_a_multi_band_asset_is_read_directly_in_the_checkpoints_band_order(scene):
    inputs = match_item(StacItem("item.json", item_of(stacked_assets(scene))), list(S2), ["VV"])
    assert {b.asset for b in inputs.optical} == {"reflectance"}
    assert [b.band for b in inputs.optical] == [3, 2, 1, 4]


def test_a_served_item_with_relative_asset_hrefs_predicts_the_same_map(tmp_path, scene, mdseg, tiny_checkpoint):
    write_item(scene, "served", sentinel_assets(scene))  # hrefs relative to the item: served beside it
    with served(scene, tmp_path / "access.log") as server:
        code, _, err = predict_item(mdseg, tiny_checkpoint, server.url("served.json"), tmp_path / "m.tif")
        assert server.bytes_sent("B08.tif") > 0  # read from the server, not the local folder
    assert code == 0, err
    assert (tmp_path / "m.tif").read_bytes() == (scene / "map.tif").read_bytes()
    inputs = json.loads((tmp_path / "m.json").read_text())["inputs"]
    assert inputs["stac_item"] == server.url("served.json")
    assert inputs["optical"][3] == {"asset": "nir", "href": server.url("B08.tif"), "band": 1}


def test_a_missing_band_is_one_line_naming_it_and_the_items_assets(tmp_path, scene, mdseg, tiny_checkpoint):
    item = write_item(tmp_path, "no_nir", sentinel_assets(scene, drop="B08"))
    code, _, err = predict_item(mdseg, tiny_checkpoint, item, tmp_path / "m.tif")
    line = one_error_line(err)
    assert code == 3 and "STAC item 'no_nir'" in line and "no optical band 'B08'" in line
    assets = (
        "red (B04/red), green (B03/green), blue (B02/blue), vv (VV), vh (VH), visual (B04/red, B03/green, B02/blue)"
    )
    assert line.endswith(f"its assets: {assets}.")
    assert not (tmp_path / "m.tif").exists()


def test_assets_on_different_grids_are_refused_in_one_line(tmp_path, scene, mdseg, tiny_checkpoint):
    coarse = write_cog(tmp_path / "B08_20m.tif", np.full((1, SIZE // 2, SIZE // 2), 1000, "uint16"), pixel=20.0)
    assets = sentinel_assets(scene)
    assets["nir"] = band_asset(str(coarse), "B08", "nir")
    code, _, err = predict_item(mdseg, tiny_checkpoint, write_item(tmp_path, "mixed", assets), tmp_path / "m.tif")
    line = one_error_line(err)
    assert code == 3 and "the optical assets are not on one grid" in line and "nir: 48×48 px of 20" in line


def test_band_numbers_are_refused_with_an_item(tmp_path, scene, mdseg, tiny_checkpoint):
    item = write_item(tmp_path, "S2", sentinel_assets(scene))
    code, _, err = predict_item(mdseg, tiny_checkpoint, item, tmp_path / "m.tif", "--opt-bands", "1,2,3,4")
    assert code == 2 and "do not apply to a STAC item" in one_error_line(err)


def test_a_folder_of_items_is_a_batch_writing_one_map_per_item_id(tmp_path, scene, mdseg, tiny_checkpoint):
    items = tmp_path / "items"
    items.mkdir()
    write_item(items, "S2_a", sentinel_assets(scene))
    write_item(items, "S2_b", stacked_assets(scene))
    out = tmp_path / "maps"
    code, _, err = mdseg("predict", "--stac", items, "--out-dir", out, "--checkpoint", tiny_checkpoint, *FAST)
    assert code == 0, err
    for name in ("S2_a", "S2_b"):
        assert (out / f"{name}_landcover.tif").read_bytes() == (scene / "map.tif").read_bytes()
        record = json.loads((out / f"{name}_landcover.json").read_text())
        assert record["inputs"]["stac_item"] == str(items / f"{name}.json")
    log = [json.loads(line) for line in (out / "predict_log.jsonl").read_text().splitlines()]
    assert [(e["scene"], e["status"]) for e in log] == [("S2_a", "written"), ("S2_b", "written")]


def test_a_batch_of_items_logs_a_failing_item_and_runs_the_others(tmp_path, scene, mdseg, tiny_checkpoint):
    good = write_item(tmp_path, "good", keyed_assets(scene))
    bad = write_item(tmp_path, "bad", sentinel_assets(scene, drop="B08"))
    out = tmp_path / "maps"
    args = ["--stac", good, "--stac", bad, "--out-dir", out, "--checkpoint", tiny_checkpoint, *FAST]
    code, _, err = mdseg("predict", *args)
    assert code == 4 and "1 of 2 scenes failed: bad (STAC item 'bad'" in one_error_line(err)
    assert (out / "good_landcover.tif").exists() and not (out / "bad_landcover.tif").exists()


def item_of(assets: dict[str, pystac.Asset]) -> pystac.Item:
    item = pystac.Item("x", None, None, datetime(2024, 6, 1, tzinfo=timezone.utc), {})
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def test_a_band_whose_common_name_says_otherwise_is_not_matched_by_name():
    # Landsat 5's B4 is near infrared: a Sentinel-2 checkpoint's B04 (red) must not take it.
    landsat = {"B4": band_asset("/d/B4.tif", "B4", "nir"), "B3": band_asset("/d/B3.tif", "B3", "red")}
    inputs = match_item(StacItem("i.json", item_of(landsat)), ["B04"], [])
    assert inputs.optical[0].asset == "B3"


def test_a_data_cog_is_preferred_to_a_visual_asset_and_to_jpeg_2000():
    assets = {
        "visual": pystac.Asset(
            "/d/tci.tif", media_type=COG, roles=["visual"], extra_fields={"eo:bands": [{"common_name": "red"}]}
        ),
        "red-jp2": band_asset("/d/B04.jp2", "B04", "red"),
        "red": band_asset("/d/B04.tif", "B04", "red"),
    }
    assets["red-jp2"].media_type = pystac.MediaType.JPEG2000
    inputs = match_item(StacItem("i.json", item_of(assets)), ["red"], [])
    assert inputs.optical[0].href == "/d/B04.tif"


@pytest.mark.parametrize(
    ("polarisations", "sar_names", "picked"),
    [
        (["VV", "VH"], ["sar"], ["VV"]),
        (["HH", "HV"], ["sar"], ["HH"]),
        (["VV", "VH"], ["sar1", "sar2"], ["VV", "VH"]),
        (["VV", "VH"], ["VH"], ["VH"]),
    ],
)
def test_sar_bands_are_picked_by_polarisation(polarisations, sar_names, picked):
    assets = {p.lower(): band_asset(f"/d/{p}.tif", **{"sar:polarizations": [p]}) for p in polarisations}
    inputs = match_item(StacItem("i.json", item_of(assets)), [], sar_names)
    assert [Path(b.href).stem for b in inputs.sar] == picked


def test_a_missing_polarisation_names_it_and_the_assets():
    item = StacItem("i.json", item_of({"hh": band_asset("/d/HH.tif", **{"sar:polarizations": ["HH"]})}))
    with pytest.raises(InputFileError, match=r"has no SAR band of polarisation VV, .*its assets: hh \(HH\)\.$"):
        match_item(item, [], ["VV"])
