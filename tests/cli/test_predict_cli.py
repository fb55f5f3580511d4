"""`mdseg predict` end to end: real GeoTIFFs, a tiny random-weight checkpoint, the real CLI entry point."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from mdseg.checkpoint import DEMO_CHECKPOINT
from mdseg.engine.batch import LOG_NAME, pair_scenes, scene_key
from mdseg.geo.tiles import tile_grid

CLASSES = ["water", "forest", "city"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]
FAST = ["--tile", "64", "--overlap", "16", "--steps", "2", "--quiet"]


def write_raster(path: Path, data: np.ndarray) -> Path:
    """(C, H, W) `data` as a GeoTIFF on a 10 m UTM grid."""
    c, h, w = data.shape
    transform = from_origin(500_000, 4_000_000, 10, 10)
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs="EPSG:32633", transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def smooth_scene(folder: Path, name: str = "scene", size: int = 96, opt_bands: int = 4) -> tuple[Path, Path]:
    """A smooth synthetic pair (large blobs, no noise): optical uint16 `opt_bands` bands, SAR 1 band in dB."""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + x - y
    opt = np.stack([1000 + 400 * (i + 1) * field * (-1) ** i for i in range(opt_bands)]).astype("uint16")
    sar = (-12 + 6 * field)[None].astype("float32")
    folder.mkdir(parents=True, exist_ok=True)
    return write_raster(folder / f"{name}_opt.tif", opt), write_raster(folder / f"{name}_sar.tif", sar)


@pytest.fixture
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_predict_writes_a_cog_on_the_optical_grid_with_palette_and_checkpoint_hash(tmp_path, checkpoint, mdseg):
    opt, sar = smooth_scene(tmp_path)
    out = tmp_path / "map.tif"
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint, *FAST)
    assert code == 0, err
    assert cog_validate(str(out)) == (True, [], [])
    with rasterio.open(opt) as src_opt, rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (src_opt.crs, src_opt.transform, src_opt.shape)
        assert src.colormap(1)[1] == (0, 128, 0, 255)
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == CLASSES
        assert set(np.unique(src.read(1))) <= {0, 1, 2}
    sidecar = json.loads((tmp_path / "map.json").read_text())
    assert sidecar["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert sidecar["checkpoint"]["path"] == str(checkpoint.resolve())
    assert sidecar["device"] == "cpu" and sidecar["scan_backend"] and sidecar["versions"]["torch"]
    assert sidecar["options"]["steps"] == 2 and sidecar["options"]["tile"] == 64


def test_without_out_the_map_goes_to_the_current_folder_and_the_command_says_so(
    tmp_path, checkpoint, mdseg, monkeypatch
):
    opt, sar = smooth_scene(tmp_path / "in", name="T32")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = mdseg("predict", "--opt", opt, "--sar", sar, "--checkpoint", checkpoint, *FAST[:-1])
    assert code == 0, err
    expected = work / "T32_opt_landcover.tif"
    assert expected.is_file() and str(expected) in out
    assert "water" in out and "km²" in out  # the summary table


def test_an_existing_output_is_refused_and_kept_unless_overwrite(tmp_path, checkpoint, mdseg):
    opt, sar = smooth_scene(tmp_path)
    out = tmp_path / "map.tif"
    out.write_bytes(b"precious")
    args = ["predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint, *FAST]
    code, _, err = mdseg(*args)
    assert code == 3 and "already exists" in one_error_line(err)
    assert out.read_bytes() == b"precious"
    code, _, err = mdseg(*args, "--overwrite")
    assert code == 0, err
    with rasterio.open(out) as src:
        assert src.count == 1


def test_a_wrong_band_count_names_both_counts(tmp_path, checkpoint, mdseg):
    opt, sar = smooth_scene(tmp_path, opt_bands=3)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "m.tif", "--checkpoint", checkpoint)
    line = one_error_line(err)
    assert code == 3 and "expects 4 optical band(s) but 3 were selected" in line
    assert not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("broken", ["missing", "text"])
def test_a_missing_or_non_raster_input_is_one_line_and_exit_2(tmp_path, checkpoint, mdseg, broken):
    opt, _ = smooth_scene(tmp_path)
    sar = tmp_path / "sar.tif"
    if broken == "text":
        sar.write_text("not a raster")
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "m.tif", "--checkpoint", checkpoint)
    assert code == 3 and "sar.tif" in one_error_line(err)
    assert not (tmp_path / "m.tif").exists()


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, mdseg):
    opt, sar = smooth_scene(tmp_path)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--checkpoint", tmp_path / "none.safetensors")
    assert code == 3 and "does not exist" in one_error_line(err)


def test_json_prints_one_parseable_object(tmp_path, checkpoint, mdseg):
    opt, sar = smooth_scene(tmp_path)
    args = ["--out", tmp_path / "m.tif", "--checkpoint", checkpoint, "--tile", "64", "--overlap", "16", "--json"]
    code, out, err = mdseg("predict", "--opt", opt, "--sar", sar, *args)
    assert code == 0, err
    result = json.loads(out)
    assert [c["name"] for c in result["classes"]] == CLASSES
    assert sum(c["pixels"] for c in result["classes"]) == 96 * 96
    assert result["checkpoint"]["sha256"] and result["output"] == str(tmp_path / "m.tif")


def test_same_seed_gives_a_byte_identical_map_whatever_the_batch_size(tmp_path, checkpoint, mdseg):
    opt, sar = smooth_scene(tmp_path)
    maps = {}
    for name, extra in (("a", ["--batch-size", "4"]), ("b", ["--batch-size", "4"]), ("c", ["--batch-size", "1"])):
        out = tmp_path / f"{name}.tif"
        code, _, err = mdseg(
            "predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint, *FAST, *extra
        )
        assert code == 0, err
        maps[name] = out.read_bytes()
    assert maps["a"] == maps["b"] == maps["c"]


def batch_folders(root: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """root/opt/<name>_opt.tif and root/sar/<name>_sar.tif for each name; the output folder root/out."""
    (root / "sar").mkdir(parents=True)
    for name in names:
        _, sar = smooth_scene(root / "opt", name=name, size=64)
        sar.rename(root / "sar" / sar.name)
    return root / "opt", root / "sar", root / "out"


def test_batch_continues_past_a_broken_scene_logs_each_and_resumes(tmp_path, checkpoint, mdseg):
    opt_dir, sar_dir, out_dir = batch_folders(tmp_path, ["a", "b", "c"])
    good_b = (sar_dir / "b_sar.tif").read_bytes()
    (sar_dir / "b_sar.tif").write_text("broken")
    args = ["predict", "--opt-dir", opt_dir, "--sar-dir", sar_dir, "--out-dir", out_dir, "--checkpoint", checkpoint]
    code, _, err = mdseg(*args, *FAST)
    assert code == 4 and "1 of 3 scenes failed: b (" in one_error_line(err)
    assert sorted(p.name for p in out_dir.glob("*.tif")) == ["a_landcover.tif", "c_landcover.tif"]
    log = [json.loads(line) for line in (out_dir / LOG_NAME).read_text().splitlines()]
    assert [(r["scene"], r["status"]) for r in log] == [("a", "written"), ("b", "failed"), ("c", "written")]
    assert "b_sar.tif" in log[1]["error"] and log[0]["seconds"] > 0

    (sar_dir / "b_sar.tif").write_bytes(good_b)
    code, _, err = mdseg(*args, *FAST)
    assert code == 0, err
    log = [json.loads(line) for line in (out_dir / LOG_NAME).read_text().splitlines()][3:]
    assert [(r["scene"], r["status"]) for r in log] == [("a", "skipped"), ("b", "written"), ("c", "skipped")]


def test_shards_split_the_scenes_without_overlap(tmp_path, checkpoint, mdseg):
    opt_dir, sar_dir, out_dir = batch_folders(tmp_path, ["a", "b", "c"])
    args = ["predict", "--opt-dir", opt_dir, "--sar-dir", sar_dir, "--out-dir", out_dir, "--checkpoint", checkpoint]
    runs = []
    for shard in ("0/2", "1/2"):
        code, out, err = mdseg(*args, *FAST[:-1], "--json", "--shard", shard)
        assert code == 0, err
        runs.append([s["scene"] for s in json.loads(out)["scenes"]])
    assert runs == [["a", "c"], ["b"]]
    code, _, err = mdseg(*args, "--shard", "2/2")
    assert code == 2 and "0 <= i < n" in one_error_line(err)


def test_scenes_pair_by_stem_or_by_stems_differing_in_an_opt_sar_token(tmp_path):
    assert scene_key("T32_opt", "opt", "sar") == "T32" and scene_key("OPT-T32", "opt", "sar") == "T32"
    assert scene_key("T32", "opt", "sar") == "T32" and scene_key("T32_sar", "opt", "sar") is None
    shared = tmp_path / "shared"
    smooth_scene(shared, name="x", size=8)  # x_opt.tif and x_sar.tif in one folder
    write_raster(shared / "y.tif", np.zeros((1, 8, 8), "uint8"))  # same stem in both "folders"
    scenes, lonely = pair_scenes(shared, shared)
    assert [(s.name, s.opt.name, s.sar.name) for s in scenes] == [
        ("x", "x_opt.tif", "x_sar.tif"),
        ("y", "y.tif", "y.tif"),
    ]
    assert lonely == []


def test_no_seams_along_tile_lines_with_the_real_tiny_model(tmp_path, checkpoint, mdseg):
    """Label changes across tile-edge pixel pairs are not much more frequent than across all pixel pairs."""
    size, tile, overlap = 160, 64, 16
    opt, sar = smooth_scene(tmp_path, size=size)
    out = tmp_path / "m.tif"
    code, _, err = mdseg(
        "predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", checkpoint,
        "--tile", tile, "--overlap", overlap, "--steps", "2", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    with rasterio.open(out) as src:
        labels = src.read(1)
    changes_x = labels[:, 1:] != labels[:, :-1]  # pair (x, x+1) in column x
    changes_y = labels[1:, :] != labels[:-1, :]
    assert 0.002 < (changes_x.mean() + changes_y.mean()) / 2 < 0.5, "the map must have some structure to test"
    tiles = tile_grid(size, size, tile, overlap)
    edges_x = sorted({t.x - 1 for t in tiles if t.x > 0} | {t.x + t.width - 1 for t in tiles if t.x + t.width < size})
    edges_y = sorted({t.y - 1 for t in tiles if t.y > 0} | {t.y + t.height - 1 for t in tiles if t.y + t.height < size})
    at_edges = np.concatenate([changes_x[:, edges_x].ravel(), changes_y[edges_y, :].ravel()])
    everywhere = np.concatenate([changes_x.ravel(), changes_y.ravel()])
    assert at_edges.mean() <= 3 * everywhere.mean() + 0.01, (at_edges.mean(), everywhere.mean())


@pytest.mark.skipif(DEMO_CHECKPOINT.is_file(), reason="this install ships demo weights")
def test_without_demo_weights_the_command_asks_for_a_checkpoint(tmp_path, mdseg):
    opt, sar = smooth_scene(tmp_path)
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", tmp_path / "m.tif")
    assert code == 2 and "pass --checkpoint" in one_error_line(err)


def test_mixing_one_scene_and_batch_options_is_refused(tmp_path, mdseg):
    code, _, err = mdseg("predict", "--opt", "a.tif", "--sar", "b.tif", "--opt-dir", tmp_path)
    assert code == 2 and "not both" in one_error_line(err)
