"""An optical + SAR raster pair read window by window on the optical grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from mdseg.errors import BandSelectionError, GeoreferenceError
from mdseg.geo.grid import Grid
from mdseg.geo.sar import SarScale, decide_sar_scale, linear_to_db
from mdseg.io.names import dataset_stem, local_path
from mdseg.io.raster import open_raster, read_bands, sample_values

Align = Literal["reproject", "strict"]

# What a warped view holds where it has no data (outside the source footprint, source nodata); read back with
# it as the nodata override, validity is finiteness.
WARP_FILL = float("nan")


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


def refuse_unmapped(src: rasterio.DatasetReader, role: str, path: str | Path, target_crs: CRS | None) -> None:
    """Refuse, naming the cause and the gdalwarp command that fixes it, a raster without a map grid that is
    georeferenced by ground control points or RPCs (raw satellite geometry); return when it has neither.

    mdseg does not warp such a raster itself: the optical raster is the output grid, and a grid GDAL would
    choose for it is not the user's; SAR could be warped onto the optical grid, but rasterio's warped views
    take only a geotransform. `target_crs`: the CRS to warp into (the optical one for SAR), else one is
    suggested from where the raster lies (its UTM zone).
    """
    gcps, gcp_crs = src.gcps
    if gcps:
        crs = target_crs or _utm_near(gcp_crs, [(g.x, g.y) for g in gcps])
        raise GeoreferenceError(
            f"{role} raster '{path}' is georeferenced by {len(gcps)} ground control points, not a map grid; "
            f"warp it first: gdalwarp -t_srs {_crs_text(crs)} -r bilinear {path} {_warped_name(path)}"
        )
    if src.rpcs is not None:
        crs = target_crs or _utm_near(CRS.from_epsg(4326), [(src.rpcs.long_off, src.rpcs.lat_off)])
        raise GeoreferenceError(
            f"{role} raster '{path}' is georeferenced by RPCs (a sensor model), not a map grid; orthorectify it "
            f"first: gdalwarp -rpc -to RPC_DEM=<your DEM> -t_srs {_crs_text(crs)} -r bilinear {path} "
            f"{_warped_name(path)}"
        )


def _utm_near(crs: CRS | None, points: Sequence[tuple[float, float]]) -> CRS | None:
    """A projected `crs` as is; for geographic coordinates the WGS 84 UTM zone of their mean; None if unknown."""
    if crs is None or not points:
        return None
    if not crs.is_geographic:
        return crs
    lon = sum(p[0] for p in points) / len(points)
    lat = sum(p[1] for p in points) / len(points)
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _crs_text(crs: CRS | None) -> str:
    if crs is None:
        return "EPSG:XXXX"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else f"'{crs.to_wkt()}'"


def _warped_name(path: str | Path) -> Path:
    """Beside a local file; in the current folder for a URL or /vsi… name."""
    local = local_path(path)
    name = f"{dataset_stem(path)}_warped.tif"
    return Path(name) if local is None else local.with_name(name)


def warped_onto(src: rasterio.DatasetReader, grid: Grid, src_nodata: float | None) -> WarpedVRT:
    """A float32 view of `src` warped (bilinear) onto `grid`, `WARP_FILL` where it has no data: outside the
    footprint of `src` and where `src` holds `src_nodata`. GDAL computes only the pixels read."""
    return WarpedVRT(
        src,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.bilinear,
        src_nodata=src_nodata,
        nodata=WARP_FILL,
        dtype="float32",
    )


class RasterPair:
    """An optical and a SAR raster opened together; SAR is read on the optical grid.

    Use as a context manager. `grid` is the optical grid (the output grid); `window` is the part of it that
    the SAR footprint covers (prediction happens there only). `read(window)` returns float32 optical
    (Co, h, w), SAR (Cs, h, w) in dB, and a boolean validity mask (h, w).

    Args:
        opt_path, sar_path: dataset names GDAL opens (paths, URLs, /vsi… names; see `mdseg.io.names`).
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
        self.opt_path, self.sar_path = opt_path, sar_path  # names as given: a URL is no Path
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
            # Decided from a decimated read of the source file (overviews when it has them), not the warped view.
            sample = sample_values(self._sar_file, self.sar_bands, nodata=sar_nodata)
            self.sar_scaling = decide_sar_scale(sample, sar_scale)
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
        opt, opt_ok = read_bands(self._opt, self.opt_bands, window, nodata=self.opt_nodata)
        # The warped view (SAR on another grid) has no data where it holds WARP_FILL.
        sar_nodata = WARP_FILL if self.reprojected else self.sar_nodata
        sar, sar_ok = read_bands(self._sar, self.sar_bands, window, nodata=sar_nodata)
        valid = opt_ok.all(axis=0) & sar_ok.all(axis=0)
        if self.sar_scaling.converts:
            sar = linear_to_db(sar)
        return opt, sar, valid

    def _check_crs(self, sar_grid: Grid) -> None:
        if self.grid.crs is None:
            refuse_unmapped(self._opt, "Optical", self.opt_path, None)
            raise GeoreferenceError(
                f"Optical raster '{self.opt_path}' has no CRS, so the map could not be placed; "
                "assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX) and retry."
            )
        if sar_grid.crs is None:
            refuse_unmapped(self._sar_file, "SAR", self.sar_path, self.grid.crs)
            raise GeoreferenceError(
                f"SAR raster '{self.sar_path}' has no CRS while the optical raster is in {self.grid.crs}; "
                "assign the SAR file its CRS (e.g. gdal_edit.py -a_srs) and retry."
            )

    def _warped(self) -> WarpedVRT:
        src = self._sar_file
        return warped_onto(src, self.grid, self.sar_nodata if self.sar_nodata is not None else src.nodata)
