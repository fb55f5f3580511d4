"""Scene-level splits for datasets without splits: counts, reproducibility, every class in val where possible,
list files that `find_dataset` reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_rasters import write_tif

from mdseg.data import find_dataset, make_split, read_split, write_split
from mdseg.data.splits import scene_classes, split_counts
from mdseg.errors import DatasetError

FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD, OTHERS = range(7)


def write_whu_scenes(root: Path, scenes: list[list[int]], size: int = 32) -> Path:
    """WHU-OPT-SAR as distributed (`optical/ sar/ lbl/`, no split files): scene i's label holds the classes
    `scenes[i]` (as 10·(k+1)) in horizontal bands, under a background (0) top row."""
    rng = np.random.default_rng(len(scenes))
    for i, classes in enumerate(scenes):
        label = np.zeros((size, size), np.uint8)
        rows = np.array_split(np.arange(1, size), len(classes))
        for k, band in zip(classes, rows, strict=True):
            label[band] = 10 * (k + 1)
        name = f"NH49E{i:03d}"
        write_tif(root / "optical" / f"{name}.tif", rng.integers(0, 1000, (4, size, size)).astype(np.uint16))
        write_tif(root / "sar" / f"{name}.tif", rng.uniform(-25, 0, (1, size, size)).astype(np.float32))
        write_tif(root / "lbl" / f"{name}.tif", label)
    return root


# Twelve scenes: farmland, water and forest everywhere, city in four, village in three, road in two, others in one.
SCENES = [
    [FARMLAND, WATER, FOREST, *extra]
    for extra in (
        [CITY, VILLAGE, ROAD],
        [CITY, OTHERS],
        [CITY],
        [CITY, VILLAGE],
        [VILLAGE, ROAD],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
]


@pytest.fixture(scope="module")
def whu(tmp_path_factory) -> Path:
    return write_whu_scenes(tmp_path_factory.mktemp("whu"), SCENES)


@pytest.mark.parametrize(
    ("scenes", "expected"),
    [(100, (70, 20, 10)), (10, (7, 2, 1)), (3, (2, 1, 0)), (2, (1, 1, 0)), (1, (1, 0, 0))],
)
def test_counts_are_the_fractions_rounded_with_one_val_scene_and_one_train_scene_at_least(scenes, expected):
    assert split_counts(scenes, 0.2, 0.1) == expected


def test_scene_classes_are_read_through_the_label_map(whu):
    layout = find_dataset(whu)
    assert scene_classes(layout) == [frozenset(s) for s in SCENES]


def test_the_same_seed_gives_the_same_split_and_another_seed_another(whu):
    layout = find_dataset(whu)
    a, again, other = make_split(layout, 5), make_split(layout, 5), make_split(layout, 6)
    assert (a.train, a.val, a.test) == (again.train, again.val, again.test)
    assert (a.train, a.val, a.test) != (other.train, other.val, other.test)
    everything = sorted(a.train + a.val + a.test)
    assert everything == [s.name for s in layout.samples] and len(set(everything)) == len(everything)
    assert (len(a.train), len(a.val), len(a.test)) == (9, 2, 1)


@pytest.mark.parametrize("seed", range(8))
def test_every_class_held_by_two_scenes_reaches_val_and_none_leaves_training(whu, seed):
    layout = find_dataset(whu)
    split = make_split(layout, seed)
    classes = {s.name: set(c) for s, c in zip(layout.samples, SCENES, strict=True)}
    in_val = set().union(*(classes[n] for n in split.val))
    in_train = set().union(*(classes[n] for n in split.train))
    assert in_val == {FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD}  # "others" is in one scene only
    assert in_train == set(range(7))
    assert split.lacking["val"] == ("others",)


def test_written_lists_are_split_files_find_dataset_reads(whu, tmp_path):
    layout = find_dataset(whu)
    split = make_split(layout, 0)
    paths = write_split(split, tmp_path / "splits")
    assert sorted(p.name for p in paths.values()) == ["test.txt", "train.txt", "val.txt"]
    for name in ("train", "val", "test"):
        assert tuple(s.name for s in find_dataset(whu, str(paths[name])).samples) == split.names(name)
    back = read_split(tmp_path / "splits", 0, 0.2, 0.1)
    assert (back.train, back.val, back.test) == (split.train, split.val, split.test)
    assert read_split(tmp_path / "nowhere", 0, 0.2, 0.1) is None


def test_labels_without_any_class_value_are_refused_in_one_sentence(tmp_path):
    root = write_whu_scenes(tmp_path / "whu", [[FARMLAND], [WATER]])
    write_tif(root / "lbl" / "NH49E000.tif", np.full((32, 32), 200, np.uint8))
    write_tif(root / "lbl" / "NH49E001.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetError, match=r"hold no value of its classes \(they hold \[0, 200\]"):
        make_split(find_dataset(root), 0)


def test_a_split_name_on_a_dataset_without_splits_says_how_to_get_one(whu):
    with pytest.raises(DatasetError, match=r"no split 'train'.*runs/NAME/splits/train.txt"):
        find_dataset(whu, "train")
