"""Windowed reads of one dataset sample: optical, SAR (in dB) and label, never more than the window asked for."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from mdseg.data.classes import IGNORE, ClassScheme
from mdseg.data.layout import DatasetLayout, SampleFiles
from mdseg.geo.sar import SarScale, SarScaling, decide_sar_scale, linear_to_db
from mdseg.io.raster import open_raster, read_bands, sample_values


def decide_dataset_sar_scale(layout: DatasetLayout, mode: SarScale = "auto") -> SarScaling:
    """The SAR scale of a dataset, decided once from a decimated read of its first sample's SAR bands.

    Datasets are taken to be consistent; WHU-OPT-SAR's 8-bit SAR and Hunan's dB values both come out "db"
    (used as they are).
    """
    if mode != "auto":
        return decide_sar_scale(np.empty(0, dtype=np.float32), mode)
    with open_raster(layout.samples[0].sar, "SAR") as src:
        sample = sample_values(src, layout.sar_bands)
    return decide_sar_scale(sample, "auto")


@dataclass
class SampleWindow:
    """What one windowed read gives: optical (Co, h, w) float32, SAR (Cs, h, w) float32 in the model's scale,
    label (h, w) int64 class indices with `IGNORE` where unlabelled, and validity (h, w) bool (every band of
    both modalities valid). Values at invalid pixels are unspecified."""

    opt: np.ndarray
    sar: np.ndarray
    label: np.ndarray
    valid: np.ndarray


def read_window(
    sample: SampleFiles, layout: DatasetLayout, window: Window, sar_scaling: SarScaling, classes: ClassScheme
) -> SampleWindow:
    """Read `window` (pixels, inside the sample) of one sample's three rasters; labels are mapped to classes and
    set to `IGNORE` where any input band is invalid."""
    with ExitStack() as stack:
        opt_src = stack.enter_context(open_raster(sample.opt, "Optical"))
        opt, opt_ok = read_bands(opt_src, layout.opt_bands, window)
        sar_src = opt_src if sample.sar == sample.opt else stack.enter_context(open_raster(sample.sar, "SAR"))
        sar, sar_ok = read_bands(sar_src, layout.sar_bands, window)
        lab_src = stack.enter_context(open_raster(sample.label, "Label"))
        raw, lab_ok = read_bands(lab_src, [1], window)
    valid = opt_ok.all(axis=0) & sar_ok.all(axis=0)
    label = classes.encode(np.where(lab_ok[0], raw[0], -1))
    label[~valid] = IGNORE
    if sar_scaling.converts:
        sar = linear_to_db(sar)
    return SampleWindow(opt=opt, sar=sar, label=label, valid=valid)
