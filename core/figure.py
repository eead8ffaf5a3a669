"""The demo figure: true colour, HSE density with a colour bar and LCZ with its legend, side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lcz import COLORS, NUM_CLASSES, hex_to_rgb, label


def _true_colour(band_dir: Path, shape: tuple[int, int]) -> np.ndarray:
    """RGB (B4, B3, B2) stretched for display, resampled to `shape` (rows, cols)."""
    import rasterio
    from rasterio.enums import Resampling

    channels = []
    for band in ("B04", "B03", "B02"):
        path = next(Path(band_dir).glob(f"*_{band}.jp2"))
        with rasterio.open(path) as src:
            channels.append(src.read(1, out_shape=shape, resampling=Resampling.average).astype(np.float32))
    rgb = np.dstack(channels) / 10000.0
    # Per channel: top-of-atmosphere blue is brighter than red (haze), and one stretch for all three channels
    # would tint the picture blue. A mild gamma lifts the dark fields and forests.
    lo = np.percentile(rgb, 2, axis=(0, 1))
    hi = np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / (hi - lo), 0, 1) ** 0.8


def demo_figure(band_dir: Path, hse_path: Path, lcz_path: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    with rasterio.open(hse_path) as src:
        hse = src.read(1, masked=True)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    with rasterio.open(lcz_path) as src:
        lcz = src.read(1)
        lcz_extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    rgb = _true_colour(band_dir, (hse.shape[0] * 2, hse.shape[1] * 2))

    colours = [(1, 1, 1, 0)] + [tuple(c / 255 for c in hex_to_rgb(h)) + (1,) for h in COLORS]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), constrained_layout=True)
    axes[0].imshow(rgb, extent=extent)
    axes[0].set_title("Sentinel-2 true colour (B4, B3, B2)")
    im = axes[1].imshow(hse, cmap="magma_r", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    axes[1].set_title("HSE density (20 m)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, shrink=0.6, label="built-up fraction")
    axes[2].imshow(lcz, cmap=ListedColormap(colours), vmin=0, vmax=NUM_CLASSES, extent=lcz_extent,
                   interpolation="nearest")
    axes[2].set_title("Local Climate Zones (100 m)")
    present = [c for c in range(1, NUM_CLASSES + 1) if np.any(lcz == c)]
    axes[2].legend(handles=[Patch(color=colours[c], label=label(c)) for c in present], loc="center left",
                   bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return png
