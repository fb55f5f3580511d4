"""Activation checkpointing (`mdseg train --checkpoint-activations`): less kept for backward, same numbers."""

from __future__ import annotations

import json

import pytest
import torch
from data_rasters import write_blob_dataset
from safetensors.torch import load_file

from mdseg.engine.train import TrainSettings, train
from mdseg.models import build_model
from mdseg.models.encoder import DropPath

# a short run on 64² crops, validated (and saved) once at its end
QUICK = {"crop": 64, "batch_size": 2, "workers": 0, "iters": 3, "val_every": 3, "log_every": 1}


def _inputs(batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optical, SAR and a two-class label, the same at every call."""
    g = torch.Generator().manual_seed(1)
    opt = torch.randn(batch, 4, size, size, generator=g)
    sar = torch.randn(batch, 1, size, size, generator=g)
    label = torch.randint(0, 2, (batch, size, size), generator=g)
    label[:, :8] = 255  # some ignored pixels, as real labels have
    return opt, sar, label


def _gradients(model: torch.nn.Module, checkpointed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one training forward + backward; torch's generator seeded the same every time
    (DropPath masks, diffusion time and noise, the auxiliary head's dropout)."""
    model.set_activation_checkpointing(checkpointed)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    loss = model(*_inputs())["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("tiny", 4, 1, 2).train()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs"), {"train": 2, "val": 1}, size=96)


def test_gradients_with_checkpointing_equal_those_without(tiny):
    # DropPath draws masks inside the checkpointed blocks: the recomputation must draw the same ones
    assert max(m.p for m in tiny.modules() if isinstance(m, DropPath)) > 0
    loss_off, grads_off = _gradients(tiny, checkpointed=False)
    loss_on, grads_on = _gradients(tiny, checkpointed=True)
    assert loss_on == loss_off
    assert grads_on.keys() == grads_off.keys() and len(grads_on) == len(list(tiny.parameters()))
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-6, atol=1e-9, msg=name)


def test_checkpointing_keeps_a_fraction_of_the_activations_for_backward(tiny):
    def kept_bytes(checkpointed: bool) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        tiny.set_activation_checkpointing(checkpointed)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            tiny(*_inputs())
        return sum(storages.values())

    assert kept_bytes(True) < 0.4 * kept_bytes(False)


def test_prediction_and_weights_do_not_depend_on_the_setting(tiny):
    opt, sar, _ = _inputs()
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    tiny.eval()
    try:
        out = {}
        for checkpointed in (False, True):
            tiny.set_activation_checkpointing(checkpointed)
            out[checkpointed] = tiny.predict(opt, sar, steps=2, generator=torch.Generator().manual_seed(3))
    finally:
        tiny.train()
    assert torch.equal(out[True], out[False])
    assert tiny.state_dict().keys() == state.keys()  # the setting is no buffer: checkpoints do not change


@pytest.mark.slow
def test_a_short_run_ends_with_the_same_weights_with_and_without_checkpointing(blobs, tmp_path):
    weights = {}
    for checkpointed in (False, True):
        out = tmp_path / f"run-{checkpointed}"
        settings = TrainSettings(data=str(blobs), out=str(out), checkpoint_activations=checkpointed, **QUICK)
        result = train(settings, progress=False)
        assert result.model.backbone.stages[0].checkpoint_activations is checkpointed
        assert result.model.head.denoiser.checkpoint_activations is checkpointed
        weights[checkpointed] = load_file(out / "last.safetensors")
    assert weights[True].keys() == weights[False].keys()
    for name, tensor in weights[False].items():
        # the same operations on the same numbers: equal to the bit, not only within a tolerance
        assert torch.equal(weights[True][name], tensor), name


@pytest.mark.slow
def test_cli_flag_reaches_config_json(blobs, tmp_path, mdseg):
    args = ["train", "--data", blobs, "--iters", "1", "--crop", "64", "--batch-size", "2", "--workers", "0"]
    code, _, err = mdseg(*args, "--out", tmp_path / "on", "--checkpoint-activations", "--quiet")
    assert code == 0, err
    assert json.loads((tmp_path / "on" / "config.json").read_text())["checkpoint_activations"] is True
    code, _, err = mdseg(*args, "--out", tmp_path / "off", "--quiet")
    assert code == 0, err
    assert json.loads((tmp_path / "off" / "config.json").read_text())["checkpoint_activations"] is False
