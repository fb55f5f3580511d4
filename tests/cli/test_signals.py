"""Stop signals: SIGINT, SIGTERM and SIGHUP stop a long `mdseg` command mid-run; it removes this run's temporaries,
prints one line naming the signal and exits with 128 + the signal, and a rerun then succeeds. Real subprocesses,
real signals, the demo weights; every wait ends on a file or a process exit, never on a clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mdseg.checkpoint import DEMO_CHECKPOINT
from mdseg.cli import stop_signals
from mdseg.errors import Interrupted

LONG_WAIT_S = 600  # only a bound against a hung test
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def start(*args: object, cwd: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "mdseg", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen) -> bool:
    """Poll until `condition()` holds (True), or the process ends first (False)."""
    deadline = time.monotonic() + LONG_WAIT_S
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "gave up waiting (hung?)"
        time.sleep(0.01)
    return True


def temporaries(folder: Path) -> list[Path]:
    """The hidden files of mdseg runs under `folder` (partial outputs, scratch files, locks)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(".*") if ".mdseg-" in p.name]


def scratch_files(folder: Path) -> list[Path]:
    """The scratch rasters a prediction streams its tiles into: they come after every output is reserved."""
    return [p for p in temporaries(folder) if ".scratch" in p.name]


def contents(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`, hidden ones included: relative path → (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def stop(proc: subprocess.Popen, sig: int) -> str:
    """Send `sig`, wait for the process to end; its stderr."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=LONG_WAIT_S)
    return err


def assert_stopped_by(proc: subprocess.Popen, err: str, sig: int) -> None:
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0], err


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 1024 × 1024 px synthetic pair: at 128-px tiles, long enough to be stopped while tiles run."""
    from mdseg.synth import synthesize_scene

    files = synthesize_scene(tmp_path_factory.mktemp("scene"), seed=5, size=1024)
    return files.opt, files.sar


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_mid_prediction_leaves_the_folder_as_it_was_and_exits_128_plus_the_signal(tmp_path, scene, sig):
    opt, sar = scene
    out_dir = tmp_path / "maps"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    before = contents(out_dir)
    predict = ["predict", "--opt", opt, "--sar", sar, "--out", out_dir / "m.tif", "--tile", 128, "--steps", 1]
    proc = start(*predict, "--quiet")
    assert wait_for(lambda: scratch_files(out_dir), proc), f"exit {proc.returncode} before any temporary"
    err = stop(proc, sig)
    assert_stopped_by(proc, err, sig)
    assert contents(out_dir) == before  # no temporaries, no map, no run record, no lock

    rerun = start(*predict, "--quiet")
    _, err = rerun.communicate(timeout=LONG_WAIT_S)
    assert rerun.returncode == 0, err
    written = {p.name for p in out_dir.iterdir()}
    assert {"m.tif", "m.json", "notes.txt"} <= written and not temporaries(out_dir), written


@pytest.mark.slow
def test_sigterm_mid_dataset_synthesis_leaves_no_file_and_exits_143(tmp_path):
    out = tmp_path / "synthetic"
    proc = start("synth", "--out", out, "--scenes", 3, "--size", 1024)
    # The first scene's label is reserved last of its files: then the scene is being drawn, for seconds.
    if not wait_for(lambda: any(p.parent.name == "label" for p in temporaries(out)), proc):
        pytest.skip(f"synth ended (exit {proc.returncode}) before its temporaries could be seen")
    err = stop(proc, signal.SIGTERM)
    assert_stopped_by(proc, err, signal.SIGTERM)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # no scene, no classes.json, no temporary

    rerun = start("synth", "--out", out, "--scenes", 3, "--size", 1024)
    _, err = rerun.communicate(timeout=LONG_WAIT_S)
    assert rerun.returncode == 0, err
    assert (out / "classes.json").is_file() and len(list(out.rglob("*.tif"))) == 9


@pytest.mark.slow
def test_sigterm_mid_quicklook_leaves_the_folder_as_it_was_and_exits_143(tmp_path, scene):
    opt, sar = scene
    out_dir = tmp_path / "pictures"
    out_dir.mkdir()
    before = contents(out_dir)
    # The label stands in for a map: what matters is a run long enough to be stopped (full-size panels).
    label = opt.with_name(opt.name.replace("_opt", "_label"))
    look = ["quicklook", "--opt", opt, "--sar", sar, "--pred", label, "--label", label, "--max-size", 1024]
    proc = start(*look, "--out", out_dir / "look.png")
    if not wait_for(lambda: temporaries(out_dir), proc):
        pytest.skip(f"quicklook ended (exit {proc.returncode}) before its temporaries could be seen")
    err = stop(proc, signal.SIGTERM)
    if proc.returncode == 0:
        pytest.skip("quicklook finished between its temporaries appearing and the signal")
    assert_stopped_by(proc, err, signal.SIGTERM)
    assert contents(out_dir) == before


def test_the_signal_handlers_are_restored_after_the_block():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with stop_signals():
        assert all(signal.getsignal(sig) is not before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_a_stop_signal_raises_interrupted_once_and_a_repeat_during_the_clean_up_is_ignored():
    cleaned = []
    with pytest.raises(Interrupted) as stopped, stop_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # the handler raises on its way out of the wait (in case the signal is not yet in)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while unwinding: ignored
            cleaned.append(True)
    assert stopped.value.signum == signal.SIGTERM and cleaned == [True]


def test_a_stop_signal_after_a_swallowed_interrupted_stops_the_run_again():
    with pytest.raises(Interrupted) as stopped, stop_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        except Interrupted:
            pass  # lost, as what a __del__ raises is
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
    assert stopped.value.signum == signal.SIGINT
