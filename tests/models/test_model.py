"""The full model: shapes, padding, seeded sampling, one backbone pass per prediction, training signal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mdseg.config import preset
from mdseg.errors import MdsegError
from mdseg.models import MambaDiffusionSeg, build_model
from mdseg.models.segmentor import pad_to_multiple
from mdseg.release import convert_release_state_dict

ORACLE = Path(__file__).resolve().parents[1] / "fixtures" / "oracle"


def pair(batch: int, opt_bands: int, sar_bands: int, height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, opt_bands, height, width, generator=g), torch.randn(
        batch, sar_bands, height, width, generator=g
    )


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny() -> MambaDiffusionSeg:
    torch.manual_seed(0)
    return build_model("tiny", opt_bands=4, sar_bands=1, num_classes=5).eval()


@pytest.mark.parametrize(
    ("opt_bands", "sar_bands", "num_classes", "height", "width"),
    [(4, 1, 7, 32, 32), (13, 2, 7, 45, 70), (3, 2, 2, 33, 31)],
)
def test_predict_gives_logits_at_input_size(opt_bands, sar_bands, num_classes, height, width) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", opt_bands=opt_bands, sar_bands=sar_bands, num_classes=num_classes).eval()
    opt, sar = pair(2, opt_bands, sar_bands, height, width)
    logits = model.predict(opt, sar, steps=2, generator=seeded(0))
    assert logits.shape == (2, num_classes, height, width)
    assert torch.isfinite(logits).all()


def test_forward_train_on_odd_size_gives_finite_losses(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(2, 4, 1, 37, 50)
    label = torch.randint(0, 5, (2, 37, 50), generator=seeded(1))
    label[:, :5] = 255
    torch.manual_seed(0)
    losses = tiny.forward_train(opt, sar, label)
    assert set(losses) == {"loss", "loss_decode", "loss_aux", "acc", "acc_aux"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["loss_decode"] + losses["loss_aux"])


def test_forward_train_rejects_a_label_of_another_size(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(1, 4, 1, 32, 32)
    with pytest.raises(MdsegError, match="label"):
        tiny.forward_train(opt, sar, torch.zeros(1, 16, 16, dtype=torch.long))


def test_same_generator_seed_gives_identical_logits(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(1, 4, 1, 32, 32)
    assert torch.equal(tiny.predict(opt, sar, generator=seeded(3)), tiny.predict(opt, sar, generator=seeded(3)))


def test_different_seeds_give_different_logits(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(1, 4, 1, 32, 32)
    assert not torch.equal(tiny.predict(opt, sar, generator=seeded(3)), tiny.predict(opt, sar, generator=seeded(4)))


def test_batch_with_per_item_generators_equals_items_one_by_one(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(2, 4, 1, 32, 64)
    batch = tiny.predict(opt, sar, generator=[seeded(10), seeded(11)])
    for i in range(2):
        alone = tiny.predict(opt[i : i + 1], sar[i : i + 1], generator=seeded(10 + i))
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 4])
def test_backbone_runs_once_per_predict_whatever_the_steps(tiny: MambaDiffusionSeg, steps: int) -> None:
    calls = {"backbone": 0, "denoiser": 0}
    hooks = [
        tiny.backbone.register_forward_hook(lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1)),
        tiny.head.denoiser.register_forward_hook(lambda *_: calls.__setitem__("denoiser", calls["denoiser"] + 1)),
    ]
    try:
        tiny.predict(*pair(1, 4, 1, 32, 32), steps=steps, generator=seeded(0))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"backbone": 1, "denoiser": steps}


def test_samples_average_draws_and_give_a_disagreement_map(tiny: MambaDiffusionSeg) -> None:
    opt, sar = pair(1, 4, 1, 32, 32)
    feature = tiny.extract_features(opt, sar)
    latents = torch.randn((3, *feature.shape[1:]), generator=seeded(5))
    with torch.no_grad():
        draws = [tiny.sample_head(feature, latents[i : i + 1], 3) for i in range(3)]
    logits, disagreement = tiny.predict(opt, sar, generator=seeded(5), samples=3, return_disagreement=True)
    expected = torch.nn.functional.interpolate(torch.stack(draws).mean(0), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert disagreement.shape == (1, 32, 32)
    assert disagreement.min() >= 0 and disagreement.max() <= 1


def test_single_sample_has_no_disagreement(tiny: MambaDiffusionSeg) -> None:
    _, disagreement = tiny.predict(*pair(1, 4, 1, 32, 32), generator=seeded(0), return_disagreement=True)
    assert not disagreement.any()


def test_wrong_number_of_generators_is_refused(tiny: MambaDiffusionSeg) -> None:
    with pytest.raises(MdsegError, match="generators"):
        tiny.predict(*pair(2, 4, 1, 32, 32), generator=[seeded(0)])


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(replace(preset("tiny"), drop_path_rate=0.0), opt_bands=2, sar_bands=1, num_classes=3)
    # 64×64: at 32×32 the last stage is 1×1, where a scan of length 1 cannot depend on A
    opt, sar = pair(2, 2, 1, 64, 64)
    label = torch.randint(0, 3, (2, 64, 64), generator=seeded(2))
    label[:, :8, :8] = 255  # the embedding's ignore row is trained too
    model.forward_train(opt, sar, label)["loss"].backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unreached == []


def test_pad_to_multiple_reflects_inputs_smaller_than_the_padding() -> None:
    x = torch.arange(15.0).view(1, 1, 3, 5)
    padded = pad_to_multiple(x, 32)
    assert padded.shape == (1, 1, 32, 32)
    assert torch.equal(padded[..., :3, :5], x)
    assert torch.equal(padded[..., 3, :5], x[..., 1, :])  # reflection about the last row


def test_build_model_accepts_a_config_and_overrides_bands() -> None:
    with torch.device("meta"):
        model = build_model(preset("small"), opt_bands=13, sar_bands=2, num_classes=9)
    assert (model.config.opt_bands, model.config.sar_bands, model.config.num_classes) == (13, 2, 9)
    assert model.config.neck_channels == preset("small").neck_channels


@pytest.mark.parametrize("bad", [{"num_classes": 255}, {"neck_channels": 66}, {"head_heads": 5}])
def test_build_model_refuses_impossible_head_settings(bad: dict) -> None:
    with pytest.raises(MdsegError), torch.device("meta"):
        build_model(replace(preset("tiny"), **bad))


@pytest.mark.skipif(not (ORACLE / "keys_paper.json").exists(), reason="release key lists not present")
def test_release_checkpoint_keys_map_onto_the_paper_model() -> None:
    backbone = json.loads((ORACLE / "keys_paper.json").read_text())
    rest = json.loads((ORACLE / "head_oracle_config.json").read_text())["paper_state_dict_keys"]
    release = {"backbone." + k: torch.empty(s, device="meta") for k, s in backbone}
    release |= {k: torch.empty(s, device="meta") for k, s in rest}
    config, ours, _ = convert_release_state_dict(release)
    with torch.device("meta"):
        expected = build_model(config).state_dict()
    assert sorted(ours) == sorted(expected)
    assert [k for k in ours if ours[k].shape != expected[k].shape] == []


def test_paper_neck_and_heads_have_the_release_parameter_counts() -> None:
    with torch.device("meta"):
        model = build_model("paper")

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # release: neck 3,117,568; decode head 7,247,687 + embedding/transform/time MLP 1,201,416; aux 592,135
    assert (count(model.neck), count(model.head), count(model.aux_head)) == (3_117_568, 8_449_103, 592_135)


@pytest.mark.slow
def test_tiny_model_overfits_a_small_batch() -> None:
    torch.manual_seed(0)
    classes, size = 3, 32
    g = seeded(0)
    label = torch.randint(0, classes, (2, size // 8, size // 8), generator=g)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)
    onehot = torch.nn.functional.one_hot(label, classes).permute(0, 3, 1, 2).float()
    opt = onehot + 0.1 * torch.randn(onehot.shape, generator=g)
    sar = onehot[:, :1] - onehot[:, 1:2] + 0.1 * torch.randn(2, 1, size, size, generator=g)
    model = build_model("tiny", opt_bands=classes, sar_bands=1, num_classes=classes)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0)
    losses = []
    for _ in range(40):
        loss = model.forward_train(opt, sar, label)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    pred = model.predict(opt, sar, generator=seeded(1)).argmax(1)
    assert sum(losses[-5:]) / 5 < 0.1 * losses[0]  # t is random per step: average out its noise
    assert (pred == label).float().mean() > 0.95
