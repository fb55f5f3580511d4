"""Per-band statistics of a dataset split, nodata-aware: mean and standard deviation streamed block by block (or
from one decimated read per file), value range and dtype, and percentiles of a bounded sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mdseg.data.layout import DatasetLayout, find_dataset
from mdseg.data.normalise import Normalisation
from mdseg.data.reader import decide_dataset_sar_scale
from mdseg.geo.sar import SarScale, SarScaling, linear_to_db
from mdseg.io.raster import CHUNK, Readable, chunk_windows, open_raster, read_bands

# Values per band kept over a whole split for its percentiles, shared evenly among the files (each file's pixels
# taken on a regular grid), so memory does not grow with the dataset.
PERCENTILE_SAMPLE = 1 << 20


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
    dtype: str  # the files' data type ("uint8", "uint16", "float32", …)
    min: float  # smallest and largest valid value (SAR in dB)
    max: float
    p1: float  # 1st, 50th and 99th percentiles of a regular sample of the valid values (`PERCENTILE_SAMPLE`)
    p50: float
    p99: float

    def to_dict(self) -> dict:
        """JSON-ready form (NaN, a band without valid pixels, as None)."""
        return {k: _json_number(v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> BandStats:
        """Rebuild from `to_dict()` output; KeyError / TypeError / ValueError when a field is missing or wrong."""
        types = {"modality": str, "band": int, "name": str, "count": int, "skipped": int, "dtype": str}
        return cls(**{f.name: _from_json(data[f.name], types.get(f.name, float)) for f in fields(cls)})


@dataclass(frozen=True)
class InputStats:
    """What a model's training inputs looked like: one `BandStats` per band in the model's order, optical bands
    first, SAR in dB as the model reads it. Measured on the training split by `mdseg train` and stored in its
    checkpoints (`CheckpointMeta.input_stats`), so predict can tell a scene unlike them."""

    bands: tuple[BandStats, ...]

    def of(self, modality: str) -> tuple[BandStats, ...]:
        """The bands of one modality ("optical" or "sar"), in the model's order."""
        return tuple(b for b in self.bands if b.modality == modality)

    def to_dict(self) -> dict:
        """JSON-ready form: `{"bands": [BandStats.to_dict(), …]}`."""
        return {"bands": [b.to_dict() for b in self.bands]}

    @classmethod
    def from_dict(cls, data: Mapping) -> InputStats:
        """Rebuild from `to_dict()` output; KeyError / TypeError / ValueError when a field is missing or wrong."""
        return cls(tuple(BandStats.from_dict(b) for b in data["bands"]))


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

    def input_stats(self) -> InputStats:
        """The bands' statistics as a checkpoint stores them (without the data's provenance)."""
        return InputStats(self.bands)

    def to_dict(self) -> dict:
        """JSON-ready form: the bands, a ready-to-use normalisation, the SAR scale and the data's provenance."""
        norm = self.normalisation().to_dict()
        return {
            "bands": [b.to_dict() for b in self.bands],
            "normalisation": {key: [_json_number(v) for v in values] for key, values in norm.items()},
            "sar_scale": self.sar_scaling.as_dict(),
            "data": self.provenance,
        }


def _json_number(value: object) -> object:
    """NaN (a band without valid pixels) as None, which JSON can hold; anything else unchanged."""
    return None if isinstance(value, float) and np.isnan(value) else value


def _from_json(value: object, kind: type) -> object:
    """A `to_dict` value back: None as NaN for numbers, else converted to `kind`."""
    return float("nan") if value is None and kind is float else kind(value)


