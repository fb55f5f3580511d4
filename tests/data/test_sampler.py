"""Window samplers: bounded windows, reproducible per seed, independent of workers, sharded over ranks."""

from __future__ import annotations

import numpy as np
import torch
from data_rasters import write_tif
from torch.utils.data import DataLoader

from mdseg.data import Augment, GridWindowSampler, RandomWindowSampler, SegmentationDataset, find_dataset
from mdseg.data.normalise import Normalisation

_SIZES = [(300, 200), (40, 40), (64, 500)]


def _scene_dataset(tmp_path, augment=None):
    """One 96 x 128 scene whose optical band 1 holds the row, band 2 the column; label = row // 32."""
    rows, cols = np.mgrid[0:96, 0:128]
    write_tif(tmp_path / "opt" / "s.tif", np.stack([rows, cols]).astype(np.float32))
    write_tif(tmp_path / "sar" / "s.tif", (-cols[None]).astype(np.float32))
    write_tif(tmp_path / "label" / "s.tif", (rows // 32).astype(np.uint8))
    return SegmentationDataset(find_dataset(tmp_path), Normalisation([0, 0], [1, 1], [0], [1]), augment=augment)


def test_random_windows_stay_inside_and_never_exceed_the_window():
    sampler = RandomWindowSampler(_SIZES, 64, num_samples=200, seed=3)
    for q in sampler:
        height, width = _SIZES[q.index]
        assert (q.height, q.width) == (min(64, height), min(64, width))
        assert 0 <= q.row_off <= height - q.height and 0 <= q.col_off <= width - q.width


def test_random_windows_repeat_per_seed_and_epoch():
    a, b, c = (RandomWindowSampler(_SIZES, 64, num_samples=20, seed=s) for s in (1, 1, 2))
    assert list(a) == list(b) != list(c)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_default_length_counts_windows_and_larger_scenes_are_drawn_more():
    sampler = RandomWindowSampler(_SIZES, 64, seed=0)
    assert len(sampler) == 5 * 4 + 1 + 8
    picks = np.bincount([q.index for q in RandomWindowSampler(_SIZES, 64, num_samples=2000)], minlength=3)
    assert picks[0] > picks[2] > picks[1]


def test_ranks_split_the_queries_of_one_process():
    whole = list(RandomWindowSampler(_SIZES, 64, num_samples=9, seed=5, rank=0, num_replicas=1))
    shards = [list(RandomWindowSampler(_SIZES, 64, num_samples=9, seed=5, rank=r, num_replicas=2)) for r in (0, 1)]
    assert [len(s) for s in shards] == [5, 5]
    assert shards[0][:5] == whole[0::2] and shards[1][:4] == whole[1::2]


def test_grid_windows_cover_every_pixel_once_over_ranks():
    shards = [GridWindowSampler(_SIZES, 64, rank=r, num_replicas=3) for r in range(3)]
    covered = [np.zeros(s, np.int32) for s in _SIZES]
    for shard in shards:
        for q in shard:
            assert q.width <= 64 and q.height <= 64 and q.seed is None
            covered[q.index][q.row_off : q.row_off + q.height, q.col_off : q.col_off + q.width] += 1
    assert all((c == 1).all() for c in covered)


def test_dataset_reads_only_the_queried_window(tmp_path):
    ds = _scene_dataset(tmp_path)
    q = next(iter(RandomWindowSampler(ds.sizes, 40, num_samples=1, seed=0)))
    sample = ds[q]
    assert sample["opt"].shape == (2, 40, 40) and sample["label"].shape == (40, 40)
    assert sample["opt"][0, 0, 0] == q.row_off and sample["opt"][1, 0, 0] == q.col_off


def test_loader_batches_do_not_depend_on_worker_count(tmp_path):
    ds = _scene_dataset(tmp_path, Augment(crop=32))
    sampler = RandomWindowSampler(ds.sizes, 48, num_samples=6, seed=11)
    batches = [list(DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers)) for workers in (0, 2)]
    for one, two in zip(*batches, strict=True):
        assert torch.equal(one["opt"], two["opt"]) and torch.equal(one["label"], two["label"])
    assert batches[0][0]["opt"].shape == (3, 2, 32, 32)
