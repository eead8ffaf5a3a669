"""The help panel of the mapping algorithm (urbanmtl:map_hse_lcz): short paragraphs for a map user."""

from __future__ import annotations

import os

from qgis.PyQt.QtCore import QCoreApplication, QUrl

from ..core.common.spec import BASELINE_OFFSET, DN_SCALE, HSE_GSD_M, LCZ_GSD_M, NUM_CLASSES
from .interpreter import PLUGIN_DIR

README_PATH = os.path.join(str(PLUGIN_DIR), "README.md")


def tr(text: str) -> str:
    return QCoreApplication.translate("MapHseLczAlgorithm", text)


def help_html() -> str:
    """The help panel of the dialog: short paragraphs for a map user, one line each so that they wrap."""
    readme = QUrl.fromLocalFile(README_PATH).toString()
    paragraphs = [
        tr("Maps two layers from one Sentinel-2 image. <b>HSE density</b> is the built-up fraction of each {hse} m "
           "pixel: 0 where there are no buildings or paved surfaces (drawn transparent), 1 where the pixel is "
           "fully built-up. <b>Local climate zones (LCZ)</b> give each {lcz} m cell one of {classes} classes: LCZ "
           "1&ndash;10 are built types (compact high-rise to heavy industry), A&ndash;G are land cover (trees, low "
           "plants, bare soil, water). The optional <b>LCZ confidence</b> is the probability of the class shown, "
           "and the optional statistics table gives the area (km&sup2;) and mean HSE of every class.").format(
            hse=HSE_GSD_M, lcz=LCZ_GSD_M, classes=NUM_CLASSES),
        tr("<b>Input</b>: a Sentinel-2 Level-1C or Level-2A image, e.g. a GeoTIFF or VRT whose bands are named "
           "(B2, B3, &hellip;) or in the standard 13-band (L1C) or 12-band (L2A) order, or a product as QGIS opens "
           "it (a subdataset of a .SAFE or of its .zip: its 10 bands are read from the product). Set an "
           "<b>extent</b> to map only part of it. Reflectance is (DN + offset) / {scale}; images acquired from "
           "25 January 2022 on need an offset of &minus;{offset}, which a .SAFE product carries: for a GeoTIFF "
           "export, set <b>DN offset</b> to &minus;{offset} under Advanced parameters.").format(
            scale=DN_SCALE, offset=-BASELINE_OFFSET),
        tr("<b>Exports</b> (optional): the LCZ map in UMEP codes (1&ndash;10, 101&ndash;107 for A&ndash;G) for "
           "UMEP/SUEWS, and a copy in EPSG:4326 for WRF's w2w (WUDAPT-to-WRF) tool (note: WRF from version 4.4.2 numbers the urban "
           "LCZ categories 51&ndash;61, while w2w writes 31&ndash;41; check what your WRF version expects). A "
           "<b>majority filter</b> "
           "(Advanced, 3x3 or 5x5 cells) gives each cell the most frequent class around it, in the map and its "
           "exports (the LCZ Generator smooths its maps with a Gaussian filter instead); the confidence "
           "stays the network's, so where the filter changed a cell's class it is the probability of the class the "
           "network chose there."),
        tr("<b>Model</b>: the multitask network of Qiu et al. (IEEE GRSL 19, 2022, 1000705); the bundled model "
           "learned from pseudo-labels of another network, so check the maps against what you know."),
        tr("The network runs in a separate Python program, on LiteRT on the CPU (TensorFlow for a GPU). Run "
           "<b>Install engine</b> (urbanmtl:install_engine, also in Raster &gt; urbanmtl) once after installing the "
           "plugin; if the engine is missing, the algorithm says so. Tile size, runtime, device and the Python "
           "interpreter are under Advanced parameters. More: see README.md in the plugin folder "
           "(<a href=\"{url}\">{path}</a>).").format(
            url=readme, path=README_PATH),
    ]
    return "".join(f"<p>{p}</p>" for p in paragraphs)
