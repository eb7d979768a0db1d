"""Numerical divergences of the P/Q example and the optimal-discriminator experiment (notebook 04)."""
import math

import numpy as np
import pytest
import torch

from hwlib.divergences import (empirical_w1, gaussian_kl, gaussian_log_ratio, sample_pq, smoothed_divergences,
                               train_discriminator, uniform_shift_jsd)


def test_smoothed_kl_matches_gaussian_closed_form():
    # two Gaussians with equal width sigma: KL = theta^2 / (2 sigma^2) both ways
    out = smoothed_divergences(0.3, 0.1)
    assert out["kl_pq"] == pytest.approx(0.3 ** 2 / (2 * 0.1 ** 2), rel=1e-6)
    assert out["kl_qp"] == pytest.approx(out["kl_pq"], rel=1e-6)


@pytest.mark.parametrize("theta", [0.05, 0.3, 1.0])
def test_jsd_tends_to_log2_and_kl_blows_up_as_supports_separate(theta):
    wide, narrow = smoothed_divergences(theta, 0.1), smoothed_divergences(theta, 1e-3)
    assert narrow["jsd"] == pytest.approx(math.log(2), abs=1e-6)
    assert narrow["kl_pq"] > 1e3 and narrow["kl_pq"] > wide["kl_pq"]
    assert 0 <= wide["jsd"] <= math.log(2) + 1e-9


def test_divergences_vanish_at_theta_zero():
    out = smoothed_divergences(0.0, 1e-3)
    assert all(abs(v) < 1e-9 for v in out.values())


@pytest.mark.parametrize("theta", [0.0, 0.25, 0.8])
def test_empirical_w1_is_abs_theta(theta):
    rng = np.random.default_rng(0)
    w = empirical_w1(*sample_pq(theta, 300, rng))
    assert w >= theta - 1e-12
    assert w == pytest.approx(theta, abs=0.06)  # y-matching noise of a finite sample only adds a little


def test_empirical_w1_exact_on_a_permutation():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    assert empirical_w1(a, a[[2, 0, 1]]) == pytest.approx(0.0)
    assert empirical_w1(a, a + np.array([0.0, 2.0])) == pytest.approx(2.0)


@pytest.mark.parametrize("theta", [-2.0, -0.5, 0.0, 0.3, 1.0, 1.7])
def test_uniform_shift_jsd_closed_form(theta):
    assert uniform_shift_jsd(theta) == pytest.approx(min(abs(theta), 1.0) * math.log(2), abs=1e-4)


def test_gaussian_helpers():
    assert gaussian_kl((0.0, 1.0), (0.0, 1.0)) == 0.0
    assert gaussian_kl((1.0, 1.0), (0.0, 1.0)) == pytest.approx(0.5)
    # equal widths: the log ratio is linear, (m1 - m2) x / s^2 - (m1^2 - m2^2) / (2 s^2)
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(gaussian_log_ratio(x, (1.0, 1.0), (0.0, 1.0)), x - 0.5)


def test_trained_discriminator_logit_estimates_log_ratio():
    torch.set_num_threads(1)
    data, model = (0.0, 1.0), (1.5, 0.7)
    net = train_discriminator(lambda n: torch.randn(n, 1) * data[1] + data[0],
                              lambda n: torch.randn(n, 1) * model[1] + model[0], steps=400, batch_size=256)
    x = torch.linspace(-1.0, 2.5, 15)[:, None]  # where both densities have mass
    with torch.no_grad():
        h = net(x).squeeze(1).numpy()
    true = gaussian_log_ratio(x.squeeze(1).numpy(), data, model)
    assert np.abs(h - true).max() < 0.5
    assert np.corrcoef(h, true)[0, 1] > 0.98
