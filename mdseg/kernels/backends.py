"""The one place that decides which selective-scan implementation runs.

Backends:
  reference  sequential PyTorch, autograd: the specification (any device, slow)
  torch      chunked log-depth scan in PyTorch (any device, autograd)
  cpu        numba kernels with a hand-written backward (CPU tensors)
  triton     Triton kernels with a hand-written backward and a fused SS2D scan (CUDA tensors; CPU tensors
             only under Triton's interpreter, TRITON_INTERPRET=1, which is how CI tests them)
  cuda       mamba-ssm's fused kernel when it imports, else the `torch` path (CUDA tensors)

`auto` picks by device (and dtype: half precision is computed in float32 by every backend): on CPU `cpu`
(numba) else `reference`; on CUDA `triton` when it imports, else `cuda` when mamba-ssm imports, else `torch`.
Grad mode does not change the choice because every backend `auto` can pick has a backward. The environment
variable MDSEG_SCAN_BACKEND overrides it. Neither triton nor mamba-ssm is imported by `import mdseg`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import torch

from mdseg.errors import BackendUnavailableError

F = TypeVar("F", bound=Callable)

BACKENDS = ("reference", "torch", "cpu", "triton", "cuda")
ENV_VAR = "MDSEG_SCAN_BACKEND"


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str


@lru_cache(maxsize=1)
def numba_problem() -> str | None:
    """None when numba imports, else why not (never raises)."""
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


def triton_interpreting() -> bool:
    """Whether TRITON_INTERPRET asks for Triton's interpreter (read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


@lru_cache(maxsize=1)
def _triton_import_problem() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton not installed"
    try:
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken triton install must not break mdseg
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


def triton_problem(device: torch.device | str) -> str | None:
    """None when the `triton` backend can scan tensors on `device` here, else why not (never raises)."""
    device = torch.device(device)
    if importlib.util.find_spec("triton") is None:
        return "triton not installed"
    if device.type == "cpu" and not triton_interpreting():
        return "CPU tensors run only under Triton's interpreter (TRITON_INTERPRET=1)"
    if device.type not in ("cpu", "cuda"):
        return f"{device.type} tensors: the Triton kernels run on CUDA tensors only"
    problem = _triton_import_problem()
    if problem is not None:
        return problem
    built = _triton_built_interpreted()
    if built is not None and built != (device.type == "cpu"):
        mode = "interpreted" if built else "compiled"
        return f"triton was imported {mode} in this process, before TRITON_INTERPRET changed"
    return None


def _triton_built_interpreted() -> bool | None:
    """Whether the triton imported here built its @jit functions for the interpreter (None: not imported yet).
    Triton decides once, when triton.language is first imported, from TRITON_INTERPRET at that moment."""
    language = sys.modules.get("triton.language")
    if language is None:
        return None
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return None
    return isinstance(getattr(language, "sum", None), InterpretedFunction)


def _triton_status() -> BackendStatus:
    on_gpu = torch.cuda.is_available()
    problem = triton_problem("cuda" if on_gpu else "cpu")
    if problem is not None:
        return BackendStatus("triton", False, problem if on_gpu else f"no CUDA device; {problem}")
    version = importlib.metadata.version("triton")
    if on_gpu:
        return BackendStatus("triton", True, f"Triton {version} kernels, forward and backward, fused SS2D")
    return BackendStatus("triton", True, f"Triton {version} interpreter (TRITON_INTERPRET=1): CPU tensors, slow")


def backend_status() -> list[BackendStatus]:
    """Availability of every backend on this machine, with the reason when one is not available."""
    numba = numba_problem()
    statuses = [
        BackendStatus("reference", True, "sequential PyTorch (the specification)"),
        BackendStatus("torch", True, "chunked log-depth scan in PyTorch"),
        BackendStatus(
            "cpu",
            numba is None,
            "numba kernels, forward and backward" if numba is None else numba,
        ),
        _triton_status(),
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
        triton = triton_problem(device)
        if triton is None:
            return "triton", "CUDA tensors; Triton kernels"
        if mamba_ssm_problem() is None:
            return "cuda", f"CUDA tensors; mamba-ssm ({triton})"
        return "torch", f"CUDA tensors; PyTorch path ({triton}; {mamba_ssm_problem()})"
    if device.type == "cpu":
        if numba_problem() is None:
            return "cpu", f"CPU tensors ({dtype}); numba kernels"
        return "reference", f"CPU tensors but {numba_problem()}"
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
        if numba_problem() is not None:
            raise BackendUnavailableError(f"scan backend 'cpu' is unavailable: {numba_problem()}")
        if device.type != "cpu":
            raise BackendUnavailableError(f"scan backend 'cpu' needs CPU tensors, got {device.type} tensors")
    if name == "triton" and triton_problem(device) is not None:
        raise BackendUnavailableError(f"scan backend 'triton' is unavailable: {triton_problem(device)}")
    if name == "cuda" and device.type != "cuda":
        raise BackendUnavailableError(f"scan backend 'cuda' needs CUDA tensors, got {device.type} tensors")
    return name


def scan_entry_point(fn: F) -> F:
    """Wrap a public scan function: it runs with autocast off and as one eager call under torch.compile.

    Autocast off: the kernels read half-precision inputs and compute in float32 themselves, and the `torch`
    path would otherwise run its state contraction (an einsum) in half precision. Opaque to torch.compile (a
    graph break on each side): the kernels are already fused, and tracing them (numba, Triton launch code, the
    reference's Python loop over steps) would only cost compile time or break the graph inside them.
    `torch.compiler.disable` as a decorator would import torch._dynamo (~1 s) with mdseg; this defers it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():  # only while dynamo traces: eager calls never get here
            return torch.compiler.disable(wrapper)(*args, **kwargs)
        autocasting = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
        if not autocasting:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in autocasting:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
