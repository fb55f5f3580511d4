"""mdseg's checkpoint format: save → load round trip, fp16 storage, and clear refusals of bad files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mdseg.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint, sha256
from mdseg.data.normalise import Normalisation
from mdseg.errors import CheckpointError
from mdseg.models import build_model


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("tiny", opt_bands=2, sar_bands=1, num_classes=3).eval()


def meta_for(model) -> CheckpointMeta:
    return CheckpointMeta(
        config=model.config,
        classes=["water", "forest", "city"],
        palette=[(0, 0, 255), (0, 128, 0), (200, 0, 0)],
        opt_band_names=["red", "nir"],
        sar_band_names=["VV"],
        normalisation=Normalisation([100.0, 200.0], [50.0, 80.0], [-12.0], [4.0]),
        tile=64,
        provenance={"note": "random weights for tests"},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = tiny_model()
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    save_checkpoint(path, model, meta_for(model))
    return path, model


def predict(model, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    opt, sar = torch.randn(1, 2, 64, 64, generator=gen), torch.randn(1, 1, 64, 64, generator=gen)
    return model.predict(opt, sar, steps=2, generator=torch.Generator().manual_seed(seed))


def test_round_trip_gives_identical_predictions_and_metadata(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta == meta_for(model)
    assert torch.equal(predict(loaded), predict(model))


def test_loaded_weights_are_owned_and_aligned_as_the_allocator_aligns_them(saved):
    """Weights viewing safetensors' buffer at the file's offsets (which move with the metadata's length) took
    other BLAS paths: the reloaded model's probabilities differed from the saved model's by 2e-6."""
    loaded, _ = load_checkpoint(saved[0])
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values() if t.numel() > 1)


def test_metadata_lives_in_the_safetensors_header_as_one_json_field(saved):
    path, _ = saved
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    data = json.loads(header["__metadata__"]["mdseg"])
    assert data["format_version"] == 1 and data["classes"] == ["water", "forest", "city"]
    assert read_checkpoint_meta(path).tile == 64


def test_fp16_weights_load_as_fp32(tmp_path, saved):
    _, model = saved
    path = save_checkpoint(tmp_path / "half.safetensors", model, meta_for(model), dtype=torch.float16)
    loaded, _ = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for (name, stored), original in zip(loaded.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.allclose(stored, original, rtol=1e-3, atol=1e-4), name


def test_sha256_is_the_file_hash(saved):
    import hashlib

    path, _ = saved
    assert sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def test_safetensors_without_mdseg_metadata_is_refused(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no mdseg metadata"):
        load_checkpoint(path)


def test_invalid_metadata_is_refused(tmp_path, saved):
    _, model = saved
    data = meta_for(model).to_dict()
    data["classes"] = ["water"]
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"mdseg": json.dumps(data)})
    with pytest.raises(CheckpointError, match="1 class names for 3 classes"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"mdseg": "{not json"})
    with pytest.raises(CheckpointError, match="unreadable mdseg metadata"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, saved):
    _, model = saved
    other = build_model("tiny", opt_bands=3, sar_bands=1, num_classes=3)
    path = tmp_path / "mismatch.safetensors"
    tensors = {k: v.contiguous().clone() for k, v in other.state_dict().items()}
    save_file(tensors, str(path), metadata={"mdseg": json.dumps(meta_for(model).to_dict())})
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(path), metadata={"mdseg": json.dumps(meta_for(model).to_dict())})
    with pytest.raises(CheckpointError, match="1 missing"):
        load_checkpoint(path)


def test_metadata_must_match_the_model_when_saving(tmp_path, saved):
    _, model = saved
    meta = meta_for(model)
    with pytest.raises(CheckpointError, match="config differs"):
        save_checkpoint(tmp_path / "x.safetensors", model, replace(meta, config=replace(meta.config, dims=32)))
