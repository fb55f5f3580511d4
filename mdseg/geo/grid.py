"""A raster grid (CRS, affine transform, size) and the ground area of its pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS

# Mean Earth radius (IUGG), metres: used only for the spherical area of geographic-CRS pixels.
_EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Grid:
    """Where a raster's pixels lie: `crs` (None when the file has none), `transform` (pixel → CRS), size in pixels."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    def same_as(self, other: Grid) -> bool:
        """True when both grids have the same CRS, size and transform (to a millionth of a pixel)."""
        if self.crs != other.crs or self.shape != other.shape:
            return False
        tol = 1e-6 * min(self.res)
        return all(abs(a - b) <= tol for a, b in zip(self.transform[:6], other.transform[:6], strict=True))

    def difference(self, other: Grid, other_name: str) -> str:
        """Every way this grid differs from `other` (called `other_name`), for the user: e.g. size and origin."""
        if self.same_as(other):
            return f"same grid as {other_name}"
        if self.crs != other.crs:  # resolution and origin are not comparable across CRSs
            return f"CRS {self.crs} differs from {other_name} {other.crs}"
        tol = 1e-6 * min(other.res)
        parts = []
        if any(abs(a - b) > tol for a, b in zip(self.res, other.res, strict=True)):
            parts.append(
                f"resolution {self.res[0]:g}x{self.res[1]:g} differs from {other_name} "
                f"{other.res[0]:g}x{other.res[1]:g}"
            )
        dx, dy = self.transform.c - other.transform.c, self.transform.f - other.transform.f
        if abs(dx) > tol or abs(dy) > tol:
            parts.append(f"transform origin is offset by ({dx:g}, {dy:g}) CRS units from the {other_name} one")
        if self.shape != other.shape:
            parts.append(f"size {self.width}x{self.height} differs from {other_name} {other.width}x{other.height}")
        return "; ".join(parts) or f"transform (rotation) differs from the {other_name} one"


def pixel_areas_m2(grid: Grid, row0: int, rows: int) -> np.ndarray:
    """Ground area in m² of one pixel in each of rows `row0 … row0 + rows − 1`, shape (rows,), float64.

    Projected CRS: the transform's determinant times the square of the CRS's linear unit (metres per unit).
    Geographic CRS: the area of the pixel's cell on a sphere of the Earth's mean radius (error < 0.5 %),
    evaluated at the row's latitude (assumes a north-up grid). No CRS: pixel units are taken as metres.
    """
    t = grid.transform
    det = abs(t.a * t.e - t.b * t.d)
    if grid.crs is None or not grid.crs.is_geographic:
        unit = grid.crs.linear_units_factor[1] if grid.crs is not None else 1.0
        return np.full(rows, det * unit * unit)
    edges = t.f + t.e * np.arange(row0, row0 + rows + 1, dtype=np.float64)
    lat = np.radians(np.clip(edges, -90.0, 90.0))
    band = np.abs(np.sin(lat[1:]) - np.sin(lat[:-1]))
    return _EARTH_RADIUS_M**2 * math.radians(abs(t.a)) * band
