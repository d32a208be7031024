"""QGIS styles: a ``.qml`` file beside every raster and vector output, so that a drag into
QGIS shows roads at once.

QGIS loads ``<file name without its last suffix>.qml`` as a layer's default style
(``roads.tif`` -> ``roads.qml``), so each output gets its own stem:

- probability rasters (``prob``, ``prob8``; QGIS reads ``prob8``'s scale, so both are
  styled in probability): a single-band pseudocolour ramp, transparent at 0, opaque red
  at 1;
- masks: a palette, 1 (road) one colour, 0 transparent (nodata is transparent anyway);
- centre lines: one line symbol whose width is the line's ``width`` attribute, in ground
  metres (QGIS's "meters at scale", right in any CRS) or in map units for lines in pixels;
- road surfaces: filled polygons with an outline.

The files are QGIS 3 styles written with :mod:`xml.etree`; :func:`write_style` writes one
atomically and leaves a file with the same text untouched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from roadseg.io import atomic_path

QGIS_VERSION = "3.28.0-Firenze"  # the style format of the QGIS 3.28 LTR and later
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
ROAD_RGB = (227, 26, 28)
# probability -> (colour, alpha): transparent below, red and opaque at 1
PROB_RAMP = ((0.0, "#ffffb2", 0), (0.3, "#fecc5c", 60), (0.5, "#fd8d3c", 170),
             (0.75, "#f03b20", 230), (1.0, "#bd0026", 255))  # fmt: skip


def style_path(output: str | Path) -> Path:
    """The style QGIS loads for ``output``: its name with ``.qml`` for its last suffix."""
    return Path(output).with_suffix(".qml")


def _qgis(categories: str) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories=categories,
                      hasScaleBasedVisibilityFlag="0", minScale="1e+08", maxScale="0")  # fmt: skip


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def _min_max(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, value in (("limits", "None"), ("extent", "WholeRaster"),
                       ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                       ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):  # fmt: skip
        ET.SubElement(origin, tag).text = value


def _probability(renderer: ET.Element) -> None:
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue="0", maximumValue="1", labelPrecision="2")  # fmt: skip
    for value, color, alpha in PROB_RAMP:
        ET.SubElement(shader, "item", value=f"{value:g}", color=color, alpha=str(alpha),
                      label=f"{value:g}")  # fmt: skip


def _mask(renderer: ET.Element) -> None:
    palette = ET.SubElement(renderer, "colorPalette")
    road = "#{:02x}{:02x}{:02x}".format(*ROAD_RGB)
    ET.SubElement(palette, "paletteEntry", value="0", color="#000000", alpha="0", label="not road")
    ET.SubElement(palette, "paletteEntry", value="1", color=road, alpha="255", label="road")


def raster_style(output: str) -> str:
    """The style of a prediction raster of kind ``output`` (``prob``, ``prob8``, ``mask``):
    a pseudocolour ramp over transparent for probabilities, a palette for masks."""
    root = _qgis("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    mask = output == "mask"
    attrs = {"type": "paletted" if mask else "singlebandpseudocolor", "band": "1",
             "opacity": "1", "alphaBand": "-1", "nodataColor": ""}  # fmt: skip
    if not mask:
        attrs.update(classificationMin="0", classificationMax="1")
    renderer = ET.SubElement(pipe, "rasterrenderer", attrs)
    ET.SubElement(renderer, "rasterTransparency")
    _min_max(renderer)
    (_mask if mask else _probability)(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  invertColors="0")  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    return _text(root)


def _options(parent: ET.Element, values: dict[str, str]) -> None:
    options = ET.SubElement(parent, "Option", type="Map")
    for name, value in values.items():
        ET.SubElement(options, "Option", type="QString", name=name, value=value)


def _data_defined(parent: ET.Element, properties: dict[str, str]) -> None:
    """QGIS's data-defined properties: property name -> expression."""
    outer = ET.SubElement(ET.SubElement(parent, "data_defined_properties"), "Option", type="Map")
    ET.SubElement(outer, "Option", type="QString", name="name", value="")
    props = ET.SubElement(outer, "Option", type="Map", name="properties")
    for name, expression in properties.items():
        prop = ET.SubElement(props, "Option", type="Map", name=name)
        ET.SubElement(prop, "Option", type="bool", name="active", value="true")
        ET.SubElement(prop, "Option", type="QString", name="expression", value=expression)
        ET.SubElement(prop, "Option", type="int", name="type", value="3")  # an expression
    ET.SubElement(outer, "Option", type="QString", name="type", value="collection")


def _vector(kind: str, layer_class: str, values: dict[str, str], geometry: int,
            data_defined: dict[str, str] | None = None) -> str:  # fmt: skip
    root = _qgis("Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0",
                             enableorderby="0", forceraster="0", referencescale="-1")  # fmt: skip
    symbol = ET.SubElement(ET.SubElement(renderer, "symbols"), "symbol", type=kind, name="0",
                           alpha="1", clip_to_extent="1", force_rhr="0")  # fmt: skip
    layer = ET.SubElement(symbol, "layer", {"class": layer_class, "enabled": "1", "pass": "0",
                                            "locked": "0"})  # fmt: skip
    _options(layer, values)
    if data_defined:
        _data_defined(layer, data_defined)
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    for tag, value in (("blendMode", "0"), ("featureBlendMode", "0"),
                       ("layerGeometryType", str(geometry))):  # fmt: skip
        ET.SubElement(root, tag).text = value
    return _text(root)


def line_style(units: str = "m", *, width: bool = True) -> str:
    """Centre lines drawn as wide as their ``width`` attribute (``width``: the lines have
    one; else a fixed width): in ground metres (``units`` ``m``) at any CRS, or in map
    units for lines in pixels (``px``)."""
    metres = units == "m"
    unit = "RenderMetersInMapUnits" if metres else "MapUnit"
    fallback = "4" if metres else "8"
    values = {"capstyle": "round", "joinstyle": "round", "line_style": "solid",
              "line_color": ",".join(map(str, ROAD_RGB)) + ",220",
              "line_width": fallback if width else "0.8",
              "line_width_unit": unit if width else "MM"}  # fmt: skip
    data = {"outlineWidth": f'coalesce("width", {fallback})'} if width else None
    return _vector("line", "SimpleLine", values, 1, data)


def surface_style() -> str:
    """Road surfaces filled half transparent, outlined."""
    rgb = ",".join(map(str, ROAD_RGB))
    values = {"style": "solid", "color": f"{rgb},110", "outline_color": f"{rgb},255",
              "outline_style": "solid", "outline_width": "0.26", "outline_width_unit": "MM",
              "joinstyle": "bevel"}  # fmt: skip
    return _vector("fill", "SimpleFill", values, 2)


def write_style(output: str | Path, text: str) -> Path:
    """``text`` as the style of ``output`` (:func:`style_path`), atomically; a style file
    that already holds this text is left as it is."""
    path = style_path(output)
    if path.is_file() and path.read_text() == text:
        return path
    with atomic_path(path, suffix=".tmp.qml") as tmp:
        tmp.write_text(text)
    return path


def write_raster_style(raster: str | Path, output: str) -> Path:
    return write_style(raster, raster_style(output))


def write_vector_style(vector: str | Path, kind: str, units: str = "m") -> Path:
    """The style of a lines (``kind`` ``lines``) or surfaces file."""
    return write_style(vector, line_style(units) if kind == "lines" else surface_style())
