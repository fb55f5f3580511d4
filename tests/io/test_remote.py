"""Inputs are any dataset name GDAL opens: COGs served over HTTP (with Range requests) on the loopback address, zip
members, S3 (a moto server on loopback); the CLI keeps the names as typed and reads windows, not whole files."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from range_server import served, stop_server
from rasterio.transform import from_origin

from mdseg.engine.checkpoint_predict import SceneModel
from mdseg.engine.options import PredictOptions
from mdseg.errors import OutputError
from mdseg.io.names import dataset_stem, local_archive, local_path
from mdseg.io.paths import check_outputs

SIZE = 2048  # optical side, px
SAR_AT, SAR_SIDE = 1024, 192  # the SAR footprint: a small part of the optical one (px of the optical grid)
FAST = ["--tile", "64", "--overlap", "16", "--steps", "1", "--quiet"]
ORIGIN = (500_000.0, 4_000_000.0)


def write_cog(path: Path, data: np.ndarray, transform) -> Path:
    """(C, H, W) `data` as a COG (deflate, 512² blocks, overviews) made by GDAL's COG driver."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs="EPSG:32633", transform=transform)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        with mem.open() as src:
            rasterio.shutil.copy(src, path, driver="COG", compress="DEFLATE", predictor=2, blocksize=512)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tiny_checkpoint) -> Path:
    """A folder with opt.tif (2048² uint16 × 4, ~3.5 MB), sar.tif (float32 dB covering 192² px of it), both in
    scene.zip (stored), and map.tif: their map predicted from the local files (Python API, the CLI's options)."""
    root = tmp_path_factory.mktemp("served")
    y, x = np.mgrid[0:SIZE, 0:SIZE] / 256
    field = np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y) + (x - y) / 8
    opt = np.stack([1000 + 400 * (i + 1) * field * (-1) ** i for i in range(4)]).astype("uint16")
    write_cog(root / "opt.tif", opt, from_origin(*ORIGIN, 10, 10))
    window = field[SAR_AT : SAR_AT + SAR_SIDE, SAR_AT : SAR_AT + SAR_SIDE]
    sar_origin = (ORIGIN[0] + SAR_AT * 10, ORIGIN[1] - SAR_AT * 10)
    write_cog(root / "sar.tif", (-12 + 6 * window)[None].astype("float32"), from_origin(*sar_origin, 10, 10))
    with zipfile.ZipFile(root / "scene.zip", "w", zipfile.ZIP_STORED) as z:
        for name in ("opt.tif", "sar.tif"):
            z.write(root / name, name)
    options = PredictOptions(tile=64, overlap=16, steps=1)
    model = SceneModel.load(tiny_checkpoint, "cpu")
    model.predict(root / "opt.tif", root / "sar.tif", root / "map.tif", options, progress=False)
    return root


@pytest.fixture(autouse=True)
def gdal_env(monkeypatch):
    """GDAL options for remote reads, from the environment as GDAL documents them: no directory listings, and
    /vsicurl/ only for the files served."""
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", ".tif,.zip")


@pytest.fixture
def server(scene, tmp_path):
    with served(scene, tmp_path / "access.log") as running:
        yield running


def predict(mdseg, tiny_checkpoint, opt: str, sar: str, out: Path) -> tuple[int, str, str]:
    return mdseg("predict", "--opt", opt, "--sar", sar, "--out", out, "--checkpoint", tiny_checkpoint, *FAST)


@pytest.mark.slow
def test_a_served_cog_predicts_the_local_map_byte_for_byte_reading_only_the_window(
    tmp_path, scene, server, mdseg, tiny_checkpoint
):
    opt, sar = server.url("opt.tif"), "/vsicurl/" + server.url("sar.tif")
    code, _, err = predict(mdseg, tiny_checkpoint, opt, sar, tmp_path / "m.tif")
    assert code == 0, err
    assert (tmp_path / "m.tif").read_bytes() == (scene / "map.tif").read_bytes()
    # The optical COG is read by ranges: its header, overview samples and the blocks under the SAR footprint.
    assert server.bytes_sent("opt.tif") < (scene / "opt.tif").stat().st_size / 4
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["inputs"] == {"optical": opt, "sar": sar}  # the names as typed (no 'http:/')


@pytest.mark.slow
def test_zip_members_predict_the_local_map_byte_for_byte(tmp_path, scene, mdseg, tiny_checkpoint):
    archive = scene / "scene.zip"
    opt, sar = f"/vsizip/{archive}/opt.tif", f"zip://{archive}!/sar.tif"
    code, _, err = predict(mdseg, tiny_checkpoint, opt, sar, tmp_path / "m.tif")
    assert code == 0, err
    assert (tmp_path / "m.tif").read_bytes() == (scene / "map.tif").read_bytes()


