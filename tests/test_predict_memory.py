"""Peak memory of predict_scene does not grow with scene height, and barely with its width (streamed blending)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

WIDTH = 16384

# Runs in a fresh interpreter so ru_maxrss is this scene's peak alone. A sparse tiled GeoTIFF costs nothing to
# make: optical nodata everywhere except one 300 px patch, so most tiles are skipped but every row is blended,
# written and converted to a COG.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, rasterio, torch
    from rasterio.transform import from_origin
    from mdseg.engine.predict import predict_scene

    height, width, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    common = dict(driver="GTiff", width=width, height=height, crs="EPSG:32633", tiled=True, blockxsize=512,
                  blockysize=512, compress="deflate", sparse_ok=True, transform=from_origin(500000, 4000000, 10, 10))
    with rasterio.open(f"{folder}/opt.tif", "w", count=4, dtype="uint16", nodata=0, **common) as dst:
        dst.write(np.full((4, 300, 300), 500, "uint16"), window=((100, 400), (100, 400)))
    with rasterio.open(f"{folder}/sar.tif", "w", count=1, dtype="float32", **common) as dst:
        dst.write(np.full((1, 300, 300), -10, "float32"), window=((100, 400), (100, 400)))

    def trivial(opt, sar, generators, steps, samples):
        return torch.full((opt.shape[0], 3, *opt.shape[-2:]), 1 / 3)

    result = predict_scene(f"{folder}/opt.tif", f"{folder}/sar.tif", f"{folder}/map.tif", trivial,
                           classes=["a", "b", "c"], palette=[(0, 0, 0)] * 3, progress=False)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of a big pytest process would
    # report pytest's peak, not its own.
    status = Path("/proc/self/status").read_text().splitlines()
    peak_mib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"peak_mib": peak_mib, "tiles_run": result.tiles_run}))
    """
)


def peak_rss_mib(height: int, folder, width: int = WIDTH) -> dict:
    # A bounded GDAL block cache, as on any machine: the default (5 % of RAM) would let the cache, not our code,
    # decide how much of the scene stays in memory.
    env = {**os.environ, "GDAL_CACHEMAX": "64"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(height), str(width), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_scene_height(tmp_path):
    (tmp_path / "short").mkdir()
    (tmp_path / "tall").mkdir()
    short = peak_rss_mib(1024, tmp_path / "short")
    tall = peak_rss_mib(4096, tmp_path / "tall")
    assert short["tiles_run"] == tall["tiles_run"] > 0
    # 4× the rows (+192 MiB of uint8 map) must not cost more than a few MiB of noise.
    assert tall["peak_mib"] < short["peak_mib"] * 1.1 + 16, (short, tall)


@pytest.mark.slow
def test_peak_rss_barely_grows_with_scene_width(tmp_path):
    (tmp_path / "narrow").mkdir()
    (tmp_path / "wide").mkdir()
    narrow = peak_rss_mib(1024, tmp_path / "narrow", width=4096)
    wide = peak_rss_mib(1024, tmp_path / "wide", width=16384)
    assert narrow["tiles_run"] == wide["tiles_run"] > 0
    # 4x the columns: the float32 blending strip a tile high (which cost +155 MiB here) is gone; what is left is
    # full width by design (the float32 overlap rows carried to the next tile row, uint8 row bands, the writer's
    # block row) plus GDAL's share (+80 MiB measured in all), so a full-width tile strip coming back fails this.
    assert wide["peak_mib"] - narrow["peak_mib"] < 110, (narrow, wide)
