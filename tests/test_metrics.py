"""hwlib.metrics: Fréchet distance vs scipy, streaming statistics, caching, precision/recall, IS, evaluate."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from hwlib.files import array_digest, write_arrays
from hwlib.metrics import (FeatureStats, evaluate, fid_from_features, frechet_distance, inception_score,
                           precision_recall)
from hwlib.metrics import reference as reference_module


def random_spd(d: int, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Sample covariance of n (default 2d) correlated Gaussian samples in d dimensions."""
    n = n or 2 * d
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n, d)) @ mix + 0.1 * rng.standard_normal((n, d))
    return np.cov(x, rowvar=False)


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's computation: a general matrix square root of S1 S2 (real part)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("d", [2, 16, 128, 256])
def test_frechet_matches_scipy(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    ours, ref = frechet_distance(mu1, s1, mu2, s2), scipy_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)


def householder_(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """H m H (matrix) or H m (vector) for the reflection H = I - 2 v v^T, |v| = 1, in O(d^2)."""
    if m.ndim == 1:
        return m - 2 * v * (v @ m)
    m = m - 2 * np.outer(v, v @ m)
    return m - 2 * np.outer(m @ v, v)


@pytest.mark.slow
def test_frechet_matches_scipy_2048():
    """The FID size, 2048-d, against scipy. A full 2048-d sqrtm takes minutes on 2 busy cores (its
    timing and agreement are in benchmarks/bench_fid.py), so the pair is block-diagonal (8 random SPD
    blocks, scipy's sqrtm per block) seen in a random orthogonal basis (3 Householder reflections):
    dense for frechet_distance, while tr sqrt(S1 S2) and |mu1 - mu2| are unchanged."""
    rng = np.random.default_rng(2048)
    d, block = 2048, 256
    b1 = [random_spd(block, rng) for _ in range(d // block)]
    b2 = [random_spd(block, rng) for _ in range(d // block)]
    mu1, mu2 = rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr_sqrt = sum(np.trace(scipy.linalg.sqrtm(a @ b, disp=False)[0].real) for a, b in zip(b1, b2))
    s1, s2 = scipy.linalg.block_diag(*b1), scipy.linalg.block_diag(*b2)
    expected = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    for _ in range(3):
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        s1, s2, mu1, mu2 = (householder_(m, v) for m in (s1, s2, mu1, mu2))
    assert np.abs(s1[:block, block:]).max() > 1e-3  # no longer block-diagonal
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_commuting_pair_closed_form():
    """S1 = Q A Q^T, S2 = Q B Q^T commute: tr sqrt(S1 S2) = sum sqrt(a_i b_i) exactly."""
    rng = np.random.default_rng(0)
    d = 300
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu = np.zeros(d)
    expected = a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("which", ["first", "second", "both"])
def test_frechet_rank_deficient(which):
    """Fewer samples than dimensions: singular covariances. Exact reference: with S_i = X_i^T X_i,
    tr sqrt(S1 S2) is the sum of the singular values of X1 X2^T (a small n x n matrix)."""
    rng = np.random.default_rng(1)
    d = 256
    n1 = 40 if which in ("first", "both") else 600
    n2 = 50 if which in ("second", "both") else 600
    x1, x2 = rng.standard_normal((n1, d)), rng.standard_normal((n2, d)) * 1.3 + 0.2
    f1 = (x1 - x1.mean(0)) / np.sqrt(n1 - 1)
    f2 = (x2 - x2.mean(0)) / np.sqrt(n2 - 1)
    s1, s2 = f1.T @ f1, f2.T @ f2
    mu1, mu2 = x1.mean(0), x2.mean(0)
    trace_sqrt = np.linalg.svd(f1 @ f2.T, compute_uv=False).sum()
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(expected, rel=1e-6)


def test_frechet_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_self_is_zero_and_order_invariant():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 64)) @ rng.standard_normal((64, 64)) + 5.0
    y = rng.standard_normal((1500, 64)) @ rng.standard_normal((64, 64))
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(fid_from_features(x, x)) < 1e-8 * scale
    # rank-deficient: rounding leaves ~eps * |S|^2 in the null space of S^2, whose square roots add ~sqrt(eps)
    assert abs(fid_from_features(x[:40], x[:40])) < 1e-6 * scale
    fid = fid_from_features(x, y)
    perm_x, perm_y = rng.permutation(len(x)), rng.permutation(len(y))
    assert fid > 1.0
    assert fid_from_features(x[perm_x], y[perm_y]) == pytest.approx(fid, rel=1e-10)
    assert fid_from_features(y, x) == pytest.approx(fid, rel=1e-8)  # symmetric


def test_streaming_stats_equal_one_shot():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1003, 32)) * rng.uniform(0.1, 10, 32) + 1e4  # large offset: no cancellation
    stats = FeatureStats()
    for start, stop in [(0, 1), (1, 300), (300, 301), (301, 1003)]:  # uneven batches, incl. single rows
        stats.update(torch.from_numpy(x[start:stop]))
    assert stats.n == 1003
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError):
        FeatureStats().cov
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 31)))


