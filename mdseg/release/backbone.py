"""Import of the authors' `Fusion_VSSM` backbone weights: key names, shapes, and the weights we drop.

Keys here carry no `backbone.` prefix (a full checkpoint's prefix is stripped by `mdseg.release.convert`).
The release stacks optical + SAR into one tensor and splits it [4, 1] (WHU) or [13, 2] (Hunan); its stems
`patch_embed_A` / `patch_embed_B` are built with exactly those input channels, so the band counts can be
read from their first convolution's weight.

Weights the release holds but never uses (its outputs are computed and discarded, or never computed):
each fusion module's `out_proj_b`, the z half of every DS-S4 module's `in_proj_b` (rows d_inner:),
and the ImageNet-style `classifier`. We drop them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import Tensor

from mdseg.errors import MdsegError

# release stage-level names -> ours
_STEM = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"}
_STREAM = {"a": "opt", "b": "sar", "A": "opt", "B": "sar"}
# SS2D internals: release (VSSBlock.op / fusion module) -> ours (relative to ss2d / mixer)
_CORE = {
    "x_proj_weight": "core.x_proj_weight",
    "dt_projs_weight": "core.dt_proj_weight",
    "dt_projs_bias": "core.dt_proj_bias",
    "A_logs": "core.A_log",
    "Ds": "core.D",
    "out_norm.weight": "core.out_norm.weight",
    "out_norm.bias": "core.out_norm.bias",
}
_SS2D = {
    **_CORE,
    "in_proj.weight": "in_proj.weight",
    "conv2d.weight": "conv.weight",
    "out_proj.weight": "out_proj.weight",
}
_MIXER = {
    **_CORE,
    "in_proj_a.weight": "in_proj_own.weight",
    "in_proj_b.weight": "in_proj_other.weight",
    "conv2d_a.weight": "conv_own.weight",
    "conv2d_b.weight": "conv_other.weight",
    "out_proj_a.weight": "out_proj.weight",
}
_BLOCK_NORMS = {"norm": "norm1", "norm2": "norm2"}

_RE_STEM = re.compile(r"patch_embed_([AB])\.(\d+)\.(weight|bias)")
_RE_DOWN = re.compile(r"layers_([ab])\.(\d+)\.downsample\.([13])\.(weight|bias)")
_RE_BLOCK = re.compile(r"layers_([ab])\.(\d+)\.blocks\.(\d+)\.(.+)")
_RE_FUSE = re.compile(r"(fuse_layers|fuse_layersv2)\.(\d+)\.blocks\.(\d+)\.(.+)")
_RE_OUTNORM = re.compile(r"outnorm_([ab])(\d+)\.(weight|bias)")
_RE_DEAD_FUSE = re.compile(r"fuse_layers(v2)?\.\d+\.blocks\.\d+\.m_[ab]\.out_proj_b\.weight")


@dataclass
class BackboneImport:
    """The outcome of mapping a release backbone state dict (keys without the `backbone.` prefix)."""

    state_dict: dict[str, Tensor] = field(default_factory=dict)  # our keys (no prefix) -> tensors
    dropped: list[str] = field(default_factory=list)  # release weights we deliberately drop, and why
    dropped_params: int = 0  # how many numbers those are
    unaccounted: list[str] = field(default_factory=list)  # release keys we do not understand


def _block_key(rest: str) -> str | None:
    """Name inside one encoder VSS block, e.g. `op.in_proj.weight` -> `ss2d.in_proj.weight`."""
    head, _, tail = rest.partition(".")
    if head in _BLOCK_NORMS and tail in ("weight", "bias"):
        return f"{_BLOCK_NORMS[head]}.{tail}"
    if head == "mlp" and re.fullmatch(r"fc[12]\.(weight|bias)", tail):
        return f"mlp.{tail}"
    if head == "op" and tail in _SS2D:
        return f"ss2d.{_SS2D[tail]}"
    return None


def _fusion_key(rest: str) -> str | None:
    """Name inside one fusion block, e.g. `m_b.conv2d_a.weight` -> `mix_sar.conv_own.weight`."""
    m = re.fullmatch(r"(norm|norm2)_([AB])\.(weight|bias)", rest)
    if m:
        return f"{_BLOCK_NORMS[m[1]]}_{_STREAM[m[2]]}.{m[3]}"
    m = re.fullmatch(r"mlp_([AB])\.(fc[12]\.(?:weight|bias))", rest)
    if m:
        return f"mlp_{_STREAM[m[1]]}.{m[2]}"
    m = re.fullmatch(r"m_([ab])\.(.+)", rest)
    if m and m[2] in _MIXER:
        return f"mix_{_STREAM[m[1]]}.{_MIXER[m[2]]}"
    return None


def map_backbone_state_dict(sd: dict[str, Tensor]) -> BackboneImport:
    """Rename release backbone keys to ours, slice DS-S4's `in_proj_b` to its used x half, drop dead weights.

    Works on real or `meta` tensors. Keys it cannot place end up in `unaccounted`.
    """
    out = BackboneImport()

    def drop(key: str, tensor: Tensor, why: str) -> None:
        out.dropped.append(f"{key} {tuple(tensor.shape)}: {why}")
        out.dropped_params += tensor.numel()

    for key, tensor in sd.items():
        if key.startswith("classifier."):
            drop(key, tensor, "the release's unused ImageNet classifier")
            continue
        if _RE_DEAD_FUSE.fullmatch(key):
            drop(key, tensor, "projects the other stream's scan output, which the release discards")
            continue
        ours = _map_key(key)
        if ours is None:
            out.unaccounted.append(key)
            continue
        if key.startswith("fuse_layersv2.") and key.endswith("in_proj_b.weight"):
            # rows [:d_inner] are the other stream's x; rows [d_inner:] its z, which the release discards
            d_inner = tensor.shape[0] // 2
            dead = tensor[d_inner:]
            out.dropped.append(f"{key}[{d_inner}:] {tuple(dead.shape)}: the other stream's z, never used")
            out.dropped_params += dead.numel()
            tensor = tensor[:d_inner]
        out.state_dict[ours] = tensor
    return out


def _map_key(key: str) -> str | None:
    m = _RE_STEM.fullmatch(key)
    if m and m[2] in _STEM:
        return f"stem_{_STREAM[m[1]]}.{_STEM[m[2]]}.{m[3]}"
    m = _RE_DOWN.fullmatch(key)
    if m:
        # the release downsamples at the end of stage i; ours at the start of stage i + 1
        part = "conv" if m[3] == "1" else "norm"
        return f"stages.{int(m[2]) + 1}.down_{_STREAM[m[1]]}.{part}.{m[4]}"
    m = _RE_BLOCK.fullmatch(key)
    if m:
        inner = _block_key(m[4])
        return None if inner is None else f"stages.{m[2]}.blocks_{_STREAM[m[1]]}.{m[3]}.{inner}"
    m = _RE_FUSE.fullmatch(key)
    if m:
        inner = _fusion_key(m[4])
        kind = "dcf" if m[1] == "fuse_layers" else "dss4"
        return None if inner is None else f"stages.{m[2]}.{kind}.{m[3]}.{inner}"
    m = _RE_OUTNORM.fullmatch(key)
    if m:
        return f"stages.{m[2]}.out_norm_{_STREAM[m[1]]}.{m[3]}"
    return None


def _count_blocks(sd: dict[str, Tensor], pattern: str, stages: int) -> tuple[int, ...]:
    blocks: dict[int, set[int]] = {i: set() for i in range(stages)}
    for key in sd:
        m = re.match(pattern, key)
        if m and int(m[1]) < stages:
            blocks[int(m[1])].add(int(m[2]))
    return tuple(len(blocks[i]) for i in range(stages))


def _shape(sd: dict[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise MdsegError(f"this does not look like a release backbone: key {key!r} is missing")
    return tuple(sd[key].shape)


def infer_backbone_config(sd: dict[str, Tensor]) -> dict:
    """ModelConfig field values the backbone's shapes determine (release keys, no prefix).

    Gives dims, depths, dcf_depths, dss4_depths, d_state, ssm_ratio, mlp_ratio, opt_bands, sar_bands, and
    num_classes when the release's (unused) classifier is present. drop_path_rate cannot be told.
    """
    stages = len({int(m[1]) for k in sd if (m := re.match(r"outnorm_a(\d+)\.", k))})
    if stages == 0:
        raise MdsegError("this does not look like a release backbone: no outnorm_a* keys")
    dims = _shape(sd, "patch_embed_A.5.weight")[0]
    depths = _count_blocks(sd, r"layers_a\.(\d+)\.blocks\.(\d+)\.", stages)
    if _count_blocks(sd, r"layers_b\.(\d+)\.blocks\.(\d+)\.", stages) != depths:
        raise MdsegError("release backbone has different optical and SAR encoder depths; mdseg cannot hold that")
    d_inner, _ = _shape(sd, "layers_a.0.blocks.0.op.in_proj.weight")
    d_state = _shape(sd, "layers_a.0.blocks.0.op.A_logs")[1]
    values = {
        "dims": dims,
        "depths": depths,
        "dcf_depths": _count_blocks(sd, r"fuse_layers\.(\d+)\.blocks\.(\d+)\.", stages),
        "dss4_depths": _count_blocks(sd, r"fuse_layersv2\.(\d+)\.blocks\.(\d+)\.", stages),
        "d_state": d_state,
        "ssm_ratio": d_inner / dims,
        "mlp_ratio": _shape(sd, "layers_a.0.blocks.0.mlp.fc1.weight")[0] / dims,
        "opt_bands": _shape(sd, "patch_embed_A.0.weight")[1],
        "sar_bands": _shape(sd, "patch_embed_B.0.weight")[1],
    }
    if "classifier.head.weight" in sd:
        values["num_classes"] = _shape(sd, "classifier.head.weight")[0]
    return values


__all__ = ["BackboneImport", "infer_backbone_config", "map_backbone_state_dict"]
