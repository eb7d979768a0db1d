"""One call for the notebooks: FID, precision/recall, conditional accuracy and sampling speed of a generator."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.metrics.features import feature_net, map_batches
from hwlib.metrics.frechet import frechet_distance
from hwlib.metrics.inception import inception_score
from hwlib.metrics.mnist_net import class_accuracy, mnist_classifier
from hwlib.metrics.prdc import precision_recall
from hwlib.metrics.reference import reference_stats
from hwlib.metrics.stats import FeatureStats
from hwlib.train import timer

Sampler = Callable[[int], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def fid_from_features(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D) (streamed float64 statistics, then Fréchet)."""
    a, b = FeatureStats.from_features(feats_a), FeatureStats.from_features(feats_b)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


class ClassSpread:
    """Streaming within-class spread: the per-pixel standard deviation of the images of each class, averaged
    over pixels, then over the classes seen. Real MNIST test digits score 0.31 (pixels in [-1, 1]); a generator
    that ignores its noise and draws one image per class scores 0 (mode collapse within a class, which
    precision/recall only hint at and conditional accuracy cannot see)."""

    def __init__(self, num_classes: int = 10) -> None:
        self.num_classes = num_classes
        self.n = self.s = self.s2 = None

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """images (B, C, H, W), labels (B,) int64 in [0, num_classes)."""
        x = images.detach().flatten(1).double().cpu()
        onehot = F.one_hot(torch.as_tensor(labels).cpu().long(), self.num_classes).double()  # (B, K)
        n, s, s2 = onehot.sum(0), onehot.T @ x, onehot.T @ x.square()
        if self.n is None:
            self.n, self.s, self.s2 = n, s, s2
        else:
            self.n, self.s, self.s2 = self.n + n, self.s + s, self.s2 + s2

    def value(self) -> float:
        seen = self.n > 1
        n = self.n[seen, None]
        var = ((self.s2[seen] - self.s[seen].square() / n) / (n - 1)).clamp_min(0)  # unbiased, per class and pixel
        return float(var.sqrt().mean(1).mean())


def is_splits(n: int) -> int:
    """Splits for an Inception Score of ``n`` samples: 10 as the standard, but never under 1,000 samples per split
    (with fewer, p(y) per split is noisy and the score drops: real digits give 8.3 over 10 splits of 30)."""
    return max(1, min(10, n // 1000))


def is_mnist(images: torch.Tensor, batch_size: int = 500, device: torch.device | str | None = None) -> float:
    """"IS-MNIST": the Inception Score (Salimans et al. 2016) with the shipped MNIST classifier in place of
    Inception-v3, exp(E_x KL(p(y|x) || p(y))) over 10 classes, for digits (N, 1, 28, 28) in [-1, 1].

    It rewards confident (recognisable) and class-balanced samples, at most 10 (the number of classes); real test
    digits are its ceiling here. Like IS it ignores diversity within a class and never looks at real data."""
    clf = mnist_classifier(device)
    probs = map_batches(clf, images, batch_size, lambda b: clf(b).float().softmax(1))
    return inception_score(probs, splits=is_splits(len(probs)))[0]


def within_class_spread(images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> float:
    """:class:`ClassSpread` of one batch: images (N, C, H, W), labels (N,) -> mean within-class pixel std."""
    spread = ClassSpread(num_classes)
    spread.update(images, labels)
    return spread.value()


def evaluate(sampler: Sampler, real: str | torch.Tensor = "mnist-test", n: int = 10_000,
             features: str | nn.Module = "mnist", batch_size: int = 500, device: torch.device | str | None = None,
             k: int = 3, seed: int | None = 0) -> dict[str, Any]:
    """Score a generator against real data.

    Args:
        sampler: ``sampler(m)`` -> images (m, C, H, W) in [-1, 1], or ``(images, labels)`` with labels
            (m,) the classes the images were generated for. Called with ``batch_size`` (the last call
            with the remainder) until ``n`` images are drawn, under ``torch.no_grad()``.
        real: ``"mnist-test"``, ``"mnist-train"`` (first ``n`` images; statistics cached) or images.
        features: ``"mnist"`` (FID-MNIST, 128-d), ``"inception"`` (2048-d) or a feature module.
        seed: seeds torch's RNG for the sampling (the caller's RNG state is left untouched); None: no seeding.

    Returns:
        ``{"fid", "precision", "recall", "samples_per_s", "n", "features"}`` and, when the sampler
        returns labels, ``"accuracy"`` (conditional accuracy under the MNIST classifier) and
        ``"per_class_accuracy"`` (np.ndarray (10,), NaN for a label never drawn) and ``"spread"``
        (:class:`ClassSpread`, diversity within a class); for MNIST-shaped images (1, 28, 28) also
        ``"is_mnist"`` (:func:`is_mnist`: the Inception Score with the MNIST classifier); these are left out
        for other images.
    """
    net = feature_net(features, device)
    dev = next(net.parameters()).device
    ref = reference_stats(real, n, net, batch_size)
    stats, feats, preds, targets, spread, probs = FeatureStats(), [], [], [], ClassSpread(), []
    sample_time, drawn = 0.0, 0
    fork_devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=fork_devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        while drawn < n:
            m = min(batch_size, n - drawn)
            with timer() as t, torch.no_grad():  # synchronises CUDA around the sampler call
                out = sampler(m)
            sample_time += t["seconds"]
            images, labels = out if isinstance(out, (tuple, list)) else (out, None)
            if images.shape[0] != m:
                raise ValueError(f"sampler({m}) returned {images.shape[0]} images")
            with torch.inference_mode():
                x = images.detach().to(dev, torch.float32).clamp(-1, 1)
                f = net.features(x).float()
                stats.update(f)
                feats.append(f.cpu())
                if tuple(x.shape[1:]) == (1, 28, 28):  # digits: classify them
                    clf = mnist_classifier(dev)  # cached; building it leaves the RNG as it was
                    logits = clf.head(f) if net is clf else clf(x)  # FID-MNIST features are its penultimate layer
                    probs.append(logits.float().softmax(1).cpu())
                    if labels is not None:
                        preds.append(logits.argmax(1).cpu())
                        targets.append(torch.as_tensor(labels).detach().cpu().long())
                        spread.update(x, targets[-1])
            drawn += m
    fake = torch.cat(feats)
    precision, recall = precision_recall(ref["feats"], fake, k=k)
    result: dict[str, Any] = {
        "fid": frechet_distance(ref["mu"], ref["sigma"], stats.mean, stats.cov),
        "precision": precision,
        "recall": recall,
        "samples_per_s": n / sample_time if sample_time > 0 else float("inf"),
        "n": n,
        "features": getattr(net, "tag", type(net).__name__),
    }
    if probs:
        result["is_mnist"] = inception_score(torch.cat(probs), splits=is_splits(n))[0]
    if preds:
        pred, target = torch.cat(preds), torch.cat(targets)
        result["accuracy"] = float((pred == target).float().mean())
        result["per_class_accuracy"] = class_accuracy(pred, target)
        result["spread"] = spread.value()
    return result
