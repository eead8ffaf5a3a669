"""Band catalogue, offsets and the LCZ legend."""

import numpy as np
import pytest

from core.common.bands import (
    LAYOUTS, MODEL_BANDS, dn_to_reflectance, layout_of_13_bands, normalize_band_name, offset_for_baseline, resolve_band_indices,
)
from core.common.errors import UrbanMTLError
from core.common.lcz import COLORS, NAMES, WA_MATRIX, label, normalize_codes


@pytest.mark.parametrize("raw,name", [("B2", "B2"), ("B02", "B2"), ("b8a", "B8A"), ("B08A", "B8A"),
                                      ("B4, central wavelength 665 nm", "B4"), ("B11", "B11"), ("red", None),
                                      ("B13", None), (None, None)])
def test_band_names_as_files_write_them(raw, name):
    assert normalize_band_name(raw) == name


@pytest.mark.parametrize("layout,expected", [
    ("L1C", [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]),
    ("L2A", [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]),
    ("EUROSAT", [1, 2, 3, 4, 5, 6, 7, 12, 10, 11]),
    ("MODEL", list(range(10))),
])
def test_known_layouts(layout, expected):
    assert resolve_band_indices(len(LAYOUTS[layout]), layout=layout) == expected


def test_resolution_from_descriptions_count_and_explicit_names():
    shuffled = ["B12", "B11", "B8A", "B8", "B7", "B6", "B5", "B4", "B3", "B2"]
    assert resolve_band_indices(10, descriptions=shuffled) == list(range(9, -1, -1))
    assert resolve_band_indices(13) == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12]
    assert resolve_band_indices(12) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert resolve_band_indices(10, bands=shuffled) == list(range(9, -1, -1))


def test_unresolvable_layouts_list_what_was_found():
    with pytest.raises(UrbanMTLError, match="3 band\\(s\\) with names: red, green, blue"):
        resolve_band_indices(3, descriptions=["red", "green", "blue"])
    with pytest.raises(UrbanMTLError, match="missing: B5"):
        resolve_band_indices(4, descriptions=["B2", "B3", "B4", "B8"])
    with pytest.raises(UrbanMTLError, match="2 band names were given"):
        resolve_band_indices(10, bands=["B2", "B3"])


def test_processing_baseline_offset():
    assert offset_for_baseline("02.04") == 0.0
    assert offset_for_baseline("04.00") == -1000.0
    assert offset_for_baseline("N0500") == -1000.0
    assert offset_for_baseline(None) == 0.0
    np.testing.assert_allclose(dn_to_reflectance(np.array([1000, 2000]), -1000.0), [0.0, 0.1])
    assert dn_to_reflectance(np.array([10000], np.uint16)).dtype == np.float32


def test_lcz_legend_and_wa_matrix():
    assert len(NAMES) == len(COLORS) == 17 and len(MODEL_BANDS) == 10
    assert label(2) == "2 Compact midrise" and label(17) == "G Water"
    np.testing.assert_array_equal(WA_MATRIX, WA_MATRIX.T)
    np.testing.assert_array_equal(np.diag(WA_MATRIX), 1.0)
    assert WA_MATRIX[0, 13] == 0.0 and WA_MATRIX[14, 3] == pytest.approx(1 / 12)
    np.testing.assert_array_equal(normalize_codes(np.array([0, 1, 10, 101, 107, 17, 18, 255])),
                                  [0, 1, 10, 11, 17, 17, 0, 0])


def test_13_band_order_from_the_dark_cirrus_band():
    l1c = [1100, 900, 800, 700, 1000, 1800, 2100, 2200, 2300, 600, 12, 1700, 1000]
    eurosat = l1c[:8] + [600, 12, 1700, 1000, 2300]          # B9, B10, B11, B12, then B8A last
    assert layout_of_13_bands(l1c)[0] == "L1C"
    assert layout_of_13_bands(eurosat)[0] == "EUROSAT"
    assert layout_of_13_bands([1000] * 13)[0] == "L1C"       # no dark band: the documented default
