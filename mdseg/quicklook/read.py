"""The rasters of a quick-look read at display resolution, and how they are coloured.

Reads go through `mdseg.io.raster` with an `out_shape`, so GDAL serves a scene from its overviews when it has
them and no array larger than the picture's pixels is ever held. They go a strip of the picture at a time: one
decimated read is one GDAL call, which a stop signal (Ctrl-C, SIGTERM) has to wait for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from mdseg.errors import GeoreferenceError
from mdseg.geo.grid import Grid
from mdseg.geo.pair import WARP_FILL, footprint_window, grid_of, select_bands, warped_onto
from mdseg.geo.sar import SarScale, decide_sar_scale, linear_to_db
from mdseg.geo.writer import CLASS_NODATA, class_names_from_tags
from mdseg.io.raster import read_bands, read_classes

# Picture rows read per GDAL call. A whole 10980 px Sentinel-2 tile without overviews read decimated to 1024 px took
# seconds in one call; a strip of 128 rows reads an eighth of it.
STRIP_ROWS = 128
# Percentiles mapped to black and white (per band for optical); 2–98 % ignores a few glints and shadows.
STRETCH_PERCENT = (2.0, 98.0)
# Band descriptions (or names) that mark true-colour bands: plain colour words or Sentinel-2 / Landsat-8 names.
_COLOUR_WORDS = {"red": {"red", "b04", "b4"}, "green": {"green", "b03", "b3"}, "blue": {"blue", "b02", "b2"}}
_POLARISATIONS = ("VV", "VH", "HH", "HV")
# Classes of a raster without a colour table (matplotlib's tab10, as 0–255 RGB).
_FALLBACK_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


@dataclass(frozen=True)
class ClassStyle:
    """How a class raster is coloured and named: `colours` (256, 4) uint8 RGBA per value, `names` per value."""

    colours: np.ndarray
    names: dict[int, str]

    def name(self, value: int) -> str:
        return self.names.get(value, f"class {value}")


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
    resampling = _resampling(src, shape)
    data, ok = _in_strips(src, shape, lambda w, s: read_bands(src, bands, w, out_shape=s, resampling=resampling))
    valid = ok.all(axis=0)
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
        resampling = _resampling(src, shown.shape)
        values, valid = _in_strips(
            src, shown.shape, lambda w, s: read_bands(src, [band], w, out_shape=s, resampling=resampling)
        )
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
        with warped_onto(src, shown, src.nodata) as vrt:
            values, valid = read_bands(vrt, [band], nodata=WARP_FILL)
    values = np.where(valid[0], values[0], np.float32(np.nan))
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


def class_values(src: rasterio.DatasetReader, shape: tuple[int, int], role: str) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 of the `role` class raster read at `shape` (h, w) by nearest neighbour: int64 values and validity
    (`mdseg.io.raster.read_classes`' rules, and a colour of the table: 0–254, not the class nodata 255)."""
    values, valid = _in_strips(src, shape, lambda w, s: read_classes(src, w, out_shape=s, role=role))
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


def _in_strips(
    src: rasterio.DatasetReader,
    shape: tuple[int, int],
    read: Callable[[Window, tuple[int, int]], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """The whole of `src` read at `shape` (h, w) by `read(window, out_shape)`, `STRIP_ROWS` picture rows at a time
    (source windows at fractional rows, so each picture row sees the source rows a single read would), stacked
    along the rows: (…, h, w) values and validity."""
    height, width = shape
    parts = []
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        y0, y1 = top * src.height / height, bottom * src.height / height  # the last strip ends at src.height exactly
        parts.append(read(Window(0, y0, src.width, y1 - y0), (bottom - top, width)))
    values, valid = zip(*parts, strict=True)
    return np.concatenate(values, axis=-2), np.concatenate(valid, axis=-2)


def _resampling(src: rasterio.DatasetReader, shape: tuple[int, int]) -> Resampling:
    """Averaged when decimating to `shape` (h, w), so speckle and texture do not alias; else nearest."""
    return Resampling.average if shape != (src.height, src.width) else Resampling.nearest


def _rgba(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w, 3) floats in 0–1 and validity → (h, w, 4) uint8, alpha 0 where not valid."""
    rgba = np.empty((*valid.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.round(255 * rgb)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def grey_rgba(grey: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(h, w) grey levels in 0–1 → (h, w, 4) uint8, alpha 0 where `values` (h, w) are not finite."""
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
