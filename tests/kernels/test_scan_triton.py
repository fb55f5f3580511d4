"""The `triton` backend against the reference: forward, gradients, the fused SS2D scan.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, switched on by a
module fixture for this module only; if an earlier test already imported triton compiled, e.g. through
torch.compile, those tests run in a fresh process instead); with CUDA they are compiled and the same tests run
on the GPU (the interpreter variants are then skipped: a process holds Triton's functions either compiled or
interpreted). Everything skips when triton is not installed.

The interpreter is slow (milliseconds per tile operation), so shapes stay small (l <= 64, d <= 8) and the
option grid is a covering design rather than the full product of `test_scan_parity.py`: every combination of
the five options at one shape with grouped and ungrouped B/C, and at every (n, l, groups) of that grid all
options off and all on. Under the interpreter a chunk is 32 steps and a program takes 4 channels forward and
2 backward, so l = 40 and 64 cross chunk boundaries and d = 4 splits a group across programs (the B/C
gradient reduction). Tolerances are `test_scan_parity.py`'s and `test_scan_grad.py`'s. The interpreter never
runs Triton's compiler, so one test also compiles both kernels for sm_90 (through ptxas) in a subprocess.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mdseg.errors import BackendUnavailableError
from mdseg.kernels import cross_merge, cross_scan, resolve_backend, selective_scan, ss2d_scan
from mdseg.kernels.backends import triton_problem

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton not installed (pip install -e '.[dev]')"
)

DEVICES = [
    pytest.param(
        "cpu",
        id="interpreter",
        marks=pytest.mark.skipif(
            torch.cuda.is_available(),
            reason="CUDA present: this process compiles the kernels for the GPU (the interpreter runs without one)",
        ),
    ),
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    ),
]
OPTIONS = ("D", "z", "delta_bias", "delta_softplus", "return_last_state")
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
FP32_REL = 1e-4
HALF_REL = 2e-2


def _flags_id(flags) -> str:
    return "".join("1" if f else "0" for f in flags)


FORWARD_CASES = [
    *(
        pytest.param(4, 40, groups, flags, id=f"n4-l40-g{groups}-{_flags_id(flags)}")
        for groups in (None, 2)
        for flags in itertools.product((False, True), repeat=len(OPTIONS))
    ),
    *(
        pytest.param(n, length, groups, flags, id=f"n{n}-l{length}-g{groups}-{_flags_id(flags)}")
        for n, length, groups in itertools.product((1, 4, 16), (1, 7, 64), (None, 2))
        for flags in ((False,) * len(OPTIONS), (True,) * len(OPTIONS))
        if (n, length) != (4, 40)
    ),
]


def _scan_step_by_step(self, inputs):
    """Triton's interpreter runs a custom `associative_scan` one element at a time (~50 µs each); this runs the
    same combine function one step of the scanned axis at a time, on whole slices: same arithmetic in the same
    order, about 50x faster for our (channels, state, time) tiles."""
    data = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in inputs]
    out = [np.empty_like(d) for d in data]
    acc = None
    for step in range(data[0].shape[0]):
        current = tuple(self.to_tensor(d[step], arg.dtype) for d, arg in zip(data, inputs, strict=True))
        acc = current if acc is None else self.combine_fn.fn(*acc, *current)
        acc = acc if isinstance(acc, tuple) else (acc,)
        for o, a in zip(out, acc, strict=True):
            o[step] = a.handle.data.reshape(o[step].shape)
    return [
        self.to_tensor(np.ascontiguousarray(np.moveaxis(o, 0, self.axis)), arg.dtype)
        for o, arg in zip(out, inputs, strict=True)
    ]


@pytest.fixture(scope="module", autouse=True)
def interpreter_problem():
    """No GPU: TRITON_INTERPRET=1 for this module and the interpreter's scan vectorised over slices; yields None,
    or why the interpreter cannot run here. Triton builds its @jit functions (its own and ours) when
    triton.language is first imported, so that must not have happened yet in this process: torch.compile
    imports triton, so after an earlier test compiled something the interpreter tests move to a fresh process
    (`test_interpreter_tests_pass_in_a_fresh_process`). With a GPU: nothing to do, the kernels compile."""
    if torch.cuda.is_available():
        yield "CUDA present"
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        problem = triton_problem("cpu")
        if problem is None:
            from triton.runtime import interpreter

            if hasattr(getattr(interpreter, "ScanOps", None), "generic_scan"):
                patch.setattr(interpreter.ScanOps, "generic_scan", _scan_step_by_step)
            yield None
            return
    yield problem


@pytest.fixture(params=DEVICES)
def device(request, interpreter_problem) -> str:
    if request.param == "cpu" and interpreter_problem is not None:
        pytest.skip(f"{interpreter_problem}; test_interpreter_tests_pass_in_a_fresh_process runs these instead")
    return request.param


def _to(inputs: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _check_parity(device, inputs, return_last_state, rel, assert_scaled_close, reference_inputs=None):
    expected = selective_scan(**(reference_inputs or inputs), return_last_state=return_last_state, backend="reference")
    actual = selective_scan(**_to(inputs, device), return_last_state=return_last_state, backend="triton")
    if return_last_state:
        (out, state), (ref_out, ref_state) = actual, expected
        assert state.dtype == torch.float32
        assert_scaled_close(state, ref_state, rel, "last state")
    else:
        out, ref_out = actual, expected
    assert out.dtype == inputs["u"].dtype
    assert out.device.type == device
    assert_scaled_close(out, ref_out, rel)


@pytest.mark.parametrize(("n", "length", "groups", "flags"), FORWARD_CASES)
def test_float32_matches_reference_over_the_option_grid(
    device, n, length, groups, flags, make_scan_inputs, assert_scaled_close
):
    options = dict(zip(OPTIONS, flags, strict=True))
    last = options.pop("return_last_state")
    inputs = make_scan_inputs(2, 4, length, n, groups, **options)
    _check_parity(device, inputs, last, FP32_REL, assert_scaled_close)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("groups", [None, 2])
def test_half_inputs_keep_dtype_and_match_float32_reference(
    device, dtype, groups, make_scan_inputs, assert_scaled_close
):
    inputs = make_scan_inputs(2, 4, 64, 16, groups, seed=2, dtype=dtype)
    as_float32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    _check_parity(device, inputs, True, HALF_REL, assert_scaled_close, reference_inputs=as_float32)


def test_float64_inputs_return_float64_matching_reference(device, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(2, 4, 64, 16, 2, seed=3, dtype=torch.float64)
    _check_parity(device, inputs, True, FP32_REL, assert_scaled_close)


def test_non_contiguous_inputs_match_reference(device, make_scan_inputs, non_contiguous, assert_scaled_close):
    inputs = make_scan_inputs(2, 4, 40, 4, 2, seed=5)
    strided = non_contiguous(inputs)
    assert not any(v.is_contiguous() for v in strided.values() if isinstance(v, torch.Tensor))
    _check_parity(device, strided, True, FP32_REL, assert_scaled_close, reference_inputs=inputs)


def _grads(backend, device, inputs, requires_grad=INPUT_NAMES) -> dict:
    """Gradients of <out, w> (w seeded normal) for every input in `requires_grad`, on the CPU."""
    leaves = {
        k: v.detach().to(device).requires_grad_(k in requires_grad) if isinstance(v, torch.Tensor) else v
        for k, v in inputs.items()
    }
    out = selective_scan(**leaves, backend=backend)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    out.backward(weight.to(device))
    grads = {k: leaves[k].grad for k in INPUT_NAMES if isinstance(leaves[k], torch.Tensor)}
    return {k: None if g is None else g.cpu() for k, g in grads.items()}


@pytest.mark.parametrize(
    ("n", "groups", "delta_softplus"),
    list(itertools.product((1, 16), (None, 2), (False, True))),
    ids=lambda v: str(v),
)
def test_gradients_match_reference(device, n, groups, delta_softplus, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(2, 4, 64, n, groups, delta_softplus=delta_softplus, seed=11)
    expected = _grads("reference", "cpu", inputs)
    actual = _grads("triton", device, inputs)
    for name in INPUT_NAMES:
        assert actual[name].dtype == inputs[name].dtype, name
        assert_scaled_close(actual[name], expected[name], FP32_REL, f"grad {name}")


def test_gradients_match_reference_without_optional_inputs(device, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(2, 4, 40, 4, 2, D=False, z=False, delta_bias=False, delta_softplus=False, seed=12)
    expected = _grads("reference", "cpu", inputs)
    actual = _grads("triton", device, inputs)
    for name in ("u", "delta", "A", "B", "C"):
        assert_scaled_close(actual[name], expected[name], FP32_REL, f"grad {name}")


@pytest.mark.parametrize(
    "requires_grad",
    [("u",), ("delta",), ("A", "B"), ("C", "D"), ("z",), ("delta_bias",)],
    ids=lambda v: "+".join(v),
)
def test_gradients_flow_only_to_inputs_that_require_them(device, requires_grad, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(1, 4, 40, 4, 2, seed=12)
    expected = _grads("reference", "cpu", inputs, requires_grad)
    actual = _grads("triton", device, inputs, requires_grad)
    for name in INPUT_NAMES:
        if name in requires_grad:
            assert_scaled_close(actual[name], expected[name], FP32_REL, f"grad {name}")
        else:
            assert actual[name] is None, f"{name} does not require grad but got one"


def test_output_does_not_require_grad_when_no_input_does(device, make_scan_inputs):
    out = selective_scan(**_to(make_scan_inputs(1, 4, 16, 4), device), backend="triton")
    assert not out.requires_grad


def test_backward_passes_float64_gradcheck(device, make_scan_inputs):
    inputs = _to(make_scan_inputs(1, 2, 5, 2, dtype=torch.float64, seed=13), device)
    names = [k for k in INPUT_NAMES if inputs[k] is not None]

    def scan(*tensors):
        return selective_scan(**{**inputs, **dict(zip(names, tensors, strict=True))}, backend="triton")

    leaves = tuple(inputs[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def _ss2d_inputs(h: int, w: int, n: int, seed: int = 0, dtype=torch.float32, b: int = 2, d: int = 6) -> list:
    """u (b, d, h, w), delta (b, 4, d, h·w), A (4d, n), B, C (b, 4, n, h·w), D, delta_bias (4d,)."""
    g = torch.Generator().manual_seed(seed)
    length = h * w

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    u = randn(b, d, h, w)
    delta = randn(b, 4, d, length, scale=0.5)
    A = -(torch.rand(4 * d, n, generator=g) + 0.3).to(dtype)
    return [u, delta, A, randn(b, 4, n, length), randn(b, 4, n, length), randn(4 * d), randn(4 * d)]


def _composed(u, delta, A, B, C, D, bias, softplus=True):
    """The specification: the reference scan on the four materialised scan orders, merged."""
    b, d, h, w = u.shape
    y = selective_scan(
        cross_scan(u).reshape(b, 4 * d, h * w), delta.reshape(b, 4 * d, h * w), A, B, C, D, None, bias, softplus,
        backend="reference",
    )  # fmt: skip
    return cross_merge(y.view(b, 4, d, h * w), h, w)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (3, 20)])
def test_ss2d_scan_matches_the_composed_reference(device, n, hw, assert_scaled_close):
    inputs = _ss2d_inputs(*hw, n)
    expected = _composed(*inputs)
    got = ss2d_scan(*[t.to(device) for t in inputs], delta_softplus=True, backend="triton")
    assert got.device.type == device
    assert_scaled_close(got, expected, FP32_REL)


@pytest.mark.parametrize("n", [1, 4])
def test_ss2d_scan_gradients_match_the_composed_reference(device, n, assert_scaled_close):
    inputs = _ss2d_inputs(5, 7, n, seed=1)
    ref_args = [t.clone().requires_grad_() for t in inputs]
    got_args = [t.to(device).requires_grad_() for t in inputs]
    ref = _composed(*ref_args)
    got = ss2d_scan(*got_args, delta_softplus=True, backend="triton")
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    (ref * weight).sum().backward()
    (got * weight.to(device)).sum().backward()
    for name, r, g in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), ref_args, got_args, strict=True):
        assert g.grad.shape == r.grad.shape, name
        assert_scaled_close(g.grad, r.grad, FP32_REL, f"grad {name}")


def test_ss2d_scan_returns_bfloat16_for_bfloat16_inputs(device, assert_scaled_close):
    inputs = _ss2d_inputs(8, 8, 1, dtype=torch.bfloat16)
    got = ss2d_scan(*[t.to(device) for t in inputs], backend="triton")
    assert got.dtype == torch.bfloat16
    assert_scaled_close(got, _composed(*[t.float() for t in inputs]), HALF_REL)


@pytest.mark.parametrize("direction", range(4))
def test_ss2d_scan_reads_and_merges_each_direction_in_its_scan_order(device, direction):
    # With Δ = 1 (no softplus), A = 0 and B = 1 the state is the running sum of u along the scan order, and C
    # nonzero for one direction only keeps that direction's output: cross_merge of its cumulative sum.
    h, w, d = 3, 5, 2
    u = torch.randn(1, d, h, w, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = torch.zeros(1, 4, 1, h * w, dtype=torch.float64)
    C[:, direction] = 1
    inputs = [u, torch.ones(1, 4, d, h * w), torch.zeros(4 * d, 1), torch.ones(1, 4, 1, h * w), C]
    got = ss2d_scan(*[t.to(device).double() for t in inputs], delta_softplus=False, backend="triton")
    sums = torch.zeros(1, 4, d, h * w, dtype=torch.float64)
    sums[:, direction] = cross_scan(u)[:, direction].cumsum(-1)
    torch.testing.assert_close(got.cpu(), cross_merge(sums, h, w), rtol=1e-12, atol=1e-12)


def test_ss2d_scan_backward_is_the_adjoint_of_its_forward_in_u(device):
    # For fixed Δ, A, B, C, D the fused scan is linear in u: <L u, v> must equal <u, Lᵀ v>, with Lᵀ v the
    # kernel's du for the output gradient v (its merge of the four directions back into the map).
    u, delta, A, B, C, D, bias = (t.double().to(device) for t in _ss2d_inputs(3, 5, 4, seed=6))
    v = torch.randn(2, 6, 15, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(device)
    u = u.requires_grad_()
    out = ss2d_scan(u, delta, A, B, C, D, bias, True, backend="triton")
    (out * v).sum().backward()
    torch.testing.assert_close((out * v).sum(), (u * u.grad).sum(), rtol=1e-12, atol=1e-12)


def test_triton_backend_refuses_cpu_tensors_without_the_interpreter(monkeypatch, make_scan_inputs):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_auto_picks_triton_on_cuda_tensors():
    assert resolve_backend("auto", "cuda", torch.float32) == "triton"
    assert resolve_backend("auto", "cuda", torch.bfloat16) == "triton"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("n", [1, 16])
def test_long_sequence_forward_and_gradients_match_reference_on_cuda(n, make_scan_inputs, assert_scaled_close):
    # Many chunks of the compiled kernels' tile size; the interpreter variants above keep to l <= 64.
    inputs = make_scan_inputs(2, 8, 1000, n, 2, seed=1)
    _check_parity("cuda", inputs, True, FP32_REL, assert_scaled_close)
    expected = _grads("reference", "cpu", inputs)
    actual = _grads("triton", "cuda", inputs)
    for name in INPUT_NAMES:
        assert_scaled_close(actual[name], expected[name], FP32_REL, f"grad {name}")


_COMPILE_FOR_SM90 = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mdseg.kernels import scan_triton as st

def compile_(fn, dtype, constexprs, warps):
    signature = {
        name: "constexpr" if name in constexprs else (dtype if name.endswith("_ptr") else "i32")
        for name in fn.arg_names
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert "cubin" in kernel.asm

for ndir, nstate, dtype in ((4, 1, "*bf16"), (1, 16, "*fp32")):
    cfg = st._config(nstate, 256, True)
    flags = dict(HAS_D=True, HAS_Z=ndir == 1, HAS_BIAS=True, SOFTPLUS=True, NDIR=ndir, ACC=tl.float32,
                 BLOCK_N=cfg.block_n, CHUNK=cfg.chunk)
    compile_(st._scan_fwd_kernel, dtype, {**flags, "SAVE_STATES": True, "BLOCK_D": cfg.block_d_fwd}, cfg.warps)
    compile_(st._scan_bwd_kernel, dtype, {**flags, "BLOCK_D": cfg.block_d_bwd}, cfg.warps)
"""


def test_kernels_compile_for_a_gpu_without_one(tmp_path):
    # The interpreter does not run Triton's compiler; this does, for sm_90 through ptxas (bundled with triton),
    # in a process where the kernels are built compiled. Skipped where this triton cannot target CUDA offline.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, capture_output=True, text=True)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    missing_ptxas = "ptxas" in last and ("not found" in last or "No such file" in last)
    if done.returncode != 0 and (last.startswith(("ImportError", "ModuleNotFoundError")) or missing_ptxas):
        pytest.skip(f"this triton cannot compile for CUDA offline: {last}")
    assert done.returncode == 0, done.stderr


def test_interpreter_tests_pass_in_a_fresh_process(interpreter_problem):
    if torch.cuda.is_available() or interpreter_problem is None:
        pytest.skip("no need: the interpreter tests ran in this process" if interpreter_problem is None else "GPU")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreter"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_import_mdseg_does_not_import_triton():
    code = "import sys, mdseg, mdseg.kernels, mdseg.models, mdseg.cli; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
