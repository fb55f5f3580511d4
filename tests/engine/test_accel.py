"""Mixed precision, channels-last and torch.compile (`mdseg.engine.accel`) and their use by predict.

CPU-only checks: the options are validated, the scan stays float32 under autocast, the model gives the same
logits with channels-last weights (the layout it gets on CUDA) and compiled. GPU speed is `bench/bench_gpu.py`'s.
"""

from __future__ import annotations

import pytest
import torch

from mdseg.engine.accel import autocast, check_amp, compiled_parts, prepare_model
from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.errors import OptionError
from mdseg.kernels import selective_scan, ss2d_scan
from mdseg.models import build_model


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_is_refused_on_cpu(amp):
    with pytest.raises(OptionError, match=f"--amp {amp} needs a CUDA device"):
        check_amp(amp, torch.device("cpu"))


def test_unknown_amp_is_an_option_error_listing_the_choices():
    with pytest.raises(OptionError, match="off, bf16, fp16"):
        check_amp("fp8", torch.device("cpu"))


def test_amp_off_is_no_autocast():
    with autocast(torch.device("cpu"), "off"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("backend", ["torch", "cpu", "reference"])
def test_selective_scan_computes_in_float32_under_autocast(backend, make_scan_inputs):
    inputs = make_scan_inputs(2, 4, 300, 16, 2, seed=3)
    expected = selective_scan(**inputs, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = selective_scan(**inputs, backend=backend)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_ss2d_scan_computes_in_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    b, d, h, w, n = 1, 4, 6, 5, 1
    args = [
        torch.randn(b, d, h, w, generator=g),
        torch.randn(b, 4, d, h * w, generator=g),
        -torch.rand(4 * d, n, generator=g) - 0.5,
        torch.randn(b, 4, n, h * w, generator=g),
        torch.randn(b, 4, n, h * w, generator=g),
    ]
    expected = ss2d_scan(*args, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ss2d_scan(*args, backend="torch"), expected)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 64, 64, generator=g), torch.randn(2, 1, 64, 64, generator=g)


def _logits(model, opt, sar) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(opt.shape[0])]
    return model.predict(opt, sar, steps=2, generator=gens)


def test_channels_last_weights_give_the_same_logits():
    torch.manual_seed(0)
    model = build_model("tiny", opt_bands=4, sar_bands=1, num_classes=3).eval()
    opt, sar = _inputs()
    expected = _logits(model, opt, sar)
    model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(_logits(model, opt, sar), expected, rtol=1e-4, atol=1e-4)


def test_prepare_model_keeps_the_module_and_its_parameter_names():
    model = build_model("tiny", opt_bands=4, sar_bands=1, num_classes=3)
    names = list(model.state_dict())
    assert prepare_model(model, torch.device("cpu"), compile=True) is model
    assert list(model.state_dict()) == names


@pytest.mark.slow
def test_compiled_model_gives_the_same_logits():
    # aot_eager: dynamo traces the model (graph breaks at each scan call) and AOTAutograd runs the graphs as
    # they are; inductor's code generation (minutes on a CPU) is torch's to test, not ours. Still ~1 min here.
    torch.manual_seed(0)
    model = build_model("tiny", opt_bands=4, sar_bands=1, num_classes=3).eval()
    opt, sar = _inputs(1)
    expected = _logits(model, opt, sar)
    for part in compiled_parts(model):
        part.compile(backend="aot_eager")
    torch.testing.assert_close(_logits(model, opt, sar), expected, rtol=1e-5, atol=1e-5)


def test_scene_model_records_amp_and_compile_in_the_run_info(tiny_checkpoint):
    info = SceneModel.load(tiny_checkpoint, "cpu").run_info()
    assert (info["amp"], info["compile"], info["channels_last"]) == ("off", False, False)


def test_predict_cli_refuses_amp_on_cpu_in_one_line(mdseg, tiny_checkpoint, tmp_path):
    code, _, err = mdseg(
        "predict", "--opt", tmp_path / "opt.tif", "--sar", tmp_path / "sar.tif", "--checkpoint", tiny_checkpoint,
        "--device", "cpu", "--amp", "bf16",
    )  # fmt: skip
    assert code == 2
    assert err.strip() == "error: --amp bf16 needs a CUDA device (this run is on cpu); use --amp off on CPU"
