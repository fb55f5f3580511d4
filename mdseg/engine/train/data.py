"""A run's data: the training, validation and test splits (drawn by scene for a dataset without splits), their
normalisation, the training split's per-band statistics, and the training `DataLoader`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from mdseg.data.splits import SPLIT_NAMES, DatasetSplit, make_split, read_split
from mdseg.data.stats import DatasetStats, InputStats
from mdseg.engine.runs import SPLITS_DIR, run_relative
from mdseg.engine.train.settings import TrainSettings, load_settings_file
from mdseg.engine.train.stop import ignore_stop_signals
from mdseg.errors import DatasetError, OptionError
from mdseg.io.raster import SAMPLE_SIDE
from mdseg.runtime import Ranks


@dataclass(frozen=True)
class RunData:
    """The training split (augmented, `crop`-px crops), the validation split's layout (None: no validation; scored
    as `mdseg eval` scores it), the test split
    when there is one (recorded for `mdseg eval`, never read in training), the split drawn for a dataset without
    splits (None otherwise), where the normalisation came from (one line for the user; `stats_file` when a file),
    the training data's description and its per-band statistics (stored in the checkpoints for predict's input
    check)."""

    train_set: SegmentationDataset
    val_layout: DatasetLayout | None
    norm_source: str
    description: DatasetDescription  # the training split's, as the checkpoints store it
    test_layout: DatasetLayout | None = None
    split: DatasetSplit | None = None
    stats_file: Path | None = None
    input_stats: InputStats | None = None
    crop: int | None = None  # the crop the run trains with (`fitted_crop`)

    @property
    def layout(self) -> DatasetLayout:
        return self.train_set.layout

    def summary(self) -> str:
        """One line: the dataset, both splits' file counts and the normalisation's source."""
        layout, val = self.layout, self.val_layout
        return (
            f"data: {layout.root} ({layout.kind}, split {layout.split or 'all'}: {len(layout.samples)} files; "
            f"validation: {f'{len(val.samples)} files' if val else 'none (no val split)'}); "
            f"normalisation: {self.norm_source}"
        )

    def validation_record(self, run_dir: Path) -> dict[str, Any] | None:
        """Which validation data the run measured itself on, for the checkpoints' provenance (paths relative to
        `run_dir`)."""
        return None if self.val_layout is None else self._record(self.val_layout, run_dir)

    def provenance(self, run_dir: Path) -> dict[str, Any]:
        """The data part of a checkpoint's provenance, with every path relative to the run folder `run_dir`: the
        training data's description, the validation and test splits, the drawn split and the normalisation's
        source."""
        data = self.description.to_dict()
        train = self._record(self.layout, run_dir)
        data["provenance"] = {**data["provenance"], "root": train.pop("data"), **train}
        source = self.norm_source
        if self.stats_file is not None:
            source = f"from {run_relative(self.stats_file, run_dir)}"
        return {
            "data": data,
            "validation": self.validation_record(run_dir),
            "test": None if self.test_layout is None else self._record(self.test_layout, run_dir),
            "split": None if self.split is None else self.split.to_dict(_split_files()),
            "normalisation_source": source,
        }

    def _record(self, layout: DatasetLayout, run_dir: Path) -> dict[str, Any]:
        """Root and split of `layout` as `mdseg eval` finds them again from the run folder: `split_file` (relative
        to the run folder) when the split is a list file outside the dataset or the drawn split's."""
        record: dict[str, Any] = {
            "data": run_relative(layout.root, run_dir),
            "split": layout.split,
            "files": len(layout.samples),
            "opt_bands": list(layout.opt_bands),
            "sar_bands": list(layout.sar_bands),
        }
        if self.split is not None and layout.split in SPLIT_NAMES:
            record["split_file"] = _split_files()[layout.split]
        elif layout.split is not None and Path(layout.split).is_file():
            record.update(split=Path(layout.split).stem, split_file=run_relative(layout.split, run_dir))
        return record


def load_data(settings: TrainSettings, *, resuming: bool = False) -> RunData:
    """Find the settings' training, validation and test splits and choose their normalisation.

    A dataset without splits of its own (no split folders, no `train.txt`) and no --split / --val-split given is
    split by scene (`mdseg.data.splits`): a new run draws the split from `split_seed`, a resumed one reads the
    lists its run folder (`settings.out`) holds; an older run that has none goes on training on every file.
    """
    bands = {"opt_bands": settings.opt_bands, "sar_bands": settings.sar_bands}
    own = settings.split
    if own is None and (Path(settings.data) / "train.txt").is_file():
        own = "train"  # the dataset's own list files
    layout = find_dataset(settings.data, own, **bands)
    split = None
    if settings.val_split is None and layout.split is None:
        split = _run_split(settings, layout, resuming)
    if split is not None:
        val_layout = layout.subset(split.val, "val") if split.val else None
        test_layout = layout.subset(split.test, "test") if split.test else None
        layout = layout.subset(split.train, "train")
    else:
        val_layout = _val_layout(settings, layout)
        test_layout = _other_split(settings, layout, "test")
    normalisation, norm_source, stats = _normalisation(settings, layout)
    if stats is None:  # normalisation from elsewhere: one decimated read per training file is enough here
        stats = band_stats(layout, sar_scale=settings.sar_scale, side=SAMPLE_SIDE)
    crop = fitted_crop(settings.crop, layout)
    train_set = SegmentationDataset(layout, normalisation, augment=Augment(crop=crop), sar_scale=settings.sar_scale)
    stats_file = Path(settings.stats).resolve() if settings.stats is not None else None
    return RunData(
        train_set,
        val_layout,
        norm_source,
        train_set.description(),
        test_layout,
        split,
        stats_file,
        stats.input_stats(),
        crop,
    )


