"""Pluggable feature networks for FID and precision/recall, and batched feature extraction.

- ``"mnist"``: the shipped MNIST classifier's 128-d penultimate layer ("FID-MNIST"); 28 x 28 grey.
- ``"inception"``: the FID Inception-v3 pool3, 2048-d (any size, grey or RGB); ``"inception-random"``
  is the same network with seeded random weights (tests, benchmarks).

A feature network is an ``nn.Module`` with ``features(x) -> (B, D)`` for images in [-1, 1], a ``dim``
and a ``tag`` naming it and its weights (part of the reference-statistics cache key).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from hwlib.metrics.stats import FeatureStats

FEATURE_NETS = ("mnist", "inception", "inception-random")


@functools.lru_cache(maxsize=4)
def _feature_net(name: str, device: str) -> nn.Module:
    if name == "mnist":  # each builder initialises its network under torch.random.fork_rng
        from hwlib.metrics.mnist_net import mnist_classifier

        return mnist_classifier(device)
    if name in ("inception", "inception-random"):
        from hwlib.metrics.inception import InceptionFeatures

        return InceptionFeatures("random" if name == "inception-random" else None, device=device)
    raise ValueError(f"unknown feature network {name!r}; choose one of {FEATURE_NETS}")


def feature_net(name: str | nn.Module = "mnist", device: torch.device | str | None = None) -> nn.Module:
    """The feature network ``name`` (cached per device), or ``name`` itself when it is already a module.

    Building it leaves torch's RNG state as it was (a notebook's first score must not shift its later draws)."""
    if isinstance(name, nn.Module):
        return name
    from hwlib.train import get_device

    return _feature_net(name, str(get_device(str(device) if device is not None else None)))


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.inference_mode()
def iter_features(net: nn.Module, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Features (B, D) float32 of each image batch (B, C, H, W) in [-1, 1], on the net's device."""
    dev = _device_of(net)
    for x in batches:
        yield net.features(x.to(dev, torch.float32).clamp(-1, 1)).float()


def batches_of(images: torch.Tensor, batch_size: int = 500) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``images`` (N, ...) of ``batch_size``."""
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


@torch.inference_mode()
def map_batches(net: nn.Module, images: torch.Tensor, batch_size: int = 500,
                fn: Callable[[torch.Tensor], torch.Tensor | dict[str, torch.Tensor]] | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
    """The one loop every classifier-based metric runs: ``fn`` (default: ``net`` itself) on consecutive batches of
    ``images`` (N, ...) moved to ``net``'s device as float32, outputs concatenated on the CPU: a tensor (N, ...), or
    {name: (N, ...)} when ``fn`` returns dicts (one entry per head)."""
    fn, dev, outs = fn or net, _device_of(net), []
    for b in batches_of(images, batch_size):
        out = fn(b.to(dev, torch.float32))
        outs.append({k: v.cpu() for k, v in out.items()} if isinstance(out, dict) else out.cpu())
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return torch.cat(outs)


def extract_features(net: str | nn.Module, images: torch.Tensor, batch_size: int = 500,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """All features (N, D) float32 on the CPU of images (N, C, H, W) in [-1, 1]."""
    net = feature_net(net, device)
    return torch.cat([f.cpu() for f in iter_features(net, batches_of(images, batch_size))])


def feature_stats(net: str | nn.Module, images: torch.Tensor, batch_size: int = 500,
                  device: torch.device | str | None = None) -> FeatureStats:
    """Streaming mean/covariance of the features of ``images`` (N, C, H, W) in [-1, 1]."""
    net = feature_net(net, device)
    stats = FeatureStats()
    for f in iter_features(net, batches_of(images, batch_size)):
        stats.update(f)
    return stats
