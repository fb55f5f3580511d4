"""Streaming raster output: rows in, a Cloud-Optimized GeoTIFF out; class-map legend (colours, names, RAT) and
reading the names back."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil

from mdseg.errors import OptionError
from mdseg.geo.grid import Grid
from mdseg.io.failures import io_error_types

CLASS_NODATA = 255
# Internal tile size of the intermediate and the COG (px): GDAL's COG default, good for HTTP range reads.
BLOCK = 512
# COG creation options that reproject, re-tile onto a tiling scheme or add an alpha band: outputs stay on the
# optical grid with their nodata, so these are refused.
GRID_OPTIONS = frozenset(
    {"TILING_SCHEME", "TARGET_SRS", "RES", "EXTENT", "ALIGNED_LEVELS", "ZOOM_LEVEL", "ZOOM_LEVEL_STRATEGY", "ADD_ALPHA"}
)


class StreamingCOG:
    """Write a uint8 raster top to bottom in row strips, then convert it to a Cloud-Optimized GeoTIFF.

    Rows go to `scratch`, a tiled DEFLATE GeoTIFF, one full block row at a time (a partial block written
    twice would be stored twice); `finish(dst)` copies it with GDAL's COG driver (overviews with
    `overview_resampling`) to `dst`. Memory: one block row, count × BLOCK × width bytes, released before the
    conversion, whose own memory follows GDAL's block cache (GDAL_CACHEMAX; `predict_scene` bounds it).

    Args:
        scratch: path of the intermediate GeoTIFF (the caller removes it).
        grid: output grid.
        count: bands.
        nodata: nodata value, or None.
        scale: every band's scale (readers' value = byte × scale, offset 0), or None for raw bytes.
        colormap: band-1 colour table {value: (r, g, b, a)}.
        descriptions: one per band.
        tags: dataset metadata; band_tags: per-band metadata (1-based band → tags).
        creation_options: COG creation options (`creation_options`) over the defaults (DEFLATE, 512 px blocks,
            `overview_resampling`, BigTIFF if needed).
    """

    def __init__(
        self,
        scratch: Path,
        grid: Grid,
        count: int,
        *,
        nodata: int | None = None,
        scale: float | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        descriptions: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        band_tags: Mapping[int, Mapping[str, str]] | None = None,
        overview_resampling: str = "mode",
        creation_options: Mapping[str, str] | None = None,
    ) -> None:
        self.grid, self.count = grid, count
        self.overview_resampling = overview_resampling
        self.creation_options = dict(creation_options or {})
        _mute_libtiff_global_errors()
        self._dst = rasterio.open(
            scratch,
            "w",
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=count,
            dtype="uint8",
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            tiled=True,
            blockxsize=BLOCK,
            blockysize=BLOCK,
            compress="deflate",
            bigtiff="if_safer",
        )
        if colormap is not None:
            self._dst.write_colormap(1, dict(colormap))
        for i, text in enumerate(descriptions or (), start=1):
            self._dst.set_band_description(i, text)
        if tags:
            self._dst.update_tags(**tags)
        for band, btags in (band_tags or {}).items():
            self._dst.update_tags(band, **btags)
        if scale is not None:
            self._dst.scales = (scale,) * count
            self._dst.offsets = (0.0,) * count
        rows = min(BLOCK, grid.height)
        self._buf = np.empty((count, rows, grid.width), dtype=np.uint8)
        self._filled = 0  # rows in the buffer
        self._row = 0  # raster row of buffer row 0

    def write(self, values: np.ndarray) -> None:
        """Append the next rows: `values` (count, n, width) uint8."""
        n = values.shape[1]
        done = 0
        while done < n:
            take = min(n - done, self._buf.shape[1] - self._filled)
            self._buf[:, self._filled : self._filled + take] = values[:, done : done + take]
            self._filled += take
            done += take
            if self._filled == self._buf.shape[1] or self._row + self._filled == self.grid.height:
                self._flush()

    @property
    def rows_written(self) -> int:
        """Rows received so far."""
        return self._row + self._filled

    def finish(self, dst: Path) -> None:
        """Close the intermediate and write it to `dst` as a COG. All rows must have been written."""
        if self.rows_written != self.grid.height:
            raise ValueError(f"{self.rows_written} of {self.grid.height} rows written")
        self._dst.close()
        # The conversion should not stack on top of the strip buffers.
        self._buf = None
        defaults = {
            "COMPRESS": "DEFLATE",
            "BLOCKSIZE": str(BLOCK),
            "OVERVIEW_RESAMPLING": self.overview_resampling.upper(),
            "BIGTIFF": "IF_SAFER",
        }
        options = {**defaults, **self.creation_options}
        _interruptible(lambda: rasterio.shutil.copy(self._dst.name, dst, driver="COG", **options))

    def close(self) -> None:
        """Close the intermediate without converting it (after an error). Its failure is not raised: the
        intermediate is thrown away, and on a full disk a second "write failed" would hide the first error."""
        with contextlib.suppress(*io_error_types()):
            self._dst.close()

    def _flush(self) -> None:
        n = self._filled
        window = ((self._row, self._row + n), (0, self.grid.width))
        self._dst.write(self._buf[:, :n], window=window)
        self._row += n
        self._filled = 0


def _interruptible(work: Callable[[], None], poll_s: float = 0.1) -> None:
    """Run `work` (one long GDAL call, which releases the GIL) in a helper thread and wait for it in short
    joins, so a stop signal is handled at once in the main thread instead of after the call (a 7-band COG of a
    10980-px scene took 77 s to convert on a busy 2-core machine, during which SIGINT waited). Its exception,
    if any, is raised here. If the wait itself is interrupted, the thread finishes in the background while the
    caller unwinds; its output is a temporary the caller removes (or a later run does, see `mdseg.io.atomic`).
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="mdseg-gdal", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
    if failure:
        raise failure[0]


