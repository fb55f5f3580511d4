"""Class schemes: class names, palette, and the map from label values on disk to class indices."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdseg.errors import DatasetError

IGNORE = 255  # class index of pixels the loss and the metrics skip

# Colours for classes a dataset does not name (generic folders without a palette), repeated when needed.
_FALLBACK_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True)
class ClassScheme:
    """Classes of a dataset and how its label files encode them.

    `names[k]` and `palette[k]` (r, g, b 0–255) describe class k. `label_map` maps a raw label value on disk to a
    class index 0..K−1; every raw value not in it (including `ignore` values) becomes `IGNORE` (255).
    """

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    label_map: Mapping[int, int]

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0:
            raise DatasetError("a class scheme needs at least one class")
        if len(self.palette) != k or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise DatasetError(f"the palette needs one (r, g, b) triple of 0–255 values for each of the {k} classes")
        bad = {raw: cls for raw, cls in self.label_map.items() if not 0 <= cls < k or raw < 0}
        if bad:
            raise DatasetError(f"label map entries {bad} do not map a raw value ≥ 0 to a class in 0..{k - 1}")

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.names)

    def lookup_table(self) -> np.ndarray:
        """Raw value → class index table (uint8), `IGNORE` where the map says nothing; indexed by raw value."""
        size = max(self.label_map, default=0) + 1
        table = np.full(size, IGNORE, dtype=np.uint8)
        for raw, cls in self.label_map.items():
            table[raw] = cls
        return table

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Class indices (int64, same shape) of raw label values (any numeric dtype); unknown values → `IGNORE`."""
        table = self.lookup_table()
        values = np.asarray(raw)
        if values.dtype.kind == "f":
            values = np.where(np.isfinite(values), values, -1)
        values = values.astype(np.int64, copy=False)
        inside = (values >= 0) & (values < table.size)
        out = np.full(values.shape, IGNORE, dtype=np.int64)
        out[inside] = table[values[inside]]
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (label-map keys become strings, as JSON requires)."""
        return {
            "names": list(self.names),
            "palette": [list(c) for c in self.palette],
            "label_map": {str(raw): int(cls) for raw, cls in sorted(self.label_map.items())},
            "ignore_index": IGNORE,
        }


def scheme(names: Sequence[str], palette: Sequence[Sequence[int]] | None, label_map: Mapping[int, int]) -> ClassScheme:
    """Build a `ClassScheme`, colouring classes from a fallback palette when `palette` is None."""
    if palette is None:
        palette = [_FALLBACK_PALETTE[k % len(_FALLBACK_PALETTE)] for k in range(len(names))]
    return ClassScheme(
        names=tuple(str(n) for n in names),
        palette=tuple(tuple(int(v) for v in c) for c in palette),
        label_map={int(raw): int(cls) for raw, cls in label_map.items()},
    )


def identity_scheme(values: Iterable[int]) -> ClassScheme:
    """Classes 0..max(values) named "class k", label value k → class k (for folders without classes.json)."""
    top = max((v for v in values if v != IGNORE), default=-1)
    if top < 0:
        raise DatasetError("the label rasters hold no class values (only ignore / nodata); check the label folder")
    return scheme([f"class {k}" for k in range(top + 1)], None, {k: k for k in range(top + 1)})


def load_classes_json(path: Path) -> ClassScheme:
    """Read a generic dataset's `classes.json`.

    Format: `{"names": [...], "palette": [[r, g, b], ...], "label_map": {"raw value": class index, ...},
    "ignore": raw value or list}`. Only `names` is required; without `label_map`, raw value k is class k; raw
    values listed in `ignore` (and any value not mapped) become 255.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read '{path}' as JSON ({exc}); fix or remove it.") from None
    if not isinstance(data, dict) or not isinstance(data.get("names"), list) or not data["names"]:
        raise DatasetError(f"'{path}' needs a non-empty \"names\" list (and optionally palette, label_map, ignore).")
    names = data["names"]
    ignore = data.get("ignore", [])
    ignore = {int(v) for v in (ignore if isinstance(ignore, list) else [ignore])}
    try:
        raw_map = data.get("label_map") or {k: k for k in range(len(names))}
        label_map = {int(raw): int(cls) for raw, cls in raw_map.items() if int(raw) not in ignore}
        return scheme(names, data.get("palette"), label_map)
    except (TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"'{path}' has an invalid palette or label_map ({exc}).") from None
    except DatasetError as exc:
        raise DatasetError(f"'{path}': {exc}") from None
