"""What a run reports as it goes: `metrics.jsonl` and TensorBoard, the loss/mIoU curves, and the progress bar."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdseg.engine.runs import METRICS_FILE, TENSORBOARD_DIR
from mdseg.io.atomic import AtomicOutputs


class MetricsLog:
    """metrics.jsonl (one JSON object per record) and TensorBoard scalars (when installed), on rank 0 only.

    A resumed run keeps the records up to the iteration it resumes at and drops any logged after its last save.
    `history` holds every record (the resumed ones too).
    """

    def __init__(self, run_dir: Path, enabled: bool, resume_at: int) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.history: list[dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if record.get("iter", 0) <= resume_at:
                    self.history.append(record)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` (it has an "iter") to the history, metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        self.history.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "iter":
                    self.tb.add_scalar(key, value, record["iter"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class LossWindow:
    """The loss terms and timings of the iterations since the last log line, averaged into one record.

    Loss terms stay on the device until the record is made: one device-to-host copy per log line, not one per
    term per iteration.
    """

    def __init__(self) -> None:
        self.losses: list[dict[str, torch.Tensor]] = []
        self.times: list[dict[str, float]] = []

    def add(self, losses: dict[str, torch.Tensor], data_wait: float, step_time: float) -> None:
        """One iteration: its loss terms, the seconds it waited for its batch and the seconds it took in all."""
        self.losses.append({k: v.detach() for k, v in losses.items()})
        self.times.append({"data_wait": data_wait, "step_time": step_time})

    def record(self, iteration: int, lr: float, seconds: float) -> dict[str, Any]:
        """The window's mean loss terms and timings, with the iteration, learning rate and seconds since the run
        (re)started; empties the window."""
        terms = {k: torch.stack([w[k] for w in self.losses]).float().mean().item() for k in self.losses[0]}
        times = {k: float(np.mean([w[k] for w in self.times])) for k in self.times[0]}
        record = {**terms, **times}
        record.update(iter=iteration, lr=lr, seconds=round(seconds, 2))
        self.losses.clear()
        self.times.clear()
        return record


def plot_curves(history: list[dict[str, Any]], path: Path) -> bool:
    """Training loss and validation mIoU against iteration, as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [r for r in history if "loss" in r]
    val = [r for r in history if r.get("val_miou") is not None]
    fig, loss_ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        loss_ax.plot([r["iter"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1, label="loss")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    loss_ax.grid(alpha=0.3)
    if val:
        miou_ax = loss_ax.twinx()
        miou_ax.plot([r["iter"] for r in val], [r["val_miou"] for r in val], "o-", color="tab:red", label="val mIoU")
        miou_ax.set_ylabel("validation mIoU", color="tab:red")
        miou_ax.set_ylim(0, 1)
    fig.tight_layout()
    with AtomicOutputs(overwrite=True) as outputs:
        fig.savefig(outputs.reserve(path), format="png")
    plt.close(fig)
    return True


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, start: int) -> Iterator[Callable[[int, float, float], None]]:
    """A rich progress bar from iteration `start` to `total`; yields `advance(iteration, loss, lr)` (does nothing
    when not `enabled`)."""
    if not enabled:
        yield lambda iteration, loss, lr: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=start, loss=float("nan"), lr=0.0, rate="")
        t0, first = time.perf_counter(), start

        def advance(iteration: int, loss: float, lr: float) -> None:
            rate = (iteration - first) / max(1e-9, time.perf_counter() - t0)
            bar.update(task, completed=iteration, loss=loss, lr=lr, rate=f"{rate:.2f} it/s")

        yield advance


__all__ = ["LossWindow", "MetricsLog", "plot_curves", "progress_bar"]
