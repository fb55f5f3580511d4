"""Dataset layouts: detection, splits, label maps, band selection and the errors users see."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_rasters import write_pair_folders, write_tif

from mdseg.data import IGNORE, SegmentationDataset, find_dataset
from mdseg.data.catalog import HUNAN_NORMALISATION, WHU_NORMALISATION, WHU_SCHEME
from mdseg.errors import DatasetError, DatasetLayoutError


def test_whu_label_map_reads_both_encodings():
    tens = np.array([0, 10, 20, 30, 40, 50, 60, 70])
    units = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    expected = [IGNORE, 0, 1, 2, 3, 4, 5, 6]
    assert WHU_SCHEME.encode(tens).tolist() == expected
    assert WHU_SCHEME.encode(units).tolist() == expected
    assert WHU_SCHEME.encode(np.array([8, 15, 255, 300])).tolist() == [IGNORE] * 4


@pytest.mark.parametrize("label_folder", ["lab", "lbl", "label"])
def test_whu_distributed_layout_maps_labels_by_tens(tmp_path, label_folder):
    labels = (np.arange(64).reshape(8, 8) % 8 * 10).astype(np.uint8)
    write_pair_folders(tmp_path, ("optical", "sar", label_folder), ["a", "b"], labels=labels)
    layout = find_dataset(tmp_path)
    assert layout.kind == "whu-opt-sar" and [s.name for s in layout.samples] == ["a", "b"]
    assert layout.classes.names[0] == "farmland" and layout.normalisation == WHU_NORMALISATION
    sample = SegmentationDataset(layout)[0]
    expected = np.where(labels == 0, IGNORE, labels // 10 - 1)
    assert np.array_equal(sample["label"].numpy(), expected)
    assert sample["opt"].shape == (4, 8, 8) and sample["sar"].shape == (1, 8, 8)


def test_whu_split_list_file_selects_names(tmp_path):
    write_pair_folders(tmp_path, ("optical", "sar", "lbl"), ["a", "b", "c"])
    (tmp_path / "val.txt").write_text("c.tif\n# held out\na\n")
    layout = find_dataset(tmp_path, "val")
    assert [s.name for s in layout.samples] == ["c", "a"] and layout.split == "val"


def test_split_folders_default_to_train(tmp_path):
    write_pair_folders(tmp_path / "train", ("optical", "sar", "label"), ["a", "b"])
    write_pair_folders(tmp_path / "val", ("optical", "sar", "label"), ["c"])
    assert [s.name for s in find_dataset(tmp_path).samples] == ["a", "b"]
    assert [s.name for s in find_dataset(tmp_path, "val").samples] == ["c"]


def test_unknown_split_names_what_was_looked_for(tmp_path):
    write_pair_folders(tmp_path, ("optical", "sar", "lbl"), ["a"])
    with pytest.raises(DatasetError, match="no split 'test'.*test.txt"):
        find_dataset(tmp_path, "test")


def test_hunan_layout_pairs_prefixed_names_and_maps_codes(tmp_path):
    codes = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [255, 1, 1, 1]], dtype=np.uint8)
    for split in ("train", "val"):
        write_pair_folders(
            tmp_path / split, ("s2", "s1", "lc"), ["2604", "2605"], (4, 4), (13, 2), codes, prefixes=True
        )
    layout = find_dataset(tmp_path, "val")
    assert layout.kind == "hunan" and [s.name for s in layout.samples] == ["2604", "2605"]
    assert layout.opt_band_names[8] == "B8A" and layout.sar_band_names == ("VV", "VH")
    assert layout.normalisation == HUNAN_NORMALISATION
    label = SegmentationDataset(layout)[0]["label"].numpy()
    names = layout.classes.names
    # README: 1 cropland, 2 and 4 forest, 6 water, 9 unused land, 7/8/10 built-up; 0, 11 and 255 ignored
    assert [names[v] for v in label[0, 1:]] == ["cropland", "forest", "grassland"]
    assert [names[v] for v in label[1]] == ["forest", "wetland", "water", "built-up"]
    assert [names[v] for v in label[2, :3]] == ["built-up", "unused land", "built-up"]
    assert label[0, 0] == label[2, 3] == label[3, 0] == IGNORE


def test_stacked_tiles_in_authors_folders_split_5_bands_as_whu(tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (5, 6, 6)).astype(np.uint8)
    write_tif(tmp_path / "cat" / "train" / "t1.tif", stack)
    write_tif(tmp_path / "label" / "train" / "t1.tif", np.full((6, 6), 3, np.uint8))
    layout = find_dataset(tmp_path, "train")
    assert layout.kind == "stacked" and layout.opt_bands == (1, 2, 3, 4) and layout.sar_bands == (5,)
    assert layout.normalisation == WHU_NORMALISATION
    sample = SegmentationDataset(layout)[0]
    n = WHU_NORMALISATION
    expected_sar = (stack[4] - n.sar_mean[0]) / n.sar_std[0]
    assert np.allclose(sample["sar"].numpy()[0], expected_sar, rtol=1e-6)
    assert (sample["label"] == 2).all()  # 3 → class 2 (0 is background)


def test_stacked_15_band_tiles_read_as_hunan(tmp_path):
    write_tif(tmp_path / "cat1" / "x.tif", np.zeros((15, 4, 4), np.float32))
    write_tif(tmp_path / "lbl" / "x.tif", np.full((4, 4), 1, np.uint8))
    layout = find_dataset(tmp_path)
    assert layout.opt_bands == tuple(range(1, 14)) and layout.sar_bands == (14, 15)
    assert layout.classes.names[0] == "cropland" and layout.normalisation == HUNAN_NORMALISATION


def test_stacked_tiles_of_other_band_counts_need_band_lists(tmp_path):
    write_tif(tmp_path / "cat" / "x.tif", np.arange(7 * 16, dtype=np.float32).reshape(7, 4, 4))
    write_tif(tmp_path / "label" / "x.tif", np.full((4, 4), 1, np.uint8))
    with pytest.raises(DatasetError, match="7 bands"):
        find_dataset(tmp_path)
    layout = find_dataset(tmp_path, sar_bands=[6, 7])
    assert layout.opt_bands == (1, 2, 3, 4, 5) and layout.normalisation is None


def test_generic_layout_uses_classes_json_at_the_root(tmp_path):
    labels = np.array([[10, 20], [99, 0]], dtype=np.uint8)
    write_pair_folders(tmp_path / "train", ("opt", "sar", "label"), ["a"], (2, 2), (3, 2), labels)
    write_pair_folders(tmp_path / "val", ("opt", "sar", "label"), ["b"], (2, 2), (3, 2), labels)
    classes = {"names": ["water", "land"], "palette": [[0, 0, 255], [0, 128, 0]], "label_map": {"10": 0, "20": 1}}
    (tmp_path / "classes.json").write_text(json.dumps({**classes, "ignore": 0}))
    layout = find_dataset(tmp_path, "val")
    assert layout.kind == "generic" and layout.classes.names == ("water", "land")
    mean_std = {"opt_mean": [0] * 3, "opt_std": [1] * 3, "sar_mean": [0] * 2, "sar_std": [1] * 2}
    from mdseg.data.normalise import Normalisation

    ds = SegmentationDataset(layout, Normalisation(**mean_std))
    assert ds[0]["label"].tolist() == [[0, 1], [IGNORE, IGNORE]]
    description = ds.description().to_dict()
    assert description["provenance"] == {**layout.provenance(), "split": "val", "files": 1}
    assert description["classes"]["palette"] == [[0, 0, 255], [0, 128, 0]]
    assert json.loads(json.dumps(description)) == description


def test_generic_layout_without_classes_json_takes_label_values_as_classes(tmp_path):
    labels = np.array([[0, 2], [255, 1]], dtype=np.uint8)
    write_pair_folders(tmp_path, ("opt", "sar", "label"), ["a"], (2, 2), (2, 1), labels)
    layout = find_dataset(tmp_path)
    assert layout.classes.names == ("class 0", "class 1", "class 2") and layout.normalisation is None
    with pytest.raises(DatasetError, match="mdseg stats"):
        SegmentationDataset(layout)


def test_nodata_pixels_are_ignored_and_zero(tmp_path):
    opt = np.full((2, 3, 3), 7, np.int16)
    opt[1, 0, 0] = -9999
    write_tif(tmp_path / "opt" / "a.tif", opt, nodata=-9999)
    write_tif(tmp_path / "sar" / "a.tif", np.full((1, 3, 3), -12.0, np.float32))
    write_tif(tmp_path / "label" / "a.tif", np.ones((3, 3), np.uint8))
    from mdseg.data.normalise import Normalisation

    sample = SegmentationDataset(find_dataset(tmp_path), Normalisation([7, 7], [2, 2], [-10], [4]))[0]
    assert sample["label"][0, 0] == IGNORE and (sample["label"].flatten()[1:] == 1).all()
    assert sample["opt"][:, 0, 0].tolist() == [0.0, 0.0] and sample["opt"][0, 1, 1] == 0.0
    assert sample["sar"][0, 1, 1] == pytest.approx(-0.5)


def test_missing_folder_is_named(tmp_path):
    write_pair_folders(tmp_path, ("optical", "sar", "lbl"), ["a"])
    for file in (tmp_path / "sar").iterdir():
        file.unlink()
    (tmp_path / "sar").rmdir()
    with pytest.raises(DatasetLayoutError, match=r"whu-opt-sar layout but lacks the folder 'sar/'"):
        find_dataset(tmp_path)


def test_unrecognised_folder_lists_expected_layouts(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetLayoutError, match="fits no known layout.*opt/ sar/ label/.*optical/ sar/"):
        find_dataset(tmp_path)


def test_mismatched_file_sets_are_listed(tmp_path):
    write_pair_folders(tmp_path, ("optical", "sar", "lbl"), ["a", "b", "c"])
    (tmp_path / "sar" / "b.tif").unlink()
    (tmp_path / "lbl" / "c.tif").unlink()
    with pytest.raises(DatasetLayoutError, match=r"sar' lacks 1: b; .*lbl' lacks 1: c"):
        find_dataset(tmp_path)


def test_samples_of_different_sizes_are_refused(tmp_path):
    write_pair_folders(tmp_path, ("opt", "sar", "label"), ["a"], (4, 4))
    write_tif(tmp_path / "sar" / "a.tif", np.zeros((1, 4, 5), np.float32))
    with pytest.raises(DatasetError, match="sample 'a' has rasters of different sizes"):
        find_dataset(tmp_path)
