"""The input check: a scene's bands against a checkpoint's training statistics (the shipped demo weights on the
shipped real Sentinel pair and synthetic scene), the statistics in checkpoints, the fallback to the
normalisation, --strict-inputs and the run record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from data_rasters import write_blob_dataset

from mdseg.checkpoint import DEMO_CHECKPOINT, CheckpointMeta, read_checkpoint_meta
from mdseg.data import band_stats, find_dataset
from mdseg.engine.domain import MEDIAN_STDS, check_inputs
from mdseg.engine.options import PredictOptions
from mdseg.errors import MdsegError

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
SENTINEL = (SAMPLES / "sentinel" / "bigearthnet_69_24_opt.tif", SAMPLES / "sentinel" / "bigearthnet_69_24_sar.tif")
SYNTHETIC = (SAMPLES / "synthetic" / "synth_7_opt.tif", SAMPLES / "synthetic" / "synth_7_sar.tif")

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")


@pytest.fixture(scope="module")
def demo() -> CheckpointMeta:
    return read_checkpoint_meta(DEMO_CHECKPOINT)


def write_like(path: Path, template: Path, data: np.ndarray) -> Path:
    """`data` (C, H, W) as a GeoTIFF on `template`'s grid, in `data`'s dtype, without nodata."""
    with rasterio.open(template) as src:
        profile = {**src.profile, "count": data.shape[0], "dtype": data.dtype, "nodata": None}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_demo_weights_carry_their_training_split_s_statistics(demo):
    stats = demo.input_stats
    assert stats is not None
    assert [b.name for b in stats.of("optical")] == list(demo.opt_band_names)
    assert [b.name for b in stats.of("sar")] == list(demo.sar_band_names)
    assert {b.dtype for b in stats.of("optical")} == {"uint8"} and stats.of("sar")[0].dtype == "float32"
    # the same split the normalisation was computed on: its means and stds are the normalisation's
    assert [b.mean for b in stats.of("optical")] == list(demo.normalisation.opt_mean)
    assert [b.std for b in stats.of("sar")] == list(demo.normalisation.sar_std)
    assert all(b.min <= b.p1 <= b.p50 <= b.p99 <= b.max for b in stats.bands)


def test_demo_weights_flag_the_real_sentinel_optical_bands_in_one_message(demo):
    check = check_inputs(*SENTINEL, demo)
    assert check.reference == "training statistics"
    assert [(b.modality, b.name) for b in check.flagged] == [
        ("optical", "red"),
        ("optical", "green"),
        ("optical", "blue"),
        ("optical", "nir"),
    ]
    assert min(b.median_stds for b in check.flagged) > MEDIAN_STDS
    (message,) = check.messages
    assert message.startswith(f"Optical input '{SENTINEL[0]}' does not look like this model's training data: ")
    for label in ("red (band 1)", "green (band 2)", "blue (band 3)", "nir (band 4)"):
        assert label in message
    assert "uint16 values (reflectance × 10000?)" in message and "trained on uint8 values" in message
    assert "Rescale the input" in message and "\n" not in message


def test_demo_weights_take_the_real_sentinel_vv_in_db_as_it_is(demo):
    (vv,) = [b for b in check_inputs(*SENTINEL, demo).bands if b.modality == "sar"]
    assert not vv.flagged and abs(vv.median_stds) < 1 and 0.5 < vv.spread_ratio < 2


def test_demo_weights_accept_the_shipped_synthetic_scene(demo):
    check = check_inputs(*SYNTHETIC, demo)
    assert check.flagged == () and check.messages == ()
    assert len(check.bands) == 5 and max(abs(b.median_stds) for b in check.bands) < 1


def test_a_checkpoint_without_statistics_is_checked_against_its_normalisation(demo):
    old = CheckpointMeta.from_dict({k: v for k, v in demo.to_dict().items() if k != "input_stats"})
    assert old.input_stats is None
    sentinel, synthetic = check_inputs(*SENTINEL, old), check_inputs(*SYNTHETIC, old)
    assert sentinel.reference == "normalisation"
    assert [b.name for b in sentinel.flagged] == ["red", "green", "blue", "nir"]
    assert "the checkpoint stores no training statistics" in sentinel.messages[0]
    assert synthetic.flagged == ()


def test_linear_power_sar_is_checked_in_db(demo, tmp_path):
    with rasterio.open(SYNTHETIC[1]) as src:
        db = src.read()
    linear = write_like(tmp_path / "sar_linear.tif", SYNTHETIC[1], (10 ** (db / 10)).astype("float32"))
    (vv,) = [b for b in check_inputs(SYNTHETIC[0], linear, demo).bands if b.modality == "sar"]
    assert not vv.flagged and vv.p50 == pytest.approx(-12.6, abs=0.3)


def test_reflectance_in_0_1_is_flagged_as_far_narrower(demo, tmp_path):
    with rasterio.open(SENTINEL[0]) as src:
        reflectance = (src.read() / 10000).astype("float32")
    opt = write_like(tmp_path / "opt_01.tif", SENTINEL[0], reflectance)
    check = check_inputs(opt, SENTINEL[1], demo)
    assert [b.name for b in check.flagged] == ["red", "green", "blue", "nir"]
    assert all("narrower" in " ".join(b.reasons) for b in check.flagged)
    assert "float32 values (reflectance 0–1?)" in check.messages[0]


def test_the_bands_checked_are_the_ones_selected(demo, tmp_path):
    with rasterio.open(SYNTHETIC[0]) as src:
        rgbn = src.read()
    reordered = write_like(tmp_path / "nir_first.tif", SYNTHETIC[0], rgbn[[3, 0, 1, 2]])
    options = PredictOptions(opt_bands=(2, 3, 4, 1))
    assert check_inputs(reordered, SYNTHETIC[1], demo, options).flagged == ()
    assert [b.band for b in check_inputs(reordered, SYNTHETIC[1], demo, options).bands[:4]] == [2, 3, 4, 1]


def test_strict_inputs_refuse_in_one_line(demo):
    with pytest.raises(MdsegError) as refused:
        check_inputs(*SENTINEL, demo, PredictOptions(strict_inputs=True))
    message = str(refused.value)
    assert "red (band 1)" in message and "--strict-inputs refuses such inputs" in message and "\n" not in message
    assert check_inputs(*SYNTHETIC, demo, PredictOptions(strict_inputs=True)).flagged == ()


def test_predict_refuses_under_strict_inputs_before_writing_anything(tmp_path):
    from mdseg.engine.checkpoint_predict import SceneModel

    model = SceneModel.load(None, device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MdsegError, match="--strict-inputs"):
        model.predict(*SENTINEL, out / "map.tif", PredictOptions(strict_inputs=True), progress=False)
    assert list(out.iterdir()) == []


def test_the_run_record_holds_the_check_and_on_domain_gets_it_first(tmp_path):
    from mdseg.engine.checkpoint_predict import SceneModel

    model = SceneModel.load(None, device="cpu")
    seen = []
    result = model.predict(
        *SENTINEL, tmp_path / "map.tif", PredictOptions(steps=1), progress=False, on_domain=seen.append
    )
    record = json.loads(Path(result.sidecar).read_text())
    domain = record["domain"]
    assert domain == seen[0].to_dict()
    assert domain["flagged"] == ["optical red (band 1)", "optical green (band 2)", "optical blue (band 3)",
                                 "optical nir (band 4)"]  # fmt: skip
    assert domain["rule"]["median_stds"] == MEDIAN_STDS and len(domain["bands"]) == 5
    assert record["options"]["strict_inputs"] is False


def test_input_statistics_survive_the_checkpoint_round_trip_and_old_files_load(demo):
    data = demo.to_dict()
    assert CheckpointMeta.from_dict(json.loads(json.dumps(data))) == demo
    old = {k: v for k, v in data.items() if k != "input_stats"}
    assert CheckpointMeta.from_dict(old).input_stats is None
    assert "input_stats" not in replace(demo, input_stats=None).to_dict()


def test_training_stores_the_training_split_s_statistics(tmp_path):
    from mdseg.engine.train import TrainSettings, train

    data = write_blob_dataset(tmp_path / "blobs", {"train": 2, "val": 1}, size=64)
    settings = TrainSettings(
        data=str(data), out=str(tmp_path / "run"), iters=2, val_every=2, crop=32, batch_size=2, workers=0
    )
    result = train(settings, progress=False)
    stats = read_checkpoint_meta(result.last_checkpoint).input_stats
    expected = band_stats(find_dataset(data, "train")).input_stats()
    assert stats == expected
    assert [b.modality for b in stats.bands] == ["optical"] * 4 + ["sar"]
    assert stats.bands[0].dtype == "uint16" and stats.bands[0].p1 < stats.bands[0].p50 < stats.bands[0].p99


def test_a_run_normalised_from_a_stats_file_still_stores_its_training_statistics(tmp_path):
    from mdseg.engine.train import TrainSettings, resolve_settings
    from mdseg.engine.train.data import load_data

    data = write_blob_dataset(tmp_path / "blobs", {"train": 2}, size=64)
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(json.dumps(band_stats(data).to_dict()))
    settings = resolve_settings(TrainSettings(data=str(data), stats=str(stats_file), crop=32), torch.device("cpu"))
    run = load_data(settings)
    assert run.norm_source == f"from {stats_file}"
    # one decimated read per file (these 64 px files: every pixel), not a second streamed pass
    assert run.input_stats == band_stats(find_dataset(data, "train")).input_stats()
