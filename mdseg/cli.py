"""The `mdseg` command line: thin wrappers over library functions.

Errors meant for users (`MdsegError`) are caught once, in `main`, and printed as one line (exit status 2).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mdseg.errors import BatchError, MdsegError, OptionError
from mdseg.metrics import IGNORE_INDEX

if TYPE_CHECKING:
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.evaluate import EvalResult
    from mdseg.engine.predict import PredictionResult

app = typer.Typer(
    name="mdseg",
    help="Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
# soft_wrap: an error stays one line in logs and pipes, whatever the terminal width
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""


@app.command()
def info(
    model: str | None = typer.Option(
        None, "--model", help="Also cost a model preset (tiny, small, paper): parameters and GFLOPs per tile."
    ),
    tile: int = typer.Option(256, "--tile", min=32, help="Tile size in pixels for the GFLOPs count."),
) -> None:
    """Show versions, threads, CUDA devices and which selective-scan backend runs where."""
    from mdseg.info import environment_report, model_report

    console.print(environment_report())
    if model is not None:
        console.print(model_report(model, tile))


class SarScaleChoice(str, Enum):
    auto = "auto"
    db = "db"
    linear = "linear"


class AlignChoice(str, Enum):
    reproject = "reproject"
    strict = "strict"


_PAIRING_HELP = (
    "Batch mode pairs files by scene name: the file stem, minus one 'opt' token in the optical folder or one 'sar' "
    "token in the SAR folder (tokens are separated by _ - . or spaces, any case), so 'T32_opt.tif' pairs with "
    "'T32_sar.tif' and 'T32.tif' with 'T32.tif'. Folders may be shared. Outputs are OUT_DIR/<scene>_landcover.tif."
)


@app.command(epilog=_PAIRING_HELP)
def predict(
    opt: Annotated[
        Path | None, typer.Option("--opt", help="Optical raster (any GDAL format); the output grid.")
    ] = None,
    sar: Annotated[
        Path | None, typer.Option("--sar", help="SAR raster; reprojected onto the optical grid if needed.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Land-cover map (COG). Default: <optical stem>_landcover.tif in the current folder."
        ),
    ] = None,
    opt_dir: Annotated[Path | None, typer.Option("--opt-dir", help="Batch mode: folder of optical rasters.")] = None,
    sar_dir: Annotated[Path | None, typer.Option("--sar-dir", help="Batch mode: folder of SAR rasters.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Batch mode: output folder (created); scenes whose map exists are skipped."),
    ] = None,
    pattern: Annotated[str, typer.Option("--pattern", help="Batch mode: file name pattern in both folders.")] = "*.tif",
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Batch mode: run only shard i of n ('i/n', 0-based: scenes i, i+n, …). "
            "Default: RANK/WORLD_SIZE under torchrun, else all scenes.",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="mdseg checkpoint (.safetensors). Default: the demo weights shipped with mdseg."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="DDIM sampling steps. Default: the checkpoint's (usually 3).")
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="Diffusion draws averaged per tile; >1 adds a disagreement map.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Noise seed: same inputs + seed → identical map.")] = 0,
    tile: Annotated[
        int | None, typer.Option("--tile", min=32, help="Tile size in px. Default: the checkpoint's.")
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option("--overlap", min=0, help="Minimum tile overlap in px. Default: 64, or tile/4 if smaller."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Tiles per model call (does not change the result).")
    ] = 8,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads for torch and the scan kernels. Default: torch's choice."),
    ] = None,
    amp: Annotated[
        str,
        typer.Option(
            "--amp",
            help="Mixed precision on CUDA: off (float32), bf16 or fp16 autocast; the scan keeps float32 state. "
            "CPU: off only.",
        ),
    ] = "off",
    compile_model: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the model: faster tiles after a one-off compilation (minutes)."),
    ] = False,
    opt_bands: Annotated[
        str | None,
        typer.Option(
            "--opt-bands", help="Optical bands, 1-based, in the checkpoint's order, e.g. 1,2,3,4. Default: all."
        ),
    ] = None,
    sar_bands: Annotated[
        str | None, typer.Option("--sar-bands", help="SAR bands, 1-based, e.g. 1. Default: all.")
    ] = None,
    sar_scale: Annotated[
        SarScaleChoice,
        typer.Option(
            "--sar-scale",
            help="SAR values are: auto (detect linear power and convert to dB), db, or linear.",
        ),
    ] = SarScaleChoice.auto,
    align: Annotated[
        AlignChoice,
        typer.Option(
            "--align",
            help="SAR on another grid: reproject onto the optical grid (bilinear), or strict (refuse).",
        ),
    ] = AlignChoice.reproject,
    opt_nodata: Annotated[
        float | None, typer.Option("--opt-nodata", help="Optical nodata value, overriding the file's.")
    ] = None,
    sar_nodata: Annotated[
        float | None, typer.Option("--sar-nodata", help="SAR nodata value, overriding the file's.")
    ] = None,
    prob: Annotated[
        Path | None, typer.Option("--prob", help="Also write class probabilities here (uint8 0–255, a band per class).")
    ] = None,
    confidence: Annotated[
        Path | None,
        typer.Option("--confidence", help="Also write max probability (and with --samples >1 disagreement) here."),
    ] = None,
    vector: Annotated[
        Path | None, typer.Option("--vector", help="Also write class polygons here (.gpkg or .geojson).")
    ] = None,
    simplify: Annotated[
        float, typer.Option("--simplify", min=0.0, help="Polygon simplification tolerance in metres.")
    ] = 0.0,
    min_area: Annotated[
        float, typer.Option("--min-area", min=0.0, help="Drop polygons smaller than this, in m².")
    ] = 0.0,
    quicklook_path: Annotated[
        Path | None,
        typer.Option(
            "--quicklook", help="Also draw optical, SAR and the map side by side into this PNG (one scene only)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (batch mode: rerun every scene).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar, messages or summary table.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.")
    ] = False,
) -> None:
    """Map land cover for an optical + SAR scene (or folders of them) with a checkpoint; write a COG."""
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.runtime import cpu_threads

    single_files = {"--prob": prob, "--confidence": confidence, "--vector": vector, "--quicklook": quicklook_path}
    batch = _predict_mode(opt, sar, opt_dir, sar_dir, out_dir, out, single_files)
    if quicklook_path is not None:
        from mdseg.quicklook import check_output

        check_output(quicklook_path, overwrite)  # refuse now, not after the whole prediction
    talk = not (quiet or as_json)
    options = {
        "steps": steps,
        "samples": samples,
        "seed": seed,
        "tile": tile,
        "overlap": overlap,
        "batch_size": batch_size,
        "opt_bands": _parse_bands(opt_bands, "--opt-bands"),
        "sar_bands": _parse_bands(sar_bands, "--sar-bands"),
        "sar_scale": sar_scale.value,
        "align": align.value,
        "opt_nodata": opt_nodata,
        "sar_nodata": sar_nodata,
        "simplify_m": simplify,
        "min_area_m2": min_area,
        "progress": talk,
    }
    # The thread count holds for loading and every scene, and is recorded in each run's sidecar.
    with cpu_threads(threads):
        model = SceneModel.load(checkpoint, device, amp=amp, compile=compile_model)
        if model.demo and talk:
            err_console.print(f"using the demo weights ({_DEMO_NOTE})")
        if batch:
            _predict_folders(model, opt_dir, sar_dir, out_dir, pattern, shard, overwrite, options, talk, as_json)
            return
        if out is None:
            out = Path.cwd() / f"{opt.stem}_landcover.tif"
        extras = {"prob_path": prob, "confidence_path": confidence, "vector_path": vector}
        result = model.predict(opt, sar, out, overwrite=overwrite, **extras, **options)
        if quicklook_path is not None:
            # Listed with the other outputs, so the summary and --json say where it went.
            picture = _predict_quicklook(model, opt, sar, out, quicklook_path, overwrite, options)
            result.outputs["quick-look"] = str(picture)
        if as_json:
            console.print_json(json.dumps({**result.to_dict(), **model.run_info()}, default=str))
        elif not quiet:
            _report_scene(result)


def _predict_quicklook(
    model: SceneModel, opt: Path, sar: Path, out: Path, path: Path, overwrite: bool, options: dict
) -> Path:
    """Draw the quick-look of a finished map; the checkpoint's band names pick R, G, B and title the SAR band."""
    from mdseg.quicklook import quicklook

    meta = model.meta
    opt_bands = options["opt_bands"] or range(1, len(meta.opt_band_names) + 1)
    sar_bands = options["sar_bands"] or [1]
    return quicklook(
        opt,
        sar,
        out,
        path,
        opt_band_names=dict(zip(opt_bands, meta.opt_band_names, strict=True)),
        sar_band=sar_bands[0],
        sar_band_name=meta.sar_band_names[0],
        sar_scale=options["sar_scale"],
        overwrite=overwrite,
    )


