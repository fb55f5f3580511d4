"""Class polygons from a class raster: polygonised block by block, dissolved across blocks, written with OGR."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyogrio.errors
import pyogrio.raw
import rasterio.crs
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

import mdseg
from mdseg.errors import OutputError
from mdseg.geo.grid import Grid, pixel_areas_m2
from mdseg.geo.writer import CLASS_NODATA
from mdseg.io.failures import writing
from mdseg.io.raster import open_raster, read_errors

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
# Creation options per driver: GeoJSON per RFC 7946 (OGR reprojects to WGS84 lon/lat and writes no `crs` member);
# GeoPackage 1.2, which every GDAL since 2.2 reads without a version warning (GDAL ≥ 3.9 writes 1.4 by default).
DATASET_OPTIONS = {"GPKG": {"VERSION": "1.2"}, "GeoJSON": {}}
LAYER_OPTIONS = {"GPKG": {}, "GeoJSON": {"RFC7946": "YES"}}
# The polygons' layer, and its geometry column in a GeoPackage (OGR's default name there).
LAYER = "landcover"
GPKG_GEOMETRY_COLUMN = "geom"
# Rows polygonised at once: bounds the raster memory of a pass (rows × width bytes) on any scene.
_BLOCK_ROWS = 1024
# Metres per degree of latitude (mean): converts a simplification tolerance for geographic CRSs.
_M_PER_DEGREE = 111_320.0


def vector_driver(path: str | Path) -> str:
    """OGR driver for `path` from its extension; `OutputError` for anything but .gpkg, .geojson, .json."""
    ext = Path(path).suffix.lower()
    if ext not in DRIVERS:
        raise OutputError(f"Vector output '{path}' must end in .gpkg, .geojson or .json; rename it.")
    return DRIVERS[ext]


def polygonise(
    class_raster: str | Path,
    classes: Sequence[str],
    *,
    simplify_m: float = 0.0,
    min_area_m2: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons of each class of a uint8 class raster (255 = nodata), in the raster's CRS.

    The raster is read `_BLOCK_ROWS` rows at a time; polygons touching a block seam are dissolved per class so
    no polygon is cut at a block boundary. `simplify_m` (metres) simplifies, topology-preserving per polygon;
    polygons smaller than `min_area_m2` (m²) are dropped. Returns (geometries (N,) shapely Polygons,
    class ids (N,) int32, areas (N,) float64 m²). A raster that cannot be read is an `InputFileError`.
    """
    with open_raster(class_raster, "Class") as src:
        grid = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        inner: list[list[shapely.Polygon]] = [[] for _ in classes]
        seam: list[list[shapely.Polygon]] = [[] for _ in classes]
        for row0 in range(0, grid.height, _BLOCK_ROWS):
            row1 = min(row0 + _BLOCK_ROWS, grid.height)
            window = Window(0, row0, grid.width, row1 - row0)
            with read_errors(src, window):
                block = src.read(1, window=window)
            # Pixel coordinates (col, row) so seam tests are exact integer comparisons.
            shapes = rasterio.features.shapes(
                block, mask=block != CLASS_NODATA, connectivity=4, transform=Affine.translation(0, row0)
            )
            for geom, value in shapes:
                poly = shapely.geometry.shape(geom)
                _, miny, _, maxy = poly.bounds
                touches = (row0 > 0 and miny == row0) or (row1 < grid.height and maxy == row1)
                (seam if touches else inner)[int(value)].append(poly)
    geoms: list[shapely.Polygon] = []
    ids: list[int] = []
    for k in range(len(classes)):
        parts = list(inner[k])
        if seam[k]:
            parts += list(shapely.get_parts(shapely.union_all(seam[k])))
        geoms += parts
        ids += [k] * len(parts)
    geoms_px = np.array(geoms, dtype=object)
    class_ids = np.array(ids, dtype=np.int32)
    if simplify_m > 0 and len(geoms_px):
        geoms_px = shapely.simplify(geoms_px, simplify_m / _metres_per_pixel(grid), preserve_topology=True)
    areas = _areas_m2(grid, geoms_px)
    keep = (areas >= min_area_m2) & ~shapely.is_empty(geoms_px) if len(geoms_px) else np.zeros(0, bool)
    t = grid.transform
    world = shapely.transform(
        geoms_px[keep],
        lambda xy: np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f]),
    )
    return world, class_ids[keep], areas[keep]


