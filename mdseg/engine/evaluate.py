"""Evaluation against labels: a predicted class raster compared with a label raster, strip by strip.

The confusion-matrix arithmetic lives in `mdseg.metrics`; this module reads rasters into it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from mdseg.errors import ClassValueError, GeoreferenceError, InputFileError, OptionError
from mdseg.geo.atomic import AtomicOutputs
from mdseg.geo.grid import Grid
from mdseg.geo.pair import grid_of, open_raster
from mdseg.metrics import IGNORE_INDEX, ConfusionMatrix, SegMetrics, compute_metrics, metrics_dict

# Pixels per strip read from each raster: a few int64 work arrays of this size stay around 32 MiB each.
BLOCK_PIXELS = 1 << 22


@dataclass(frozen=True)
class EvalResult:
    """The summed confusion matrix of an evaluation, its class names and metrics."""

    classes: list[str]
    confusion: ConfusionMatrix
    metrics: SegMetrics

    def to_dict(self) -> dict:
        """JSON-ready: the metrics of `metrics_dict`, plus `classes`, `pixels` counted, `ignore_index` and
        `confusion` (K lists of K counts, rows = label, columns = prediction)."""
        return {
            **metrics_dict(self.metrics, self.classes),
            "classes": list(self.classes),
            "pixels": self.confusion.total,
            "ignore_index": self.confusion.ignore_index,
            "confusion": self.confusion.matrix.tolist(),
        }


def evaluate_rasters(
    pred_path: str | Path,
    label_path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_map: Mapping[int, int] | None = None,
    block_pixels: int = BLOCK_PIXELS,
) -> EvalResult:
    """Compare a class raster `pred_path` with `label_path` (same CRS, transform and size; band 1 of each).

    Pixels are skipped where either raster is nodata (GDAL's mask: nodata value, internal mask or alpha) or
    the label, after `label_map` (label value → class index or `ignore_index`; unlisted values unchanged), is
    `ignore_index`. `classes` names the classes 0..K−1; without it the names come from the prediction's
    (else the label's) `CLASS_NAMES` band tag, as `mdseg predict` writes it. Reads strips of about
    `block_pixels` pixels, never a whole image.

    Raises `InputFileError` (missing / unreadable / multi-band file), `GeoreferenceError` (grids differ),
    `OptionError` (no class names anywhere) and `ClassValueError` (values that are not classes).
    """
    pred_path, label_path = Path(pred_path), Path(label_path)
    with ExitStack() as stack:
        pred = stack.enter_context(open_raster(pred_path, "Prediction"))
        label = stack.enter_context(open_raster(label_path, "Label"))
        for src, path, role in ((pred, pred_path, "prediction"), (label, label_path, "label")):
            if src.count != 1:
                raise InputFileError(
                    f"The {role} raster '{path}' has {src.count} bands; eval compares single-band class rasters."
                )
        _check_same_grid(grid_of(pred), grid_of(label), pred_path, label_path)
        if classes is None:
            classes = class_names_from_tags(pred) or class_names_from_tags(label)
            if classes is None:
                raise OptionError(
                    f"Neither '{pred_path}' nor '{label_path}' names its classes (no CLASS_NAMES tag); "
                    "give the class names or their count."
                )
        cm = ConfusionMatrix(len(classes), ignore_index)
        for window in strips(pred, block_pixels):
            p, p_valid = _read_classes(pred, window, pred_path, "prediction")
            y, y_valid = _read_classes(label, window, label_path, "label")
            if label_map:
                y = apply_label_map(y, label_map)
            try:
                cm.update(y, p, p_valid & y_valid)
            except ClassValueError as exc:
                path = label_path if exc.role == "label" else pred_path
                hint = (
                    "map them with a label map or mark them with the ignore value"
                    if exc.role == "label"
                    else "check the class count, or that the file's nodata is set"
                )
                raise ClassValueError(f"{exc} in '{path}' ({len(classes)} classes); {hint}.", exc.role) from None
    return EvalResult(list(classes), cm, compute_metrics(cm.matrix))


def class_names_from_tags(src: rasterio.DatasetReader) -> list[str] | None:
    """Class names from band 1's `CLASS_NAMES` tag (a JSON list, as `mdseg predict` writes it), else None."""
    text = src.tags(1).get("CLASS_NAMES")
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not names:
        return None
    return [str(n) for n in names]


def apply_label_map(label: np.ndarray, label_map: Mapping[int, int]) -> np.ndarray:
    """`label` (any shape, integer) with each value that is a key of `label_map` replaced by its value;
    other values unchanged. Returns int64 (a mapped value such as 255 may not fit the input's dtype)."""
    keys = np.array(sorted(label_map), dtype=np.int64)
    values = np.array([label_map[k] for k in keys.tolist()], dtype=np.int64)
    out = label.astype(np.int64)
    at = np.searchsorted(keys, out).clip(max=len(keys) - 1)
    hit = keys[at] == out
    out[hit] = values[at[hit]]
    return out


def strips(src: rasterio.DatasetReader, block_pixels: int = BLOCK_PIXELS) -> Iterator[Window]:
    """Full-width windows of about `block_pixels` pixels covering `src` top to bottom; heights are a multiple
    of the file's block height when they can be, so no block is decoded twice."""
    rows = max(1, block_pixels // src.width)
    block_rows = src.block_shapes[0][0]
    if rows >= block_rows:
        rows -= rows % block_rows
    for row in range(0, src.height, rows):
        yield Window(0, row, src.width, min(rows, src.height - row))


def write_confusion_csv(path: str | Path, cm: ConfusionMatrix, classes: Sequence[str]) -> Path:
    """Write `cm` as CSV: a header row of prediction class names, then one row per label class (its name, then
    K counts). Replaces an existing file; the write is all-or-nothing."""
    if len(classes) != cm.num_classes:
        raise ValueError(f"{len(classes)} class names for {cm.num_classes} classes")
    path = Path(path)
    with AtomicOutputs(overwrite=True) as outputs:
        tmp = outputs.reserve(path)
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label \\ prediction", *classes])
            for name, row in zip(classes, cm.matrix.tolist(), strict=True):
                writer.writerow([name, *row])
    return path


def _check_same_grid(pred: Grid, label: Grid, pred_path: Path, label_path: Path) -> None:
    if pred.same_as(label):
        return
    why = pred.difference(label, "label")
    raise GeoreferenceError(
        f"Prediction '{pred_path}' and label '{label_path}' are not on the same grid ({why}); "
        "resample one onto the other's grid (nearest neighbour) first."
    )


def _read_classes(src: rasterio.DatasetReader, window: Window, path: Path, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 in `window` as int64 class values (h, w) and its validity (h, w) bool (not nodata, finite)."""
    data = src.read(1, window=window)
    if MaskFlags.all_valid in src.mask_flag_enums[0]:
        valid = np.ones(data.shape, dtype=bool)
    else:
        valid = src.read_masks(1, window=window) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
        fractional = valid & (data != np.round(data))
        if fractional.any():
            raise ClassValueError(
                f"The {role} raster '{path}' holds non-integer values (e.g. {data[fractional][0]}); "
                "eval compares class indices.",
                role,
            )
        data = np.where(valid, data, 0)
    return data.astype(np.int64, copy=False), valid
