"""Training: settings and schedule, a short real run on a learnable toy dataset, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import pytest
import torch
from data_rasters import write_blob_dataset, write_pair_folders
from safetensors.torch import load_file

from mdseg.checkpoint import load_checkpoint
from mdseg.engine.train import (
    RECIPES,
    TrainSettings,
    learning_rate,
    merge_settings,
    parameter_groups,
    resolve_settings,
    train,
)
from mdseg.engine.train.data import load_data, training_loader
from mdseg.errors import OptionError
from mdseg.models import build_model
from mdseg.runtime import Ranks

CPU = torch.device("cpu")
# small enough for CI: 64-px crops, batch 4, no workers (each worker process would re-import torch)
QUICK = {"crop": 64, "batch_size": 4, "workers": 0, "log_every": 5}


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs"), {"train": 3, "val": 1}, size=96)


@pytest.fixture(scope="module")
def trained(blobs, tmp_path_factory):
    """One 40-iteration `tiny` run shared by the tests that only look at its results."""
    out = tmp_path_factory.mktemp("runs") / "blobs-tiny"
    settings = TrainSettings(data=str(blobs), out=str(out), iters=40, val_every=20, **QUICK)
    return train(settings, progress=False)


def test_schedule_warms_up_linearly_then_decays_to_zero():
    s = resolve_settings(TrainSettings(data=".", iters=100, lr=1e-3, warmup=10), CPU)
    lrs = [learning_rate(s, i) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-6)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(1e-3 / 90)


def test_defaults_keep_warmup_within_a_tenth_of_a_short_run():
    s = resolve_settings(TrainSettings(data=".", iters=400), CPU)
    assert s.model == "tiny" and s.warmup == 40 and s.batch_size == 4
    assert s.lr > RECIPES["paper"]["lr"] * 5  # a short run needs far more than the 160k-iteration recipe's rate
    assert resolve_settings(TrainSettings(data=".", iters=1_000_000), CPU).warmup == 1500


def test_no_weight_decay_on_norms_biases_a_log_and_d():
    model = build_model("tiny", 4, 1, 3)
    decay, plain = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = [names[id(p)] for p in plain["params"]]
    decay_names = [names[id(p)] for p in decay["params"]]
    assert any(n.endswith("A_log") for n in plain_names) and any(n.endswith(".D") for n in plain_names)
    assert any("norm" in n for n in plain_names) and any(n.endswith("bias") for n in plain_names)
    assert all(not n.endswith(("A_log", ".D", "bias")) for n in decay_names)
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01


def test_settings_priority_defaults_config_recipe_command_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": "a", "iters": 7, "lr": 0.5, "crop": 128, "out": "runs/old"}))
    s = merge_settings(None, config_file=config, lr=0.25)
    assert (s.data, s.iters, s.lr, s.crop, s.out) == ("a", 7, 0.25, 128, None)
    s = merge_settings("b", config_file=config, recipe="paper", iters=3)
    assert (s.data, s.iters, s.lr, s.model, s.seed) == ("b", 3, 6e-5, "paper", 2024)


def test_unknown_setting_or_recipe_is_a_clear_error(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": "a", "learning_rate": 1}))
    with pytest.raises(OptionError, match="learning_rate"):
        merge_settings(None, config_file=config)
    with pytest.raises(OptionError, match="recipe"):
        merge_settings("a", recipe="fast")
    with pytest.raises(OptionError, match="--data"):
        merge_settings(None)


def test_amp_on_cpu_is_refused():
    with pytest.raises(OptionError, match="CUDA"):
        resolve_settings(TrainSettings(data=".", amp="bf16"), CPU)


@pytest.mark.slow
def test_short_run_learns_and_writes_its_folder(trained):
    run = trained.run_dir
    for name in ("config.json", "best.safetensors", "last.safetensors", "state.safetensors", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = [r["loss"] for r in trained.history if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]
    # two well-separated classes: 40 iterations at 64 px must already map them
    assert trained.best_miou is not None and trained.best_miou > 0.85
    settings = json.loads((run / "config.json").read_text())
    assert settings["iters"] == 40 and settings["model"] == "tiny" and settings["out"] == str(run.resolve())


@pytest.mark.slow
def test_checkpoint_carries_what_predict_needs_and_predicts_identically(trained, blobs):
    model, meta = load_checkpoint(trained.best_checkpoint)
    assert list(meta.classes) == ["land", "water"] and meta.tile == 64 and meta.steps == 3
    assert meta.provenance["validation"]["split"] == "val"
    # recorded relative to the run folder (no absolute path of the training machine), and found from there
    assert (trained.run_dir / meta.provenance["validation"]["data"]).resolve() == blobs.resolve()
    assert meta.provenance["val_miou"] is not None
    again, _ = load_checkpoint(trained.best_checkpoint)
    opt, sar = torch.randn(1, 4, 64, 64), torch.randn(1, 1, 64, 64)
    a = model.predict(opt, sar, generator=torch.Generator().manual_seed(1))
    b = again.predict(opt, sar, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_existing_run_folder_is_refused(blobs, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="--resume"):
        train(TrainSettings(data=str(blobs), out=str(tmp_path / "run"), iters=1, **QUICK), progress=False)


@pytest.mark.slow
def test_sigterm_saves_state_and_resume_equals_an_uninterrupted_run(blobs, tmp_path):
    settings = {"data": str(blobs), "iters": 8, "save_every": 100, "val_every": 100, **QUICK}
    straight = train(TrainSettings(out=str(tmp_path / "straight"), **settings), progress=False)

    def stop_at_three(iteration: int) -> None:
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal: the handler asks the loop to stop

    cut = train(TrainSettings(out=str(tmp_path / "cut"), **settings), progress=False, on_iteration=stop_at_three)
    assert cut.interrupted and cut.iteration == 3
    resumed = train(TrainSettings(data=""), resume=tmp_path / "cut", progress=False)
    assert resumed.iteration == 8 and not resumed.interrupted
    a, b = load_file(straight.last_checkpoint), load_file(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [r["iter"] for r in resumed.history if "loss" in r]
    assert logged == sorted(set(logged))  # no iteration logged twice after the resume


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, result_dir: str) -> None:
    import mdseg  # noqa: F401  (sets the OpenMP policy before torch's pool starts)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        settings = TrainSettings(data=data, out=out, iters=3, val_every=3, threads=1, **QUICK)
        result = train(settings, progress=False)
        torch.save(result.model.state_dict(), f"{result_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights_and_rank0_writes(blobs, tmp_path):
    out = tmp_path / "run"
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), str(blobs), str(out), str(tmp_path)), nprocs=2, join=True
    )
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    start = build_model("tiny", 4, 1, 2).state_dict()  # they trained: weights moved away from any fresh init
    assert not all(torch.equal(w0[k], start[k]) for k in w0 if k in start)
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "best.safetensors",
        "config.json",
        "curves.png",
        "last.safetensors",
        "metrics.jsonl",
        "state.safetensors",
    ]
    settings = json.loads((out / "config.json").read_text())
    assert settings["batch_size"] == 4  # per process
    assert np.isfinite(
        [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    ).all()


@pytest.mark.slow
def test_cli_trains_into_a_new_numbered_run_folder_and_reruns_its_config(blobs, tmp_path, monkeypatch, mdseg):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", blobs, "--iters", "2", "--crop", "64", "--workers", "0", "--quiet"]
    code, out, err = mdseg(*args)
    assert code == 0, err
    assert "best.safetensors" in out and (tmp_path / "runs" / f"{blobs.name}-tiny" / "best.safetensors").is_file()
    code, _, err = mdseg("train", "--config", f"runs/{blobs.name}-tiny/config.json", "--iters", "1", "--quiet")
    assert code == 0, err
    rerun = json.loads((tmp_path / "runs" / f"{blobs.name}-tiny-2" / "config.json").read_text())
    assert rerun["iters"] == 1 and rerun["crop"] == 64  # the file's settings, the command line's override


def test_cli_bad_values_are_one_line_errors(blobs, mdseg, tmp_path):
    code, _, err = mdseg("train", "--data", blobs, "--out", tmp_path / "r", "--amp", "bf16", "--device", "cpu")
    assert code == 2 and "needs a CUDA device" in err and len(err.strip().splitlines()) == 1
    code, _, err = mdseg("train", "--data", tmp_path / "nowhere")
    assert code == 3 and "nowhere" in err


def test_validation_and_checkpoints_default_to_a_tenth_of_the_run():
    assert [resolve_settings(TrainSettings(data=".", iters=n), CPU).val_every for n in (30, 5, 2000)] == [3, 1, 200]
    s = resolve_settings(TrainSettings(data=".", iters=30), CPU)
    assert s.save_every == s.val_every == 3


def test_split_settings_default_to_the_seed_and_must_leave_scenes_to_train_on():
    s = resolve_settings(TrainSettings(data=".", seed=7), CPU)
    assert (s.split_seed, s.val_fraction, s.test_fraction) == (7, 0.2, 0.1)
    assert resolve_settings(TrainSettings(data=".", seed=7, split_seed=3), CPU).split_seed == 3
    with pytest.raises(OptionError, match="--val-fraction and --test-fraction"):
        resolve_settings(TrainSettings(data=".", val_fraction=0.6, test_fraction=0.4), CPU)


WHU_FOLDERS = ("optical", "sar", "lbl")  # WHU-OPT-SAR as distributed: no split folders or lists


def _whu(root, scenes: int = 10):
    """A WHU-OPT-SAR-as-distributed folder of 48² scenes whose labels hold 0 (background) and 1…7."""
    write_pair_folders(root, WHU_FOLDERS, [f"NH49E{i:03d}" for i in range(scenes)], size=(48, 48))
    return root


def test_a_dataset_without_splits_draws_windows_from_its_train_scenes_only(tmp_path):
    root = _whu(tmp_path / "whu")
    settings = resolve_settings(TrainSettings(data=str(root), out=str(tmp_path / "run"), iters=20, **QUICK), CPU)
    data = load_data(settings)
    split = data.split
    assert (len(split.train), len(split.val), len(split.test)) == (7, 2, 1)
    assert tuple(s.name for s in data.layout.samples) == split.train
    assert tuple(s.name for s in data.val_layout.samples) == split.val
    assert tuple(s.name for s in data.test_layout.samples) == split.test
    drawn = {name for batch in training_loader(data.train_set, settings, 0, Ranks(), CPU) for name in batch["name"]}
    assert drawn and drawn <= set(split.train)


def test_a_dataset_with_split_folders_is_not_split_again(blobs):
    data = load_data(resolve_settings(TrainSettings(data=str(blobs), out="unused", **QUICK), CPU))
    assert data.split is None and data.layout.split == "train" and data.val_layout.split == "val"


@pytest.mark.slow
def test_a_resumed_run_keeps_its_split_and_checkpoints_name_no_absolute_path(tmp_path):
    root = _whu(tmp_path / "whu")
    run = tmp_path / "runs" / "whu"
    settings = TrainSettings(data=str(root), out=str(run), iters=4, val_every=100, **QUICK)

    def stop_at_two(iteration: int) -> None:
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train(settings, progress=False, on_iteration=stop_at_two).interrupted
    lists = {name: (run / "splits" / f"{name}.txt").read_text() for name in ("train", "val", "test")}
    # a scene added since: a split drawn again would differ; the resumed run keeps the one it has
    write_pair_folders(root, WHU_FOLDERS, ["NH49E000a"], size=(48, 48), seed=1)
    resumed = train(TrainSettings(data=""), resume=run, progress=False)
    assert resumed.iteration == 4 and not resumed.interrupted
    assert {name: (run / "splits" / f"{name}.txt").read_text() for name in lists} == lists
    _, meta = load_checkpoint(resumed.last_checkpoint)
    recorded = meta.provenance["split"]
    assert recorded["files"]["test"] == "splits/test.txt" and recorded["seed"] == 0
    assert "NH49E000a" not in sum(recorded["names"].values(), [])
    assert recorded["names"]["train"] == [n for n in lists["train"].splitlines() if not n.startswith("#")]
    text = json.dumps(meta.provenance)
    assert str(tmp_path) not in text
    assert (run / meta.provenance["test"]["data"]).resolve() == root.resolve()
    assert meta.provenance["run"] == "whu" and meta.provenance["settings"]["data"] == "../../whu"


def test_crops_larger_than_every_scene_shrink_to_the_smallest_scene(tmp_path):
    """100-px scenes and the default 256-px crop: the run trains (and its checkpoint predicts) 96-px crops, a
    multiple of 32, rather than crops three-quarters padding; a crop the scenes can hold is kept."""
    data = write_blob_dataset(tmp_path / "small", {"train": 2, "val": 1}, size=100)
    run = tmp_path / "run"
    settings = TrainSettings(data=str(data), out=str(run), iters=1, batch_size=2, workers=0, steps=1)
    result = train(settings, progress=False)
    assert json.loads((run / "config.json").read_text())["crop"] == 96
    _, meta = load_checkpoint(result.last_checkpoint, CPU)
    assert meta.tile == 96
    assert load_data(TrainSettings(data=str(data), crop=64)).crop == 64


@pytest.mark.slow
def test_an_error_inside_the_loop_ends_the_process_with_its_dataloader_workers(blobs, tmp_path):
    """The workers ignore stop signals; when an unexpected error left the loop, the iterator (alive in the
    traceback) kept them until interpreter exit, where multiprocessing sent them SIGTERM and waited forever."""
    import subprocess
    import sys

    script = tmp_path / "boom.py"
    script.write_text(
        "from mdseg.engine.train import TrainSettings, train\n"
        "def boom(i):\n"
        "    if i == 2:\n"
        "        raise RuntimeError('a bug in a callback')\n"
        f"train(TrainSettings(data={str(blobs)!r}, out={str(tmp_path / 'run')!r}, iters=6, crop=64, batch_size=2,"
        " workers=2, val_every=100), progress=False, on_iteration=boom)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 1 and "RuntimeError: a bug in a callback" in done.stderr
