"""Scene-level splits for a dataset that has none: drawn from a seed, stratified so every class reaches the
validation split where it can, written as list files (one sample name a line, the form `find_dataset` reads)
and read back.

How a split is drawn (`make_split`): the scenes are shuffled by `seed`; the validation scenes are taken first,
the test scenes next, the rest train. Each takes, rarest class first, a scene holding a class it still lacks,
then fills up in shuffled order; a scene is only taken away from the pool while every class it holds stays in
at least one scene left for training. So a class found in one scene only is trained on, one found in two is
trained on and validated, and so on. Which classes a scene holds comes from one decimated read of its label.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdseg.data.classes import IGNORE
from mdseg.data.layout import DatasetLayout, read_list_file
from mdseg.errors import DatasetError
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.raster import open_raster, read_classes

SPLIT_NAMES = ("train", "val", "test")
# Longest side (px) of the label read that decides which classes a scene holds: WHU-OPT-SAR's 5556 px scenes
# are read at about 1 in 5 pixels, fine enough to see roads.
PRESENCE_SIDE = 1024


@dataclass(frozen=True)
class DatasetSplit:
    """Sample names per split (train, val, test), the seed and fractions they were drawn with, and, per split,
    the class names that occur in the dataset but in none of its scenes (empty when every class is there)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    val_fraction: float
    test_fraction: float
    lacking: dict[str, tuple[str, ...]]

    def names(self, split: str) -> tuple[str, ...]:
        """The sample names of `split` ("train", "val" or "test")."""
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def summary(self) -> str:
        """One line: the counts, the seed and fractions, and any class a split lacks."""
        line = (
            f"split: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test scenes "
            f"(seed {self.seed}, fractions {self.val_fraction:g} val, {self.test_fraction:g} test)"
        )
        gaps = [f"{split} lacks {', '.join(names)}" for split, names in self.lacking.items() if names]
        return line + (f"; {'; '.join(gaps)} (too few scenes for every class)" if gaps else "")

    def to_dict(self, files: dict[str, str] | None = None) -> dict:
        """JSON-ready record (seed, fractions, names per split; `files`: where the lists were written)."""
        out = {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "names": {split: list(self.names(split)) for split in SPLIT_NAMES},
        }
        return {**out, "files": files} if files is not None else out


