"""Regenerate `sample_data/`: the synthetic scene of seed 7 and the Sentinel-1/2 pair from BigEarthNet.

Usage, from the repository root:

    python sample_data/make_sample.py [--bigearthnet ../shared/data/bigearthnet-example]

Overwrites the files it writes; see `sample_data/README.md` for what each one is.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import rasterio

from mdseg.io.atomic import AtomicOutputs
from mdseg.synth import synthesize_scene

HERE = Path(__file__).resolve().parent
SYNTH_SEED, SYNTH_SIZE = 7, 1024
# The pair with water, forest and peat bog (Finland, UTM 35N); the S1 patch names its S2 patch.
S1_PATCH = "S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24"
S2_PATCH = "S2B_MSIL2A_20170924T93020_69_24"
S2_BANDS = ("B04", "B03", "B02", "B08")  # red, green, blue, near-infrared: WHU-OPT-SAR's optical bands, 10 m
SENTINEL_NAME = "bigearthnet_69_24"
LICENCE = "LICENSE-bigearthnet-common-Apache-2.0"


def make_synthetic(out: Path) -> None:
    """The synthetic sample: exactly `mdseg synth --out sample_data/synthetic --seed 7 --size 1024 --overwrite`."""
    synthesize_scene(out, seed=SYNTH_SEED, size=SYNTH_SIZE, overwrite=True)


def make_sentinel(source: Path, out: Path) -> None:
    """Stack the S2 patch's B04, B03, B02, B08 into one 4-band file and copy the S1 patch's VV, both as tiled
    DEFLATE GeoTIFFs on the patches' common 10 m grid."""
    s2_dir, s1_dir = source / "BigEarthNet-S2-Example" / S2_PATCH, source / "BigEarthNet-S1-Example" / S1_PATCH
    bands = []
    for band in S2_BANDS:
        with rasterio.open(s2_dir / f"{S2_PATCH}_{band}.tif") as src:
            bands.append(src.read(1))
            profile, grid = src.profile, (src.crs, src.transform, src.shape)
    with rasterio.open(s1_dir / f"{S1_PATCH}_VV.tif") as src:
        vv = src.read(1)
        if (src.crs, src.transform, src.shape) != grid:
            raise SystemExit(f"{S1_PATCH} and {S2_PATCH} are not on one grid")
    common = {
        "driver": "GTiff",
        "width": profile["width"],
        "height": profile["height"],
        "crs": profile["crs"],
        "transform": profile["transform"],
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
    }
    out.mkdir(parents=True, exist_ok=True)
    with AtomicOutputs(overwrite=True) as outputs:
        opt_path = outputs.reserve(out / f"{SENTINEL_NAME}_opt.tif")
        with rasterio.open(opt_path, "w", count=4, dtype="uint16", nodata=0, predictor=2, **common) as dst:
            dst.write(np.stack(bands))
            dst.descriptions = S2_BANDS
            dst.update_tags(SOURCE=f"BigEarthNet-MM {S2_PATCH}", UNITS="surface reflectance x 10000 (L2A)")
        sar_path = outputs.reserve(out / f"{SENTINEL_NAME}_sar.tif")
        with rasterio.open(sar_path, "w", count=1, dtype="float32", nodata=np.nan, predictor=3, **common) as dst:
            dst.write(vv.astype(np.float32), 1)
            dst.set_band_description(1, "VV")
            dst.update_tags(SOURCE=f"BigEarthNet-MM {S1_PATCH}")
            dst.update_tags(1, UNITS="dB", POLARISATION="VV")
    shutil.copyfile(source / LICENCE, out / LICENCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bigearthnet",
        type=Path,
        default=HERE.parent.parent / "shared" / "data" / "bigearthnet-example",
        help="the BigEarthNet example folder (default: ../shared/data/bigearthnet-example from the repository root)",
    )
    args = parser.parse_args()
    make_synthetic(HERE / "synthetic")
    make_sentinel(args.bigearthnet, HERE / "sentinel")


if __name__ == "__main__":
    main()
