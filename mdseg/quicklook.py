"""Quick-look pictures: optical, SAR, prediction (and label) side by side in one PNG, read decimated.

Reading (`read_quicklook`) and drawing (`render_quicklook`) are separate; `quicklook` does both. Rasters are
read through rasterio's `out_shape`, so GDAL serves a scene from its overviews when it has them and no array
larger than the picture's pixels is ever held. Matplotlib draws through its Agg canvas only (no display, no
pyplot state).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.vrt import WarpedVRT

from mdseg.engine.evaluate import class_names_from_tags
from mdseg.errors import GeoreferenceError, OptionError, OutputError
from mdseg.geo.grid import Grid, pixel_areas_m2
from mdseg.geo.pair import footprint_window, grid_of, select_bands
from mdseg.geo.sar import SarScale, decide_sar_scale, linear_to_db
from mdseg.geo.writer import CLASS_NODATA
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.raster import open_raster

# Picture geometry: each panel is PANEL_PX wide (narrower for scenes taller than MAX_ASPECT), plus MARGIN_PX,
# so three panels make a 1600 px wide PNG and four 2100 px.
PANEL_PX = 500
MARGIN_PX = 100
MAX_ASPECT = 1.6
DPI = 100
# Percentiles mapped to black and white (per band for optical); 2–98 % ignores a few glints and shadows.
STRETCH_PERCENT = (2.0, 98.0)
# Behind every panel, showing through pixels without data (nodata, masks, outside the SAR footprint): hatched, so
# it cannot be mistaken for a grey of the image or a class colour.
NODATA_COLOUR = "#eeeeee"
NODATA_HATCH = ("///", "#a8a8a8")  # pattern, line colour
# Band descriptions (or names) that mark true-colour bands: plain colour words or Sentinel-2 / Landsat-8 names.
_COLOUR_WORDS = {"red": {"red", "b04", "b4"}, "green": {"green", "b03", "b3"}, "blue": {"blue", "b02", "b2"}}
_POLARISATIONS = ("VV", "VH", "HH", "HV")
# Classes of a raster without a colour table (matplotlib's tab10, as 0–255 RGB).
_FALLBACK_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


@dataclass(frozen=True)
class Panel:
    """One picture: `title` (may hold a second line) and `rgba` (h, w, 4) uint8, alpha 0 where there is no data.
    `classes` marks class rasters, drawn without smoothing."""

    title: str
    rgba: np.ndarray
    classes: bool = False


@dataclass(frozen=True)
class LegendEntry:
    """A colour patch (r, g, b in 0–1; hatched like no-data pixels when `hatched`) and its text."""

    colour: tuple[float, float, float]
    text: str
    hatched: bool = False


@dataclass(frozen=True)
class QuickLook:
    """Everything `render_quicklook` draws: panels on one display grid, legend, caption, pixel size (metres)."""

    panels: list[Panel]
    legend: list[LegendEntry]
    caption: str
    metres_per_px: float | None


@dataclass(frozen=True)
class ClassStyle:
    """How a class raster is coloured and named: `colours` (256, 4) uint8 RGBA per value, `names` per value."""

    colours: np.ndarray
    names: dict[int, str]

    def name(self, value: int) -> str:
        return self.names.get(value, f"class {value}")


def quicklook(
    opt: str | Path,
    sar: str | Path,
    pred: str | Path,
    out: str | Path,
    *,
    label: str | Path | None = None,
    rgb_bands: Sequence[int] | None = None,
    opt_band_names: Mapping[int, str] | None = None,
    sar_band: int = 1,
    sar_band_name: str | None = None,
    sar_scale: SarScale = "auto",
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write a quick-look picture of a scene to `out` (PNG, or any format matplotlib writes, by extension).

    Panels, side by side: optical true colour, SAR in dB, the prediction in its palette and, when given, the
    label; a legend of the classes present with their share of the mapped pixels, a scale bar and the pixel
    size. Rasters are read decimated so the longest side is at most `max_size` px; `pred` and `label` must be
    on the optical grid, SAR may be on any grid (it is warped onto the optical one). The write is atomic;
    an existing `out` is refused unless `overwrite`. See `read_quicklook` for the other arguments.

    Raises `InputFileError` (missing or unreadable raster), `GeoreferenceError` (grids), `BandSelectionError`
    and `OptionError` (bands, sizes), `OutputError` / `OutputExistsError` (where `out` cannot go).
    """
    out = Path(out)
    fmt = _picture_format(out)
    with AtomicOutputs(overwrite) as outputs:
        tmp = outputs.reserve(out)
        look = read_quicklook(
            opt,
            sar,
            pred,
            label=label,
            rgb_bands=rgb_bands,
            opt_band_names=opt_band_names,
            sar_band=sar_band,
            sar_band_name=sar_band_name,
            sar_scale=sar_scale,
            max_size=max_size,
        )
        render_quicklook(look, tmp, fmt)
    return out


