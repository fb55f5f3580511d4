"""Options several commands share, declared once so every command spells and parses them the same way.

Each is an `Annotated` type: a command declares `tile: Tile = None`. Values arrive parsed: band lists as tuples
of 1-based ints, choices as plain strings. Per-command wording (e.g. eval's "Dataset mode:" notes) lives in
the command's docstring, not in a second declaration of the option.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer


class SarScaleChoice(str, Enum):
    auto = "auto"
    db = "db"
    linear = "linear"


class AlignChoice(str, Enum):
    reproject = "reproject"
    strict = "strict"


class AmpChoice(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


def parse_bands(text: str | None, option: str) -> tuple[int, ...] | None:
    """'1,2,3,4' → (1, 2, 3, 4); None stays None (all bands)."""
    if text is None:
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"expected 1-based band numbers separated by commas, e.g. 1,2,3; got {text!r}", param_hint=option
        ) from None
    if any(b < 1 for b in bands):
        raise typer.BadParameter(f"band numbers start at 1; got {text!r}", param_hint=option)
    return bands


# A raster input: any dataset name GDAL opens, kept as typed (a Path would turn 'https://h/x.tif' into
# 'https:/h/x.tif'). A local file's existence and readability are checked when it is opened (`open_raster`), with
# the same words for every command; a URL or /vsi… name is checked by opening it.
InputRaster = str
RASTER_NAMES = "A path, URL (https://, s3://, …) or GDAL /vsi… name."


def input_raster(flag: str, help: str) -> Any:
    """The declaration of a raster input option `flag`: a string (`InputRaster`), RASTER in --help, the names it
    takes said after `help`. Use as `opt: Annotated[InputRaster | None, input_raster("--opt", "Optical …")]`."""
    return typer.Option(flag, help=f"{help} {RASTER_NAMES}", metavar="RASTER", callback=_raster_name)


def _raster_name(param: typer.CallbackParam, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("expected a raster path or URL; got an empty name", param_hint=param.opts[0])
    return value


def _bands(param: typer.CallbackParam, value: str | None) -> tuple[int, ...] | None:
    return parse_bands(value, param.opts[0])


def _choice(value: Enum | None) -> str | None:
    """A choice as its plain string (what the library and the run records take)."""
    return None if value is None else value.value


OptBands = Annotated[
    str | None,
    typer.Option(
        "--opt-bands",
        help="Optical bands, 1-based, in the checkpoint's order, e.g. 1,2,3,4. Default: all (dataset: its own).",
        callback=_bands,
    ),
]
SarBands = Annotated[
    str | None,
    typer.Option("--sar-bands", help="SAR bands, 1-based, e.g. 1. Default: all (dataset: its own).", callback=_bands),
]
SarScale = Annotated[
    SarScaleChoice | None,
    typer.Option(
        "--sar-scale",
        help="SAR values are: auto (detect linear power and convert to dB), db, or linear. Default: auto.",
        callback=_choice,
    ),
]
Align = Annotated[
    AlignChoice,
    typer.Option(
        "--align", help="SAR on another grid: reproject onto the optical grid (bilinear), or strict (refuse).",
        callback=_choice,
    ),
]  # fmt: skip
Steps = Annotated[
    int | None, typer.Option("--steps", min=1, help="DDIM sampling steps. Default: the checkpoint's (usually 3).")
]
Seed = Annotated[int | None, typer.Option("--seed", min=0, help="Seed: same inputs + seed → identical result [0].")]
Tile = Annotated[
    int | None,
    typer.Option(
        "--tile",
        min=32,
        help="Tile size in px. Default: twice the checkpoint's training tile at its inference scale, plus the "
        "overlap (544 for the demo weights, 288 for the authors' release).",
    ),
]
Overlap = Annotated[
    int | None,
    typer.Option("--overlap", min=0, help="Minimum tile overlap in px. Default: 32, or tile/4 if smaller."),
]
TileBatch = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Tiles per model call (does not change the result) [8].")
]
Device = Annotated[
    str | None, typer.Option("--device", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N.")
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads for torch and the scan kernels. Default: torch's choice."),
]
Amp = Annotated[
    AmpChoice | None,
    typer.Option(
        "--amp",
        help="Mixed precision on CUDA: off (float32), bf16 or fp16 autocast; the scan keeps float32 state. "
        "CPU: off only. Default: off.",
        callback=_choice,
    ),
]
Checkpoint = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="mdseg checkpoint (.safetensors). Default: see the command's help."),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar, messages or summary table.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
DataDir = Annotated[
    Path | None, typer.Option("--data", help="Dataset folder (WHU-OPT-SAR, Hunan, stacked tiles or generic).")
]
Split = Annotated[str | None, typer.Option("--split", help="Split folder or list file (see the command's help).")]
