"""A run's resumable state (`state.safetensors`): fp32 weights, optimizer moments and a little JSON (iteration,
best score, seed, the optimizer's parameter groups), as safetensors, so resuming never unpickles anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from mdseg.errors import MdsegError
from mdseg.io.atomic import AtomicOutputs

STATE_FORMAT = 1


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write the resumable state atomically: weights, optimizer moments and `info` (iteration, best, …)."""
    tensors, extra = _state_tensors(model, optimizer)
    meta = {"format": STATE_FORMAT, **info, **extra}
    with AtomicOutputs(overwrite=True) as outputs:
        save_file(tensors, str(outputs.reserve(path)), metadata={"mdseg_state": json.dumps(meta)})


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what `save_state` wrote into `model` and `optimizer`; returns its info."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["mdseg_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except FileNotFoundError:
        raise MdsegError(
            f"no resumable state '{path}'; the run never saved one (it stopped before its first save)"
        ) from None
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise MdsegError(f"resumable state '{path}' is damaged or not mdseg's ({exc})") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


def _state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Model and optimizer state as flat tensors + JSON (safetensors holds tensors only)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{index}.{slot}"] = value.detach().cpu().contiguous().clone()
    return tensors, {"param_groups": opt["param_groups"]}


__all__ = ["STATE_FORMAT", "load_state", "save_state"]
