"""Which window of which sample to read: random windows for training (batched per iteration), a covering grid for
validation.

Samplers yield `WindowQuery`s and the dataset reads exactly the window named (torchgeo's split between samplers
and datasets). All randomness of query i — the sample, the window and the augmentation seed — comes from
(seed, epoch, i) alone, so a run gives the same samples whatever the number of `DataLoader` workers (workers only
execute queries) and however the indices are sharded over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window
from torch.utils.data import Sampler

from mdseg.runtime import current_ranks


@dataclass(frozen=True)
class WindowQuery:
    """Read pixels [row_off, row_off + height) × [col_off, col_off + width) of sample `index`; augment with
    `seed` (None: no augmentation)."""

    index: int
    col_off: int
    row_off: int
    width: int
    height: int
    seed: int | None = None

    @property
    def window(self) -> Window:
        """The rasterio window."""
        return Window(self.col_off, self.row_off, self.width, self.height)


def _rank_and_replicas(rank: int | None, num_replicas: int | None) -> tuple[int, int]:
    """The given rank / world size, else the running process group's (0 of 1 without one)."""
    running = current_ranks()
    replicas = num_replicas if num_replicas is not None else running.world
    rank = rank if rank is not None else running.rank
    if not 0 <= rank < replicas:
        raise ValueError(f"rank {rank} is not in 0..{replicas - 1}")
    return rank, replicas


def windows_per_sample(height: int, width: int, window: int) -> int:
    """Number of window × window tiles it takes to cover a height × width sample."""
    return math.ceil(height / window) * math.ceil(width / window)


class RandomWindowSampler(Sampler[WindowQuery]):
    """Random windows of side `window` pixels (whole samples when smaller), reproducible from `seed`.

    Samples are drawn with probability proportional to their area in windows, so a large scene is visited as often
    as the tiles it would cut into. `num_samples` per epoch defaults to that tile count over the dataset. With
    several ranks each yields ⌈num_samples / num_replicas⌉ queries, indices rank, rank + R, …; call `set_epoch`
    each epoch as with `DistributedSampler`.

    Args:
        sizes: (height, width) in pixels per sample, in dataset order.
        window: window side in pixels (the random resize and crop happen afterwards, in augmentation).
        num_samples: queries per epoch over all ranks.
        seed: base seed; query i of epoch e depends on (seed, e, i) only.
        rank, num_replicas: this process's shard (default: torch.distributed's when initialised, else 0 of 1).
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        window: int,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        num_replicas: int | None = None,
    ) -> None:
        if not sizes:
            raise ValueError("no samples to draw windows from")
        if window < 1:
            raise ValueError(f"window must be at least 1 pixel, not {window}")
        self.sizes = [(int(h), int(w)) for h, w in sizes]
        self.window = window
        counts = np.array([windows_per_sample(h, w, window) for h, w in self.sizes], dtype=np.float64)
        self.weights = counts / counts.sum()
        self.num_samples = int(counts.sum()) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0
        self.rank, self.num_replicas = _rank_and_replicas(rank, num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of windows (the same on every rank) for `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self) -> Iterator[WindowQuery]:
        for k in range(len(self)):
            yield self.query(self.rank + k * self.num_replicas)

    def query(self, i: int) -> WindowQuery:
        """Query number `i` of the current epoch (over all ranks)."""
        rng = np.random.default_rng((self.seed, self.epoch, i))
        index = int(rng.choice(len(self.sizes), p=self.weights))
        height, width = self.sizes[index]
        h, w = min(self.window, height), min(self.window, width)
        row = int(rng.integers(0, height - h + 1))
        col = int(rng.integers(0, width - w + 1))
        return WindowQuery(index, col, row, w, h, seed=int(rng.integers(0, 2**63 - 1)))


class GridWindowSampler(Sampler[WindowQuery]):
    """Every sample cut into windows of side `window` pixels (smaller at the right and bottom edges; whole samples
    when they are smaller), in dataset order, each exactly once over all ranks (rank r takes every R-th)."""

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        window: int,
        *,
        rank: int | None = None,
        num_replicas: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 pixel, not {window}")
        rank, replicas = _rank_and_replicas(rank, num_replicas)
        every = [
            WindowQuery(index, col, row, min(window, width - col), min(window, height - row))
            for index, (height, width) in enumerate(sizes)
            for row in range(0, height, window)
            for col in range(0, width, window)
        ]
        self.queries = every[rank::replicas]

    def __len__(self) -> int:
        return len(self.queries)

    def __iter__(self) -> Iterator[WindowQuery]:
        return iter(self.queries)


class IterationBatchSampler(Sampler[list[WindowQuery]]):
    """Yields one batch of window queries per training iteration, from `start` to `stop`.

    The j-th sample drawn over the run (j = (iteration · world + rank) · batch + slot) is query j mod E of
    epoch j div E of a `RandomWindowSampler` (E its epoch length), so iteration i's batch depends on
    (seed, i, rank) only: resuming at i gives exactly the batches an uninterrupted run would have seen.
    """

    def __init__(
        self, windows: RandomWindowSampler, batch: int, start: int, stop: int, rank: int = 0, world: int = 1
    ) -> None:
        self.windows, self.batch, self.start, self.stop = windows, batch, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[WindowQuery]]:
        per_epoch = self.windows.num_samples
        for iteration in range(self.start, self.stop):
            first = (iteration * self.world + self.rank) * self.batch
            queries = []
            for j in range(first, first + self.batch):
                self.windows.set_epoch(j // per_epoch)
                queries.append(self.windows.query(j % per_epoch))
            yield queries
