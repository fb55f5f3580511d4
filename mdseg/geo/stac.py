"""A STAC Item describing a land-cover map, so catalogues and STAC tools (pystac, stac-browser, QGIS's STAC
browser) find it with its grid, bands, classes and provenance.

The Item uses three extensions: `projection` (CRS, shape, transform), `raster` (band type, nodata, resolution,
scale) and `classification` (each class's value, name, colour and share of the map). Asset hrefs are relative to
the Item's own file, which sits beside the map, so the folder can be moved or copied as a whole.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import transform_bounds, transform_geom

from mdseg.geo.grid import Grid

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
# Media types of the other files a run may write beside its map, by suffix.
_MEDIA_TYPES = {
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".png": "image/png",
    ".qml": "text/xml",
    ".xml": "text/xml",
}


def _slug(name: str) -> str:
    """A class name as the classification extension's machine-readable `name` (letters, digits, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


def _footprint(grid: Grid) -> tuple[dict[str, Any], list[float]]:
    """The grid's outline (GeoJSON polygon) and bbox in WGS84 longitude/latitude."""
    t, w, h = grid.transform, grid.width, grid.height
    corners = [t * (0, 0), t * (w, 0), t * (w, h), t * (0, h), t * (0, 0)]
    polygon = {"type": "Polygon", "coordinates": [[list(c) for c in corners]]}
    xs, ys = zip(*corners, strict=True)
    bounds = (min(xs), min(ys), max(xs), max(ys))
    if grid.crs is None or grid.crs.is_geographic and grid.crs.to_epsg() == 4326:
        return polygon, list(bounds)
    geometry = transform_geom(grid.crs, "EPSG:4326", polygon, antimeridian_cutting=True)
    return geometry, list(transform_bounds(grid.crs, "EPSG:4326", *bounds, densify_pts=21))


def map_item(
    map_path: str | Path,
    grid: Grid,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    class_table: Sequence[Mapping[str, Any]] = (),
    *,
    assets: Mapping[str, str | Path] | None = None,
    properties: Mapping[str, Any] | None = None,
    created: dt.datetime | None = None,
    nodata: int = 255,
    fractions: Mapping[str, int] | None = None,
    fraction_scale: float = 1 / 254,
) -> pystac.Item:
    """The STAC Item of a class map at `map_path` on `grid`: classes `classes` with `palette` colours and, from
    `class_table` (rows with `pixels` and `percent`, as predict counts them), each class's pixel count and share.

    `assets`: other files of the run by key (e.g. "probabilities", "vector", "style", "record"), linked with
    hrefs relative to the map's folder (where the Item's file goes). `properties`: extra Item properties
    (provenance: version, checkpoint, options). `created`: processing time (default: now, UTC); the Item's
    `datetime` is that time too, since a map has no acquisition time of its own. `fractions`: the assets holding
    uint8 fractions (probabilities, confidence) by key, with their band count: each band described with
    `fraction_scale` (offset 0) and `nodata`.
    """
    map_path = Path(map_path)
    created = created or dt.datetime.now(dt.timezone.utc)
    geometry, bbox = _footprint(grid)
    item = pystac.Item(
        id=map_path.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=created,
        properties={"created": created.isoformat().replace("+00:00", "Z"), **dict(properties or {})},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg() if grid.crs is not None else None
    if epsg is not None:
        proj.epsg = epsg
    elif grid.crs is not None:
        proj.wkt2 = grid.crs.to_wkt()
    proj.shape = [grid.height, grid.width]
    proj.transform = list(grid.transform)[:6]

    asset = pystac.Asset(href=f"./{map_path.name}", media_type=COG_MEDIA_TYPE, roles=["data"], title="land cover")
    item.add_asset("landcover", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(nodata=nodata, data_type=DataType.UINT8, spatial_resolution=min(grid.res))
    ]
    counts = {int(row["class_id"]): row for row in class_table if "class_id" in row}
    entries = [
        Classification.create(
            value=i,
            name=_slug(name),
            title=name,
            color_hint="{:02X}{:02X}{:02X}".format(*(int(v) for v in rgb[:3])),
            count=int(counts[i]["pixels"]) if i in counts else None,
            percentage=float(counts[i]["percent"]) if i in counts else None,
        )
        for i, (name, rgb) in enumerate(zip(classes, palette, strict=False))
    ]
    entries.append(Classification.create(value=nodata, name="nodata", title="no data", nodata=True))
    ClassificationExtension.ext(asset, add_if_missing=True).classes = entries
    for key, path in (assets or {}).items():
        path = Path(path)
        suffix = path.suffix.lower()
        media = COG_MEDIA_TYPE if suffix in (".tif", ".tiff") else _MEDIA_TYPES.get(suffix)
        roles = ["style"] if suffix == ".qml" else ["metadata"] if suffix == ".xml" or key == "record" else ["data"]
        extra = pystac.Asset(href=_relative(path, map_path.parent), media_type=media, roles=roles, title=key)
        item.add_asset(key, extra)
        if key in (fractions or {}):
            band = RasterBand.create(nodata=nodata, data_type=DataType.UINT8, scale=fraction_scale, offset=0.0)
            RasterExtension.ext(extra, add_if_missing=True).bands = [band] * fractions[key]
    return item


def _relative(path: Path, folder: Path) -> str:
    """`path` as an href relative to `folder` ("./name" beside it, "../other/name" elsewhere), POSIX style."""
    rel = Path(os.path.relpath(Path(path).absolute(), Path(folder).absolute())).as_posix()
    return rel if rel.startswith("../") else f"./{rel}"
