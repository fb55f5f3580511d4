"""Neck and diffusion head against the authors' own outputs (tests/fixtures/oracle/HEAD.md), random weights.

The weights are imported with `map_head_keys`, so these tests also pin the key mapping.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdseg.config import preset
from mdseg.models import MambaDiffusionSeg
from mdseg.models.diffusion_head import alpha_sigma, ddim_times, log_snr, upsample_logits
from mdseg.release import map_head_keys

ORACLE = Path(__file__).resolve().parents[1] / "fixtures" / "oracle"
REL = 1e-4

pytestmark = pytest.mark.skipif(not (ORACLE / "head_oracle.safetensors").exists(), reason="head oracle not present")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(ORACLE / "head_oracle_io.safetensors")


@pytest.fixture(scope="module")
def model() -> MambaDiffusionSeg:
    """The full model with the oracle's neck and heads; its (small, random) backbone is not used here."""
    values, state, _ = map_head_keys(load_file(ORACLE / "head_oracle.safetensors"), head_heads=4, gn_groups=4)
    # the oracle's stage widths 8, 16, 32, 64
    config = replace(preset("tiny"), dims=8, **values)
    torch.manual_seed(0)
    net = MambaDiffusionSeg(config)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.startswith("backbone.") for k in missing)
    return net.eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """max |actual − expected| ≤ REL · max |expected|."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= REL * scale, f"{what}: max abs error {err:.3g} > {REL:g} × {scale:.3g}"


def stage_inputs(io: dict[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    return [io[f"{prefix}.in{i}"] for i in range(4)]


def test_map_head_keys_infers_the_oracle_sizes() -> None:
    values, state, report = map_head_keys(load_file(ORACLE / "head_oracle.safetensors"), head_heads=4, gn_groups=4)
    assert values == {
        "neck_channels": 32,
        "num_classes": 7,
        "head_layers": 2,
        "head_ffn": 64,
        "learned_sinusoidal_dim": 16,
        "head_heads": 4,
        "head_points": 4,
        "gn_groups": 4,
    }
    assert len(state) == 81 and len(report) == 3


@torch.no_grad()
def test_neck_matches_oracle(model: MambaDiffusionSeg, io: dict[str, torch.Tensor]) -> None:
    assert_close(model.neck(stage_inputs(io, "neck")), io["neck.out"], "neck.out")


def test_schedule_matches_oracle_in_float32(io: dict[str, torch.Tensor]) -> None:
    for k, (t_now, t_next) in enumerate(ddim_times(3)):
        step = f"ddim.step{k}."
        now = torch.tensor([t_now], dtype=torch.float32)
        nxt = torch.tensor([t_next], dtype=torch.float32)
        assert torch.equal(now, io[step + "t_now"]) and torch.equal(nxt, io[step + "t_next"])
        for got, key in [(log_snr(now), "log_snr"), (log_snr(nxt), "log_snr_next")]:
            torch.testing.assert_close(got, io[step + key], rtol=1e-6, atol=0)
        alpha, sigma = alpha_sigma(log_snr(now))
        torch.testing.assert_close(alpha, io[step + "alpha"], rtol=1e-6, atol=0)
        torch.testing.assert_close(sigma, io[step + "sigma"], rtol=1e-6, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("k", [0, 1, 2])
def test_ddim_step_teacher_forced_matches_oracle(model: MambaDiffusionSeg, io: dict[str, torch.Tensor], k: int) -> None:
    step, head = f"ddim.step{k}.", model.head
    feature, latent = io["ddim.neck_out"], io[step + "latent_in"]
    assert_close(head.time_embed(io[step + "log_snr"]), io[step + "time_emb"], "time_emb")
    assert_close(head.input_proj(torch.cat([feature, latent], 1)), io[step + "transform_out"], "transform_out")
    out = head.ddim_step(feature, latent, *ddim_times(3)[k])
    assert_close(out.logits, io[step + "logits"], "logits")
    assert torch.equal(out.logits.argmax(1), io[step + "argmax"])
    assert_close(out.mask_pred, io[step + "mask_pred"], "mask_pred")
    assert_close(out.pred_noise, io[step + "pred_noise"], "pred_noise")
    assert_close(out.latent, io[step + "latent_out"], "latent_out")


@torch.no_grad()
@pytest.mark.parametrize("case", ["ddim", "rect"])
def test_free_ddim_run_matches_oracle(model: MambaDiffusionSeg, io: dict[str, torch.Tensor], case: str) -> None:
    feature = model.neck(stage_inputs(io, case))
    assert_close(feature, io[f"{case}.neck_out"], "neck_out")
    logits = model.sample_head(feature, io[f"{case}.init_latent"], steps=3)
    assert_close(logits, io[f"{case}.final_logits_s4"], "final_logits_s4")
    full = io[f"{case}.final_logits"]
    assert_close(upsample_logits(logits, full.shape[-2:]), full, "final_logits")


@torch.no_grad()
def test_training_logits_match_oracle(model: MambaDiffusionSeg, io: dict[str, torch.Tensor]) -> None:
    feature = io["train.neck_out"]
    decode = model.head.train_logits(feature, io["train.gt"][:, 0], io["train.t"], io["train.noise"])
    assert_close(decode, io["train.decode_logits"], "decode_logits")
    assert_close(model.aux_head(feature), io["train.aux_logits"], "aux_logits")


@torch.no_grad()
def test_training_losses_match_oracle(model: MambaDiffusionSeg, io: dict[str, torch.Tensor]) -> None:
    losses = model.head_losses(io["train.neck_out"], io["train.gt"][:, 0], io["train.t"], io["train.noise"])
    assert losses["loss_decode"].item() == pytest.approx(2.5596163, rel=REL)
    assert losses["loss_aux"].item() == pytest.approx(0.7363928, rel=REL)
    for ours, theirs in [
        ("loss_decode", "decode.loss_ce"),
        ("loss_aux", "aux.loss_ce"),
        ("acc", "decode.acc_seg"),
        ("acc_aux", "aux.acc_seg"),
    ]:
        assert losses[ours].item() == pytest.approx(io[f"train.loss.{theirs}"].item(), rel=REL), ours
