"""`mdseg eval` over a dataset: a checkpoint run over every sample of a split, scored through the dataset's label
map; default checkpoint (most recent run) and data (its recorded validation split); 2 ranks = 1 process."""

from __future__ import annotations

# mdseg before torch, also in the processes spawned below (see conftest).
from mdseg import errors as _mdseg_first  # noqa: F401  # isort: skip
import contextlib
import io
import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from data_rasters import write_tif

from mdseg.checkpoint import load_checkpoint, save_checkpoint
from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.engine.evaluate import EvalResult, evaluate, evaluate_rasters
from mdseg.engine.runs import RUN_BEST, RUN_LAST, latest_run_checkpoint
from mdseg.errors import OptionError
from mdseg.runtime import cpu_threads

# The tiny test checkpoint's classes, stored on disk as 10, 20, 30; 40 is listed as ignored, 0 is unmapped.
CLASSES_JSON = {
    "names": ["water", "forest", "city"],
    "palette": [[0, 0, 255], [0, 128, 0], [200, 0, 0]],
    "label_map": {"10": 0, "20": 1, "30": 2},
    "ignore": [40],
}
RAW_TO_CLASS = {10: 0, 20: 1, 30: 2, 40: 255, 0: 255}  # the same, for evaluate_rasters' label map
VAL_SIZES = {"a": (64, 64), "b": (80, 72), "c": (70, 100)}  # (height, width): 1, 4 and 2 tiles of 64 px


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A generic-layout dataset with `train/` (one scene) and `val/` (three); optical nodata 0 in a corner of
    every scene, labels 0, 10, 20, 30, 40."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, sizes in (("train", {"t": (64, 64)}), ("val", VAL_SIZES)):
        for name, (h, w) in sizes.items():
            opt = rng.integers(200, 1800, (4, h, w)).astype(np.uint16)
            opt[:, :5, :7] = 0
            write_tif(root / split / "opt" / f"{name}.tif", opt, nodata=0)
            write_tif(root / split / "sar" / f"{name}.tif", rng.uniform(-25, 0, (1, h, w)).astype(np.float32))
            label = rng.choice([0, 10, 20, 30, 40], size=(h, w), p=[0.05, 0.3, 0.3, 0.3, 0.05]).astype(np.uint8)
            write_tif(root / split / "label" / f"{name}.tif", label)
    (root / "classes.json").write_text(json.dumps(CLASSES_JSON))
    return root


@pytest.fixture(scope="module")
def reference(dataset, tiny_checkpoint) -> EvalResult:
    """The one-process evaluation of the `val` split (one thread, as the ranks below run)."""
    with cpu_threads(1):
        return evaluate(tiny_checkpoint, dataset, split="val", device="cpu", progress=False)


def test_dataset_eval_equals_scoring_maps_predicted_scene_by_scene(dataset, tiny_checkpoint, reference, tmp_path):
    model = SceneModel.load(tiny_checkpoint, "cpu")
    expected = np.zeros((3, 3), dtype=np.int64)
    with cpu_threads(1):
        for name in VAL_SIZES:
            out = tmp_path / f"{name}.tif"
            model.predict(dataset / "val/opt" / f"{name}.tif", dataset / "val/sar" / f"{name}.tif", out, progress=False)
            scored = evaluate_rasters(out, dataset / "val/label" / f"{name}.tif", label_map=RAW_TO_CLASS)
            expected += scored.confusion.matrix
    np.testing.assert_array_equal(reference.confusion.matrix, expected)
    all_pixels = sum(h * w for h, w in VAL_SIZES.values())
    assert 0.8 * all_pixels < reference.confusion.total < all_pixels - 3 * 5 * 7  # nodata and ignored left out
    assert reference.inputs["split"] == "val" and reference.inputs["samples"] == 3


def make_run(runs: Path, name: str, checkpoints: dict[str, Path | None], mtime: float) -> Path:
    """A fake run folder: each checkpoint a copy of the given file (or an empty file), all stamped `mtime`."""
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for file, source in checkpoints.items():
        (run / file).write_bytes(source.read_bytes() if source is not None else b"")
        os.utime(run / file, (mtime, mtime))
    return run


def test_latest_run_is_the_newest_last_checkpoint_and_its_best_is_taken(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "old", {RUN_BEST: None, RUN_LAST: None}, 1_000)
    new = make_run(runs, "new", {RUN_BEST: None, RUN_LAST: None}, 2_000)
    (runs / "no-checkpoints").mkdir()
    path, note = latest_run_checkpoint(runs)
    assert path == new / RUN_BEST and "best of the most recent run" in note
    (new / RUN_BEST).unlink()
    path, note = latest_run_checkpoint(runs)
    assert path == new / RUN_LAST and f"no {RUN_BEST}" in note


