"""The default tile and overlap: how many pixels the model processes per scene pixel, and that the blend hides
the tile edges (`bench/bench_seams.py` measured the choice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine

from mdseg.checkpoint import DEMO_CHECKPOINT
from mdseg.engine.options import PredictOptions, default_tile
from mdseg.engine.predict import ScenePass, TileModel, open_scene
from mdseg.geo.blend import seam_stats
from mdseg.geo.tiles import tile_grid

SIZES = (1000, 1024, 2048, 4096, 10000)
MAX_PIXEL_RATIO = 1.4
MAX_SEAM_EXCESS = 1.15  # edge/interior contrast of the tiled map over the untiled map's at the same pairs
SCENE = 1056  # two default tiles a side, overlapping by exactly the default 32 px


def pixel_ratio(size: int, options: PredictOptions) -> float:
    """Pixels the model processes (tiles × tile², a smaller scene padded up to a tile) per size² scene pixel."""
    tiles = tile_grid(size, size, options.tile, options.overlap)
    return len(tiles) * options.tile**2 / size**2


@pytest.mark.parametrize("size", SIZES)
def test_default_tiling_processes_at_most_1_4_times_the_scene(size):
    assert pixel_ratio(size, PredictOptions().with_defaults()) <= MAX_PIXEL_RATIO


@pytest.mark.parametrize("size", SIZES)
def test_release_default_tiling_at_2x_processes_at_most_1_4_times_the_scene(size):
    # The authors' release: trained on 256 px tiles, predicted upsampled 2× (README, import-weights).
    options = PredictOptions().with_defaults(trained_tile=256, inference_scale=2.0)
    assert (options.tile, options.overlap) == (288, 32)  # 576² model inputs, near the authors' 512²
    assert pixel_ratio(size, options) <= MAX_PIXEL_RATIO


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")
def test_demo_weights_predict_with_544_px_tiles_overlapping_by_32():
    from mdseg.engine.checkpoint_predict import SceneModel

    options = SceneModel.load(None, device="cpu").sampling()
    assert (options.tile, options.overlap) == (544, 32)
    assert max(pixel_ratio(size, options) for size in SIZES) <= MAX_PIXEL_RATIO


def test_default_tile_is_twice_the_training_tile_plus_the_overlap():
    assert [default_tile(t) for t in (64, 256, 512)] == [160, 544, 1056]


def test_default_tile_of_a_large_training_tile_starts_tiles_at_most_1024_px_apart():
    assert default_tile(1024) == 1056  # not 2080: a batch of 8 such tiles would hold 35 Mpx
    assert default_tile(4096) >= 4096  # and never below the training tile


def test_given_tile_and_overlap_are_kept():
    options = PredictOptions(tile=256, overlap=64).with_defaults(trained_tile=128)
    assert (options.tile, options.overlap) == (256, 64)
    assert PredictOptions(tile=64).with_defaults().overlap == 16  # a quarter of a small tile


def contextual_predictor(opt, sar, generators, steps, samples):
    """Class probabilities from a 9 × 9 mean of optical bands 1–3 with zero padding (so a tile's edge pixels see
    less context, as the model's convolutions do) plus a per-tile logit offset drawn from its generator (as the
    diffusion noise differs between tiles): adjacent tiles disagree, most at their edges."""
    smooth = F.avg_pool2d(opt[:, :3], 9, stride=1, padding=4, count_include_pad=True)
    offset = torch.stack([torch.randn(3, generator=g) for g in generators])[:, :, None, None]
    return torch.softmax(4 * smooth + 0.5 * offset, dim=1)


@pytest.fixture(scope="module")
def smooth_scene(tmp_path_factory) -> tuple[Path, Path]:
    """A seeded SCENE² scene: three smooth optical bands (regions tens of px across) and SAR noise in dB."""
    folder = tmp_path_factory.mktemp("seams")
    rng = np.random.default_rng(16)
    coarse = torch.from_numpy(rng.normal(size=(1, 3, SCENE // 24, SCENE // 24)).astype(np.float32))
    opt = F.interpolate(coarse, size=(SCENE, SCENE), mode="bicubic", align_corners=False)[0].numpy()
    opt += rng.normal(scale=0.1, size=opt.shape).astype(np.float32)
    sar = rng.normal(-12, 2, size=(1, SCENE, SCENE)).astype(np.float32)
    paths = []
    for name, data in (("opt", opt), ("sar", sar)):
        path = folder / f"{name}.tif"
        profile = dict(driver="GTiff", width=SCENE, height=SCENE, count=len(data), dtype="float32", crs="EPSG:32650")
        with rasterio.open(path, "w", transform=Affine(5, 0, 300_000, 0, -5, 3_400_000), **profile) as dst:
            dst.write(data)
        paths.append(path)
    return paths[0], paths[1]


def blended(opt: Path, sar: Path, options: PredictOptions) -> tuple[np.ndarray, np.ndarray, list]:
    """The scene's blended probabilities (K, H, W), covered pixels and tiles, as predict blends them."""
    model = TileModel(contextual_predictor, classes=("a", "b", "c"), palette=[(0, 0, 0)] * 3)
    options = options.with_defaults()
    with open_scene(opt, sar, model, options) as (pair, _):
        scene = ScenePass(pair, model, options, "cpu")
        values = np.zeros((3, SCENE, SCENE), dtype=np.float32)
        covered = np.zeros((SCENE, SCENE), dtype=bool)
        for b in scene.blocks(lambda _: None, {"read": 0.0, "predict": 0.0}):
            n, m = b.covered.shape
            values[:, b.row : b.row + n, b.col : b.col + m] = b.values
            covered[b.row : b.row + n, b.col : b.col + m] = b.covered
    return values, covered, scene.tiles


