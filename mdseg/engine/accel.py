"""Running the model faster on a GPU: mixed precision, torch.compile, channels-last. Used by predict and train.

- `amp`: "off" (float32), "bf16" or "fp16" autocast. CUDA only: on CPU it is refused (`check_amp`), because the
  scan kernels compute in float32 whatever the input dtype and CPU half-precision convolutions are rarely
  faster. Under autocast the scan still keeps float32 state and accumulation (`mdseg.kernels` runs it with
  autocast off, on the half-precision activations it is given), and predict blends float32 probabilities.
  Results differ slightly from float32 ones; they stay deterministic for a given seed. fp16 training needs
  loss scaling (`torch.amp.GradScaler`), bf16 does not.
- `compile`: torch.compile, in place, on the parts that run per tile (`compiled_parts`: backbone, neck, the
  head's denoiser), so both `forward` (training) and `predict` (DDIM sampling) use them; each scan call stays
  one eager call (a graph break, see `mdseg.kernels.backends.scan_entry_point`). The first tiles pay the
  compilation (minutes for `paper`); new tile shapes recompile. Compile before wrapping in DDP.
- channels-last: convolution weights (and so their outputs) in NHWC on CUDA, where cuDNN's tensor-core kernels
  want it; the VSS blocks work in (B, H, W, C) already, so their permutes become free. Not used on CPU.
  Chosen, not measured: `bench/bench_gpu.py` has no GPU figures yet.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mdseg.errors import OptionError

AMP_CHOICES = ("off", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device) -> None:
    """Raise `OptionError` unless `amp` is "off", or "bf16"/"fp16" on a CUDA device that supports it."""
    if amp not in AMP_CHOICES:
        raise OptionError(f"--amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    if amp == "off":
        return
    if device.type != "cuda":
        raise OptionError(f"--amp {amp} needs a CUDA device (this run is on {device}); use --amp off on CPU")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise OptionError(f"--amp bf16 needs a GPU with bfloat16 support ({device} has none); use --amp fp16")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context for `amp` on `device` (a no-op for "off"); call `check_amp` first."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def use_channels_last(device: torch.device) -> bool:
    """Whether models on `device` keep convolution weights channels-last (NHWC): on CUDA only."""
    return device.type == "cuda"


def compiled_parts(model: nn.Module) -> list[nn.Module]:
    """The submodules `prepare_model` compiles: those that run per tile (`backbone`, `neck`, `head.denoiser`)
    when `model` has them, else `model` itself."""
    head = getattr(model, "head", None)
    parts = [getattr(model, "backbone", None), getattr(model, "neck", None), getattr(head, "denoiser", None)]
    parts = [p for p in parts if isinstance(p, nn.Module)]
    return parts or [model]


def prepare_model(model: nn.Module, device: torch.device, *, compile: bool = False) -> nn.Module:
    """Make `model` (already on `device`) channels-last where that helps and, with `compile`, compile its
    `compiled_parts` in place. Returns the same module object: parameter names, state_dict and methods such
    as `predict` are unchanged."""
    if use_channels_last(device):
        model.to(memory_format=torch.channels_last)
    if compile:
        for part in compiled_parts(model):
            part.compile()
    return model
