"""Drawing a quick-look with matplotlib, through its Agg canvas only (no display, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from mdseg.errors import OutputError
from mdseg.io.failures import writing
from mdseg.quicklook.panels import NODATA_COLOUR, NODATA_HATCH, QuickLook, length_text

# Picture geometry: each panel is PANEL_PX wide (narrower for scenes taller than MAX_ASPECT), plus MARGIN_PX,
# so three panels make a 1600 px wide PNG and four 2100 px.
PANEL_PX = 500
MARGIN_PX = 100
MAX_ASPECT = 1.6
DPI = 100


def render_quicklook(look: QuickLook, path: str | Path, fmt: str = "png", *, target: str | Path | None = None) -> None:
    """Draw `look` and save it to `path` in `fmt`: panels side by side (titles, no ticks), a scale bar on the
    first, the legend below, the caption on top; `PANEL_PX` per panel at `DPI`.

    A failed write (no space left, read-only file system, permission denied) is an `OutputError` naming
    `target`, the user's path when `path` is a temporary beside it; without it, the folder of `path`."""
    n = len(look.panels)
    h, w = look.panels[0].rgba.shape[:2]
    box_w = min(PANEL_PX, PANEL_PX * MAX_ASPECT * w / h)
    columns = max(1, min(len(look.legend), int((n * box_w + MARGIN_PX) // 270)))
    rows = math.ceil(len(look.legend) / columns) if look.legend else 0
    # Room above the panels for the caption and two-line titles, below for the legend.
    height = box_w * h / w + 110 + (45 + 24 * rows if rows else 0)
    fig = Figure(figsize=((n * box_w + MARGIN_PX) / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(look.caption, fontsize=11)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, look.panels, strict=True):
        ax.patch.set(facecolor=NODATA_COLOUR, hatch=NODATA_HATCH[0], hatchcolor=NODATA_HATCH[1])
        ax.imshow(panel.rgba, interpolation="nearest" if panel.classes else "antialiased")
        ax.set_title(panel.title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    if look.metres_per_px is not None:
        metres = _nice_length(0.25 * w * look.metres_per_px)
        bar = AnchoredSizeBar(
            axes[0].transData,
            metres / look.metres_per_px,
            length_text(metres),
            loc="lower left",
            pad=0.4,
            sep=3,
            frameon=True,
            size_vertical=max(1.0, h / 150),
        )
        bar.patch.set_alpha(0.75)
        axes[0].add_artist(bar)
    if look.legend:
        hatch = {"hatch": NODATA_HATCH[0], "hatchcolor": NODATA_HATCH[1]}
        handles = [
            Patch(facecolor=e.colour, edgecolor="0.35", label=e.text, **(hatch if e.hatched else {}))
            for e in look.legend
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False, fontsize=11)
    if target is not None:
        failure = writing(target, "quick-look picture", written=path)
    else:
        failure = writing(Path(path).parent, "a quick-look picture into")
    with failure:
        fig.savefig(path, format=fmt, dpi=DPI, facecolor="white")


def picture_format(out: Path) -> str:
    """The picture format of `out` from its extension; `OutputError` when matplotlib does not write it."""
    fmt = out.suffix.lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(
            f"Quick-look '{out}' needs a picture extension matplotlib writes (.png, .jpg, .pdf, .svg, …); "
            f"got '{out.suffix or 'none'}'."
        )
    return fmt


def _nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 × 10^k metres not above `metres`."""
    power = 10.0 ** math.floor(math.log10(metres))
    return max(step * power for step in (1, 2, 5) if step * power <= metres)
