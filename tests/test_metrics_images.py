"""hwlib.metrics.images: reconstruction MSE/SSIM and class-wise brightness."""
import numpy as np
import torch

from hwlib import metrics


def test_reconstruction_scores_of_identical_and_shifted_images():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    mse, ssim = metrics.reconstruction_scores(x, x)
    assert mse.shape == ssim.shape == (4,) and np.allclose(mse, 0) and np.allclose(ssim, 1)
    mse, ssim = metrics.reconstruction_scores(x, (x + 0.2).clamp(-1, 1))
    assert (mse > 0).all() and (ssim < 1).all()


def test_brightness_error_is_zero_on_the_reference_and_sees_a_shift():
    x, y = torch.rand(50, 1, 8, 8) * 2 - 1, torch.arange(50) % 10
    ref = metrics.class_brightness(x, y)
    assert ref.shape == (10,) and metrics.brightness_error(x, y, ref) == 0.0
    assert abs(metrics.brightness_error((x + 0.2).clamp(-1, 1), y, ref) - 0.1) < 0.02  # +0.2 in [-1, 1] = +0.1 in [0, 1]
