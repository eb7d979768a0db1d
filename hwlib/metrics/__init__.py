"""Evaluation metrics: FID (MNIST or Inception features), precision/recall, IS, conditional accuracy.

- ``evaluate(sampler, real="mnist-test", n=10_000, features="mnist")`` -- one call for the notebooks
- ``within_class_spread``, ``ClassSpread``                              -- diversity within a class (mode collapse)
- ``is_mnist``                                                       -- the Inception Score with the MNIST classifier
- ``frechet_distance``, ``FeatureStats``, ``fid_from_features``         -- FID pieces (``frechet``, ``stats``)
- ``precision_recall``                                                -- k-NN manifolds (``prdc``)
- ``inception_score``, ``InceptionFeatures``                            -- FID Inception-v3 (``inception``)
- ``mnist_classifier``, ``conditional_accuracy``, ``per_class_accuracy`` -- the shipped CNN (``mnist_net``)
- ``feature_net``, ``extract_features``, ``reference_stats``           -- features and cached real statistics
- ``high_frequency_energy``, ``high_frequency_error``                 -- detail above a spatial frequency (``spectrum``)
- ``reconstruction_scores``, ``class_brightness``, ``brightness_error`` -- per-image MSE/SSIM, class brightness (``images``)
- ``attribute_accuracy``, ``consistency``, ``both_asked``, ``asked_hits``, ``real_both_asked`` -- SynthBirds text-image consistency (``attributes``)
- ``near_miss_ranking``, ``classifier_ranking``                       -- which caption parts a judge checks (``attributes``)
- ``linear_probe``                                                    -- how linearly features carry a label (``attributes``)

Names are imported lazily, so ``python -m hwlib.metrics.mnist_net`` and light imports stay cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "evaluation", "fid_from_features": "evaluation", "ClassSpread": "evaluation",
    "within_class_spread": "evaluation", "is_mnist": "evaluation",
    "frechet_distance": "frechet", "trace_sqrt_product": "frechet",
    "FeatureStats": "stats",
    "precision_recall": "prdc",
    "inception_score": "inception", "InceptionFeatures": "inception", "InceptionWeightsMissing": "inception",
    "inception_weights_path": "inception",
    "MnistNet": "mnist_net", "mnist_classifier": "mnist_net", "conditional_accuracy": "mnist_net",
    "per_class_accuracy": "mnist_net",
    "reconstruction_scores": "images", "class_brightness": "images", "brightness_error": "images",
    "feature_net": "features", "extract_features": "features", "feature_stats": "features",
    "reference_stats": "reference",
    "high_frequency_energy": "spectrum", "high_frequency_error": "spectrum",
    "attribute_accuracy": "attributes", "consistency": "attributes", "both_asked": "attributes", "asked_hits": "attributes", "part_hit_rates": "attributes", "pair_composition": "attributes", "real_both_asked": "attributes", "near_miss_ranking": "attributes",
    "classifier_ranking": "attributes", "linear_probe": "attributes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"hwlib.metrics.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwlib.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
