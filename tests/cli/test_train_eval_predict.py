"""From a dataset as distributed to a trusted model: `mdseg train` on a WHU-OPT-SAR folder without split files,
`mdseg eval` with no arguments (the run's best checkpoint on its held-out test scenes), `mdseg predict` on a test
scene; and the odd layouts users meet (other band counts, labels outside the classes, size mismatches) as one
`error:` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from data_rasters import write_pair_folders, write_tif
from safetensors import safe_open

from mdseg.checkpoint import DEMO_CHECKPOINT, read_checkpoint_meta, rewrite_metadata

WHU_VALUES = [0, 10, 20, 30, 40, 50, 60, 70]  # background, then the seven classes, as distributed
SCENES = [f"NH49E{i:03d}" for i in range(10)]


def write_whu(root: Path, size: int = 96) -> Path:
    """WHU-OPT-SAR as distributed: `optical/ sar/ label/`, labels 0 / 10…70, no split folders or lists."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(SCENES):
        label = rng.choice(WHU_VALUES, size=(size, size)).astype(np.uint8)
        write_pair_folders(root, ("optical", "sar", "label"), [name], size=(size, size), labels=label, seed=i)
    return root


def mdseg_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m mdseg ARGS…` in `cwd`, as a user runs it (wide lines, so notes are not wrapped)."""
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "mdseg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_train_then_eval_scores_the_held_out_test_scenes_then_predict_maps_one(tmp_path, monkeypatch, mdseg):
    whu = write_whu(tmp_path / "whu")
    trained = mdseg_process(
        "train", "--data", "whu", "--model", "tiny", "--iters", "4", "--crop", "64", "--batch-size", "2",
        "--workers", "0", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "whu-tiny"
    lists = {
        name: [n for n in (run / "splits" / f"{name}.txt").read_text().splitlines() if not n.startswith("#")]
        for name in ("train", "val", "test")
    }
    assert [len(lists[n]) for n in ("train", "val", "test")] == [7, 2, 1]
    assert sorted(sum(lists.values(), [])) == SCENES

    scored = mdseg_process("eval", "--metric", "miou", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "checkpoint: runs/whu-tiny/best.safetensors (the best of the most recent run)" in scored.stderr
    assert "split 'runs/whu-tiny/splits/test.txt'" in scored.stderr
    assert "(the test split recorded in the checkpoint, scenes its training never saw)" in scored.stderr
    with rasterio.open(whu / "label" / f"{lists['test'][0]}.tif") as src:
        labelled = int((src.read(1) != 0).sum())  # background is ignored; the test scene's other pixels count
    assert f"{labelled:,} pixels compared" in scored.stdout and "mIoU" in scored.stdout

    scene = lists["test"][0]
    mapped = mdseg_process(
        "predict", "--opt", f"whu/optical/{scene}.tif", "--sar", f"whu/sar/{scene}.tif",
        "--checkpoint", "runs/whu-tiny/best.safetensors", "--out", f"maps/{scene}.tif", cwd=tmp_path,
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    assert (tmp_path / "maps" / f"{scene}.tif").is_file()
    provenance = json.loads((tmp_path / "maps" / f"{scene}.json").read_text())["checkpoint"]["provenance"]
    assert str(tmp_path) not in json.dumps(provenance)  # no absolute path of the training machine
    assert provenance["command"].startswith("mdseg train --data whu ")
    assert provenance["split"]["names"]["test"] == [scene] and provenance["test"]["split_file"] == "splits/test.txt"

    monkeypatch.chdir(tmp_path)  # a split name the dataset lacks is the run's own list
    code, out, err = mdseg("eval", "--split", "val", "--json")
    assert code == 0, err
    assert "(the validation split recorded in the checkpoint)" in err
    assert json.loads(out)["inputs"]["samples"] == 2


@pytest.fixture
def odd(tmp_path) -> Path:
    """Folders users meet: Hunan-style with 4 + 1 bands instead of 13 + 2, a sample with fewer bands than the
    others, labels outside the classes, and a sample whose SAR is smaller than its optical image."""
    rng = np.random.default_rng(0)
    hunan = tmp_path / "hunan4"
    write_pair_folders(hunan, ("s2", "s1", "lc"), ["1", "2", "3"], size=(32, 32), bands=(4, 1), prefixes=True)
    mixed = tmp_path / "mixed"
    write_pair_folders(mixed, ("optical", "sar", "label"), ["a", "b"], size=(32, 32), bands=(4, 1))
    write_pair_folders(mixed, ("optical", "sar", "label"), ["c"], size=(32, 32), bands=(3, 1))
    outside = tmp_path / "outside"
    labels = rng.choice([0, 80, 200], size=(32, 32)).astype(np.uint8)
    write_pair_folders(outside, ("optical", "sar", "label"), ["a", "b"], size=(32, 32), labels=labels)
    sizes = tmp_path / "sizes"
    write_pair_folders(sizes, ("optical", "sar", "label"), ["a", "b"], size=(32, 32))
    write_tif(sizes / "sar" / "b.tif", np.zeros((1, 16, 32), np.float32))
    return tmp_path


@pytest.mark.slow
def test_training_validation_and_eval_give_the_same_numbers_for_the_same_checkpoint_and_split(tmp_path):
    """One scoring path: the mIoU training chose `best.safetensors` by is the one `mdseg eval` reports for it on
    the same (validation) split — to the last bit, with OA and every per-class IoU."""
    write_whu(tmp_path / "whu")
    trained = mdseg_process(
        "train", "--data", "whu", "--model", "tiny", "--iters", "4", "--crop", "64", "--batch-size", "2",
        "--val-every", "2", "--workers", "0", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "whu-tiny"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in logged if "val_miou" in r]
    assert [r["iter"] for r in validations] == [2, 4]
    best = read_checkpoint_meta(run / "best.safetensors").provenance
    assert best["val_miou"] is not None and best["val_miou"] == max(r["val_miou"] for r in validations)

    scored = mdseg_process("eval", "--split", "val", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["inputs"]["split"].endswith("val.txt") or result["inputs"]["split"] == "val"
    assert result["miou"] == best["val_miou"]
    validated = next(r for r in validations if r["iter"] == best["iteration"])
    assert result["oa"] == validated["val_oa"]


def test_stats_on_a_hunan_style_folder_with_other_band_counts_uses_its_files_bands(odd, mdseg):
    code, out, err = mdseg("stats", "--data", odd / "hunan4", "--json")
    assert code == 0, err
    bands = json.loads(out)["bands"]
    assert [b["name"] for b in bands] == ["optical 1", "optical 2", "optical 3", "optical 4", "SAR 1"]


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("mixed", "sample 'c' has 3 optical and 1 SAR band(s) but 'a' has 4 and 1"),
        ("sizes", "sample 'b' has rasters of different sizes"),
        ("outside", "hold no value of its classes (they hold [0, 80, 200]"),
    ],
)
def test_odd_layouts_are_one_error_line_in_train(odd, mdseg, folder, message, tmp_path):
    code, _, err = mdseg("train", "--data", odd / folder, "--out", tmp_path / "run", "--iters", "1", "--quiet")
    assert code == 3 and message in err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("folder", ["mixed", "sizes"])
def test_odd_layouts_are_one_error_line_in_stats_and_eval(odd, mdseg, folder, tiny_checkpoint):
    for args in (("stats", "--data", odd / folder), ("eval", "--data", odd / folder, "--checkpoint", tiny_checkpoint)):
        code, _, err = mdseg(*args)
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # eval first says what it picked
        assert code == 3 and len(errors) == 1 and "Traceback" not in err, (args, err)


def test_stats_of_a_split_a_dataset_lacks_says_how_to_get_one(tmp_path, mdseg):
    whu = tmp_path / "whu"
    write_pair_folders(whu, ("optical", "sar", "label"), ["a"], size=(8, 8))
    code, _, err = mdseg("stats", "--data", whu, "--split", "train")
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert "mdseg train --data whu` draws one into its run folder" in err and "runs/NAME/splits/train.txt" in err


def _absolute_strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _absolute_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _absolute_strings(v)]
    if isinstance(value, str):
        return [w for w in value.replace("=", " ").split() if Path(w).is_absolute()]
    return []


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")
def test_the_demo_weights_provenance_holds_no_absolute_path():
    assert _absolute_strings(read_checkpoint_meta(DEMO_CHECKPOINT).provenance) == []


def test_rewriting_a_checkpoints_metadata_keeps_every_tensor_byte_for_byte(tiny_checkpoint, tmp_path):
    meta = replace(read_checkpoint_meta(tiny_checkpoint), provenance={"note": "rewritten"})
    out = rewrite_metadata(tiny_checkpoint, meta, tmp_path / "new.safetensors")
    assert read_checkpoint_meta(out).provenance == {"note": "rewritten"}
    with safe_open(str(tiny_checkpoint), "pt") as a, safe_open(str(out), "pt") as b:
        keys = a.keys()
        assert set(keys) == set(b.keys())
        for key in keys:
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.contiguous().view(-1).view(torch.uint8).equal(y.contiguous().view(-1).view(torch.uint8)), key
