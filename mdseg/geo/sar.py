"""SAR backscatter scaling: detect linear power from a sample and convert it to decibels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

SarScale = Literal["auto", "db", "linear"]

# Linear power backscatter (sigma0 / gamma0) is non-negative and rarely above a few units, while dB values
# span about −35…+10 and are mostly negative: a non-negative sample whose 99th percentile is below this
# is taken as linear power.
LINEAR_P99_MAX = 10.0
# Floor for the dB conversion (dB): zeros and noise-floor values map here instead of −inf.
DB_FLOOR = -50.0


@dataclass(frozen=True)
class SarScaling:
    """What was decided about a scene's SAR values.

    `input` is the scale the file is in ("db" or "linear"); `detected` says whether that came from the data
    (`sar_scale="auto"`) or was given; `sample_min` / `sample_p99` are the statistics the decision used
    (None when the sample had no valid pixel or the scale was given).
    """

    input: Literal["db", "linear"]
    detected: bool
    sample_min: float | None = None
    sample_p99: float | None = None

    @property
    def converts(self) -> bool:
        """True when values are converted from linear power to dB before the model."""
        return self.input == "linear"

    def describe(self) -> str:
        """One sentence for the user: what the SAR scale is and what is done about it."""
        how = "detected" if self.detected else "given"
        if self.converts:
            return f"SAR values are linear power ({how}); converting to dB (10·log10, floor {DB_FLOOR:g} dB)."
        return f"SAR values are in dB ({how}); used as they are."

    def as_dict(self) -> dict:
        """JSON-ready form, with the sentence from `describe`."""
        return {**asdict(self), "converts_to_db": self.converts, "message": self.describe()}


def decide_sar_scale(sample: np.ndarray, mode: SarScale) -> SarScaling:
    """Decide the scale of a scene's SAR from `sample`, the valid SAR values of a cheap read (any shape).

    `mode` "db" / "linear" is taken as given; "auto" calls the data linear power when every value is ≥ 0
    and the 99th percentile is below `LINEAR_P99_MAX`, and dB otherwise (also when `sample` is empty).
    """
    if mode in ("db", "linear"):
        return SarScaling(input=mode, detected=False)
    if mode != "auto":
        raise ValueError(f"sar_scale must be 'auto', 'db' or 'linear', not {mode!r}")
    values = sample[np.isfinite(sample)]
    if values.size == 0:
        return SarScaling(input="db", detected=True)
    lo, p99 = float(values.min()), float(np.percentile(values, 99))
    linear = lo >= 0.0 and p99 < LINEAR_P99_MAX
    return SarScaling(input="linear" if linear else "db", detected=True, sample_min=lo, sample_p99=p99)


def linear_to_db(values: np.ndarray) -> np.ndarray:
    """10·log10 of linear power, clamped below at `DB_FLOOR` dB; NaN stays NaN. Same shape, float32."""
    floor = np.float32(10.0 ** (DB_FLOOR / 10.0))
    with np.errstate(invalid="ignore"):
        return (10.0 * np.log10(np.maximum(values, floor))).astype(np.float32, copy=False)
