"""Batch prediction stopped mid-scene: the scene is logged as interrupted, nothing of it stays on disk, and a rerun
skips the written scenes and redoes the interrupted one. A real `python -m mdseg predict` process and SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_rasters import write_tif

from mdseg.engine.batch import LOG_NAME

FAST = ["--tile", "64", "--overlap", "16", "--steps", "2", "--quiet"]
LONG_WAIT_S = 600  # only a bound against a hung test; every wait ends on a file or a process exit


def write_scene(root: Path, name: str, size: int) -> None:
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + x - y
    write_tif(
        root / "opt" / f"{name}_opt.tif", np.stack([1000 + 300 * (i + 1) * field for i in range(4)]).astype("uint16")
    )
    write_tif(root / "sar" / f"{name}_sar.tif", (-12 + 6 * field)[None].astype("float32"))


def log_of(out_dir: Path) -> list[tuple[str, str]]:
    return [(r["scene"], r["status"]) for r in map(json.loads, (out_dir / LOG_NAME).read_text().splitlines())]


@pytest.mark.slow
def test_a_stopped_batch_logs_the_scene_interrupted_leaves_nothing_of_it_and_resumes(tmp_path, tiny_checkpoint, mdseg):
    for name, size in (("a", 64), ("b", 512), ("c", 64)):
        write_scene(tmp_path, name, size)
    out_dir = tmp_path / "out"
    args = ["predict", "--opt-dir", tmp_path / "opt", "--sar-dir", tmp_path / "sar", "--out-dir", out_dir]
    args += ["--checkpoint", tiny_checkpoint, *FAST]
    command = [sys.executable, "-m", "mdseg", *map(str, args), "--threads", "1", "--device", "cpu"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def b_started() -> bool:  # scene a written, scene b's temporaries on disk
        return (out_dir / "a_landcover.tif").exists() and any(".b_landcover.mdseg-" in n for n in os.listdir(out_dir))

    deadline = time.monotonic() + LONG_WAIT_S
    while not b_started():
        assert proc.poll() is None, f"the batch ended before scene b started: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "gave up waiting (hung?)"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=LONG_WAIT_S)
    assert proc.returncode != 0
    assert log_of(out_dir) == [("a", "written"), ("b", "interrupted")]
    scene_a = [f"a_landcover{x}" for x in (".json", ".qml", ".stac.json", ".tif", ".tif.aux.xml")]
    assert sorted(os.listdir(out_dir)) == [*scene_a, LOG_NAME]

    code, _, err = mdseg(*args)
    assert code == 0, err
    assert log_of(out_dir)[2:] == [("a", "skipped"), ("b", "written"), ("c", "written")]
    assert not [n for n in os.listdir(out_dir) if n.startswith(".")]
