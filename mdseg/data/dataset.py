"""A dataset split as a torch `Dataset`: window queries in, normalised (and optionally augmented) samples out."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mdseg.data.augment import Augment
from mdseg.data.description import DatasetDescription
from mdseg.data.layout import DatasetLayout
from mdseg.data.normalise import Normalisation
from mdseg.data.reader import decide_dataset_sar_scale, read_window
from mdseg.data.sampler import WindowQuery
from mdseg.errors import DatasetError
from mdseg.geo.sar import SarScale


class SegmentationDataset(Dataset):
    """Samples of one split: `{"opt": (Co, h, w) float32, "sar": (Cs, h, w) float32, "label": (h, w) int64
    (255 = ignore), "name": str}` as torch tensors, normalised with `normalisation`.

    Index with a `WindowQuery` (from `RandomWindowSampler` / `GridWindowSampler`: only that window is read) or
    with an int (the whole sample: meant for tile datasets; large scenes go through a sampler). Queries with a
    seed are augmented with `augment` when given. Pixels where any input band is nodata get label 255 and input 0
    (the band mean). Files are opened per read, so the dataset pickles into `DataLoader` workers as is.

    Args:
        layout: from `find_dataset`.
        normalisation: per-band mean / std in read units (default: the layout's published constants; datasets
            without them need `band_stats` first).
        augment: training augmentation; None for validation.
        sar_scale: "auto" (decided once from the first sample), "db" or "linear" (converted to dB on reading).
    """

    def __init__(
        self,
        layout: DatasetLayout,
        normalisation: Normalisation | None = None,
        *,
        augment: Augment | None = None,
        sar_scale: SarScale = "auto",
    ) -> None:
        normalisation = normalisation if normalisation is not None else layout.normalisation
        if normalisation is None:
            raise DatasetError(
                f"dataset '{layout.root}' has no published normalisation; compute per-band mean / std with "
                "`mdseg stats --data` (mdseg.data.band_stats) and pass them."
            )
        self.layout = layout
        self.normalisation = normalisation
        self.augment = augment
        self.sar_scaling = decide_dataset_sar_scale(layout, sar_scale)

    def __len__(self) -> int:
        return len(self.layout.samples)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) in pixels of every sample, for the samplers."""
        return [(s.height, s.width) for s in self.layout.samples]

    def __getitem__(self, query: WindowQuery | int) -> dict:
        if not isinstance(query, WindowQuery):
            sample = self.layout.samples[int(query)]
            query = WindowQuery(int(query), 0, 0, sample.width, sample.height)
        sample = self.layout.samples[query.index]
        read = read_window(sample, self.layout, query.window, self.sar_scaling, self.layout.classes)
        opt, sar = self.normalisation(read.opt, read.sar)
        # invalid pixels become the band mean (0 after normalisation) so no NaN reaches the model
        opt = torch.from_numpy(np.where(read.valid, opt, np.float32(0)))
        sar = torch.from_numpy(np.where(read.valid, sar, np.float32(0)))
        label = torch.from_numpy(read.label)
        if self.augment is not None and query.seed is not None:
            generator = torch.Generator().manual_seed(query.seed)
            opt, sar, label = self.augment(opt, sar, label, generator)
        return {"opt": opt, "sar": sar, "label": label, "name": sample.name}

    def description(self) -> DatasetDescription:
        """Classes, bands, normalisation, SAR scale and provenance, for checkpoints."""
        return DatasetDescription(
            classes=self.layout.classes,
            opt_band_names=self.layout.opt_band_names,
            sar_band_names=self.layout.sar_band_names,
            normalisation=self.normalisation,
            sar_scaling=self.sar_scaling,
            provenance=self.layout.provenance(),
        )
