"""`mdseg quicklook`: optical, SAR, the map and the label side by side in one picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdseg.cli import options as opt_
from mdseg.cli.console import console


def quicklook_(
    opt: Annotated[opt_.InputRaster, opt_.input_raster("--opt", "Optical raster; the picture's grid.")],
    sar: Annotated[opt_.InputRaster, opt_.input_raster("--sar", "SAR raster (any grid; warped onto the optical one).")],
    pred: Annotated[
        opt_.InputRaster, opt_.input_raster("--pred", "Land-cover map on the optical grid (e.g. from predict).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Picture to write (.png; .jpg, .pdf, .svg also work).")],
    label: Annotated[
        opt_.InputRaster | None, opt_.input_raster("--label", "Also show a label raster on the optical grid.")
    ] = None,
    rgb: Annotated[
        str | None,
        typer.Option(
            "--rgb",
            help="Optical bands shown as R,G,B, 1-based, e.g. 4,3,2. Default: from band descriptions, else 1,2,3.",
        ),
    ] = None,
    max_size: Annotated[
        int, typer.Option("--max-size", min=16, help="Longest side read from each raster, in px (decimated).")
    ] = 1024,
    overwrite: opt_.Overwrite = False,
) -> None:
    """Draw optical true colour, SAR (dB), the prediction with a class legend and the label side by side."""
    from mdseg.quicklook import quicklook

    path = quicklook(
        opt,
        sar,
        pred,
        out,
        label=label,
        rgb_bands=opt_.parse_bands(rgb, "--rgb"),
        max_size=max_size,
        overwrite=overwrite,
    )
    console.print(f"wrote quick-look: {path}", highlight=False)
