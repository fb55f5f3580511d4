"""Backward of the selective-scan backends, and behaviour at 65 536 steps.

Gradient tolerance, per input: max abs error <= 1e-4 x max(1, max |reference gradient|), the forward rule.
`cpu` has a hand-written backward, so it is also checked with `torch.autograd.gradcheck` in float64.

Long sequences (l = 65 536) are checked in two regimes, strong decay (Δ·A <= -250: exp underflows, the state
forgets every step) and near-zero decay (Δ ~ 1e-4: the state carries across the whole sequence). Because the
scan is causal, the first 512 outputs must equal the reference run on the first 512 steps; the final state is
compared with its closed form x_L = Σ_k exp(A·Σ_{j>k} Δ_j)·Δ_k·B_k·u_k evaluated in float64. Both use a
tolerance relative to the values' own scale with a floor of 1e-6 instead of 1, since near-zero decay gives
small values and underflowed decays give gradients that are exactly zero in the reference.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from mdseg.kernels import backend_status, selective_scan

STATUS = {s.name: s for s in backend_status()}


def _backend_param(name: str):
    return pytest.param(name, marks=[] if STATUS[name].available else pytest.mark.skip(reason=STATUS[name].detail))


GRAD_BACKENDS = [_backend_param("cpu"), _backend_param("torch")]
CPU = [_backend_param("cpu")]
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
SEQUENCE_INPUTS = ("u", "delta", "B", "C", "z")
REL = 1e-4
LONG = 65_536
PREFIX = 512
TINY = 1e-6  # error floor for the long tests: their values are small, and underflowed decays give exact zeros


def _leaves(inputs: dict, requires_grad) -> dict:
    return {
        k: v.detach().clone().requires_grad_(k in requires_grad) if isinstance(v, torch.Tensor) else v
        for k, v in inputs.items()
    }


def _grads(backend: str, inputs: dict, requires_grad=INPUT_NAMES, grad_out: torch.Tensor | None = None) -> dict:
    """Gradients of <out, grad_out> (grad_out seeded normal when not given) for every input in `requires_grad`."""
    leaves = _leaves(inputs, requires_grad)
    out = selective_scan(**leaves, backend=backend)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    out.backward(grad_out)
    return {k: leaves[k].grad for k in INPUT_NAMES if isinstance(leaves.get(k), torch.Tensor)}


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize(
    ("n", "groups", "delta_softplus"),
    list(itertools.product((1, 16), (None, 2), (False, True))),
    ids=lambda v: str(v),
)
def test_gradients_match_reference(backend, n, groups, delta_softplus, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(2, 8, 300, n, groups, delta_softplus=delta_softplus, seed=11)
    expected = _grads("reference", inputs)
    actual = _grads(backend, inputs)
    for name in INPUT_NAMES:
        assert actual[name].dtype == inputs[name].dtype, name
        assert_scaled_close(actual[name], expected[name], REL, f"grad {name}")


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize(
    "requires_grad",
    [("u",), ("delta",), ("A", "B"), ("C", "D"), ("z",), ("delta_bias",)],
    ids=lambda v: "+".join(v),
)
def test_gradients_flow_only_to_inputs_that_require_them(backend, requires_grad, make_scan_inputs, assert_scaled_close):
    inputs = make_scan_inputs(1, 4, 40, 4, 2, seed=12)
    expected = _grads("reference", inputs, requires_grad)
    actual = _grads(backend, inputs, requires_grad)
    for name in INPUT_NAMES:
        if name in requires_grad:
            assert_scaled_close(actual[name], expected[name], REL, f"grad {name}")
        else:
            assert actual[name] is None, f"{name} does not require grad but got one"


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_output_does_not_require_grad_when_no_input_does(backend, make_scan_inputs):
    out = selective_scan(**make_scan_inputs(1, 4, 16, 4), backend=backend)
    assert not out.requires_grad


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize(
    ("b", "d", "length", "n", "groups", "options"),
    [
        (1, 2, 5, 1, None, {"D": False, "z": False, "delta_bias": False, "delta_softplus": False}),
        (1, 3, 8, 2, None, {"delta_softplus": False}),
        (2, 4, 8, 2, 2, {}),
        (2, 4, 6, 1, 4, {"z": False}),
        (2, 2, 1, 2, None, {}),
    ],
    ids=["bare", "ungrouped", "grouped", "grouped-per-channel", "length1"],
)
def test_cpu_backward_passes_float64_gradcheck(backend, b, d, length, n, groups, options, make_scan_inputs):
    inputs = make_scan_inputs(b, d, length, n, groups, dtype=torch.float64, seed=13, **options)
    names = [k for k in INPUT_NAMES if inputs[k] is not None]

    def scan(*tensors):
        return selective_scan(**{**inputs, **dict(zip(names, tensors, strict=True))}, backend=backend)

    leaves = tuple(inputs[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@functools.cache
def _long_inputs(regime: str) -> dict:
    gen = torch.Generator().manual_seed(21)
    b, d, n = 1, 4, 16
    if regime == "strong-decay":
        delta = 5 + 5 * torch.rand(b, d, LONG, generator=gen)
        A = -(50 + 50 * torch.rand(d, n, generator=gen))
    else:
        delta = 1e-4 * (0.5 + torch.rand(b, d, LONG, generator=gen))
        A = -(0.5 + torch.rand(d, n, generator=gen))
    return {
        "u": torch.randn(b, d, LONG, generator=gen),
        "delta": delta,
        "A": A,
        "B": torch.randn(b, n, LONG, generator=gen),
        "C": torch.randn(b, n, LONG, generator=gen),
    }


def _prefix(inputs: dict, length: int) -> dict:
    return {k: v[..., :length] if k in SEQUENCE_INPUTS and v is not None else v for k, v in inputs.items()}


def _closed_form_last_state(u, delta, A, B, C) -> torch.Tensor:
    """x_L = Σ_k exp(A·Σ_{j>k} Δ_j)·Δ_k·B_k·u_k in float64, (b, d, n); B ungrouped (b, n, l)."""
    u, delta, A, B = u.double(), delta.double(), A.double(), B.double()
    after = delta.sum(-1, keepdim=True) - delta.cumsum(-1)  # Σ_{j>k} Δ_j, (b, d, l)
    decay = torch.exp(after[..., None] * A[:, None, :])  # (b, d, l, n)
    return torch.einsum("bdln,bdl,bnl->bdn", decay, delta * u, B)


REGIMES = ["strong-decay", "near-zero-decay"]


@functools.cache
def _long_forward(backend: str, regime: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, last state) of the long scan, computed once per backend and regime for the tests below."""
    return selective_scan(**_long_inputs(regime), return_last_state=True, backend=backend)


