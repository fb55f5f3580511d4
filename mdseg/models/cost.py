"""What a model costs: parameters (ours and the release's) and FLOPs per tile, split by part.

FLOPs are counted by `torch.utils.flop_counter` (matrix products and convolutions; the selective scan's
elementwise recurrence, norms and activations are not counted) on the `meta` device, so even `paper`
is costed in seconds without allocating its weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from mdseg.config import ModelConfig
from mdseg.models.segmentor import build_model

_FUSION_BLOCK = re.compile(r"^FusedBackbone\.stages\.\d+\.(dcf|dss4)\.\d+$")


def release_dead_parameters(config: ModelConfig) -> int:
    """Parameters the authors' backbone holds but never uses, which we do not build.

    Per fusion module (two per block, one per stream): DCF's and DS-S4's projection of the discarded
    other-stream output (d_inner·dim each), and DS-S4's z half of the other stream's input projection
    (dim·d_inner); plus the backbone's unused classifier (LayerNorm + Linear to the classes).
    """
    dead = 0
    for dim, dcf, dss4 in zip(config.stage_dims, config.dcf_depths, config.dss4_depths, strict=True):
        d_inner = int(config.ssm_ratio * dim)
        dead += dcf * 2 * d_inner * dim
        dead += dss4 * 2 * 2 * d_inner * dim
    last = config.stage_dims[-1]
    return dead + 2 * last + last * config.num_classes + config.num_classes


@dataclass(frozen=True)
class ModelCost:
    """Parameters and GFLOPs of one model configuration for a square tile of `tile` pixels."""

    tile: int
    parameters: int
    release_parameters: int
    parameters_by_part: dict[str, int]
    gflops: dict[str, float]

    def gflops_total(self, steps: int) -> float:
        """Inference GFLOPs for `steps` DDIM steps: encoder, fusion and neck once, the head per step."""
        g = self.gflops
        return g["encoder"] + g["fusion"] + g["neck"] + steps * g["head per step"]


def _gflops(counter: FlopCounterMode, key: str | None = None) -> float:
    if key is None:
        return counter.get_total_flops() / 1e9
    return sum(counter.get_flop_counts().get(key, {}).values()) / 1e9


def model_cost(config: ModelConfig, tile: int = 256) -> ModelCost:
    """Count parameters and FLOPs of `config` on a (1, bands, tile, tile) input, on the meta device."""
    with torch.device("meta"):
        model = build_model(config).eval()
        opt = torch.empty(1, config.opt_bands, tile, tile)
        sar = torch.empty(1, config.sar_bands, tile, tile)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            features = model.backbone(opt, sar)
        backbone = _gflops(counter, "FusedBackbone")
        fusion = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if _FUSION_BLOCK.match(name))
        with FlopCounterMode(display=False) as counter:
            feature = model.neck(features)
        neck = _gflops(counter)
        with FlopCounterMode(display=False) as counter:
            model.sample_head(feature, torch.empty_like(feature), steps=1)
        head_step = _gflops(counter)
        with FlopCounterMode(display=False) as counter:
            model.aux_head(feature)
        aux = _gflops(counter)
    by_part = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in (("backbone", model.backbone), ("neck", model.neck), ("head", model.head))
    }
    by_part["aux head"] = sum(p.numel() for p in model.aux_head.parameters())
    parameters = sum(by_part.values())
    return ModelCost(
        tile=tile,
        parameters=parameters,
        release_parameters=parameters + release_dead_parameters(config),
        parameters_by_part=by_part,
        gflops={
            "encoder": backbone - fusion / 1e9,
            "fusion": fusion / 1e9,
            "neck": neck,
            "head per step": head_step,
            "aux head (training)": aux,
        },
    )
