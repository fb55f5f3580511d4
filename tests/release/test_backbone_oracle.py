"""Our fused backbone against the authors' own `Fusion_VSSM` outputs (tests/fixtures/oracle), and the weight import."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdseg.config import preset
from mdseg.errors import MdsegError
from mdseg.models.backbone import FusedBackbone
from mdseg.release import convert_release_state_dict

ORACLE = Path(__file__).resolve().parents[1] / "fixtures" / "oracle"
pytestmark = pytest.mark.skipif(not (ORACLE / "oracle_small.safetensors").is_file(), reason="oracle files not found")

TOLERANCE = 1e-4  # max abs error / max abs value; a faithful float32 implementation lands near 1e-6


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def release_sd() -> dict[str, torch.Tensor]:
    return load_file(ORACLE / "oracle_small.safetensors")


@pytest.fixture(scope="module")
def oracle_io() -> dict[str, torch.Tensor]:
    return load_file(ORACLE / "oracle_small_io.safetensors")


@pytest.fixture(scope="module")
def oracle_config() -> dict:
    return json.loads((ORACLE / "oracle_small_config.json").read_text())


@pytest.fixture(scope="module")
def model(release_sd) -> FusedBackbone:
    config, ours, _ = convert_release_state_dict(release_sd)
    backbone = FusedBackbone(config).eval()
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in ours.items()}, strict=True)
    return backbone


@pytest.fixture(autouse=True)
def reference_scan(monkeypatch):
    # the sequential reference scan is the specification; the fast paths have their own parity tests
    monkeypatch.setenv("MDSEG_SCAN_BACKEND", "reference")


def run(model: FusedBackbone, stacked: torch.Tensor) -> list[torch.Tensor]:
    """The release's 5-band stack is optical bands 0–3 + SAR band 4; we take them as two tensors."""
    with torch.no_grad():
        return model(stacked[:, :4], stacked[:, 4:])


@pytest.mark.parametrize("case", ["", "rect."], ids=["square", "non-square"])
def test_stage_features_match_release(model, oracle_io, case):
    outs = run(model, oracle_io[f"{case}input"])
    for i, out in enumerate(outs):
        expected = oracle_io[f"{case}out{i}"]
        assert out.shape == expected.shape
        assert relative_error(out, expected) <= TOLERANCE, f"out{i}"


def _intermediate_hooks(model: FusedBackbone, captured: dict[str, torch.Tensor]) -> list:
    """Forward hooks recording our counterpart of every live `dbg.*` tensor (NHWC, as the release holds them)."""

    def keep(name, pick=lambda out: out):
        return lambda _module, _inputs, out: captured.__setitem__(name, pick(out))

    targets = {"dbg.patch_embed_A": model.stem_opt, "dbg.patch_embed_B": model.stem_sar}
    for i, stage in enumerate(model.stages):
        for stream, blocks in (("a", stage.blocks_opt), ("b", stage.blocks_sar)):
            for j, block in enumerate(blocks):
                targets[f"dbg.s{i}.layers_{stream}.blk{j}.ssm"] = block.ss2d
                targets[f"dbg.s{i}.layers_{stream}.blk{j}"] = block
        for kind in ("dcf", "dss4"):
            for j, block in enumerate(getattr(stage, kind)):
                # m_a.a / m_b.a are each module's used output; m_*.b is the release's discarded one
                targets[f"dbg.s{i}.{kind}.blk{j}.m_a.a"] = block.mix_opt
                targets[f"dbg.s{i}.{kind}.blk{j}.m_b.a"] = block.mix_sar
        if i + 1 < len(model.stages):
            targets[f"dbg.s{i}.downsample_a"] = model.stages[i + 1].down_opt
            targets[f"dbg.s{i}.downsample_b"] = model.stages[i + 1].down_sar
    hooks = [module.register_forward_hook(keep(name)) for name, module in targets.items()]
    for i, stage in enumerate(model.stages):
        for kind in ("dcf", "dss4"):
            for j, block in enumerate(getattr(stage, kind)):
                hooks.append(block.register_forward_hook(keep(f"dbg.s{i}.{kind}.blk{j}.a", lambda out: out[0])))
                hooks.append(block.register_forward_hook(keep(f"dbg.s{i}.{kind}.blk{j}.b", lambda out: out[1])))
    return hooks


