"""`mdseg import-weights`: the authors' released checkpoint → an mdseg checkpoint that loads and predicts.

The release state dicts are built here with the release's exact key names and shapes — those of the small
reference model in tests/fixtures/oracle (backbone `Fusion_VSSM`, neck, diffusion and auxiliary heads) — and random
values, saved with `torch.save` as the authors' MMSegmentation checkpoints are.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdseg.checkpoint import load_checkpoint, read_checkpoint_meta, sha256
from mdseg.data import catalog
from mdseg.errors import CheckpointError
from mdseg.release import convert_release_state_dict, import_release_checkpoint

ORACLE = Path(__file__).resolve().parents[1] / "fixtures" / "oracle"
pytestmark = pytest.mark.skipif(
    not (ORACLE / "oracle_small.safetensors").is_file() or not (ORACLE / "head_oracle.safetensors").is_file(),
    reason="release key lists (oracle files) not found",
)


def release_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full release state dict (`backbone.*`, `neck.*`, `decode_head.*`, …) of random values."""
    shapes = {"backbone." + k: v for k, v in load_file(ORACLE / "oracle_small.safetensors").items()}
    shapes |= load_file(ORACLE / "head_oracle.safetensors")
    gen = torch.Generator().manual_seed(seed)
    sd = collections.OrderedDict()
    for key, like in shapes.items():
        if not like.is_floating_point():
            sd[key] = torch.zeros_like(like)  # BatchNorm's num_batches_tracked
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(like.shape, generator=gen)
        else:
            sd[key] = 0.1 * torch.randn(like.shape, generator=gen)
    return sd


def mmseg_checkpoint(sd: dict[str, torch.Tensor]) -> dict:
    """What MMSegmentation's `save_checkpoint` writes: meta, state dict, optimizer state."""
    return {
        "meta": {"mmseg_version": "0.29.0", "iter": 160000, "CLASSES": catalog.WHU_CLASSES, "config": "model = ..."},
        "state_dict": sd,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 6e-5, "params": [0]}]},
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = release_state_dict()
    path = tmp_path_factory.mktemp("release") / "release.pth"
    torch.save(mmseg_checkpoint(sd), path)
    return path, sd


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_cli_writes_a_checkpoint_that_loads_and_predicts_with_the_whu_metadata(release, tmp_path, mdseg):
    source, sd = release
    out = tmp_path / "paper_whu.safetensors"
    code, stdout, err = mdseg("import-weights", source, "--out", out)
    assert code == 0, err
    assert "mapped 677 release tensors" in stdout and "dropped 32 dead tensors" in stdout
    assert "unaccounted" not in stdout and f"wrote {out}" in stdout

    model, meta = load_checkpoint(out)
    assert list(meta.classes) == list(catalog.WHU_CLASSES)
    assert [tuple(c) for c in meta.palette] == list(catalog.WHU_PALETTE)
    assert (list(meta.opt_band_names), list(meta.sar_band_names)) == (["red", "green", "blue", "nir"], ["sar"])
    norm = catalog.WHU_NORMALISATION
    assert meta.to_dict()["normalisation"] == {
        "opt_mean": list(norm.opt_mean),
        "opt_std": list(norm.opt_std),
        "sar_mean": list(norm.sar_mean),
        "sar_std": list(norm.sar_std),
    }
    assert (meta.inference_scale, meta.tile, meta.steps, meta.sar_scale) == (2.0, 256, 3, "db")
    assert meta.provenance["source"] == "release.pth" and meta.provenance["source_sha256"] == sha256(source)
    assert meta.provenance["release_meta"]["iter"] == 160000

    _, converted, _ = convert_release_state_dict(sd)
    assert sorted(model.state_dict()) == sorted(converted)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, converted[key]), key
    gen = torch.Generator().manual_seed(0)
    opt, sar = torch.randn(1, 4, 64, 64, generator=gen), torch.randn(1, 1, 64, 64, generator=gen)
    logits = model.predict(opt, sar, steps=2, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (1, 7, 64, 64) and torch.isfinite(logits).all()


def test_every_release_tensor_is_mapped_or_dropped_as_dead(tmp_path):
    sd = release_state_dict(seed=1)
    source = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, source)  # a bare state dict, as a DDP wrapper saves it
    result = import_release_checkpoint(source, tmp_path / "out.safetensors")
    report = result.report
    assert report.unaccounted == []
    dropped_whole = [line.split(" ")[0] for line in report.dropped if "[" not in line.split(" ")[0]]
    dropped_rows = [line.split("[")[0] for line in report.dropped if "[" in line.split(" ")[0]]
    assert set(dropped_whole) | set(dropped_rows) <= set(sd)
    assert report.mapped + len(dropped_whole) == len(sd) == result.release_tensors
    conversion = read_checkpoint_meta(tmp_path / "out.safetensors").provenance["conversion"]
    assert conversion == {
        "release_tensors": len(sd),
        "mapped": report.mapped,
        "dropped": len(report.dropped),
        "dropped_parameters": report.dropped_params,
        "unaccounted": 0,
    }


def test_a_backbone_only_state_dict_is_refused_naming_the_missing_parts(tmp_path, mdseg):
    sd = release_state_dict()
    source = tmp_path / "backbone.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}, source)
    code, _, err = mdseg("import-weights", source, "--out", tmp_path / "out.safetensors")
    assert code == 3
    line = one_error_line(err)
    assert "only the backbone" in line and "neck, decode head, auxiliary head" in line
    assert not (tmp_path / "out.safetensors").exists()


def test_a_checkpoint_missing_a_head_is_refused_naming_it(tmp_path):
    sd = {k: v for k, v in release_state_dict().items() if not k.startswith("auxiliary_head.")}
    source = tmp_path / "no_aux.pth"
    torch.save({"state_dict": sd}, source)
    with pytest.raises(CheckpointError, match="predicting also needs the auxiliary head"):
        import_release_checkpoint(source, tmp_path / "out.safetensors")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, mdseg):
    source = tmp_path / "notes.pth"
    source.write_text("these are not weights")
    code, _, err = mdseg("import-weights", source, "--out", tmp_path / "out.safetensors")
    assert code == 3
    assert "is not a PyTorch checkpoint torch.load(weights_only=True) can read" in one_error_line(err)


class _Trap:
    """Unpickling this would create `marker`: proof that the loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_holding_other_objects_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    source = tmp_path / "trap.pth"
    source.write_bytes(pickle.dumps({"state_dict": {"w": _Trap(marker)}}))
    with pytest.raises(CheckpointError, match="never unpickles anything else"):
        import_release_checkpoint(source, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_an_existing_output_is_refused_before_reading_the_source(release, tmp_path, mdseg):
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    code, _, err = mdseg("import-weights", release[0], "--out", out)
    assert code == 3
    assert "already exists" in one_error_line(err) and "--overwrite" in err
    assert out.read_bytes() == b"keep me"


def test_weights_of_another_dataset_shape_are_refused(release, tmp_path):
    with pytest.raises(CheckpointError, match="Hunan has 7 classes, 13 optical and 2 SAR bands"):
        import_release_checkpoint(release[0], tmp_path / "out.safetensors", dataset="hunan")
