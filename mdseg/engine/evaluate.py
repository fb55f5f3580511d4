"""Evaluation against labels: a predicted class raster compared with a label raster, strip by strip, and a
checkpoint run over every sample of a dataset split (sharded across ranks under torchrun).

The confusion-matrix arithmetic lives in `mdseg.metrics`; this module reads rasters into it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from mdseg.engine.options import PredictOptions
from mdseg.errors import ClassValueError, DatasetError, GeoreferenceError, InputFileError, OptionError
from mdseg.geo.grid import Grid
from mdseg.geo.pair import grid_of
from mdseg.geo.writer import class_names_from_tags
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.paths import check_apart, check_outputs
from mdseg.io.raster import open_raster, read_bands, read_classes
from mdseg.metrics import IGNORE_INDEX, ConfusionMatrix, SegMetrics, all_reduce, compute_metrics, metrics_dict
from mdseg.runtime import current_ranks

if TYPE_CHECKING:
    from mdseg.checkpoint import CheckpointMeta
    from mdseg.data.classes import ClassScheme
    from mdseg.data.layout import DatasetLayout
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.domain import DomainCheck
    from mdseg.engine.tile_runner import TileModel

# Pixels per strip read from each raster: a few int64 work arrays of this size stay around 32 MiB each.
BLOCK_PIXELS = 1 << 22


@dataclass(frozen=True)
class EvalResult:
    """The summed confusion matrix of an evaluation, its class names and metrics; `inputs` says what a dataset
    evaluation ran (checkpoint, data, split, samples, sampling options; empty for two rasters)."""

    classes: list[str]
    confusion: ConfusionMatrix
    metrics: SegMetrics
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: the metrics of `metrics_dict`, plus `classes`, `pixels` counted, `ignore_index`,
        `confusion` (K lists of K counts, rows = label, columns = prediction) and `inputs` when set."""
        return {
            **metrics_dict(self.metrics, self.classes),
            "classes": list(self.classes),
            "pixels": self.confusion.total,
            "ignore_index": self.confusion.ignore_index,
            "confusion": self.confusion.matrix.tolist(),
            **({"inputs": dict(self.inputs)} if self.inputs else {}),
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
    with ExitStack() as stack:  # the names as given: a URL is no Path (mdseg.io.names)
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
            p, p_valid = read_classes(pred, window, role="prediction")
            y, y_valid = read_classes(label, window, role="label")
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


def write_confusion_csv(
    path: str | Path,
    cm: ConfusionMatrix,
    classes: Sequence[str],
    inputs: Mapping[str, str | Path | None] | None = None,
) -> Path:
    """Write `cm` as CSV: a header row of prediction class names, then one row per label class (its name, then
    K counts). Replaces an existing file, but never one of `inputs` (role → path: the rasters or checkpoint the
    matrix came from; `OutputError`, see `check_confusion_path`); the write is all-or-nothing."""
    if len(classes) != cm.num_classes:
        raise ValueError(f"{len(classes)} class names for {cm.num_classes} classes")
    path = Path(path)
    check_confusion_path(path, inputs)
    with AtomicOutputs(overwrite=True) as outputs:
        tmp = outputs.reserve(path)
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label \\ prediction", *classes])
            for name, row in zip(classes, cm.matrix.tolist(), strict=True):
                writer.writerow([name, *row])
    return path


def check_confusion_path(
    path: str | Path, inputs: Mapping[str, str | Path | None] | None = None, data: str | Path | None = None
) -> None:
    """`OutputError` when the confusion-matrix CSV `path` is one of `inputs` (role → path) or a GDAL sidecar of
    one, or lies in the dataset folder `data`: an evaluation writes nothing among what it reads."""
    check_outputs({"the confusion matrix": path}, inputs)
    if data is not None:
        check_apart(path, "the confusion matrix", data, "the dataset folder")


def _check_same_grid(pred: Grid, label: Grid, pred_path: str | Path, label_path: str | Path) -> None:
    if pred.same_as(label):
        return
    why = pred.difference(label, "label")
    raise GeoreferenceError(
        f"Prediction '{pred_path}' and label '{label_path}' are not on the same grid ({why}); "
        "resample one onto the other's grid (nearest neighbour) first."
    )


# The split a dataset evaluation takes when none is given and the dataset has it.
_EVAL_SPLIT = "val"


@dataclass(frozen=True)
class EvalData:
    """Which dataset an evaluation runs on: its root folder, split (None: `find_dataset`'s default; a name, folder
    or list file), the 1-based bands to read (None: the layout's default), where that choice came from ("given"
    or "checkpoint") and, for a checkpoint's, which of its recorded splits it is ("validation", "test", "training",
    or "data" when only the dataset folder is the checkpoint's)."""

    root: Path
    split: str | None = None
    opt_bands: tuple[int, ...] | None = None
    sar_bands: tuple[int, ...] | None = None
    source: str = "given"
    role: str = "validation"

    def describe(self) -> str:
        """One line for the user: the data, split and bands, and where they came from."""
        split = f"split '{self.split}'" if self.split is not None else "all files"
        bands = ""
        if self.opt_bands is not None or self.sar_bands is not None:
            bands = f", optical bands {list(self.opt_bands or [])}, SAR bands {list(self.sar_bands or [])}"
        where = ""
        if self.source == "checkpoint" and self.role == "data":
            where = " (the dataset recorded in the checkpoint)"
        elif self.source == "checkpoint":
            held_out = ", scenes its training never saw" if self.role == "test" else ""
            where = f" (the {self.role} split recorded in the checkpoint{held_out})"
        return f"data: {self.root}, {split}{bands}{where}"


def validation_data(meta: CheckpointMeta, checkpoint: str | Path | None = None) -> EvalData | None:
    """The validation split the checkpoint's training recorded (`provenance["validation"]`: data root, split or
    split list file, optical and SAR bands), or None when it records none. Paths recorded relative to the run
    folder are found from `checkpoint`'s folder (else from the current folder)."""
    return _recorded_data(meta, "validation", checkpoint)


def held_out_data(meta: CheckpointMeta, checkpoint: str | Path | None = None) -> EvalData | None:
    """The split to score a trained checkpoint on: the test split its training recorded (`provenance["test"]`,
    e.g. the scenes `mdseg train` held out of a dataset without splits), else its validation split, else None."""
    return _recorded_data(meta, "test", checkpoint) or validation_data(meta, checkpoint)


def _recorded_data(meta: CheckpointMeta, role: str, checkpoint: str | Path | None) -> EvalData | None:
    from mdseg.engine.runs import resolve_recorded

    recorded = meta.provenance.get(role)
    if not isinstance(recorded, dict) or not recorded.get("data"):
        return None
    run_dir = Path(checkpoint).parent if checkpoint is not None else Path()

    def bands(key: str) -> tuple[int, ...] | None:
        values = recorded.get(key)
        return tuple(int(b) for b in values) if values else None

    split = recorded.get("split")
    if recorded.get("split_file"):
        split = str(run_dir / recorded["split_file"])  # as the user would type it from here
    return EvalData(
        root=resolve_recorded(recorded["data"], run_dir),
        split=None if split is None else str(split),
        opt_bands=bands("opt_bands"),
        sar_bands=bands("sar_bands"),
        source="checkpoint",
        role=role,
    )


def choose_eval_data(
    meta: CheckpointMeta,
    data: str | Path | None = None,
    split: str | None = None,
    opt_bands: Sequence[int] | None = None,
    sar_bands: Sequence[int] | None = None,
    *,
    checkpoint: str | Path | None = None,
) -> EvalData:
    """What to evaluate on: `data` as given, else the split recorded in `meta` (`held_out_data`: test, else
    validation; `split` and bands given here still override it). Given data without a split takes its `val`
    split when it has one (a folder `val/`, `cat/val/` or a list `val.txt`), else, when it is the folder the
    checkpoint's training recorded, the split recorded there, else `find_dataset`'s default. On the recorded
    folder, a split name the dataset lacks but the run drew (`train`, `val`, `test`) is the run's own list.
    `checkpoint`: the checkpoint's path, from whose folder recorded relative paths are found. `OptionError` when
    there is no data at all."""
    given_bands = (tuple(opt_bands) if opt_bands else None, tuple(sar_bands) if sar_bands else None)
    recorded = held_out_data(meta, checkpoint)
    root = Path(data).resolve() if data is not None else None
    if root is None and recorded is None:
        raise OptionError(
            "the checkpoint records no validation data nor test split (provenance 'validation', 'test'); give "
            "the dataset with --data."
        )
    if root is not None and split is None and _has_split(root, _EVAL_SPLIT):
        split = _EVAL_SPLIT
    if recorded is None or (root is not None and recorded.root != root):
        return EvalData(root, split, *given_bands)
    role, split_file = recorded.role, recorded.split
    if split is not None:
        drawn = meta.provenance.get("split") if isinstance(meta.provenance.get("split"), dict) else {}
        files = drawn.get("files") or {}
        if split in files and not _has_split(recorded.root, split):  # "val": the run's own list, when drawn
            role, split_file = _ROLES.get(split, split), str(Path(checkpoint or ".").parent / files[split])
        else:
            role, split_file = "data", split
    return replace(
        recorded,
        split=split_file,
        opt_bands=given_bands[0] if given_bands[0] is not None else recorded.opt_bands,
        sar_bands=given_bands[1] if given_bands[1] is not None else recorded.sar_bands,
        role=role,
    )


_ROLES = {"train": "training", "val": "validation", "test": "test"}  # split name → what describe calls it


def _has_split(root: Path, split: str) -> bool:
    """Whether `root` has `split` as a folder, the authors' `cat/<split>/` form or a list file."""
    folders = (root / split, root / "cat" / split, root / "cat1" / split)
    return any(f.is_dir() for f in folders) or (root / f"{split}.txt").is_file()


def evaluate(
    checkpoint: str | Path | SceneModel,
    data: str | Path | EvalData | DatasetLayout | None = None,
    options: PredictOptions | None = None,
    *,
    split: str | None = None,
    device: str = "auto",
    progress: bool | Callable[[int, int], None] = True,
    on_domain: Callable[[DomainCheck], None] | None = None,
) -> EvalResult:
    """Run a checkpoint over every sample of a dataset split and score it against the labels.

    `checkpoint`: a path, or a loaded `SceneModel` (e.g. the trainer's model in memory: training validation is
    this function; it is put in eval mode for the run and its mode restored after). `data`: a dataset root
    (`split` / bands as `choose_eval_data` picks them), an `EvalData`, a `DatasetLayout` taken as it is, or None
    for the split recorded in the checkpoint (test, else validation).
    Each sample goes through the tiled scene engine as `mdseg predict` maps it (`score_scene`, with `options`:
    steps, seed, tile, overlap, batch size as there, None meaning the checkpoint's), and its blocks are scored in
    memory, no map written, against its labels read through the dataset's label map (unlisted values and 255
    ignored; pixels where an input is nodata are excluded) into one confusion matrix over the whole split. The
    bands read are `options.opt_bands` / `sar_bands` when given (else `data`'s or the layout's default);
    `options.sar_scale` is the dataset's SAR scale, decided once for the dataset when "auto". `device` applies
    when a path is given.

    Under `torch.distributed` (e.g. torchrun; see `mdseg.runtime.distributed`) each rank runs samples rank, rank + n, …
    and the confusion matrices are summed across ranks (int64), so every rank gets exactly the
    single-process result. `progress`: a Rich bar over samples on stderr (rank 0 only), a callback
    `(samples_done, samples_total)`, or nothing.

    Before any sample is predicted, the split's first sample is compared with the checkpoint's training data
    (`SceneModel.check_inputs`): the check goes into `inputs["domain"]` and to `on_domain` (e.g. to warn); with
    `options.strict_inputs` a band unlike the training data is an `MdsegError` there (and at any later sample).

    Raises `DatasetError` for an unusable dataset or one whose classes do not fit the checkpoint's, and what
    `SceneModel.predict` raises for a sample it cannot read (e.g. a raster without CRS).
    """
    from mdseg.data.layout import DatasetLayout, find_dataset
    from mdseg.data.reader import decide_dataset_sar_scale
    from mdseg.engine.batch import shard_scenes
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.progress import progress_reporter

    model = checkpoint if isinstance(checkpoint, SceneModel) else SceneModel.load(checkpoint, device)
    meta = model.meta
    o = model.sampling(options)
    if isinstance(data, DatasetLayout):
        layout, source = data, "given"
    else:
        target = (
            data
            if isinstance(data, EvalData)
            else choose_eval_data(meta, data, split, o.opt_bands, o.sar_bands, checkpoint=model.path)
        )
        layout = find_dataset(target.root, target.split, opt_bands=target.opt_bands, sar_bands=target.sar_bands)
        source = target.source
        if target.split is None and layout.split is not None:
            raise OptionError(
                f"dataset '{layout.root}' is divided into splits but has no '{_EVAL_SPLIT}' split; "
                "say which to evaluate with --split."
            )
    _check_classes(layout, meta)
    scaling = decide_dataset_sar_scale(layout, o.sar_scale)
    ranks = current_ranks()
    rank, world = ranks.shard
    mine = shard_scenes(layout.samples, ranks.shard)  # the same interleaving batch prediction shards with
    per_sample = replace(o, opt_bands=layout.opt_bands, sar_bands=layout.sar_bands, sar_scale=scaling.input)
    first = layout.samples[0]  # every rank checks the same one: each refuses alike under strict_inputs
    domain = model.check_inputs(first.opt, first.sar, per_sample)
    if on_domain is not None:
        on_domain(domain)
    cm = ConfusionMatrix(meta.config.num_classes)
    tile_model = model.tile_model()
    was_training = model.model.training
    model.model.eval()
    try:
        with progress_reporter(progress if rank == 0 else False, len(mine), "samples") as advance:
            for sample in mine:
                score_scene(
                    tile_model, sample.opt, sample.sar, sample.label, layout.classes, cm, per_sample, model.device
                )
                advance(1)
    finally:
        model.model.train(was_training)
    cm = all_reduce(cm)
    inputs = {
        "checkpoint": None if model.path is None else str(model.path),
        "checkpoint_sha256": model.sha256,
        "data": str(layout.root),
        "layout": layout.kind,
        "split": layout.split,
        "samples": len(layout.samples),
        "data_source": source,
        "opt_bands": list(layout.opt_bands),
        "sar_bands": list(layout.sar_bands),
        "sar_scale": scaling.input,
        "steps": o.steps,
        "seed": o.seed,
        "tile": o.tile,
        "overlap": o.overlap,
        "ranks": world,
        "domain": {"sample": first.name, **domain.to_dict()},
    }
    return EvalResult(list(meta.classes), cm, compute_metrics(cm.matrix), inputs)


def score_scene(
    model: TileModel,
    opt_path: str | Path,
    sar_path: str | Path,
    label_path: str | Path,
    classes: ClassScheme,
    cm: ConfusionMatrix,
    options: PredictOptions,
    device: str | torch.device = "cpu",
) -> None:
    """Predict one scene exactly as `mdseg predict` would map it (`ScenePass`: same tiles, seeds, blending and
    argmax, `options` filled in) and add it, block by block and in memory, to `cm` against `label_path` (a label
    raster on the optical grid, pixel for pixel).

    Labels go through `classes.encode` (unlisted values and label nodata → ignore); pixels the map would leave
    nodata (an input band nodata there, or outside the two inputs' common footprint) are not counted.
    """
    from mdseg.engine.predict import ScenePass, open_scene

    with open_scene(opt_path, sar_path, model, options) as (pair, _), open_raster(label_path, "Label") as label:
        if (label.height, label.width) != (pair.grid.height, pair.grid.width):
            raise InputFileError(
                f"Label '{label_path}' is {label.width}x{label.height} px but optical '{opt_path}' is "
                f"{pair.grid.width}x{pair.grid.height}; they must cover the same pixels."
            )
        row0, col0 = int(pair.window.row_off), int(pair.window.col_off)
        k = len(model.classes)
        for block in ScenePass(pair, model, options, device).blocks():
            n, m = block.covered.shape
            raw, ok = read_bands(label, [1], Window(col0 + block.col, row0 + block.row, m, n))
            y = classes.encode(np.where(ok[0], raw[0], -1))
            try:
                cm.update(y, block.values[:k].argmax(axis=0), block.covered)
            except ClassValueError as exc:
                raise ClassValueError(f"{exc} in '{label_path}'", exc.role) from None


def _check_classes(layout: DatasetLayout, meta: CheckpointMeta) -> None:
    """The dataset's classes must be the checkpoint's: the same count, or fewer when the dataset names none
    (a generic folder without classes.json counts only the values its labels hold)."""
    from mdseg.data.layout import CLASSES_FILE

    have, want = layout.classes.num_classes, meta.config.num_classes
    inferred = layout.kind == "generic" and not (layout.root / CLASSES_FILE).is_file()
    if have == want or (inferred and have < want):
        return
    raise DatasetError(
        f"dataset '{layout.root}' has {have} classes ({', '.join(layout.classes.names)}) but the checkpoint has "
        f"{want} ({', '.join(meta.classes)}); evaluate on data with the checkpoint's classes."
    )
