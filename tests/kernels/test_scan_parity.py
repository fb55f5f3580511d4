"""Forward parity of every selective-scan backend with `reference` (the specification).

Tolerances, as max abs error over the output (and over the last state when it is returned):
  float32 / float64 inputs: <= 1e-4 x max(1, max |reference|)
  bfloat16 / float16 inputs: <= 2e-2 x max(1, max |reference|), against the float32 reference run on the
  same (already rounded) inputs; the output must keep the input dtype.

The grid is a covering design, not a full product: every combination of the five options (D, z, delta_bias,
softplus, last state) with grouped and ungrouped B/C at l in {1, 7, 64}, and at l = 1000 all options off, all
on, and each option on alone (the reference is a Python loop over l, so l = 1000 costs ~100x more).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mdseg.kernels import BACKENDS, backend_status, selective_scan

STATUS = {s.name: s for s in backend_status()}
CPU_BACKENDS = [
    pytest.param(name, marks=[] if STATUS[name].available else pytest.mark.skip(reason=STATUS[name].detail))
    for name in BACKENDS
    if name not in ("reference", "triton", "cuda")  # triton: tests/kernels/test_scan_triton.py (interpreter or CUDA)
]
CUDA_BACKEND = pytest.param(
    "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
)
ALL_BACKENDS = [*CPU_BACKENDS, CUDA_BACKEND]

OPTIONS = ("D", "z", "delta_bias", "delta_softplus", "return_last_state")
SMALL_CASES = [
    pytest.param(n, length, groups, dict(zip(OPTIONS, flags, strict=True)), id=f"n{n}-l{length}-g{groups}-{flags_id}")
    for n, length, groups in itertools.product((1, 4, 16), (1, 7, 64), (None, 2))
    for flags in itertools.product((False, True), repeat=len(OPTIONS))
    for flags_id in ["".join("1" if f else "0" for f in flags)]
]
LONG_OPTION_SETS = {
    "none": {},
    "all": dict.fromkeys(OPTIONS, True),
    **{f"only_{name}": {name: True} for name in OPTIONS},
}
LONG_CASES = [
    pytest.param(n, groups, options, id=f"n{n}-g{groups}-{label}")
    for n, groups in itertools.product((1, 4, 16), (None, 2))
    for label, options in LONG_OPTION_SETS.items()
]

FP32_REL = 1e-4
HALF_REL = 2e-2


def _device(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def _to(inputs: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _as_float32(inputs: dict) -> dict:
    return {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _check_parity(backend, inputs, return_last_state, rel, assert_scaled_close, reference_inputs=None):
    expected = selective_scan(**(reference_inputs or inputs), return_last_state=return_last_state, backend="reference")
    actual = selective_scan(**_to(inputs, _device(backend)), return_last_state=return_last_state, backend=backend)
    if return_last_state:
        (out, state), (ref_out, ref_state) = actual, expected
        assert state.dtype == torch.float32
        assert_scaled_close(state, ref_state, rel, "last state")
    else:
        out, ref_out = actual, expected
    assert out.dtype == inputs["u"].dtype
    assert out.device.type == _device(backend)
    assert_scaled_close(out, ref_out, rel)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize(("n", "length", "groups", "options"), SMALL_CASES)
def test_float32_matches_reference_for_every_option_combination(
    backend, n, length, groups, options, make_scan_inputs, assert_scaled_close
):
    last = options.get("return_last_state", False)
    inputs = make_scan_inputs(2, 4, length, n, groups, **{k: v for k, v in options.items() if k in OPTIONS[:4]})
    _check_parity(backend, inputs, last, FP32_REL, assert_scaled_close)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize(("n", "groups", "options"), LONG_CASES)
def test_float32_matches_reference_at_length_1000(backend, n, groups, options, make_scan_inputs, assert_scaled_close):
    scan_options = {k: options.get(k, False) for k in OPTIONS[:4]}
    inputs = make_scan_inputs(2, 4, 1000, n, groups, seed=1, **scan_options)
    _check_parity(backend, inputs, options.get("return_last_state", False), FP32_REL, assert_scaled_close)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("length", "groups"), [(64, 2), (1000, None)])
def test_half_inputs_keep_dtype_and_match_float32_reference(
    backend, dtype, length, groups, make_scan_inputs, assert_scaled_close
):
    inputs = make_scan_inputs(2, 4, length, 16, groups, seed=2, dtype=dtype)
    _check_parity(backend, inputs, True, HALF_REL, assert_scaled_close, reference_inputs=_as_float32(inputs))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize(("length", "groups"), [(64, 2), (1000, None)])
def test_float64_inputs_return_float64_matching_reference(
    backend, length, groups, make_scan_inputs, assert_scaled_close
):
    inputs = make_scan_inputs(2, 4, length, 16, groups, seed=3, dtype=torch.float64)
    _check_parity(backend, inputs, True, FP32_REL, assert_scaled_close)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs_match_reference(backend, make_scan_inputs, non_contiguous, assert_scaled_close):
    inputs = make_scan_inputs(2, 4, 64, 4, 2, seed=5)
    strided = non_contiguous(inputs)
    assert not any(v.is_contiguous() for k, v in strided.items() if isinstance(v, torch.Tensor))
    _check_parity(backend, strided, True, FP32_REL, assert_scaled_close, reference_inputs=inputs)
