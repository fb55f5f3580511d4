"""The one place that decides which selective-scan implementation runs.

Backends:
  reference  sequential PyTorch, autograd: the specification (any device, slow)
  torch      chunked log-depth scan in PyTorch (any device, autograd)
  cpu        numba kernels with a hand-written backward (CPU tensors)
  cuda       mamba-ssm's fused kernel when it imports, else the `torch` path (CUDA tensors)

`auto` picks by device (and dtype: half precision is computed in float32 by every backend); grad mode does
not change the choice because every backend `auto` can pick has a backward. The environment variable
MDSEG_SCAN_BACKEND overrides it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from mdseg.errors import BackendUnavailableError

BACKENDS = ("reference", "torch", "cpu", "cuda")
ENV_VAR = "MDSEG_SCAN_BACKEND"


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str


@lru_cache(maxsize=1)
def _numba_problem() -> str | None:
    if importlib.util.find_spec("numba") is None:
        return "numba not installed"
    try:
        import numba  # noqa: F401
    except Exception as exc:  # a broken numba/llvmlite install must not break mdseg
        return f"numba does not import ({type(exc).__name__}: {exc})"
    return None


@lru_cache(maxsize=1)
def mamba_ssm_problem() -> str | None:
    """None when mamba-ssm's fused scan imports, else why not (never raises)."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return "mamba_ssm not installed"
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception as exc:
        return f"mamba_ssm does not import ({type(exc).__name__}: {exc})"
    return None


def backend_status() -> list[BackendStatus]:
    """Availability of every backend on this machine, with the reason when one is not available."""
    numba_problem = _numba_problem()
    statuses = [
        BackendStatus("reference", True, "sequential PyTorch (the specification)"),
        BackendStatus("torch", True, "chunked log-depth scan in PyTorch"),
        BackendStatus(
            "cpu",
            numba_problem is None,
            "numba kernels, forward and backward" if numba_problem is None else numba_problem,
        ),
    ]
    if not torch.cuda.is_available():
        statuses.append(BackendStatus("cuda", False, "no CUDA device visible to torch"))
    else:
        problem = mamba_ssm_problem()
        detail = "mamba-ssm fused kernel" if problem is None else f"PyTorch path ({problem})"
        statuses.append(BackendStatus("cuda", True, detail))
    return statuses


def _check_name(name: str) -> str:
    if name not in (*BACKENDS, "auto"):
        raise BackendUnavailableError(f"unknown scan backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return name


def auto_backend(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[str, str]:
    """The backend `auto` picks for tensors on `device`, and why, ignoring MDSEG_SCAN_BACKEND."""
    device = torch.device(device)
    if device.type == "cuda":
        return "cuda", "CUDA tensors"
    if device.type == "cpu":
        if _numba_problem() is None:
            return "cpu", f"CPU tensors ({dtype}); numba kernels"
        return "reference", f"CPU tensors but {_numba_problem()}"
    return "torch", f"{device.type} tensors: only the PyTorch path runs there"


def resolve_backend(requested: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """Turn a requested name ('auto' or a backend) into the backend that will run."""
    name = _check_name(requested)
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        name = _check_name(env) if env else "auto"
    if name == "auto":
        return auto_backend(device, dtype)[0]
    device = torch.device(device)
    if name == "cpu":
        if _numba_problem() is not None:
            raise BackendUnavailableError(f"scan backend 'cpu' is unavailable: {_numba_problem()}")
        if device.type != "cpu":
            raise BackendUnavailableError(f"scan backend 'cpu' needs CPU tensors, got {device.type} tensors")
    if name == "cuda" and device.type != "cuda":
        raise BackendUnavailableError(f"scan backend 'cuda' needs CUDA tensors, got {device.type} tensors")
    return name
