"""Shared fixtures: seeded selective-scan inputs, the scaled-error comparison the kernel tests use, and a
runner for the `mdseg` command line."""

from __future__ import annotations

# mdseg before torch: it sets OMP_WAIT_POLICY=PASSIVE, which OpenMP reads only when torch loads it. With torch
# first, torch's and numba's idle threads spin against each other (the kernel tests: 95 s instead of 11 s).
from mdseg import errors as _mdseg_first  # noqa: F401  # isort: skip
import sys

import pytest
import torch


def _scan_inputs(
    b: int,
    d: int,
    length: int,
    n: int,
    groups: int | None = None,
    *,
    D: bool = True,
    z: bool = True,
    delta_bias: bool = True,
    delta_softplus: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Keyword arguments for `selective_scan`, drawn like mamba-ssm's own tests (decay in (0, 1) per step).

    B and C are (b, n, l) when `groups` is None, else (b, groups, n, l). u, delta, B, C, z get `dtype`;
    the parameters A, D, delta_bias stay float32 (as model weights do) unless `dtype` is float64.
    """
    gen = torch.Generator().manual_seed(seed)
    bc_shape = (b, n, length) if groups is None else (b, groups, n, length)
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    def draw(*shape: int, kind: str = "normal") -> torch.Tensor:
        t = torch.randn(shape, generator=gen) if kind == "normal" else torch.rand(shape, generator=gen)
        return t.to(dtype)

    return {
        "u": draw(b, d, length),
        "delta": 0.5 * draw(b, d, length, kind="uniform"),
        "A": -(0.05 + 1.95 * torch.rand(d, n, generator=gen)).to(param_dtype),
        "B": draw(*bc_shape),
        "C": draw(*bc_shape),
        "D": torch.randn(d, generator=gen).to(param_dtype) if D else None,
        "z": draw(b, d, length) if z else None,
        "delta_bias": (0.5 * torch.rand(d, generator=gen)).to(param_dtype) if delta_bias else None,
        "delta_softplus": delta_softplus,
    }


@pytest.fixture
def make_scan_inputs():
    """Factory: `make_scan_inputs(b, d, l, n, groups=None, D=..., z=..., delta_bias=..., delta_softplus=...)`."""
    return _scan_inputs


def _assert_scaled_close(
    actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "output", floor: float = 1.0
) -> None:
    """max |actual - expected| <= rel * max(floor, max |expected|), in float64; `actual` must be finite."""
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = max(floor, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:g} x {scale:.3g}"


def _non_contiguous(inputs: dict) -> dict:
    """The same scan inputs (d = 4) in other memory layouts: (b, l, d) and (b, g, l, n) buffers seen through
    transposes, A stored as (n, d), D and delta_bias every other element of a longer buffer."""
    return {
        **inputs,
        "u": inputs["u"].transpose(1, 2).contiguous().transpose(1, 2),
        "delta": inputs["delta"].transpose(1, 2).contiguous().transpose(1, 2),
        "z": inputs["z"].transpose(1, 2).contiguous().transpose(1, 2),
        "A": inputs["A"].t().contiguous().t(),
        "B": inputs["B"].transpose(2, 3).contiguous().transpose(2, 3),
        "C": inputs["C"].transpose(2, 3).contiguous().transpose(2, 3),
        "D": torch.stack([inputs["D"], torch.zeros(4)], dim=1).reshape(-1)[::2],
        "delta_bias": torch.stack([inputs["delta_bias"], torch.zeros(4)], dim=1).reshape(-1)[::2],
    }


@pytest.fixture
def non_contiguous():
    return _non_contiguous


@pytest.fixture
def assert_scaled_close():
    """`assert_scaled_close(actual, expected, rel, what, floor=1)`: see `_assert_scaled_close`."""
    return _assert_scaled_close


@pytest.fixture
def mdseg(capsys, monkeypatch):
    """Run `mdseg ARGS…` through the console-script entry point (so `MdsegError` -> one line, exit 2):
    returns (exit code, stdout, stderr)."""
    from mdseg import cli as cli_module
    from mdseg.cli import console as consoles

    # Wide consoles so a long error stays on one line whatever terminal the tests run in.
    monkeypatch.setattr(consoles.err_console, "width", 1000)
    monkeypatch.setattr(consoles.console, "width", 1000)

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mdseg", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            cli_module.main()
        out, err = capsys.readouterr()
        return exited.value.code or 0, out, err

    return run


TEST_CLASSES = ["water", "forest", "city"]
TEST_PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A `tiny` model with seeded random weights saved as an mdseg checkpoint: 4 optical (B04, B03, B02, B08)
    + 1 SAR (VV, dB) bands, the 3 classes above, 64-px tiles."""
    from mdseg.checkpoint import CheckpointMeta, save_checkpoint
    from mdseg.data.normalise import Normalisation
    from mdseg.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", opt_bands=4, sar_bands=1, num_classes=len(TEST_CLASSES))
    meta = CheckpointMeta(
        config=model.config,
        classes=TEST_CLASSES,
        palette=TEST_PALETTE,
        opt_band_names=["B04", "B03", "B02", "B08"],
        sar_band_names=["VV"],
        normalisation=Normalisation([1000.0] * 4, [400.0] * 4, [-12.0], [4.0]),
        sar_scale="db",
        tile=64,
        provenance={"note": "random weights for tests"},
    )
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.safetensors", model, meta)