def test_no_run_with_a_checkpoint_asks_for_one(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    with pytest.raises(OptionError, match="pass --checkpoint"):
        latest_run_checkpoint(tmp_path / "runs")


def test_cli_defaults_to_the_latest_runs_best_checkpoint_and_its_validation_split(
    dataset, tiny_checkpoint, reference, tmp_path, monkeypatch, mdseg
):
    model, meta = load_checkpoint(tiny_checkpoint)
    validation = {"data": str(dataset), "split": "val", "opt_bands": [1, 2, 3, 4], "sar_bands": [1]}
    trained = save_checkpoint(
        tmp_path / "trained.safetensors", model, replace(meta, provenance={"validation": validation})
    )
    make_run(tmp_path / "runs", "older", {RUN_BEST: tiny_checkpoint, RUN_LAST: tiny_checkpoint}, 1_000)
    run = make_run(tmp_path / "runs", "latest", {RUN_BEST: trained, RUN_LAST: tiny_checkpoint}, 2_000)
    monkeypatch.chdir(tmp_path)
    code, out, err = mdseg("eval", "--metric", "miou", "--json")
    assert code == 0, err
    assert f"checkpoint: {Path('runs') / 'latest' / RUN_BEST}" in err
    assert f"data: {dataset}, split 'val'" in err and "recorded in the checkpoint" in err
    result = json.loads(out)
    assert Path(result["inputs"]["checkpoint"]).resolve() == (run / RUN_BEST).resolve()
    assert result["inputs"]["data_source"] == "checkpoint"
    # same pixels counted as the reference (the predictions themselves may differ in the last bit with threads)
    assert result["pixels"] == reference.confusion.total


def test_cli_asks_for_data_when_the_checkpoint_records_no_validation_split(tiny_checkpoint, mdseg):
    code, _, err = mdseg("eval", "--checkpoint", tiny_checkpoint)
    assert code == 2
    assert "records no validation data" in err and "--data" in err


def test_cli_refuses_options_of_both_modes(tmp_path, mdseg):
    code, _, err = mdseg("eval", "--pred", tmp_path / "p.tif", "--label", tmp_path / "l.tif", "--data", tmp_path)
    assert code == 2
    assert "--pred, --label compare two rasters but --data run a checkpoint" in err


def test_cli_refuses_a_dataset_whose_classes_are_not_the_checkpoints(dataset, tmp_path, tiny_checkpoint, mdseg):
    other = tmp_path / "other"
    for folder in ("opt", "sar", "label"):
        (other / folder).mkdir(parents=True)
        for file in (dataset / "val" / folder).iterdir():
            (other / folder / file.name).write_bytes(file.read_bytes())
    (other / "classes.json").write_text(json.dumps({"names": ["a", "b"], "label_map": {"10": 0, "20": 1}}))
    code, _, err = mdseg("eval", "--data", other, "--checkpoint", tiny_checkpoint)
    assert code == 3
    assert "has 2 classes (a, b) but the checkpoint has 3 (water, forest, city)" in err


def _eval_on_rank(rank: int, world: int, port: int, checkpoint: str, data: str, out: str) -> None:
    """One torchrun-like rank: the environment torchrun sets, then `mdseg eval` through its entry point."""
    import torch

    from mdseg import cli

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    sys.argv = ["mdseg", "eval", "--checkpoint", checkpoint, "--data", data, "--device", "cpu", "--json"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    Path(f"{out}{rank}.json").write_text(json.dumps({"code": code, "out": stdout.getvalue(), "err": stderr.getvalue()}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_eval_equals_the_one_process_eval(dataset, tiny_checkpoint, reference, tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_eval_on_rank, args=(2, free_port(), str(tiny_checkpoint), str(dataset), out), nprocs=2)
    ranks = [json.loads(Path(f"{out}{rank}.json").read_text()) for rank in range(2)]
    assert [r["code"] for r in ranks] == [0, 0], ranks
    assert ranks[1]["out"] == "" and ranks[1]["err"] == ""  # only rank 0 speaks
    assert "split 'val'" in ranks[0]["err"]
    result = json.loads(ranks[0]["out"])
    assert result["inputs"]["ranks"] == 2
    np.testing.assert_array_equal(np.array(result["confusion"]), reference.confusion.matrix)
    assert result["miou"] == pytest.approx(reference.metrics.miou, abs=0)


def test_an_in_memory_model_in_training_mode_scores_like_its_checkpoint(dataset, tiny_checkpoint, reference):
    scene = SceneModel.load(tiny_checkpoint, "cpu")
    scene.model.train()  # as the trainer holds it between validations
    with cpu_threads(1):
        result = evaluate(scene, dataset, split="val", progress=False)
    assert scene.model.training
    np.testing.assert_array_equal(result.confusion.matrix, reference.confusion.matrix)
