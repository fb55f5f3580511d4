"""Does a scene look like the data a checkpoint was trained on? Each input band is sampled cheaply (one decimated
read per file, served from overviews when the file has them; SAR in dB as predict reads it) and compared with the
checkpoint's training statistics, before any tile is predicted.

The bands are those predict reads: the pair is opened as predict opens it (its refusals come first), and the
files are sampled with its band selection and SAR scale. The rule: a band is flagged when its median lies more
than `MEDIAN_STDS` training standard deviations from the training median, or its spread (1st to 99th
percentile) is `SPREAD_RATIO` times the training's or as many times smaller. A checkpoint without training
statistics (written before mdseg stored them) is compared with its normalisation instead: the mean for the
median, and the spread of a normal distribution of that std; only a spread that is too wide counts then, since
such a std may be far too large (the authors' WHU constants are variances). Measured with the demo weights: the
shipped synthetic scene's bands lie at most 0.1 stds off with spreads 0.96–1.04× the training's; the real
Sentinel-2 pair's optical bands 5.3–44 stds off (spreads 2.4–19×), its Sentinel-1 VV 0.4 stds (0.8×).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio

from mdseg.checkpoint import CheckpointMeta
from mdseg.data.stats import BandStats
from mdseg.engine.options import PredictOptions
from mdseg.engine.predict import MIN_GDAL_CACHE
from mdseg.errors import MdsegError
from mdseg.geo.pair import RasterPair
from mdseg.geo.sar import linear_to_db
from mdseg.io.raster import SAMPLE_SIDE, Readable, open_raster, read_bands

# A band's median this many training stds from the training median is flagged. The real Sentinel-2 pair's red
# band, the closest of its bands, sits 5.3 stds from the demo's training data; the synthetic scene's at most 0.1.
MEDIAN_STDS = 4.0
# A band whose 1st–99th percentile spread is this many times the training's (or as many times smaller) is flagged.
SPREAD_RATIO = 5.0
# Width of a normal distribution's 1st–99th percentile range, in stds: the training spread assumed when a
# checkpoint stores only its normalisation.
NORMAL_SPREAD = 2 * 2.3263


@dataclass(frozen=True)
class Reference:
    """What one band of the training data looked like: its dtype (None: unknown), median, std and spread
    (1st–99th percentile width), and the 1st / 99th percentiles (None when only the normalisation is known)."""

    dtype: str | None
    p50: float
    std: float
    spread: float
    p1: float | None = None
    p99: float | None = None

    @classmethod
    def of_stats(cls, stats: BandStats) -> Reference:
        return cls(stats.dtype, stats.p50, stats.std, stats.p99 - stats.p1, stats.p1, stats.p99)

    @classmethod
    def of_normalisation(cls, mean: float, std: float) -> Reference:
        return cls(None, float(mean), abs(float(std)), NORMAL_SPREAD * abs(float(std)))

    def describe(self) -> str:
        """'34–167, median 76' (training statistics), or 'mean 1000, std 400' (normalisation only)."""
        if self.p1 is None or self.p99 is None:
            return f"mean {_num(self.p50)}, std {_num(self.std)}"
        return f"{_num(self.p1)}–{_num(self.p99)}, median {_num(self.p50)}"


@dataclass(frozen=True)
class BandCheck:
    """One input band against the training data: `modality` ("optical" / "sar"), `name` (the checkpoint's),
    `band` (1-based, in the file), the file's `dtype`, how many valid values were `sampled`, their 1st / 50th /
    99th percentiles (None when none was valid; SAR in dB), the training `reference`, the median's distance
    in training stds (`median_stds`, signed), the spread ratio (scene / training) and why it is flagged."""

    modality: str
    name: str
    band: int
    dtype: str
    sampled: int
    p1: float | None
    p50: float | None
    p99: float | None
    reference: Reference
    median_stds: float | None
    spread_ratio: float | None
    reasons: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def label(self) -> str:
        """'red (band 1)'."""
        return f"{self.name} (band {self.band})"


@dataclass(frozen=True)
class DomainCheck:
    """The inputs of one scene against a checkpoint's training data: every band checked, what it was compared
    with (`reference`: "training statistics" or "normalisation"), and one message per input file holding a
    flagged band (what it looks like, what the model was trained on, what to do)."""

    bands: tuple[BandCheck, ...]
    reference: str
    messages: tuple[str, ...]

    @property
    def flagged(self) -> tuple[BandCheck, ...]:
        return tuple(b for b in self.bands if b.flagged)

    def to_dict(self) -> dict:
        """JSON-ready form, for the run record: the rule, each band, the flagged ones and the messages."""
        return {
            "reference": self.reference,
            "rule": {"median_stds": MEDIAN_STDS, "spread_ratio": SPREAD_RATIO, "sample_side_px": SAMPLE_SIDE},
            "bands": [{**asdict(b), "reasons": list(b.reasons), "flagged": b.flagged} for b in self.bands],
            "flagged": [f"{b.modality} {b.label()}" for b in self.flagged],
            "messages": list(self.messages),
        }

    def refuse(self) -> None:
        """`MdsegError` (one line) when a band is flagged: what `--strict-inputs` asks for."""
        if self.messages:
            raise MdsegError(f"{' '.join(self.messages)} --strict-inputs refuses such inputs; drop it to go on anyway.")


def check_inputs(
    opt_path: str | Path, sar_path: str | Path, meta: CheckpointMeta, options: PredictOptions | None = None
) -> DomainCheck:
    """Compare a scene's optical and SAR bands with `meta`'s training statistics, each file read once decimated to
    at most `SAMPLE_SIDE` px a side, the bands as predict reads them: the pair opened as `predict_scene` opens it
    (`RasterPair` with `options`' bands, alignment, SAR scale and nodata overrides; its refusals come first, in its
    words), SAR in dB. `MdsegError` when a band is flagged and `options.strict_inputs`."""
    o = options or PredictOptions()
    stats, norm = meta.input_stats, meta.normalisation
    refs = {
        "optical": [Reference.of_normalisation(m, s) for m, s in zip(norm.opt_mean, norm.opt_std, strict=True)],
        "sar": [Reference.of_normalisation(m, s) for m, s in zip(norm.sar_mean, norm.sar_std, strict=True)],
    }
    if stats is not None:
        refs = {modality: [Reference.of_stats(b) for b in stats.of(modality)] for modality in refs}
    with ExitStack() as stack:
        # opened in RasterPair's order, so that a missing or broken file is reported as predict would report it
        opt = stack.enter_context(open_raster(opt_path, "Optical"))
        sar = stack.enter_context(open_raster(sar_path, "SAR"))
        stack.enter_context(_bounded_cache(opt, sar))
        pair = stack.enter_context(
            RasterPair(
                opt_path,
                sar_path,
                opt_band_count=meta.config.opt_bands,
                sar_band_count=meta.config.sar_bands,
                **o.pair_options(),
            )
        )
        sampled = {
            "optical": _sample(opt, pair.opt_bands, o.opt_nodata),
            "sar": _sample(sar, pair.sar_bands, o.sar_nodata),
        }
        if pair.sar_scaling.converts:
            sampled["sar"] = (linear_to_db(sampled["sar"][0]), sampled["sar"][1])
        inputs = (
            ("optical", "Optical", opt_path, opt, pair.opt_bands, meta.opt_band_names),
            ("sar", "SAR", sar_path, sar, pair.sar_bands, meta.sar_band_names),
        )
        bands: list[BandCheck] = []
        messages: list[str] = []
        for modality, role, path, src, numbers, names in inputs:
            values, valid = sampled[modality]
            checks = [
                _check_band(
                    modality, name, b, src.dtypes[b - 1], values[k][valid[k]], refs[modality][k], stats is not None
                )
                for k, (name, b) in enumerate(zip(names, numbers, strict=True))
            ]
            bands += checks
            if any(c.flagged for c in checks):
                messages.append(_message(role, path, checks))
    check = DomainCheck(tuple(bands), "training statistics" if stats is not None else "normalisation", tuple(messages))
    if o.strict_inputs:
        check.refuse()
    return check


def _sample(src: Readable, bands: Sequence[int], nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """`bands` of the whole file read by nearest neighbour, decimated so the longest side is at most `SAMPLE_SIDE`
    px (the read `sample_values` takes): values (C, h, w) float32 and validity (C, h, w)."""
    step = max(1.0, max(src.width, src.height) / SAMPLE_SIDE)
    shape = (max(1, round(src.height / step)), max(1, round(src.width / step)))
    return read_bands(src, bands, out_shape=shape, nodata=nodata)


def _bounded_cache(*sources: Readable) -> AbstractContextManager:
    """A GDAL block cache of two full-width block rows of the widest of `sources` (at least `MIN_GDAL_CACHE`) for
    their decimated reads: each block is decoded once, and GDAL's default cache (5 % of RAM) does not fill with
    the files' blocks. A cache the caller set (GDAL_CACHEMAX in the environment or an enclosing `rasterio.Env`) is
    kept."""
    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return nullcontext()
    row = max(src.block_shapes[0][0] * src.width * sum(np.dtype(d).itemsize for d in src.dtypes) for src in sources)
    return rasterio.Env(GDAL_CACHEMAX=max(MIN_GDAL_CACHE, 2 * row))


def _check_band(
    modality: str, name: str, band: int, dtype: str, values: np.ndarray, ref: Reference, measured: bool
) -> BandCheck:
    """One band's sample against its reference; `measured`: the reference holds training statistics (else only
    the normalisation, whose std may be far too large: then a narrow spread is not held against the scene)."""
    if values.size == 0:
        return BandCheck(modality, name, band, dtype, 0, None, None, None, ref, None, None)
    p1, p50, p99 = (float(v) for v in np.percentile(values, (1, 50, 99)))
    shift = (p50 - ref.p50) / ref.std if ref.std > 0 else None
    ratio = (p99 - p1) / ref.spread if ref.spread > 0 else None
    reasons = []
    if shift is not None and abs(shift) > MEDIAN_STDS:
        reasons.append(f"median {abs(shift):.1f} training stds {'above' if shift > 0 else 'below'}")
    if ratio is not None and ratio >= SPREAD_RATIO:
        reasons.append(f"spread {ratio:.1f}× the training's")
    elif ratio is not None and measured and ratio <= 1 / SPREAD_RATIO:
        reasons.append(f"spread {1 / ratio:.1f}× narrower than the training's" if ratio > 0 else "constant")
    return BandCheck(
        modality,
        name,
        band,
        dtype,
        int(values.size),
        p1,
        p50,
        p99,
        ref,
        None if shift is None else round(shift, 3),
        None if ratio is None else round(ratio, 3),
        tuple(reasons),
    )


def _message(role: str, path: str | Path, checks: list[BandCheck]) -> str:
    """One line for an input file with flagged bands: each flagged band's values against the training's, what
    the values look like, what the model was trained on, and what to do."""
    flagged = [c for c in checks if c.flagged]
    details = ", ".join(
        f"{c.label()} {_num(c.p1)}–{_num(c.p99)}{' (1st–99th percentile)' if k == 0 else ''}, median "
        f"{_num(c.p50)} (trained: {c.reference.describe()})"
        for k, c in enumerate(flagged)
    )
    dtypes = sorted({c.dtype for c in flagged})
    looks = f"{'/'.join(dtypes)} values{_hint(role, flagged)}"
    trained_dtypes = sorted({c.reference.dtype for c in flagged if c.reference.dtype})
    if trained_dtypes:
        lows = [c.reference.p1 for c in flagged if c.reference.p1 is not None]
        highs = [c.reference.p99 for c in flagged if c.reference.p99 is not None]
        trained = f"{'/'.join(trained_dtypes)} values {_num(min(lows))}–{_num(max(highs))}"
    else:
        trained = "values normalised with the means and stds above (the checkpoint stores no training statistics)"
    option = "--opt-bands" if role == "Optical" else "--sar-bands, --sar-scale"
    return (
        f"{role} input '{path}' does not look like this model's training data: {details}. It holds {looks}; the "
        f"model was trained on {trained}. Rescale the input to the training range, check the bands ({option}), "
        "or train a model on data like this."
    )


def _hint(role: str, checks: list[BandCheck]) -> str:
    """A guess at what the values are, when a common one fits: ' (reflectance × 10000?)', ' (reflectance 0–1?)'."""
    if role != "Optical" or any(c.reference.p99 is None for c in checks):
        return ""
    high = max(c.p99 for c in checks if c.p99 is not None)
    low = min(c.p1 for c in checks if c.p1 is not None)
    trained_high = max(c.reference.p99 for c in checks)
    integer = all(np.issubdtype(np.dtype(c.dtype), np.integer) for c in checks)
    if integer and trained_high <= 255 and 255 < high <= 12000 and low >= 0:
        return " (reflectance × 10000?)"
    if not integer and trained_high > 2 and low >= -0.5 and high <= 1.5:
        return " (reflectance 0–1?)"
    return ""


def _num(value: float | None) -> str:
    """A value as a person reads it: '273', '-25.98', '0.0512', '1839'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


__all__ = ["MEDIAN_STDS", "SPREAD_RATIO", "BandCheck", "DomainCheck", "Reference", "check_inputs"]
