"""The authors' state dict → mdseg's: the model config read from tensor shapes, our key names, a report.

The key maps themselves live in `backbone.py` (encoders and fusion) and `head.py` (neck and heads); this module
splits a full release checkpoint between them, applies the caller's config overrides and checks every tensor
our backbone needs against the config the shapes describe. Nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from mdseg.config import ModelConfig
from mdseg.errors import MdsegError
from mdseg.models.backbone import FusedBackbone
from mdseg.release.backbone import infer_backbone_config, map_backbone_state_dict
from mdseg.release.head import map_head_keys

BACKBONE_PREFIX = "backbone."  # how a full release checkpoint names its backbone's keys, and how we name ours


@dataclass
class ConversionReport:
    """What `convert_release_state_dict` did with every release key."""

    mapped: int = 0  # release keys that became (part of) one of ours
    dropped: list[str] = field(default_factory=list)  # release weights we deliberately drop, with the reason
    dropped_params: int = 0
    unaccounted: list[str] = field(default_factory=list)  # release keys nothing explains
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"mapped {self.mapped} release tensors",
            f"dropped {len(self.dropped)} dead tensors ({self.dropped_params:,} parameters the release never uses)",
        ]
        out += [f"  dropped {d}" for d in self.dropped]
        out += [f"unaccounted: {k}" for k in self.unaccounted]
        return out + self.notes

    def __str__(self) -> str:
        return "\n".join(self.lines())


def convert_release_state_dict(
    sd: dict[str, Tensor], *, strict: bool = True, **overrides
) -> tuple[ModelConfig, dict[str, Tensor], ConversionReport]:
    """Turn the authors' weights into mdseg's: (model config, our state dict, report).

    `sd` is either a full release checkpoint's state dict (`backbone.*`, `neck.*`, `decode_head.*`, …) or a
    backbone-only one (no prefix). The config comes from the tensor shapes; `overrides` set the ModelConfig
    fields shapes cannot tell (e.g. `drop_path_rate`) and must agree with the shapes on the rest.
    Our backbone keys are prefixed `backbone.`. Keys nothing accounts for raise `MdsegError` unless
    `strict=False`. Works on `meta` tensors (shapes only).
    """
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise MdsegError(f"unknown model config fields {unknown}; choose from {sorted(known)}")
    full = any(k.startswith(BACKBONE_PREFIX) for k in sd)
    if full:
        backbone_sd = {k[len(BACKBONE_PREFIX) :]: v for k, v in sd.items() if k.startswith(BACKBONE_PREFIX)}
        rest = {k: v for k, v in sd.items() if not k.startswith(BACKBONE_PREFIX)}
    else:
        backbone_sd, rest = sd, {}

    values = infer_backbone_config(backbone_sd)
    imported = map_backbone_state_dict(backbone_sd)
    as_given = (lambda key: BACKBONE_PREFIX + key) if full else (lambda key: key)  # name keys as the user has them
    report = ConversionReport(
        mapped=len(imported.state_dict),
        dropped=[as_given(line) for line in imported.dropped],
        dropped_params=imported.dropped_params,
        unaccounted=[as_given(key) for key in imported.unaccounted],
    )
    ours = {BACKBONE_PREFIX + k: v for k, v in imported.state_dict.items()}

    if rest:
        head_values, head_sd, head_lines = map_head_keys(rest, **overrides)
        classifier_classes = values.get("num_classes")
        if classifier_classes is not None and head_values.get("num_classes", classifier_classes) != classifier_classes:
            report.notes.append(
                f"the release's unused backbone classifier has {classifier_classes} classes; the head's "
                f"{head_values['num_classes']} are used"
            )
        values.update(head_values)
        ours.update(head_sd)
        report.mapped += len(head_sd)
        report.notes += head_lines

    for name, value in overrides.items():
        if name in values and values[name] != value:
            raise MdsegError(f"override {name}={value!r} contradicts the checkpoint's shapes ({values[name]!r})")
    config = replace(ModelConfig(), **{**values, **overrides})
    _check_backbone_shapes(config, imported.state_dict)

    if report.unaccounted and strict:
        shown = ", ".join(report.unaccounted[:5]) + (" …" if len(report.unaccounted) > 5 else "")
        raise MdsegError(
            f"{len(report.unaccounted)} release keys are not understood ({shown}); pass strict=False to ignore them"
        )
    return config, ours, report


def _check_backbone_shapes(config: ModelConfig, imported: dict[str, Tensor]) -> None:
    """Every tensor our backbone needs is there with the right shape (else the config inference is wrong)."""
    with torch.device("meta"):
        expected = FusedBackbone(config).state_dict()
    missing = sorted(set(expected) - set(imported))
    if missing:
        raise MdsegError(f"release backbone lacks {len(missing)} tensors mdseg needs, e.g. {missing[0]!r}")
    for key, tensor in imported.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise MdsegError(
                f"release tensor for {key!r} has shape {tuple(tensor.shape)}, mdseg expects "
                f"{tuple(expected[key].shape)}: this release variant is not supported"
            )


__all__ = ["BACKBONE_PREFIX", "ConversionReport", "convert_release_state_dict"]
