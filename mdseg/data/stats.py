"""Per-band mean and standard deviation of a dataset split, streamed block by block and nodata-aware."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdseg.data.layout import DatasetLayout, find_dataset
from mdseg.data.normalise import Normalisation
from mdseg.data.reader import decide_dataset_sar_scale
from mdseg.geo.sar import SarScale, SarScaling, linear_to_db
from mdseg.io.raster import CHUNK, chunk_windows, open_raster, read_bands


class RunningMoments:
    """Count, mean and sum of squared deviations per band in float64, merged block by block (Chan et al.'s
    pairwise update, which stays accurate where sum / sum-of-squares would cancel)."""

    def __init__(self, bands: int) -> None:
        self.count = np.zeros(bands, dtype=np.int64)
        self.mean = np.zeros(bands, dtype=np.float64)
        self.m2 = np.zeros(bands, dtype=np.float64)

    def add(self, band: int, values: np.ndarray) -> None:
        """Merge the 1-D `values` of `band` in."""
        n_b = values.size
        if n_b == 0:
            return
        values = values.astype(np.float64, copy=False)
        mean_b = values.mean()
        m2_b = np.square(values - mean_b).sum()
        n_a = self.count[band]
        total = n_a + n_b
        delta = mean_b - self.mean[band]
        self.mean[band] += delta * n_b / total
        self.m2[band] += m2_b + delta * delta * n_a * n_b / total
        self.count[band] = total

    def variance(self) -> np.ndarray:
        """Population variance per band (NaN where no valid pixel was seen)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), np.nan)


@dataclass(frozen=True)
class BandStats:
    """One band's statistics over the valid pixels of a split, in read units (SAR in dB)."""

    modality: str  # "optical" or "sar"
    band: int  # 1-based band number in its file
    name: str
    count: int  # valid pixels
    skipped: int  # nodata / NaN / masked pixels
    mean: float
    std: float  # population standard deviation
    var: float  # its square (the authors' normalisation constants look like these)


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of every band of a split, optical bands first, and what was measured."""

    bands: tuple[BandStats, ...]
    provenance: dict
    sar_scaling: SarScaling

    def normalisation(self) -> Normalisation:
        """Mean / std per band as a `Normalisation` (true standard deviations)."""
        opt = [b for b in self.bands if b.modality == "optical"]
        sar = [b for b in self.bands if b.modality == "sar"]
        return Normalisation(
            opt_mean=[b.mean for b in opt],
            opt_std=[b.std for b in opt],
            sar_mean=[b.mean for b in sar],
            sar_std=[b.std for b in sar],
        )

    def to_dict(self) -> dict:
        """JSON-ready form: the bands, a ready-to-use normalisation, the SAR scale and the data's provenance."""
        norm = self.normalisation().to_dict()
        return {
            "bands": [{k: _json_number(v) for k, v in vars(b).items()} for b in self.bands],
            "normalisation": {key: [_json_number(v) for v in values] for key, values in norm.items()},
            "sar_scale": self.sar_scaling.as_dict(),
            "data": self.provenance,
        }


def _json_number(value: object) -> object:
    """NaN (a band without valid pixels) as None, which JSON can hold; anything else unchanged."""
    return None if isinstance(value, float) and np.isnan(value) else value


def band_stats(
    data: DatasetLayout | str | Path,
    split: str | None = None,
    *,
    opt_bands: Sequence[int] | None = None,
    sar_bands: Sequence[int] | None = None,
    sar_scale: SarScale = "auto",
    chunk: int = CHUNK,
) -> DatasetStats:
    """Mean and std of every optical and SAR band over a split, reading at most `chunk`² pixels at a time.

    `data`: a layout from `find_dataset`, or a dataset folder (then `split`, `opt_bands`, `sar_bands` are passed
    to `find_dataset`). A band's nodata, NaN and masked pixels are left out of that band's statistics. SAR in
    linear power (per `sar_scale`, decided as the dataset reader decides it) is measured in dB.
    """
    layout = (
        data if isinstance(data, DatasetLayout) else find_dataset(data, split, opt_bands=opt_bands, sar_bands=sar_bands)
    )
    scaling = decide_dataset_sar_scale(layout, sar_scale)
    roles = (("optical", layout.opt_bands, layout.opt_band_names), ("sar", layout.sar_bands, layout.sar_band_names))
    out: list[BandStats] = []
    for modality, bands, names in roles:
        moments = RunningMoments(len(bands))
        skipped = np.zeros(len(bands), dtype=np.int64)
        for sample in layout.samples:
            path = sample.opt if modality == "optical" else sample.sar
            with open_raster(path, modality.capitalize() if modality == "optical" else "SAR") as src:
                for window in chunk_windows(src.height, src.width, chunk):
                    values, valid = read_bands(src, bands, window)
                    if modality == "sar" and scaling.converts:
                        values = linear_to_db(values)
                    for k in range(len(bands)):
                        moments.add(k, values[k][valid[k]])
                        skipped[k] += int(valid[k].size - valid[k].sum())
        var = moments.variance()
        mean = np.where(moments.count > 0, moments.mean, np.nan)
        out += [
            BandStats(
                modality,
                int(b),
                str(n),
                int(moments.count[k]),
                int(skipped[k]),
                float(mean[k]),
                float(np.sqrt(var[k])),
                float(var[k]),
            )
            for k, (b, n) in enumerate(zip(bands, names, strict=True))
        ]
    return DatasetStats(bands=tuple(out), provenance=layout.provenance(), sar_scaling=scaling)
