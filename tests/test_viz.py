"""hwlib.viz: grids, GIFs, the running mean of loss curves and the GAN training figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch

from hwlib import viz
from hwlib.train import History


def test_smooth_is_a_trailing_mean_that_skips_nans() -> None:
    out = viz.smooth(np.array([1.0, 3.0, np.nan, 5.0]), window=2)
    assert np.allclose(out, [1.0, 2.0, 3.0, 5.0])


def test_grid_maps_minus_one_to_black_and_one_to_white(tmp_path) -> None:
    images = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), 1.0)])
    grid = viz.make_grid(images, nrow=2, padding=1, pad_value=0.5)
    assert grid.shape == (6, 11, 3) and grid.dtype == np.uint8
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[1, 6].tolist() == [255, 255, 255]
    path = viz.save_grid(images, tmp_path / "g.png", nrow=2, scale=2)
    import imageio.v3 as iio
    assert iio.imread(path).shape == (2 * 8, 2 * 14, 3)  # default padding 2, every pixel repeated twice


def test_gif_holds_the_last_frame(tmp_path) -> None:
    frames = [np.full((4, 4, 3), v, dtype=np.uint8) for v in (0, 255)]
    path = viz.make_gif(frames, tmp_path / "a.gif", fps=4.0, hold_last=3)
    from PIL import Image
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [250, 1000] and viz.make_gif([], tmp_path / "none.gif") is None


def test_gif_thins_long_runs_to_max_frames_keeping_first_and_last(tmp_path) -> None:
    frames = [np.full((4, 4, 3), v, dtype=np.uint8) for v in range(64)]
    path = viz.make_gif(frames, tmp_path / "long.gif", max_frames=16)
    from PIL import Image
    with Image.open(path) as im:
        values = []
        for i in range(im.n_frames):
            im.seek(i)
            values.append(int(np.asarray(im.convert("L"))[0, 0]))
    assert len(values) == 16 and values[0] == 0 and values[-1] == 63 and values == sorted(values)


def test_gan_history_figure_has_a_row_per_run() -> None:
    hist = History()
    for step in range(40):
        hist.append({"step": step, "loss_d": 1.0, "loss_g": 0.7, "d_real": 0.6, "d_fake": 0.4})
    fig = viz.plot_gan_history({"a": hist, "b": hist}, title="GAN", equilibrium=True)
    axes = fig.get_axes()
    assert len(axes) == 4 and axes[0].get_title() == "GAN losses per step (a)"
    assert axes[3].get_title() == "GAN D outputs (sigmoid) per step (b)"
    assert len(axes[1].lines) == 2 * 2 + 1  # raw and smoothed per key, and the D = 1/2 line


def test_show_matrix_writes_each_finite_value_in_its_cell() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    values = np.array([[0.25, np.nan], [1.0, 0.0]])
    image = viz.show_matrix(values, ["a", "b"], ["x", "y"], ax=ax, digits=2)
    assert sorted(t.get_text() for t in ax.texts) == ["0.00", "0.25", "1.00"]  # NaN left blank
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"] and image.get_clim() == (0.0, 1.0)
    plt.close(fig)
