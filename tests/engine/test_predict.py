"""predict_scene end to end on real GeoTIFFs with stand-in predictors (per-pixel functions of the inputs)."""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from mdseg.data.normalise import Normalisation
from mdseg.engine.predict import PredictOptions, PredictOutputs, TileModel, predict_scene
from mdseg.errors import OutputExistsError

CLASSES = ["water", "forest", "city"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bigearthnet-example"


def write_raster(path: Path, data: np.ndarray, *, transform=None, nodata=None, crs="EPSG:32633") -> Path:
    """Write (C, H, W) `data` as a GeoTIFF on a 10 m UTM grid (or `transform`)."""
    transform = transform or from_origin(500_000, 4_000_000, 10, 10)
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs=crs, transform=transform)
    with rasterio.open(path, "w", nodata=nodata, **profile) as dst:
        dst.write(data)
    return path


def scene(folder: Path, h: int, w: int, seed: int = 0) -> tuple[Path, Path]:
    """Optical band 1 holds the true class id (0..2), band 2 noise, nodata 99; SAR is dB noise."""
    rng = np.random.default_rng(seed)
    opt = np.stack([rng.integers(0, 3, (h, w)), rng.integers(100, 1000, (h, w))]).astype("uint16")
    sar = rng.normal(-12, 3, (1, h, w)).astype("float32")
    return write_raster(folder / "opt.tif", opt, nodata=99), write_raster(folder / "sar.tif", sar)


def onehot_predictor(opt, sar, generators, steps, samples):
    """Translation-equivariant: probability 0.7 on the class in optical band 1, 0.15 on the others."""
    cls = opt[:, 0].round().long().clamp(0, 2)
    return 0.15 + 0.55 * torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float()


def soft_predictor(opt, sar, generators, steps, samples):
    """Per-pixel softmax of the inputs: continuous probabilities to check the blend's normalisation."""
    return torch.softmax(torch.cat([opt[:, :2] / 500.0, sar / 5.0], dim=1), dim=1)


def run(opt, sar, out, predictor=onehot_predictor, **kwargs):
    """predict_scene, the keyword arguments sorted into the model, outputs and options they belong to."""
    model = TileModel(predictor, CLASSES, PALETTE, **pick(kwargs, "normalise", "inference_scale"))
    paths = {k.removesuffix("_path"): v for k, v in pick(kwargs, "prob_path", "confidence_path", "vector_path").items()}
    outputs = PredictOutputs(out, **paths, **pick(kwargs, "overwrite"))
    run_args = {"progress": False, **pick(kwargs, "progress", "run_info", "device")}
    return predict_scene(opt, sar, outputs, model, PredictOptions(**kwargs), **run_args)


def pick(kwargs: dict, *names: str) -> dict:
    """Remove `names` from `kwargs`; return those present."""
    return {name: kwargs.pop(name) for name in names if name in kwargs}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    tile=st.sampled_from([8, 16, 32, 64]),
    overlap_frac=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
    batch=st.integers(1, 5),
)
def test_tiled_map_equals_the_per_pixel_truth_for_any_tiling(h, w, tile, overlap_frac, batch):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        opt, sar = scene(folder, h, w, seed=h * 100 + w)
        run(opt, sar, folder / "map.tif", tile=tile, overlap=int(tile * overlap_frac), batch_size=batch)
        np.testing.assert_array_equal(read(folder / "map.tif")[0], read(opt)[0])


def test_blended_probabilities_equal_the_untiled_ones(tmp_path):
    opt, sar = scene(tmp_path, 90, 110)
    run(opt, sar, tmp_path / "whole.tif", soft_predictor, tile=128, overlap=0, prob_path=tmp_path / "pw.tif")
    run(opt, sar, tmp_path / "tiled.tif", soft_predictor, tile=32, overlap=12, prob_path=tmp_path / "pt.tif")
    whole, tiled = read(tmp_path / "pw.tif").astype(int), read(tmp_path / "pt.tif").astype(int)
    assert np.abs(whole - tiled).max() <= 1  # uint8 rounding of equal floats
    assert (read(tmp_path / "whole.tif") == read(tmp_path / "tiled.tif")).mean() > 0.999


