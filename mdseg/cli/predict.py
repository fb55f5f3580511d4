"""`mdseg predict`: one scene (--opt/--sar/--out, or one --stac item) or a batch (--opt-dir/--sar-dir/--out-dir, or
--stac items with --out-dir)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mdseg.cli import options as opt_
from mdseg.cli.console import console, err_console, note
from mdseg.errors import BatchError, OptionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.domain import DomainCheck
    from mdseg.engine.options import PredictOptions, PredictOutputs
    from mdseg.engine.predict import PredictionResult

PAIRING_HELP = (
    "Batch mode pairs files by scene name: the file stem, minus one 'opt' token in the optical folder or one 'sar' "
    "token in the SAR folder (tokens are separated by _ - . or spaces, any case), so 'T32_opt.tif' pairs with "
    "'T32_sar.tif' and 'T32.tif' with 'T32.tif'. Folders may be shared. Outputs are OUT_DIR/<scene>_landcover.tif. "
    "STAC items (--stac, repeated or a folder of *.json items, with --out-dir) write OUT_DIR/<item id>_landcover.tif."
)
DEMO_NOTE = "tiny, trained on synthetic scenes; train on your data for real maps"


def predict(
    opt: Annotated[
        opt_.InputRaster | None, opt_.input_raster("--opt", "Optical raster (any GDAL format); the output grid.")
    ] = None,
    sar: Annotated[
        opt_.InputRaster | None, opt_.input_raster("--sar", "SAR raster; reprojected onto the optical grid if needed.")
    ] = None,
    stac: Annotated[
        list[str] | None,
        typer.Option(
            "--stac",
            metavar="ITEM",
            help="STAC item (JSON file or http(s) URL) instead of --opt/--sar: its assets' bands are picked by the "
            "checkpoint's band names. Repeat it, or give a folder of items (*.json), with --out-dir for a batch.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Land-cover map (COG). Default: <optical stem (STAC: item id)>_landcover.tif in the current folder.",
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
    checkpoint: opt_.Checkpoint = None,
    steps: opt_.Steps = None,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="Diffusion draws averaged per tile; >1 adds a disagreement map.")
    ] = 1,
    seed: opt_.Seed = 0,
    tile: opt_.Tile = None,
    overlap: opt_.Overlap = None,
    batch_size: opt_.TileBatch = 8,
    device: opt_.Device = "auto",
    threads: opt_.Threads = None,
    amp: opt_.Amp = opt_.AmpChoice.off,
    compile_model: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the model: faster tiles after a one-off compilation (minutes)."),
    ] = False,
    opt_bands: opt_.OptBands = None,
    sar_bands: opt_.SarBands = None,
    sar_scale: opt_.SarScale = opt_.SarScaleChoice.auto,
    align: opt_.Align = opt_.AlignChoice.reproject,
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
    simplify_m: Annotated[
        float, typer.Option("--simplify", min=0.0, help="Polygon simplification tolerance in metres.")
    ] = 0.0,
    min_area_m2: Annotated[
        float, typer.Option("--min-area", min=0.0, help="Drop polygons smaller than this, in m².")
    ] = 0.0,
    quicklook_path: Annotated[
        Path | None,
        typer.Option(
            "--quicklook", help="Also draw optical, SAR and the map side by side into this PNG (one scene only)."
        ),
    ] = None,
    co: Annotated[
        list[str] | None,
        typer.Option(
            "--co",
            metavar="KEY=VALUE",
            help="GDAL COG creation option for the raster outputs, repeatable (e.g. --co COMPRESS=ZSTD --co LEVEL=9; "
            "default DEFLATE, 512 px blocks).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (batch mode: rerun every scene).")
    ] = False,
    strict_inputs: Annotated[
        bool,
        typer.Option(
            "--strict-inputs",
            help="Refuse inputs unlike the checkpoint's training data (a band's median or range far off) instead of "
            "warning.",
        ),
    ] = False,
    quiet: opt_.Quiet = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.")
    ] = False,
) -> None:
    """Map land cover for an optical + SAR scene (or folders of them) with a checkpoint; write a COG."""
    from mdseg.engine.batch import check_item_options, item_options
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.options import PredictOptions, PredictOutputs, scene_inputs
    from mdseg.io.names import dataset_stem
    from mdseg.io.stac_input import match_item, read_item, record_item, stac_scene
    from mdseg.runtime import cpu_threads

    # Every prediction option is a parameter of this command under its own name (checked: `complete`).
    options = PredictOptions.from_mapping(locals(), complete=True)
    single_files = {"--prob": prob, "--confidence": confidence, "--vector": vector, "--quicklook": quicklook_path}
    batch = _mode(opt, sar, stac, opt_dir, sar_dir, out_dir, out, single_files)
    if stac:  # read now: a band option or an item that cannot be read fails before the model loads
        check_item_options(options)
    item = read_item(stac[0]) if stac and not batch else None
    if not batch:
        if out is None:
            out = Path.cwd() / f"{item.scene_name() if item else dataset_stem(opt)}_landcover.tif"
        outputs = PredictOutputs(out, prob=prob, confidence=confidence, vector=vector, overwrite=overwrite)
        read = item.local_files() if item else scene_inputs(opt, sar)
        _check_scene_outputs(read, checkpoint, outputs, quicklook_path)  # refuse now, not after the prediction
    talk = not (quiet or as_json)
    # The thread count holds for loading and every scene, and is recorded in each run's sidecar.
    with cpu_threads(threads), ExitStack() as stack:
        model = SceneModel.load(checkpoint, device, amp=amp, compile=compile_model)
        if model.demo and talk:
            err_console.print(f"using the demo weights ({DEMO_NOTE})")
        if batch:
            _predict_folders(model, stac, opt_dir, sar_dir, out_dir, pattern, shard, overwrite, options, talk, as_json)
            return
        if item is not None:  # the item's assets, matched to the checkpoint's band names, as dataset names
            scene = stack.enter_context(
                stac_scene(match_item(item, model.meta.opt_band_names, model.meta.sar_band_names))
            )
            opt, sar, options = scene.opt, scene.sar, item_options(options, scene)
        checked: list[DomainCheck] = []
        result = model.predict(opt, sar, outputs, options, progress=talk, on_domain=_warner(checked, quiet))
        if item is not None:
            record_item(result.sidecar, scene.inputs)
        if quicklook_path is not None:
            # Listed with the other outputs, so the summary and --json say where it went.
            picture = _quicklook(model, opt, sar, out, quicklook_path, overwrite, options)
            result.outputs["quick-look"] = str(picture)
        if as_json:
            summary = {**result.to_dict(), **model.run_info(), "domain": checked[0].to_dict()}
            console.print_json(json.dumps(summary, default=str))
        elif not quiet:
            _report_scene(result)


def _warner(checked: list[DomainCheck], quiet: bool) -> Callable[[DomainCheck], None]:
    """What `SceneModel.predict` hands its input check to: kept in `checked` (for --json), and one warning line per
    input unlike the training data on stderr, before the tiles, unless `quiet`."""

    def warn(check: DomainCheck) -> None:
        checked.append(check)
        if not quiet:
            for message in check.messages:
                note(f"warning: {message}")

    return warn


def _check_scene_outputs(
    read: Mapping[str, str | Path | None],
    checkpoint: Path | None,
    outputs: PredictOutputs,
    quicklook_path: Path | None,
) -> None:
    """Refuse, before the model loads, outputs that are inputs (`read`: role → name; the checkpoint) or each other,
    the quick-look included, and a quick-look that exists or cannot be written."""
    from mdseg.io.paths import check_outputs

    picture = {} if quicklook_path is None else {"the quick-look": quicklook_path}
    check_outputs({**outputs.files(), **picture}, {**read, "the checkpoint": checkpoint})
    if quicklook_path is not None:
        from mdseg.quicklook import check_output

        check_output(quicklook_path, outputs.overwrite)


def _quicklook(
    model: SceneModel, opt: Path, sar: Path, out: Path, path: Path, overwrite: bool, options: PredictOptions
) -> Path:
    """Draw the quick-look of a finished map; the checkpoint's band names pick R, G, B and title the SAR band."""
    from mdseg.quicklook import quicklook

    meta = model.meta
    opt_bands = options.opt_bands or range(1, len(meta.opt_band_names) + 1)
    sar_bands = options.sar_bands or [1]
    return quicklook(
        opt,
        sar,
        out,
        path,
        opt_band_names=dict(zip(opt_bands, meta.opt_band_names, strict=True)),
        sar_band=sar_bands[0],
        sar_band_name=meta.sar_band_names[0],
        sar_scale=options.sar_scale,
        overwrite=overwrite,
    )


