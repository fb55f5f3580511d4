"""Checkpoints in mdseg's own format: save, load, read and rewrite the metadata, the shipped demo weights.

Format (version 1): one `*.safetensors` file. The tensors are the model's state dict (float32, or float16 /
bfloat16 to halve the size; loading always gives float32). The safetensors header's metadata holds one string
field, `mdseg`: the JSON of `CheckpointMeta.to_dict()` (model config, classes, palette, band names and order,
normalisation, SAR scale, tile size, inference scale, default sampling steps, provenance, format version and,
optionally, the training data's per-band statistics), so a single file carries everything `predict` needs.
Loading never unpickles anything.

The authors' released weights are turned into this format by `mdseg.release`, which builds on this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mdseg.config import ModelConfig
from mdseg.data.normalise import Normalisation
from mdseg.data.stats import InputStats
from mdseg.errors import CheckpointError, MdsegError
from mdseg.io.atomic import AtomicOutputs
from mdseg.io.failures import writing

FORMAT_VERSION = 1
METADATA_KEY = "mdseg"  # the safetensors header metadata field that holds the JSON metadata
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "demo_tiny.safetensors"


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything besides the weights that running a checkpoint needs.

    `palette`: one (r, g, b) 0–255 per class. `opt_band_names` / `sar_band_names`: the bands the model was
    trained on, in the order it expects them. `normalisation`: per-band mean and std in read units (SAR in dB),
    divided by as given. `sar_scale`: the SAR scale the *model* expects ("db" or "linear"). `tile`: tile size
    in px the model was trained for; `inference_scale`: input resampling factor before the model (2.0 for the
    authors' WHU weights); `steps`: default DDIM steps; `provenance`: free-form training facts (data, iteration,
    val mIoU, command …). `input_stats`: what the training data looked like per band (mean, std, range, dtype,
    1st / 50th / 99th percentiles; SAR in dB), for predict's check of a scene's inputs; None in checkpoints
    written before mdseg stored it (the check then has the normalisation's mean and std alone).
    """

    config: ModelConfig
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    opt_band_names: Sequence[str]
    sar_band_names: Sequence[str]
    normalisation: Normalisation
    sar_scale: Literal["db", "linear"] = "db"
    tile: int = 256
    inference_scale: float = 1.0
    steps: int = 3
    provenance: dict[str, Any] = field(default_factory=dict)
    input_stats: InputStats | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_meta(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the checkpoint header stores)."""
        return {
            "format_version": self.format_version,
            "model": self.config.to_dict(),
            "classes": list(self.classes),
            "palette": [list(map(int, rgb)) for rgb in self.palette],
            "bands": {"optical": list(self.opt_band_names), "sar": list(self.sar_band_names)},
            "normalisation": self.normalisation.to_dict(),
            "sar_scale": self.sar_scale,
            "tile": self.tile,
            "inference_scale": self.inference_scale,
            "steps": self.steps,
            "provenance": self.provenance,
            # optional: absent (not null) when unknown, so older mdseg versions read the file as before
            **({"input_stats": self.input_stats.to_dict()} if self.input_stats is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        """Rebuild from `to_dict()` output; `CheckpointError` naming `source` when a field is missing or wrong."""
        try:
            version = int(data["format_version"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{source} metadata has no valid format_version; it was not written by mdseg."
            ) from None
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has metadata format {version}, newer than this mdseg reads "
                f"({FORMAT_VERSION}); upgrade mdseg."
            )
        try:
            return cls(
                config=ModelConfig.from_dict(data["model"]),
                classes=[str(c) for c in data["classes"]],
                palette=[tuple(int(v) for v in rgb) for rgb in data["palette"]],
                opt_band_names=[str(b) for b in data["bands"]["optical"]],
                sar_band_names=[str(b) for b in data["bands"]["sar"]],
                normalisation=Normalisation.from_dict(data["normalisation"]),
                sar_scale=data["sar_scale"],
                tile=int(data["tile"]),
                inference_scale=float(data["inference_scale"]),
                steps=int(data["steps"]),
                provenance=dict(data.get("provenance") or {}),
                input_stats=InputStats.from_dict(data["input_stats"]) if data.get("input_stats") else None,
                format_version=version,
            )
        except MdsegError as exc:  # the config's or `_check_meta`'s complaint, said about this file
            raise CheckpointError(f"{source}: {exc}") from None
        except KeyError as exc:
            raise CheckpointError(f"{source} metadata lacks the field {exc}; it was not written by mdseg.") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source} has invalid metadata: {exc}") from None


def _check_meta(meta: CheckpointMeta) -> None:
    """Counts agree with the model config and values are in range; `CheckpointError` otherwise."""
    c, n = meta.config, meta.normalisation
    problems = []
    if len(meta.classes) != c.num_classes:
        problems.append(f"{len(meta.classes)} class names for {c.num_classes} classes")
    if len(meta.palette) != len(meta.classes) or any(
        len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb) for rgb in meta.palette
    ):
        problems.append("the palette needs one (r, g, b) triple of 0–255 values per class")
    for what, modality, names, count, mean, std in (
        ("optical", "optical", meta.opt_band_names, c.opt_bands, n.opt_mean, n.opt_std),
        ("SAR", "sar", meta.sar_band_names, c.sar_bands, n.sar_mean, n.sar_std),
    ):
        if len(names) != count:
            problems.append(f"{len(names)} {what} band names for {count} {what} bands")
        if len(mean) != count or len(std) != count:
            problems.append(f"{what} normalisation needs {count} means and stds, got {len(mean)} and {len(std)}")
        if any(not math.isfinite(float(s)) or float(s) == 0.0 for s in std):
            problems.append(f"{what} normalisation has a zero or non-finite std")
        if meta.input_stats is not None and len(meta.input_stats.of(modality)) != count:
            problems.append(f"{len(meta.input_stats.of(modality))} {what} bands of input statistics for {count}")
    if meta.sar_scale not in ("db", "linear"):
        problems.append(f"sar_scale must be 'db' or 'linear', not {meta.sar_scale!r}")
    if meta.tile < 1 or meta.steps < 1 or not meta.inference_scale > 0:
        problems.append("tile, steps and inference_scale must be positive")
    if problems:
        raise CheckpointError("checkpoint metadata is inconsistent: " + "; ".join(problems))


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    metadata: CheckpointMeta,
    *,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = True,
) -> Path:
    """Write `model`'s weights and `metadata` to one `.safetensors` file (atomically; an existing file is
    replaced, or refused with `OutputExistsError` when `overwrite` is False).

    `dtype` stores floating-point weights as float32 (default), float16 or bfloat16 (half the size; loading
    converts back to float32). The model's own config must equal `metadata.config`.
    """
    model_config = getattr(model, "config", None)
    if model_config != metadata.config:
        raise CheckpointError("the metadata's model config differs from the model's own; pass the model's config")
    tensors = {
        # clone: safetensors refuses views that share storage
        key: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).cpu().contiguous().clone()
        for key, t in model.state_dict().items()
    }
    path = Path(path)
    with AtomicOutputs(overwrite=overwrite) as outputs, writing(path, "checkpoint", also=(SafetensorError,)):
        save_file(tensors, str(outputs.reserve(path)), metadata={METADATA_KEY: json.dumps(metadata.to_dict())})
    return path


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint, without reading its weights."""
    path = _existing(path)
    with _open_safetensors(path) as f:
        return _meta_of(f, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """Load a checkpoint written by `save_checkpoint`: (model in eval mode on `device`, float32; metadata).

    Refuses, with a `CheckpointError` naming the file: a missing file, one that is not safetensors, one without
    valid mdseg metadata, and weights that do not fit the metadata's model config (missing, unexpected or
    wrongly shaped tensors).
    """
    from mdseg.models import MambaDiffusionSeg  # the model stack is imported only when weights are loaded

    path = _existing(path)
    with _open_safetensors(path) as f:
        meta = _meta_of(f, path)
        with torch.device("meta"):  # shapes only: no time spent on a random init that is overwritten anyway
            model = MambaDiffusionSeg(meta.config)
        expected = model.state_dict()
        stored = set(f.keys())
        missing, unexpected = sorted(set(expected) - stored), sorted(stored - set(expected))
        if missing or unexpected:
            parts = [f"{len(missing)} missing (e.g. {missing[0]!r})"] if missing else []
            parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else []
            raise CheckpointError(
                f"weights in '{path}' do not match its model config: {', '.join(parts)} tensors; "
                "the file is damaged or its metadata belongs to another model."
            )
        state = {}
        for key, want in expected.items():
            tensor = f.get_tensor(key)
            if tuple(tensor.shape) != tuple(want.shape):
                raise CheckpointError(
                    f"weight {key!r} in '{path}' has shape {tuple(tensor.shape)} but its model config needs "
                    f"{tuple(want.shape)}; the file is damaged or its metadata belongs to another model."
                )
            # An owned copy: safetensors' tensors may view one buffer at the file's offsets, and BLAS kernels take
            # other paths (other rounding) for weights not aligned as the allocator aligns them — the loaded model
            # must compute bit for bit what the model that was saved computes (training validation vs eval).
            state[key] = tensor.to(want.dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
    model.load_state_dict(state, assign=True)
    return model.to(device).eval(), meta


def rewrite_metadata(path: str | Path, metadata: CheckpointMeta, out: str | Path | None = None) -> Path:
    """Replace the mdseg metadata of the checkpoint at `path` with `metadata`, leaving every tensor's bytes as
    they are (dtype, shape and data copied verbatim: only the safetensors header changes). Writes `out` (default:
    `path` itself), all or nothing. `CheckpointError` when `metadata` describes another model than the file's."""
    path = _existing(path)
    old = read_checkpoint_meta(path)
    if metadata.config != old.config:
        raise CheckpointError(f"the new metadata's model config differs from the one of '{path}'; its weights stay")
    target = Path(out) if out is not None else path
    # the files close before the outputs commit (exits run last to first): the rename never meets an open file
    with (
        AtomicOutputs(overwrite=True) as outputs,
        open(path, "rb") as src,
        open(outputs.reserve(target), "wb") as dst,
    ):
        size = int.from_bytes(src.read(8), "little")
        header = json.loads(src.read(size))
        header["__metadata__"] = {**header.get("__metadata__", {}), METADATA_KEY: json.dumps(metadata.to_dict())}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # safetensors keeps the data that follows 8-byte aligned
        dst.write(len(text).to_bytes(8, "little") + text)
        while block := src.read(1 << 20):  # tensor offsets count from the end of the header: unchanged
            dst.write(block)
    return target


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read `chunk` bytes at a time (for run records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def demo_checkpoint() -> Path:
    """The demo weights shipped inside the package; `CheckpointError` when this install has none."""
    if not DEMO_CHECKPOINT.is_file():
        raise CheckpointError(
            f"no demo weights in this install ({DEMO_CHECKPOINT} is missing); pass --checkpoint with a "
            "checkpoint written by mdseg."
        )
    return DEMO_CHECKPOINT


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path.")
    return path


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is not a safetensors file ({exc}); mdseg reads only .safetensors checkpoints "
            "(import the authors' .pth with `mdseg import-weights`)."
        ) from None


def _meta_of(f: Any, path: Path) -> CheckpointMeta:
    text = (f.metadata() or {}).get(METADATA_KEY)
    if text is None:
        raise CheckpointError(
            f"checkpoint '{path}' has no mdseg metadata (header field '{METADATA_KEY}'); it was not written by mdseg."
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint '{path}' has unreadable mdseg metadata ({exc}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint '{path}' has mdseg metadata that is not a JSON object.")
    return CheckpointMeta.from_dict(data, source=f"checkpoint '{path}'")


__all__ = [
    "DEMO_CHECKPOINT",
    "FORMAT_VERSION",
    "CheckpointMeta",
    "demo_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "rewrite_metadata",
    "save_checkpoint",
    "sha256",
]