def check_output(out: str | Path, overwrite: bool = False) -> None:
    """Raise now the errors `quicklook` would raise for `out` (format, missing folder, existing file), so a
    long run that ends in a quick-look can refuse before it starts. Creates nothing."""
    _picture_format(Path(out))
    AtomicOutputs(overwrite).check(out)


def read_quicklook(
    opt: str | Path,
    sar: str | Path,
    pred: str | Path,
    *,
    label: str | Path | None = None,
    rgb_bands: Sequence[int] | None = None,
    opt_band_names: Mapping[int, str] | None = None,
    sar_band: int = 1,
    sar_band_name: str | None = None,
    sar_scale: SarScale = "auto",
    max_size: int = 1024,
) -> QuickLook:
    """Read the panels of a quick-look on the optical grid decimated to at most `max_size` px a side.

    `rgb_bands`: 1-based optical bands shown as R, G, B (or one band, grey); default from the band descriptions
    (red/green/blue, B04/B03/B02), else `opt_band_names` (band → name, e.g. a checkpoint's), else the file's
    colour interpretation, else 1, 2, 3. `sar_band` (1-based) is shown in dB: `sar_scale` "auto" converts
    values that look like linear power (`mdseg.geo.sar.decide_sar_scale`), "linear" always, "db" never;
    `sar_band_name` titles it when the file does not name it.
    """
    if max_size < 1:
        raise OptionError(f"the quick-look size must be at least 1 px; got {max_size}")
    with ExitStack() as stack:
        opt_src = stack.enter_context(open_raster(opt, "Optical"))
        sar_src = stack.enter_context(open_raster(sar, "SAR"))
        pred_src = stack.enter_context(open_raster(pred, "Prediction"))
        label_src = stack.enter_context(open_raster(label, "Label")) if label is not None else None
        grid = grid_of(opt_src)
        for src, role in ((pred_src, "Prediction"), (label_src, "Label")):
            if src is not None and not grid_of(src).same_as(grid):
                raise GeoreferenceError(
                    f"{role} raster '{src.name}' is not on the grid of optical raster '{opt_src.name}' "
                    f"({grid_of(src).difference(grid, 'optical')}); a quick-look shows them on the optical grid."
                )
        shown = display_grid(grid, max_size)
        shape = (shown.height, shown.width)

        bands = (
            select_bands(opt_src, rgb_bands, "Optical", None)
            if rgb_bands
            else true_colour_bands(opt_src, opt_band_names)
        )
        if len(bands) not in (1, 3):
            raise OptionError(f"give three optical bands to show as R,G,B (or one, grey); got {len(bands)}")
        panels = [
            Panel(_optical_title(opt_src, bands), optical_rgba(opt_src, bands, shape)),
            _sar_panel(sar_src, sar_band, sar_band_name, grid, shown, sar_scale),
        ]
        pred_values, pred_valid = read_classes(pred_src, shape)
        pred_style = class_style(pred_src)
        panels.append(Panel("Prediction", class_rgba(pred_style, pred_values, pred_valid), classes=True))
        label_classes = None
        if label_src is not None:
            label_values, label_valid = read_classes(label_src, shape)
            label_style = class_style(label_src, fallback=pred_style)
            panels.append(Panel("Label", class_rgba(label_style, label_values, label_valid), classes=True))
            label_classes = (label_style, label_values, label_valid)
        legend = _class_legend(pred_style, pred_values, pred_valid, label_classes)
        if any(not p.rgba[..., 3].all() for p in panels):
            legend.append(LegendEntry(_hex_rgb(NODATA_COLOUR), "no data", hatched=True))
        return QuickLook(panels, legend, _caption(Path(opt_src.name).name, grid, shown), _metres_per_px(shown))