_DEMO_NOTE = "tiny, trained on synthetic scenes; train on your data for real maps"


def _predict_mode(
    opt: Path | None,
    sar: Path | None,
    opt_dir: Path | None,
    sar_dir: Path | None,
    out_dir: Path | None,
    out: Path | None,
    extras: dict[str, Path | None],
) -> bool:
    """True for batch mode (folders), False for one scene; `OptionError` for a mix or a missing half."""
    single, folders = (opt, sar, out), (opt_dir, sar_dir, out_dir)
    if any(v is not None for v in folders):
        if any(v is not None for v in single):
            raise OptionError("give either --opt/--sar/--out (one scene) or --opt-dir/--sar-dir/--out-dir, not both")
        if any(v is None for v in folders):
            raise OptionError("batch mode needs all of --opt-dir, --sar-dir and --out-dir")
        given = [name for name, v in extras.items() if v is not None]
        if given:
            raise OptionError(f"{', '.join(given)} name single files; they are not available in batch mode")
        return True
    if opt is None or sar is None:
        raise OptionError("give --opt and --sar (one scene), or --opt-dir, --sar-dir and --out-dir (a batch)")
    return False


def _parse_bands(text: str | None, option: str) -> list[int] | None:
    """'1,2,3,4' → [1, 2, 3, 4]; None stays None (all bands)."""
    if text is None:
        return None
    try:
        bands = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"expected 1-based band numbers separated by commas, e.g. 1,2,3; got {text!r}", param_hint=option
        ) from None
    if any(b < 1 for b in bands):
        raise typer.BadParameter(f"band numbers start at 1; got {text!r}", param_hint=option)
    return bands


