"""Quick-look pictures (`mdseg quicklook`, `predict --quicklook`): real GeoTIFFs in tmp_path, real PNGs read back."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window

from mdseg.errors import GeoreferenceError, OutputExistsError
from mdseg.geo.writer import class_colormap, class_tags
from mdseg.quicklook import MARGIN_PX, PANEL_PX, quicklook, read_quicklook, true_colour_bands

SIZE = 64
CLASSES = ["water", "forest", "city", "glacier"]
# glacier (magenta) is in the palette but never in the maps: the picture must not show it.
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0), (255, 0, 255)]
TRANSFORM = from_origin(500_000, 4_000_000, 10, 10)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32633",
    transform=TRANSFORM,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    """(C, H, W) `data` as a GeoTIFF, by default on a 10 m UTM grid."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs=crs, transform=transform)
    with rasterio.open(path, "w", nodata=nodata, **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
    return path


def write_class_map(path: Path, classes: np.ndarray, *, legend: bool = True) -> Path:
    """(H, W) uint8 classes, nodata 255; with `legend` the colour table and class names mdseg predict writes."""
    write_raster(path, classes[None].astype("uint8"), nodata=255)
    if legend:
        with rasterio.open(path, "r+") as dst:
            dst.write_colormap(1, class_colormap(PALETTE))
            dst.update_tags(1, **class_tags(CLASSES))
    return path


def stripes(values: list[float], dtype: str = "float32") -> np.ndarray:
    """(SIZE, SIZE) with the columns split into len(values) vertical stripes of those values."""
    column = np.repeat(np.array(values), -(-SIZE // len(values)))[:SIZE]
    return np.broadcast_to(column, (SIZE, SIZE)).astype(dtype)


@pytest.fixture
def scene(tmp_path) -> dict[str, Path]:
    """Optical (3 bands B04, B03, B02), SAR in dB, a prediction (water | forest | city, bottom rows nodata) and a
    label (water | forest)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    opt = np.stack([1000 + 500 * x, 1000 + 500 * y, 1000 + 250 * (x + y)]).astype("uint16")
    pred = stripes([0, 1, 2], "uint8").copy()
    pred[-8:] = 255
    return {
        "opt": write_raster(tmp_path / "opt.tif", opt, descriptions=["B04", "B03", "B02"]),
        "sar": write_raster(tmp_path / "sar.tif", stripes([-20.0, -10.0])[None]),
        "pred": write_class_map(tmp_path / "pred.tif", pred),
        "label": write_class_map(tmp_path / "label.tif", stripes([0, 1], "uint8"), legend=False),
    }


def picture(path: Path) -> np.ndarray:
    """A PNG as (H, W, 3) uint8."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def has_colour(rgb: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((rgb == np.array(colour, dtype=np.uint8)).all(axis=-1).any())


def test_three_panels_make_a_1600_px_picture_and_a_label_adds_a_fourth_panel(scene, tmp_path):
    three = quicklook(scene["opt"], scene["sar"], scene["pred"], tmp_path / "three.png")
    four = quicklook(scene["opt"], scene["sar"], scene["pred"], tmp_path / "four.png", label=scene["label"])
    assert picture(three).shape[1] == 3 * PANEL_PX + MARGIN_PX == 1600
    assert picture(four).shape[1] == 4 * PANEL_PX + MARGIN_PX
    assert picture(three).shape[0] == picture(four).shape[0]


def test_the_legend_shows_the_colours_of_the_classes_present_and_no_others(scene, tmp_path):
    rgb = picture(quicklook(scene["opt"], scene["sar"], scene["pred"], tmp_path / "view.png"))
    legend = rgb[-60:]  # the legend row sits below the panels
    for colour in PALETTE[:3]:
        assert has_colour(legend, colour), colour
    assert not has_colour(rgb, PALETTE[3])


def test_legend_names_classes_with_their_share_of_mapped_pixels_and_marks_no_data(scene):
    look = read_quicklook(scene["opt"], scene["sar"], scene["pred"], label=scene["label"])
    texts = [entry.text for entry in look.legend]
    # Stripes of 22, 22, 20 columns; the label has no colour table, so it takes the prediction's colours.
    assert texts == [
        "water  34.4 % (label 50.0 %)",
        "forest  34.4 % (label 50.0 %)",
        "city  31.2 % (label 0.0 %)",
        "no data",
    ]
    assert [p.title for p in look.panels[2:]] == ["Prediction", "Label"]


def test_an_existing_picture_is_refused_without_overwrite_and_replaced_with_it(scene, tmp_path):
    out = tmp_path / "view.png"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        quicklook(scene["opt"], scene["sar"], scene["pred"], out)
    assert out.read_bytes() == b"keep me"
    quicklook(scene["opt"], scene["sar"], scene["pred"], out, overwrite=True)
    assert picture(out).shape[1] == 1600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_big_scene_is_read_decimated_not_whole(tmp_path):
    side = 8000
    profile = dict(
        driver="GTiff", width=side, height=side, crs="EPSG:32633", transform=TRANSFORM, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", SPARSE_OK=True,
    )  # fmt: skip
    paths = {}
    for name, count, dtype in (("opt", 3, "uint16"), ("sar", 1, "float32"), ("pred", 1, "uint8")):
        paths[name] = tmp_path / f"{name}.tif"
        nodata = 255 if name == "pred" else 0
        with rasterio.open(paths[name], "w", count=count, dtype=dtype, nodata=nodata, **profile) as d:
            d.write(np.full((count, 512, side), 7, dtype), window=Window(0, 4096, side, 512))  # the rest stays empty
    tracemalloc.start()
    try:
        out = quicklook(paths["opt"], paths["sar"], paths["pred"], tmp_path / "big.png", max_size=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A whole read of the class map alone is 64 MB; of the optical 384 MB. No time bound: how long the reads take
    # depends on the machine and its load; the memory bound is what shows they are decimated.
    assert peak < 48e6, f"peak {peak / 1e6:.0f} MB"
    assert picture(out).shape[1] == 1600


def test_linear_power_sar_is_shown_in_db(scene, tmp_path):
    # 0.01, 0.1 and 1 are −20, −10 and 0 dB: in dB the middle stripe is mid grey, in linear power nearly black.
    sar = write_raster(tmp_path / "sar_linear.tif", stripes([0.01, 0.1, 1.0])[None])
    panel = read_quicklook(scene["opt"], sar, scene["pred"]).panels[1]
    assert panel.title.startswith("SAR band 1 (dB, from linear power)")
    assert abs(int(panel.rgba[SIZE // 2, SIZE // 2, 0]) - 128) <= 2


def test_sar_on_another_grid_is_warped_onto_the_optical_grid(scene, tmp_path):
    # The SAR covers the optical scene's western half only, on a 20 m grid.
    sar = write_raster(
        tmp_path / "sar_20m.tif",
        np.full((1, SIZE // 2, SIZE // 4), -12.0, "float32"),
        transform=from_origin(500_000, 4_000_000, 20, 20),
    )
    panel = read_quicklook(scene["opt"], sar, scene["pred"]).panels[1]
    valid = panel.rgba[..., 3] > 0
    assert panel.rgba.shape[:2] == (SIZE, SIZE)
    assert valid[:, : SIZE // 2 - 1].all() and not valid[:, SIZE // 2 + 1 :].any()


def test_a_prediction_on_another_grid_is_refused(scene, tmp_path):
    moved = tmp_path / "moved.tif"
    write_raster(moved, np.zeros((1, SIZE, SIZE), "uint8"), transform=from_origin(500_100, 4_000_000, 10, 10))
    with pytest.raises(GeoreferenceError, match="not on the grid of optical raster"):
        quicklook(scene["opt"], scene["sar"], moved, tmp_path / "view.png")
    assert not (tmp_path / "view.png").exists()


def test_true_colour_bands_come_from_band_descriptions_else_the_first_three(tmp_path):
    data = np.zeros((4, 4, 4), "uint16")
    named = write_raster(tmp_path / "named.tif", data, descriptions=["B08 nir", "Blue", "Green", "Red"])
    edge = write_raster(tmp_path / "edge.tif", data, descriptions=["B05 red edge", "B04", "B03", "B02"])
    plain = write_raster(tmp_path / "plain.tif", data)
    with rasterio.open(named) as a, rasterio.open(edge) as b, rasterio.open(plain) as c:
        assert true_colour_bands(a) == [4, 3, 2]
        assert true_colour_bands(b) == [2, 3, 4]
        assert true_colour_bands(c) == [1, 2, 3]
        assert true_colour_bands(c, {1: "B02", 2: "B03", 3: "B04", 4: "B08"}) == [3, 2, 1]


def test_cli_writes_the_picture_and_says_where(scene, tmp_path, mdseg):
    out = tmp_path / "view.png"
    args = ("--opt", scene["opt"], "--sar", scene["sar"], "--pred", scene["pred"], "--out", out)
    code, stdout, err = mdseg("quicklook", *args, "--label", scene["label"], "--rgb", "3,2,1", "--max-size", "32")
    assert code == 0, err
    assert f"wrote quick-look: {out}" in stdout
    assert picture(out).shape[1] == 4 * PANEL_PX + MARGIN_PX


def test_cli_missing_and_non_raster_inputs_are_one_line_errors(scene, tmp_path, mdseg):
    not_raster = tmp_path / "notes.txt"
    not_raster.write_text("not a raster")
    for pred, words in ((tmp_path / "absent.tif", "does not exist"), (not_raster, "is not a raster")):
        code, _, err = mdseg(
            "quicklook", "--opt", scene["opt"], "--sar", scene["sar"], "--pred", pred, "--out", tmp_path / "v.png"
        )
        lines = err.strip().splitlines()
        assert code == 3 and len(lines) == 1 and words in lines[0], err


FAST = ["--tile", "64", "--overlap", "16", "--steps", "1"]


def test_predict_quicklook_draws_the_new_map_and_lists_it(scene, tmp_path, tiny_checkpoint, mdseg):
    # The tiny checkpoint expects 4 optical bands: B04, B03, B02, B08.
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    opt = write_raster(tmp_path / "opt4.tif", np.stack([1000 + 300 * (x + i * y) for i in range(4)]).astype("uint16"))
    out, view = tmp_path / "map.tif", tmp_path / "map.png"
    args = ("--opt", opt, "--sar", scene["sar"], "--out", out, "--checkpoint", tiny_checkpoint, *FAST)
    code, stdout, err = mdseg("predict", *args, "--quicklook", view)
    assert code == 0, err
    assert f"wrote quick-look: {view}" in stdout
    look = read_quicklook(opt, scene["sar"], out)
    assert picture(view).shape[1] == 1600
    assert any(has_colour(picture(view), rgb) for rgb in [(0, 0, 255), (0, 128, 0), (200, 0, 0)])
    assert look.legend  # the map's classes, named from its tags


def test_predict_refuses_an_existing_quicklook_before_predicting(scene, tmp_path, tiny_checkpoint, mdseg):
    view = tmp_path / "map.png"
    view.write_bytes(b"keep me")
    args = ("--opt", scene["opt"], "--sar", scene["sar"], "--out", tmp_path / "map.tif", "--quicklook", view)
    code, _, err = mdseg("predict", *args, "--checkpoint", tiny_checkpoint, *FAST)
    assert code == 3 and "already exists" in err
    assert not (tmp_path / "map.tif").exists()


def test_predict_quicklook_is_refused_in_batch_mode(tmp_path, tiny_checkpoint, mdseg):
    code, _, err = mdseg(
        "predict", "--opt-dir", tmp_path, "--sar-dir", tmp_path, "--out-dir", tmp_path / "maps",
        "--checkpoint", tiny_checkpoint, "--quicklook", tmp_path / "v.png",
    )  # fmt: skip
    assert code == 2 and "--quicklook" in err and "batch mode" in err