def test_output_is_a_valid_cog_on_the_optical_grid_with_palette_and_class_names(tmp_path):
    opt, sar = scene(tmp_path, 700, 1100)
    out = tmp_path / "map.tif"
    result = run(opt, sar, out, tile=256, overlap=32)
    assert cog_validate(str(out)) == (True, [], [])
    with rasterio.open(opt) as src_opt, rasterio.open(out) as src:
        assert src.crs == src_opt.crs and src.transform == src_opt.transform
        assert (src.width, src.height, src.count, src.dtypes[0], src.nodata) == (1100, 700, 1, "uint8", 255)
        assert src.profile["tiled"] and src.compression.value == "DEFLATE" and src.overviews(1)[0] == 2
        overview = src.read(1, out_shape=(350, 550))  # served from the first overview
        assert set(np.unique(overview)) <= {0, 1, 2}  # mode resampling keeps class values
        assert src.colormap(1)[1] == (0, 128, 0, 255)
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == CLASSES and src.tags(1)["CLASS_2"] == "city"
    rat = ET.parse(f"{out}.aux.xml").getroot()
    assert [c.text for c in rat.iter("Category")] == CLASSES
    rows = [[f.text for f in row] for row in rat.iter("Row")]
    assert rows[1] == ["1", "forest", "0", "128", "0"]
    assert [c["name"] for c in result.classes] == CLASSES
    assert sum(c["pixels"] for c in result.classes) == 700 * 1100
    assert sum(c["area_km2"] for c in result.classes) == pytest.approx(700 * 1100 * 100 / 1e6)


def test_sidecar_records_the_run(tmp_path):
    opt, sar = scene(tmp_path, 40, 40)
    result = run(opt, sar, tmp_path / "map.tif", seed=7, run_info={"device": "cpu"})
    sidecar = json.loads((tmp_path / "map.json").read_text())
    assert sidecar["options"]["seed"] == 7 and sidecar["device"] == "cpu"
    assert sidecar["inputs"]["optical"] == str(opt) and "rasterio" in sidecar["versions"]
    assert sidecar["classes"] == result.classes and result.sidecar == str(tmp_path / "map.json")


def test_seeded_output_does_not_depend_on_batch_size_and_follows_the_seed(tmp_path):
    opt, sar = scene(tmp_path, 80, 90)

    def noisy(opt, sar, generators, steps, samples):
        noise = torch.stack([torch.randn((3, *opt.shape[-2:]), generator=g) for g in generators])
        return torch.softmax(noise, dim=1)

    maps = {}
    for name, batch, seed in (("b1", 1, 0), ("b4", 4, 0), ("b9", 9, 0), ("s1", 4, 1)):
        run(opt, sar, tmp_path / f"{name}.tif", noisy, tile=32, overlap=8, batch_size=batch, seed=seed)
        maps[name] = read(tmp_path / f"{name}.tif")
    np.testing.assert_array_equal(maps["b1"], maps["b4"])
    np.testing.assert_array_equal(maps["b1"], maps["b9"])
    assert (maps["b1"] != maps["s1"]).mean() > 0.3


def test_nodata_propagates_and_all_nodata_tiles_are_skipped(tmp_path):
    opt_path, sar_path = scene(tmp_path, 64, 96)
    with rasterio.open(opt_path, "r+") as dst:
        data = dst.read()
        data[:, :, :32] = 99  # left third: optical nodata
        dst.write(data)
    with rasterio.open(sar_path, "r+") as dst:
        sar = dst.read()
        sar[0, 10, 40:50] = np.nan  # a SAR hole
        dst.write(sar)
    calls = []

    def counting(opt, sar, generators, steps, samples):
        calls.append(opt.shape[0])
        return onehot_predictor(opt, sar, generators, steps, samples)

    result = run(opt_path, sar_path, tmp_path / "map.tif", counting, tile=32, overlap=0, batch_size=1)
    out = read(tmp_path / "map.tif")[0]
    assert (out[:, :32] == 255).all() and (out[10, 40:50] == 255).all()
    assert (out[:, 32:] != 255).sum() == 64 * 64 - 10
    assert result.tiles_total == 6 and result.tiles_skipped == 2 and result.tiles_run == 4 and sum(calls) == 4