def _report_scene(result: PredictionResult) -> None:
    """Alignment decisions, where the outputs went, and the class table (pixels, km², percent)."""
    alignment = result.alignment
    if alignment["sar_reprojected"]:
        err_console.print(f"SAR reprojected onto the optical grid (bilinear): {alignment['sar_grid']}", highlight=False)
    err_console.print(alignment["sar_scale"]["message"], highlight=False)
    table = Table(title="land cover")
    for name, justify in (("class", "left"), ("pixels", "right"), ("area km²", "right"), ("percent", "right")):
        table.add_column(name, justify=justify)
    for row in result.classes:
        table.add_row(row["name"], f"{row['pixels']:,}", f"{row['area_km2']:.4f}", f"{row['percent']:.2f}")
    console.print(table)
    for what, path in result.outputs.items():
        console.print(f"wrote {what}: {path}", highlight=False)
    console.print(f"run record: {result.sidecar} ({result.seconds['total']:.1f} s)", highlight=False)


def _predict_folders(
    model: SceneModel,
    opt_dir: Path,
    sar_dir: Path,
    out_dir: Path,
    pattern: str,
    shard: str | None,
    overwrite: bool,
    options: dict,
    talk: bool,
    as_json: bool,
) -> None:
    """Batch mode: pair, shard, predict, log; `BatchError` listing the failed scenes."""
    from mdseg.engine.batch import LOG_NAME, pair_scenes, parse_shard, predict_batch, shard_scenes

    part = parse_shard(shard)
    scenes, lonely_sar = pair_scenes(opt_dir, sar_dir, pattern)
    mine = shard_scenes(scenes, part)
    if talk:
        if lonely_sar:
            names = ", ".join(p.name for p in lonely_sar)
            err_console.print(f"no optical file for SAR {names}; skipped", highlight=False)
        where = f" (shard {part[0]}/{part[1]})" if part[1] > 1 else ""
        err_console.print(f"{len(mine)} of {len(scenes)} scenes to run{where}", highlight=False)

    def on_scene(o) -> None:
        if talk:
            detail = f": {o.error}" if o.error else ""
            err_console.print(f"{o.scene}: {o.status} ({o.seconds:.1f} s){detail}", highlight=False)

    outcomes = predict_batch(model, mine, out_dir, overwrite=overwrite, on_scene=on_scene, **options)
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        summary = {
            "scenes": [asdict(o) for o in outcomes],
            "failed": len(failed),
            "shard": list(part),
            "log": str(Path(out_dir) / LOG_NAME),
            **model.run_info(),
        }
        console.print_json(json.dumps(summary, default=str))
    if failed:
        listed = "; ".join(f"{o.scene} ({o.error})" for o in failed)
        raise BatchError(f"{len(failed)} of {len(outcomes)} scenes failed: {listed}; see {Path(out_dir) / LOG_NAME}")
    if talk:
        counts = {s: sum(o.status == s for o in outcomes) for s in ("written", "skipped")}
        console.print(
            f"{counts['written']} written, {counts['skipped']} skipped (output exists) in {out_dir}", highlight=False
        )


