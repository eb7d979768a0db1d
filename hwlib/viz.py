"""Plotting and image output: sample grids (PNG), GIFs, loss curves.

Images everywhere in hwlib are tensors (B, C, H, W) in [-1, 1]; these helpers map them to [0, 1].
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, float32 on the CPU."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def make_grid(images: torch.Tensor, nrow: int = 10, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (B, C, H, W) in [-1, 1] into one uint8 array (H', W', 3), ``nrow`` images per row."""
    from torchvision.utils import make_grid as tv_grid

    grid = tv_grid(to_unit(images), nrow=nrow, padding=padding, pad_value=pad_value)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 10, scale: int = 1) -> Path:
    """Save a grid of images (B, C, H, W) in [-1, 1] as PNG; ``scale`` enlarges by pixel repetition."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow=nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    iio.imwrite(path, grid)
    return path


def make_gif(frames: Sequence[str | os.PathLike | np.ndarray], path: str | os.PathLike, fps: float = 4.0,
             hold_last: int = 4, max_frames: int = 20) -> Path | None:
    """Assemble PNG files (or uint8 arrays) into a looping GIF; the last frame shows ``1 + hold_last`` times as long.

    More than ``max_frames`` frames are thinned to ``max_frames`` evenly spaced ones, first and last kept (a 64-epoch
    run's GIF would otherwise weigh four times a 16-epoch one's). Each frame gets its own 256-colour median-cut palette
    (Pillow's GIF default), computed two frames at a time: the quantiser releases the GIL, and it was 95 % of the time
    (0.23 s a frame for notebook 01's 2,582 x 260 px Stage-II grid)."""
    from concurrent.futures import ThreadPoolExecutor

    import imageio.v2 as imageio
    from PIL import Image

    if not frames:
        return None
    if len(frames) > max_frames:
        frames = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))]

    def quantise(frame: str | os.PathLike | np.ndarray) -> Image.Image:
        rgb = Image.fromarray(frame if isinstance(frame, np.ndarray) else imageio.imread(frame)).convert("RGB")
        return rgb.quantize(256, method=Image.Quantize.MEDIANCUT)

    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(quantise, frames))
    durations = [1000.0 / fps] * (len(images) - 1) + [1000.0 / fps * (1 + hold_last)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=durations if len(images) > 1 else durations[0])  # one frame needs a scalar
    return path


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that ignores NaNs (same length as ``values``)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    csum = np.cumsum(np.where(ok, values, 0.0))
    ccnt = np.cumsum(ok)
    lo = np.arange(len(values)) - window
    prev_sum = np.where(lo >= 0, csum[np.clip(lo, 0, None)], 0.0)
    prev_cnt = np.where(lo >= 0, ccnt[np.clip(lo, 0, None)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (csum - prev_sum) / (ccnt - prev_cnt)


def plot_losses(history, keys: Sequence[str] | None = None, window: int = 50, ax=None, title: str = "",
                x: str = "step"):
    """Plot per-step losses of a :class:`~hwlib.train.History`: raw (faint) and smoothed (solid)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    keys = keys or [k for k in history.keys() if k not in ("step", "epoch")]
    steps = history[x]
    for i, key in enumerate(keys):
        color = f"C{i}"
        values = history[key]
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.7)
        ax.plot(steps, smooth(values, window), color=color, linewidth=1.6, label=f"{key} (mean of {window})")
    ax.set_xlabel(x)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_gan_history(histories: dict, d_keys: Sequence[str] = ("d_real", "d_fake"), window: int | None = None,
                     title: str = "", equilibrium: bool = False):
    """GAN training curves, one row per run of ``histories`` ({name: History}): the losses ``loss_d`` and ``loss_g``
    (left) and D's mean outputs as probabilities, ``d_keys`` (right). ``window``: the running mean's length
    (default a twentieth of the run). ``equilibrium``: dashed lines at the values of the ideal equilibrium
    D = 1/2 (L_D = 2 log 2, L_G = log 2). Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(histories), 2, figsize=(13, 3.4 * len(histories)), squeeze=False)
    for row, (name, hist) in zip(axes, histories.items()):
        w = window or max(1, len(hist) // 20)
        plot_losses(hist, ["loss_d", "loss_g"], window=w, ax=row[0], title=f"{title} losses per step ({name})".strip())
        plot_losses(hist, list(d_keys), window=w, ax=row[1], title=f"{title} D outputs (sigmoid) per step ({name})".strip())
        row[1].set_ylabel("mean D(x)")
        if equilibrium:
            row[0].axhline(2 * np.log(2), color="C0", ls="--", lw=0.8)
            row[0].axhline(np.log(2), color="C1", ls="--", lw=0.8)
            row[1].axhline(0.5, color="gray", ls="--", lw=0.8)
    fig.tight_layout()
    return fig


def show_images(images: torch.Tensor, nrow: int = 10, title: str = "", ax=None, figsize=None):
    """Show a grid of images (B, C, H, W) in [-1, 1] with matplotlib."""
    import matplotlib.pyplot as plt

    grid = make_grid(images, nrow=nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (grid.shape[1] / 60, grid.shape[0] / 60))
    ax.imshow(grid, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return ax


def show_matrix(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], ax=None, title: str = "",
                xlabel: str = "", ylabel: str = "", vmin: float = 0.0, vmax: float = 1.0, digits: int = 1):
    """Show a (R, C) matrix as a heat map with each value written in its cell (``digits`` decimals; NaN left
    blank), rows labelled ``rows`` and columns ``cols``. Returns the image (for a colour bar)."""
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * len(cols) + 1.5, 0.45 * len(rows) + 1.2))
    image = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=60, fontsize=8)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=6,
                    color="black" if v > vmin + 0.6 * (vmax - vmin) else "white")
    return image


def savefig(fig, notebook: str, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``figures/<notebook>/<name>.png``."""
    from hwlib.paths import figures_dir

    path = figures_dir(notebook) / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