def _mode(
    opt: str | None,
    sar: str | None,
    stac: list[str] | None,
    opt_dir: Path | None,
    sar_dir: Path | None,
    out_dir: Path | None,
    out: Path | None,
    extras: dict[str, Path | None],
) -> bool:
    """True for batch mode (folders, or STAC items with --out-dir), False for one scene (files or one STAC item);
    `OptionError` for a mix or a missing half."""
    if stac:
        return _stac_mode(stac, (opt, sar, opt_dir, sar_dir), out_dir, out, extras)
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
        raise OptionError(
            "give --opt and --sar (one scene), --opt-dir, --sar-dir and --out-dir (a batch), or --stac (STAC items)"
        )
    return False


def _stac_mode(
    stac: list[str], files: tuple, out_dir: Path | None, out: Path | None, extras: dict[str, Path | None]
) -> bool:
    """`_mode` for --stac: one item without --out-dir is one scene; with --out-dir (several items or a folder of
    them) a batch."""
    from mdseg.io.names import local_path

    if any(v is not None for v in files):
        raise OptionError("give --stac (STAC items) or --opt/--sar/--opt-dir/--sar-dir (files), not both")
    if out_dir is None:
        folder = local_path(stac[0])
        if len(stac) > 1 or (folder is not None and folder.is_dir()):
            raise OptionError("several STAC items (or a folder of them) make a batch: give --out-dir")
        return False
    if out is not None:
        raise OptionError("give either --out (one STAC item) or --out-dir (a batch of items), not both")
    given = [name for name, v in extras.items() if v is not None]
    if given:
        raise OptionError(f"{', '.join(given)} name single files; they are not available in batch mode")
    return True


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
    stac: list[str] | None,
    opt_dir: Path,
    sar_dir: Path,
    out_dir: Path,
    pattern: str,
    shard: str | None,
    overwrite: bool,
    options: PredictOptions,
    talk: bool,
    as_json: bool,
) -> None:
    """Batch mode: pair the folders' files (or read the STAC items), shard, predict, log; `BatchError` listing the
    failed scenes."""
    from mdseg.engine.batch import LOG_NAME, item_scenes, pair_scenes, parse_shard, predict_batch, shard_scenes

    part = parse_shard(shard)
    scenes, lonely_sar = (item_scenes(stac), []) if stac else pair_scenes(opt_dir, sar_dir, pattern)
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

    outcomes = predict_batch(model, mine, out_dir, options, overwrite=overwrite, progress=talk, on_scene=on_scene)
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
