"""`mdseg eval`: score a predicted raster against a label (raster mode), or a checkpoint over a dataset split."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mdseg.cli import options as opt_
from mdseg.cli.console import console
from mdseg.cli.console import note as say
from mdseg.errors import OptionError
from mdseg.metrics import IGNORE_INDEX

if TYPE_CHECKING:
    from mdseg.engine.domain import DomainCheck
    from mdseg.engine.evaluate import EvalResult
    from mdseg.engine.options import PredictOptions


class MetricChoice(str, Enum):
    miou = "miou"
    oa = "oa"
    kappa = "kappa"
    f1 = "f1"
    all = "all"


def eval_(
    pred: Annotated[
        opt_.InputRaster | None,
        opt_.input_raster("--pred", "Raster mode: predicted class raster (band 1: class indices)."),
    ] = None,
    label: Annotated[
        opt_.InputRaster | None,
        opt_.input_raster("--label", "Raster mode: label raster on the same grid (CRS, transform, size)."),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Raster mode: class names for values 0..K−1, comma-separated, or just their count K. "
            "Default: the CLASS_NAMES tag of --pred (as mdseg predict writes it), else of --label.",
        ),
    ] = None,
    ignore: Annotated[
        int | None,
        typer.Option(
            "--ignore", help="Raster mode: label value (after --label-map) left out of the metrics. Default: 255."
        ),
    ] = None,
    label_map: Annotated[
        str | None,
        typer.Option(
            "--label-map",
            help="Raster mode: label values to remap before comparing, VALUE:CLASS pairs, e.g. 0:255,10:0,20:1 "
            "(WHU-OPT-SAR); unlisted values are kept.",
        ),
    ] = None,
    data: opt_.DataDir = None,
    split: opt_.Split = None,
    checkpoint: opt_.Checkpoint = None,
    steps: opt_.Steps = None,
    seed: opt_.Seed = None,
    tile: opt_.Tile = None,
    overlap: opt_.Overlap = None,
    batch_size: opt_.TileBatch = None,
    device: opt_.Device = None,
    opt_bands: opt_.OptBands = None,
    sar_bands: opt_.SarBands = None,
    strict_inputs: Annotated[
        bool,
        typer.Option(
            "--strict-inputs",
            help="Dataset mode: refuse a split whose first sample is unlike the checkpoint's training data (a "
            "band's median or range far off) instead of warning.",
        ),
    ] = False,
    metric: Annotated[
        MetricChoice, typer.Option("--metric", help="Headline metric, highlighted in the table.")
    ] = MetricChoice.miou,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object on stdout.")] = False,
    confusion: Annotated[
        Path | None, typer.Option("--confusion", help="Also write the confusion matrix here (CSV with class names).")
    ] = None,
) -> None:
    """Score land-cover predictions: per-class IoU, Acc, F1, and mIoU, OA, kappa.

    Raster mode (--pred, --label) compares two rasters; nodata of either and the --ignore value are left out.
    Dataset mode (--data, --split, --checkpoint, and the prediction options --steps … --sar-bands; by default the
    best checkpoint of the most recent run under ./runs/ and the validation split it records; --split defaults to
    val when the dataset has it, else all files) predicts every sample of a dataset split with the tiled engine and
    compares
    it with its label through the dataset's label map; under torchrun the samples are shared across ranks and
    the counts summed (the result equals a one-process run). The first sample's bands are compared with the
    checkpoint's training data first: a band far off is a warning, or an error with --strict-inputs.
    Metrics come from one confusion matrix (rows = label, columns = prediction), as MMSegmentation computes them.
    Percentages in the table; kappa as a fraction; --json gives fractions in 0–1.
    """
    params = dict(locals())  # the dataset mode's prediction options, by name
    from mdseg.engine.evaluate import check_confusion_path, evaluate_rasters, write_confusion_csv
    from mdseg.engine.options import PredictOptions

    raster_options = {
        "--pred": pred,
        "--label": label,
        "--classes": classes,
        "--ignore": ignore,
        "--label-map": label_map,
    }
    dataset_options = {
        "--data": data,
        "--split": split,
        "--checkpoint": checkpoint,
        "--steps": steps,
        "--seed": seed,
        "--tile": tile,
        "--overlap": overlap,
        "--batch-size": batch_size,
        "--device": device,
        "--opt-bands": opt_bands,
        "--sar-bands": sar_bands,
        "--strict-inputs": strict_inputs or None,
    }
    raster_given = [name for name, value in raster_options.items() if value is not None]
    dataset_given = [name for name, value in dataset_options.items() if value is not None]
    if raster_given and dataset_given:
        raise OptionError(
            f"{', '.join(raster_given)} compare two rasters but {', '.join(dataset_given)} run a checkpoint over a "
            "dataset; use one mode: --pred and --label, or --data and --checkpoint"
        )
    talk = True
    if raster_given:
        if pred is None or label is None:
            raise OptionError(
                "give --pred and --label: the predicted class raster and the label raster to score it with"
            )
        read = {"the prediction": pred, "the label": label}
        if confusion is not None:
            check_confusion_path(confusion, read)  # refuse now, not after the counting
        result = evaluate_rasters(
            pred,
            label,
            classes=_parse_classes(classes),
            ignore_index=IGNORE_INDEX if ignore is None else ignore,
            label_map=_parse_label_map(label_map),
        )
    else:
        given = {name: value for name, value in params.items() if value is not None}
        options = PredictOptions.from_mapping(given)
        result, talk, read = _eval_dataset(data, split, checkpoint, device or "auto", options, confusion)
    if not talk:  # another rank than 0 under torchrun: rank 0 reports
        return
    if confusion is not None:
        write_confusion_csv(confusion, result.confusion, result.classes, read)
    if as_json:
        payload = {**result.to_dict(), "metric": metric.value}
        console.print_json(json.dumps(payload))
        return
    _report_metrics(result, metric.value)
    if confusion is not None:
        console.print(f"wrote confusion matrix: {confusion}", highlight=False)


def _eval_dataset(
    data: Path | None,
    split: str | None,
    checkpoint: Path | None,
    device: str,
    options: PredictOptions,
    confusion: Path | None,
) -> tuple[EvalResult, bool, dict[str, Path]]:
    """Dataset mode: pick the checkpoint and data (saying which when defaulted), refuse a `confusion` path among
    them, run it over the split, sharded across ranks under torchrun. Returns the result, whether this process
    reports it (rank 0) and the files it read (the checkpoint, by role)."""
    from mdseg.checkpoint import read_checkpoint_meta
    from mdseg.engine.evaluate import check_confusion_path, choose_eval_data, evaluate
    from mdseg.engine.runs import latest_run_checkpoint
    from mdseg.runtime import distributed, resolve_device

    dev = resolve_device(device)
    with distributed(dev) as ranks:
        talk = ranks.main
        notes = []
        if checkpoint is None:
            checkpoint, note = latest_run_checkpoint()
            notes.append(note)
        meta = read_checkpoint_meta(checkpoint)
        target = choose_eval_data(meta, data, split, options.opt_bands, options.sar_bands, checkpoint=checkpoint)
        if data is None or split is None:
            notes.append(target.describe())
        read = {"the checkpoint": Path(checkpoint)}
        if confusion is not None:  # every rank: each raises the same error, none waits for the others
            check_confusion_path(confusion, read, data=target.root)
        if talk:
            for note in notes:
                say(note)
        warn = _warn if talk else None  # the first sample's input check, before any sample is predicted
        result = evaluate(checkpoint, target, options, device=str(dev), progress=talk, on_domain=warn)
    return result, talk, read


def _warn(check: DomainCheck) -> None:
    """One warning line on stderr per input of the first sample unlike the checkpoint's training data."""
    for message in check.messages:
        say(f"warning: {message}")


