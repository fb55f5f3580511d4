"""QGIS styles (`.qml`) for mdseg's outputs: QGIS loads `<name>.qml` beside `<name>.tif` / `.gpkg` / `.geojson`
as the layer's default style, so a map opens with exactly its classes, names and colours.

- `paletted_qml`: the class map — a paletted renderer listing only the K classes (a uint8 colour table always
  has 256 entries, which QGIS's legend otherwise shows), nodata transparent.
- `gradient_qml`: probabilities and confidence — one band as a grey-to-colour ramp over 0–1.
- `categorised_qml`: class polygons — a categorised renderer on `class_id`, same colours and names.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

# The QGIS version whose style format we write; later versions read it.
QGIS_VERSION = "3.22.0"
_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


def _rgba(rgb: Sequence[int], alpha: int = 255) -> str:
    """QGIS's 'r,g,b,a' colour property."""
    return ",".join(str(int(v)) for v in (*rgb[:3], alpha))


def _raster(renderer: str) -> str:
    return (
        f'{_HEADER}<qgis version={quoteattr(QGIS_VERSION)} styleCategories="Symbology">\n'
        "  <pipe>\n"
        f"{renderer}"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" colorizeOn="0" grayscaleMode="0" invertColors="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def paletted_qml(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> str:
    """Style of a class map: band 1 paletted, one entry per class (value i → `palette[i]`, labelled
    `classes[i]`); other values, nodata included, are not drawn."""
    entries = "".join(
        f'        <paletteEntry value="{i}" color={quoteattr(_hex(rgb))} alpha="255" label={quoteattr(name)}/>\n'
        for i, (name, rgb) in enumerate(zip(classes, palette, strict=False))
    )
    renderer = (
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
    )
    return _raster(renderer)


def gradient_qml(band: int = 1, low: float = 0.0, high: float = 1.0) -> str:
    """Style of a probability or confidence raster: `band` as a ramp from dark blue (`low`) through yellow to
    red (`high`), in the units readers see after the band's scale and offset (fractions 0–1)."""
    stops = [(0.0, (13, 8, 135)), (0.5, (240, 249, 33)), (1.0, (220, 20, 30))]
    items = "".join(
        f'            <item value="{low + f * (high - low):g}" color={quoteattr(_hex(rgb))} alpha="255" '
        f"label={quoteattr(f'{low + f * (high - low):g}')}/>\n"
        for f, rgb in stops
    )
    renderer = (
        f'    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" '
        f'classificationMin="{low:g}" classificationMax="{high:g}" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <rastershader>\n"
        f'        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        f'minimumValue="{low:g}" maximumValue="{high:g}" labelPrecision="2">\n'
        f"{items}"
        "        </colorrampshader>\n"
        "      </rastershader>\n"
        "    </rasterrenderer>\n"
    )
    return _raster(renderer)


def categorised_qml(classes: Sequence[str], palette: Sequence[Sequence[int]], field: str = "class_id") -> str:
    """Style of class polygons: categorised on `field` (class ids 0..K−1), each class filled with its colour
    and a thin darker outline, labelled with its name."""
    categories = "".join(
        f'      <category value="{i}" symbol="{i}" label={quoteattr(name)} render="true"/>\n'
        for i, name in enumerate(classes)
    )
    symbols = "".join(
        f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        f'          <prop k="color" v="{_rgba(rgb)}"/>\n'
        f'          <prop k="outline_color" v="{_rgba([int(v) * 3 // 5 for v in rgb])}"/>\n'
        '          <prop k="outline_style" v="solid"/>\n'
        '          <prop k="outline_width" v="0.2"/>\n'
        '          <prop k="outline_width_unit" v="MM"/>\n'
        '          <prop k="style" v="solid"/>\n'
        "        </layer>\n"
        "      </symbol>\n"
        for i, rgb in zip(range(len(classes)), palette, strict=False)
    )
    return (
        f'{_HEADER}<qgis version={quoteattr(QGIS_VERSION)} styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
        'forceraster="0">\n'
        "    <categories>\n"
        f"{categories}"
        "    </categories>\n"
        "    <symbols>\n"
        f"{symbols}"
        "    </symbols>\n"
        "  </renderer-v2>\n"
        "  <blendMode>0</blendMode>\n"
        "  <featureBlendMode>0</featureBlendMode>\n"
        "</qgis>\n"
    )