def test_a_missing_served_raster_is_one_line_naming_it_and_gdals_reason(tmp_path, scene, server, mdseg):
    missing = server.url("absent.tif")
    code, _, err = mdseg("predict", "--opt", missing, "--sar", server.url("sar.tif"), "--out", tmp_path / "m.tif")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(lines) == 1
    assert f"Optical raster '{missing}' cannot be opened: HTTP response code: 404" in lines[0]
    assert not (tmp_path / "m.tif").exists()


def test_a_quicklook_of_served_cogs_reads_their_overviews(tmp_path, scene, server, mdseg):
    args = ["--opt", server.url("opt.tif"), "--sar", server.url("sar.tif"), "--pred", server.url("map.tif")]
    code, _, err = mdseg("quicklook", *args, "--out", tmp_path / "view.png", "--max-size", "256")
    assert code == 0, err
    assert (tmp_path / "view.png").stat().st_size > 0
    assert server.bytes_sent("opt.tif") < (scene / "opt.tif").stat().st_size / 4


def test_eval_scores_served_rasters(scene, server, mdseg):
    code, out, err = mdseg("eval", "--pred", server.url("map.tif"), "--label", server.url("map.tif"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["oa"] == 1.0 and result["pixels"] == SAR_SIDE**2


def test_an_output_that_is_the_archive_an_input_is_read_from_is_refused(scene):
    archive = scene / "scene.zip"
    with pytest.raises(OutputError, match="an input is never overwritten"):
        check_outputs({"the map": archive}, {"the optical input": f"/vsizip/{archive}/opt.tif"})
    with pytest.raises(OutputError, match="an input is never overwritten"):
        check_outputs({"the map": archive}, {"the optical input": f"zip://{archive}!/opt.tif"})


def test_predict_refuses_a_map_onto_the_archive_its_input_is_read_from(scene, mdseg):
    archive = scene / "scene.zip"
    before = archive.read_bytes()
    opt, sar = f"/vsizip/{archive}/opt.tif", f"/vsizip/{archive}/sar.tif"
    code, _, err = mdseg("predict", "--opt", opt, "--sar", sar, "--out", archive, "--overwrite")
    assert code == 3 and f"the optical input '{archive}' are the same file" in err
    assert archive.read_bytes() == before


def test_urls_are_no_local_files_and_collide_with_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "https:").mkdir()  # where Path('https://h/x.tif') would point: https:/h/x.tif
    check_outputs({"the map": tmp_path / "https:" / "h" / "x.tif"}, {"the optical input": "https://h/x.tif"})


@pytest.mark.parametrize(
    ("name", "local", "archive", "stem"),
    [
        ("scene/T32_opt.tif", "scene/T32_opt.tif", None, "T32_opt"),
        ("file:///data/T32_opt.tif", "/data/T32_opt.tif", None, "T32_opt"),
        ("https://host/a/T32_opt.tif?X-Amz-Signature=1", None, None, "T32_opt"),
        ("s3://bucket/a/T32_opt.tif", None, None, "T32_opt"),
        ("/vsicurl/https://host/T32_opt.tif", None, None, "T32_opt"),
        ("zip:///data/a.zip!/T32_opt.tif", None, "/data/a.zip", "T32_opt"),
        ("/vsizip/vsicurl/https://host/a.zip/T32_opt.tif", None, None, "T32_opt"),
    ],
)
def test_dataset_names_say_what_is_a_local_file(name, local, archive, stem):
    assert local_path(name) == (None if local is None else Path(local))
    assert local_archive(name) == (None if archive is None else Path(archive))
    assert dataset_stem(name) == stem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(scene, monkeypatch):
    """A moto S3 server on 127.0.0.1 holding bucket 'scenes' with opt.tif and sar.tif; GDAL pointed at it
    through its environment variables (AWS_S3_ENDPOINT, AWS_HTTPS, AWS_VIRTUAL_HOSTING, credentials)."""
    boto3 = pytest.importorskip("boto3", reason="S3 test needs boto3 (moto[server] in the dev extra)")
    if shutil.which("moto_server") is None:
        pytest.skip("S3 test needs moto_server (pip install 'moto[server]', in the dev extra)")
    port = free_port()
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        for _ in range(300):  # up to ~30 s for the server to listen
            try:
                client.create_bucket(Bucket="scenes")
                break
            except Exception:
                time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start on 127.0.0.1")
        for name in ("opt.tif", "sar.tif"):
            client.upload_file(str(scene / name), "scenes", name)
        for key, value in {
            "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        yield "scenes"
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_s3_objects_predict_the_local_map_byte_for_byte(tmp_path, scene, s3, mdseg, tiny_checkpoint):
    code, _, err = predict(mdseg, tiny_checkpoint, f"s3://{s3}/opt.tif", f"/vsis3/{s3}/sar.tif", tmp_path / "m.tif")
    assert code == 0, err
    assert (tmp_path / "m.tif").read_bytes() == (scene / "map.tif").read_bytes()
