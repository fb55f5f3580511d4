"""Scene prediction with a saved checkpoint: load it once, adapt the model to `predict_scene`, run scenes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mdseg.checkpoint import CheckpointMeta, demo_checkpoint, load_checkpoint, sha256
from mdseg.engine.accel import autocast, check_amp, prepare_model, use_channels_last
from mdseg.engine.domain import DomainCheck, check_inputs
from mdseg.engine.options import PredictOptions, PredictOutputs
from mdseg.engine.predict import PredictionResult, predict_scene
from mdseg.engine.progress import ProgressCallback
from mdseg.engine.tile_runner import Normaliser, TileModel
from mdseg.kernels import resolve_backend
from mdseg.models import MambaDiffusionSeg
from mdseg.runtime import resolve_device

log = logging.getLogger(__name__)


class ModelPredictor:
    """`predict_scene`'s predictor protocol over a `MambaDiffusionSeg`: softmax of its seeded DDIM logits.

    Called with normalised optical (B, Co, h, w) and SAR (B, Cs, h, w) float32 tensors and one generator per
    tile; returns float32 probabilities (B, K, h, w), plus the sample disagreement (B, h, w) in [0, 1] when
    samples > 1. `amp` ("off", "bf16", "fp16", see `mdseg.engine.accel`) runs the model under autocast.
    """

    def __init__(self, model: MambaDiffusionSeg, device: torch.device, amp: str = "off") -> None:
        check_amp(amp, device)
        self.model, self.device, self.amp = model, device, amp

    def __call__(
        self, opt: torch.Tensor, sar: torch.Tensor, generators: list[torch.Generator], steps: int, samples: int
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), autocast(self.device, self.amp):
            out = self.model.predict(
                opt.to(self.device),
                sar.to(self.device),
                steps=steps,
                generator=generators,
                samples=samples,
                return_disagreement=samples > 1,
            )
        if samples > 1:
            logits, disagreement = out
            return torch.softmax(logits.float(), dim=1), disagreement.float()
        return torch.softmax(out.float(), dim=1)


def checkpoint_normaliser(meta: CheckpointMeta) -> Normaliser:
    """The checkpoint's normalisation, fed the SAR scale its model expects (scenes are read with SAR in dB)."""
    norm = meta.normalisation
    if meta.sar_scale == "db":
        return norm
    return lambda opt, sar: norm(opt, np.power(np.float32(10.0), sar / np.float32(10.0)))


@dataclass
class SceneModel:
    """A checkpoint loaded once for any number of scenes: model (eval mode, on `device`), metadata, file hash,
    and how it runs: `amp` ("off", "bf16", "fp16") and `compile` (see `mdseg.engine.accel`). `path` and `sha256`
    are None for a model in memory that no file holds (yet), e.g. the one training validates."""

    path: Path | None
    sha256: str | None
    model: MambaDiffusionSeg
    meta: CheckpointMeta
    device: torch.device
    demo: bool
    amp: str = "off"
    compile: bool = False

    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str = "auto", *, amp: str = "off", compile: bool = False
    ) -> SceneModel:
        """Load `path` (None: the shipped demo weights) onto `device` ('auto', 'cpu', 'cuda:0', …).

        `amp` "bf16" or "fp16" (CUDA only, else `OptionError`) predicts under autocast; `compile` compiles the
        model with torch.compile (the first tiles pay for it). On CUDA the weights are kept channels-last.
        """
        dev = resolve_device(device)
        check_amp(amp, dev)
        demo = path is None
        path = demo_checkpoint() if demo else Path(path)
        model, meta = load_checkpoint(path, dev)
        log.info("loaded %s%s on %s", path, " (the demo weights)" if demo else "", dev)
        prepare_model(model, dev, compile=compile)
        return cls(
            path=path, sha256=sha256(path), model=model, meta=meta, device=dev, demo=demo, amp=amp, compile=compile
        )

    @classmethod
    def in_memory(
        cls, model: MambaDiffusionSeg, meta: CheckpointMeta, device: torch.device, amp: str = "off"
    ) -> SceneModel:
        """`model` as it is now, with the metadata a checkpoint of it would carry: scored or run exactly as the
        checkpoint saved from it would be. The model is used as it is (not copied, not prepared)."""
        check_amp(amp, device)
        return cls(path=None, sha256=None, model=model, meta=meta, device=device, demo=False, amp=amp)

    def run_info(self) -> dict:
        """What the run sidecar records about the checkpoint, scan backend and device."""
        return {
            "checkpoint": {
                "path": None if self.path is None else str(self.path.resolve()),
                "sha256": self.sha256,
                "demo": self.demo,
                "format_version": self.meta.format_version,
                "provenance": self.meta.provenance,
            },
            "scan_backend": resolve_backend("auto", self.device),
            "device": str(self.device),
            "amp": self.amp,
            "compile": self.compile,
            "channels_last": use_channels_last(self.device),
            "threads": torch.get_num_threads(),
        }

    def sampling(self, options: PredictOptions | None = None) -> PredictOptions:
        """`options` with None replaced by this checkpoint's defaults: its DDIM steps, the tile `default_tile`
        makes of its training tile and inference scale (544 px for the demo weights, 288 px for the release's
        256 px at 2×), and an overlap of 32 px or a quarter of the tile when that is smaller."""
        meta = self.meta
        return (options or PredictOptions()).with_defaults(meta.steps, meta.tile, meta.inference_scale)

    def tile_model(self) -> TileModel:
        """This checkpoint as `predict_scene` runs it: its predictor, classes, palette, band counts,
        normalisation and inference scale."""
        meta = self.meta
        return TileModel(
            predictor=ModelPredictor(self.model, self.device, self.amp),
            classes=meta.classes,
            palette=meta.palette,
            opt_band_count=meta.config.opt_bands,
            sar_band_count=meta.config.sar_bands,
            normalise=checkpoint_normaliser(meta),
            inference_scale=meta.inference_scale,
        )

    def predict(
        self,
        opt_path: str | Path,
        sar_path: str | Path,
        outputs: PredictOutputs | str | Path,
        options: PredictOptions | None = None,
        *,
        progress: bool | ProgressCallback = True,
        on_domain: Callable[[DomainCheck], None] | None = None,
    ) -> PredictionResult:
        """Predict one scene with this checkpoint into `outputs` (a `PredictOutputs`, or the map's path; see
        `predict_scene`). Options left None take the checkpoint's values (`sampling`); band counts are checked
        against the checkpoint's; normalisation and inference scale come from it.

        Before any tile, the inputs are compared with the checkpoint's training data (`check_inputs`): the check
        goes into the run record (`domain`) and to `on_domain` (e.g. to warn); with `options.strict_inputs` a
        band unlike the training data is an `MdsegError` and nothing is written."""
        o = self.sampling(options)
        domain = self.check_inputs(opt_path, sar_path, o)
        if on_domain is not None:
            on_domain(domain)
        return predict_scene(
            opt_path,
            sar_path,
            outputs,
            self.tile_model(),
            o,
            device=self.device,
            progress=progress,
            run_info={**self.run_info(), "domain": domain.to_dict()},
        )

    def check_inputs(
        self, opt_path: str | Path, sar_path: str | Path, options: PredictOptions | None = None
    ) -> DomainCheck:
        """How a scene's bands compare with this checkpoint's training data (`mdseg.engine.domain`: one decimated
        read per file); `MdsegError` when one is far off and `options.strict_inputs`."""
        return check_inputs(opt_path, sar_path, self.meta, options)