class CountingNet(nn.Module):
    """A fixed random projection of images to 16 features that counts its calls."""

    dim, tag = 16, "counting-test"

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(784, 16)
        self.calls = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.proj(x.flatten(1))


def test_reference_stats_cached(isolated_paths, monkeypatch):
    torch.manual_seed(0)
    images = torch.rand(300, 1, 28, 28) * 2 - 1
    monkeypatch.setattr(reference_module, "real_images", lambda real, n: images[:n])
    net = CountingNet()
    first = reference_module.reference_stats("mnist-test", n=300, features=net, batch_size=100)
    path = reference_module.cache_path("mnist-test", "counting-test", 300, array_digest(images.numpy()))
    assert path.is_file() and path.parent.name == "fid_stats" and path.is_relative_to(isolated_paths)
    assert net.calls == 3
    second = reference_module.reference_stats("mnist-test", n=300, features=net, batch_size=100)
    assert net.calls == 3  # read from the cache, network not run
    for key in ("mu", "sigma", "feats"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["feats"].shape == (300, 16) and first["sigma"].shape == (16, 16)
    reference_module.reference_stats("mnist-test", n=200, features=net, batch_size=100)
    assert net.calls == 5  # another image count is another key


def test_reference_stats_keyed_on_image_content(isolated_paths, monkeypatch):
    """Replaced data files (same name, same count) get new statistics, not the stale cached ones."""
    g = torch.Generator().manual_seed(0)
    old, new = (torch.rand(200, 1, 28, 28, generator=g) * 2 - 1 for _ in range(2))
    net = CountingNet()
    monkeypatch.setattr(reference_module, "real_images", lambda real, n: old[:n])
    before = reference_module.reference_stats("mnist-test", n=200, features=net, batch_size=100)
    monkeypatch.setattr(reference_module, "real_images", lambda real, n: new[:n])
    after = reference_module.reference_stats("mnist-test", n=200, features=net, batch_size=100)
    assert net.calls == 4 and not np.allclose(before["mu"], after["mu"])
    np.testing.assert_allclose(after["mu"], reference_module.compute_reference(new, net, 100)["mu"])
    monkeypatch.setattr(reference_module, "real_images", lambda real, n: old[:n])
    calls = net.calls
    again = reference_module.reference_stats("mnist-test", n=200, features=net, batch_size=100)
    assert net.calls == calls and np.array_equal(again["mu"], before["mu"])  # the old data's file is reused


def test_corrupt_reference_cache_is_recomputed_and_named(isolated_paths, monkeypatch):
    images = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    monkeypatch.setattr(reference_module, "real_images", lambda real, n: images[:n])
    net = CountingNet()
    good = reference_module.reference_stats("mnist-test", n=100, features=net, batch_size=100)
    path = reference_module.cache_path("mnist-test", net.tag, 100, array_digest(images.numpy()))
    for damage in (path.read_bytes()[:500], b"not a zip at all"):  # truncated, garbage
        path.write_bytes(damage)
        with pytest.warns(RuntimeWarning, match=f"{path.name} is unreadable.*computing it again"):
            again = reference_module.reference_stats("mnist-test", n=100, features=net, batch_size=100)
        np.testing.assert_array_equal(again["sigma"], good["sigma"])
    reference_module.reference_stats("mnist-test", n=100, features=net, batch_size=100)
    assert net.calls == 3  # the rewritten file is whole: read, not recomputed
    write_arrays(path, {"mu": np.zeros(3), "sigma": np.zeros((3, 3)), "feats": np.zeros((5, 3))})
    with pytest.warns(RuntimeWarning, match="shapes"):  # readable but not statistics of 100 images
        reference_module.reference_stats("mnist-test", n=100, features=net, batch_size=100)
    assert net.calls == 4


def test_precision_recall_hand_example():
    # real on a line at 0, 1, 2, 3 (k=1: every radius is 1); fake at 0.5 (inside), 10 (outside)
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0], [10.5]])
    p, r = precision_recall(real, fake, k=1)
    # fake radii: 0.5 -> 9.5, 10 -> 0.5, 10.5 -> 0.5; real points within 9.5 of 0.5: 0, 1, 2, 3
    assert p == pytest.approx(1 / 3)
    assert r == pytest.approx(1.0)


