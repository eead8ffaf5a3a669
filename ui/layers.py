"""The input layer as the engine needs it: the file GDAL should open, and one band name per band from the
bands chosen in the algorithm's BANDS parameter (checked against the file's own band names)."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsProcessingException, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication

from ..core.common.bands import normalize_band_name
from ..core.common.spec import MODEL_BANDS


def tr(text: str) -> str:
    return QCoreApplication.translate("MapHseLczAlgorithm", text)


def band_names(selected: list[int], descriptions: list[Optional[str]]) -> list[str]:
    """One band name per band of the input (file order) from the band numbers chosen in BANDS.

    `selected`: 1-based band numbers, the i-th of which is MODEL_BANDS[i]; `descriptions`: the input's band
    descriptions (None where a band has none), which also gives the band count. Bands not chosen are named
    "B1": the engine looks up only MODEL_BANDS among the names, so any valid name outside them serves.
    Raises QgsProcessingException when the choice is not ten distinct bands of this raster.
    """
    count = len(descriptions)
    order = ", ".join(MODEL_BANDS)
    if len(selected) != len(MODEL_BANDS):
        raise QgsProcessingException(tr(
            "Bands: {chosen} band(s) were chosen, but the model needs exactly {needed}, in the order {order}. "
            "Choose ten bands, or none to detect them from band names or count."
        ).format(chosen=len(selected), needed=len(MODEL_BANDS), order=order))
    if len(set(selected)) != len(selected):
        raise QgsProcessingException(tr(
            "Bands: band(s) {twice} were chosen twice. Choose ten different bands, in the order {order}."
        ).format(twice=sorted({b for b in selected if selected.count(b) > 1}), order=order))
    outside = [b for b in selected if not 1 <= b <= count]
    if outside:
        raise QgsProcessingException(tr(
            "Bands: band number(s) {outside} do not exist; the input has {count} band(s)."
        ).format(outside=outside, count=count))
    names = ["B1"] * count
    for model_band, number in zip(MODEL_BANDS, selected):
        names[number - 1] = model_band
    return names


def band_mismatches(selected: list[int], descriptions: list[Optional[str]]) -> list[str]:
    """Human-readable conflicts between the BANDS choice and the file's own band names (empty if none).

    E.g. ["band 13 is named B8A in the file but was chosen as B12"]: a sign of a wrong order.
    """
    conflicts = []
    for model_band, number in zip(MODEL_BANDS, selected):
        named = normalize_band_name(descriptions[number - 1]) if 1 <= number <= len(descriptions) else None
        if named is not None and named != model_band:
            conflicts.append(tr("band {number} is named {named} in the file but was chosen as {band}").format(
                number=number, named=named, band=model_band))
    return conflicts


def chosen_bands(selected: list[int], layer: QgsRasterLayer, warn) -> Optional[list[str]]:
    """The band names of the BANDS choice `selected` (1-based numbers; empty: None, the engine reads them from
    the file), each conflict with the layer's own band names passed to `warn` (e.g. feedback.pushWarning)."""
    if not selected:
        return None
    descriptions = layer_band_descriptions(layer)
    for conflict in band_mismatches(selected, descriptions):
        warn(tr("Bands: {conflict}. Check the order of the chosen bands.").format(conflict=conflict))
    return band_names(selected, descriptions)


def layer_band_descriptions(layer: QgsRasterLayer) -> list[Optional[str]]:
    """The description of every band of `layer` (None where the file gives none), from GDAL via QGIS."""
    provider = layer.dataProvider()
    descriptions: list[Optional[str]] = []
    for band in range(1, layer.bandCount() + 1):
        # generateBandName gives "Band 09: B8A" with a description and "Band 09" without one.
        name = provider.generateBandName(band)
        descriptions.append(name.split(": ", 1)[1] if ": " in name else None)
    return descriptions


def layer_file(layer: QgsRasterLayer) -> str:
    """The path or GDAL dataset name the engine should open for `layer`.

    QGIS appends options such as "|layername=..." to some sources; GDAL dataset names (e.g.
    SENTINEL2_L1C:...:10m:EPSG_32633) are kept whole.
    """
    if layer.providerType() != "gdal":
        raise QgsProcessingException(tr(
            "The input layer '{name}' comes from the '{provider}' provider; urbanmtl reads image files through "
            "GDAL. Save it as a GeoTIFF (Raster > Conversion > Translate) and use that."
        ).format(name=layer.name(), provider=layer.providerType()))
    return layer.source().split("|", 1)[0]