def display_grid(grid: Grid, max_size: int) -> Grid:
    """`grid` decimated (same footprint, coarser pixels) so its longest side is at most `max_size` px."""
    scale = max(grid.width, grid.height) / max_size
    if scale <= 1:
        return grid
    width, height = max(1, round(grid.width / scale)), max(1, round(grid.height / scale))
    transform = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return Grid(crs=grid.crs, transform=transform, width=width, height=height)


def true_colour_bands(src: rasterio.DatasetReader, names: Mapping[int, str] | None = None) -> list[int]:
    """1-based R, G, B bands of an optical raster: from its band descriptions, else `names` (band → name),
    else its colour interpretation, else 1, 2, 3 (band 1 alone, grey, for rasters of fewer than 3 bands)."""
    for labels in (dict(enumerate(src.descriptions, start=1)), names or {}):
        found = _bands_named_rgb(labels)
        if found is not None:
            return found
    interp = {ci: band for band, ci in enumerate(src.colorinterp, start=1)}
    if all(ci in interp for ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return [interp[ColorInterp.red], interp[ColorInterp.green], interp[ColorInterp.blue]]
    return [1, 2, 3] if src.count >= 3 else [1]


def optical_rgba(src: rasterio.DatasetReader, bands: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """`bands` (3, or 1 for grey) read at `shape` (h, w), each stretched 2–98 % over its valid pixels:
    (h, w, 4) uint8, alpha 0 where any band is nodata or masked."""
    data = _read(src, bands, shape)
    valid = _valid(src, bands, shape) & np.isfinite(data).all(axis=0)
    rgb = np.stack([stretch(band, valid)[0] for band in data], axis=-1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return _rgba(rgb, valid)


def sar_db(
    src: rasterio.DatasetReader, band: int, opt_grid: Grid, shown: Grid, sar_scale: SarScale = "auto"
) -> tuple[np.ndarray, bool]:
    """SAR `band` on the display grid `shown` of the optical grid `opt_grid`, in dB: (h, w) float32, NaN where
    there is no data; and whether it was converted from linear power. Warped (bilinear) when SAR is on another
    grid than the optical."""
    select_bands(src, [band], "SAR", None)
    sar_grid = grid_of(src)
    if sar_grid.same_as(opt_grid):
        values = _read(src, [band], (shown.height, shown.width))[0]
        values[~_valid(src, [band], (shown.height, shown.width))] = np.nan
    else:
        if opt_grid.crs is None or sar_grid.crs is None:
            raise GeoreferenceError(
                f"SAR raster '{src.name}' is on another grid than the optical raster "
                f"({sar_grid.difference(opt_grid, 'optical')}) and one of them has no CRS, so it cannot be "
                "placed; assign the missing CRS (e.g. gdal_edit.py -a_srs) and retry."
            )
        if footprint_window(opt_grid, sar_grid) is None:
            raise GeoreferenceError(
                f"SAR raster '{src.name}' does not overlap the optical raster; check that the two files show "
                "the same place."
            )
        # Warping straight onto the coarse display grid: GDAL computes only the pixels shown.
        with WarpedVRT(
            src,
            crs=shown.crs,
            transform=shown.transform,
            width=shown.width,
            height=shown.height,
            resampling=Resampling.bilinear,
            src_nodata=src.nodata,
            nodata=float("nan"),
            dtype="float32",
        ) as vrt:
            values = vrt.read(band)
    scaling = decide_sar_scale(values[np.isfinite(values)], sar_scale)
    return (linear_to_db(values) if scaling.converts else values), scaling.converts


def sar_band_name_of(src: rasterio.DatasetReader, band: int, given: str | None = None) -> str:
    """What to call SAR `band`: its description, else `given`, else a VV/VH/HH/HV token of the file name,
    else 'band N'."""
    description = src.descriptions[band - 1]
    if description:
        return description
    if given:
        return given
    tokens = re.split(r"[_\-. ]+", Path(src.name).stem.upper())
    found = [p for p in _POLARISATIONS if p in tokens]
    return found[0] if len(found) == 1 else f"band {band}"


def read_classes(src: rasterio.DatasetReader, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 read at `shape` (h, w) by nearest neighbour: int64 values and validity (not nodata, not 255,
    inside 0–255)."""
    values = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    valid = _valid(src, [1], shape)
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values)
        values = np.where(valid, values, 0)
    values = values.astype(np.int64)
    valid &= (values >= 0) & (values < CLASS_NODATA)
    return values, valid


def class_style(src: rasterio.DatasetReader, fallback: ClassStyle | None = None) -> ClassStyle:
    """Colours from the raster's colour table and names from its CLASS_NAMES tag (as `mdseg predict` writes
    them); what it lacks comes from `fallback`, else a 10-colour palette and 'class N'."""
    try:
        table = src.colormap(1)
    except ValueError:  # no colour table
        table = None
    if table is not None:
        colours = np.zeros((256, 4), dtype=np.uint8)
        for value, rgba in table.items():
            colours[value] = rgba
    elif fallback is not None:
        colours = fallback.colours
    else:
        colours = np.array([(*_FALLBACK_PALETTE[v % len(_FALLBACK_PALETTE)], 255) for v in range(256)], np.uint8)
    names = class_names_from_tags(src)
    if names is None:
        return ClassStyle(colours=colours, names=fallback.names if fallback is not None else {})
    return ClassStyle(colours=colours, names=dict(enumerate(names)))


def class_rgba(style: ClassStyle, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) class values in `style`'s colours: (h, w, 4) uint8, alpha 0 where not `valid`."""
    rgba = style.colours[np.where(valid, values, 0)]
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def stretch(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """`values` scaled to 0–1 between their 2nd and 98th percentile over `valid` pixels (clipped), and those
    two percentiles. A flat image is mid grey; one without valid pixels is 0 (and NaN limits)."""
    sample = values[valid]
    if sample.size == 0:
        return np.zeros(values.shape, np.float32), (math.nan, math.nan)
    lo, hi = (float(p) for p in np.percentile(sample, STRETCH_PERCENT))
    if hi <= lo:
        return np.full(values.shape, 0.5, np.float32), (lo, hi)
    with np.errstate(invalid="ignore"):
        scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return np.nan_to_num(scaled).astype(np.float32), (lo, hi)


def render_quicklook(look: QuickLook, path: str | Path, fmt: str = "png") -> None:
    """Draw `look` and save it to `path` in `fmt`: panels side by side (titles, no ticks), a scale bar on the
    first, the legend below, the caption on top; `PANEL_PX` per panel at `DPI`."""
    n = len(look.panels)
    h, w = look.panels[0].rgba.shape[:2]
    box_w = min(PANEL_PX, PANEL_PX * MAX_ASPECT * w / h)
    columns = max(1, min(len(look.legend), int((n * box_w + MARGIN_PX) // 270)))
    rows = math.ceil(len(look.legend) / columns) if look.legend else 0
    # Room above the panels for the caption and two-line titles, below for the legend.
    height = box_w * h / w + 110 + (45 + 24 * rows if rows else 0)
    fig = Figure(figsize=((n * box_w + MARGIN_PX) / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(look.caption, fontsize=11)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, look.panels, strict=True):
        ax.patch.set(facecolor=NODATA_COLOUR, hatch=NODATA_HATCH[0], hatchcolor=NODATA_HATCH[1])
        ax.imshow(panel.rgba, interpolation="nearest" if panel.classes else "antialiased")
        ax.set_title(panel.title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    if look.metres_per_px is not None:
        metres = _nice_length(0.25 * w * look.metres_per_px)
        bar = AnchoredSizeBar(
            axes[0].transData,
            metres / look.metres_per_px,
            _length(metres),
            loc="lower left",
            pad=0.4,
            sep=3,
            frameon=True,
            size_vertical=max(1.0, h / 150),
        )
        bar.patch.set_alpha(0.75)
        axes[0].add_artist(bar)
    if look.legend:
        hatch = {"hatch": NODATA_HATCH[0], "hatchcolor": NODATA_HATCH[1]}
        handles = [
            Patch(facecolor=e.colour, edgecolor="0.35", label=e.text, **(hatch if e.hatched else {}))
            for e in look.legend
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False, fontsize=11)
    fig.savefig(path, format=fmt, dpi=DPI, facecolor="white")


def _picture_format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(
            f"Quick-look '{out}' needs a picture extension matplotlib writes (.png, .jpg, .pdf, .svg, …); "
            f"got '{out.suffix or 'none'}'."
        )
    return fmt


def _read(src: rasterio.DatasetReader, bands: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """`bands` at `shape` (h, w) as float32 (C, h, w); averaged when decimating, so speckle and texture do not
    alias."""
    decimated = shape != (src.height, src.width)
    resampling = Resampling.average if decimated else Resampling.nearest
    return src.read(list(bands), out_shape=(len(bands), *shape), resampling=resampling, out_dtype="float32")


def _valid(src: rasterio.DatasetReader, bands: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: not masked in any of `bands` (GDAL's masks: nodata value, internal mask, alpha)."""
    if all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in bands):
        return np.ones(shape, dtype=bool)
    masks = src.read_masks(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
    return (masks > 0).all(axis=0)


def _rgba(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w, 3) floats in 0–1 and validity → (h, w, 4) uint8, alpha 0 where not valid."""
    rgba = np.empty((*valid.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.round(255 * rgb)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def _grey_rgba(grey: np.ndarray, values: np.ndarray) -> np.ndarray:
    return _rgba(np.repeat(grey[..., None], 3, axis=-1), np.isfinite(values))


def _bands_named_rgb(labels: Mapping[int, str | None]) -> list[int] | None:
    found: dict[str, int] = {}
    for band, text in labels.items():
        tokens = set(re.split(r"[^a-z0-9]+", (text or "").lower()))
        if "edge" in tokens:  # Sentinel-2 "red edge" bands are not red
            continue
        for colour, words in _COLOUR_WORDS.items():
            if tokens & words:
                found.setdefault(colour, band)
    if len(found) < 3:
        return None
    return [found["red"], found["green"], found["blue"]]


def _optical_title(src: rasterio.DatasetReader, bands: Sequence[int]) -> str:
    """'Optical (R,G,B = B04,B03,B02)' when the bands have descriptions, else their numbers."""
    names = [src.descriptions[b - 1] for b in bands]
    shown = ",".join(names) if all(names) else "bands " + ",".join(map(str, bands))
    if len(bands) == 1:
        return f"Optical ({shown}, grey)\n2–98 % stretch"
    return f"Optical (R,G,B = {shown})\n2–98 % stretch per band"


def _sar_panel(
    src: rasterio.DatasetReader, band: int, name: str | None, grid: Grid, shown: Grid, sar_scale: SarScale
) -> Panel:
    """The SAR panel: dB, grey stretch, titled with the band, the conversion and the stretch limits."""
    db, converted = sar_db(src, band, grid, shown, sar_scale)
    grey, (lo, hi) = stretch(db, np.isfinite(db))
    how = ", from linear power" if converted else ""
    limits = f"black {_signed(lo)} dB, white {_signed(hi)} dB" if math.isfinite(lo) else "no data"
    return Panel(f"SAR {sar_band_name_of(src, band, name)} (dB{how})\n{limits}", _grey_rgba(grey, db))


def _caption(name: str, grid: Grid, shown: Grid) -> str:
    """'scene.tif  ·  10,980 × 10,980 px, 10 m pixels, shown at 107 m'."""
    caption = f"{name}  ·  {grid.width:,} × {grid.height:,} px"
    full = _metres_per_px(grid)
    if full is None:
        return caption + " (no CRS)"
    if shown == grid:
        return caption + f", {_length(full)} pixels"
    return caption + f", {_length(full)} pixels, shown at {_length(_metres_per_px(shown))}"


def _signed(value: float) -> str:
    """One decimal with a typographic minus, as in print."""
    return f"{value:.1f}".replace("-", "−")


def _class_legend(
    style: ClassStyle,
    values: np.ndarray,
    valid: np.ndarray,
    label: tuple[ClassStyle, np.ndarray, np.ndarray] | None,
) -> list[LegendEntry]:
    """One entry per class present in the prediction or the label: its share of the prediction's valid pixels
    (and of the label's). Label classes coloured differently from the prediction get entries of their own."""
    pred_share = _shares(values, valid)
    label_share = _shares(label[1], label[2]) if label is not None else {}
    entries = []
    for v in sorted(set(pred_share) | set(label_share)):
        text = f"{style.name(v)}  {_percent(pred_share.get(v, 0.0))}"
        if label is not None:
            text += f" (label {_percent(label_share.get(v, 0.0))})"
        entries.append(LegendEntry(_unit_rgb(style.colours[v]), text))
    if label is not None:
        label_style = label[0]
        for v in sorted(label_share):
            if not np.array_equal(label_style.colours[v, :3], style.colours[v, :3]):
                entries.append(LegendEntry(_unit_rgb(label_style.colours[v]), f"label: {label_style.name(v)}"))
    return entries


def _shares(values: np.ndarray, valid: np.ndarray) -> dict[int, float]:
    """Fraction of the valid pixels per class value present."""
    counts = np.bincount(values[valid], minlength=256)
    total = counts.sum()
    return {int(v): counts[v] / total for v in np.flatnonzero(counts)}


def _percent(share: float) -> str:
    if 0 < share < 0.001:
        return "<0.1 %"
    return f"{100 * share:.1f} %"


def _unit_rgb(rgba: np.ndarray) -> tuple[float, float, float]:
    return (rgba[0] / 255, rgba[1] / 255, rgba[2] / 255)


def _hex_rgb(text: str) -> tuple[float, float, float]:
    return tuple(int(text[i : i + 2], 16) / 255 for i in (1, 3, 5))


def _metres_per_px(grid: Grid) -> float | None:
    """Side of a pixel at the grid's middle row, in metres (square root of its ground area); None without CRS."""
    if grid.crs is None:
        return None
    return math.sqrt(float(pixel_areas_m2(grid, grid.height // 2, 1)[0]))


def _nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 × 10^k metres not above `metres`."""
    power = 10.0 ** math.floor(math.log10(metres))
    return max(step * power for step in (1, 2, 5) if step * power <= metres)


def _length(metres: float) -> str:
    if metres >= 1000:
        return f"{metres / 1000:g} km"
    return f"{metres:.3g} m"
