"""Per-band statistics: equal to numpy's over the valid pixels, streamed in blocks; the `stats` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_rasters import write_pair_folders, write_tif
from typer.testing import CliRunner

from mdseg.cli import app
from mdseg.data import band_stats, find_dataset


def _dataset(root):
    """Two scenes of different sizes: optical uint16 with nodata 0, SAR float32 dB with NaN holes."""
    rng = np.random.default_rng(4)
    opts, sars = [], []
    for name, (h, w) in (("a", (37, 29)), ("b", (20, 45))):
        opt = rng.integers(1, 5000, (2, h, w)).astype(np.uint16)
        opt[0, :5, :7] = 0
        sar = rng.normal(-12, 4, (1, h, w)).astype(np.float32)
        sar[0, rng.random((h, w)) < 0.1] = np.nan
        write_tif(root / "opt" / f"{name}.tif", opt, nodata=0)
        write_tif(root / "sar" / f"{name}.tif", sar)
        write_tif(root / "label" / f"{name}.tif", np.ones((h, w), np.uint8))
        opts.append(opt)
        sars.append(sar)
    return opts, sars


def test_band_stats_equal_numpy_over_valid_pixels(tmp_path):
    opts, sars = _dataset(tmp_path)
    result = band_stats(tmp_path, chunk=8)  # small blocks: many merges
    for k, stats in enumerate(result.bands[:2]):
        values = np.concatenate([o[k].ravel() for o in opts]).astype(np.float64)
        valid = values[values != 0]
        assert stats.count == valid.size and stats.skipped == values.size - valid.size
        assert stats.mean == pytest.approx(valid.mean(), rel=1e-12)
        assert stats.std == pytest.approx(valid.std(), rel=1e-10)
    values = np.concatenate([s.ravel() for s in sars]).astype(np.float64)
    assert result.bands[2].modality == "sar" and result.bands[2].count == np.isfinite(values).sum()
    assert result.bands[2].mean == pytest.approx(np.nanmean(values), rel=1e-6)
    assert result.bands[2].std == pytest.approx(np.nanstd(values), rel=1e-6)


def test_band_stats_range_percentiles_and_dtype_equal_numpy_when_the_sample_holds_every_pixel(tmp_path):
    opts, sars = _dataset(tmp_path)
    result = band_stats(tmp_path, chunk=8)
    optical = np.concatenate([o[0].ravel() for o in opts]).astype(np.float64)
    optical = optical[optical != 0]
    sar = np.concatenate([s.ravel() for s in sars]).astype(np.float64)
    sar = sar[np.isfinite(sar)]
    for stats, values in ((result.bands[0], optical), (result.bands[2], sar)):
        assert (stats.min, stats.max) == (values.min(), values.max())
        assert [stats.p1, stats.p50, stats.p99] == pytest.approx(np.percentile(values, [1, 50, 99]), rel=1e-6)
    assert [b.dtype for b in result.bands] == ["uint16", "uint16", "float32"]


def test_band_stats_percentiles_come_from_a_bounded_regular_sample(tmp_path):
    opts, _ = _dataset(tmp_path)
    full = band_stats(tmp_path).bands[1]
    sampled = band_stats(tmp_path, sample=200).bands[1]  # at most about 100 values of each file
    assert (sampled.count, sampled.mean, sampled.min, sampled.max) == (full.count, full.mean, full.min, full.max)
    assert sampled.p50 != full.p50 and sampled.p50 == pytest.approx(full.p50, rel=0.15)
    # every 4th row and column of the 37 × 29 px file (81 values), every 3rd of the 20 × 45 px one (105)
    expected = np.concatenate([o[1, ::k, ::k].ravel() for o, k in zip(opts, (4, 3), strict=True)]).astype(float)
    assert sampled.p50 == pytest.approx(np.percentile(expected, 50))


def test_band_stats_read_each_file_once_decimated_when_given_a_side(tmp_path):
    _dataset(tmp_path)
    result = band_stats(tmp_path, side=10)
    assert all(b.count + b.skipped <= 10 * 8 + 5 * 10 for b in result.bands)  # 37×29 → 10×8, 20×45 → 4×10 px
    assert result.bands[1].mean == pytest.approx(2500, rel=0.25)


def test_band_stats_measure_linear_sar_in_db(tmp_path):
    write_pair_folders(tmp_path, ("opt", "sar", "label"), ["a"], (6, 6), (1, 1))
    linear = np.full((1, 6, 6), 0.01, np.float32)
    write_tif(tmp_path / "sar" / "a.tif", linear)
    result = band_stats(find_dataset(tmp_path))
    assert result.sar_scaling.converts and result.bands[1].mean == pytest.approx(-20.0)


def test_stats_command_prints_a_table(tmp_path):
    _dataset(tmp_path)
    out = CliRunner().invoke(app, ["stats", "--data", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "optical 1" in out.output and "generic" in out.output and "std" in out.output


def test_stats_command_json_parses(tmp_path):
    _dataset(tmp_path)
    out = CliRunner().invoke(app, ["stats", "--data", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [b["modality"] for b in data["bands"]] == ["optical", "optical", "sar"]
    assert len(data["normalisation"]["opt_mean"]) == 2 and data["data"]["files"] == 2