def band_stats(
    data: DatasetLayout | str | Path,
    split: str | None = None,
    *,
    opt_bands: Sequence[int] | None = None,
    sar_bands: Sequence[int] | None = None,
    sar_scale: SarScale = "auto",
    chunk: int = CHUNK,
    side: int | None = None,
    sample: int = PERCENTILE_SAMPLE,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetStats:
    """Statistics of every optical and SAR band over a split: mean, std, value range and dtype, and the 1st, 50th
    and 99th percentiles of a regular sample of at most about `sample` values per band.

    `data`: a layout from `find_dataset`, or a dataset folder (then `split`, `opt_bands`, `sar_bands` are passed
    to `find_dataset`). A band's nodata, NaN and masked pixels are left out of that band's statistics. SAR in
    linear power (per `sar_scale`, decided as the dataset reader decides it) is measured in dB.
    `side` None reads every pixel, at most `chunk`² at a time; a number reads each file once, decimated (nearest
    neighbour) so its longest side is at most `side` px — served from overviews when the files have them: a
    cheap summary whose mean and std come from that sample. `progress(files_done, files_total)` is called after
    each file (every sample's optical file, then its SAR file).
    """
    layout = (
        data if isinstance(data, DatasetLayout) else find_dataset(data, split, opt_bands=opt_bands, sar_bands=sar_bands)
    )
    scaling = decide_dataset_sar_scale(layout, sar_scale)
    roles = (("optical", layout.opt_bands, layout.opt_band_names), ("sar", layout.sar_bands, layout.sar_band_names))
    quota = max(1, sample // len(layout.samples))  # percentile sample per file
    out: list[BandStats] = []
    files_done, files_total = 0, 2 * len(layout.samples)
    for modality, bands, names in roles:
        n = len(bands)
        moments = RunningMoments(n)
        skipped = np.zeros(n, dtype=np.int64)
        low, high = np.full(n, np.inf), np.full(n, -np.inf)
        kept: list[list[np.ndarray]] = [[] for _ in range(n)]
        dtypes: list[str | None] = [None] * n
        for item in layout.samples:
            path = item.opt if modality == "optical" else item.sar
            with open_raster(path, "Optical" if modality == "optical" else "SAR") as src:
                for k, b in enumerate(bands):
                    dtypes[k] = dtypes[k] or src.dtypes[b - 1]
                for values, valid, stride in _blocks(src, bands, chunk, side, quota):
                    if modality == "sar" and scaling.converts:
                        values = linear_to_db(values)
                    for k in range(n):
                        ok = values[k][valid[k]]
                        moments.add(k, ok)
                        skipped[k] += int(valid[k].size - ok.size)
                        if ok.size:
                            low[k], high[k] = min(low[k], float(ok.min())), max(high[k], float(ok.max()))
                        kept[k].append(values[k, ::stride, ::stride][valid[k, ::stride, ::stride]])
            files_done += 1
            if progress is not None:
                progress(files_done, files_total)
        var = moments.variance()
        mean = np.where(moments.count > 0, moments.mean, np.nan)
        for k, (b, name) in enumerate(zip(bands, names, strict=True)):
            pooled = np.concatenate(kept[k])
            p1, p50, p99 = np.percentile(pooled, (1, 50, 99)).tolist() if pooled.size else [float("nan")] * 3
            seen = moments.count[k] > 0
            out.append(
                BandStats(
                    modality,
                    int(b),
                    str(name),
                    int(moments.count[k]),
                    int(skipped[k]),
                    float(mean[k]),
                    float(np.sqrt(var[k])),
                    float(var[k]),
                    str(dtypes[k]),
                    float(low[k]) if seen else float("nan"),
                    float(high[k]) if seen else float("nan"),
                    float(p1),
                    float(p50),
                    float(p99),
                )
            )
    return DatasetStats(bands=tuple(out), provenance=layout.provenance(), sar_scaling=scaling)


def _blocks(
    src: Readable, bands: Sequence[int], chunk: int, side: int | None, quota: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """What `band_stats` measures of one file: (values (C, h, w), validity (C, h, w), stride) per block, every
    pixel in `chunk`² blocks, or (`side` given) one decimated read. Every `stride`-th row and column of a block
    go into the percentile sample: about `quota` values of the file."""
    height, width = src.height, src.width
    if side is not None:
        step = max(1.0, max(width, height) / side)
        height, width = max(1, round(src.height / step)), max(1, round(src.width / step))
    stride = max(1, int(np.ceil(np.sqrt(height * width / quota))))
    if side is not None:
        yield (*read_bands(src, bands, out_shape=(height, width)), stride)
        return
    for window in chunk_windows(height, width, chunk):
        yield (*read_bands(src, bands, window), stride)
