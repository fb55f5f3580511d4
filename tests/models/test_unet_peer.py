"""bench/unet_peer.py, the benchmark's stand-in for smp.Unet("resnet18"): its size, cost and output shape."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

# smp.Unet("resnet18", in_channels=5, classes=7): ResNet-18 without its classifier (11 176 512 at 3 bands,
# 2 × 64 × 7 × 7 more at 5), the decoder's ten convolutions and BNs, and the 3×3 head
SMP_PARAMETERS = 11_176_512 + 2 * 64 * 7 * 7 + 3_149_568 + 1_984 + 1_015


@pytest.fixture(scope="module")
def unet_peer():
    path = Path(__file__).resolve().parents[2] / "bench" / "unet_peer.py"
    spec = importlib.util.spec_from_file_location("unet_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameter_count_is_smp_unet_resnet18(unet_peer):
    with torch.device("meta"):
        model = unet_peer.UnetResNet18(in_channels=5, classes=7)
    assert sum(p.numel() for p in model.parameters()) == SMP_PARAMETERS


def test_flops_per_256_tile_are_smp_unet_resnet18(unet_peer):
    with torch.device("meta"):
        model = unet_peer.UnetResNet18(in_channels=5, classes=7).eval()
        x = torch.empty(1, 5, 256, 256)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 1e9 == pytest.approx(11.1, abs=0.05)


def test_logits_have_the_input_size(unet_peer):
    torch.manual_seed(0)
    model = unet_peer.UnetResNet18(in_channels=5, classes=7).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 5, 64, 96))
    assert out.shape == (2, 7, 64, 96)
