"""The per-tile path of scene prediction: read a tile of the pair, normalise, batch, run the model, weight.

`TileModel` is what `predict_scene` needs of a model: the predictor it calls and the facts about it (classes,
palette, band counts, normalisation, inference scale). `TileRunner` walks the tile grid with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from mdseg.data.normalise import Normalisation
from mdseg.engine.options import PredictOptions
from mdseg.errors import OptionError
from mdseg.geo.pair import RasterPair
from mdseg.geo.tiles import Tile, weight_window


class Predictor(Protocol):
    """What `predict_scene` runs on each batch of tiles.

    Called as `predictor(opt, sar, generators, steps, samples)` with optical (B, Co, h, w) and SAR
    (B, Cs, h, w) float32 tensors (normalised; nodata pixels 0), one seeded `torch.Generator` per tile, the
    number of sampling steps and of samples. Returns class probabilities (B, K, h, w), or a pair
    (probabilities, disagreement (B, h, w) in [0, 1]) when it measures the spread between samples.
    """

    def __call__(
        self, opt: torch.Tensor, sar: torch.Tensor, generators: list[torch.Generator], steps: int, samples: int
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


Normaliser = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TileModel:
    """A predictor and what scene prediction must know about it.

    `classes`: class names (their count K is the predictor's channel count); `palette`: one (r, g, b) 0–255 per
    class; `opt_band_count` / `sar_band_count`: bands the predictor expects (None: any, checked against the
    selection); `normalise`: maps read optical (Co, h, w) / SAR (Cs, h, w, in dB) to model units (None: as
    read); `inference_scale`: each tile is resampled (bilinear) by this factor before the predictor and the
    probabilities back after it.
    """

    predictor: Predictor
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    opt_band_count: int | None = None
    sar_band_count: int | None = None
    normalise: Normalisation | Normaliser | None = None
    inference_scale: float = 1.0

    def __post_init__(self) -> None:
        k = len(self.classes)
        if not 1 <= k <= 255:
            raise OptionError(f"need 1..255 class names (255 is nodata), got {k}")
        if len(self.palette) < k:
            raise OptionError(f"palette has {len(self.palette)} colours for {k} classes")
        if not self.inference_scale > 0:
            raise OptionError(f"inference_scale must be positive, got {self.inference_scale}")


def tile_seed(seed: int, row: int, col: int) -> int:
    """A 63-bit generator seed for the tile at (row, col) of a run seeded with `seed`.

    Mixed with numpy's SeedSequence so neighbouring tiles and seeds get unrelated streams; depends on nothing
    else (not batch size, not tile order).
    """
    state = np.random.SeedSequence([seed, row, col]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class TileRunner:
    """Reads tiles, skips all-nodata ones, batches the rest through the predictor, yields weighted probabilities.

    `options` must have steps, tile and overlap filled in (`PredictOptions.with_defaults`).
    """

    def __init__(self, pair: RasterPair, model: TileModel, options: PredictOptions, device: str | torch.device) -> None:
        self.pair, self.model, self.options = pair, model, options
        self.device = torch.device(device)
        self.tiles_run = self.tiles_skipped = self.calls = 0

    def run(
        self, tiles: list[Tile], advance: Callable[[int], None], timer: dict[str, float]
    ) -> Iterator[tuple[list[Tile], list[tuple[np.ndarray, np.ndarray]]]]:
        """Yield (tiles, [(values (C, h, w), weight (h, w))]) per predictor batch, tiles in row-major order.

        C is K class probabilities, plus the predictor's disagreement as channel K when `samples` > 1.
        """
        batch: list[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]] = []
        for i, t in enumerate(tiles):
            t0 = time.perf_counter()
            item = self._read(t)
            timer["read"] += time.perf_counter() - t0
            if item is None:
                self.tiles_skipped += 1
                advance(1)
            else:
                batch.append(item)
            if batch and (len(batch) == self.options.batch_size or i == len(tiles) - 1):
                t0 = time.perf_counter()
                out = self._predict(batch)
                timer["predict"] += time.perf_counter() - t0
                yield [b[0] for b in batch], out
                self.tiles_run += len(batch)
                advance(len(batch))
                batch = []

    def _read(self, t: Tile) -> tuple[Tile, np.ndarray, np.ndarray, np.ndarray] | None:
        w = self.pair.window
        window = rasterio.windows.Window(w.col_off + t.x, w.row_off + t.y, t.width, t.height)
        opt, sar, valid = self.pair.read(window)
        if not valid.any():
            return None
        if self.model.normalise is not None:
            opt, sar = self.model.normalise(opt, sar)
        # Nodata pixels enter the model as 0 (the mean after normalisation); their output is discarded anyway.
        opt = np.where(valid, opt, 0).astype(np.float32, copy=False)
        sar = np.where(valid, sar, 0).astype(np.float32, copy=False)
        size = self.options.tile
        pad = ((0, 0), (0, size - t.height), (0, size - t.width))
        if t.height < size or t.width < size:
            # Only scenes smaller than a tile get here: mirror them up to the size the model expects.
            opt, sar = np.pad(opt, pad, mode="reflect"), np.pad(sar, pad, mode="reflect")
        return t, opt, sar, valid

    def _predict(
        self, batch: list[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        o, scale = self.options, self.model.inference_scale
        opt = torch.from_numpy(np.stack([b[1] for b in batch])).to(self.device)
        sar = torch.from_numpy(np.stack([b[2] for b in batch])).to(self.device)
        size = opt.shape[-2:]
        if scale != 1.0:
            scaled = (round(size[0] * scale), round(size[1] * scale))
            opt = F.interpolate(opt, size=scaled, mode="bilinear", align_corners=False)
            sar = F.interpolate(sar, size=scaled, mode="bilinear", align_corners=False)
        gens = [torch.Generator(device=self.device).manual_seed(tile_seed(o.seed, b[0].row, b[0].col)) for b in batch]
        with torch.inference_mode():
            out = self.model.predictor(opt, sar, gens, o.steps, o.samples)
        self.calls += 1
        probs, spread = out if isinstance(out, tuple) else (out, None)
        if o.samples > 1 and spread is None:
            raise ValueError("the predictor returned no disagreement map although samples > 1")
        probs = probs.float()
        if probs.ndim != 4 or probs.shape[0] != len(batch):
            raise ValueError(f"the predictor returned shape {tuple(probs.shape)}; expected (B={len(batch)}, K, h, w)")
        # The disagreement rides along as channel K only when it is written: a zero channel would add blending
        # work and full-width accumulator rows for nothing.
        values = torch.cat([probs, spread.float().unsqueeze(1)], dim=1) if o.samples > 1 else probs
        if values.shape[-2:] != size:
            values = F.interpolate(values, size=size, mode="bilinear", align_corners=False)
        values = values.cpu().numpy()
        result = []
        for (t, _, _, valid), v in zip(batch, values, strict=True):
            weight = weight_window(t, o.overlap) * valid
            result.append((v[:, : t.height, : t.width], weight))
        return result
