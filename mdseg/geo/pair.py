"""An optical + SAR raster pair read window by window on the optical grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from mdseg.errors import BandSelectionError, GeoreferenceError
from mdseg.geo.grid import Grid
from mdseg.geo.sar import SarScale, decide_sar_scale, linear_to_db
from mdseg.io.raster import open_raster

Align = Literal["reproject", "strict"]

# Longest side (pixels) of the decimated SAR read used to decide the SAR scale; GDAL serves it from
# overviews when the file has them.
_SAMPLE_SIDE = 512


def select_bands(
    src: rasterio.DatasetReader, bands: Sequence[int] | None, role: str, expected: int | None
) -> list[int]:
    """Validate 1-based `bands` (None → all) against `src` and, when given, the `expected` count."""
    chosen = list(range(1, src.count + 1)) if bands is None else [int(b) for b in bands]
    bad = [b for b in chosen if not 1 <= b <= src.count]
    if not chosen or bad:
        raise BandSelectionError(
            f"{role} raster '{src.name}' has {src.count} band(s) but band(s) {bad or chosen} were asked for; "
            f"choose bands in 1..{src.count}."
        )
    if expected is not None and len(chosen) != expected:
        raise BandSelectionError(
            f"The model expects {expected} {role.lower()} band(s) but {len(chosen)} were selected from "
            f"'{src.name}' ({src.count} in the file); select {expected} with the band option."
        )
    return chosen


def grid_of(src: rasterio.DatasetReader) -> Grid:
    """The grid of an open dataset."""
    return Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


def footprint_window(opt: Grid, sar: Grid) -> Window | None:
    """The part of the optical grid covered by the SAR footprint's bounding box, in whole optical pixels;
    None when the footprints do not overlap."""
    if sar.same_as(opt):
        return Window(0, 0, opt.width, opt.height)
    h, w = sar.height, sar.width
    corners = [sar.transform @ (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))]
    xs, ys = zip(*corners, strict=True)
    bounds = (min(xs), min(ys), max(xs), max(ys))
    if sar.crs != opt.crs:
        bounds = transform_bounds(sar.crs, opt.crs, *bounds, densify_pts=21)
    inv = ~opt.transform
    px = [inv @ (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])]
    cols, rows = zip(*px, strict=True)
    # Round to a micro-pixel first so an exact edge (9.9999999) does not grow the window by a pixel.
    col0 = max(0, math.floor(round(min(cols), 6)))
    col1 = min(opt.width, math.ceil(round(max(cols), 6)))
    row0 = max(0, math.floor(round(min(rows), 6)))
    row1 = min(opt.height, math.ceil(round(max(rows), 6)))
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


class RasterPair:
    """An optical and a SAR raster opened together; SAR is read on the optical grid.

    Use as a context manager. `grid` is the optical grid (the output grid); `window` is the part of it that
    the SAR footprint covers (prediction happens there only). `read(window)` returns float32 optical
    (Co, h, w), SAR (Cs, h, w) in dB, and a boolean validity mask (h, w).

    Args:
        opt_path, sar_path: rasters GDAL can read.
        opt_bands, sar_bands: 1-based band numbers; None selects all bands.
        opt_band_count, sar_band_count: band counts the model expects; checked when given.
        align: "reproject" warps SAR onto the optical grid (bilinear) when the grids differ; "strict" refuses.
        sar_scale: "auto" detects linear power from a decimated sample; "db" / "linear" force the scale.
        opt_nodata, sar_nodata: nodata values that override what the files declare.
    """

    def __init__(
        self,
        opt_path: str | Path,
        sar_path: str | Path,
        *,
        opt_bands: Sequence[int] | None = None,
        sar_bands: Sequence[int] | None = None,
        opt_band_count: int | None = None,
        sar_band_count: int | None = None,
        align: Align = "reproject",
        sar_scale: SarScale = "auto",
        opt_nodata: float | None = None,
        sar_nodata: float | None = None,
    ) -> None:
        if align not in ("reproject", "strict"):
            raise ValueError(f"align must be 'reproject' or 'strict', not {align!r}")
        self.opt_path, self.sar_path = Path(opt_path), Path(sar_path)
        self._stack = ExitStack()
        try:
            self._opt = self._stack.enter_context(open_raster(opt_path, "Optical"))
            self._sar_file = self._stack.enter_context(open_raster(sar_path, "SAR"))
            self.opt_bands = select_bands(self._opt, opt_bands, "Optical", opt_band_count)
            self.sar_bands = select_bands(self._sar_file, sar_bands, "SAR", sar_band_count)
            self.opt_nodata = opt_nodata
            self.sar_nodata = sar_nodata
            self.grid = grid_of(self._opt)
            sar_grid = grid_of(self._sar_file)
            self._check_crs(sar_grid)
            self.reprojected = not sar_grid.same_as(self.grid)
            self.alignment_reason = sar_grid.difference(self.grid, "optical")
            if self.reprojected and align == "strict":
                raise GeoreferenceError(
                    f"SAR raster '{self.sar_path}' is not on the optical grid of '{self.opt_path}' "
                    f"({self.alignment_reason}); resample it onto the optical grid first, or let mdseg reproject it "
                    "(--align reproject)."
                )
            window = footprint_window(self.grid, sar_grid)
            if window is None:
                raise GeoreferenceError(
                    f"SAR raster '{self.sar_path}' does not overlap optical raster '{self.opt_path}'; "
                    "check that the two files show the same place."
                )
            self.window = window
            self._sar = self._stack.enter_context(self._warped()) if self.reprojected else self._sar_file
            self.sar_scaling = decide_sar_scale(self._sar_sample(), sar_scale)
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> RasterPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close both files (and the warped view of SAR)."""
        self._stack.close()

    @property
    def opt_count(self) -> int:
        """Number of optical bands read."""
        return len(self.opt_bands)

    @property
    def sar_count(self) -> int:
        """Number of SAR bands read."""
        return len(self.sar_bands)

    def alignment(self) -> dict:
        """What was decided about the pair, JSON-ready: reprojection, prediction window, SAR scale."""
        w = self.window
        return {
            "sar_reprojected": self.reprojected,
            "sar_grid": self.alignment_reason,
            "resampling": "bilinear" if self.reprojected else None,
            "window": {"col_off": int(w.col_off), "row_off": int(w.row_off), "width": w.width, "height": w.height},
            "sar_scale": self.sar_scaling.as_dict(),
        }

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read `window` (optical-grid pixels, inside the raster): optical (Co, h, w) float32, SAR (Cs, h, w)
        float32 in dB, and validity (h, w) bool. Values at invalid pixels are unspecified (may be NaN)."""
        opt = self._opt.read(self.opt_bands, window=window, out_dtype="float32")
        sar = self._sar.read(self.sar_bands, window=window, out_dtype="float32")
        valid = _valid(self._opt, self.opt_bands, opt, window, self.opt_nodata)
        if self.reprojected:
            # The warped view fills pixels outside the SAR footprint and source nodata with NaN.
            valid &= np.isfinite(sar).all(axis=0)
        else:
            valid &= _valid(self._sar, self.sar_bands, sar, window, self.sar_nodata)
        if self.sar_scaling.converts:
            sar = linear_to_db(sar)
        return opt, sar, valid

    def _check_crs(self, sar_grid: Grid) -> None:
        if self.grid.crs is None:
            raise GeoreferenceError(
                f"Optical raster '{self.opt_path}' has no CRS, so the map could not be placed; "
                "assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX) and retry."
            )
        if sar_grid.crs is None:
            raise GeoreferenceError(
                f"SAR raster '{self.sar_path}' has no CRS while the optical raster is in {self.grid.crs}; "
                "assign the SAR file its CRS (e.g. gdal_edit.py -a_srs) and retry."
            )

    def _warped(self) -> WarpedVRT:
        src = self._sar_file
        nodata = self.sar_nodata if self.sar_nodata is not None else src.nodata
        return WarpedVRT(
            src,
            crs=self.grid.crs,
            transform=self.grid.transform,
            width=self.grid.width,
            height=self.grid.height,
            resampling=Resampling.bilinear,
            src_nodata=nodata,
            nodata=float("nan"),
            dtype="float32",
        )

    def _sar_sample(self) -> np.ndarray:
        """Valid SAR values from a decimated read of the source file (overviews when it has them)."""
        src = self._sar_file
        scale = max(src.width, src.height) / _SAMPLE_SIDE
        shape = (
            len(self.sar_bands),
            max(1, round(src.height / max(scale, 1))),
            max(1, round(src.width / max(scale, 1))),
        )
        values = src.read(self.sar_bands, out_shape=shape, out_dtype="float32", resampling=Resampling.nearest)
        valid = np.isfinite(values)
        nodata = self.sar_nodata if self.sar_nodata is not None else src.nodata
        if nodata is not None:
            valid &= values != np.float32(nodata)
        return values[valid]


def _valid(
    src: rasterio.io.DatasetReaderBase, bands: list[int], data: np.ndarray, window: Window, override: float | None
) -> np.ndarray:
    """Validity (h, w) of already-read `data` (C, h, w): every band finite and not masked.

    Without `override`, GDAL's masks (nodata value, internal mask or alpha band) decide. With it, pixels equal
    to `override` in any band are invalid and a declared nodata value is ignored, but an internal mask or
    alpha band still applies.
    """
    valid = np.isfinite(data).all(axis=0)
    flags = src.mask_flag_enums[bands[0] - 1]
    if override is None:
        if MaskFlags.all_valid not in flags:
            valid &= (src.read_masks(bands, window=window) > 0).all(axis=0)
        return valid
    valid &= (data != np.float32(override)).all(axis=0)
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        valid &= (src.read_masks(bands, window=window) > 0).all(axis=0)
    return valid
