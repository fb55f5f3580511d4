"""Import of the release's neck and head weights: the authors' key names → ours, sizes read from shapes.

`mdseg.release.convert.convert_release_state_dict` hands every key that does not start with `backbone.` here.
"""

from __future__ import annotations

import re
from dataclasses import fields

from torch import Tensor

from mdseg.config import ModelConfig
from mdseg.errors import MdsegError

_LAYER = r"decode_head\.encoder\.layers\.(\d+)\."
# (release pattern, our name), tried in order; each pattern matches whole keys
_RULES: list[tuple[str, str]] = [
    (r"neck\.0\.lateral_convs\.(\d+)\.conv\.(\w+)", r"neck.fpn.lateral.\1.conv.\2"),
    (r"neck\.0\.lateral_convs\.(\d+)\.gn\.(\w+)", r"neck.fpn.lateral.\1.norm.\2"),
    (r"neck\.0\.fpn_convs\.(\d+)\.conv\.(\w+)", r"neck.fpn.output.\1.conv.\2"),
    (r"neck\.0\.fpn_convs\.(\d+)\.gn\.(\w+)", r"neck.fpn.output.\1.norm.\2"),
    (r"neck\.1\.down\.conv\.(\w+)", r"neck.merge.conv.\1"),
    (r"neck\.1\.down\.gn\.(\w+)", r"neck.merge.norm.\1"),
    (r"embedding_table\.weight", "head.class_embedding.weight"),
    (r"transform\.conv\.(\w+)", r"head.input_proj.\1"),
    (r"time_mlp\.0\.weights", "head.time_embed.freqs"),
    (r"time_mlp\.1\.(\w+)", r"head.time_embed.fc1.\1"),
    (r"time_mlp\.3\.(\w+)", r"head.time_embed.fc2.\1"),
    (_LAYER + r"attentions\.0\.(\w+)\.(\w+)", r"head.denoiser.layers.\1.attn.\2.\3"),
    (_LAYER + r"norms\.0\.(\w+)", r"head.denoiser.layers.\1.norm1.\2"),
    (_LAYER + r"norms\.1\.(\w+)", r"head.denoiser.layers.\1.norm2.\2"),
    (_LAYER + r"ffns\.0\.layers\.0\.0\.(\w+)", r"head.denoiser.layers.\1.ffn.0.\2"),
    (_LAYER + r"ffns\.0\.layers\.1\.(\w+)", r"head.denoiser.layers.\1.ffn.2.\2"),
    (_LAYER + r"time_mlp\.1\.(\w+)", r"head.denoiser.layers.\1.modulation.1.\2"),
    (r"decode_head\.conv_seg\.(\w+)", r"head.denoiser.classifier.\1"),
    (r"auxiliary_head\.convs\.0\.conv\.(\w+)", r"aux_head.conv.\1"),
    (r"auxiliary_head\.convs\.0\.bn\.(\w+)", r"aux_head.bn.\1"),
    (r"auxiliary_head\.conv_seg\.(\w+)", r"aux_head.classifier.\1"),
]
_COMPILED = [(re.compile(pattern), name) for pattern, name in _RULES]
# what the weights cannot tell, and the release's values
_NOT_IN_SHAPES = {"head_heads": 8, "gn_groups": 32}


def _rename(key: str) -> str:
    for pattern, name in _COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(name, key)
    raise MdsegError(f"unexpected key {key!r} in the release checkpoint's neck/head; is it a MambaDiffusion DDP model?")