def split_counts(scenes: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) scene counts: the fractions of `scenes` rounded half up, at least one validation scene
    when `val_fraction` > 0 and there are two scenes or more, and always at least one training scene."""
    val = math.floor(scenes * val_fraction + 0.5)
    test = math.floor(scenes * test_fraction + 0.5)
    if val_fraction > 0 and scenes >= 2:
        val = max(val, 1)
    test = max(0, min(test, scenes - 1 - val))
    val = max(0, min(val, scenes - 1))
    return scenes - val - test, val, test


def scene_classes(layout: DatasetLayout, side: int = PRESENCE_SIDE) -> list[frozenset[int]]:
    """The class indices each sample's label holds (valid pixels, through the layout's label map), read once by
    nearest neighbour with the longest side at most `side` px. `DatasetError` when no label holds any class (its
    values are all outside the classes: a wrong label folder, encoding or classes.json)."""
    present, raw = [], set()
    for sample in layout.samples:
        with open_raster(sample.label, "Label") as src:
            step = max(1.0, max(src.width, src.height) / side)
            shape = (max(1, round(src.height / step)), max(1, round(src.width / step)))
            values, valid = read_classes(src, out_shape=shape, role="label")
        values = np.unique(values[valid])
        raw.update(int(v) for v in values[:20])
        present.append(frozenset(int(c) for c in np.unique(layout.classes.encode(values)) if c != IGNORE))
    if not any(present):
        mapped = sorted(layout.classes.label_map)
        raise DatasetError(
            f"the labels of '{layout.root}' hold no value of its classes (they hold {sorted(raw)[:10]}; the "
            f"{layout.kind} classes are the values {mapped[:16]}); check the label folder or its classes.json."
        )
    return present


def make_split(
    layout: DatasetLayout,
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    *,
    present: Sequence[frozenset[int]] | None = None,
) -> DatasetSplit:
    """Split the samples of `layout` into train / val / test scenes (see the module docstring).

    `present`: the classes of each sample (default: `scene_classes(layout)`). The same layout, seed and fractions
    always give the same split.
    """
    names = [s.name for s in layout.samples]
    if present is None:
        present = scene_classes(layout)
    if len(present) != len(names):
        raise DatasetError(f"{len(present)} class sets for {len(names)} samples")
    _, n_val, n_test = split_counts(len(names), val_fraction, test_fraction)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(names))]
    pool = Counter(c for classes in present for c in classes)  # scenes per class not yet taken
    taken: set[int] = set()
    val = _take(order, n_val, present, pool, taken)
    test = _take(order, n_test, present, pool, taken)
    train = [i for i in order if i not in taken]
    everything = set(pool)
    lacking = {}
    for split, picked in (("train", train), ("val", val), ("test", test)):
        if not picked:
            continue
        have = set().union(*(present[i] for i in picked))
        lacking[split] = tuple(layout.classes.names[c] for c in sorted(everything - have))
    return DatasetSplit(
        train=tuple(names[i] for i in sorted(train)),
        val=tuple(names[i] for i in sorted(val)),
        test=tuple(names[i] for i in sorted(test)),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        lacking=lacking,
    )


def _take(order: list[int], count: int, present: Sequence[frozenset[int]], pool: Counter, taken: set[int]) -> list[int]:
    """Take `count` scenes out of the pool: one per class it lacks, rarest class first, then in `order`; a scene
    whose classes would leave the pool entirely only when nothing else is left. Updates `pool` and `taken`."""
    chosen: list[int] = []

    def spare(i: int) -> bool:
        return all(pool[c] >= 2 for c in present[i])

    def take(i: int) -> None:
        chosen.append(i)
        taken.add(i)
        pool.subtract(present[i])

    for cls in sorted(pool, key=lambda c: (pool[c], c)):
        if len(chosen) >= count:
            break
        if any(cls in present[i] for i in chosen):
            continue
        pick = next((i for i in order if i not in taken and cls in present[i] and spare(i)), None)
        if pick is not None:
            take(pick)
    for keep_classes in (True, False):
        for i in order:
            if len(chosen) >= count:
                return chosen
            if i not in taken and (spare(i) or not keep_classes):
                take(i)
    return chosen


def write_split(split: DatasetSplit, folder: str | Path) -> dict[str, Path]:
    """Write `folder/train.txt`, `val.txt` and `test.txt` (one sample name a line, after a `#` line saying how
    they were drawn), together or not at all; returns {split: path}."""
    folder = Path(folder)
    header = (
        f"# mdseg split: seed {split.seed}, fractions {split.val_fraction:g} val and {split.test_fraction:g} test, "
        "scene-level, every class in val where possible\n"
    )
    paths = {name: folder / f"{name}.txt" for name in SPLIT_NAMES}
    with AtomicOutputs(overwrite=True) as outputs:
        for name, path in paths.items():
            outputs.reserve(path).write_text(header + "".join(f"{n}\n" for n in split.names(name)))
    return paths


def read_split(folder: str | Path, seed: int, val_fraction: float, test_fraction: float) -> DatasetSplit | None:
    """The split written by `write_split` in `folder` (None when `folder/train.txt` is missing); `seed` and the
    fractions are those it was drawn with, as the run's settings record them."""
    folder = Path(folder)
    if not (folder / "train.txt").is_file():
        return None
    lists = {}
    for name in SPLIT_NAMES:
        path = folder / f"{name}.txt"
        lists[name] = tuple(read_list_file(path)) if path.is_file() else ()
    return DatasetSplit(lists["train"], lists["val"], lists["test"], seed, val_fraction, test_fraction, lacking={})


__all__ = [
    "PRESENCE_SIDE",
    "SPLIT_NAMES",
    "DatasetSplit",
    "make_split",
    "read_split",
    "scene_classes",
    "split_counts",
    "write_split",
]