# Crop sides are multiples of this: the backbone downsamples by 32.
CROP_MULTIPLE = 32


def fitted_crop(crop: int, layout: DatasetLayout) -> int:
    """`crop`, or, when the smallest training scene is smaller than that, the scene's side rounded down to a
    multiple of `CROP_MULTIPLE` (at least one multiple): a crop larger than every scene would train mostly on
    padding, and the checkpoint's predict tile (its crop) would be larger than the scenes it came from."""
    side = min(min(s.height, s.width) for s in layout.samples)
    if side >= crop:
        return crop
    return max(CROP_MULTIPLE, side // CROP_MULTIPLE * CROP_MULTIPLE)


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


@contextmanager
def worker_batches(loader: DataLoader) -> Iterator[Iterator[dict[str, Any]]]:
    """An iterator over `loader` whose worker processes are shut down when the block is left, however it is left.

    The workers ignore stop signals (`ignore_stop_signals`): an iterator kept alive by an exception's traceback
    until the interpreter exits would otherwise leave multiprocessing terminating them with SIGTERM and waiting
    for them forever (a traceback, then a hang)."""
    batches = iter(loader)
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # the worker iterator's own clean shutdown
        if shutdown is not None:
            shutdown()


def _normalisation(settings: TrainSettings, layout: DatasetLayout) -> tuple[Normalisation, str, DatasetStats | None]:
    """The normalisation, where it came from (--stats file, the dataset's constants, or computed now) and, when
    computed now, the statistics it came from."""
    if settings.stats is not None:
        data = load_settings_file(settings.stats)
        norm = data.get("normalisation", data)
        try:
            return Normalisation.from_dict(norm), f"from {settings.stats}", None
        except (KeyError, TypeError, ValueError):
            raise OptionError(
                f"'{settings.stats}' holds no normalisation (opt_mean, opt_std, sar_mean, sar_std); "
                "write one with `mdseg stats --data DIR --json`"
            ) from None
    if layout.normalisation is not None:
        return layout.normalisation, f"the {layout.kind} dataset's published constants", None
    stats = band_stats(layout, sar_scale=settings.sar_scale)
    return stats.normalisation(), "computed on the training split", stats


def _val_layout(settings: TrainSettings, train_layout: DatasetLayout) -> DatasetLayout | None:
    """The validation split: --val-split, else `val` when the dataset has one, else None (no validation)."""
    if settings.val_split is not None:
        return find_dataset(
            settings.data, settings.val_split, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands
        )
    return _other_split(settings, train_layout, "val")


def _other_split(settings: TrainSettings, train_layout: DatasetLayout, name: str) -> DatasetLayout | None:
    """The dataset's own split `name` (folder or list file) when it is divided into splits and has it, else None."""
    if train_layout.split is None:
        return None
    try:
        return find_dataset(settings.data, name, opt_bands=settings.opt_bands, sar_bands=settings.sar_bands)
    except DatasetError:
        return None


def _run_split(settings: TrainSettings, layout: DatasetLayout, resuming: bool) -> DatasetSplit | None:
    """The scene-level split of a dataset without splits: drawn now, or, when resuming, the one the run folder
    holds (None for a run from before splits were drawn: it keeps training on every file)."""
    fractions = (settings.val_fraction, settings.test_fraction)
    seed = settings.split_seed if settings.split_seed is not None else settings.seed
    if resuming:
        return read_split(Path(str(settings.out)) / SPLITS_DIR, seed, *fractions)
    return make_split(layout, seed, *fractions)


def _split_files() -> dict[str, str]:
    """Where the drawn split's lists are, relative to the run folder."""
    return {name: f"{SPLITS_DIR}/{name}.txt" for name in SPLIT_NAMES}


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "opt": torch.stack([i["opt"] for i in items]),
        "sar": torch.stack([i["sar"] for i in items]),
        "label": torch.stack([i["label"] for i in items]),
        "name": [i["name"] for i in items],
    }


__all__ = ["RunData", "load_data", "training_loader", "worker_batches"]
