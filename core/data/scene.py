"""Scene datasets: a Sentinel-2 raster plus HSE/LCZ references on any grid, described by a manifest.

The manifest (YAML/JSON) and its keys: core.data.manifest. References are brought onto the image grid window by
window: HSE averaged onto the 20 m grid aligned with the image, LCZ codes nearest onto the 10 m grid, probability
rasters bilinear or nearest onto the 10 m grid, polygons burnt into the 10 m grid (core.data.reference_rasters, core.data.reference_polygons).
Nothing is read whole.

Sampling (core.data.windows): the usable scene is cut into square blocks of 2 x patch_size pixels. Training
windows are drawn at random even offsets entirely inside one block (blocks chosen in proportion to their area),
redrawn when more than half the window is image nodata or it holds no reference. Evaluation tiles cover each
block with windows of patch_size, the last one in a row or column aligned with the block's far edge.
"""

from __future__ import annotations

import copy
import math
import threading
from contextlib import ExitStack
from dataclasses import replace
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine

from ..common.bands import LAYOUTS, MODEL_BANDS
from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES
from ..inputs.scene import Scene, open_scene
from .base import MAX_NODATA_SHARE, Dataset, apply_image_nodata, check_val_fraction, codes_to_onehot, renormalize_rows
from .manifest import SceneSpec
from .reference_polygons import PolygonReference
from .reference_rasters import RasterReference
from .scene_references import ImageGrid, open_hse, open_lcz, open_polygons
from .windows import (
    Block,
    block_edges,
    class_weights,
    draw_around,
    draw_in_blocks,
    evaluation_tiles,
    polygon_centres,
    usability,
)


#: Attempts at a training window before the best one seen is kept (nodata-heavy scenes).
MAX_DRAWS = 32
#: Pixels (10 m) per side of the cells in which rare classes are looked for (a 40 m grid).
RARE_CELL = 4
#: Training windows per polygon and epoch when the LCZ reference is training-area polygons only.
POLYGON_WINDOWS = 8


