"""Training run folders: their names, the files inside, and finding the most recent run's checkpoint.

A run lives in one folder, `runs/<data folder>-<preset>[-N]` under the current folder unless `--out` says where:

- `config.json`: the fully resolved training settings (rerun with `mdseg train --config runs/<name>/config.json`);
- `last.safetensors`, `best.safetensors`: mdseg checkpoints (weights + everything `predict` needs);
- `state.safetensors`: the resumable state (weights, optimizer moments, iteration, best score), no pickle;
- `metrics.jsonl` (one JSON object per logged iteration or validation), `curves.png`, and TensorBoard event
  files under `tb/` when TensorBoard is installed;
- `splits/train.txt`, `val.txt`, `test.txt`: the scene-level split drawn for a dataset without splits of its own
  (see `mdseg.data.splits`), which a resumed run keeps and `mdseg eval` scores the checkpoint on.

Checkpoints record paths relative to their run folder (`run_relative`), never the machine's absolute paths;
`resolve_recorded` turns such a path back into a place on disk.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from mdseg.errors import OptionError
from mdseg.io.paths import check_apart

RUNS_DIR = Path("runs")
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tb"
RUN_BEST = "best.safetensors"
RUN_LAST = "last.safetensors"
SPLITS_DIR = "splits"


def new_run_dir(data: str | Path, model: str, root: Path | None = None) -> Path:
    """`runs/<data folder>-<preset>` under the current folder, numbered (-2, -3, …) so no run is overwritten."""
    root = root if root is not None else Path.cwd() / RUNS_DIR
    base = f"{Path(data).name or 'data'}-{model}"
    candidate, n = root / base, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate


def check_new_run_dir(out: Path, data: str | Path | None = None) -> None:
    """`OptionError` unless `out` is missing or an empty folder (a new run never writes into an old one);
    `OutputError` when it is the data folder `data`, lies inside it, or holds it (a run never writes among the
    files it trains on)."""
    if data is not None:
        check_apart(out, "the run folder (--out)", data, "the data folder (--data)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(
            f"run folder '{out}' exists and is not empty; resume it with --resume {out}, or choose another --out"
        )


def latest_run_checkpoint(runs_dir: str | Path = RUNS_DIR) -> tuple[Path, str]:
    """The best checkpoint of the most recent training run under `runs_dir`, and one line saying which.

    The most recent run is the folder whose `last.safetensors` (else `best.safetensors`) was written last;
    folders without either are ignored. Its `best.safetensors` is taken, else its `last.safetensors` (the
    line says so). `OptionError` when no run has a checkpoint.
    """
    runs_dir = Path(runs_dir)
    runs = []
    if runs_dir.is_dir():
        for run in runs_dir.iterdir():
            stamp = next((run / n for n in (RUN_LAST, RUN_BEST) if (run / n).is_file()), None)
            if stamp is not None:
                runs.append((stamp.stat().st_mtime_ns, run.name, run))
    if not runs:
        raise OptionError(
            f"no checkpoint given and no run under '{runs_dir}' has a {RUN_BEST} or {RUN_LAST}; pass --checkpoint, "
            "or train one first (mdseg train)."
        )
    run = max(runs)[2]
    if (run / RUN_BEST).is_file():
        return run / RUN_BEST, f"checkpoint: {run / RUN_BEST} (the best of the most recent run)"
    return run / RUN_LAST, f"checkpoint: {run / RUN_LAST} (the most recent run has no {RUN_BEST}; using its last)"


def run_relative(path: str | Path, run_dir: str | Path) -> str:
    """`path` as a checkpoint records it: relative to the run folder `run_dir` (POSIX separators), or only its
    name when no relative path leads there (another drive)."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    try:
        return PurePath(os.path.relpath(path, run_dir)).as_posix()
    except ValueError:
        return path.name


def resolve_recorded(recorded: str | Path, run_dir: str | Path) -> Path:
    """A path a checkpoint recorded (`run_relative`'s, or an absolute one from older checkpoints) as a place on
    disk, given the folder the checkpoint lies in."""
    return (Path(run_dir) / recorded).resolve()
