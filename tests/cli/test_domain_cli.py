"""`mdseg predict` and `mdseg eval` warn about inputs unlike the checkpoint's training data, and refuse them with
--strict-inputs: the shipped demo weights on the shipped real Sentinel pair and on a part of the synthetic scene."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from mdseg.checkpoint import DEMO_CHECKPOINT

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
SENTINEL = (SAMPLES / "sentinel" / "bigearthnet_69_24_opt.tif", SAMPLES / "sentinel" / "bigearthnet_69_24_sar.tif")
SYNTHETIC = (SAMPLES / "synthetic" / "synth_7_opt.tif", SAMPLES / "synthetic" / "synth_7_sar.tif")
FAST = ("--steps", "1", "--checkpoint", DEMO_CHECKPOINT)

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def crop(source: Path, target: Path, window: Window) -> Path:
    """`window` of `source` as a GeoTIFF of its own, on the same grid (RGB + a 4th band that is no alpha, as the
    synthetic scene's optical file)."""
    with rasterio.open(source) as src:
        profile = {**src.profile, "width": window.width, "height": window.height}
        profile.update(transform=src.window_transform(window), photometric="RGB" if src.count >= 3 else "MINISBLACK")
        data = src.read(window=window)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


def test_predict_warns_once_naming_the_sentinel_optical_bands_and_records_the_check(tmp_path, mdseg):
    code, _, err = mdseg("predict", "--opt", SENTINEL[0], "--sar", SENTINEL[1], "--out", tmp_path / "m.tif", *FAST)
    assert code == 0, err
    (line,) = warnings_in(err)
    assert line.startswith(f"warning: Optical input '{SENTINEL[0]}' does not look like this model's training data")
    assert all(f"{name} (band {b})" in line for b, name in enumerate(("red", "green", "blue", "nir"), start=1))
    assert "reflectance × 10000?" in line and "uint8 values" in line
    domain = json.loads((tmp_path / "m.json").read_text())["domain"]
    assert domain["messages"] == [line.removeprefix("warning: ")]
    assert [b["flagged"] for b in domain["bands"]] == [True, True, True, True, False]


def test_quiet_hides_the_warning_but_json_and_the_run_record_keep_it(tmp_path, mdseg):
    args = ("predict", "--opt", SENTINEL[0], "--sar", SENTINEL[1], *FAST)
    code, out, err = mdseg(*args, "--out", tmp_path / "q.tif", "--quiet")
    assert code == 0 and warnings_in(err) == []
    assert json.loads((tmp_path / "q.json").read_text())["domain"]["flagged"][0] == "optical red (band 1)"
    code, out, err = mdseg(*args, "--out", tmp_path / "j.tif", "--json")
    assert code == 0 and len(warnings_in(err)) == 1
    assert len(json.loads(out)["domain"]["flagged"]) == 4


def test_strict_inputs_fail_with_one_line_and_write_nothing(tmp_path, mdseg):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = mdseg(
        "predict", "--opt", SENTINEL[0], "--sar", SENTINEL[1], "--out", out / "m.tif", "--prob", out / "p.tif",
        "--quicklook", out / "q.png", "--strict-inputs", *FAST,
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"error: Optical input '{SENTINEL[0]}' does not look like")
    assert "--strict-inputs refuses such inputs" in lines[0]
    assert list(out.iterdir()) == []


def test_the_synthetic_scene_passes_even_with_strict_inputs(tmp_path, mdseg):
    window = Window(384, 384, 256, 256)
    opt, sar = crop(SYNTHETIC[0], tmp_path / "o.tif", window), crop(SYNTHETIC[1], tmp_path / "s.tif", window)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "m.tif", "--strict-inputs", *FAST)
    assert code == 0, err
    assert warnings_in(err) == []
    domain = json.loads((tmp_path / "m.json").read_text())["domain"]
    assert domain["flagged"] == [] and domain["reference"] == "training statistics"


@pytest.fixture
def sentinel_dataset(tmp_path) -> Path:
    """A generic dataset of two copies of the Sentinel pair, labelled all forest (class 4)."""
    root = tmp_path / "data"
    for name in ("a", "b"):
        for folder, source in (("opt", SENTINEL[0]), ("sar", SENTINEL[1])):
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / folder / f"{name}.tif")
        with rasterio.open(SENTINEL[1]) as src:
            profile = {**src.profile, "dtype": "uint8", "nodata": None}
        (root / "label").mkdir(exist_ok=True)
        with rasterio.open(root / "label" / f"{name}.tif", "w", **profile) as dst:
            dst.write(np.full((1, 120, 120), 4, np.uint8))
    return root


def test_eval_warns_once_for_the_split_and_records_the_check(sentinel_dataset, mdseg):
    code, out, err = mdseg("eval", "--data", sentinel_dataset, *FAST, "--json")
    assert code == 0, err
    (line,) = warnings_in(err)
    assert "opt/a.tif' does not look like this model's training data" in line
    domain = json.loads(out)["inputs"]["domain"]
    assert domain["sample"] == "a" and len(domain["flagged"]) == 4


def test_eval_strict_inputs_fail_before_any_sample(sentinel_dataset, tmp_path, mdseg):
    confusion = tmp_path / "confusion.csv"
    code, out, err = mdseg("eval", "--data", sentinel_dataset, *FAST, "--strict-inputs", "--confusion", confusion)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("data: ")]
    assert code == 3 and out == "" and not confusion.exists()
    assert len(lines) == 1 and lines[0].startswith("error: Optical input") and "--strict-inputs" in lines[0]


def test_strict_inputs_is_a_dataset_mode_option_of_eval(tmp_path, mdseg):
    code, _, err = mdseg("eval", "--pred", tmp_path / "p.tif", "--label", tmp_path / "l.tif", "--strict-inputs")
    assert code == 2 and "--strict-inputs" in err and "use one mode" in err
