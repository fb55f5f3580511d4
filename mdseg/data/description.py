"""What a trained model needs to know about its data, as the trainer stores it in checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mdseg.data.classes import ClassScheme
from mdseg.data.normalise import Normalisation
from mdseg.geo.sar import SarScaling


@dataclass(frozen=True)
class DatasetDescription:
    """Classes (names, palette, label map), band names in model order, normalisation (read units, SAR in dB),
    the SAR scale decision, and provenance (root, layout, split, file count, bands read)."""

    classes: ClassScheme
    opt_band_names: tuple[str, ...]
    sar_band_names: tuple[str, ...]
    normalisation: Normalisation
    sar_scaling: SarScaling
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "classes": self.classes.to_dict(),
            "bands": {"optical": list(self.opt_band_names), "sar": list(self.sar_band_names)},
            "normalisation": self.normalisation.to_dict(),
            "sar_scale": self.sar_scaling.as_dict(),
            "provenance": dict(self.provenance),
        }

    def checkpoint_fields(self) -> dict[str, Any]:
        """Keyword arguments for `CheckpointMeta` that come from the data (the model always sees SAR in dB:
        linear input is converted on reading), with this description under provenance["data"]."""
        return {
            "classes": list(self.classes.names),
            "palette": [list(c) for c in self.classes.palette],
            "opt_band_names": list(self.opt_band_names),
            "sar_band_names": list(self.sar_band_names),
            "normalisation": self.normalisation,
            "sar_scale": "db",
            "provenance": {"data": self.to_dict()},
        }
