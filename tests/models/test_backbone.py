"""Behaviour of the fused backbone: shapes, the two fusion mixers, drop-path schedule, parameter count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdseg.config import preset
from mdseg.errors import MdsegError
from mdseg.models.backbone import FusedBackbone, drop_path_schedule
from mdseg.models.fusion import DCF, DSS4

DIM, D_INNER, DT_RANK, D_STATE = 8, 16, 1, 1


@pytest.fixture(autouse=True)
def reference_scan(monkeypatch):
    # the sequential reference scan is the specification; the fast paths have their own parity tests
    monkeypatch.setenv("MDSEG_SCAN_BACKEND", "reference")


def streams(seed: int, h: int = 6, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (1, h, w, DIM) channels-last streams, as the fusion mixers see them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, h, w, DIM, generator=gen), torch.randn(1, h, w, DIM, generator=gen)


def mixer(kind: type[DCF] | type[DSS4]) -> DCF | DSS4:
    torch.manual_seed(0)
    module = kind(DIM, D_INNER, DT_RANK, D_STATE)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


@pytest.mark.parametrize(
    ("opt_bands", "sar_bands", "h", "w"),
    [(4, 1, 32, 32), (13, 2, 32, 64), (3, 2, 64, 32)],
    ids=["whu", "hunan", "rgb-vvvh-tall"],
)
def test_features_have_stage_widths_and_strides(opt_bands, sar_bands, h, w):
    config = preset("tiny", dims=8, opt_bands=opt_bands, sar_bands=sar_bands)
    torch.manual_seed(0)
    model = FusedBackbone(config).eval()
    with torch.no_grad():
        features = model(torch.randn(2, opt_bands, h, w), torch.randn(2, sar_bands, h, w))
    assert [tuple(f.shape) for f in features] == [
        (2, config.stage_dims[i], h // 4 // 2**i, w // 4 // 2**i) for i in range(4)
    ]


def test_input_not_multiple_of_32_is_refused():
    model = FusedBackbone(preset("tiny"))
    with pytest.raises(MdsegError, match="multiples of 32"):
        model(torch.zeros(1, 4, 48, 32), torch.zeros(1, 1, 48, 32))


def test_band_count_mismatch_is_refused():
    model = FusedBackbone(preset("tiny"))
    with pytest.raises(MdsegError, match="SAR input"):
        model(torch.zeros(1, 4, 32, 32), torch.zeros(1, 2, 32, 32))


def test_every_parameter_gets_a_gradient():
    # we hold none of the release's dead weights, so nothing may sit outside the graph
    # (no drop-path, and ≥ 2 positions at stride 32 so A acts on a carried state)
    torch.manual_seed(0)
    model = FusedBackbone(preset("tiny", dims=8, drop_path_rate=0.0))
    features = model(torch.randn(1, 4, 32, 64), torch.randn(1, 1, 32, 64))
    sum(f.square().mean() for f in features).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_dcf_output_depends_on_the_other_modality():
    module = mixer(DCF)
    own, other = streams(1)
    _, other2 = streams(2)
    with torch.no_grad():
        assert not torch.allclose(module(own, other), module(own, other2))


def test_dcf_other_modality_enters_only_through_reversed_directions():
    # with directions 2–3 blind to their drive sequences, swapping the other modality changes nothing
    module = mixer(DCF)
    with torch.no_grad():
        module.core.x_proj_weight[2:] = 0
        own, other = streams(1)
        _, other2 = streams(2)
        assert torch.equal(module(own, other), module(own, other2))


def test_dcf_reversed_directions_alone_carry_the_other_modality():
    module = mixer(DCF)
    with torch.no_grad():
        module.core.x_proj_weight[:2] = 0
        own, other = streams(1)
        _, other2 = streams(2)
        assert not torch.allclose(module(own, other), module(own, other2))


def test_dss4_output_depends_on_the_other_modality():
    module = mixer(DSS4)
    own, other = streams(1)
    _, other2 = streams(2)
    with torch.no_grad():
        assert not torch.allclose(module(own, other), module(own, other2))


def test_dss4_gates_both_scans_by_the_own_stream_only():
    # a closed own gate (z rows of in_proj_own zeroed: SiLU(0) = 0) silences the other stream's scan too
    module = mixer(DSS4)
    assert module.in_proj_other.weight.shape[0] == D_INNER  # the other stream has no gate at all
    with torch.no_grad():
        module.in_proj_own.weight[D_INNER:] = 0
        own, other = streams(1)
        assert torch.equal(module(own, other), torch.zeros_like(own))


def test_dss4_is_the_shared_core_applied_to_each_stream():
    module = mixer(DSS4)
    own, other = streams(1)
    with torch.no_grad():
        x_own, z_own = module.in_proj_own(own).chunk(2, dim=-1)
        x_other = module.in_proj_other(other)
        scanned = []
        for x, conv in ((x_own, module.conv_own), (x_other, module.conv_other)):
            x_map = F.silu(conv(x.permute(0, 3, 1, 2)))
            scanned.append(module.core(x_map, x_map, x_map))
        expected = module.out_proj(scanned[0] * F.silu(z_own) + scanned[1] * F.silu(z_own))
        torch.testing.assert_close(module(own, other), expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def paper_on_meta() -> FusedBackbone:
    with torch.device("meta"):
        return FusedBackbone(preset("paper"))


def test_paper_drop_path_schedule_reuses_the_encoder_list_by_index(paper_on_meta):
    model = paper_on_meta
    rates = [0.6 * i / 20 for i in range(21)]

    def per_stage(blocks_of):
        return [[block.drop_path.p for block in blocks_of(stage)] for stage in model.stages]

    enc = per_stage(lambda s: s.blocks_opt)
    assert per_stage(lambda s: s.blocks_sar) == enc
    assert [p for stage in enc for p in stage] == pytest.approx(rates)
    dcf = per_stage(lambda s: s.dcf)
    dss4 = per_stage(lambda s: s.dss4)
    assert [len(s) for s in dcf] == [2, 2, 2, 2] and [len(s) for s in dss4] == [2, 2, 4, 2]
    assert [p for stage in dcf for p in stage] == pytest.approx(rates[:8])  # 0 … 0.21
    assert [p for stage in dss4 for p in stage] == pytest.approx(rates[:10])  # 0 … 0.27


def test_fusion_deeper_than_the_encoder_is_refused():
    with pytest.raises(MdsegError, match="more blocks than the encoder"):
        drop_path_schedule(preset("tiny", dss4_depths=(2, 2, 2, 2)))


def test_paper_parameter_count_plus_release_dead_weights_is_the_release_count(paper_on_meta):
    config = paper_on_meta.config
    ours = sum(p.numel() for p in paper_on_meta.parameters())
    assert ours == 372_701_632
    # dead in the release, per stage width d (d_inner = 2d), two modules (one per stream) per fusion block
    dcf_out_proj_b = sum(2 * n * (2 * d * d) for n, d in zip(config.dcf_depths, config.stage_dims, strict=True))
    dss4_out_proj_b = sum(2 * n * (2 * d * d) for n, d in zip(config.dss4_depths, config.stage_dims, strict=True))
    dss4_in_proj_b_z = dss4_out_proj_b  # the other stream's z rows: d_inner × d each, same size
    classifier = 2 * 1024 + 1024 * 7 + 7  # LayerNorm + Linear(1024 -> 7 classes)
    assert (dcf_out_proj_b, dss4_out_proj_b, classifier) == (11_141_120, 13_238_272, 9_223)
    dead = dcf_out_proj_b + dss4_out_proj_b + dss4_in_proj_b_z + classifier
    assert dead == 37_626_887
    assert ours + dead == 410_328_519


def test_fresh_scan_parameters_follow_the_release_init():
    torch.manual_seed(0)
    core = FusedBackbone(preset("tiny")).stages[0].blocks_opt[0].ss2d.core
    assert torch.equal(core.A_log, torch.zeros_like(core.A_log))  # S4D-real with d_state 1: A = -1
    assert torch.equal(core.D, torch.ones_like(core.D))
    dt = F.softplus(core.dt_proj_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
