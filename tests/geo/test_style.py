"""QGIS opens mdseg's outputs with their styles: the map lists exactly its classes, probabilities and confidence
show band 1 as a 0–1 gradient, polygons are categorised by class (GeoJSON from the .qml beside it, a GeoPackage
from its own `layer_styles` table). QGIS runs in Debian's /usr/bin/python3, in a subprocess (offscreen)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from mdseg.engine.predict import PredictOptions, PredictOutputs, TileModel, predict_scene

CLASSES = ["water", "forest", "city & roads"]
PALETTE = [(0, 0, 255), (0, 128, 0), (200, 0, 0)]
QGIS_PYTHON = "/usr/bin/python3"

# Prints, for each layer path given, its renderer's type, legend labels and colours as QGIS shows them.
PROBE = r"""
import json, os, sys
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
seen = {}
for path in sys.argv[1:]:
    if path.endswith(".tif"):
        layer = QgsRasterLayer(path, "layer")
        r = layer.renderer()
        info = {"type": r.type(), "bands": layer.bandCount(),
                "legend": [label for label, _ in r.legendSymbologyItems()]}
        if r.type() == "singlebandpseudocolor":
            info.update(band=r.band(), min=r.classificationMin(), max=r.classificationMax())
            value, ok = layer.dataProvider().sample(layer.extent().center(), 1)
            info["centre"] = value if ok else None
        if r.type() == "paletted":
            info["colours"] = [c.color.name() for c in r.classes()]
    else:
        layer = QgsVectorLayer(path, "layer", "ogr")
        r = layer.renderer()
        info = {"type": r.type(), "attr": getattr(r, "classAttribute", lambda: None)()}
        if r.type() == "categorizedSymbol":
            info["legend"] = [c.label() for c in r.categories()]
            info["values"] = [str(c.value()) for c in r.categories()]
            info["colours"] = [c.symbol().color().name() for c in r.categories()]
    seen[path] = info
print(json.dumps(seen), flush=True)
os._exit(0)  # QGIS's own teardown may crash after the work is done
"""


def _has_qgis() -> str | None:
    """Why QGIS cannot be used here, or None."""
    if not Path(QGIS_PYTHON).exists():
        return f"{QGIS_PYTHON} not found"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], env=env, capture_output=True, timeout=120)
    return None if done.returncode == 0 else f"QGIS's Python bindings do not import in {QGIS_PYTHON}"


pytestmark = pytest.mark.skipif((why := _has_qgis()) is not None, reason=str(why))


def predictor(opt, sar, generators, steps, samples):
    """Probability 0.7 on the class in optical band 1, 0.15 on the others."""
    cls = opt[:, 0].round().long().clamp(0, 2)
    return 0.15 + 0.55 * torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float()


def scene(folder: Path, h: int = 40, w: int = 50) -> tuple[Path, Path]:
    """Optical band 1: the class id in three vertical stripes; SAR: zeros; 10 m UTM pixels."""
    cls = np.repeat(np.arange(w) * 3 // w, h).reshape(w, h).T
    transform = from_origin(500_000, 4_000_000, 10, 10)
    paths = []
    for name, data in (("opt", np.stack([cls, cls]).astype("uint16")), ("sar", np.zeros((1, h, w), "float32"))):
        profile = dict(driver="GTiff", width=w, height=h, count=data.shape[0], dtype=data.dtype, crs="EPSG:32633")
        with rasterio.open(folder / f"{name}.tif", "w", transform=transform, **profile) as dst:
            dst.write(data)
        paths.append(folder / f"{name}.tif")
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> dict[str, dict]:
    """Two runs (polygons as GeoJSON, then as GeoPackage), every output opened in QGIS: what it shows, by name."""
    folder = tmp_path_factory.mktemp("styled")
    opt, sar = scene(folder)
    model = TileModel(predictor, CLASSES, PALETTE)
    runs = [
        PredictOutputs(
            folder / "map.tif", prob=folder / "p.tif", confidence=folder / "c.tif", vector=folder / "v.geojson"
        ),
        PredictOutputs(folder / "map2.tif", vector=folder / "v.gpkg"),
    ]
    for outputs in runs:
        predict_scene(opt, sar, outputs, model, PredictOptions(tile=32, overlap=8), progress=False)
    names = ["map.tif", "p.tif", "c.tif", "v.geojson", "v.gpkg"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    args = [QGIS_PYTHON, "-c", PROBE, *(str(folder / n) for n in names)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(path).name: info for path, info in seen.items()}


def test_qgis_lists_exactly_the_classes_of_the_map(shown):
    assert shown["map.tif"]["type"] == "paletted"
    assert shown["map.tif"]["legend"] == CLASSES
    assert shown["map.tif"]["colours"] == ["#0000ff", "#008000", "#c80000"]


def test_qgis_shows_probabilities_and_confidence_as_a_gradient_over_fractions(shown):
    for name, bands in (("p.tif", 3), ("c.tif", 1)):
        info = shown[name]
        assert (info["type"], info["band"], info["min"], info["max"]) == ("singlebandpseudocolor", 1, 0.0, 1.0)
        assert info["bands"] == bands  # no mask band beside the data
        assert info["centre"] == pytest.approx(0.7 if name == "c.tif" else 0.15, abs=0.003)


def test_qgis_categorises_polygons_by_class_from_a_geojson_qml_and_a_geopackage_table(shown):
    for name in ("v.geojson", "v.gpkg"):
        info = shown[name]
        assert (info["type"], info["attr"]) == ("categorizedSymbol", "class_id"), name
        assert info["legend"] == CLASSES and info["values"] == ["0", "1", "2"]
        assert info["colours"] == ["#0000ff", "#008000", "#c80000"]
