"""A run's data: the training and validation splits, their normalisation, and the training `DataLoader`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mdseg.data import (
    Augment,
    DatasetDescription,
    DatasetLayout,
    IterationBatchSampler,
    RandomWindowSampler,
    SegmentationDataset,
    band_stats,
    find_dataset,
)
from mdseg.data.normalise import Normalisation
from mdseg.engine.train.settings import TrainSettings, load_settings_file
from mdseg.engine.train.stop import ignore_stop_signals
from mdseg.errors import DatasetError, OptionError
from mdseg.runtime import Ranks


@dataclass(frozen=True)
class RunData:
    """The training split (augmented, `crop`-px crops), the validation split (None: no validation), where the
    normalisation both use came from (one line for the user and the checkpoints) and the training data's
    description."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset | None
    norm_source: str
    description: DatasetDescription  # the training split's, as the checkpoints store it

    @property
    def layout(self) -> DatasetLayout:
        return self.train_set.layout

    @property
    def val_layout(self) -> DatasetLayout | None:
        return self.val_set.layout if self.val_set is not None else None

    def summary(self) -> str:
        """One line: the dataset, both splits' file counts and the normalisation's source."""
        layout, val = self.layout, self.val_layout
        return (
            f"data: {layout.root} ({layout.kind}, split {layout.split or 'all'}: {len(layout.samples)} files; "
            f"validation: {f'{len(val.samples)} files' if val else 'none (no val split)'}); "
            f"normalisation: {self.norm_source}"
        )

    def validation_record(self) -> dict[str, Any] | None:
        """Which validation data the run measured itself on, for the checkpoints' provenance."""
        val = self.val_layout
        if val is None:
            return None
        return {
            "data": str(val.root),
            "split": val.split,
            "opt_bands": list(val.opt_bands),
            "sar_bands": list(val.sar_bands),
        }


def load_data(settings: TrainSettings) -> RunData:
    """Find the settings' training and validation splits and choose their normalisation."""
    layout = find_dataset(settings.data, settings.split, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands)
    normalisation, norm_source = _normalisation(settings, layout)
    train_set = SegmentationDataset(
        layout, normalisation, augment=Augment(crop=settings.crop), sar_scale=settings.sar_scale
    )
    val_layout = _val_layout(settings, layout)
    val_set = (
        SegmentationDataset(val_layout, normalisation, sar_scale=settings.sar_scale) if val_layout is not None else None
    )
    return RunData(train_set, val_set, norm_source, train_set.description())


def training_loader(
    dataset: SegmentationDataset, settings: TrainSettings, start: int, ranks: Ranks, device: torch.device
) -> DataLoader:
    """Batches for iterations `start` … `settings.iters` - 1 of this rank: 2·crop-px windows (augmentation crops
    them), each iteration's drawn from (seed, iteration, rank) alone (see `IterationBatchSampler`)."""
    windows = RandomWindowSampler(dataset.sizes, 2 * settings.crop, seed=settings.seed, num_replicas=1, rank=0)
    batches = IterationBatchSampler(windows, settings.batch_size, start, settings.iters, ranks.rank, ranks.world)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=settings.workers,
        collate_fn=_collate,
        worker_init_fn=ignore_stop_signals,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # its own generator: DataLoader must not draw from torch's global RNG (that would shift the run on resume)
        generator=torch.Generator().manual_seed(settings.seed),
    )


def _normalisation(settings: TrainSettings, layout: DatasetLayout) -> tuple[Normalisation, str]:
    """The normalisation and where it came from: --stats file, the dataset's constants, or computed now."""
    if settings.stats is not None:
        data = load_settings_file(settings.stats)
        norm = data.get("normalisation", data)
        try:
            return Normalisation.from_dict(norm), f"from {settings.stats}"
        except (KeyError, TypeError, ValueError):
            raise OptionError(
                f"'{settings.stats}' holds no normalisation (opt_mean, opt_std, sar_mean, sar_std); "
                "write one with `mdseg stats --data DIR --json`"
            ) from None
    if layout.normalisation is not None:
        return layout.normalisation, f"the {layout.kind} dataset's published constants"
    stats = band_stats(layout, sar_scale=settings.sar_scale)
    return stats.normalisation(), "computed on the training split"


def _val_layout(settings: TrainSettings, train_layout: DatasetLayout) -> DatasetLayout | None:
    """The validation split: --val-split, else `val` when the dataset has one, else None (no validation)."""
    if settings.val_split is not None:
        return find_dataset(
            settings.data, settings.val_split, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands
        )
    if train_layout.split is None:
        return None
    try:
        return find_dataset(settings.data, "val", opt_bands=settings.opt_bands, sar_bands=settings.sar_bands)
    except DatasetError:
        return None


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "opt": torch.stack([i["opt"] for i in items]),
        "sar": torch.stack([i["sar"] for i in items]),
        "label": torch.stack([i["label"] for i in items]),
        "name": [i["name"] for i in items],
    }


__all__ = ["RunData", "load_data", "training_loader"]
