"""The fused two-stream backbone: one VMamba-v2 encoder per modality, DCF + DS-S4 fusion at every stage."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdseg.config import ModelConfig
from mdseg.errors import MdsegError
from mdseg.models.checkpointing import run_block
from mdseg.models.encoder import Downsample, Stem, VSSBlock, init_weights
from mdseg.models.fusion import DCF, DSS4, FusionBlock


def drop_path_schedule(config: ModelConfig) -> dict[str, list[list[float]]]:
    """Drop-path rate of every block, per stage, for "encoder", "dcf" and "dss4".

    As the release: one linear list 0 -> drop_path_rate over all encoder blocks; the fusion blocks reuse that
    same list by index (stage i's DCF blocks take entries sum(dcf_depths[:i]) onwards), so in `paper` DCF
    spans 0…0.21 and DS-S4 0…0.27.
    """
    total = sum(config.depths)
    rates = torch.linspace(0, config.drop_path_rate, total, device="cpu").tolist()
    schedule = {}
    for name, depths in (("encoder", config.depths), ("dcf", config.dcf_depths), ("dss4", config.dss4_depths)):
        if len(depths) != len(config.depths):
            raise MdsegError(f"{name} depths {depths} must have one entry per stage ({len(config.depths)} stages)")
        if sum(depths) > total:
            # the release would silently build fewer blocks here; refuse instead
            raise MdsegError(f"{name} depths {depths} have more blocks than the encoder's {total}; reduce them")
        schedule[name] = [rates[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(len(depths))]
    return schedule


class FusedStage(nn.Module):
    """One stage: (downsample) -> each stream's VSS blocks -> DCF blocks -> DS-S4 blocks -> residual.

    The fusion output is added back to the encoder output (o = fused + o, on top of the fusion blocks' own
    residuals, as the release). Returns both streams (B, H, W, d) and the feature LN_opt(a) + LN_sar(b).
    With `checkpoint_activations` set, training recomputes each block's activations in backward instead of
    keeping them (see `mdseg.models.checkpointing`).
    """

    checkpoint_activations = False

    def __init__(self, config: ModelConfig, index: int, rates: dict[str, list[list[float]]]) -> None:
        super().__init__()
        dim = config.stage_dims[index]
        d_inner = int(config.ssm_ratio * dim)
        ssm = (dim, d_inner, config.dt_rank[index], config.d_state)
        first = index == 0
        self.down_opt = None if first else Downsample(config.stage_dims[index - 1], dim)
        self.down_sar = None if first else Downsample(config.stage_dims[index - 1], dim)
        self.blocks_opt = nn.ModuleList(VSSBlock(*ssm, config.mlp_ratio, p) for p in rates["encoder"][index])
        self.blocks_sar = nn.ModuleList(VSSBlock(*ssm, config.mlp_ratio, p) for p in rates["encoder"][index])
        self.dcf = nn.ModuleList(FusionBlock(DCF, *ssm, config.mlp_ratio, p) for p in rates["dcf"][index])
        self.dss4 = nn.ModuleList(FusionBlock(DSS4, *ssm, config.mlp_ratio, p) for p in rates["dss4"][index])
        self.out_norm_opt = nn.LayerNorm(dim)
        self.out_norm_sar = nn.LayerNorm(dim)

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.down_opt is not None:
            a, b = self.down_opt(a), self.down_sar(b)
        ckpt = self.checkpoint_activations
        for block in self.blocks_opt:
            a = run_block(block, ckpt, a)
        for block in self.blocks_sar:
            b = run_block(block, ckpt, b)
        fa, fb = a, b
        for block in (*self.dcf, *self.dss4):
            fa, fb = run_block(block, ckpt, fa, fb)
        a, b = fa + a, fb + b
        feature = self.out_norm_opt(a) + self.out_norm_sar(b)
        return a, b, feature.permute(0, 3, 1, 2).contiguous()


class FusedBackbone(nn.Module):
    """Optical (B, opt_bands, H, W) + SAR (B, sar_bands, H, W) -> four fused features at strides 4, 8, 16, 32.

    Feature i is (B, stage_dims[i], H/4/2^i, W/4/2^i). H and W must be multiples of 32 (the full model pads).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        rates = drop_path_schedule(config)
        self.stem_opt = Stem(config.opt_bands, config.dims)
        self.stem_sar = Stem(config.sar_bands, config.dims)
        self.stages = nn.ModuleList(FusedStage(config, i, rates) for i in range(len(config.depths)))
        init_weights(self)

    @property
    def stride(self) -> int:
        """The input size must be a multiple of this."""
        return 4 * 2 ** (len(self.stages) - 1)

    def forward(self, opt: Tensor, sar: Tensor) -> list[Tensor]:
        self._check_inputs(opt, sar)
        a, b = self.stem_opt(opt), self.stem_sar(sar)
        features = []
        for stage in self.stages:
            a, b, feature = stage(a, b)
            features.append(feature)
        return features

    def _check_inputs(self, opt: Tensor, sar: Tensor) -> None:
        cfg = self.config
        if opt.dim() != 4 or opt.shape[1] != cfg.opt_bands:
            raise MdsegError(f"optical input must be (B, {cfg.opt_bands}, H, W), got {tuple(opt.shape)}")
        if sar.dim() != 4 or sar.shape[1] != cfg.sar_bands:
            raise MdsegError(f"SAR input must be (B, {cfg.sar_bands}, H, W), got {tuple(sar.shape)}")
        if opt.shape[0] != sar.shape[0] or opt.shape[2:] != sar.shape[2:]:
            raise MdsegError(f"optical {tuple(opt.shape)} and SAR {tuple(sar.shape)} must share batch and H×W")
        if opt.shape[2] % self.stride or opt.shape[3] % self.stride:
            raise MdsegError(f"backbone input H×W must be multiples of {self.stride}, got {tuple(opt.shape[2:])}")
