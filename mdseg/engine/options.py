"""How a scene is predicted, and where its outputs go: two frozen dataclasses built once (by the CLI or a Python
caller), validated here, passed down whole and written into the run record from the object itself.

Adding a prediction option means a field (and its check) here, its declaration in `mdseg/cli/predict.py`, and the
code that uses it — nothing in between relays it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args

from mdseg.errors import OptionError
from mdseg.geo.pair import Align
from mdseg.geo.sar import SarScale
from mdseg.geo.writer import creation_options

# Default tiling, chosen by `bench/bench_seams.py` (see `default_tile`): for the demo weights 544 px tiles
# overlapping by 32 px, so the model processes 1.13–1.18× a 1000² to 10000² scene's pixels (256 px tiles
# overlapping by 64: 1.56–1.89×) at the same seconds per pixel, with no more neighbour contrast across tile edges
# than inside tiles.
DEFAULT_OVERLAP = 32  # px; tiles smaller than 4 × this overlap by a quarter of their size instead
MAX_STRIDE = 1024  # model px between default tile starts: bounds a batch's memory for large training tiles
DEFAULT_STEPS = 3  # for a run without a checkpoint to take them from (`predict_scene` with a bare predictor)
SAR_SCALES: tuple[str, ...] = get_args(SarScale)
ALIGNS: tuple[str, ...] = get_args(Align)


@dataclass(frozen=True)
class PredictOptions:
    """How to predict a scene; None means "the checkpoint's" (or the module defaults without one).

    `steps`: DDIM sampling steps; `samples`: diffusion draws averaged per tile (> 1 adds a disagreement band);
    `seed`: noise seed (same inputs + seed → identical map); `tile`: tile side in px (default `default_tile`);
    `overlap`: minimum tile overlap in px (default 32, or tile / 4 if smaller); `batch_size`: tiles per model
    call (does not change the result); `opt_bands` / `sar_bands`: 1-based bands in the model's order (None:
    all); `sar_scale`: SAR values on disk are "auto" (detected), "db" or "linear"; `align`: SAR on another grid
    is "reproject"ed onto the optical grid or refused ("strict"); `opt_nodata` / `sar_nodata`: nodata values
    overriding the files'; `simplify_m`: polygon simplification in metres; `min_area_m2`: smallest polygon kept;
    `co`: GDAL COG creation options for the raster outputs, "KEY=VALUE" each (as `rio` and `gdal_translate` take
    them), over mdseg's defaults; `strict_inputs`: refuse a scene whose bands look unlike the checkpoint's
    training data (`mdseg.engine.domain`) instead of warning.
    """

    steps: int | None = None
    samples: int = 1
    seed: int = 0
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    opt_bands: tuple[int, ...] | None = None
    sar_bands: tuple[int, ...] | None = None
    sar_scale: SarScale = "auto"
    align: Align = "reproject"
    opt_nodata: float | None = None
    sar_nodata: float | None = None
    simplify_m: float = 0.0
    min_area_m2: float = 0.0
    co: tuple[str, ...] = ()
    strict_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("opt_bands", "sar_bands"):
            bands = getattr(self, name)
            if bands is not None:
                object.__setattr__(self, name, tuple(int(b) for b in bands))
        object.__setattr__(self, "co", tuple(f"{k}={v}" for k, v in creation_options(self.co or ()).items()))
        _check(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, complete: bool = False) -> PredictOptions:
        """The options named in `values` (e.g. a command's parameters; other keys are ignored). `complete`: every
        option must be there (`TypeError` naming the missing ones: a command that forgot to declare one)."""
        missing = [f.name for f in fields(cls) if f.name not in values]
        if complete and missing:
            raise TypeError(f"no value for the prediction options {missing}")
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def with_defaults(
        self, steps: int = DEFAULT_STEPS, trained_tile: int = 256, inference_scale: float = 1.0
    ) -> PredictOptions:
        """These options with `steps`, `tile` and `overlap` filled in where None: `steps` (the checkpoint's), the
        tile `default_tile(trained_tile, inference_scale)` (the checkpoint's tile and scale; without a checkpoint
        544 px), and an overlap of 32 px, or a quarter of the tile when that is smaller."""
        steps = self.steps if self.steps is not None else steps
        tile = self.tile if self.tile is not None else default_tile(trained_tile, inference_scale)
        overlap = self.overlap if self.overlap is not None else min(DEFAULT_OVERLAP, tile // 4)
        return replace(self, steps=steps, tile=tile, overlap=overlap)

    def pair_options(self) -> dict[str, Any]:
        """How to read the scene's pair: the keywords of `mdseg.geo.pair.RasterPair` these options set."""
        names = ("opt_bands", "sar_bands", "align", "sar_scale", "opt_nodata", "sar_nodata")
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run record's `options`)."""
        out = asdict(self)
        for name in ("opt_bands", "sar_bands", "co"):
            out[name] = None if out[name] is None else list(out[name])
        return out

    def creation_options(self) -> dict[str, str]:
        """`co` as GDAL creation options by name."""
        return creation_options(self.co)


def default_tile(trained_tile: int, inference_scale: float = 1.0) -> int:
    """The tile side (px of the scene) a checkpoint predicts with by default, from its training tile
    `trained_tile` (px of the model's input) and its `inference_scale`.

    Tiles start twice the training tile apart in the model's pixels (at most `MAX_STRIDE`, at least the training
    tile), `stride / inference_scale` px of the scene, and overlap by `DEFAULT_OVERLAP`; never smaller than
    `trained_tile`. The Mamba model's time per pixel does not grow with the tile, so a larger tile saves the
    overlap's recomputation; tying it to the training tile keeps the model within twice the context it learnt
    and a batch of tiles within about 4.5 × the memory of training-size tiles. The demo weights (256 px, 1×):
    544 px; the authors' release (256 px, 2×): 288 px, 576² model inputs.
    """
    stride = max(trained_tile, min(2 * trained_tile, MAX_STRIDE))
    return max(trained_tile, round(stride / inference_scale) + DEFAULT_OVERLAP)


def _check(o: PredictOptions) -> None:
    """`OptionError` for the first value out of range (the same sentence whichever caller built the options)."""
    checks = [
        (o.steps is None or o.steps >= 1, f"steps must be at least 1, got {o.steps}"),
        (o.samples >= 1, f"samples must be at least 1, got {o.samples}"),
        (o.seed >= 0, f"seed must be 0 or more, got {o.seed}"),
        (o.tile is None or o.tile >= 1, f"tile must be at least 1 px, got {o.tile}"),
        (o.overlap is None or o.overlap >= 0, f"overlap must be 0 or more px, got {o.overlap}"),
        (
            o.tile is None or o.overlap is None or o.overlap < o.tile,
            f"need 0 <= overlap < tile, got tile={o.tile}, overlap={o.overlap}",
        ),
        (o.batch_size >= 1, f"batch_size must be at least 1, got {o.batch_size}"),
        (o.sar_scale in SAR_SCALES, f"sar_scale must be one of {', '.join(SAR_SCALES)}, not {o.sar_scale!r}"),
        (o.align in ALIGNS, f"align must be one of {', '.join(ALIGNS)}, not {o.align!r}"),
        (o.simplify_m >= 0, f"simplify_m must be 0 or more metres, got {o.simplify_m}"),
        (o.min_area_m2 >= 0, f"min_area_m2 must be 0 or more m², got {o.min_area_m2}"),
    ]
    for name in ("opt_bands", "sar_bands"):
        bands = getattr(o, name)
        checks.append((bands is None or (len(bands) > 0 and min(bands) >= 1), f"{name} are 1-based, got {bands}"))
    for ok, message in checks:
        if not ok:
            raise OptionError(message)


# What `PredictOutputs.files()` calls each output's style.
STYLE_ROLES = {
    "map": "the map's",
    "probabilities": "the probabilities'",
    "confidence": "the confidence raster's",
    "vector": "the polygons'",
}


@dataclass(frozen=True)
class PredictOutputs:
    """Where one scene's outputs go: the land-cover map (a COG; its run record `<stem>.json`, `.aux.xml`, QGIS
    style `<stem>.qml` and STAC Item `<stem>.stac.json` sit beside it), and optionally class probabilities,
    confidence and polygons (.gpkg or .geojson), each raster and a GeoJSON with its own `.qml`.
    Existing outputs are refused unless `overwrite`."""

    map: Path
    prob: Path | None = None
    confidence: Path | None = None
    vector: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("map", "prob", "confidence", "vector"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))

    @classmethod
    def of(cls, outputs: PredictOutputs | str | Path, overwrite: bool | None = None) -> PredictOutputs:
        """`outputs` as given, or a bare map path; `overwrite` (when not None) replaces its setting."""
        made = outputs if isinstance(outputs, PredictOutputs) else cls(map=Path(outputs))
        return made if overwrite is None else replace(made, overwrite=overwrite)

    @property
    def sidecar(self) -> Path:
        """The run record beside the map."""
        return self.map.with_suffix(".json")

    @property
    def aux(self) -> Path:
        """GDAL's PAM sidecar of the map (its raster attribute table)."""
        return self.map.with_name(self.map.name + ".aux.xml")

    def files(self) -> dict[str, Path]:
        """Every file these outputs write, by the role an error message gives it: the map, the optional outputs
        and the run record. GDAL sidecars come with each (the map's `.aux.xml` with the map): see
        `mdseg.io.paths.check_outputs`, which refuses them when two are one file or one is an input."""
        named = {
            "the map": self.map,
            "the probabilities": self.prob,
            "the confidence raster": self.confidence,
            "the polygons": self.vector,
            "the run record": self.sidecar,
            **{f"{STYLE_ROLES[name]} style": path for name, path in self.styles().items()},
            "the STAC item": self.stac,
        }
        return {role: path for role, path in named.items() if path is not None}

    @property
    def stac(self) -> Path:
        """The STAC Item describing the map and linking every other output, `<map stem>.stac.json` beside it."""
        return self.map.with_suffix(".stac.json")

    def styles(self) -> dict[str, Path]:
        """The QGIS styles written beside the outputs, by output name: `<stem>.qml` beside each raster and a
        GeoJSON (QGIS loads it as the layer's default style); a GeoPackage holds its style itself."""
        named = {"map": self.map, "probabilities": self.prob, "confidence": self.confidence}
        if self.vector is not None and self.vector.suffix.lower() != ".gpkg":
            named["vector"] = self.vector
        return {name: path.with_suffix(".qml") for name, path in named.items() if path is not None}

    def extras(self) -> dict[str, Path]:
        """The optional outputs asked for, by the name the run record gives them."""
        named = {"probabilities": self.prob, "confidence": self.confidence, "vector": self.vector}
        return {name: path for name, path in named.items() if path is not None}


def scene_inputs(opt: str | Path, sar: str | Path) -> dict[str, Path]:
    """A scene's input rasters by the role an error message gives them (for `mdseg.io.paths.check_outputs`)."""
    return {"the optical input": Path(opt), "the SAR input": Path(sar)}
