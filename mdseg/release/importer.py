"""Import of the authors' released checkpoint (`.pth`) as an mdseg checkpoint: read, check, convert, write.

Reads with `torch.load(weights_only=True)` only, finds the state dict in an MMSegmentation checkpoint or a bare
one, refuses what cannot predict (a backbone alone, missing heads, keys nothing places, wrong shapes), converts
with `convert_release_state_dict`, and writes our format (`mdseg.checkpoint`) with the dataset's metadata from
`mdseg.data.catalog` and the release's test settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from mdseg.checkpoint import CheckpointMeta, save_checkpoint, sha256
from mdseg.config import ModelConfig
from mdseg.errors import CheckpointError, MdsegError, OptionError, OutputExistsError
from mdseg.release.convert import BACKBONE_PREFIX, ConversionReport, convert_release_state_dict

# The parts of a full release checkpoint besides the backbone (key prefixes) and what each is, for messages.
_RELEASE_PARTS = {
    "neck.": "neck",
    "decode_head.": "decode head",
    "auxiliary_head.": "auxiliary head",
    "embedding_table.": "class embedding",
    "transform.": "input transform",
    "time_mlp.": "time MLP",
}
logger = logging.getLogger(__name__)

# Facts of the release's own test setting, stored in imported checkpoints.
RELEASE_TILE, RELEASE_STEPS = 256, 3
# What an MMSegmentation checkpoint's `meta` may say that is worth keeping in our provenance.
_RELEASE_META_KEYS = ("iter", "epoch", "mmseg_version", "CLASSES", "PALETTE")


@dataclass
class ImportResult:
    """What `import_release_checkpoint` wrote: the checkpoint, its metadata, the conversion report and how many
    tensors the release's state dict held."""

    path: Path
    meta: CheckpointMeta
    report: ConversionReport
    release_tensors: int


def import_release_checkpoint(
    source: str | Path,
    out: str | Path,
    *,
    dataset: Literal["whu", "hunan"] = "whu",
    inference_scale: float = 2.0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Turn the authors' released checkpoint (`source`, a `.pth`) into an mdseg checkpoint at `out`.

    `source` is read with `torch.load(weights_only=True)` only (tensors and plain containers; nothing else is
    ever unpickled): an MMSegmentation checkpoint (`{"state_dict", "meta", "optimizer"}`; only the state dict
    is used) or a bare state dict, keys optionally prefixed `module.`. Every release key must be mapped
    (`convert_release_state_dict`) or dropped as dead; every tensor our model needs must be there with the
    right shape. The metadata takes `dataset`'s classes, palette, band names and normalisation from
    `mdseg.data.catalog`, `inference_scale` (2.0: the authors test WHU's 256² tiles upsampled to 512²), tile
    256 px, 3 DDIM steps, and provenance (source file name and SHA-256, conversion summary). The write is
    atomic; an existing `out` is refused unless `overwrite`. `progress(line)` is called as each step starts
    (reading, converting, writing), the same lines going to this module's logger at INFO.

    Raises `OutputExistsError`, and `CheckpointError` naming `source` for a file `torch.load` cannot read
    with `weights_only=True`, one without a state dict, a backbone-only state dict (it cannot predict), keys
    nothing accounts for, shapes that do not fit, and a class or band count other than `dataset`'s.
    """
    from mdseg.models import MambaDiffusionSeg  # the model stack is imported only when weights are built

    source, out = Path(source), Path(out)
    if not inference_scale > 0:
        raise OptionError(f"inference_scale must be positive, got {inference_scale}")
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"Output '{out}' already exists; remove it, or pass --overwrite (overwrite=True in Python)."
        )
    if not source.is_file():
        raise CheckpointError(f"release checkpoint '{source}' does not exist; check the path.")

    def step(line: str) -> None:
        logger.info("import-weights: %s", line)
        if progress is not None:
            progress(line)

    step(f"reading {source} (torch.load, weights only)")
    loaded = _torch_load_weights_only(source)
    sd, release_meta = _release_state_dict(loaded, source)
    _check_release_parts(sd, source)
    step(f"converting {len(sd)} release tensors")
    try:
        config, ours, report = convert_release_state_dict(sd, strict=False)
    except MdsegError as exc:
        raise CheckpointError(f"release checkpoint '{source}': {exc}") from None
    if report.unaccounted:
        shown = ", ".join(report.unaccounted[:5]) + (" …" if len(report.unaccounted) > 5 else "")
        raise CheckpointError(
            f"release checkpoint '{source}' holds {len(report.unaccounted)} tensors mdseg cannot place ({shown}); "
            "it is not the released MambaDiffusion model."
        )
    with torch.device("meta"):
        model = MambaDiffusionSeg(config)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    wrong = [k for k in expected if k in ours and tuple(ours[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else []
        parts += [f"{len(wrong)} of the wrong shape (e.g. {wrong[0]!r})"] if wrong else []
        raise CheckpointError(
            f"release checkpoint '{source}' does not fit the model its shapes describe: {', '.join(parts)} tensors."
        )
    meta = _release_meta(config, dataset, inference_scale, source, report, len(sd), release_meta)
    state = {k: (v.to(expected[k].dtype) if v.is_floating_point() else v).contiguous() for k, v in ours.items()}
    model.load_state_dict(state, assign=True)
    step(f"writing {out}")
    save_checkpoint(out, model, meta, overwrite=overwrite)
    return ImportResult(path=out, meta=meta, report=report, release_tensors=len(sd))


def _torch_load_weights_only(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` on CPU (memory-mapped for zip-format files); `CheckpointError`
    when it fails, whatever the reason: the file is not a checkpoint, or holds objects we refuse to unpickle."""
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes from the weights-only unpickler
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"release checkpoint '{path}' holds Python objects besides tensors and plain containers; mdseg reads "
            "checkpoints only with torch.load(weights_only=True) and never unpickles anything else."
        ) from None
    except Exception as exc:  # torch.load fails in many ways (KeyError, RuntimeError, EOFError …) on non-checkpoints
        why = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"'{path}' is not a PyTorch checkpoint torch.load(weights_only=True) can read ({type(exc).__name__}: "
            f"{why}); give the authors' released .pth file."
        ) from None