def test_prediction_is_limited_to_the_sar_footprint(tmp_path):
    opt, _ = scene(tmp_path, 60, 80)
    # 20 m SAR covering only the right half of the optical scene (columns 40..79).
    sar = write_raster(
        tmp_path / "half.tif", np.full((1, 30, 20), -10.0, "float32"), transform=from_origin(500_400, 4_000_000, 20, 20)
    )
    result = run(opt, sar, tmp_path / "map.tif", tile=32, overlap=8)
    out = read(tmp_path / "map.tif")[0]
    assert (out[:, :40] == 255).all()
    np.testing.assert_array_equal(out[:, 41:], read(opt)[0][:, 41:])
    assert result.alignment["sar_reprojected"] and result.alignment["window"]["col_off"] == 40


def test_probability_and_confidence_rasters(tmp_path):
    opt, sar = scene(tmp_path, 50, 60)

    def with_spread(opt, sar, generators, steps, samples):
        return onehot_predictor(opt, sar, generators, steps, samples), torch.full(opt[:, 0].shape, 0.5)

    run(
        opt,
        sar,
        tmp_path / "map.tif",
        with_spread,
        samples=2,
        prob_path=tmp_path / "p.tif",
        confidence_path=tmp_path / "c.tif",
    )
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.descriptions == tuple(CLASSES) and src.dtypes[0] == "uint8"
        probs = src.read()
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.descriptions == ("max probability", "sample disagreement")
        conf = src.read()
    truth = read(opt)[0]
    assert (np.take_along_axis(probs, truth[None].astype(int), 0) == 178).all()  # round(0.7 * 254)
    assert (conf[0] == 178).all() and (conf[1] == 127).all()


def test_vector_polygons_are_dissolved_per_class_with_areas(tmp_path):
    import pyogrio

    h, w = 1100, 40  # taller than one polygonising block, so the upper-left square spans a block seam
    cls = np.zeros((h, w), "uint16")
    cls[1000:1050, 10:30] = 2
    opt = write_raster(tmp_path / "opt.tif", np.stack([cls, cls]))
    sar = write_raster(tmp_path / "sar.tif", np.zeros((1, h, w), "float32"))
    run(opt, sar, tmp_path / "map.tif", tile=256, overlap=32, vector_path=tmp_path / "poly.gpkg")
    meta = pyogrio.read_info(tmp_path / "poly.gpkg")
    assert meta["features"] == 2 and rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.crs.CRS.from_epsg(32633)
    _, _, geometry, fields = pyogrio.raw.read(tmp_path / "poly.gpkg")
    by_class = dict(zip(fields[0], fields[2], strict=True))
    assert by_class[2] == pytest.approx(50 * 20 * 100) and by_class[0] == pytest.approx((h * w - 1000) * 100)
    assert list(fields[1]) == ["water", "city"] or sorted(fields[1]) == ["city", "water"]


def test_existing_output_is_refused_and_kept(tmp_path):
    opt, sar = scene(tmp_path, 20, 20)
    out = tmp_path / "map.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        run(opt, sar, out)
    assert out.read_bytes() == b"precious"
    run(opt, sar, out, overwrite=True)
    assert read(out).shape == (1, 20, 20)


