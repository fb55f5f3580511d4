"""STAC items as input: which assets and bands of an item are the optical and SAR rasters a checkpoint needs.

Matching rules (the checkpoint's band names, `CheckpointMeta.opt_band_names` / `sar_band_names`, in its order):

- An optical band matches an asset band by name or by common name: the band's `name` (STAC 1.1 `bands` or
  `eo:bands`), or the asset key of a single-band asset, equal to the checkpoint's name; or the band's common name
  (`eo:common_name` / `common_name`, or an asset key that is a common name) equal to the checkpoint's name or to
  the common name of a Sentinel-2 name (`B04` and `B4` are `red`, `B08` is `nir`, …). Names compare ignoring case,
  `_`, `-` and spaces, and Sentinel-2 numbers ignoring leading zeros (`B4` = `B04`). A band whose common name
  says otherwise never matches by name (Landsat 5's `B4` is `nir`, not Sentinel-2's red).
- A SAR band matches by polarisation: a checkpoint name `VV`, `VH`, `HH` or `HV` takes that polarisation; another
  name (`sar`, `sigma0`) takes VV, else HH, else VH, else HV, each once. An asset holds a polarisation by its key
  (`vv`), its bands' names, or its `sar:polarizations` (one per band).
- Among several matches a name match wins over a common-name match, a data asset over a `visual` or `overview`
  one, and a COG over a GeoTIFF over anything else (JPEG 2000 last); then the item's asset order. Thumbnails,
  metadata and non-raster media types are never used.

Bands from one asset are read from it directly; bands from several assets are stacked without copying data by a
VRT in GDAL's memory file system (`/vsimem/`), one band per asset band, which needs the assets on one grid (same
CRS, transform and size). Asset hrefs are made absolute (relative ones against the item's own href) and opened as
dataset names (`mdseg.io.names`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pystac
from rasterio.io import MemoryFile

from mdseg.errors import GeoreferenceError, InputFileError
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.failures import writing
from mdseg.io.names import dataset_stem, local_archive, local_path
from mdseg.io.raster import open_raster

# Common names of the Sentinel-2 bands that have a unique one (the red-edge bands share "rededge").
_S2_COMMON = {
    "b1": "coastal",
    "b2": "blue",
    "b3": "green",
    "b4": "red",
    "b8": "nir",
    "b8a": "nir08",
    "b9": "nir09",
    "b10": "cirrus",
    "b11": "swir16",
    "b12": "swir22",
}
_COMMON_NAMES = {
    "coastal", "blue", "green", "red", "yellow", "pan", "rededge", "nir", "nir08", "nir09", "cirrus", "swir16",
    "swir22", "lwir", "lwir11", "lwir12",
}  # fmt: skip
_POLARISATIONS = ("vv", "hh", "vh", "hv")  # also the order a generic SAR name takes them in
_SKIPPED_ROLES = {"thumbnail", "metadata"}
_LATE_ROLES = {"visual", "overview"}
_NOT_RASTER = ("image/png", "image/jpeg", "application/json", "application/geo+json", "application/xml", "text/")
_S2_NAME = re.compile(r"^b0*(\d+a?)$")


@dataclass(frozen=True)
class BandSource:
    """One band of an asset: the asset's key, its absolute href and the band (1-based)."""

    asset: str
    href: str
    band: int


@dataclass(frozen=True)
class StacItem:
    """A STAC item read from `href` (a file or an http(s) URL, as given)."""

    href: str
    item: pystac.Item

    @property
    def id(self) -> str:
        return self.item.id

    def scene_name(self) -> str:
        """The item id as a file name part (outputs are `<scene name>_landcover.tif`)."""
        return re.sub(r"[/\\\x00]", "_", self.item.id) or dataset_stem(self.href)

    def local_files(self) -> dict[str, str]:
        """The item's files on this machine, by role (the item and its assets; an archive for a zip member), for
        the check that no output is one of them."""
        files = {"the STAC item": self.href} if local_path(self.href) is not None else {}
        for key, asset in self.item.assets.items():
            href = asset.get_absolute_href() or asset.href
            if local_path(href) is not None or local_archive(href) is not None:
                files[f"asset '{key}' of STAC item '{self.id}'"] = href
        return files


