"""The demo figure: true colour, HSE density with a colour bar and LCZ with its legend, side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.common.lcz import COLORS, NUM_CLASSES, hex_to_rgb, label


def _true_colour(source: Path, shape: tuple[int, int]) -> np.ndarray:
    """RGB (B4, B3, B2) stretched for display, resampled to `shape` (rows, cols). `source` is a folder of band
    files (*_B04.jp2 ...) or one raster whose band descriptions name the bands."""
    import rasterio
    from rasterio.enums import Resampling

    channels = []
    source = Path(source)
    if source.is_dir():
        for band in ("B04", "B03", "B02"):
            path = next(source.glob(f"*_{band}.jp2"))
            with rasterio.open(path) as src:
                channels.append(src.read(1, out_shape=shape, resampling=Resampling.average).astype(np.float32))
    else:
        with rasterio.open(source) as src:
            names = [d or "" for d in src.descriptions]
            for band in ("B4", "B3", "B2"):
                index = names.index(band) + 1
                channels.append(src.read(index, out_shape=shape, resampling=Resampling.average).astype(np.float32))
    rgb = np.dstack(channels) / 10000.0
    # Per channel: top-of-atmosphere blue is brighter than red (haze), and one stretch for all three channels
    # would tint the picture blue. A mild gamma lifts the dark fields and forests.
    lo = np.percentile(rgb, 2, axis=(0, 1))
    hi = np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / (hi - lo), 0, 1) ** 0.8


def _lcz_panel(ax, lcz: np.ndarray, extent, title: str, legend: bool = True) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = [(1, 1, 1, 0)] + [tuple(c / 255 for c in hex_to_rgb(h)) + (1,) for h in COLORS]
    ax.imshow(lcz, cmap=ListedColormap(colours), vmin=0, vmax=NUM_CLASSES, extent=extent, interpolation="nearest")
    ax.set_title(title)
    if legend:
        present = [c for c in range(1, NUM_CLASSES + 1) if np.any(lcz == c)]
        ax.legend(handles=[Patch(color=colours[c], label=label(c)) for c in present], loc="center left",
                  bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)


def _save(fig, axes, png: Path) -> Path:
    """Axes without ticks, the figure written to `png` and closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return png


def teacher_figure(rgb_source: Path, teacher: np.ndarray, lcz_path: Path, png: Path, title: str) -> Path:
    """Image, teacher LCZ and our LCZ (both per 100 m cell) side by side, one legend for both maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(lcz_path) as src:
        lcz = src.read(1)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    rgb = _true_colour(rgb_source, (lcz.shape[0] * 10, lcz.shape[1] * 10))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), constrained_layout=True)
    axes[0].imshow(rgb, extent=extent)
    axes[0].set_title(f"{title}: Sentinel-2 true colour")
    _lcz_panel(axes[1], teacher, extent, "Teacher (So2Sat ResNet20), 100 m", legend=False)
    _lcz_panel(axes[2], lcz, extent, "urbanmtl (this model), 100 m", legend=False)
    from matplotlib.patches import Patch

    colours = [(1, 1, 1, 0)] + [tuple(c / 255 for c in hex_to_rgb(h)) + (1,) for h in COLORS]
    present = sorted((set(np.unique(lcz).tolist()) | set(np.unique(teacher).tolist())) - {0})
    axes[2].legend(handles=[Patch(color=colours[c], label=label(c)) for c in present], loc="center left",
                   bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _save(fig, axes, png)


def demo_figure(rgb_source: Path, hse_path: Path, lcz_path: Path, png: Path, title: str = "") -> Path:
    """True colour, HSE density with a colour bar and LCZ with its legend, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(hse_path) as src:
        hse = src.read(1, masked=True)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    with rasterio.open(lcz_path) as src:
        lcz = src.read(1)
        lcz_extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    rgb = _true_colour(rgb_source, (hse.shape[0] * 2, hse.shape[1] * 2))

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6), constrained_layout=True)
    axes[0].imshow(rgb, extent=extent)
    axes[0].set_title(f"{title + ': ' if title else ''}Sentinel-2 true colour (B4, B3, B2)")
    im = axes[1].imshow(hse, cmap="magma_r", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    axes[1].set_title("HSE density (20 m)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, shrink=0.6, label="built-up fraction")
    _lcz_panel(axes[2], lcz, lcz_extent, "Local Climate Zones (100 m)")
    return _save(fig, axes, png)
