"""Accuracy of LCZ maps on held-out training areas, as the LCZ Generator reports it, and its HTML report.

Cells: a 100 m cell of the LCZ map is a test cell of a polygon when its centre lies inside the polygon
(rasterio's rasterize, all_touched=False); cells that any training polygon touches are left out, so no test cell
shares pixels with what the model was trained on. Metrics (from the 17x17 confusion matrix, rows = reference):

- `oa`: overall accuracy; `kappa`: Cohen's kappa; `aa`: mean recall over the classes present;
- `oa_u`: accuracy over the urban classes 1-10 only (correct cells in reference rows 1-10 / all cells in those rows);
- `oa_bu`: built (1-10) versus natural (A-G) only, confusion inside each group ignored (the LCZ Generator's
  definition; `oa_bu_without_e` leaves E out, as core.evaluation.metrics and Qiu et al. do);
- `oa_w`: weighted accuracy, sum(W * CM) / sum(CM) with the similarity matrix W of Bechtel et al. (2017)
  (core.common.lcz.WA_MATRIX), as the LCZ Generator;
- `f1`: per class, 2 TP / (row total + column total); `confusion`: the counts.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.lcz import COLORS, LETTERS, NAMES, NUM_CLASSES, label
from .metrics import confusion_matrix, lcz_metrics

#: Metrics shown in the summary table, with their legend.
SUMMARY = (
    ("oa", "OA", "overall accuracy"),
    ("oa_u", "OA<sub>u</sub>", "urban classes 1-10 only"),
    ("oa_bu", "OA<sub>bu</sub>", "built (1-10) versus natural (A-G)"),
    ("oa_w", "OA<sub>w</sub>", "weighted by class similarity (Bechtel et al. 2017)"),
    ("kappa", "kappa", "Cohen's kappa"),
)


def score(cm: np.ndarray) -> dict[str, Any]:
    """The metrics of the module docstring from a 17x17 confusion matrix (counts, rows = reference)."""
    cm = np.asarray(cm, dtype=np.int64)
    base = lcz_metrics(cm)
    built, natural = slice(0, 10), slice(10, NUM_CLASSES)
    n = cm.sum()
    agree_bu = cm[built, built].sum() + cm[natural, natural].sum()
    return {
        "oa": base["oa"],
        "oa_u": base["oa_urb"],
        "oa_bu": float(agree_bu / n),
        "oa_bu_without_e": base["oa_bu"],
        "oa_w": base["wa"],
        "kappa": base["kappa"],
        "aa": base["aa"],
        "f1": base["f1_per_class"],
        "cells": int(n),
        "cells_per_class": {LETTERS[k]: int(v) for k, v in enumerate(cm.sum(axis=1)) if v},
        "confusion": base["confusion_matrix"],
    }


def rasterize_areas(areas: Sequence[Any], lcz_path: str | Path, all_touched: bool = False) -> np.ndarray:
    """(h, w) int32 on the LCZ map's grid: 1 + the position of the polygon in `areas` covering each cell, 0 for
    none (later polygons win where they overlap). Polygons are taken in the map's CRS from `areas[i].crs` when
    present, else assumed to be in it."""
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(lcz_path) as ds:
        shape, transform = (ds.height, ds.width), ds.transform
    if not areas:
        return np.zeros(shape, dtype=np.int32)
    shapes = [(a.geometry, i + 1) for i, a in enumerate(areas)]
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32", all_touched=all_touched)


def scoring_cells(test: Sequence[Any], train: Sequence[Any], lcz_path: str | Path) -> tuple[np.ndarray, int]:
    """(ids, excluded): the test-polygon id (1-based position in `test`, 0 = none) of every 100 m cell whose
    centre lies inside a test polygon and which no training polygon touches, and how many cells were left out
    for touching a training polygon. All polygons must be in the map's CRS."""
    ids = rasterize_areas(test, lcz_path)
    touched = rasterize_areas(train, lcz_path, all_touched=True) > 0
    excluded = int(np.count_nonzero((ids > 0) & touched))
    ids[touched] = 0
    return ids, excluded


