"""Local Climate Zone legend (Stewart and Oke 2012, colours of Demuzere et al. 2022) and the WA matrix."""

from __future__ import annotations

import numpy as np

from .spec import NUM_CLASSES  # number of LCZ classes: codes are 1..17 and probability channel k-1 holds LCZ k

#: Codes 1..17 as used in every raster this project writes (0 = nodata).
CODES: tuple[int, ...] = tuple(range(1, NUM_CLASSES + 1))

#: Short labels: "1".."10" for the built types, "A".."G" for the natural ones.
LETTERS: tuple[str, ...] = tuple(str(i) for i in range(1, 11)) + tuple("ABCDEFG")

NAMES: tuple[str, ...] = (
    "Compact high-rise", "Compact midrise", "Compact low-rise", "Open high-rise", "Open midrise",
    "Open low-rise", "Lightweight low-rise", "Large low-rise", "Sparsely built", "Heavy industry",
    "Dense trees", "Scattered trees", "Bush, scrub", "Low plants", "Bare rock or paved",
    "Bare soil or sand", "Water",
)

COLORS: tuple[str, ...] = (
    "#8c0000", "#d10000", "#ff0000", "#bf4d00", "#ff6600", "#ff9955", "#faee05", "#bcbcbc",
    "#ffccaa", "#555555", "#006a00", "#00aa00", "#648525", "#b9db79", "#000000", "#fbf7ae",
    "#6a6aff",
)

#: Codes of the built types (1-10) and the natural types (A-G = 11-17).
BUILT_CODES: tuple[int, ...] = tuple(range(1, 11))
NATURAL_CODES: tuple[int, ...] = tuple(range(11, 18))
#: OA_bu compares built against these natural classes; E (bare rock or paved, 15) is left out.
OA_BU_NATURAL_CODES: tuple[int, ...] = (11, 12, 13, 14, 16, 17)

#: Older WUDAPT files code A..G as 101..107.
ALIASES: dict[int, int] = {100 + i: 10 + i for i in range(1, 8)}

#: Weighted-accuracy similarity matrix W (Bechtel et al. 2017), rows/columns LCZ 1..10, A..G, in twelfths.
_W_TWELFTHS = """
12 11 10  8  7  6  7  9  5  9  4  3  1  0  3  0  0
11 12 11  7  8  7  8 10  5 10  5  4  3  1  4  1  1
10 11 12  6  7  8  9 11  7 11  6  5  4  2  5  2  2
 8  7  6 12 11 10  9  6  9  7  6  7  6  4  1  4  4
 7  8  7 11 12 11 10  8 10  8  7  8  6  5  2  5  5
 6  7  8 10 11 12 11  9 11  9  8  9  8  7  3  6  6
 7  8  9  9 10 11 12  8 10  8  9  8  7  5  2  5  5
 9 10 11  6  8  9  8 12  9 11  5  6  5  3  6  4  4
 5  5  7  9 10 11 10  9 12  8  7  8  9  7  4  7  7
 9 10 11  7  8  9  8 11  8 12  5  6  5  3  6  4  4
 4  5  6  6  7  8  9  5  7  5 12 11 10  8  5  8  8
 3  4  5  7  8  9  8  6  8  6 11 12 11  9  6  9  9
 1  3  4  6  6  8  7  5  9  5 10 11 12 10  7 10 10
 0  1  2  4  5  7  5  3  7  3  8  9 10 12  9 11 11
 3  4  5  1  2  3  2  6  4  6  5  6  7  9 12  9  9
 0  1  2  4  5  6  5  4  7  4  8  9 10 11  9 12 11
 0  1  2  4  5  6  5  4  7  4  8  9 10 11  9 11 12
"""
WA_MATRIX: np.ndarray = np.array(_W_TWELFTHS.split(), dtype=np.float64).reshape(17, 17) / 12.0


def label(code: int) -> str:
    """Legend text of an LCZ code, e.g. 2 -> "2 Compact midrise", 17 -> "G Water"."""
    return f"{LETTERS[code - 1]} {NAMES[code - 1]}"


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """(r, g, b) 0..255 of a '#rrggbb' colour."""
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def normalize_codes(codes: np.ndarray) -> np.ndarray:
    """LCZ codes 1..17 (uint8) from codes 1..17 or 1..10/101..107; anything else becomes 0 (no reference)."""
    codes = np.asarray(codes)
    out = np.zeros(codes.shape, dtype=np.uint8)
    valid = (codes >= 1) & (codes <= NUM_CLASSES)
    out[valid] = codes[valid]
    for alias, code in ALIASES.items():
        out[codes == alias] = code
    return out


#: UMEP's (and older WUDAPT files') codes of LCZ 1..17: the built types keep 1..10, A..G become 101..107.
UMEP_CODES: tuple[int, ...] = tuple(range(1, 11)) + tuple(range(101, 108))


def to_umep_codes(codes: np.ndarray) -> np.ndarray:
    """UMEP codes (1..10, 101..107; uint8) of LCZ codes 1..17; 0 (nodata) and anything else become 0."""
    codes = np.asarray(codes)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[1:NUM_CLASSES + 1] = UMEP_CODES
    valid = (codes >= 0) & (codes <= 255)
    out = np.zeros(codes.shape, dtype=np.uint8)
    out[valid] = lookup[codes[valid].astype(np.int64)]
    return out


def umep_label(umep_code: int) -> str:
    """Legend text of a UMEP code, e.g. 2 -> "2 Compact midrise", 107 -> "G Water"."""
    return label(umep_code - 90 if umep_code > 100 else umep_code)
