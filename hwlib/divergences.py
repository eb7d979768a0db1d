"""Divergences between distributions with (almost) disjoint supports, and the optimal discriminator.

The course's example (notebook 04, question 2) lives in the plane:
``P = delta_0(x) x U(0,1)(y)`` and ``Q_theta = delta_theta(x) x U(0,1)(y)``. Their supports are two
parallel segments, so densities do not exist and KL / JSD have to be taken as limits. Here every
quantity is computed numerically, never from its closed form:

- :func:`smoothed_divergences`: replace each ``delta`` by ``N(., sigma^2)``; the shared ``U(0,1)``
  factor in ``y`` cancels in every density ratio, so KL and JSD reduce to 1-D integrals over ``x``,
  done with Gauss-Hermite quadrature. As ``sigma -> 0``: KL -> inf, JSD -> log 2 for every theta != 0.
- :func:`empirical_w1`: Wasserstein-1 between two equal-size 2-D samples by exact optimal assignment.
- :func:`uniform_shift_jsd`: JSD between ``U(0,1)`` and ``U(theta, theta+1)`` by midpoint integration
  (question 2b: a JSD that is continuous but not differentiable in its parameter).

For question 3: :func:`train_discriminator` fits a small MLP discriminator with the GAN loss of
:mod:`hwlib.gan` on two 1-D samplers; its logit ``h(x)`` estimates ``log p_data(x) / p_model(x)``,
which :func:`gaussian_log_ratio` gives exactly for two Gaussians.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hwlib.gan import d_loss

LOG2 = math.log(2.0)


def _log_normal(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


@functools.lru_cache(maxsize=8)
def _hermite_nodes(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.hermite_e.hermegauss(nodes)


def _gauss_expect(fn: Callable[[np.ndarray], np.ndarray], mean: float, std: float, nodes: int = 200) -> float:
    """``E_{x ~ N(mean, std^2)}[fn(x)]`` by Gauss-Hermite quadrature (probabilists' weights)."""
    t, w = _hermite_nodes(nodes)
    return float(np.sum(w * fn(mean + std * t)) / math.sqrt(2 * math.pi))


def smoothed_divergences(theta: float, sigma: float, nodes: int = 200) -> dict[str, float]:
    """KL(P||Q), KL(Q||P) and JSD(P, Q) for the example with each delta widened to ``N(., sigma^2)``.

    ``p(x, y) = N(x; 0, s^2) 1[0<=y<=1]``, ``q(x, y) = N(x; theta, s^2) 1[0<=y<=1]``: the y factor is the
    same, so ``p/q`` depends on x only and each divergence is an expectation over x, integrated numerically.
    Returns floats in nats; ``jsd`` is in [0, log 2].
    """
    lp = lambda x: _log_normal(x, 0.0, sigma)  # noqa: E731 - two one-line densities
    lq = lambda x: _log_normal(x, theta, sigma)  # noqa: E731
    lm = lambda x: np.logaddexp(lp(x), lq(x)) - LOG2  # noqa: E731 - log of the mixture (p + q) / 2
    kl_pq = _gauss_expect(lambda x: lp(x) - lq(x), 0.0, sigma, nodes)
    kl_qp = _gauss_expect(lambda x: lq(x) - lp(x), theta, sigma, nodes)
    jsd = 0.5 * _gauss_expect(lambda x: lp(x) - lm(x), 0.0, sigma, nodes) \
        + 0.5 * _gauss_expect(lambda x: lq(x) - lm(x), theta, sigma, nodes)
    return {"kl_pq": kl_pq, "kl_qp": kl_qp, "jsd": jsd}


def sample_pq(theta: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (n, 2) from P (x = 0) and ``n`` from Q_theta (x = theta), y ~ U(0, 1) independently."""
    p = np.stack([np.zeros(n), rng.uniform(0, 1, n)], axis=1)
    q = np.stack([np.full(n, float(theta)), rng.uniform(0, 1, n)], axis=1)
    return p, q


def empirical_w1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 between the empirical measures of ``a`` (n, d) and ``b`` (n, d), Euclidean cost.

    Between two uniform measures on n points each, an optimal coupling is a permutation (Birkhoff),
    found exactly by the Hungarian algorithm; W1 is then the mean matched distance.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if a.shape != b.shape:
        raise ValueError(f"need equal-size samples, got {a.shape} and {b.shape}")
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def uniform_shift_jsd(theta: float, cells: int = 200_000) -> float:
    """JSD(U(0,1), U(theta, theta+1)) in nats, by the midpoint rule over the union of the supports.

    The closed form is ``min(|theta|, 1) log 2``: continuous in theta, with kinks at 0 and +-1
    and a zero gradient for |theta| > 1.
    """
    lo, hi = min(0.0, theta), max(1.0, theta + 1.0)
    dx = (hi - lo) / cells
    x = lo + dx * (np.arange(cells) + 0.5)
    p = ((x >= 0) & (x < 1)).astype(np.float64)
    q = ((x >= theta) & (x < theta + 1)).astype(np.float64)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log(p / m), 0.0).sum() * dx
        kl_qm = np.where(q > 0, q * np.log(q / m), 0.0).sum() * dx
    return float(0.5 * kl_pm + 0.5 * kl_qm)


# ----------------------------------------------------------------------------- optimal discriminator


def gaussian_log_ratio(x: torch.Tensor | np.ndarray, data: tuple[float, float], model: tuple[float, float]):
    """``log N(x; data) - log N(x; model)`` for ``(mean, std)`` pairs: what the optimal logit h* equals."""
    x = np.asarray(x, dtype=np.float64)
    return _log_normal(x, *data) - _log_normal(x, *model)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each coordinate, in closed form: (B, D) -> (B, D), in float32.

    The VAE's latent term sums it over D (:func:`hwlib.models.vae.kl_standard_normal`); StackGAN's conditioning
    augmentation averages it over B and D (:func:`hwlib.models.stackgan.kl_loss`)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(a: tuple[float, float], b: tuple[float, float]) -> float:
    """KL(N(a) || N(b)) for ``(mean, std)`` pairs, in nats."""
    (m1, s1), (m2, s2) = a, b
    return math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5


def train_discriminator(sample_data: Callable[[int], torch.Tensor], sample_model: Callable[[int], torch.Tensor],
                        steps: int = 2000, batch_size: int = 512, hidden: int = 64, lr: float = 2e-3,
                        seed: int = 0) -> nn.Module:
    """Fit ``D = sigmoid(h)`` (an MLP 1 -> hidden -> hidden -> 1 returning the logit h) by the GAN loss.

    ``sample_data(n)`` / ``sample_model(n)`` return (n, 1) float tensors. With the model side frozen,
    the loss ``-E_data[log D] - E_model[log(1 - D)]`` is minimised by ``D* = p_data / (p_data + p_model)``,
    i.e. ``h* = log p_data / p_model``. Returns the trained MLP in eval mode (input (n, 1) -> logit (n, 1)).
    """
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = d_loss(net(sample_data(batch_size)), net(sample_model(batch_size)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()
