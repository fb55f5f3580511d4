"""The synthetic scene generator: deterministic, georeferenced, WHU-style classes, a dataset `find_dataset` reads,
the `mdseg synth` command, and the shipped sample it reproduces."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from mdseg.data import find_dataset
from mdseg.data.catalog import WHU_CLASSES, WHU_PALETTE
from mdseg.errors import OptionError, OutputExistsError
from mdseg.synth import generate_scene, synthesize_dataset, synthesize_scene

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "synthetic"
SAMPLE_SEED, SAMPLE_SIZE = 7, 1024


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_the_same_seed_writes_byte_identical_files(tmp_path):
    a = synthesize_scene(tmp_path / "a", seed=3, size=128)
    b = synthesize_scene(tmp_path / "b", seed=3, size=128)
    for fa, fb in zip((a.opt, a.sar, a.label), (b.opt, b.sar, b.label), strict=True):
        assert fa.read_bytes() == fb.read_bytes(), fa.name


def test_another_seed_gives_another_scene():
    a, b = generate_scene(3, 128).arrays, generate_scene(4, 128).arrays
    assert not np.array_equal(a.opt, b.opt)
    assert not np.array_equal(a.label, b.label)


def test_files_are_named_and_georeferenced_on_one_5m_utm_grid(tmp_path):
    files = synthesize_scene(tmp_path, seed=1, size=96, name="demo")
    assert [p.name for p in (files.opt, files.sar, files.label)] == ["demo_opt.tif", "demo_sar.tif", "demo_label.tif"]
    grids = set()
    for path in (files.opt, files.sar, files.label):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32650
            assert src.res == (5.0, 5.0)
            grids.add((src.width, src.height, tuple(src.transform)))
    assert len(grids) == 1 and next(iter(grids))[:2] == (96, 96)


def test_bands_types_nodata_and_class_legend(tmp_path):
    files = synthesize_scene(tmp_path, seed=1, size=64)
    with rasterio.open(files.opt) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (4, "uint8", 0)
        assert src.descriptions == ("red", "green", "blue", "nir")
    with rasterio.open(files.sar) as src:
        assert (src.count, src.dtypes[0], src.descriptions[0]) == (1, "float32", "VV")
        assert np.isnan(src.nodata) and src.tags(1)["UNITS"] == "dB"
    with rasterio.open(files.label) as src:
        assert (src.dtypes[0], src.nodata) == ("uint8", 255)
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == list(WHU_CLASSES)
        assert src.colormap(1)[3][:3] == WHU_PALETTE[3]


def test_a_full_size_scene_has_every_class_and_plausible_values():
    a = generate_scene(11, 1024).arrays
    values = set(np.unique(a.label).tolist())
    assert values == set(range(len(WHU_CLASSES))) | {255}
    valid = a.label != 255
    water, city = a.label == 3, a.label == 1
    assert a.sar[water].mean() < -17 < a.sar[valid].mean() < a.sar[city].mean()
    nir_red = a.opt[3].astype(float) - a.opt[0]
    assert nir_red[a.label == 4].mean() > 40 > nir_red[city].mean()


def test_the_nodata_corner_is_unlabelled_and_empty_in_every_optical_band():
    a = generate_scene(5, 256).arrays
    corner = a.label == 255
    assert 0 < corner.mean() < 0.02
    assert (a.opt[:, corner] == 0).all()
    assert (a.opt[:, ~corner] > 0).all()
    assert np.isfinite(a.sar).all()


def test_dataset_has_the_generic_layout_with_whu_classes(tmp_path):
    data = synthesize_dataset(tmp_path / "ds", scenes=3, size=64, seed=2, val=1)
    assert len(data.train) == 2 and len(data.val) == 1
    train, val = find_dataset(tmp_path / "ds", "train"), find_dataset(tmp_path / "ds", "val")
    assert (train.kind, len(train.samples), len(val.samples)) == ("generic", 2, 1)
    assert train.classes.names == WHU_CLASSES and train.classes.palette == WHU_PALETTE
    assert dict(train.classes.label_map) == {k: k for k in range(7)}
    assert train.opt_band_names == ("red", "green", "blue", "nir") and train.sar_band_names == ("VV",)


def test_dataset_scenes_differ_from_the_single_scene_of_the_same_seed():
    assert not np.array_equal(generate_scene(7, 64, index=0).arrays.opt, generate_scene(7, 64).arrays.opt)


def test_existing_files_are_refused_and_left_alone_unless_overwrite(tmp_path):
    files = synthesize_scene(tmp_path, seed=1, size=64)
    before = files.sar.read_bytes()
    with pytest.raises(OutputExistsError):
        synthesize_scene(tmp_path, seed=2, size=64, name="synth_1")
    assert files.sar.read_bytes() == before
    synthesize_scene(tmp_path, seed=2, size=64, name="synth_1", overwrite=True)
    assert files.sar.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth_1_label.tif", "synth_1_opt.tif", "synth_1_sar.tif"]


def test_sizes_and_counts_out_of_range_are_refused(tmp_path):
    with pytest.raises(OptionError):
        synthesize_scene(tmp_path, seed=1, size=16)
    with pytest.raises(OptionError):
        synthesize_dataset(tmp_path, scenes=2, size=64, val=2)


def test_cli_writes_a_scene_then_refuses_to_overwrite_it(tmp_path, mdseg):
    code, out, _ = mdseg("synth", "--out", tmp_path, "--seed", 4, "--size", 64)
    assert code == 0 and "synth_4_label.tif" in out
    assert {p.name for p in tmp_path.iterdir()} == {"synth_4_opt.tif", "synth_4_sar.tif", "synth_4_label.tif"}
    code, _, err = mdseg("synth", "--out", tmp_path, "--seed", 4, "--size", 64)
    assert code == 3 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_cli_writes_a_dataset_when_asked_for_several_scenes(tmp_path, mdseg):
    code, out, _ = mdseg("synth", "--out", tmp_path, "--scenes", 3, "--val", 1, "--size", 64)
    assert code == 0 and "2 train + 1 val" in out
    assert len(find_dataset(tmp_path, "val").samples) == 1


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="sample_data/synthetic not present")
def test_the_shipped_sample_is_what_its_seed_generates():
    a = generate_scene(SAMPLE_SEED, SAMPLE_SIZE).arrays
    name = f"synth_{SAMPLE_SEED}"
    # Exact labels; optical and SAR to within rounding, as other CPUs' maths libraries may differ in the last bit.
    assert np.array_equal(_read(SAMPLE / f"{name}_label.tif")[0], a.label)
    opt = _read(SAMPLE / f"{name}_opt.tif").astype(int)
    assert np.abs(opt - a.opt).max() <= 1 and (opt != a.opt).mean() < 1e-3
    np.testing.assert_allclose(_read(SAMPLE / f"{name}_sar.tif")[0], a.sar, atol=0.011)


def test_nir_band_is_not_alpha(tmp_path):
    """GDAL takes a 4th band of an RGB uint8 file for alpha unless told otherwise (NIR would mask pixels)."""
    files = synthesize_scene(tmp_path, seed=3, size=64)
    with rasterio.open(files.opt) as src, warnings.catch_warnings():
        warnings.simplefilter("error")  # rasterio's NodataShadowWarning: nodata shadowing an alpha band
        assert src.colorinterp[3] != rasterio.enums.ColorInterp.alpha
        src.read_masks(4)
