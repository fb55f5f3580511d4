"""Batch prediction over folders or STAC items: pair optical and SAR files by stem (or read the items), shard, skip
finished scenes, log each one."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.engine.options import PredictOptions, PredictOutputs
from mdseg.engine.progress import ProgressCallback
from mdseg.errors import InputFileError, Interrupted, MdsegError, OptionError, OutputError
from mdseg.io.names import local_path
from mdseg.io.paths import InputFiles, check_outputs
from mdseg.io.stac_input import StacItem, StacScene, match_item, read_item, record_item, stac_scene
from mdseg.runtime import launched_ranks

LOG_NAME = "predict_log.jsonl"
OUTPUT_SUFFIX = "_landcover.tif"
# Stem tokens are separated by these characters; a token equal to "opt" or "sar" (any case) names the modality.
_SEPARATORS = re.compile(r"([_.\- ]+)")


@dataclass(frozen=True)
class ScenePair:
    """One scene of a batch: its name (the shared stem, or a STAC item's id) and its optical and SAR files (None
    when absent), or the STAC `item` whose assets hold them (`opt` and `sar` None)."""

    name: str
    opt: str | Path | None
    sar: str | Path | None
    item: StacItem | None = None


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene: status 'written', 'skipped' (output exists), 'failed' or 'interrupted' (the run
    was stopped during it; logged only); seconds of work."""

    scene: str
    status: str
    seconds: float
    error: str | None
    output: str


def scene_key(stem: str, own: str, other: str) -> str | None:
    """The scene name of a file stem: the stem without its `own` modality token ('opt' or 'sar').

    Tokens are the parts between `_`, `-`, `.` and spaces, compared case-insensitively; one `own` token and its
    separator are dropped (`T32_opt` → `T32`, `opt-T32` → `T32`, `T32` stays). A stem holding the `other`
    token belongs to the other modality (folders may be shared) and gives None.
    """
    parts = _SEPARATORS.split(stem)  # tokens at even indices, separators between them
    tokens = [p.lower() for p in parts[0::2]]
    if other in tokens:
        return None
    if own in tokens:
        i = 2 * tokens.index(own)
        lo, hi = (i - 1, i + 1) if i > 0 else (0, 2)  # the token and the separator before (or after) it
        del parts[lo:hi]
    return "".join(parts) or stem


def pair_scenes(opt_dir: str | Path, sar_dir: str | Path, pattern: str = "*.tif") -> tuple[list[ScenePair], list[Path]]:
    """Pair the files matching `pattern` in `opt_dir` and `sar_dir` by scene name (see `scene_key`).

    Returns the scenes sorted by name (an optical file without a SAR partner has `sar` None) and the SAR files
    no optical file matched. Two files of one modality with the same scene name are an `InputFileError`.
    """
    found = {}
    for what, folder, own, other in (("optical", opt_dir, "opt", "sar"), ("SAR", sar_dir, "sar", "opt")):
        folder = Path(folder)
        if not folder.is_dir():
            raise InputFileError(f"{what} folder '{folder}' does not exist; check the path.")
        by_key: dict[str, Path] = {}
        for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
            key = scene_key(path.stem, own, other)
            if key is None:
                continue
            if key in by_key:
                raise InputFileError(
                    f"{what} files '{by_key[key].name}' and '{path.name}' in '{folder}' both name scene '{key}'; "
                    "keep one per scene or narrow --pattern."
                )
            by_key[key] = path
        found[what] = by_key
    opt, sar = found["optical"], found["SAR"]
    if not opt:
        raise InputFileError(f"no optical files match '{pattern}' in '{opt_dir}'; check the folder and --pattern.")
    scenes = [ScenePair(key, opt[key], sar.get(key)) for key in sorted(opt)]
    return scenes, [sar[key] for key in sorted(set(sar) - set(opt))]


def item_scenes(items: Sequence[str | Path]) -> list[ScenePair]:
    """The scenes of STAC items, sorted by item id: each of `items` is an item (a JSON file or an http(s) URL) or a
    local folder, whose `*.json` files are items. Every item is read now: one that cannot be read, or two with one
    id, is an `InputFileError` before any scene runs."""
    hrefs: list[str] = []
    for entry in items:
        local = local_path(entry)
        if local is not None and local.is_dir():
            found = sorted(str(p) for p in local.glob("*.json") if p.is_file())
            if not found:
                raise InputFileError(f"STAC folder '{entry}' holds no items (*.json); check the folder.")
            hrefs.extend(found)
        else:
            hrefs.append(str(entry))
    by_name: dict[str, ScenePair] = {}
    for href in hrefs:
        item = read_item(href)
        name = item.scene_name()
        if name in by_name:
            raise InputFileError(
                f"STAC items '{by_name[name].item.href}' and '{href}' both have id '{item.id}'; give each scene once."
            )
        by_name[name] = ScenePair(name, None, None, item)
    return [by_name[name] for name in sorted(by_name)]


def check_item_options(options: PredictOptions | None) -> None:
    """`OptionError` when `options` choose band numbers: a STAC item's bands are picked by the checkpoint's names."""
    if options is not None and (options.opt_bands is not None or options.sar_bands is not None):
        raise OptionError(
            "band numbers (--opt-bands, --sar-bands) do not apply to a STAC item: its bands are picked by the "
            "checkpoint's band names"
        )


