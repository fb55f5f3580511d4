"""Checkpoints: mdseg's own format (save / load) and import of the authors' released weights.

Format (version 1): one `*.safetensors` file. The tensors are the model's state dict (float32, or float16 /
bfloat16 to halve the size; loading always gives float32). The safetensors header's metadata holds one string
field, `mdseg`: the JSON of `CheckpointMeta.to_dict()` (model config, classes, palette, band names and order,
normalisation, SAR scale, tile size, inference scale, default sampling steps, provenance, format version), so
a single file carries everything `predict` needs. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from mdseg.config import ModelConfig
from mdseg.data.normalise import Normalisation
from mdseg.errors import CheckpointError, MdsegError, OptionError, OutputExistsError
from mdseg.io.atomic import AtomicOutputs
from mdseg.models.backbone import FusedBackbone
from mdseg.models.release_backbone import infer_backbone_config, map_backbone_state_dict

_BACKBONE_PREFIX = "backbone."


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
    full = any(k.startswith(_BACKBONE_PREFIX) for k in sd)
    if full:
        backbone_sd = {k[len(_BACKBONE_PREFIX) :]: v for k, v in sd.items() if k.startswith(_BACKBONE_PREFIX)}
        rest = {k: v for k, v in sd.items() if not k.startswith(_BACKBONE_PREFIX)}
    else:
        backbone_sd, rest = sd, {}

    values = infer_backbone_config(backbone_sd)
    imported = map_backbone_state_dict(backbone_sd)
    as_given = (lambda key: _BACKBONE_PREFIX + key) if full else (lambda key: key)  # name keys as the user has them
    report = ConversionReport(
        mapped=len(imported.state_dict),
        dropped=[as_given(line) for line in imported.dropped],
        dropped_params=imported.dropped_params,
        unaccounted=[as_given(key) for key in imported.unaccounted],
    )
    ours = {_BACKBONE_PREFIX + k: v for k, v in imported.state_dict.items()}

    if rest:
        # the neck and head importer is only needed (and imported) for full checkpoints
        from mdseg.models.release_head import map_head_keys

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
    val mIoU, command …).
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
    for what, names, count, mean, std in (
        ("optical", meta.opt_band_names, c.opt_bands, n.opt_mean, n.opt_std),
        ("SAR", meta.sar_band_names, c.sar_bands, n.sar_mean, n.sar_std),
    ):
        if len(names) != count:
            problems.append(f"{len(names)} {what} band names for {count} {what} bands")
        if len(mean) != count or len(std) != count:
            problems.append(f"{what} normalisation needs {count} means and stds, got {len(mean)} and {len(std)}")
        if any(not math.isfinite(float(s)) or float(s) == 0.0 for s in std):
            problems.append(f"{what} normalisation has a zero or non-finite std")
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
    with AtomicOutputs(overwrite=overwrite) as outputs:
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
            state[key] = tensor.to(want.dtype) if tensor.is_floating_point() else tensor
    model.load_state_dict(state, assign=True)
    return model.to(device).eval(), meta


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


# The parts of a full release checkpoint besides the backbone (key prefixes) and what each is, for messages.
_RELEASE_PARTS = {
    "neck.": "neck",
    "decode_head.": "decode head",
    "auxiliary_head.": "auxiliary head",
    "embedding_table.": "class embedding",
    "transform.": "input transform",
    "time_mlp.": "time MLP",
}
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
) -> ImportResult:
    """Turn the authors' released checkpoint (`source`, a `.pth`) into an mdseg checkpoint at `out`.

    `source` is read with `torch.load(weights_only=True)` only (tensors and plain containers; nothing else is
    ever unpickled): an MMSegmentation checkpoint (`{"state_dict", "meta", "optimizer"}`; only the state dict
    is used) or a bare state dict, keys optionally prefixed `module.`. Every release key must be mapped
    (`convert_release_state_dict`) or dropped as dead; every tensor our model needs must be there with the
    right shape. The metadata takes `dataset`'s classes, palette, band names and normalisation from
    `mdseg.data.catalog`, `inference_scale` (2.0: the authors test WHU's 256² tiles upsampled to 512²), tile
    256 px, 3 DDIM steps, and provenance (source file name and SHA-256, conversion summary). The write is
    atomic; an existing `out` is refused unless `overwrite`.

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
    loaded = _torch_load_weights_only(source)
    sd, release_meta = _release_state_dict(loaded, source)
    _check_release_parts(sd, source)
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
    has_backbone = any(k.startswith(_BACKBONE_PREFIX) for k in sd)
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


__all__ = [
    "DEMO_CHECKPOINT",
    "FORMAT_VERSION",
    "CheckpointMeta",
    "ConversionReport",
    "ImportResult",
    "convert_release_state_dict",
    "demo_checkpoint",
    "import_release_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "sha256",
]
