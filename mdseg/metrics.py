"""Segmentation metrics from a confusion matrix, following MMSegmentation's convention.

One (K, K) int64 confusion matrix is summed over every block, scene and rank of an evaluation; the metrics
are computed once from that sum (never averaged per image). Rows are labels, columns are predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mdseg.errors import ClassValueError

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Streaming (K, K) int64 confusion matrix: `matrix[label, prediction]` counts pixels.

    Feed it blocks with `update`; sum matrices of scenes or ranks with `+` (or `all_reduce` across processes).
    Pixels whose label is `ignore_index`, or that a `valid` mask excludes (nodata), are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, matrix: np.ndarray | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        if matrix is None:
            matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        elif matrix.shape != (num_classes, num_classes):
            raise ValueError(f"matrix shape {matrix.shape} does not match {num_classes} classes")
        self.matrix = matrix.astype(np.int64, copy=False)

    def update(self, label: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count one block: `label` and `pred` are integer class indices of the same shape (any, e.g. (H, W));
        `valid` (same shape, bool) marks pixels to count, e.g. where neither raster is nodata.

        Raises `ClassValueError` when a counted label is neither a class index 0..K−1 nor `ignore_index`, or a
        counted prediction is not a class index: silently dropping them would hide a wrong class count or a
        missing label map.
        """
        if label.shape != pred.shape or (valid is not None and valid.shape != label.shape):
            shapes = f"label {label.shape}, pred {pred.shape}" + ("" if valid is None else f", valid {valid.shape}")
            raise ValueError(f"block shapes differ: {shapes}")
        keep = label != self.ignore_index
        if valid is not None:
            keep &= valid
        lab = label[keep].astype(np.int64, copy=False)
        prd = pred[keep].astype(np.int64, copy=False)
        k = self.num_classes
        for role, values in (("label", lab), ("prediction", prd)):
            bad = (values < 0) | (values >= k)
            if bad.any():
                shown = np.unique(values[bad])[:8].tolist()
                raise ClassValueError(f"{role} values {shown} are not class indices 0..{k - 1}", role=role)
        self.matrix += np.bincount(lab * k + prd, minlength=k * k).reshape(k, k)

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_same_size(other)
        return ConfusionMatrix(self.num_classes, self.ignore_index, self.matrix + other.matrix)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_same_size(other)
        self.matrix += other.matrix
        return self

    def _check_same_size(self, other: ConfusionMatrix) -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot add confusion matrices of {self.num_classes} and {other.num_classes} classes")

    @property
    def total(self) -> int:
        """Pixels counted."""
        return int(self.matrix.sum())


def all_reduce(cm: ConfusionMatrix) -> ConfusionMatrix:
    """The sum of `cm` over all ranks when `torch.distributed` is initialised (every rank gets it), else `cm`.

    Counts travel as int64, so the result equals a single-process run exactly.
    """
    import torch

    from mdseg.runtime import current_ranks

    ranks = current_ranks()
    if ranks.world == 1:
        return cm
    summed = ranks.all_reduce_sum(torch.from_numpy(cm.matrix.copy()))
    return ConfusionMatrix(cm.num_classes, cm.ignore_index, summed.numpy())


@dataclass(frozen=True)
class SegMetrics:
    """Metrics of one confusion matrix; fractions in 0–1, per-class arrays of shape (K,), float64.

    A class absent from both label and prediction has NaN everywhere and is left out of every mean.
    `acc` (= `recall`) is NaN for a class missing from the label, `precision` for a class never predicted;
    those NaNs are left out of the matching mean too (MMSegmentation's nanmean). A class in the label but never
    predicted has IoU and F1 0, which count. With no pixel counted, everything is NaN.
    """

    iou: np.ndarray
    acc: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    absent: np.ndarray
    miou: float
    macc: float
    mf1: float
    oa: float
    kappa: float


def compute_metrics(matrix: np.ndarray) -> SegMetrics:
    """Per-class IoU, Acc, F1, precision, recall and mIoU, mAcc, mF1, OA (aAcc), Cohen's kappa of a (K, K)
    confusion matrix (rows = label, columns = prediction)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    label_area = m.sum(axis=1)
    pred_area = m.sum(axis=0)
    union = label_area + pred_area - tp
    absent = union == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / union
        recall = tp / label_area
        precision = tp / pred_area
        # 2·tp / (|label| + |pred|) equals 2PR/(P+R) and stays defined (0) when a class is never predicted.
        f1 = 2 * tp / (label_area + pred_area)
    total = m.sum()
    oa = tp.sum() / total if total else np.nan
    # Chance agreement from the marginals; undefined (NaN) when it is 1, i.e. a single class everywhere.
    expected = (label_area * pred_area).sum() / total**2 if total else np.nan
    kappa = (oa - expected) / (1 - expected) if total and expected < 1 else np.nan
    return SegMetrics(
        iou=iou,
        acc=recall,
        f1=f1,
        precision=precision,
        recall=recall,
        absent=absent,
        miou=_nanmean(iou),
        macc=_nanmean(recall),
        mf1=_nanmean(f1),
        oa=float(oa),
        kappa=float(kappa),
    )


def metrics_dict(metrics: SegMetrics, classes: Sequence[str]) -> dict:
    """JSON-ready metrics: `miou`, `macc`, `mf1`, `oa`, `kappa`, `per_class` (one `{name, iou, acc, f1,
    precision, recall}` per class) and `absent_classes` (names); NaN becomes None (JSON null)."""
    if len(classes) != len(metrics.iou):
        raise ValueError(f"{len(classes)} class names for {len(metrics.iou)} classes")
    per_class = [
        {
            "name": name,
            **{key: _number(getattr(metrics, key)[i]) for key in ("iou", "acc", "f1", "precision", "recall")},
        }
        for i, name in enumerate(classes)
    ]
    return {
        **{key: _number(getattr(metrics, key)) for key in ("miou", "macc", "mf1", "oa", "kappa")},
        "per_class": per_class,
        "absent_classes": [name for name, gone in zip(classes, metrics.absent, strict=True) if gone],
    }


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN when there are none (without numpy's empty-slice warning)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