class SceneDataset(Dataset):
    """A Sentinel-2 scene with HSE/LCZ references (or the blocks of it a split assigned to this part)."""

    format = "scene"

    def __init__(self, spec: SceneSpec, patch_size: int, group: Optional[str] = None) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.path = spec.source
        self.group = group                 # the folder of manifests this scene came from, if any
        self.epoch_windows: Optional[int] = None  # training windows per epoch; None: by area (or polygons)
        self.balance_classes = 0.0         # windows around training polygons: core.data.windows.class_weights
        # Share of the training windows of a polygon scene drawn anywhere in its blocks rather than around its
        # polygons; such windows need no reference (fine-tuning distils the start model there).
        self.background_share = 0.0
        # Share of the training windows centred on a pixel whose reference class is one of `rare_classes`
        # (scenes with an LCZ raster; see _rare_centres).
        self.rare_share = 0.0
        self.rare_classes: tuple[int, ...] = ()
        self.patch_size = int(patch_size)
        self.subset: Optional[str] = None
        self.split_info: Optional[dict[str, Any]] = None
        self._stack: Optional[ExitStack] = None
        self._scene: Optional[Scene] = None
        scene = self._image()
        self.height, self.width = scene.height, scene.width
        self.crs = scene.crs
        self.transform = scene.transform
        # (west, south, east, north), as rasterio's dataset bounds.
        self.bounds = tuple(rasterio.transform.array_bounds(self.height, self.width, self.transform))
        self.reader_notes = list(scene.messages)
        block = 2 * self.patch_size
        rows = block_edges(self.height, block, self.patch_size, "rows", spec.source)
        cols = block_edges(self.width, block, self.patch_size, "columns", spec.source)
        self.blocks: list[Block] = [(r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols]
        self._hse_ref: Optional[RasterReference] = None
        self._lcz_ref: Optional[RasterReference] = None
        self._lcz_polygons: Optional[PolygonReference] = None
        self._open_references(check=True)
        self.has_hse = spec.hse is not None
        self.has_lcz = spec.lcz is not None or spec.lcz_polygons is not None

    # --- files ---

    def _image(self) -> Scene:
        """The image opened by the engine's reader (`core.inputs.scene.open_scene`): band mapping, DN offset and
        scale, nodata and its filling are decided there, for training exactly as for mapping. Manifest keys
        (bands/layout, offset, scale, nodata) override what the reader would find by itself."""
        if self._scene is None:
            spec = self.spec
            if spec.layout is not None and spec.layout.upper() not in LAYOUTS:
                raise UrbanMTLError(f"Unknown band layout '{spec.layout}' for {spec.source}. Known layouts: "
                                    f"{', '.join(LAYOUTS)}.")
            bands = spec.bands if spec.bands is not None else (
                list(LAYOUTS[spec.layout.upper()]) if spec.layout else None)
            stack = ExitStack()
            try:
                scene = stack.enter_context(open_scene(str(spec.image), bands=bands, offset=spec.offset))
            except UrbanMTLError as exc:
                stack.close()
                raise UrbanMTLError(f"The image of {spec.source}: {exc}") from None
            if spec.scale is not None:
                scene.scale = float(spec.scale)
            if spec.nodata is not None:
                scene.nodata = [float(spec.nodata)] * len(scene.indexes)
            self._stack, self._scene = stack, scene
        return self._scene


    def _open_references(self, check: bool) -> None:
        """Open the reference readers; with `check` (first opening), verify overlap and that some reference
        is valid, settle the HSE scale and LCZ kind (stored in the spec, so split parts skip the checks) and
        read the polygons."""
        spec = self.spec
        grid = ImageGrid(self.crs, self.transform, self.height, self.width, self.bounds)
        if spec.hse is not None:
            self._hse_ref = open_hse(spec, grid, check)
        if spec.lcz is not None:
            self._lcz_ref = open_lcz(spec, grid, check)
        if spec.lcz_polygons is not None and check:
            # Polygons live in memory and are never modified: split parts share them.
            self._lcz_polygons = open_polygons(spec, grid)


    def close(self) -> None:
        for ref in (self._hse_ref, self._lcz_ref):
            if ref is not None:
                ref.close()
        if self._stack is not None:
            self._stack.close()
        self._stack, self._scene = None, None

    # --- sampling ---

    def __len__(self) -> int:
        if self.epoch_windows is not None:   # set by core.training.datasets.balance_scenes
            return self.epoch_windows
        by_area = max(1, math.ceil(self.area_px() / self.patch_size ** 2))
        centres = self._polygon_centres()
        if centres is None:
            return by_area
        # Training areas cover a small part of a scene: an epoch of POLYGON_WINDOWS windows per polygon.
        return max(1, min(by_area, POLYGON_WINDOWS * len(centres)))

    def _polygon_centres(self) -> Optional[list[tuple[float, float, int]]]:
        """(row, col, block) of the centre of every training polygon inside this dataset's blocks, when the
        LCZ reference is polygons only (then windows are drawn around them); None otherwise."""
        if self._lcz_polygons is None or self._lcz_ref is not None:
            return None
        if getattr(self, "_centres", None) is None:
            shapes = self._lcz_polygons.shapes
            self._centres = polygon_centres([s[2] for s in shapes], [s[1] for s in shapes], self.transform,
                                            self.blocks)
        return self._centres or None

    def _rare_centres(self) -> list[tuple[float, float, int, int]]:
        """(row, col, block, code) of the centre of every RARE_CELL x RARE_CELL cell of this dataset's blocks
        whose LCZ reference's most likely class is one of rare_classes; read once per dataset."""
        if getattr(self, "_rare", None) is None:
            self._rare = []
            if self._lcz_ref is not None and self.rare_classes:
                f = RARE_CELL
                h, w = self.height // f, self.width // f
                values = self._lcz_ref.warp(self.transform * Affine.scale(f), h, w)
                if self.spec.lcz_kind == "codes":
                    codes = np.nan_to_num(np.rint(values[0]), nan=0.0).astype(np.int64)
                else:
                    valid = np.isfinite(values).all(axis=0) & (np.nansum(values, axis=0) > 0)
                    codes = np.where(valid, np.nan_to_num(values, nan=-1.0).argmax(axis=0) + 1, 0)
                rows, cols = np.nonzero(np.isin(codes, list(self.rare_classes)))
                for r, c in zip(rows, cols):
                    row, col = (r + 0.5) * f, (c + 0.5) * f
                    for b, (r0, r1, c0, c1) in enumerate(self.blocks):
                        if r0 <= row < r1 and c0 <= col < c1:
                            self._rare.append((row, col, b, int(codes[r, c])))
                            break
        return self._rare

    def area_px(self) -> int:
        """Pixels (10 m) in this dataset's blocks."""
        return int(sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.blocks))

    def tiles(self) -> list[tuple[int, int]]:
        """(row, col) of the upper-left pixel of every evaluation tile, in evaluation order."""
        return evaluation_tiles(self.blocks, self.patch_size)

    def num_eval_samples(self) -> int:
        return len(self.tiles())

    def _draw(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        """`count` random training windows: a block in proportion to its area, then even offsets inside it.
        With training polygons only, a window around a random polygon's centre (shifted at random by up to a
        quarter window), kept inside the polygon's block."""
        centres = self._polygon_centres()
        if centres is None:
            rare = self._rare_centres() if self.rare_share > 0 else None
            if not rare:
                return draw_in_blocks(self.blocks, self.patch_size, rng, count)
            near = rng.random(count) < self.rare_share
            around = iter(draw_around(rare, self.blocks, self.patch_size, rng, int(near.sum())))
            anywhere = iter(draw_in_blocks(self.blocks, self.patch_size, rng, int((~near).sum())))
            return [next(around) if n else next(anywhere) for n in near]
        weights = class_weights(centres, self.balance_classes) if self.balance_classes else None
        if self.background_share <= 0:
            return draw_around(centres, self.blocks, self.patch_size, rng, count, weights)
        anywhere = rng.random(count) < self.background_share
        around = iter(draw_around(centres, self.blocks, self.patch_size, rng, int((~anywhere).sum()), weights))
        background = iter(draw_in_blocks(self.blocks, self.patch_size, rng, int(anywhere.sum())))
        return [next(background) if a else next(around) for a in anywhere]

    def _plan(self, training: bool, rng: Optional[np.random.Generator]) -> list[tuple[int, int]]:
        if training:
            if rng is None:
                raise ValueError("a training plan needs a random generator")
            return self._draw(rng, len(self))
        return self.tiles()

    def _read(self, units: Sequence[tuple[int, int]], training: bool, rng: Optional[np.random.Generator]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        samples = []
        for window in units:
            sample = self._read_window(*window)
            if training and rng is not None:
                sample = self._redraw_if_unusable(sample, rng)
            samples.append(sample)
        image = np.stack([s[0] for s in samples])
        hse = np.stack([s[1] for s in samples])
        lcz = np.stack([s[2] for s in samples])
        nodata = np.stack([s[3] for s in samples])
        apply_image_nodata(image, hse, lcz, nodata, fill=False)  # Scene.read filled the image already
        return image, hse, lcz

    def _redraw_if_unusable(self, sample: tuple[np.ndarray, ...], rng: np.random.Generator
                            ) -> tuple[np.ndarray, ...]:
        """The sample, or a redrawn one when it is mostly image nodata or has no reference at all.

        After MAX_DRAWS attempts the best one seen is kept, so an epoch always has len(self) samples.
        """
        best, best_score = sample, self._usability(sample)
        draws = 1
        while best_score[0] < 1 and draws < MAX_DRAWS:
            candidate = self._read_window(*self._draw(rng, 1)[0])
            score = self._usability(candidate)
            if score > best_score:
                best, best_score = candidate, score
            draws += 1
        return best

    def _usability(self, sample: tuple[np.ndarray, ...]) -> tuple[int, float]:
        """(1 if usable else 0, share of valid pixels with a reference): usable = at most half nodata and
        some reference on a valid pixel (no reference needed when background windows are drawn)."""
        usable, share = usability(sample, self.has_hse, self.has_lcz)
        if self.background_share > 0:
            usable = int(sample[3].mean() <= MAX_NODATA_SHARE)
        return usable, share

    def _read_window(self, row: int, col: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One window at (row, col): image (P,P,10), hse (P/2,P/2,1), lcz (P,P,17), image nodata (P,P)."""
        p = self.patch_size
        image, valid = self._image().read(row, col, p, p)
        nodata = ~valid
        window_transform = self.transform * Affine.translation(col, row)
        if self._hse_ref is not None:
            # The 20 m grid of the window: same origin, pixels twice the size.
            hse = self._hse_ref.warp(window_transform * Affine.scale(2), p // 2, p // 2)[0]
        else:
            hse = np.full((p // 2, p // 2), np.nan, dtype=np.float32)
        if self._lcz_ref is not None:
            values = self._lcz_ref.warp(window_transform, p, p)
            if self.spec.lcz_kind == "codes":
                lcz = codes_to_onehot(np.nan_to_num(np.rint(values[0]), nan=0.0).astype(np.int64))
            else:
                lcz = renormalize_rows(np.nan_to_num(values.transpose(1, 2, 0), nan=0.0))
        elif self._lcz_polygons is not None:
            lcz = codes_to_onehot(self._lcz_polygons.codes(window_transform, p, p))
        else:
            lcz = np.zeros((p, p, NUM_CLASSES), dtype=np.float32)
        return (np.ascontiguousarray(image, dtype=np.float32), hse[..., None].astype(np.float32), lcz, nodata)

    # --- splitting and description ---

    def split(self, val_fraction: float, seed: int) -> tuple["SceneDataset", "SceneDataset"]:
        """(train, val) by area: whole blocks of 2 x patch_size px, a seeded random round(fraction x n) of
        them to validation. Training windows stay inside training blocks; validation tiles its blocks."""
        block = 2 * self.patch_size
        n_val = check_val_fraction(
            val_fraction, len(self.blocks), f"block(s) of {block} x {block} px (2 x patch_size)",
            f"The scene {self.spec.source}", hint="or a smaller patch_size")
        order = np.random.default_rng(seed).permutation(len(self.blocks))
        val_ids = set(int(i) for i in order[:n_val])
        train = [b for i, b in enumerate(self.blocks) if i not in val_ids]
        val = [b for i, b in enumerate(self.blocks) if i in val_ids]
        info = {"by": "area", "block_size": block, "val_fraction": float(val_fraction), "seed": int(seed)}
        return self._derive(train, "train", info), self._derive(val, "val", info)

    def _derive(self, blocks: list[Block], subset: str, info: dict[str, Any]) -> "SceneDataset":
        part = copy.copy(self)
        part._lock = threading.Lock()
        part._stack, part._scene = None, None
        part.spec = replace(self.spec)
        part.blocks = list(blocks)
        part._centres = None
        part._rare = None
        part.epoch_windows = None
        part.subset = subset if self.subset is None else f"{self.subset}/{subset}"
        part.split_info = info
        part._open_references(check=False)
        return part

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        scene = self._image()
        references: dict[str, Any] = {}
        if spec.hse is not None:
            references["hse"] = {"path": str(spec.hse), "scale": spec.hse_scale, "band": spec.hse_band,
                                 "nodata": sorted(set(spec.hse_nodata)), "resampling": "average, 20 m"}
        if spec.lcz is not None:
            references["lcz"] = {"path": str(spec.lcz), "kind": spec.lcz_kind,
                                 "resampling": ("nearest" if spec.lcz_kind == "codes" else spec.lcz_resampling)
                                 + ", 10 m"}
        if spec.lcz_polygons is not None:
            references["lcz"] = {"polygons": str(spec.lcz_polygons), "attribute": spec.lcz_attribute,
                                 "layer": self._lcz_polygons.layer if self._lcz_polygons else spec.lcz_layer,
                                 "resampling": "rasterised at 10 m (pixel centres)"}
        res_x, res_y = abs(self.transform.a), abs(self.transform.e)
        return {
            "name": self.name,
            "format": self.format,
            "path": self.path,
            "image": str(spec.image),
            "patch_size": self.patch_size,
            "tasks": self.tasks(),
            "unit": "block",
            "block_size": 2 * self.patch_size,
            "blocks": len(self.blocks),
            "image_size_px": [int(self.height), int(self.width)],
            "crs": self.crs.to_string() if self.crs else None,
            "area_km2": round(self.area_px() * res_x * res_y / 1e6, 4),
            "tiles": self.num_eval_samples(),
            "samples_per_epoch": len(self),
            "bands": {"model_bands": list(MODEL_BANDS), "band_indices": [int(i) - 1 for i in scene.indexes],
                      "bands": spec.bands, "layout": spec.layout,
                      "scaling": f"(DN + {_offsets_text(scene.offsets)}) / {scene.scale:g}",
                      "reader": self.reader_notes},
            "references": references,
            "subset": self.subset,
            "split": self.split_info,
        }


def _offsets_text(offsets: np.ndarray) -> str:
    return f"{offsets[0]:g}" if np.all(offsets == offsets[0]) else "[" + ", ".join(f"{v:g}" for v in offsets) + "]"
