"""Nothing lost, nothing left behind: `mdseg predict` never writes over an input or one output over another (the
file system stays exactly as it was), a killed run's temporaries are cleared by the next run in the folder, and
two runs never write one output at once. Real GeoTIFFs, the real CLI, real subprocesses."""

from __future__ import annotations

import hashlib
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

FAST = ["--tile", "64", "--overlap", "16", "--steps", "2", "--quiet"]
LONG_WAIT_S = 600  # only a bound against a hung test; every wait ends on a file or a process exit


def scene(folder: Path, name: str = "opt", size: int = 64) -> tuple[Path, Path]:
    """A smooth pair: folder/X/<name>.tif (4 bands uint16) and folder/<name>_sar.tif (1 band, dB)."""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + x - y
    opt = np.stack([1000 + 400 * (i + 1) * field * (-1) ** i for i in range(4)]).astype("uint16")
    sar = (-12 + 6 * field)[None].astype("float32")
    return write_tif(folder / "X" / f"{name}.tif", opt), write_tif(folder / f"{name}_sar.tif", sar)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`, hidden ones included: a symlink's target, or a file's inode, mode, times and bytes."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                state[str(path)] = ("dir", st.st_ino, st.st_mode)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[str(path)] = ("file", st.st_ino, st.st_mode, st.st_nlink, st.st_mtime_ns, digest)
    return state


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def alias(target: Path, how: str) -> Path:
    """`target` itself, or a new symlink / hard link to it beside it."""
    if how == "same path":
        return target
    link = target.with_name(f"alias_of_{target.stem}.tif")
    if how == "symlink":
        link.symlink_to(target)
    else:
        os.link(target, link)
    return link


def refused(mdseg, root: Path, *args: object) -> str:
    """Run `mdseg predict ARGS`, expect exit 3 (an output problem) with one error line and `root` exactly as
    before; the line."""
    before = snapshot(root)
    code, _, err = mdseg("predict", *args, *FAST)
    assert code == 3, err
    assert snapshot(root) == before
    return one_error_line(err)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
@pytest.mark.parametrize("victim", ["--opt", "--sar"])
@pytest.mark.parametrize("flag", ["--out", "--prob", "--confidence", "--vector", "--quicklook"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, tiny_checkpoint, mdseg, flag, victim, how):
    opt, sar = scene(tmp_path)
    target = {"--opt": opt, "--sar": sar}[victim]
    given = alias(target, how)
    out = [] if flag == "--out" else ["--out", tmp_path / "X" / "m.tif"]
    line = refused(
        mdseg, tmp_path, "--opt", opt, "--sar", sar, *out, flag, given, "--checkpoint", tiny_checkpoint, "--overwrite"
    )
    assert f"'{given}'" in line and f"'{target}'" in line and "an input is never overwritten" in line


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        ("--quicklook", "m.tif"),
        ("--quicklook", "m.tif.aux.xml"),
        ("--quicklook", "m.json"),
        ("--prob", "m.json"),
        ("--prob", "m.tif"),
        ("--confidence", "m.tif.msk"),
        ("--vector", "m.json"),
    ],
)
def test_an_output_on_another_output_or_its_sidecar_is_refused_before_prediction(
    tmp_path, tiny_checkpoint, mdseg, flag, name
):
    opt, sar = scene(tmp_path)
    for existing in ("m.tif", "m.tif.aux.xml", "m.json"):  # an earlier run's map, metadata and run record
        (tmp_path / existing).write_text(existing)
    line = refused(
        mdseg,
        tmp_path,
        "--opt",
        opt,
        "--sar",
        sar,
        "--out",
        tmp_path / "m.tif",
        flag,
        tmp_path / name,
        "--checkpoint",
        tiny_checkpoint,
        "--overwrite",
    )
    assert f"'{tmp_path / name}'" in line and "give each output its own path" in line


def test_the_run_record_of_a_map_named_json_is_the_map_itself_and_is_refused(tmp_path, tiny_checkpoint, mdseg):
    opt, sar = scene(tmp_path)
    line = refused(
        mdseg, tmp_path, "--opt", opt, "--sar", sar, "--out", tmp_path / "m.json", "--checkpoint", tiny_checkpoint
    )
    assert "the run record" in line and "the map" in line


def test_an_output_over_the_checkpoint_is_refused(tmp_path, tiny_checkpoint, mdseg):
    opt, sar = scene(tmp_path)
    before = snapshot(tiny_checkpoint.parent)
    line = refused(
        mdseg,
        tmp_path,
        "--opt",
        opt,
        "--sar",
        sar,
        "--out",
        tmp_path / "m.tif",
        "--prob",
        tiny_checkpoint,
        "--checkpoint",
        tiny_checkpoint,
        "--overwrite",
    )
    assert "the checkpoint" in line and snapshot(tiny_checkpoint.parent) == before


# --- real processes: killed runs, concurrent runs ------------------------------------------------------------------


def start_predict(opt: Path, sar: Path, out: Path, checkpoint: Path, *extra: object) -> subprocess.Popen:
    args = ["predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint, *FAST]
    args += ["--threads", "1", "--device", "cpu", *extra]
    command = [sys.executable, "-m", "mdseg", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen) -> None:
    """Poll until `condition()` holds; fail if the process ends first."""
    deadline = time.monotonic() + LONG_WAIT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the awaited file: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "gave up waiting (hung?)"
        time.sleep(0.01)


def temporaries(folder: Path, stem: str) -> list[Path]:
    """The hidden temporaries of outputs named `stem`.* in `folder` (lock files excluded)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.lstrip(".").startswith(f"{stem}.mdseg-")]
    return [p for p in found if not p.name.endswith(".mdseg-lock")]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_a_killed_runs_temporaries_are_cleared_by_the_next_run_in_that_folder(tmp_path, tiny_checkpoint, mdseg):
    opt, sar = scene(tmp_path / "in", size=384)
    out_dir = tmp_path / "out"
    proc = start_predict(opt, sar, out_dir / "m.tif", tiny_checkpoint)
    wait_for(lambda: temporaries(out_dir, "m"), proc)
    proc.kill()
    proc.wait(timeout=LONG_WAIT_S)
    left = names(out_dir)
    assert "m.tif" not in left and any(".mdseg-" in n and n.endswith(".tif") for n in left), left

    code, _, err = mdseg(
        "predict", "--opt", opt, "--sar", sar, "--out", out_dir / "m.tif", "--checkpoint", tiny_checkpoint, *FAST
    )
    assert code == 0, err
    assert names(out_dir) == ["m.json", "m.qml", "m.stac.json", "m.tif", "m.tif.aux.xml"]


@pytest.mark.slow
def test_a_second_run_to_the_same_output_is_refused_naming_the_first(tmp_path, tiny_checkpoint, mdseg):
    opt, sar = scene(tmp_path / "in", size=512)
    other_opt, other_sar = scene(tmp_path / "other", size=64)
    out = tmp_path / "out" / "m.tif"
    lock = out.with_name(".m.tif.mdseg-lock")
    proc = start_predict(opt, sar, out, tiny_checkpoint)
    wait_for(lambda: lock.is_file() and lock.read_text().strip(), proc)  # its holder's host and pid are in
    # Paused (not killed) while the second run tries: the first cannot finish first on a fast machine.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        code, _, err = mdseg(
            "predict",
            "--opt",
            other_opt,
            "--sar",
            other_sar,
            "--out",
            out,
            "--checkpoint",
            tiny_checkpoint,
            *FAST,
            "--overwrite",
        )
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert code == 3
    line = one_error_line(err)
    assert f"'{out}' is being written by another mdseg run (pid {proc.pid} on host" in line
    _, stderr = proc.communicate(timeout=LONG_WAIT_S)
    assert proc.returncode == 0, stderr
    # The first run's outputs, whole; no lock left.
    assert names(out.parent) == ["m.json", "m.qml", "m.stac.json", "m.tif", "m.tif.aux.xml"]
    assert json.loads((out.parent / "m.json").read_text())["inputs"]["optical"] == str(opt)


@pytest.mark.slow
def test_a_run_into_the_folder_of_a_live_run_leaves_its_temporaries(tmp_path, tiny_checkpoint, mdseg):
    opt, sar = scene(tmp_path / "in", size=512)
    small_opt, small_sar = scene(tmp_path / "small", size=64)
    out_dir = tmp_path / "out"
    proc = start_predict(opt, sar, out_dir / "a.tif", tiny_checkpoint)
    wait_for(lambda: temporaries(out_dir, "a"), proc)
    seen = temporaries(out_dir, "a")
    code, _, err = mdseg(
        "predict",
        "--opt",
        small_opt,
        "--sar",
        small_sar,
        "--out",
        out_dir / "b.tif",
        "--checkpoint",
        tiny_checkpoint,
        *FAST,
    )
    assert code == 0, err
    if proc.poll() is None:  # still running: what it had then is still there
        assert all(p.exists() for p in seen)
    _, stderr = proc.communicate(timeout=LONG_WAIT_S)
    assert proc.returncode == 0, stderr
    assert names(out_dir) == [f"{s}{x}" for s in "ab" for x in (".json", ".qml", ".stac.json", ".tif", ".tif.aux.xml")]


# --- the other commands: quicklook, eval --confusion, synth, train --out --------------------------------------------


def run_refused(mdseg, root: Path, *args: object, status: int = 3) -> str:
    """Run `mdseg ARGS`, expect exit `status` (3: an output problem; 2: options that contradict each other) with
    one error line and `root` exactly as before; the line."""
    before = snapshot(root)
    code, _, err = mdseg(*args)
    assert code == status, err
    assert snapshot(root) == before
    return one_error_line(err)


@pytest.mark.parametrize("victim", ["--opt", "--sar", "--pred", "--label"])
def test_a_quicklook_picture_over_one_of_its_rasters_is_refused(tmp_path, mdseg, victim):
    opt, sar = scene(tmp_path)
    rasters = {"--opt": opt, "--sar": sar, "--pred": opt.with_name("pred.tif"), "--label": opt.with_name("label.tif")}
    for role in ("--pred", "--label"):
        write_tif(rasters[role], np.zeros((64, 64), dtype="uint8"))
    picture = alias(rasters[victim], "hard link")
    args = [a for role, path in rasters.items() for a in (role, path)]
    line = run_refused(mdseg, tmp_path, "quicklook", *args, "--out", picture, "--overwrite")
    assert f"'{picture}'" in line and f"'{rasters[victim]}'" in line


@pytest.mark.parametrize("victim", ["--pred", "--label"])
def test_an_eval_confusion_csv_over_a_compared_raster_is_refused(tmp_path, mdseg, victim):
    rasters = {
        role: write_tif(tmp_path / f"{role[2:]}.tif", np.zeros((8, 8), dtype="uint8")) for role in ("--pred", "--label")
    }
    line = run_refused(
        mdseg,
        tmp_path,
        "eval",
        *[a for r in rasters.items() for a in r],
        "--classes",
        "2",
        "--confusion",
        alias(rasters[victim], "symlink"),
    )
    assert f"'{rasters[victim]}'" in line


@pytest.mark.parametrize("where", ["checkpoint", "data"])
def test_an_eval_confusion_csv_over_the_checkpoint_or_in_the_dataset_is_refused(
    tmp_path, tiny_checkpoint, mdseg, where
):
    (tmp_path / "data" / "val").mkdir(parents=True)
    confusion = {"checkpoint": tiny_checkpoint, "data": tmp_path / "data" / "val" / "cm.csv"}[where]
    before = snapshot(tiny_checkpoint.parent)
    line = run_refused(
        mdseg,
        tmp_path,
        "eval",
        "--data",
        tmp_path / "data",
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--confusion",
        confusion,
    )
    assert f"'{confusion}'" in line and snapshot(tiny_checkpoint.parent) == before


def test_a_synthetic_dataset_whose_folders_are_one_is_refused_before_any_file(tmp_path, mdseg):
    (tmp_path / "ds" / "train" / "opt").mkdir(parents=True)
    (tmp_path / "ds" / "train" / "sar").symlink_to(tmp_path / "ds" / "train" / "opt")
    line = run_refused(mdseg, tmp_path, "synth", "--out", tmp_path / "ds", "--scenes", "3", "--size", "64")
    assert "the SAR raster" in line and "are the same file" in line


@pytest.mark.parametrize("where", ["inside", "same", "holding"])
def test_a_training_run_folder_overlapping_the_data_folder_is_refused(tmp_path, mdseg, where):
    data = tmp_path / "work" / "data"
    write_tif(data / "opt" / "a.tif", np.zeros((4, 8, 8), dtype="uint16"))
    out = {"inside": data / "runs" / "r1", "same": data, "holding": tmp_path / "work"}[where]
    args = ("train", "--data", data, "--out", out, "--iters", "1", "--quiet")
    line = run_refused(mdseg, tmp_path, *args, status=2)  # --out contradicts --data: an option error
    assert "overlap" in line and f"'{data}'" in line
