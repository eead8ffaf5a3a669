"""Whole scenes mapped with the engine and scored against their references (`python -m core.evaluate_maps`).

This scores what a user gets, not training windows: each scene named by a manifest (core.data.scene) is
mapped by `core.mapping.predict.predict_scene` (tiles, blending, nodata handling and all), and the written maps are
compared with the manifest's references brought onto the output grids:

- LCZ per 100 m cell: a probability reference is averaged over the cell, then its argmax is the reference
  class; a codes reference gives the cell its most frequent code. Scores: OA (17 classes), built/natural OA
  (LCZ 1-10 against A-G), the share of built cells in the map and in the reference, and the class histograms.
- HSE per 20 m pixel: the reference averaged onto the output grid; MAE (0..1 units) over pixels valid in both.

Usage::

    python -m core.evaluate_maps --model models SCENE.yaml [SCENE.yaml ...] [--out scores.json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES

#: LCZ codes of the built types (1-10); 11..17 are A..G.
BUILT_MAX = 10


def _onto(path: Path, bands: list[int], grid: rasterio.io.DatasetReader, resampling: Resampling,
          scale: float, nodata: Sequence[float]) -> np.ndarray:
    """Bands of a reference raster averaged (or resampled) onto an output raster's grid: (bands, h, w) float32,
    NaN where the reference has no value."""
    with rasterio.open(path) as src:
        data = src.read(bands).astype(np.float32)
        bad = ~np.isfinite(data)
        for value in list(nodata) + ([src.nodata] if src.nodata is not None else []):
            bad |= data == value
        data = np.where(bad, np.nan, data * np.float32(scale))
        out = np.full((len(bands), grid.height, grid.width), np.nan, dtype=np.float32)
        for k in range(len(bands)):
            reproject(data[k], out[k], src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
                      dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan, resampling=resampling)
    return out


def reference_lcz_cells(spec: Any, lcz_map: rasterio.io.DatasetReader) -> np.ndarray:
    """Reference LCZ code (1..17, 0 = none) of every cell of the 100 m output grid."""
    if spec.lcz is None:
        raise UrbanMTLError(f"The manifest {spec.source} has no LCZ raster (lcz:) to score the LCZ map against.")
    with rasterio.open(spec.lcz) as src:
        count = src.count
    kind = spec.lcz_kind or ("codes" if count == 1 else "probabilities")
    if kind == "probabilities":
        probs = _onto(spec.lcz, list(range(1, NUM_CLASSES + 1)), lcz_map, Resampling.average, spec.lcz_scale, [])
        valid = np.all(np.isfinite(probs), axis=0) & (np.nansum(probs, axis=0) > 0)
        codes = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=0) + 1
        return np.where(valid, codes, 0).astype(np.int64)
    codes = _onto(spec.lcz, [spec.lcz_band], lcz_map, Resampling.mode, 1.0, [0])[0]
    codes = np.where(np.isfinite(codes), codes, 0).astype(np.int64)
    codes = np.where(codes > 100, codes - 90, codes)            # 101..107 -> 11..17
    return np.where((codes >= 1) & (codes <= NUM_CLASSES), codes, 0)


def score_maps(spec: Any, hse_path: str, lcz_path: str) -> dict[str, Any]:
    """Scores of written maps against the references of a scene manifest (see the module docstring)."""
    result: dict[str, Any] = {"scene": spec.name}
    with rasterio.open(lcz_path) as lcz_map:
        pred = lcz_map.read(1).astype(np.int64)
        ref = reference_lcz_cells(spec, lcz_map)
    both = (pred > 0) & (ref > 0)
    n = int(both.sum())
    if n == 0:
        raise UrbanMTLError(f"The LCZ map of {spec.name} and its reference share no valid 100 m cell.")
    p, r = pred[both], ref[both]
    result["lcz"] = {
        "cells": n,
        "oa": float(np.mean(p == r)),
        "built_natural_oa": float(np.mean((p <= BUILT_MAX) == (r <= BUILT_MAX))),
        "built_share_map": float(np.mean(p <= BUILT_MAX)),
        "built_share_reference": float(np.mean(r <= BUILT_MAX)),
        "histogram_map": np.bincount(p, minlength=NUM_CLASSES + 1)[1:].tolist(),
        "histogram_reference": np.bincount(r, minlength=NUM_CLASSES + 1)[1:].tolist(),
    }
    if spec.hse is not None:
        with rasterio.open(hse_path) as hse_map:
            hse = hse_map.read(1).astype(np.float32)
            hse[hse < 0] = np.nan
            scale = spec.hse_scale if spec.hse_scale is not None else 0.01
            ref_hse = _onto(spec.hse, [spec.hse_band], hse_map, Resampling.average, scale, spec.hse_nodata)[0]
        ref_hse[(ref_hse < 0) | (ref_hse > 1)] = np.nan
        ok = np.isfinite(hse) & np.isfinite(ref_hse)
        result["hse"] = {"pixels": int(ok.sum()), "mae": float(np.mean(np.abs(hse[ok] - ref_hse[ok]))),
                         "mean_map": float(np.mean(hse[ok])), "mean_reference": float(np.mean(ref_hse[ok]))}
    return result


def evaluate_scenes(model: Optional[str], manifests: Sequence[str], *, keep_dir: Optional[str] = None,
                    log=print, tile_size: Optional[int] = None, overlap: Optional[int] = None,
                    batch_size: Optional[int] = None, attention: Optional[str] = None) -> list[dict[str, Any]]:
    """Map every scene with `model` (None: the bundled one) and score it; maps go to keep_dir (or a temporary
    folder that is removed). tile_size/overlap/batch_size/attention: as core.predict (None: its defaults)."""
    from ..data import load_manifest
    from ..mapping.predict import PredictOptions, predict_scene

    specs = [load_manifest(m) for m in manifests]
    tiling = {k: v for k, v in (("tile_size", tile_size), ("overlap", overlap), ("batch_size", batch_size),
                                ("attention", attention)) if v is not None}
    scores = []
    with tempfile.TemporaryDirectory(prefix="urbanmtl-maps-") as tmp:
        folder = Path(keep_dir) if keep_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            hse, lcz = folder / f"{spec.name}_hse.tif", folder / f"{spec.name}_lcz.tif"
            bands = spec.bands
            if bands is None and spec.layout:
                from ..common.bands import LAYOUTS

                bands = list(LAYOUTS[spec.layout.upper()])
            result = predict_scene(str(spec.image), str(hse), str(lcz), model_path=model,
                                   options=PredictOptions(bands=bands, offset=spec.offset, overwrite=True, **tiling))
            score = score_maps(spec, str(hse), str(lcz))
            score["seconds"] = round(result.seconds, 1)
            scores.append(score)
            l = score["lcz"]  # noqa: E741
            log(f"{spec.name}: LCZ OA {l['oa']:.3f}, built/natural OA {l['built_natural_oa']:.3f}, built cells "
                f"{l['built_share_map']:.2f} (reference {l['built_share_reference']:.2f})"
                + (f", HSE MAE {score['hse']['mae']:.3f}" if "hse" in score else "") + f", {l['cells']} cells")
    return scores