def polygon_confusions(ids: np.ndarray, codes: Sequence[int], prediction: np.ndarray) -> np.ndarray:
    """(P, 17, 17) confusion counts of each test polygon (cells with id p + 1, reference class codes[p])
    against the predicted codes (0 = nodata, not counted)."""
    out = np.zeros((len(codes), NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for p, code in enumerate(codes):
        inside = ids == p + 1
        predicted = prediction[inside]
        out[p] = confusion_matrix(np.full(predicted.shape, code), predicted)
    return out


def bootstrap(before: np.ndarray, after: np.ndarray, codes: Sequence[int], repeats: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """95 % intervals of OA before, after and of the gain, resampling the test polygons with replacement
    within each class (the split is stratified too). before/after: (P, 17, 17) per-polygon confusions."""
    codes = np.asarray(codes)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    values = {"before": [], "after": [], "gain": []}
    for _ in range(repeats):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        oa = []
        for cms in (before, after):
            cm = cms[pick].sum(axis=0)
            total = cm.sum()
            oa.append(np.trace(cm) / total if total else np.nan)
        values["before"].append(oa[0])
        values["after"].append(oa[1])
        values["gain"].append(oa[1] - oa[0])
    out: dict[str, Any] = {"repeats": repeats, "seed": seed, "unit": "test polygon, within class"}
    for key, v in values.items():
        low, high = np.nanpercentile(np.asarray(v, dtype=np.float64), [2.5, 97.5])
        out[f"oa_{key}_95"] = [round(float(low), 4), round(float(high), 4)]
    return out


def bootstrap_ranges(per_polygon: dict[str, np.ndarray], codes: Sequence[int], repeats: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """95 % ranges of OA, OA_bu and each class's F1 for every map of `per_polygon` ({name: (P, 17, 17)
    per-polygon confusions}), drawing the test polygons with replacement within each class; every map is
    scored on the same draws. Returns {name: {"oa": [low, high], "oa_bu": [...], "f1": {letter: [...]}}}
    (a class's F1 range only where the class is in the reference)."""
    codes = np.asarray(codes)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    draws = np.zeros((repeats, len(codes)))
    for i in range(repeats):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        draws[i] = np.bincount(pick, minlength=len(codes))
    built = np.arange(NUM_CLASSES) < 10
    present = sorted({int(c) for c in codes})
    out: dict[str, dict[str, Any]] = {}
    for name, cms in per_polygon.items():
        cm = np.tensordot(draws, np.asarray(cms, dtype=np.float64), axes=1)       # (repeats, 17, 17)
        total = cm.sum(axis=(1, 2))
        diag = np.trace(cm, axis1=1, axis2=2)
        agree_bu = cm[:, built][:, :, built].sum(axis=(1, 2)) + cm[:, ~built][:, :, ~built].sum(axis=(1, 2))
        rows, cols = cm.sum(axis=2), cm.sum(axis=1)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        f1 = 2 * tp / np.maximum(rows + cols, 1e-12)

        def rng95(values: np.ndarray) -> list[float]:
            return [round(float(v), 4) for v in np.nanpercentile(values, [2.5, 97.5])]

        out[name] = {"oa": rng95(diag / np.maximum(total, 1e-12)), "oa_bu": rng95(agree_bu / np.maximum(total, 1e-12)),
                     "f1": {LETTERS[c - 1]: rng95(f1[:, c - 1]) for c in present}}
    return out


# --- report ---------------------------------------------------------------------------------------------------


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


#: The maps a report compares, in its columns: key in the result, heading.
MAPS = (("before", "start model"), ("after", "fine-tuned"), ("forest", "random forest"))


def _ranges(result: dict[str, Any], tag: str) -> Optional[dict[str, Any]]:
    return ((result.get("bootstrap") or {}).get("ranges_95") or {}).get(tag)


def _f1_range(result: dict[str, Any], tag: str, letter: str) -> Optional[Sequence[float]]:
    return ((_ranges(result, tag) or {}).get("f1") or {}).get(letter)


def _with_range(value: Optional[float], span: Optional[Sequence[float]], digits: int = 3) -> str:
    text = _fmt(value, digits)
    return text if value is None or not span else f"{text}<br><span class=note>{span[0]:.{digits - 1}f}&ndash;" \
                                                  f"{span[1]:.{digits - 1}f}</span>"


def _summary_table(result: dict[str, Any]) -> str:
    maps = [(tag, name) for tag, name in MAPS if tag in result]
    rows = []
    for key, name, legend in SUMMARY:
        cells = "".join(f"<td>{_with_range(result[tag].get(key), (_ranges(result, tag) or {}).get(key))}</td>"
                        for tag, _ in maps)
        b, a = result["before"].get(key), result["after"].get(key)
        gain = None if a is None or b is None else a - b
        sign = "" if gain is None else ("+" if gain >= 0 else "")
        rows.append(f"<tr><th>{name}</th>{cells}<td>{sign}{_fmt(gain)}</td><td class=l>{legend}</td></tr>")
    ci = result.get("bootstrap")
    if ci:
        rows.append(f"<tr><th>gain 95 %</th>{'<td></td>' * len(maps)}<td>{ci['oa_gain_95'][0]:+.3f} to "
                    f"{ci['oa_gain_95'][1]:+.3f}</td><td class=l>OA, fine-tuned minus start</td></tr>")
    head = "".join(f"<th>{name}</th>" for _, name in maps)
    return f"<table><tr><th></th>{head}<th>gain</th><th></th></tr>" + "".join(rows) + "</table>"


def _swatch(code: int) -> str:
    return f"<span class=sw style='background:{COLORS[code - 1]}'></span>"


def _class_table(result: dict[str, Any]) -> str:
    split = result["split"]
    maps = [(tag, name) for tag, name in MAPS if tag in result]
    rows = []
    for code in range(1, NUM_CLASSES + 1):
        letter = LETTERS[code - 1]
        counts = [split[k].get(letter, 0) for k in ("train_polygons", "test_polygons", "train_pixels_10m",
                                                    "test_cells_100m")]
        if not any(counts):
            continue
        f1 = "".join(f"<td>{_with_range(result[tag]['f1'].get(letter), _f1_range(result, tag, letter), 2)}</td>"
                     for tag, _ in maps)
        rows.append(f"<tr><td class=l>{_swatch(code)} {html.escape(label(code))}</td>"
                    + "".join(f"<td>{c}</td>" for c in counts) + f1 + "</tr>")
    head = "".join(f"<th>F1 {name}</th>" for _, name in maps)
    return ("<table><tr><th class=l>class</th><th>train polygons</th><th>test polygons</th><th>train pixels (10 m)"
            f"</th><th>test cells (100 m)</th>{head}</tr>" + "".join(rows) + "</table>")


def _confusion_table(cm: Sequence[Sequence[int]], title: str) -> str:
    cm = np.asarray(cm, dtype=np.int64)
    keep = [k for k in range(NUM_CLASSES) if cm[k].sum() or cm[:, k].sum()]
    if not keep:
        return f"<h3>{title}</h3><p>No test cell.</p>"
    head = "".join(f"<th title='{html.escape(NAMES[k])}'>{LETTERS[k]}</th>" for k in keep)
    rows = []
    for i in keep:
        total = cm[i].sum()
        cells = []
        for j in keep:
            v = int(cm[i, j])
            share = v / total if total else 0.0
            style = f" style='background:rgba(40,90,200,{0.08 + 0.7 * share:.2f})'" if v else ""
            cells.append(f"<td class={'d' if i == j else 'o'}{style}>{v or ''}</td>")
        rows.append(f"<tr><th title='{html.escape(NAMES[i])}'>{LETTERS[i]}</th>{''.join(cells)}<td>{total}</td></tr>")
    return (f"<h3>{title}</h3><table class=cm><tr><th>ref \\ map</th>{head}<th>total</th></tr>"
            + "".join(rows) + "</table>")


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
.l{text-align:left}.cm td{min-width:2.2em}.cm td.d{font-weight:bold;outline:2px solid #444}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #888;vertical-align:middle}
.note{color:#555;font-size:90%}.warn li{color:#8a3b00}"""


def write_report(result: dict[str, Any], path: str | Path) -> Path:
    """A self-contained HTML page (no external file) of an accuracy result (see core.finetuning.run)."""
    split, settings = result["split"], result.get("settings", {})
    refit = settings.get("refit")
    tested = settings.get("tested_model") if refit else None
    facts = [("image", settings.get("image")), ("training areas", settings.get("polygons")),
             ("start model", settings.get("start_model")), ("fine-tuned model (tested here)", tested),
             ("final model (trained on all polygons after the test)" if refit else "fine-tuned model",
              settings.get("model")),
             ("epochs", settings.get("epochs")), ("test share", settings.get("test_share")),
             ("split seed", settings.get("seed")),
             ("polygons train / test", f"{split['n_train']} / {split['n_test']}"),
             ("test cells scored", result["after"]["cells"]),
             ("test cells left out (touching a training polygon)", split.get("test_cells_excluded", 0))]
    if split.get("class_names"):        # a WUDAPT-style file: each class as its folder named it
        facts.append(("classes (from the file's folders)",
                      "; ".join(f"{k} = {v}" for k, v in split["class_names"].items())))
    facts_html = "".join(f"<tr><th class=l>{html.escape(str(k))}</th><td class=l>{html.escape(str(v))}</td></tr>"
                         for k, v in facts if v is not None)
    warnings = "".join(f"<li>{html.escape(text)}</li>" for text in result.get("warnings", []))
    body = (f"<h1>LCZ accuracy on held-out training areas</h1><table>{facts_html}</table>"
            + (f"<h2>Warnings</h2><ul class=warn>{warnings}</ul>" if warnings else "")
            + f"<h2>Summary</h2>{_summary_table(result)}"
            "<p class=note>Scores on the 100 m cells whose centre lies inside a test polygon; test polygons were "
            "held out whole (stratified by class) and never trained on. Start model and fine-tuned model are "
            "mapped by the same engine; the random forest is the LCZ Generator's method (Demuzere et al. 2021: "
            "band means and spreads per 100 m cell and its 300 m and 500 m neighbourhoods) trained on the same "
            "train polygons. Small figures: 95 % range of a bootstrap over the test polygons (within class)."
            + (f" The final model was then trained the same way on all {refit['polygons']} polygons, test "
               "polygons included, so these figures measure the procedure; the final model cannot be tested on "
               "polygons it has seen." if refit else "") + "</p>"
            f"<h2>Classes</h2>{_class_table(result)}<h2>Confusion matrices</h2><p class=note>Rows: reference (test "
            f"polygons), columns: map. Shading: share of the row.</p>"
            f"{_confusion_table(result['before']['confusion'], 'Start model')}"
            f"{_confusion_table(result['after']['confusion'], 'Fine-tuned')}"
            + (_confusion_table(result['forest']['confusion'], 'Random forest') if 'forest' in result else ""))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>LCZ accuracy</title><style>{_STYLE}</style>"
            f"</head><body>{body}</body></html>\n")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return path


def no_cells_error(n_test: int) -> UrbanMTLError:
    return UrbanMTLError(
        f"No 100 m cell of the map has its centre inside one of the {n_test} test polygons (away from the "
        f"training polygons), so accuracy cannot be measured. Draw training areas at least 200 m across.")
