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


def model_report(preset_name: str, tile: int = 256) -> Table:
    """Parameters (ours and the release's) and GFLOPs per tile of a preset, split by part."""
    from mdseg.config import preset
    from mdseg.models.cost import model_cost

    cost = model_cost(preset(preset_name), tile=tile)
    table = Table(title=f"model preset {preset_name!r}, {tile}×{tile} tile", title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("GFLOPs", justify="right")
    gflops = cost.gflops
    rows = [
        ("encoders (both streams)", None, gflops["encoder"]),
        ("fusion (DCF + DS-S4)", None, gflops["fusion"]),
        ("backbone", cost.parameters_by_part["backbone"], None),
        ("neck", cost.parameters_by_part["neck"], gflops["neck"]),
        ("diffusion head, per step", cost.parameters_by_part["head"], gflops["head per step"]),
        ("auxiliary head (training only)", cost.parameters_by_part["aux head"], gflops["aux head (training)"]),
    ]
    for name, params, flops in rows:
        table.add_row(name, "" if params is None else f"{params:,}", "" if flops is None else f"{flops:.2f}")
    table.add_row("[bold]total (ours)", f"[bold]{cost.parameters:,}", "")
    table.add_row("release's count (with its dead weights)", f"{cost.release_parameters:,}", "", style="dim")
    for steps in (1, 3, 10):
        table.add_row(f"inference, steps={steps}", "", f"{cost.gflops_total(steps):.2f}")
    return table