@dataclass(frozen=True)
class StacInputs:
    """What a checkpoint reads of a STAC item: its optical and SAR bands, in the checkpoint's order."""

    item: StacItem
    optical: tuple[BandSource, ...]
    sar: tuple[BandSource, ...]

    def record(self) -> dict:
        """The run record's `inputs`: the item's href and id, and each band's asset, href and band number."""
        return {
            "stac_item": self.item.href,
            "stac_id": self.item.id,
            "optical": [asdict(b) for b in self.optical],
            "sar": [asdict(b) for b in self.sar],
        }


@dataclass(frozen=True)
class StacScene:
    """A STAC item's scene as dataset names: `opt` / `sar` (an asset's href, or a `/vsimem/` VRT stacking several
    assets) and the 1-based bands of each in the checkpoint's order. Valid inside `stac_scene` only."""

    inputs: StacInputs
    opt: str
    opt_bands: tuple[int, ...]
    sar: str
    sar_bands: tuple[int, ...]


def read_item(href: str | Path) -> StacItem:
    """Read the STAC item at `href` (a JSON file or an http(s) URL); `InputFileError` in one line when it is
    missing, unreachable or not a STAC item."""
    href = str(href)
    local = local_path(href)
    if local is not None and not local.is_file():
        what = "is a folder, not an item file" if local.is_dir() else "does not exist"
        raise InputFileError(f"STAC item '{href}' {what}; check the path.")
    try:
        item = pystac.Item.from_file(href)
    except Exception as exc:  # urllib, JSON and pystac each fail in their own way; all mean "no item here"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputFileError(
            f"STAC item '{href}' cannot be read ({type(exc).__name__}: {reason}); pass a STAC item, a JSON file or URL."
        ) from None
    return StacItem(href, item)


def match_item(item: StacItem, opt_names: Sequence[str], sar_names: Sequence[str]) -> StacInputs:
    """The asset bands of `item` that the checkpoint's optical bands `opt_names` and SAR bands `sar_names` are (see
    the module docstring); `InputFileError` naming the missing band and the item's assets when one has none."""
    bands = _asset_bands(item.item)
    optical = tuple(_match_optical(item, bands, name, opt_names) for name in opt_names)
    taken: set[str] = set()
    sar = []
    for name in sar_names:
        source, pol = _match_sar(item, bands, name, sar_names, taken)
        taken.add(pol)
        sar.append(source)
    return StacInputs(item, optical, tuple(sar))


@contextmanager
def stac_scene(inputs: StacInputs) -> Iterator[StacScene]:
    """The dataset names to predict `inputs` from, valid inside the block: bands of one asset are that asset's;
    bands of several assets are stacked by a VRT in `/vsimem/` (freed when the block ends). `GeoreferenceError`
    when stacked assets are not on one grid; `InputFileError` when one cannot be opened."""
    name = inputs.item.scene_name()
    with ExitStack() as stack:
        opt, opt_bands = _dataset(stack, inputs.optical, "Optical", f"{name}_optical.vrt", inputs.item)
        sar, sar_bands = _dataset(stack, inputs.sar, "SAR", f"{name}_sar.vrt", inputs.item)
        yield StacScene(inputs, opt, opt_bands, sar, sar_bands)


def record_item(sidecar: str | Path, inputs: StacInputs) -> None:
    """Write the item and the asset bands read (`StacInputs.record`) as the `inputs` of the run record `sidecar`,
    in place of the dataset names the run was given (a `/vsimem/` VRT means nothing once the run is over)."""
    path = Path(sidecar)
    record = json.loads(path.read_text(encoding="utf-8"))
    record["inputs"] = inputs.record()
    with AtomicOutputs(overwrite=True) as outputs, writing(path, "run record"):
        outputs.reserve(path).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class _Band:
    """A band of an asset as the item describes it, and how good a source it is (`rank`: lower is better)."""

    source: BandSource
    name: str | None  # normalised
    common: str | None  # normalised
    polarisation: str | None
    rank: tuple[int, int, int]
    shown: str  # as the item says it, for messages: 'B04/red', 'VV'


