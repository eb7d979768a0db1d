"""One call for the notebooks: FID, precision/recall, conditional accuracy and sampling speed of a generator."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hwlib.metrics.features import feature_net
from hwlib.metrics.frechet import frechet_distance
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
        ``"per_class_accuracy"`` (np.ndarray (10,), NaN for a label never drawn); accuracy needs
        MNIST-shaped images (1, 28, 28) and is left out otherwise.
    """
    net = feature_net(features, device)
    dev = next(net.parameters()).device
    ref = reference_stats(real, n, net, batch_size)
    stats, feats, preds, targets = FeatureStats(), [], [], []
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
                if labels is not None and tuple(x.shape[1:]) == (1, 28, 28):  # digits: classify them
                    clf = mnist_classifier(dev)
                    logits = clf.head(f) if net is clf else clf(x)  # FID-MNIST features are its penultimate layer
                    preds.append(logits.argmax(1).cpu())
                    targets.append(torch.as_tensor(labels).detach().cpu().long())
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
    if preds:
        pred, target = torch.cat(preds), torch.cat(targets)
        result["accuracy"] = float((pred == target).float().mean())
        result["per_class_accuracy"] = class_accuracy(pred, target)
    return result