def _release_state_dict(loaded: Any, path: Path) -> tuple[dict[str, Tensor], dict]:
    """(state dict without a `module.` prefix, the MMSegmentation `meta` or {}) of what `torch.load` gave."""
    meta: dict = {}
    sd = loaded
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        sd = loaded["state_dict"]
        meta = loaded.get("meta") if isinstance(loaded.get("meta"), dict) else {}
    if (
        not isinstance(sd, dict)
        or not sd
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items())
    ):
        raise CheckpointError(
            f"'{path}' holds no state dict (neither a dict of tensors nor an MMSegmentation checkpoint with "
            "'state_dict'); give the authors' released .pth file."
        )
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd), meta


def _check_release_parts(sd: dict[str, Tensor], path: Path) -> None:
    """A predict checkpoint needs the backbone, neck and heads; say which parts `sd` lacks."""
    has_backbone = any(k.startswith(BACKBONE_PREFIX) for k in sd)
    missing = [name for prefix, name in _RELEASE_PARTS.items() if not any(k.startswith(prefix) for k in sd)]
    if has_backbone and not missing:
        return
    if not has_backbone and any(k.startswith(("patch_embed_", "layers_", "fuse_layers")) for k in sd):
        what = "only the backbone (encoders and fusion)"
        missing = list(_RELEASE_PARTS.values())
    else:
        missing = (["backbone"] if not has_backbone else []) + missing
        what = "an incomplete model"
    raise CheckpointError(
        f"release checkpoint '{path}' holds {what}; predicting also needs the {', '.join(missing)}. "
        "Import the full MMSegmentation checkpoint of the trained model."
    )


def _release_meta(
    config: ModelConfig,
    dataset: str,
    inference_scale: float,
    source: Path,
    report: ConversionReport,
    release_tensors: int,
    release_meta: dict,
) -> CheckpointMeta:
    """Our metadata for an imported release model of `dataset` ("whu" or "hunan", see `mdseg.data.catalog`)."""
    from mdseg.data import catalog

    known = {
        "whu": ("WHU-OPT-SAR", catalog.WHU_CLASSES, catalog.WHU_PALETTE, catalog.WHU_OPT_BANDS, catalog.WHU_SAR_BANDS,
                catalog.WHU_NORMALISATION),
        "hunan": ("Hunan", catalog.HUNAN_CLASSES, catalog.HUNAN_PALETTE, catalog.HUNAN_OPT_BANDS,
                  catalog.HUNAN_SAR_BANDS, catalog.HUNAN_NORMALISATION),
    }  # fmt: skip
    if dataset not in known:
        raise CheckpointError(f"unknown dataset {dataset!r} for imported weights; choose from {sorted(known)}")
    name, classes, palette, opt_names, sar_names, normalisation = known[dataset]
    got = (config.num_classes, config.opt_bands, config.sar_bands)
    if got != (len(classes), len(opt_names), len(sar_names)):
        raise CheckpointError(
            f"release checkpoint '{source}' has {got[0]} classes, {got[1]} optical and {got[2]} SAR bands; {name} "
            f"has {len(classes)} classes, {len(opt_names)} optical and {len(sar_names)} SAR bands. Pick the "
            "dataset the weights were trained on."
        )
    kept = {k: _plain(release_meta[k]) for k in _RELEASE_META_KEYS if k in release_meta}
    provenance = {
        "source": source.name,
        "source_sha256": sha256(source),
        "note": "imported from the authors' release (WenliangDu/MambaDiffusion)",
        "dataset": name,
        "conversion": {
            "release_tensors": release_tensors,
            "mapped": report.mapped,
            "dropped": len(report.dropped),
            "dropped_parameters": report.dropped_params,
            "unaccounted": len(report.unaccounted),
        },
        **({"release_meta": kept} if kept else {}),
    }
    return CheckpointMeta(
        config=config,
        classes=classes,
        palette=palette,
        opt_band_names=opt_names,
        sar_band_names=sar_names,
        normalisation=normalisation,
        sar_scale="db",
        tile=RELEASE_TILE,
        inference_scale=inference_scale,
        steps=RELEASE_STEPS,
        provenance=provenance,
    )


def _plain(value: Any) -> Any:
    """`value` as JSON-ready data (tuples become lists, tensors their shape description, other objects text)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


__all__ = ["RELEASE_STEPS", "RELEASE_TILE", "ImportResult", "import_release_checkpoint"]
