"""`mdseg eval --pred --label`: real GeoTIFFs in tmp_path, the real console-script entry point."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from mdseg.engine.evaluate import apply_label_map, evaluate_rasters

CLASSES = ["water", "forest", "city"]

# A 4x6 label and prediction (class indices) whose confusion matrix is test_metrics' hand-computed HAND, so the
# expected metrics are the fractions worked out there (mIoU 16/27, OA 3/4, kappa 41/66).
LABEL = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [2, 2, 2, 2, 2, 2],
        [2, 2, 255, 255, 255, 255],
    ],
    dtype=np.uint8,
)
PRED = np.array(
    [
        [0, 0, 0, 0, 0, 1],
        [0, 0, 1, 1, 1, 2],
        [1, 2, 2, 2, 2, 2],
        [2, 2, 0, 1, 2, 0],
    ],
    dtype=np.uint8,
)
# label 0: 5 → 0, 1 → 1;  label 1: 2 → 0, 3 → 1, 1 → 2;  label 2: 1 → 1, 7 → 2;  255: ignored.
EXPECTED = [[5, 1, 0], [2, 3, 1], [0, 1, 7]]


def write_classes(path: Path, data: np.ndarray, *, nodata: float | None = None, names=None, **grid) -> Path:
    """(H, W) `data` as a one-band GeoTIFF on a 10 m UTM grid (overridable), tiled 16x16 when large enough."""
    h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype,
        crs=grid.get("crs", "EPSG:32633"),
        transform=grid.get("transform", from_origin(500_000, 4_000_000, 10, 10)),
        nodata=nodata,
    )
    if h >= 16 and w >= 16:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if names is not None:
            dst.update_tags(1, CLASS_NAMES=json.dumps(names))
    return path


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """The hand-checked prediction (with class-name tags, nodata 255) and label (no nodata, 255 = ignore)."""
    return (
        write_classes(tmp_path / "pred.tif", PRED, nodata=255, names=CLASSES),
        write_classes(tmp_path / "label.tif", LABEL),
    )


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_json_has_the_hand_computed_metrics_and_class_names_from_the_prediction_tags(pair, mdseg):
    code, out, _ = mdseg("eval", "--pred", pair[0], "--label", pair[1], "--json")
    assert code == 0
    result = json.loads(out)
    assert result["confusion"] == EXPECTED
    assert result["pixels"] == 20
    assert result["miou"] == pytest.approx(16 / 27)
    assert result["oa"] == pytest.approx(3 / 4)
    assert result["kappa"] == pytest.approx(41 / 66)
    assert result["macc"] == pytest.approx((5 / 6 + 3 / 6 + 7 / 8) / 3)
    assert result["mf1"] == pytest.approx((10 / 13 + 6 / 11 + 14 / 16) / 3)
    assert [c["name"] for c in result["per_class"]] == CLASSES
    assert result["per_class"][0] == {
        "name": "water",
        "iou": pytest.approx(5 / 8),
        "acc": pytest.approx(5 / 6),
        "f1": pytest.approx(10 / 13),
        "precision": pytest.approx(5 / 7),
        "recall": pytest.approx(5 / 6),
    }
    assert result["absent_classes"] == []


def test_table_shows_classes_means_and_the_headline(pair, mdseg):
    code, out, _ = mdseg("eval", "--pred", pair[0], "--label", pair[1], "--metric", "kappa")
    assert code == 0
    for text in ("water", "forest", "city", "mean", "62.50", "mIoU 59.26", "OA 75.00", "kappa 0.6212"):
        assert text in out


def test_nodata_of_either_raster_is_excluded(tmp_path, mdseg):
    pred = PRED.copy()
    pred[0, 0] = 255  # prediction nodata: a label-0 pixel predicted 0 is dropped
    label = LABEL.astype(np.int16)
    label[1, 5] = -1  # label nodata: the label-1 → 2 pixel is dropped
    write_classes(tmp_path / "pred.tif", pred, nodata=255, names=CLASSES)
    write_classes(tmp_path / "label.tif", label, nodata=-1)
    code, out, _ = mdseg("eval", "--pred", tmp_path / "pred.tif", "--label", tmp_path / "label.tif", "--json")
    assert code == 0
    assert json.loads(out)["confusion"] == [[4, 1, 0], [2, 3, 0], [0, 1, 7]]


def test_label_map_and_ignore_value_apply_before_comparing(tmp_path, mdseg):
    # WHU-style encoding: 0 background (ignored), 10 → class 0, 20 → 1, 30 → 2.
    whu = np.choose(LABEL.clip(0, 3).astype(np.int64), [10, 20, 30, 0]).astype(np.uint8)
    write_classes(tmp_path / "pred.tif", PRED, nodata=255, names=CLASSES)
    write_classes(tmp_path / "whu.tif", whu)
    args = ["eval", "--pred", tmp_path / "pred.tif", "--label", tmp_path / "whu.tif", "--json"]
    code, out, _ = mdseg(*args, "--label-map", "0:255,10:0,20:1,30:2")
    assert code == 0
    assert json.loads(out)["confusion"] == EXPECTED
    # The ignore value applies to mapped labels: background mapped to 99, 99 ignored.
    code, out, _ = mdseg(*args, "--label-map", "0:99,10:0,20:1,30:2", "--ignore", "99")
    assert json.loads(out)["confusion"] == EXPECTED


def test_unmapped_label_values_are_refused_with_a_hint(tmp_path, mdseg):
    write_classes(tmp_path / "pred.tif", PRED, nodata=255, names=CLASSES)
    write_classes(tmp_path / "whu.tif", (LABEL.clip(0, 3) * 10).astype(np.uint8))
    code, _, err = mdseg("eval", "--pred", tmp_path / "pred.tif", "--label", tmp_path / "whu.tif")
    line = one_error_line(err)
    assert code == 3
    assert "label values [10, 20, 30]" in line and "whu.tif" in line and "label map" in line


@pytest.mark.parametrize(
    ("grid", "why"),
    [
        ({"crs": "EPSG:32634"}, "CRS"),
        ({"transform": from_origin(500_010, 4_000_000, 10, 10)}, "transform"),
        ({"shape": (5, 6)}, "size 6x4 differs from label 6x5"),
    ],
)
def test_a_grid_mismatch_is_one_line_and_exit_2(tmp_path, mdseg, grid, why):
    shape = grid.pop("shape", LABEL.shape)
    write_classes(tmp_path / "pred.tif", PRED, nodata=255, names=CLASSES)
    write_classes(tmp_path / "label.tif", np.resize(LABEL, shape), **grid)
    code, _, err = mdseg("eval", "--pred", tmp_path / "pred.tif", "--label", tmp_path / "label.tif")
    assert code == 3
    line = one_error_line(err)
    assert "not on the same grid" in line and why in line


@pytest.mark.parametrize("broken", ["missing", "not_a_raster"])
def test_a_missing_or_non_raster_file_is_one_line_and_exit_2(pair, mdseg, broken):
    bad = pair[1].parent / "bad.tif"
    if broken == "not_a_raster":
        bad.write_text("not a raster")
    code, _, err = mdseg("eval", "--pred", pair[0], "--label", bad)
    assert code == 3
    assert "bad.tif" in one_error_line(err)


def test_without_class_names_anywhere_eval_asks_for_them_and_accepts_a_count(tmp_path, mdseg):
    write_classes(tmp_path / "pred.tif", PRED, nodata=255)
    write_classes(tmp_path / "label.tif", LABEL)
    args = ["eval", "--pred", tmp_path / "pred.tif", "--label", tmp_path / "label.tif"]
    code, _, err = mdseg(*args)
    assert code == 2 and "--classes" not in err and "class names" in one_error_line(err)
    code, out, _ = mdseg(*args, "--classes", "4", "--json")
    result = json.loads(out)
    assert [c["name"] for c in result["per_class"]] == ["0", "1", "2", "3"]
    assert result["absent_classes"] == ["3"]
    assert result["miou"] == pytest.approx(16 / 27)


def test_confusion_csv_has_class_names_and_counts(pair, mdseg, tmp_path):
    out_csv = tmp_path / "confusion.csv"
    code, _, _ = mdseg("eval", "--pred", pair[0], "--label", pair[1], "--classes", "a,b,c", "--confusion", out_csv)
    assert code == 0
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["label \\ prediction", "a", "b", "c"]
    assert [[r[0], *map(int, r[1:])] for r in rows[1:]] == [["a", 5, 1, 0], ["b", 2, 3, 1], ["c", 0, 1, 7]]


def test_pred_and_label_are_both_required(pair, mdseg):
    code, _, err = mdseg("eval", "--pred", pair[0])
    assert code == 2
    assert "--label" in one_error_line(err)


def test_strip_reads_of_a_large_tiled_scene_equal_a_single_read(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (100, 70)).astype(np.uint8)
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 4, label.shape)).astype(np.uint8)
    write_classes(tmp_path / "pred.tif", pred, names=["a", "b", "c", "d"])
    write_classes(tmp_path / "label.tif", label)
    small = evaluate_rasters(tmp_path / "pred.tif", tmp_path / "label.tif", block_pixels=70 * 16)
    one = evaluate_rasters(tmp_path / "pred.tif", tmp_path / "label.tif", block_pixels=10**9)
    expected = np.zeros((4, 4), dtype=np.int64)
    np.add.at(expected, (label.ravel(), pred.ravel()), 1)
    np.testing.assert_array_equal(small.confusion.matrix, expected)
    np.testing.assert_array_equal(one.confusion.matrix, expected)


def test_label_map_replaces_listed_values_and_keeps_the_others():
    mapped = apply_label_map(np.array([[0, 10, 20], [7, 70, 10]], dtype=np.uint8), {0: 255, 10: 0, 70: 6})
    assert mapped.tolist() == [[255, 0, 20], [7, 6, 0]]


def test_float_rasters_compare_by_whole_values_with_nan_as_nodata(tmp_path):
    pred = PRED.astype(np.float32)
    pred[0, 0] = np.nan  # the label-0 → 0 pixel is dropped
    write_classes(tmp_path / "pred.tif", pred, names=CLASSES)
    write_classes(tmp_path / "label.tif", LABEL.astype(np.float32))
    result = evaluate_rasters(tmp_path / "pred.tif", tmp_path / "label.tif")
    assert result.confusion.matrix.tolist() == [[4, 1, 0], [2, 3, 1], [0, 1, 7]]