def test_interruption_leaves_no_partial_output(tmp_path):
    opt, sar = scene(tmp_path, 100, 100)
    before = set(tmp_path.iterdir())
    calls = 0

    def interrupted(opt, sar, generators, steps, samples):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return onehot_predictor(opt, sar, generators, steps, samples)

    with pytest.raises(KeyboardInterrupt):
        extra = {
            "prob_path": tmp_path / "p.tif",
            "confidence_path": tmp_path / "c.tif",
            "vector_path": tmp_path / "v.gpkg",
        }
        run(opt, sar, tmp_path / "map.tif", interrupted, tile=32, overlap=8, batch_size=2, **extra)
    assert set(tmp_path.iterdir()) == before


def test_inference_scale_resamples_tiles_and_probabilities_back(tmp_path):
    opt, sar = scene(tmp_path, 40, 40)
    sizes = []

    def sized(opt, sar, generators, steps, samples):
        sizes.append(tuple(opt.shape[-2:]))
        return torch.full((opt.shape[0], 3, *opt.shape[-2:]), 1 / 3).index_fill_(1, torch.tensor([1]), 0.5)

    run(opt, sar, tmp_path / "map.tif", sized, tile=32, overlap=8, inference_scale=2.0)
    assert set(sizes) == {(64, 64)} and (read(tmp_path / "map.tif") == 1).all()


def test_normalisation_reaches_the_predictor(tmp_path):
    opt, sar = scene(tmp_path, 16, 16)
    seen = {}

    def spy(opt, sar, generators, steps, samples):
        seen["opt"], seen["sar"] = opt.clone(), sar.clone()
        return onehot_predictor(opt, sar, generators, steps, samples)

    norm = Normalisation(opt_mean=[0, 500], opt_std=[1, 1000], sar_mean=[-12], sar_std=[3])
    run(opt, sar, tmp_path / "map.tif", spy, tile=16, overlap=0, normalise=norm)
    raw = read(opt).astype("float32")
    np.testing.assert_allclose(seen["opt"][0, 1].numpy(), (raw[1] - 500) / 1000, rtol=1e-6)
    assert abs(float(seen["sar"].mean())) < 0.2


@pytest.mark.skipif(not DATA.exists(), reason="shared sample data not present")
def test_real_sentinel_pair_runs_end_to_end(tmp_path):
    s1 = next((DATA / "BigEarthNet-S1-Example").iterdir())
    meta = json.loads(next(s1.glob("*_labels_metadata.json")).read_text())
    s2 = DATA / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
    bands = []
    for name in ("B04", "B03", "B02", "B08"):
        with rasterio.open(next(s2.glob(f"*_{name}.tif"))) as src:
            bands.append(src.read(1))
            profile = src.profile
    profile.update(count=4, driver="GTiff")
    opt = tmp_path / "s2_rgbn.tif"
    with rasterio.open(opt, "w", **profile) as dst:
        dst.write(np.stack(bands))
    sar = next(s1.glob("*_VV.tif"))

    def water_where_dark(opt, sar, generators, steps, samples):
        dark = (sar[:, 0] < -15).float()
        return torch.stack([dark, (1 - dark) * 0.6, (1 - dark) * 0.4], dim=1)

    norm = Normalisation(opt_mean=[0] * 4, opt_std=[10_000] * 4, sar_mean=[0], sar_std=[1])
    result = run(
        opt,
        sar,
        tmp_path / "map.tif",
        water_where_dark,
        tile=64,
        overlap=16,
        normalise=norm,
        vector_path=tmp_path / "v.geojson",
    )
    assert result.alignment["sar_scale"]["input"] == "db" and not result.alignment["sar_reprojected"]
    with rasterio.open(opt) as src_opt, rasterio.open(tmp_path / "map.tif") as src:
        assert src.crs == src_opt.crs and src.transform == src_opt.transform and src.shape == (120, 120)
        out = src.read(1)
    with rasterio.open(sar) as src:
        np.testing.assert_array_equal(out == 0, src.read(1) < -15)
    assert sum(c["pixels"] for c in result.classes) == 120 * 120
    assert (tmp_path / "v.geojson").stat().st_size > 0
