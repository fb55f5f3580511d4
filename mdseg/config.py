"""Model presets and their settings, as plain dataclasses.

`paper` is exactly the released configuration (WHU-OPT-SAR: `ddp_fuse-mamba_4x4_256x256_160k_whu-fianl`);
`small` and `tiny` keep its structure at lower cost (`tiny` runs a 256×256 tile on a laptop CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from mdseg.errors import MdsegError


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a `MambaDiffusionSeg` (stored in checkpoint metadata)."""

    opt_bands: int = 4
    sar_bands: int = 1
    num_classes: int = 7
    # encoder (one per modality, VMamba-v2 style, stage widths dims·(1, 2, 4, 8))
    dims: int = 128
    depths: tuple[int, ...] = (2, 2, 15, 2)
    # fusion blocks per stage: DCF (double cross-fusion), then DS-S4 (dual-splitting S4)
    dcf_depths: tuple[int, ...] = (2, 2, 2, 2)
    dss4_depths: tuple[int, ...] = (2, 2, 4, 2)
    d_state: int = 1
    ssm_ratio: float = 2.0
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.6
    # neck: FPN + multi-stage merging to one map at stride 4
    neck_channels: int = 256
    gn_groups: int = 32
    # diffusion head (DDP style): deformable-attention denoiser at stride 4
    head_layers: int = 6
    head_heads: int = 8
    head_points: int = 4
    head_ffn: int = 1024
    bit_scale: float = 0.01
    learned_sinusoidal_dim: int = 16
    aux_weight: float = 0.4
    aux_dropout: float = 0.1

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.dims * 2**i for i in range(len(self.depths)))

    @property
    def dt_rank(self) -> tuple[int, ...]:
        """ceil(d/16) per stage, as the release's `ssm_dt_rank="auto"`."""
        return tuple(math.ceil(d / 16) for d in self.stage_dims)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MdsegError(f"model config has unknown fields {unknown}; was it written by a newer mdseg?")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "small": ModelConfig(
        dims=64,
        depths=(2, 2, 4, 2),
        dcf_depths=(1, 1, 1, 1),
        dss4_depths=(1, 1, 2, 1),
        drop_path_rate=0.2,
        neck_channels=128,
        gn_groups=16,
        head_layers=3,
        head_ffn=512,
    ),
    "tiny": ModelConfig(
        dims=24,
        depths=(1, 1, 2, 1),
        dcf_depths=(1, 1, 1, 1),
        dss4_depths=(1, 1, 1, 1),
        drop_path_rate=0.05,
        neck_channels=64,
        gn_groups=8,
        head_layers=2,
        head_heads=4,
        head_ffn=256,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset with band/class counts (or any field) overridden."""
    if name not in PRESETS:
        raise MdsegError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


__all__ = ["PRESETS", "ModelConfig", "preset"]