def seam_excess(scene: tuple[Path, Path], options: PredictOptions) -> tuple[float, float]:
    """(disagreement, jump) edge/interior ratios of the tiled map over those of the untiled map at the same
    pixel pairs (which the scene's own content sets)."""
    values, covered, tiles = blended(*scene, options)
    untiled, _, _ = blended(*scene, PredictOptions(tile=SCENE, overlap=0))
    tiled, reference = seam_stats(values, covered, tiles), seam_stats(untiled, covered, tiles)
    return (
        tiled.disagreement_ratio / reference.disagreement_ratio,
        tiled.jump_ratio / reference.jump_ratio,
    )


def test_default_tiling_leaves_no_seam_on_a_synthetic_scene(smooth_scene):
    disagreement, jump = seam_excess(smooth_scene, PredictOptions())
    assert disagreement <= MAX_SEAM_EXCESS and jump <= MAX_SEAM_EXCESS, (disagreement, jump)


def test_tiles_without_overlap_leave_a_seam_the_metric_sees(smooth_scene):
    # The control: the same tiles abutting; if this passed unnoticed, the test above would prove nothing.
    disagreement, jump = seam_excess(smooth_scene, PredictOptions(overlap=0))
    assert disagreement > 1.5 and jump > 1.5, (disagreement, jump)


@pytest.mark.parametrize(("height", "width", "tile"), [(100, 100, 128), (256, 256, 256), (96, 300, 320)])
def test_a_scene_inside_one_tile_is_predicted_with_a_tile_its_own_size(height, width, tile):
    """A tile is mirrored up to its full side: a 256² scene in a 544-px default tile would cost 4.5× its pixels.
    The tile shrinks to the scene's longer side in multiples of 32; larger scenes keep the default."""
    from mdseg.engine.predict import fit_tile

    options = PredictOptions().with_defaults()
    fitted = fit_tile(options, height, width)
    assert (fitted.tile, fitted.overlap) == (tile, min(options.overlap, tile // 4))
    assert fit_tile(options, 600, 600) == options


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")
def test_a_small_scene_records_the_tile_it_ran_with(tmp_path):
    from data_rasters import write_pair_folders

    from mdseg.engine.checkpoint_predict import SceneModel

    write_pair_folders(tmp_path, ("opt", "sar", "label"), ["a"], size=(100, 100), seed=1)
    model = SceneModel.load(None, device="cpu")
    result = model.predict(tmp_path / "opt" / "a.tif", tmp_path / "sar" / "a.tif", tmp_path / "map.tif", progress=False)
    assert (result.options["tile"], result.tiles_total) == (128, 1)
    with rasterio.open(tmp_path / "map.tif") as src:
        assert (src.read(1) != 255).all()