@functools.cache
def _mute_libtiff_global_errors() -> None:
    """Mute libtiff's global error handler, once per process.

    A write failure of GDAL's file layer ("_tiffWriteProc: No space left on device.") is reported through
    libtiff's global handler, which GDAL (built on libtiff ≥ 4.5, with per-file handlers) leaves at libtiff's
    default: a line printed straight to stderr, beside the `OutputError` mdseg raises for the same failure. GDAL's
    per-file errors, and so every exception rasterio raises, are unaffected. Linux only (the loaded libtiff is
    found in /proc/self/maps); elsewhere nothing changes.
    """
    for path in _loaded_libraries("libtiff"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(path).TIFFSetErrorHandler(None)


def _loaded_libraries(prefix: str) -> list[str]:
    """Paths of the shared libraries loaded in this process whose file name starts with `prefix` (Linux: from
    /proc/self/maps; elsewhere none)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    libraries = {fields[5] for line in maps.splitlines() if len(fields := line.split(maxsplit=5)) == 6}
    return sorted(p for p in libraries if Path(p).name.startswith(prefix))


@functools.cache
def cog_option_names() -> dict[str, tuple[str, ...]] | None:
    """The creation options the COG driver of rasterio's GDAL takes (its DMD_CREATIONOPTIONLIST), each with the
    values it allows (upper case; empty when any value goes), or None where that GDAL cannot be asked (not Linux):
    GDAL then warns about an unknown option itself."""
    # Other wheels (pyogrio) may bring their own GDAL, built with other codecs: rasterio's is the one that writes.
    loaded = _loaded_libraries("libgdal")
    wheels = [p for p in loaded if Path(p).parent.name.endswith(".libs")]
    ours = [p for p in wheels if Path(p).parent.name == "rasterio.libs"] or [p for p in loaded if p not in wheels]
    for path in ours:
        with contextlib.suppress(OSError, AttributeError, ET.ParseError), rasterio.Env():
            gdal = ctypes.CDLL(path)
            gdal.GDALGetDriverByName.restype = ctypes.c_void_p
            gdal.GDALGetDriverByName.argtypes = [ctypes.c_char_p]
            gdal.GDALGetMetadataItem.restype = ctypes.c_char_p
            gdal.GDALGetMetadataItem.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
            driver = gdal.GDALGetDriverByName(b"COG")
            text = gdal.GDALGetMetadataItem(driver, b"DMD_CREATIONOPTIONLIST", None) if driver else None
            if text:
                return {
                    o.get("name", "").upper(): tuple((v.text or "").upper() for v in o.iter("Value"))
                    for o in ET.fromstring(text).iter("Option")
                }
    return None


def creation_options(pairs: Sequence[str]) -> dict[str, str]:
    """COG creation options from `KEY=VALUE` strings (as `--co` takes them; keys upper-cased), or `OptionError`
    for one that is not KEY=VALUE, that the COG driver does not know (name, or value of an option with a fixed set
    of values), or that would move the raster off its grid."""
    known = cog_option_names()
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().upper()
        if not sep or not key or not value:
            raise OptionError(f"--co takes KEY=VALUE (e.g. COMPRESS=ZSTD), not {pair!r}.")
        if known is not None and key not in known:
            takes = ", ".join(sorted(set(known) - GRID_OPTIONS))
            raise OptionError(f"--co {key}: GDAL's COG driver has no such option; it takes {takes}.")
        if key in GRID_OPTIONS:
            raise OptionError(f"--co {key} would change the raster's grid or bands; outputs stay on the optical grid.")
        allowed = known[key] if known is not None else ()
        if allowed and value.strip().upper() not in allowed:
            raise OptionError(f"--co {key}={value}: GDAL's COG driver takes {key} one of {', '.join(allowed)}.")
        options[key] = value
    return options


def class_colormap(palette: Sequence[Sequence[int]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table from an (r, g, b) palette (0–255), class i → palette[i]; nodata 255 transparent."""
    table = {i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(palette)}
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


def class_tags(classes: Sequence[str]) -> dict[str, str]:
    """Band-1 metadata naming each class value: CLASS_0=…, and the whole list as JSON in CLASS_NAMES."""
    tags = {f"CLASS_{i}": name for i, name in enumerate(classes)}
    tags["CLASS_NAMES"] = json.dumps(list(classes))
    return tags


def class_names_from_tags(src: rasterio.io.DatasetReaderBase) -> list[str] | None:
    """Class names from band 1's `CLASS_NAMES` tag (a JSON list, as `class_tags` writes it), else None."""
    text = src.tags(1).get("CLASS_NAMES")
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not names:
        return None
    return [str(n) for n in names]


def class_aux_xml(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> str:
    """GDAL PAM sidecar (`<raster>.aux.xml`) with category names and a thematic raster attribute table.

    GeoTIFF cannot hold a RAT itself; GDAL and QGIS read it from this sidecar (QGIS shows it in the layer's
    attribute table and uses it for the paletted legend). Columns: Value, Class (name), Red, Green, Blue.
    """
    # GDAL RAT field types: 0 integer, 2 string; usages: 0 generic, 2 name, 5 min-max, 6/7/8 red/green/blue.
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">', "    <CategoryNames>"]
    names = {i: name for i, name in enumerate(classes)}
    lines += [f"      <Category>{escape(names.get(v, ''))}</Category>" for v in range(len(classes))]
    lines += ["    </CategoryNames>", '    <GDALRasterAttributeTable tableType="thematic">']
    for i, (name, ftype, usage) in enumerate(fields):
        lines.append(
            f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{ftype}</Type><Usage>{usage}</Usage></FieldDefn>'
        )
    for v, name in enumerate(classes):
        r, g, b = (int(x) for x in palette[v][:3])
        cells = "".join(f"<F>{x}</F>" for x in (v, escape(name), r, g, b))
        lines.append(f'      <Row index="{v}">{cells}</Row>')
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)
