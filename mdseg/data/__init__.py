"""Datasets for training and evaluation: layouts, windowed readers, samplers, augmentation, band statistics.

Separate layers, usable alone: `find_dataset` (which files), `make_split` (a scene-level train / val / test split
for a dataset without one), `RandomWindowSampler` / `GridWindowSampler` (which windows), `SegmentationDataset`
(read, label-map, normalise, augment), `band_stats` (per-band mean / std).
"""

from mdseg.data.augment import Augment
from mdseg.data.classes import IGNORE, ClassScheme, load_classes_json
from mdseg.data.dataset import SegmentationDataset
from mdseg.data.description import DatasetDescription
from mdseg.data.layout import DatasetLayout, SampleFiles, find_dataset
from mdseg.data.sampler import GridWindowSampler, IterationBatchSampler, RandomWindowSampler, WindowQuery
from mdseg.data.splits import DatasetSplit, make_split, read_split, write_split
from mdseg.data.stats import BandStats, DatasetStats, band_stats

__all__ = [
    "IGNORE",
    "Augment",
    "BandStats",
    "ClassScheme",
    "DatasetDescription",
    "DatasetLayout",
    "DatasetSplit",
    "DatasetStats",
    "GridWindowSampler",
    "IterationBatchSampler",
    "RandomWindowSampler",
    "SampleFiles",
    "SegmentationDataset",
    "WindowQuery",
    "band_stats",
    "find_dataset",
    "load_classes_json",
    "make_split",
    "read_split",
    "write_split",
]