def test_precision_recall_extremes_and_chunking():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((700, 8))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    mode_collapse = real[real[:, 0] > 1.0]  # good samples from a small part of the data: precise, low recall
    p, r = precision_recall(real, mode_collapse, k=3)
    assert p == 1.0 and r < 0.6  # k-NN balls of the sparse fake set still reach past its half-space
    other = rng.standard_normal((500, 8))
    assert precision_recall(real, other, chunk=64) == precision_recall(real, other, chunk=10_000)


def test_inception_score_extremes():
    confident_diverse = np.eye(10)[np.tile(np.arange(10), 50)]  # every split holds each class 10 times
    mean, std = inception_score(confident_diverse, splits=5)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    assert inception_score(np.full((100, 10), 0.1), splits=10)[0] == pytest.approx(1.0)
    assert inception_score(np.eye(10)[np.zeros(100, dtype=int)], splits=10)[0] == pytest.approx(1.0)


def test_evaluate_on_given_real_images():
    torch.manual_seed(0)
    net = CountingNet()
    real = torch.rand(400, 1, 28, 28) * 2 - 1

    def sampler(m: int) -> torch.Tensor:
        return torch.rand(m, 1, 28, 28) * 2 - 1  # same distribution as `real`

    def bad_sampler(m: int) -> torch.Tensor:
        return torch.rand(m, 1, 28, 28) * 0.2 - 1  # nearly black

    rng_before = torch.get_rng_state()
    good = evaluate(sampler, real=real, n=400, features=net, batch_size=128)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded sampling leaves the caller's RNG alone
    assert evaluate(sampler, real=real, n=400, features=net, batch_size=128)["fid"] == good["fid"]
    bad = evaluate(bad_sampler, real=real, n=400, features=net, batch_size=128)
    assert set(good) >= {"fid", "precision", "recall", "samples_per_s", "n", "features"}
    assert "accuracy" not in good
    assert good["fid"] >= 0 and bad["fid"] > 3 * good["fid"]
    assert good["samples_per_s"] > 0 and good["n"] == 400
    assert 0.5 < good["precision"] <= 1 and bad["precision"] < good["precision"]


def test_within_class_spread_detects_collapse_and_streams():
    from hwlib.metrics import ClassSpread, within_class_spread

    torch.manual_seed(0)
    labels = torch.arange(300) % 3
    images = torch.rand(300, 1, 4, 4) * 2 - 1
    by_hand = torch.stack([images[labels == k].std(0).mean() for k in range(3)]).mean()
    assert within_class_spread(images, labels, num_classes=3) == pytest.approx(float(by_hand), rel=1e-6)
    streamed = ClassSpread(num_classes=3)
    for i in range(0, 300, 70):  # uneven chunks
        streamed.update(images[i:i + 70], labels[i:i + 70])
    assert streamed.value() == pytest.approx(float(by_hand), rel=1e-6)
    prototypes = torch.rand(3, 1, 4, 4)
    assert within_class_spread(prototypes[labels], labels, num_classes=3) == pytest.approx(0.0, abs=1e-7)
    # a class seen once has no spread and is left out rather than counted as 0
    assert within_class_spread(images[:4], torch.tensor([0, 0, 1, 2]), num_classes=3) == pytest.approx(
        float(images[:2].std(0).mean()), rel=1e-6)


def test_high_frequency_error_tells_the_right_detail_from_added_noise():
    from hwlib.metrics import high_frequency_error

    torch.manual_seed(0)
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    up = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(real, 4), scale_factor=4, mode="nearest")
    assert high_frequency_error(real, real) == 0.0
    half = up + 0.5 * (real - up)  # half of the missing detail, in the right place
    noisy = up + (torch.rand_like(real) * 2 - 1)  # as much detail, none of it the real bird's
    e_up, e_half, e_noisy = (high_frequency_error(x, real) for x in (up, half, noisy))
    assert e_half < 0.5 < e_up < 1.2 < e_noisy  # nearest up-sampling keeps a little of the band: its block edges


def test_high_frequency_energy_sees_detail_that_upsampling_lacks():
    from hwlib.metrics import high_frequency_energy

    g = torch.Generator().manual_seed(0)
    low = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    up = torch.nn.functional.interpolate(low, size=256, mode="bilinear", align_corners=False)
    noisy = up + 0.3 * torch.randn(up.shape, generator=g)
    e_up, e_noisy = high_frequency_energy(up), high_frequency_energy(noisy)
    assert 0 <= e_up < 0.01 < e_noisy <= 1
    flat = torch.zeros(2, 3, 32, 32)
    assert high_frequency_energy(flat) == 0.0
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1  # all energy at Nyquist
    assert high_frequency_energy(checker.expand(1, 3, 32, 32)) == pytest.approx(1.0)