def _parse_classes(text: str | None) -> list[str] | None:
    """'water,forest' → names; '7' → ['0', …, '6']; None stays None (names from the rasters' tags)."""
    if text is None:
        return None
    if text.strip().isdigit():
        count = int(text)
        if count < 1:
            raise typer.BadParameter("the class count must be at least 1", param_hint="--classes")
        return [str(i) for i in range(count)]
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise typer.BadParameter(f"empty class name in {text!r}", param_hint="--classes")
    return names


def _parse_label_map(text: str | None) -> dict[int, int] | None:
    """'0:255,10:0' → {0: 255, 10: 0}; None stays None."""
    if text is None:
        return None
    try:
        pairs = [part.split(":") for part in text.split(",")]
        return {int(value): int(cls) for value, cls in pairs}
    except ValueError:
        raise typer.BadParameter(
            f"expected VALUE:CLASS pairs separated by commas, e.g. 0:255,10:0; got {text!r}", param_hint="--label-map"
        ) from None


# Headline metric → (summary key, per-class column it highlights).
_HEADLINES = {"miou": ("mIoU", "IoU"), "oa": ("OA", None), "kappa": ("kappa", None), "f1": ("mF1", "F1")}


def _report_metrics(result: EvalResult, metric: str) -> None:
    """Per-class table (percent) with the means, then the summary line; the headline metric in bold."""
    m = result.metrics
    bold = {_HEADLINES[metric][1]} if metric in _HEADLINES else {"IoU", "F1"}
    columns = {"IoU": m.iou, "Acc": m.acc, "F1": m.f1, "Precision": m.precision, "Recall": m.recall}
    means = {"IoU": m.miou, "Acc": m.macc, "F1": m.mf1}
    table = Table(title=f"{result.confusion.total:,} pixels compared (percent)")
    table.add_column("class")
    for name in columns:
        table.add_column(name, justify="right", style="bold" if name in bold else None)
    for i, name in enumerate(result.classes):
        table.add_row(name, *(_percent(values[i]) for values in columns.values()), style="dim" if m.absent[i] else None)
    table.add_section()
    table.add_row("mean", *(_percent(means[name]) if name in means else "" for name in columns))
    console.print(table)
    summary = {"mIoU": m.miou, "mAcc": m.macc, "mF1": m.mf1, "OA": m.oa, "kappa": m.kappa}
    headline = {_HEADLINES[metric][0]} if metric in _HEADLINES else set(summary)
    shown = {key: _percent(value) for key, value in summary.items()}
    shown["kappa"] = "—" if math.isnan(m.kappa) else f"{m.kappa:.4f}"
    parts = [f"[bold]{key} {text}[/]" if key in headline else f"{key} {text}" for key, text in shown.items()]
    console.print("  ".join(parts), highlight=False)
    absent = [name for name, gone in zip(result.classes, m.absent, strict=True) if gone]
    if absent:
        console.print(
            f"absent from both prediction and label, left out of the means: {', '.join(absent)}", highlight=False
        )


def _percent(value: float) -> str:
    """0.5921 → '59.21'; NaN → '—'."""
    return "—" if math.isnan(value) else f"{100 * value:.2f}"
