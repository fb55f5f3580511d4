"""Per-band standardisation of optical and SAR inputs, as a checkpoint specifies it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Normalisation:
    """Per-band (value − mean) / std for each modality, in the units the bands are read in (SAR in dB).

    The std values are divided by exactly as given: the authors' WHU constants look like variances, but their
    checkpoint expects them, so they are never square-rooted.
    """

    opt_mean: Sequence[float]
    opt_std: Sequence[float]
    sar_mean: Sequence[float]
    sar_std: Sequence[float]

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form: `{"opt_mean": [...], "opt_std": [...], "sar_mean": [...], "sar_std": [...]}`."""
        return {f.name: [float(v) for v in getattr(self, f.name)] for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Normalisation:
        """Rebuild from `to_dict()` output; KeyError / TypeError / ValueError when a list is missing or not
        numbers (callers say which file was wrong)."""
        return cls(**{f.name: [float(v) for v in data[f.name]] for f in fields(cls)})

    def __call__(self, opt: np.ndarray, sar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise optical (Co, h, w) and SAR (Cs, h, w) float32 arrays."""
        return standardise(opt, self.opt_mean, self.opt_std), standardise(sar, self.sar_mean, self.sar_std)


def standardise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x − mean) / std per band of x (C, h, w); one mean and one std per band."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    if m.shape[0] != x.shape[0] or s.shape[0] != x.shape[0]:
        raise ValueError(f"normalisation has {m.shape[0]} means / {s.shape[0]} stds for {x.shape[0]} bands")
    return (x - m) / s
