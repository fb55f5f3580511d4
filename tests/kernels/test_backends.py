"""Which selective-scan backend runs: `auto`, the MDSEG_SCAN_BACKEND override, errors, and `mdseg info`."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mdseg.cli import app
from mdseg.errors import BackendUnavailableError, MdsegError
from mdseg.kernels import BACKENDS, backend_status, resolve_backend, selective_scan
from mdseg.kernels.backends import ENV_VAR, mamba_ssm_problem, triton_problem

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
needs_numba = pytest.mark.skipif(
    not next(s for s in backend_status() if s.name == "cpu").available, reason="cpu backend unavailable (numba)"
)


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_backend_status_lists_every_backend_once():
    assert [s.name for s in backend_status()] == list(BACKENDS)


@needs_numba
def test_auto_picks_cpu_for_cpu_float32_tensors():
    assert resolve_backend("auto", "cpu", torch.float32) == "cpu"


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "reference")
    assert resolve_backend("auto", "cpu", torch.float32) == "reference"


def test_explicit_backend_wins_over_environment_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "reference")
    assert resolve_backend("torch", "cpu", torch.float32) == "torch"


def test_unknown_backend_name_is_an_mdseg_error_listing_the_names(make_scan_inputs):
    with pytest.raises(BackendUnavailableError) as info:
        selective_scan(**make_scan_inputs(1, 2, 4, 1), backend="numpy")
    assert isinstance(info.value, MdsegError)
    for name in ("auto", *BACKENDS):
        assert name in str(info.value)


def test_unknown_environment_variable_value_is_an_error_listing_the_names(monkeypatch, make_scan_inputs):
    monkeypatch.setenv(ENV_VAR, "fastest")
    with pytest.raises(BackendUnavailableError, match="'fastest'") as info:
        selective_scan(**make_scan_inputs(1, 2, 4, 1))
    for name in BACKENDS:
        assert name in str(info.value)


def test_cuda_backend_with_cpu_tensors_is_unavailable(make_scan_inputs):
    with pytest.raises(BackendUnavailableError, match="CUDA tensors"):
        selective_scan(**make_scan_inputs(1, 2, 4, 1), backend="cuda")


@pytest.mark.cuda
@needs_cuda
def test_auto_on_cuda_tensors_prefers_triton_then_mamba_ssm_and_matches_reference(
    make_scan_inputs, assert_scaled_close
):
    inputs = make_scan_inputs(2, 8, 300, 16, 2, seed=4)
    fallback = "cuda" if mamba_ssm_problem() is None else "torch"
    assert resolve_backend("auto", "cuda", torch.float32) == ("triton" if triton_problem("cuda") is None else fallback)
    expected = selective_scan(**inputs, backend="reference")
    actual = selective_scan(**{k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    assert actual.is_cuda
    assert_scaled_close(actual, expected, 1e-4)


def _info_rows(monkeypatch, override: str | None = None) -> dict[str, str]:
    """Run `mdseg info` and read its table back as {item: value}, joining cells that Rich wrapped."""
    if override is not None:
        monkeypatch.setenv(ENV_VAR, override)
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Traceback" not in result.output
    rows: dict[str, str] = {}
    item = None
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 2:
            continue
        item = cells[0] or item
        rows[item] = f"{rows.get(item, '')} {cells[1]}".strip()
    return rows


def test_info_lists_every_backend_and_what_auto_picks(monkeypatch):
    rows = _info_rows(monkeypatch)
    for status in backend_status():
        assert status.detail in rows[f"scan backend {status.name}"]
    assert rows["auto on cpu"].startswith(resolve_backend("auto", "cpu"))


def test_info_shows_invalid_environment_variable_as_a_message_not_a_traceback(monkeypatch):
    rows = _info_rows(monkeypatch, "fastest")
    assert rows[ENV_VAR].startswith("unknown scan backend 'fastest'; choose one of:")