def test_intermediates_match_release(model, oracle_io):
    captured: dict[str, torch.Tensor] = {}
    hooks = _intermediate_hooks(model, captured)
    try:
        run(model, oracle_io["input"])
    finally:
        for hook in hooks:
            hook.remove()
    live = [k for k in oracle_io if k.startswith("dbg.") and not re.search(r"\.m_[ab]\.b$", k)]
    assert sorted(captured) == sorted(live)
    worst = {name: relative_error(captured[name], oracle_io[name]) for name in live}
    bad = {name: err for name, err in worst.items() if err > TOLERANCE}
    assert not bad, bad


def test_dead_release_weights_are_exactly_the_uninfluential_ones(release_sd, oracle_config):
    _, _, report = convert_release_state_dict(release_sd)
    dropped_whole = {line.split(" ")[0] for line in report.dropped if "[" not in line.split(" ")[0]}
    dropped_rows = {line.split(" ")[0] for line in report.dropped if "[" in line.split(" ")[0]}
    assert dropped_whole == set(oracle_config["parameters_without_influence_on_outputs"])
    expected_rows = set()
    for key, note in oracle_config["parameters_partially_without_influence"]:
        start, stop = re.match(r"rows (\d+)\.\.(\d+)", note).groups()
        assert int(stop) + 1 == release_sd[key].shape[0]
        expected_rows.add(f"{key}[{start}:]")
    assert dropped_rows == expected_rows


def test_release_backbone_converts_with_or_without_prefix(release_sd):
    config, ours, _ = convert_release_state_dict(release_sd)
    prefixed_config, prefixed, _ = convert_release_state_dict({f"backbone.{k}": v for k, v in release_sd.items()})
    assert prefixed_config == config
    assert prefixed.keys() == ours.keys()
    assert all(key.startswith("backbone.") for key in ours)


def test_oracle_config_is_inferred_from_shapes(release_sd, oracle_config):
    config, _, report = convert_release_state_dict(release_sd)
    kwargs = oracle_config["constructor_kwargs"]
    assert (config.dims, config.depths) == (kwargs["dims"], tuple(kwargs["depths"]))
    assert (config.dcf_depths, config.dss4_depths) == (tuple(kwargs["fuse_depths"]), tuple(kwargs["fuse_depthsv2"]))
    assert (config.opt_bands, config.sar_bands, config.num_classes) == (4, 1, kwargs["num_classes"])
    assert (config.d_state, config.ssm_ratio, config.mlp_ratio) == (1, 2.0, 4.0)
    assert config.dt_rank == tuple(oracle_config["derived"]["dt_rank"])
    assert report.unaccounted == []
    assert report.mapped + len(oracle_config["parameters_without_influence_on_outputs"]) == len(release_sd)


def test_paper_keys_convert_to_the_paper_preset():
    keys = json.loads((ORACLE / "keys_paper.json").read_text())
    sd = {key: torch.empty(shape, device="meta") for key, shape in keys}
    config, ours, report = convert_release_state_dict(sd)
    assert config == preset("paper")
    assert report.unaccounted == []
    with torch.device("meta"):
        expected = FusedBackbone(config).state_dict()
    assert {k.removeprefix("backbone."): tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }


def test_unknown_release_key_raises_unless_not_strict(release_sd):
    sd = {**release_sd, "layers_a.0.blocks.0.op.mystery": torch.zeros(3)}
    with pytest.raises(MdsegError, match="not understood"):
        convert_release_state_dict(sd)
    _, _, report = convert_release_state_dict(sd, strict=False)
    assert report.unaccounted == ["layers_a.0.blocks.0.op.mystery"]


def test_override_contradicting_shapes_raises(release_sd):
    with pytest.raises(MdsegError, match="contradicts"):
        convert_release_state_dict(release_sd, dims=16)


def test_override_sets_what_shapes_cannot_tell(release_sd):
    config, _, _ = convert_release_state_dict(release_sd, drop_path_rate=0.1)
    assert config.drop_path_rate == 0.1
