"""Quick-look pictures: optical, SAR, prediction (and label) side by side in one PNG, read decimated.

Reading (`read_quicklook`, in `panels`, on the display-resolution reads of `read`) and drawing
(`render_quicklook`, in `render`) are separate; `quicklook` does both. Matplotlib draws through its Agg canvas
only (no display, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mdseg.geo.sar import SarScale
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.paths import check_outputs
from mdseg.quicklook.panels import LegendEntry, Panel, QuickLook, read_quicklook
from mdseg.quicklook.read import ClassStyle, display_grid, stretch, true_colour_bands
from mdseg.quicklook.render import MARGIN_PX, PANEL_PX, picture_format, render_quicklook

__all__ = [
    "MARGIN_PX",
    "PANEL_PX",
    "ClassStyle",
    "LegendEntry",
    "Panel",
    "QuickLook",
    "check_output",
    "display_grid",
    "quicklook",
    "read_quicklook",
    "render_quicklook",
    "stretch",
    "true_colour_bands",
]


def quicklook(
    opt: str | Path,
    sar: str | Path,
    pred: str | Path,
    out: str | Path,
    *,
    label: str | Path | None = None,
    rgb_bands: Sequence[int] | None = None,
    opt_band_names: Mapping[int, str] | None = None,
    sar_band: int = 1,
    sar_band_name: str | None = None,
    sar_scale: SarScale = "auto",
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write a quick-look picture of a scene to `out` (PNG, or any format matplotlib writes, by extension).

    Panels, side by side: optical true colour, SAR in dB, the prediction in its palette and, when given, the
    label; a legend of the classes present with their share of the mapped pixels, a scale bar and the pixel
    size. Rasters are read decimated so the longest side is at most `max_size` px; `pred` and `label` must be
    on the optical grid, SAR may be on any grid (it is warped onto the optical one). The write is atomic;
    an existing `out` is refused unless `overwrite`, and one that is one of the rasters (or a GDAL sidecar of
    one) always is. See `read_quicklook` for the other arguments.

    Raises `InputFileError` (missing or unreadable raster), `GeoreferenceError` (grids), `BandSelectionError`
    and `OptionError` (bands, sizes), `OutputError` / `OutputExistsError` (where `out` cannot go).
    """
    out = Path(out)
    fmt = picture_format(out)
    check_output(out, overwrite, opt=opt, sar=sar, pred=pred, label=label)
    with AtomicOutputs(overwrite) as outputs:
        tmp = outputs.reserve(out)
        look = read_quicklook(
            opt,
            sar,
            pred,
            label=label,
            rgb_bands=rgb_bands,
            opt_band_names=opt_band_names,
            sar_band=sar_band,
            sar_band_name=sar_band_name,
            sar_scale=sar_scale,
            max_size=max_size,
        )
        render_quicklook(look, tmp, fmt)
    return out


def check_output(
    out: str | Path,
    overwrite: bool = False,
    *,
    opt: str | Path | None = None,
    sar: str | Path | None = None,
    pred: str | Path | None = None,
    label: str | Path | None = None,
) -> None:
    """Raise now the errors `quicklook` would raise for `out` (format, missing folder, existing file, the same
    file as one of the rasters given), so a long run that ends in a quick-look can refuse before it starts.
    Creates nothing."""
    picture_format(Path(out))
    inputs = {"the optical input": opt, "the SAR input": sar, "the map": pred, "the label": label}
    check_outputs({"the picture": out}, inputs)
    AtomicOutputs(overwrite).check(out)