@pytest.fixture(params=REGIMES)
def regime(request) -> str:
    return request.param


@pytest.fixture
def long_inputs(regime) -> dict:
    return _long_inputs(regime)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_long_sequence_output_is_finite_and_matches_reference_on_prefix(
    backend, regime, long_inputs, assert_scaled_close
):
    out, _ = _long_forward(backend, regime)
    assert torch.isfinite(out).all()
    expected = selective_scan(**_prefix(long_inputs, PREFIX), backend="reference")
    assert_scaled_close(out[..., :PREFIX], expected, REL, "prefix", floor=TINY)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_long_sequence_last_state_matches_closed_form(backend, regime, long_inputs, assert_scaled_close):
    _, state = _long_forward(backend, regime)
    assert_scaled_close(state, _closed_form_last_state(**long_inputs), 1e-3, "last state", floor=TINY)


@pytest.mark.parametrize("backend", CPU)
def test_long_sequence_backward_is_finite(backend, long_inputs):
    grads = _grads(backend, long_inputs)
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"grad {name} has non-finite values"


@pytest.mark.parametrize("backend", CPU)
def test_long_sequence_backward_matches_reference_when_only_prefix_is_used(backend, long_inputs, assert_scaled_close):
    # Outputs after the prefix get zero gradient, so (causality) every gradient equals the prefix-only problem's
    # on the prefix and is zero after it.
    grad_out = torch.zeros(long_inputs["u"].shape)
    grad_out[..., :PREFIX] = torch.randn(grad_out[..., :PREFIX].shape, generator=torch.Generator().manual_seed(8))
    actual = _grads(backend, long_inputs, grad_out=grad_out)
    expected = _grads("reference", _prefix(long_inputs, PREFIX), grad_out=grad_out[..., :PREFIX])
    for name, grad in expected.items():
        if name in SEQUENCE_INPUTS:
            assert not actual[name][..., PREFIX:].any(), f"grad {name} is non-zero after the prefix"
            assert_scaled_close(actual[name][..., :PREFIX], grad, REL, f"grad {name}", floor=TINY)
        else:
            assert_scaled_close(actual[name], grad, REL, f"grad {name}", floor=TINY)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", CPU)
def test_cpu_results_do_not_depend_on_thread_count(backend, make_scan_inputs, restore_threads):
    inputs = make_scan_inputs(1, 8, 200, 16, 2, seed=14)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        leaves = _leaves(inputs, INPUT_NAMES)
        out = selective_scan(**leaves, backend=backend)
        out.backward(torch.ones_like(out))
        results.append([out.detach(), *(leaves[k].grad for k in INPUT_NAMES)])
    for name, one_thread, two_threads in zip(("out", *INPUT_NAMES), *results, strict=True):
        assert torch.equal(one_thread, two_threads), f"{name} differs between 1 and 2 threads"