class MetricChoice(str, Enum):
    miou = "miou"
    oa = "oa"
    kappa = "kappa"
    f1 = "f1"
    all = "all"


@app.command("eval")
def eval_(
    pred: Annotated[
        Path | None, typer.Option("--pred", help="Raster mode: predicted class raster (band 1: class indices).")
    ] = None,
    label: Annotated[
        Path | None, typer.Option("--label", help="Raster mode: label raster on the same grid (CRS, transform, size).")
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
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Dataset mode: dataset folder (WHU-OPT-SAR, Hunan, stacked tiles or generic) to run the checkpoint "
            "over. Default: the validation split recorded in the checkpoint.",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Dataset mode: split folder or list file. Default: val if present, else all."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Dataset mode: mdseg checkpoint. Default: best.safetensors of the most recent run under ./runs/.",
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Dataset mode: DDIM sampling steps. Default: the checkpoint's.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Dataset mode: noise seed. Default: 0.")] = None,
    tile: Annotated[
        int | None, typer.Option("--tile", min=32, help="Dataset mode: tile size in px. Default: the checkpoint's.")
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option("--overlap", min=0, help="Dataset mode: minimum tile overlap in px. Default: 64, or tile/4."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Dataset mode: tiles per model call. Default: 8.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Dataset mode: auto (CUDA if available, else CPU), cpu, cuda:N.")
    ] = None,
    opt_bands: Annotated[
        str | None, typer.Option("--opt-bands", help="Dataset mode: 1-based optical bands. Default: the dataset's.")
    ] = None,
    sar_bands: Annotated[
        str | None, typer.Option("--sar-bands", help="Dataset mode: 1-based SAR bands. Default: the dataset's.")
    ] = None,
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
    Dataset mode (--data, --checkpoint; by default the best checkpoint of the most recent run under ./runs/ and
    the validation split it records) predicts every sample of a dataset split with the tiled engine and compares
    it with its label through the dataset's label map; under torchrun the samples are shared across ranks and
    the counts summed (the result equals a one-process run).
    Metrics come from one confusion matrix (rows = label, columns = prediction), as MMSegmentation computes them.
    Percentages in the table; kappa as a fraction; --json gives fractions in 0–1.
    """
    from mdseg.engine.evaluate import evaluate_rasters, write_confusion_csv

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
        result = evaluate_rasters(
            pred,
            label,
            classes=_parse_classes(classes),
            ignore_index=IGNORE_INDEX if ignore is None else ignore,
            label_map=_parse_label_map(label_map),
        )
    else:
        result, talk = _eval_dataset(
            data,
            split,
            checkpoint,
            device or "auto",
            options={
                "steps": steps,
                "seed": 0 if seed is None else seed,
                "tile": tile,
                "overlap": overlap,
                "batch_size": 8 if batch_size is None else batch_size,
                "opt_bands": _parse_bands(opt_bands, "--opt-bands"),
                "sar_bands": _parse_bands(sar_bands, "--sar-bands"),
            },
        )
    if not talk:  # another rank than 0 under torchrun: rank 0 reports
        return
    if confusion is not None:
        write_confusion_csv(confusion, result.confusion, result.classes)
    if as_json:
        payload = {**result.to_dict(), "metric": metric.value}
        console.print_json(json.dumps(payload))
        return
    _report_metrics(result, metric.value)
    if confusion is not None:
        console.print(f"wrote confusion matrix: {confusion}", highlight=False)


def _eval_dataset(
    data: Path | None, split: str | None, checkpoint: Path | None, device: str, options: dict
) -> tuple[EvalResult, bool]:
    """Dataset mode: pick the checkpoint and data (saying which when defaulted), run it over the split, sharded
    across ranks under torchrun. Returns the result and whether this process reports it (rank 0)."""
    from mdseg.checkpoint import read_checkpoint_meta
    from mdseg.engine.evaluate import choose_eval_data, evaluate
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
        target = choose_eval_data(meta, data, split, options.pop("opt_bands"), options.pop("sar_bands"))
        if data is None or split is None:
            notes.append(target.describe())
        if talk:
            for note in notes:
                err_console.print(note, highlight=False, markup=False)
        result = evaluate(checkpoint, target, device=str(dev), progress=talk, **options)
    return result, talk


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


@app.command()
def stats(
    data: Annotated[
        Path, typer.Option("--data", help="Dataset folder (WHU-OPT-SAR, Hunan, stacked tiles or generic).")
    ],
    split: Annotated[
        str | None,
        typer.Option("--split", help="Split folder or list file. Default: all files, or train/ in a split dataset."),
    ] = None,
    opt_bands: Annotated[str | None, typer.Option("--opt-bands", help="1-based optical bands, e.g. 1,2,3,4.")] = None,
    sar_bands: Annotated[str | None, typer.Option("--sar-bands", help="1-based SAR bands, e.g. 5.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> None:
    """Per-band mean and std of a dataset split (streamed, nodata skipped; SAR in dB) for normalisation."""
    from mdseg.data.stats import band_stats

    result = band_stats(
        data, split, opt_bands=_parse_bands(opt_bands, "--opt-bands"), sar_bands=_parse_bands(sar_bands, "--sar-bands")
    )
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    info = result.provenance
    table = Table(title=f"{info['root']} — {info['layout']}, split {info['split'] or 'all'}, {info['files']} files")
    for column in ("modality", "band", "name", "mean", "std", "valid px", "skipped px"):
        table.add_column(column, justify="left" if column in ("modality", "name") else "right")
    for b in result.bands:
        table.add_row(
            b.modality, str(b.band), b.name, f"{b.mean:.4g}", f"{b.std:.4g}", f"{b.count:,}", f"{b.skipped:,}"
        )
    console.print(table)
    err_console.print(result.sar_scaling.describe(), highlight=False)


_TRAIN_HELP = """Defaults (chosen for the device): `tiny` on CPU, `small` on GPU; 2000 iterations on CPU (20000 on GPU);
batch 4 (8); learning rate per preset scaled to the batch; warm-up 10 % of --iters (at most 1500); validation
and checkpoints every 10 % of the run on the `val` split when the dataset has one.

Multi-GPU / multi-node: torchrun --nproc_per_node=K -m mdseg train --data DIR … (DistributedDataParallel; NCCL on
GPU, gloo on CPU; --batch-size is per process; rank 0 logs and writes)."""


@app.command(epilog=_TRAIN_HELP)
def train(
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (WHU-OPT-SAR, Hunan, stacked tiles or generic).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (must not exist). Default: runs/<data>-<model>[-N].")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Preset: tiny, small or paper.")] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Optimizer steps.", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples per step (per process).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (AdamW).")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="AdamW weight decay [0.01].")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Linear warm-up iterations, then poly decay.")] = None,
    crop: Annotated[int | None, typer.Option("--crop", help="Training crop side in px [256].")] = None,
    grad_clip: Annotated[
        float | None, typer.Option("--grad-clip", help="Max gradient norm; 0 turns clipping off [1.0].")
    ] = None,
    amp: Annotated[str | None, typer.Option("--amp", help="Mixed precision on GPU: bf16, fp16 or off [off].")] = None,
    compile_: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model [no].")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed: same seed, same run (on CPU) [0].")] = None,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Iterations between validations.")] = None,
    save_every: Annotated[int | None, typer.Option("--save-every", help="Iterations between checkpoints.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes [2].")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Training split folder or list file [train].")] = None,
    val_split: Annotated[
        str | None, typer.Option("--val-split", help="Validation split [val, when the dataset has one].")
    ] = None,
    opt_bands: Annotated[str | None, typer.Option("--opt-bands", help="1-based optical bands, e.g. 1,2,3,4.")] = None,
    sar_bands: Annotated[str | None, typer.Option("--sar-bands", help="1-based SAR bands, e.g. 5.")] = None,
    sar_scale: Annotated[
        str | None, typer.Option("--sar-scale", help="SAR on disk: auto, db or linear (converted to dB) [auto].")
    ] = None,
    stats_file: Annotated[
        Path | None,
        typer.Option("--stats", help="Normalisation from `mdseg stats --json` output [dataset's, else computed]."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="DDIM steps for validation and predict [3].")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="'paper': the released run's settings (160k its, lr 6e-5, …).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Rerun a run's config.json; options given here override it.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder exactly where it stopped.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or notes.")] = False,
) -> None:
    """Train a model on a dataset folder; writes checkpoints, logs and curves to a run folder.

    Ctrl-C or SIGTERM saves a resumable state first; `mdseg train --resume runs/NAME` continues exactly.
    """
    from mdseg.engine.train import TrainSettings, merge_settings
    from mdseg.engine.train import train as run_training

    if resume is not None:
        settings = TrainSettings(data=str(data or ""), iters=iters, device=device or "auto", threads=threads)
    else:
        settings = merge_settings(
            str(data) if data is not None else None,
            config_file=config,
            recipe=recipe,
            out=str(out) if out is not None else None,
            model=model,
            iters=iters,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            crop=crop,
            grad_clip=grad_clip,
            amp=amp,
            compile=compile_,
            seed=seed,
            val_every=val_every,
            save_every=save_every,
            workers=workers,
            split=split,
            val_split=val_split,
            opt_bands=_parse_bands(opt_bands, "--opt-bands"),
            sar_bands=_parse_bands(sar_bands, "--sar-bands"),
            sar_scale=sar_scale,
            stats=str(stats_file) if stats_file is not None else None,
            steps=steps,
            device=device,
            threads=threads,
        )

    def say(text: str) -> None:
        if not quiet:
            err_console.print(text, highlight=False)

    result = run_training(settings, resume=resume, progress=not quiet, say=say)
    if result.last_checkpoint is None:  # not rank 0
        return
    if result.interrupted:
        sys.exit(130)
    best = "n/a" if result.best_miou is None else f"{result.best_miou:.4f}"
    console.print(
        f"trained {result.iteration} iterations in {result.seconds:.0f} s; best val mIoU {best}; "
        f"checkpoints: {result.best_checkpoint} (best), {result.last_checkpoint} (last)",
        highlight=False,
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Scene width and height in pixels (5 m each).")] = 1024,
    scenes: Annotated[
        int, typer.Option("--scenes", min=1, help="1: one scene's three files in OUT; more: a train/val dataset.")
    ] = 1,
    val: Annotated[
        int | None, typer.Option("--val", min=0, help="Validation scenes of a dataset. Default: a fifth of --scenes.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Write a synthetic WHU-style scene (optical RGB+NIR, SAR VV in dB, label; UTM, 5 m), or a dataset of them.

    One scene: OUT/synth_<seed>_opt.tif, _sar.tif, _label.tif. With --scenes N > 1: a dataset in the generic layout,
    OUT/train|val/opt|sar|label/synth_<seed>_<i>.tif and OUT/classes.json (WHU-OPT-SAR's 7 classes).
    """
    from rich.progress import Progress

    from mdseg.synth import synthesize_dataset, synthesize_scene

    if scenes == 1:
        if val:
            raise OptionError("--val needs --scenes of 2 or more.")
        files = synthesize_scene(out, seed=seed, size=size, overwrite=overwrite)
        console.print(f"wrote {files.opt}, {files.sar}, {files.label} ({size}×{size} px, seed {seed})", highlight=False)
        return
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("synthesising", total=scenes)
        data = synthesize_dataset(
            out, scenes=scenes, seed=seed, size=size, val=val, overwrite=overwrite, progress=lambda i: bar.advance(task)
        )
    console.print(
        f"wrote {len(data.train)} train + {len(data.val)} val scenes ({size}×{size} px, seed {seed}) and "
        f"classes.json to {data.root}",
        highlight=False,
    )


@app.command("quicklook")
def quicklook_(
    opt: Annotated[Path, typer.Option("--opt", help="Optical raster; the picture's grid.")],
    sar: Annotated[Path, typer.Option("--sar", help="SAR raster (any grid; warped onto the optical one).")],
    pred: Annotated[Path, typer.Option("--pred", help="Land-cover map on the optical grid (e.g. from predict).")],
    out: Annotated[Path, typer.Option("--out", help="Picture to write (.png; .jpg, .pdf, .svg also work).")],
    label: Annotated[Path | None, typer.Option("--label", help="Also show a label raster on the optical grid.")] = None,
    rgb: Annotated[
        str | None,
        typer.Option(
            "--rgb",
            help="Optical bands shown as R,G,B, 1-based, e.g. 4,3,2. Default: from band descriptions, else 1,2,3.",
        ),
    ] = None,
    max_size: Annotated[
        int, typer.Option("--max-size", min=16, help="Longest side read from each raster, in px (decimated).")
    ] = 1024,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing picture.")] = False,
) -> None:
    """Draw optical true colour, SAR (dB), the prediction with a class legend and the label side by side."""
    from mdseg.quicklook import quicklook

    path = quicklook(
        opt, sar, pred, out, label=label, rgb_bands=_parse_bands(rgb, "--rgb"), max_size=max_size, overwrite=overwrite
    )
    console.print(f"wrote quick-look: {path}", highlight=False)


class ReleaseDataset(str, Enum):
    whu = "whu"
    hunan = "hunan"


@app.command("import-weights")
def import_weights(
    source: Annotated[
        Path,
        typer.Argument(help="The authors' released checkpoint (.pth): an MMSegmentation checkpoint or a state dict."),
    ],
    out: Annotated[Path, typer.Option("--out", help="mdseg checkpoint to write (.safetensors).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    classes: Annotated[
        ReleaseDataset,
        typer.Option(
            "--classes",
            help="Dataset the weights were trained on: its classes, palette, band order and normalisation go into "
            "the checkpoint.",
        ),
    ] = ReleaseDataset.whu,
    inference_scale: Annotated[
        float,
        typer.Option(
            "--inference-scale",
            min=0.0,
            help="Input resampling factor before the model; 2.0 is the authors' WHU test setting (256² tiles "
            "upsampled to 512²).",
        ),
    ] = 2.0,
) -> None:
    """Convert the authors' released MambaDiffusion weights into an mdseg checkpoint, accounting for every tensor.

    Reads the .pth with torch.load(weights_only=True) only (never unpickles anything else), maps the release's
    names to ours, drops the weights the release never uses, checks every shape, and prints the report.
    """
    from mdseg.checkpoint import import_release_checkpoint

    result = import_release_checkpoint(
        source, out, dataset=classes.value, inference_scale=inference_scale, overwrite=overwrite
    )
    for line in result.report.lines():
        console.print(line, highlight=False, markup=False)
    meta, config = result.meta, result.meta.config
    console.print(
        f"wrote {result.path}: {result.release_tensors} release tensors accounted for; {config.opt_bands} optical "
        f"+ {config.sar_bands} SAR bands, {config.num_classes} classes ({meta.provenance['dataset']}), tile "
        f"{meta.tile} px, inference scale {meta.inference_scale:g}, {meta.steps} DDIM steps",
        highlight=False,
        markup=False,
    )


def main() -> None:
    """Console-script entry point: usage errors exit 2 (Typer's), user errors print one line and exit 2."""
    try:
        app()
    except MdsegError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