def _shape(head_sd: dict[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in head_sd:
        raise MdsegError(f"the release checkpoint lacks {key!r}; is it a MambaDiffusion DDP model?")
    return tuple(head_sd[key].shape)


def _infer_sizes(head_sd: dict[str, Tensor], overrides: dict) -> dict:
    """ModelConfig field values for the neck and head, from tensor shapes plus `overrides`."""
    attn = "decode_head.encoder.layers.0.attentions.0."
    sizes = {
        "neck_channels": _shape(head_sd, "neck.1.down.conv.weight")[0],
        "num_classes": _shape(head_sd, "decode_head.conv_seg.weight")[0],
        "head_layers": len({k.split(".")[3] for k in head_sd if k.startswith("decode_head.encoder.layers.")}),
        "head_ffn": _shape(head_sd, "decode_head.encoder.layers.0.ffns.0.layers.0.0.weight")[0],
        "learned_sinusoidal_dim": 2 * _shape(head_sd, "time_mlp.0.weights")[0],
    }
    heads = overrides.get("head_heads", _NOT_IN_SHAPES["head_heads"])
    if heads < 1:
        raise MdsegError(f"head_heads must be positive, got {heads}")
    samples = _shape(head_sd, attn + "attention_weights.weight")[0]  # heads · points (one level)
    if samples % heads or _shape(head_sd, attn + "sampling_offsets.weight")[0] != 2 * samples:
        raise MdsegError(f"the release's deformable attention has {samples} sampling points, not {heads} heads × k")
    sizes["head_heads"], sizes["head_points"] = heads, samples // heads
    sizes["gn_groups"] = overrides.get("gn_groups", _NOT_IN_SHAPES["gn_groups"])

    known = {f.name for f in fields(ModelConfig)}
    for name, value in overrides.items():
        if name not in known:
            raise MdsegError(f"unknown model setting {name!r} for the release import")
        if name in _NOT_IN_SHAPES:
            continue
        if name in sizes and sizes[name] != value:
            raise MdsegError(f"{name}={value} contradicts the release weights, which have {name}={sizes[name]}")

    classes = sizes["num_classes"]
    if _shape(head_sd, "embedding_table.weight")[0] != classes + 1:
        raise MdsegError(f"the release's class embedding does not have {classes} classes + 1 ignore row")
    if _shape(head_sd, "auxiliary_head.conv_seg.weight")[0] != classes:
        raise MdsegError(f"the release's auxiliary head does not have {classes} classes like its decode head")
    return sizes


def map_head_keys(head_sd: dict[str, Tensor], **overrides) -> tuple[dict, dict[str, Tensor], list[str]]:
    """Rename the release's neck/head tensors to ours and infer the head's settings.

    head_sd: the release's state dict without `backbone.` keys (`neck.0.*`, `neck.1.*`, `decode_head.*`,
    `auxiliary_head.*`, `embedding_table.weight`, `transform.*`, `time_mlp.*`). overrides: ModelConfig fields;
    those the shapes cannot tell are taken from here (`head_heads`, default 8; `gn_groups`, default 32), the
    inferred ones must agree with the shapes, the rest are left to the caller.
    Returns (ModelConfig field values, our state-dict entries with full-model keys, report lines).
    """
    sizes = _infer_sizes(head_sd, overrides)
    ours = {_rename(key): tensor for key, tensor in head_sd.items()}
    lateral = re.compile(r"neck\.0\.lateral_convs\.(\d+)\.conv\.weight")
    levels = sorted((int(m[1]), head_sd[m[0]].shape[1]) for k in head_sd if (m := lateral.fullmatch(k)))
    widths = tuple(width for _, width in levels)
    counts = {part: sum(k.startswith(part + ".") for k in ours) for part in ("neck", "head", "aux_head")}
    report = [
        f"neck: {counts['neck']} tensors, stage widths {widths} → {sizes['neck_channels']} channels, "
        f"GroupNorm {sizes['gn_groups']} groups (not stored in the weights)",
        f"diffusion head: {counts['head']} tensors, {sizes['head_layers']} layers, {sizes['head_heads']} heads "
        f"× {sizes['head_points']} points (heads not stored in the weights), FFN {sizes['head_ffn']}, "
        f"{sizes['num_classes']} classes",
        f"auxiliary head: {counts['aux_head']} tensors",
    ]
    return sizes, ours, report


__all__ = ["map_head_keys"]
