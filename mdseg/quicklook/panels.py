"""What a quick-look shows: panels on one display grid, a legend of the classes present, a caption."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from mdseg.errors import GeoreferenceError, OptionError
from mdseg.geo.grid import Grid, pixel_areas_m2
from mdseg.geo.pair import grid_of, select_bands
from mdseg.geo.sar import SarScale
from mdseg.io.raster import open_raster
from mdseg.quicklook.read import (
    ClassStyle,
    class_rgba,
    class_style,
    class_values,
    display_grid,
    grey_rgba,
    optical_rgba,
    sar_band_name_of,
    sar_db,
    stretch,
    true_colour_bands,
)

# Behind every panel, showing through pixels without data (nodata, masks, outside the SAR footprint): hatched, so
# it cannot be mistaken for a grey of the image or a class colour.
NODATA_COLOUR = "#eeeeee"
NODATA_HATCH = ("///", "#a8a8a8")  # pattern, line colour


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
        pred_values, pred_valid = class_values(pred_src, shape, "prediction")
        pred_style = class_style(pred_src)
        panels.append(Panel("Prediction", class_rgba(pred_style, pred_values, pred_valid), classes=True))
        label_classes = None
        if label_src is not None:
            label_values, label_valid = class_values(label_src, shape, "label")
            label_style = class_style(label_src, fallback=pred_style)
            panels.append(Panel("Label", class_rgba(label_style, label_values, label_valid), classes=True))
            label_classes = (label_style, label_values, label_valid)
        legend = _class_legend(pred_style, pred_values, pred_valid, label_classes)
        if any(not p.rgba[..., 3].all() for p in panels):
            legend.append(LegendEntry(_hex_rgb(NODATA_COLOUR), "no data", hatched=True))
        return QuickLook(panels, legend, _caption(Path(opt_src.name).name, grid, shown), _metres_per_px(shown))


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
    return Panel(f"SAR {sar_band_name_of(src, band, name)} (dB{how})\n{limits}", grey_rgba(grey, db))


def _caption(name: str, grid: Grid, shown: Grid) -> str:
    """'scene.tif  ·  10,980 × 10,980 px, 10 m pixels, shown at 107 m'."""
    caption = f"{name}  ·  {grid.width:,} × {grid.height:,} px"
    full = _metres_per_px(grid)
    if full is None:
        return caption + " (no CRS)"
    if shown == grid:
        return caption + f", {length_text(full)} pixels"
    return caption + f", {length_text(full)} pixels, shown at {length_text(_metres_per_px(shown))}"


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


def length_text(metres: float) -> str:
    """A length for a caption or scale bar: '10 m', '2.5 km'."""
    if metres >= 1000:
        return f"{metres / 1000:g} km"
    return f"{metres:.3g} m"
