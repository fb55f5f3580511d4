"""The shipped demo weights on the shipped synthetic sample scene (never seen in training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdseg.checkpoint import DEMO_CHECKPOINT, read_checkpoint_meta
from mdseg.data.catalog import WHU_CLASSES

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "synthetic"
# The demo scored mIoU 0.94 on the sample when it was built (README); the issue asks for 0.80. The bound leaves
# room for float16 weights and other CPUs' last bits, and still fails a demo that maps roads or villages badly.
MIOU_BOUND = 0.85

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="this install has no demo weights")


def test_demo_weights_are_marked_as_demo_for_whu_classes():
    meta = read_checkpoint_meta(DEMO_CHECKPOINT)
    assert meta.provenance.get("demo") is True
    assert list(meta.classes) == list(WHU_CLASSES) and meta.config.opt_bands == 4 and meta.config.sar_bands == 1
    assert DEMO_CHECKPOINT.stat().st_size < 14 * 2**20


@pytest.mark.slow
def test_demo_maps_the_unseen_sample_scene_above_the_bound(tmp_path):
    from mdseg.engine.checkpoint_predict import SceneModel
    from mdseg.engine.evaluate import evaluate_rasters

    model = SceneModel.load(None, device="cpu")
    out = tmp_path / "map.tif"
    model.predict(SAMPLE / "synth_7_opt.tif", SAMPLE / "synth_7_sar.tif", out, progress=False)
    result = evaluate_rasters(out, SAMPLE / "synth_7_label.tif")
    assert result.metrics.miou >= MIOU_BOUND, result.to_dict()