def item_options(options: PredictOptions | None, scene: StacScene) -> PredictOptions:
    """`options` reading the bands of a STAC item's `scene` (see `check_item_options`)."""
    check_item_options(options)
    return replace(options or PredictOptions(), opt_bands=scene.opt_bands, sar_bands=scene.sar_bands)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' (0-based i < n) → (i, n); None → (RANK, WORLD_SIZE) under torchrun, else (0, 1)."""
    if text is None:
        return launched_ranks().shard
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not int(match[1]) < int(match[2]):
        raise OptionError(f"shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_scenes(scenes: Sequence[ScenePair], shard: tuple[int, int]) -> list[ScenePair]:
    """Scenes i, i+n, i+2n, … of the sorted list for shard (i, n): every scene in exactly one shard."""
    index, count = shard
    return list(scenes[index::count])


def predict_batch(
    model: SceneModel,
    scenes: Sequence[ScenePair],
    out_dir: str | Path,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool | ProgressCallback = False,
    on_scene: Callable[[SceneOutcome], None] | None = None,
) -> list[SceneOutcome]:
    """Predict every scene into `out_dir/<scene>_landcover.tif`, one at a time, and log each to `predict_log.jsonl`.

    Scenes whose output exists are skipped unless `overwrite` (so an interrupted run resumes); a failing scene
    is logged and the rest still run. A scene whose outputs would be one of the batch's inputs (a symlink or hard
    link into the input folders, see `mdseg.io.paths.check_outputs`) fails so, before anything is written. A stop
    (KeyboardInterrupt, `mdseg.errors.Interrupted`) during a scene logs it as 'interrupted', its outputs left
    unwritten, and goes on up: a rerun redoes it. Each outcome is appended as one JSON line (scene, status, seconds,
    error, output) — appends from several shards into one log stay whole lines — and passed to `on_scene`.
    `options` and `progress` (per scene) go to `SceneModel.predict`.
    """
    if any(s.item is not None for s in scenes):
        check_item_options(options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read = {
        f"the {what} input of scene '{s.name}'": path
        for s in scenes
        for what, path in (("optical", s.opt), ("SAR", s.sar))
    }
    for s in scenes:
        if s.item is not None:
            read.update(s.item.local_files())
    inputs = InputFiles(read)
    outcomes = []
    for scene in scenes:
        outputs = PredictOutputs(out_dir / f"{scene.name}{OUTPUT_SUFFIX}", overwrite=overwrite)
        started = time.perf_counter()
        try:
            status, error = _run_scene(model, scene, outputs, inputs, options, progress)
        except (KeyboardInterrupt, Interrupted) as exc:
            _log(
                out_dir,
                SceneOutcome(scene.name, "interrupted", _since(started), str(exc) or "interrupted", str(outputs.map)),
            )
            raise
        outcome = SceneOutcome(scene.name, status, _since(started), error, str(outputs.map))
        _log(out_dir, outcome)
        outcomes.append(outcome)
        if on_scene is not None:
            on_scene(outcome)
    return outcomes


def _run_scene(
    model: SceneModel,
    scene: ScenePair,
    outputs: PredictOutputs,
    inputs: InputFiles,
    options: PredictOptions | None,
    progress: bool | ProgressCallback,
) -> tuple[str, str | None]:
    """Predict one scene of a batch: (status, error)."""
    try:
        check_outputs(outputs.files(), inputs)
    except OutputError as exc:
        return "failed", str(exc)
    if outputs.map.exists() and not outputs.overwrite:
        return "skipped", None
    if scene.item is not None:
        return _run_item(model, scene.item, outputs, options, progress)
    if scene.sar is None:
        return "failed", f"no SAR file matches optical '{scene.opt.name}'"
    try:
        model.predict(scene.opt, scene.sar, outputs, options, progress=progress)
    except MdsegError as exc:
        return "failed", str(exc)
    except Exception as exc:  # one broken scene (or a bug it triggers) must not stop a long batch
        return "failed", f"{type(exc).__name__}: {exc}"
    return "written", None


def _run_item(
    model: SceneModel,
    item: StacItem,
    outputs: PredictOutputs,
    options: PredictOptions | None,
    progress: bool | ProgressCallback,
) -> tuple[str, str | None]:
    """Predict the scene of a STAC item (its bands matched to the checkpoint's) and record the item in the run
    record: (status, error)."""
    meta = model.meta
    try:
        inputs = match_item(item, meta.opt_band_names, meta.sar_band_names)
        with stac_scene(inputs) as scene:
            result = model.predict(scene.opt, scene.sar, outputs, item_options(options, scene), progress=progress)
        record_item(result.sidecar, inputs)
    except MdsegError as exc:
        return "failed", str(exc)
    except Exception as exc:  # as for files: one broken item must not stop a long batch
        return "failed", f"{type(exc).__name__}: {exc}"
    return "written", None


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _log(out_dir: Path, outcome: SceneOutcome) -> None:
    with open(out_dir / LOG_NAME, "a", encoding="utf-8") as log:
        log.write(json.dumps(asdict(outcome)) + "\n")  # one write per line: shards may share the log
