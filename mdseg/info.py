"""`mdseg info`: what this installation can do, as a Rich renderable."""

from __future__ import annotations

import os
import platform

import torch
from rich.table import Table

import mdseg
from mdseg.errors import MdsegError
from mdseg.kernels.backends import ENV_VAR, auto_backend, backend_status, resolve_backend


def _torch_build() -> str:
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    return "CPU only"


def environment_report() -> Table:
    """Versions, threads, devices and scan backends, one row each."""
    table = Table(title=f"mdseg {mdseg.__version__}", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("python", platform.python_version())
    table.add_row("torch", f"{torch.__version__} ({_torch_build()})")
    table.add_row("threads", f"{torch.get_num_threads()} (of {os.cpu_count()} CPUs)")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        table.add_row("CUDA devices", "; ".join(f"cuda:{i} {n}" for i, n in enumerate(names)))
    else:
        table.add_row("CUDA devices", "none")
    for status in backend_status():
        mark = "[green]yes[/]" if status.available else "[red]no[/]"
        table.add_row(f"scan backend {status.name}", f"{mark}: {status.detail}")
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        name, why = auto_backend(device)
        table.add_row(f"auto on {device}", f"{name} ({why})")
    override = os.environ.get(ENV_VAR, "").strip()
    if not override:
        table.add_row(ENV_VAR, "not set")
    else:
        try:
            table.add_row(ENV_VAR, f"{override}: overrides auto on cpu -> {resolve_backend('auto', 'cpu')}")
        except MdsegError as exc:
            table.add_row(ENV_VAR, f"[red]{exc}[/]")
    return table