def write_polygons(
    path: str | Path,
    geometries: np.ndarray,
    class_ids: np.ndarray,
    areas_m2: np.ndarray,
    classes: Sequence[str],
    crs: rasterio.crs.CRS | None,
    driver: str,
    *,
    target: str | Path | None = None,
) -> None:
    """Write polygons with fields class_id, class_name, area_m2 to `path` (GeoPackage or GeoJSON).

    A GeoPackage (version 1.2) keeps `crs`; GeoJSON follows RFC 7946: WGS84 longitude/latitude, reprojected from
    `crs`, no `crs` member.

    A failed write (no space left, read-only file system, permission denied) is an `OutputError` naming
    `target` (the user's path, when `path` is a temporary beside it; default `path`).
    """
    names = np.array([classes[i] for i in class_ids], dtype=object)
    failures = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError)
    with writing(target or path, "polygons", failures, written=path):
        pyogrio.raw.write(
            str(path),
            shapely.to_wkb(geometries),
            [class_ids, names, areas_m2],
            ["class_id", "class_name", "area_m2"],
            layer=LAYER,
            driver=driver,
            geometry_type="Polygon",
            crs=crs.to_wkt() if crs is not None else None,
            dataset_options=DATASET_OPTIONS[driver],
            layer_options=LAYER_OPTIONS[driver],
        )


def store_gpkg_style(
    path: str | Path, qml: str, *, layer: str = LAYER, name: str = "mdseg classes", target: str | Path | None = None
) -> None:
    """Store `qml` in the GeoPackage at `path` as `layer`'s default style: a row of QGIS's `layer_styles` table
    (created with QGIS's columns), which QGIS loads when it opens the layer, so the style travels with the file.
    A failed write is an `OutputError` naming `target` (default `path`)."""
    now = np.array([np.datetime64(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), "ms")])
    columns = {
        "f_table_catalog": np.array([""], dtype=object),
        "f_table_schema": np.array([""], dtype=object),
        "f_table_name": np.array([layer], dtype=object),
        "f_geometry_column": np.array([GPKG_GEOMETRY_COLUMN], dtype=object),
        "styleName": np.array([name], dtype=object),
        "styleQML": np.array([qml], dtype=object),
        "styleSLD": np.array([""], dtype=object),
        "useAsDefault": np.array([True]),
        "description": np.array([f"written by mdseg {mdseg.__version__}"], dtype=object),
        "owner": np.array([""], dtype=object),
        "ui": np.array([None], dtype=object),
        "update_time": now,
    }
    failures = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError)
    with writing(target or path, "polygon style", failures, written=path):
        pyogrio.raw.write(
            str(path),
            None,
            list(columns.values()),
            list(columns),
            layer="layer_styles",
            driver="GPKG",
            geometry_type=None,
            append=True,
        )


def _metres_per_pixel(grid: Grid) -> float:
    """Ground size of one pixel (m), geometric mean of x and y; geographic CRSs at the scene's centre."""
    rx, ry = grid.res
    if grid.crs is not None and grid.crs.is_geographic:
        lat = grid.transform.f + grid.transform.e * grid.height / 2
        return math.sqrt(rx * math.cos(math.radians(lat)) * ry) * _M_PER_DEGREE
    unit = grid.crs.linear_units_factor[1] if grid.crs is not None else 1.0
    return math.sqrt(rx * ry) * unit


def _areas_m2(grid: Grid, geoms_px: np.ndarray) -> np.ndarray:
    """Area (m²) of polygons in pixel coordinates: pixel count × the ground area of a pixel at the centroid row."""
    if not len(geoms_px):
        return np.zeros(0)
    rows = np.clip(shapely.get_y(shapely.centroid(geoms_px)).astype(int), 0, grid.height - 1)
    per_row = pixel_areas_m2(grid, 0, grid.height)
    return shapely.area(geoms_px) * per_row[rows]