def _norm(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    key = re.sub(r"[\s_\-]", "", text.lower())
    s2 = _S2_NAME.match(key)
    return f"b{s2[1]}" if s2 else key


def _implied_common(name: str | None) -> str | None:
    """The common name a (normalised) band name stands for: itself if it is one, else a Sentinel-2 band's."""
    if name in _COMMON_NAMES:
        return name
    return _S2_COMMON.get(name or "")


def _asset_rank(asset: pystac.Asset, order: int) -> tuple[int, int, int] | None:
    """How good a source `asset` is (lower first), None for what is never read (thumbnails, non-rasters)."""
    roles = set(asset.roles or [])
    media = (asset.media_type or "").lower()
    if roles & _SKIPPED_ROLES or media.startswith(_NOT_RASTER):
        return None
    if "cloud-optimized" in media:
        kind = 0
    elif "tiff" in media:
        kind = 1
    elif "jp2" in media:
        kind = 3
    else:
        kind = 2
    return (1 if roles & _LATE_ROLES and "data" not in roles else 0, kind, order)


def _asset_bands(item: pystac.Item) -> list[_Band]:
    """Every band of every raster asset of `item`, described by name, common name and polarisation."""
    found = []
    for order, (key, asset) in enumerate(item.assets.items()):
        rank = _asset_rank(asset, order)
        if rank is None:
            continue
        href = asset.get_absolute_href() or asset.href
        pols = [_norm(p) for p in asset.extra_fields.get("sar:polarizations") or []]
        listed = asset.extra_fields.get("bands") or asset.extra_fields.get("eo:bands") or []
        listed = [b for b in listed if isinstance(b, dict)] or [{} for _ in pols] or [{}]
        own = _norm(key)
        for index, band in enumerate(listed):
            name = _norm(band.get("name"))
            common = _norm(band.get("eo:common_name") or band.get("common_name"))
            if len(listed) == 1:  # a single-band asset is also known by its key ("red", "B04", "vv")
                name = name or own
                common = common or (own if own in _COMMON_NAMES else None)
            pol = pols[index] if len(pols) == len(listed) else None
            if pol is None and name in _POLARISATIONS:
                pol = name
            words = [band.get("name"), band.get("eo:common_name") or band.get("common_name")]
            words += [pol.upper()] if pol else []
            shown = "/".join(dict.fromkeys(str(w) for w in words if w)) or (key if len(listed) == 1 else "")
            found.append(_Band(BandSource(key, href, index + 1), name, common, pol, rank, shown or f"band {index + 1}"))
    return found


def _match_optical(item: StacItem, bands: list[_Band], wanted: str, all_names: Sequence[str]) -> BandSource:
    key = _norm(wanted)
    implied = _implied_common(key)
    scored = []
    for band in bands:
        if band.polarisation is not None:
            continue
        by_name = band.name == key and (band.common is None or implied is None or band.common == implied)
        by_common = band.common is not None and band.common in (key, implied)
        if by_name or by_common:
            scored.append(((0 if by_name else 1, *band.rank), band.source))
    if not scored:
        raise InputFileError(
            f"STAC item '{item.id}' ({item.href}) has no optical band '{wanted}' (by name or common name), which the "
            f"checkpoint needs (optical bands: {', '.join(all_names)}); its assets: {_describe(bands)}."
        )
    return min(scored, key=lambda s: s[0])[1]


def _match_sar(
    item: StacItem, bands: list[_Band], wanted: str, all_names: Sequence[str], taken: set[str]
) -> tuple[BandSource, str]:
    key = _norm(wanted)
    choices = [key] if key in _POLARISATIONS else [p for p in _POLARISATIONS if p not in taken]
    for pol in choices:
        scored = [(band.rank, band.source) for band in bands if band.polarisation == pol]
        if scored:
            return min(scored, key=lambda s: s[0])[1], pol
    what = f"polarisation {wanted.upper()}" if key in _POLARISATIONS else f"polarisation for '{wanted}' (VV or HH)"
    raise InputFileError(
        f"STAC item '{item.id}' ({item.href}) has no SAR band of {what}, which the checkpoint needs (SAR bands: "
        f"{', '.join(all_names)}); its assets: {_describe(bands)}."
    )


def _describe(bands: list[_Band]) -> str:
    """The item's raster assets and their bands, for an error: 'red (B04/red), vv (VV), visual (B04/red, …)'."""
    by_asset: dict[str, list[str]] = {}
    for band in bands:
        by_asset.setdefault(band.source.asset, []).append(band.shown)
    return ", ".join(f"{key} ({', '.join(names)})" for key, names in by_asset.items()) or "none that GDAL reads"


def _dataset(
    stack: ExitStack, sources: tuple[BandSource, ...], role: str, vrt_name: str, item: StacItem
) -> tuple[str, tuple[int, ...]]:
    """(dataset name, bands) reading `sources`: the asset itself when they are all of one asset, else a VRT."""
    if len({s.href for s in sources}) == 1:
        return sources[0].href, tuple(s.band for s in sources)
    xml = _stack_vrt(sources, role, item)
    memory = stack.enter_context(MemoryFile(xml.encode(), filename=vrt_name))
    return memory.name, tuple(range(1, len(sources) + 1))


def _stack_vrt(sources: tuple[BandSource, ...], role: str, item: StacItem) -> str:
    """A VRT (XML) with one band per source, each read from its asset as is; the assets must share one grid."""
    grids = {}
    for source in dict.fromkeys((s.asset, s.href) for s in sources):
        with open_raster(source[1], role) as src:
            grids[source] = {
                "grid": (src.crs, tuple(src.transform)[:6], src.width, src.height),
                "gdal": src.files[0] if src.files else src.name,
                "bands": {b: (src.dtypes[b - 1], src.nodatavals[b - 1], src.block_shapes[b - 1]) for b in src.indexes},
                "said": f"{source[0]}: {src.width}×{src.height} px of {src.res[0]:g} in {src.crs}",
            }
    first = next(iter(grids.values()))
    if any(g["grid"] != first["grid"] for g in grids.values()):
        raise GeoreferenceError(
            f"STAC item '{item.id}': the {role.lower()} assets are not on one grid "
            f"({'; '.join(g['said'] for g in grids.values())}); they must share CRS, transform and size to be stacked."
        )
    crs, transform, width, height = first["grid"]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
    a, b, c, d, e, f = transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (c, a, b, f, d, e))
    for index, source in enumerate(sources, start=1):
        grid = grids[(source.asset, source.href)]
        if source.band not in grid["bands"]:
            raise InputFileError(
                f"STAC item '{item.id}': asset '{source.asset}' ({source.href}) has {len(grid['bands'])} band(s), "
                f"not band {source.band} as the item says."
            )
        dtype, nodata, (block_h, block_w) = grid["bands"][source.band]
        gdal_type = _GDAL_TYPES[dtype]
        band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(index))
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
        ET.SubElement(band, "Description").text = source.asset
        simple = ET.SubElement(band, "SimpleSource")
        ET.SubElement(simple, "SourceFilename", relativeToVRT="0").text = grid["gdal"]
        ET.SubElement(simple, "SourceBand").text = str(source.band)
        # Known properties spare GDAL opening every asset before it reads from it.
        ET.SubElement(
            simple,
            "SourceProperties",
            RasterXSize=str(width),
            RasterYSize=str(height),
            DataType=gdal_type,
            BlockXSize=str(block_w),
            BlockYSize=str(block_h),
        )
        whole = {"xOff": "0", "yOff": "0", "xSize": str(width), "ySize": str(height)}
        ET.SubElement(simple, "SrcRect", whole)
        ET.SubElement(simple, "DstRect", whole)
    return ET.tostring(root, encoding="unicode")


# numpy dtype names (rasterio's) → GDAL data type names.
_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}
