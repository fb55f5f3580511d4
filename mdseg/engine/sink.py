"""The write side of scene prediction: blended blocks → class map, probabilities and confidence bytes, streamed to
COGs a full-width row band at a time, with the class table (pixels and area per class) counted on the way.

A write that fails (no space left, a read-only file system, permission denied) is an `OutputError` naming the
output the user asked for and the cause."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import numpy as np
import rasterio

import mdseg
from mdseg.geo.blend import BlendedBlock
from mdseg.geo.grid import Grid, pixel_areas_m2
from mdseg.geo.style import gradient_qml, paletted_qml
from mdseg.geo.writer import CLASS_NODATA, StreamingCOG, class_aux_xml, class_colormap, class_tags
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.failures import writing

# Probabilities and confidence: byte b means the fraction b × FRACTION_SCALE (254 → 1); FRACTION_NODATA: none.
FRACTION_NODATA = 255
FRACTION_SCALE = 1 / 254
# What each output is called in error messages.
OUTPUT_NAMES = {
    "map": "land-cover map",
    "probabilities": "probability raster",
    "confidence": "confidence raster",
    "aux": "class table sidecar",
    "map_style": "map style",
    "probabilities_style": "probability style",
    "confidence_style": "confidence style",
}


class MapSink:
    """Turns blended blocks into output bytes, gathers them into full-width row bands, streams those to disk.

    A band is the rows one tile row finishes (at most a tile high); its blocks arrive left to right, and the
    band goes to the writers when its last block is in. Only uint8 bands are full width, so the sink's memory is
    (output bands) × tile height × scene width bytes.

    Probabilities and confidence are bytes 0–254 for fractions 0–1 (`FRACTION_SCALE` = 1/254, stored as the bands'
    GDAL scale, offset 0, so readers applying it get fractions; 254 is exactly 1) and `FRACTION_NODATA` (255)
    outside the prediction's region: nodata, not an internal mask, so GDAL's statistics and QGIS see one band per
    value and no mask band.

    `tmp` maps each output ("map", "aux", and "probabilities" / "confidence" when asked for; "<output>_style" for
    the QGIS styles to write beside them) to the path written;
    `targets` to the path errors name (the user's, when `tmp` holds temporaries beside them; default `tmp`; the
    map's sidecar by default `<map>.aux.xml`). `creation_options`: GDAL COG creation options for every raster.
    """

    def __init__(
        self,
        grid: Grid,
        window: rasterio.windows.Window,
        band_rows: int,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        samples: int,
        outputs: AtomicOutputs,
        open_files: ExitStack,
        tmp: dict[str, Path],
        *,
        targets: Mapping[str, str | Path] | None = None,
        creation_options: Mapping[str, str] | None = None,
    ) -> None:
        self.grid, self.window, self.classes, self.palette, self.tmp = grid, window, classes, palette, tmp
        self.targets = {name: Path(path) for name, path in {**tmp, **(targets or {})}.items()}
        if targets and "map" in targets and "aux" not in targets:  # GDAL's sidecar of the map
            self.targets["aux"] = self.targets["map"].with_name(self.targets["map"].name + ".aux.xml")
        self.k = len(classes)
        self.row0, self.col0 = int(window.row_off), int(window.col_off)
        self.pixels = np.zeros(256, dtype=np.int64)
        self.area_m2 = np.zeros(256, dtype=np.float64)
        self.writers: dict[str, StreamingCOG] = {}
        self.bands: dict[str, np.ndarray] = {}
        self.band_rows = band_rows
        # Columns outside the region keep their fill (nodata) in every band.

        def open_writer(name: str, count: int, fill: int, **kwargs: object) -> None:
            with self._writing(name):
                scratch = outputs.scratch(tmp[name])
                writer = StreamingCOG(scratch, grid, count, creation_options=creation_options, **kwargs)
            open_files.callback(writer.close)
            self.writers[name] = writer
            self.bands[name] = np.full((count, band_rows, grid.width), fill, dtype=np.uint8)

        open_writer(
            "map",
            1,
            CLASS_NODATA,
            nodata=CLASS_NODATA,
            colormap=class_colormap(palette),
            descriptions=["land cover class"],
            tags={"MDSEG_VERSION": mdseg.__version__},
            band_tags={1: class_tags(classes)},
        )
        fractions = {"nodata": FRACTION_NODATA, "scale": FRACTION_SCALE, "overview_resampling": "average"}
        if "probabilities" in tmp:
            open_writer("probabilities", self.k, FRACTION_NODATA, descriptions=list(classes), **fractions)
        if "confidence" in tmp:
            names = ["max probability"] + (["sample disagreement"] if samples > 1 else [])
            open_writer("confidence", len(names), FRACTION_NODATA, descriptions=names, **fractions)

    def write(self, block: BlendedBlock) -> None:
        """Put a blended block into its band; write the band (after any all-nodata rows above it) once complete."""
        n, m = block.covered.shape
        cols = slice(self.col0 + block.col, self.col0 + block.col + m)
        probs = block.values[: self.k]
        cls = np.where(block.covered, probs.argmax(axis=0), CLASS_NODATA).astype(np.uint8)
        self._count(cls, self.row0 + block.row)
        self.bands["map"][0, :n, cols] = cls
        if "probabilities" in self.bands:
            self.bands["probabilities"][:, :n, cols] = _to_byte(probs, block.covered)
        if "confidence" in self.bands:
            self.bands["confidence"][0, :n, cols] = _to_byte(probs.max(axis=0), block.covered)
            if self.writers["confidence"].count > 1:
                self.bands["confidence"][1, :n, cols] = _to_byte(block.values[self.k], block.covered)
        if block.col + m == int(self.window.width):
            self._fill_to(self.row0 + block.row)
            for name, writer in self.writers.items():
                with self._writing(name):
                    writer.write(self.bands[name][:, :n])

    def finish(self) -> None:
        """Fill rows below the region with nodata and convert every raster to a COG; write the map's RAT."""
        self._fill_to(self.grid.height)
        # The conversion should not stack on top of the row bands.
        self.bands.clear()
        for name, writer in self.writers.items():
            with self._writing(name):
                writer.finish(self.tmp[name])
        with self._writing("aux"):
            self.tmp["aux"].write_text(class_aux_xml(self.classes, self.palette))
        for name in self.writers:
            if f"{name}_style" in self.tmp:
                qml = paletted_qml(self.classes, self.palette) if name == "map" else gradient_qml()
                with self._writing(f"{name}_style"):
                    self.tmp[f"{name}_style"].write_text(qml)

    def class_table(self) -> list[dict]:
        """Per class: id, name, pixels, area (km²), percent of classified pixels."""
        total = int(self.pixels[: self.k].sum())
        return [
            {
                "class_id": i,
                "name": name,
                "pixels": int(self.pixels[i]),
                "area_km2": round(float(self.area_m2[i]) / 1e6, 6),
                "percent": round(100.0 * int(self.pixels[i]) / total, 4) if total else 0.0,
            }
            for i, name in enumerate(self.classes)
        ]

    def _count(self, cls: np.ndarray, row0: int) -> None:
        areas = pixel_areas_m2(self.grid, row0, cls.shape[0])
        self.pixels += np.bincount(cls.ravel(), minlength=256)
        self.area_m2 += np.bincount(cls.ravel(), weights=np.repeat(areas, cls.shape[1]), minlength=256)

    def _fill_to(self, row: int) -> None:
        """Write all-nodata rows until raster row `row`, a band's height at a time (the writers gather blocks)."""
        while (done := self.writers["map"].rows_written) < row:
            n = min(row - done, self.band_rows)
            for name, writer in self.writers.items():
                fill = CLASS_NODATA if name == "map" else FRACTION_NODATA
                values = np.full((writer.count, n, self.grid.width), fill, dtype=np.uint8)
                with self._writing(name):
                    writer.write(values)

    def _writing(self, name: str) -> AbstractContextManager[None]:
        """A failed write of output `name` as an `OutputError` naming its target."""
        return writing(self.targets[name], OUTPUT_NAMES[name])


def _to_byte(p: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fractions in [0, 1] (…, n, m) → uint8 0–254 (`FRACTION_SCALE`), `FRACTION_NODATA` where not `covered`."""
    byte = np.clip(np.rint(p / FRACTION_SCALE), 0, FRACTION_NODATA - 1).astype(np.uint8)
    byte[..., ~covered] = FRACTION_NODATA
    return byte
