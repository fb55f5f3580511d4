"""Parameter counts and FLOPs of the presets, pinned against the authors' release."""

import pytest
import torch
from typer.testing import CliRunner

from mdseg.cli import app
from mdseg.config import preset
from mdseg.models import build_model
from mdseg.models.cost import model_cost, release_dead_parameters

# The release's counts (tests/fixtures/oracle READMEs, from its training log and module tree).
RELEASE_BACKBONE = 410_328_519
RELEASE_DECODE_HEAD = 7_247_687
RELEASE_AUX_HEAD = 592_135
RELEASE_NECK = 3_117_568
RELEASE_DDP_EXTRAS = 1_201_416  # class embedding + input transform + time MLP
RELEASE_TOTAL = 422_487_325


@pytest.fixture(scope="module")
def paper():
    with torch.device("meta"):
        return build_model("paper")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_plus_the_release_dead_weights_is_the_release_total(paper):
    # dead weights we do not build: DCF out_proj_b 11,141,120 + DS-S4 out_proj_b 13,238,272
    # + DS-S4 z half of in_proj_b 13,238,272 + backbone classifier (LN 2·1024 + Linear 1024·7 + 7) 9,223
    dead = release_dead_parameters(preset("paper"))
    assert dead == 11_141_120 + 13_238_272 + 13_238_272 + 9_223
    assert _count(paper.backbone) + dead == RELEASE_BACKBONE
    assert _count(paper) + dead == RELEASE_TOTAL


def test_paper_parts_match_the_release_parts(paper):
    head = paper.head
    assert _count(paper.neck) == RELEASE_NECK
    assert _count(head.denoiser) == RELEASE_DECODE_HEAD
    assert _count(head.class_embedding) + _count(head.input_proj) + _count(head.time_embed) == RELEASE_DDP_EXTRAS
    assert _count(paper.aux_head) == RELEASE_AUX_HEAD


def test_paper_reproduces_the_release_model_size_in_mib(paper):
    # The release log's "Model size: 1595.19" is fp32 MiB of backbone + decode head + aux head (+ BN buffers):
    # it was printed before the neck and the DDP extras were attached.
    aux_buffers = sum(b.numel() for b in paper.aux_head.buffers())
    params = _count(paper.backbone) + release_dead_parameters(preset("paper"))
    params += _count(paper.head.denoiser) + _count(paper.aux_head) + aux_buffers
    assert round(params * 4 / 2**20, 2) == 1595.19


def test_model_cost_splits_paper_flops_and_counts_the_release_parameters():
    cost = model_cost(preset("paper"), tile=256)
    assert cost.release_parameters == RELEASE_TOTAL
    g = cost.gflops
    assert all(g[part] > 0 for part in ("encoder", "fusion", "neck", "head per step"))
    # only the head repeats per DDIM step
    assert cost.gflops_total(3) - cost.gflops_total(1) == pytest.approx(2 * g["head per step"])


def test_info_model_prints_parameters_and_gflops():
    result = CliRunner().invoke(app, ["info", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    assert "release's count" in result.output
    assert "inference, steps=3" in result.output


def test_info_rejects_an_unknown_preset():
    result = CliRunner().invoke(app, ["info", "--model", "huge"])
    assert result.exit_code != 0
    assert "unknown model preset" in str(result.exception) + result.output
