"""Text-image consistency on SynthBirds: does a generated bird show the attributes its caption names?

The SynthBirds attribute classifier (:class:`hwlib.models.attributes.AttributeNet`, trained on real drawings)
reads each generated image; an attribute counts as drawn when the classifier's prediction equals the value the
caption names (:func:`hwlib.data.synthbirds.caption_targets`, -1 where the caption names none).
:func:`near_miss_ranking` asks the same of a network that reads captions (StackGAN's discriminator, a matcher):
which parts of a caption does it check?
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hwlib.metrics.evaluation import fid_from_features
from hwlib.models.attributes import AttributeNet, features, predict_attributes


def attribute_accuracy(predicted: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Fraction of samples whose predicted attribute equals the target, over samples with a target (>= 0):
    {name: accuracy in [0, 1]} (NaN for an attribute no sample names)."""
    acc = {}
    for k, t in targets.items():
        mask = np.asarray(t) >= 0
        acc[k] = float((np.asarray(predicted[k])[mask] == np.asarray(t)[mask]).mean()) if mask.any() else float("nan")
    return acc


def consistency(net: AttributeNet, images: torch.Tensor, targets: dict[str, np.ndarray],
                real_features: np.ndarray | None = None) -> dict[str, float]:
    """Text-image consistency of generated ``images`` (N, 3, H, W) in [-1, 1]: the accuracy of every attribute in
    ``targets`` ({name: int64 (N,)}, -1 = not named) and, with ``real_features`` (:func:`features` of real images),
    ``"fid"``: the Frechet distance in this classifier's feature space (lower: closer to real birds)."""
    out = attribute_accuracy(predict_attributes(net, images), targets)
    if real_features is not None:
        out["fid"] = float(fid_from_features(real_features, features(net, images)))
    return out


@torch.no_grad()
def near_miss_ranking(score: Callable[[torch.Tensor], torch.Tensor], true_text: torch.Tensor,
                      near_text: dict[str, torch.Tensor]) -> dict[str, float]:
    """How often a caption-reading network ranks the true caption above each kind of near miss: ``score(text)``
    (N,) scores N fixed images against captions ``text`` (N, t_dim); ``true_text`` (N, t_dim), ``near_text``
    {kind: (N, t_dim)} (:func:`hwlib.data.synthbirds.near_miss_captions`). Returns {kind: fraction}; 0.5 means the
    network ignores what that kind of near miss changes."""
    true = score(true_text)
    return {kind: float((true > score(t)).float().mean()) for kind, t in near_text.items()}


@torch.no_grad()
def classifier_ranking(net: AttributeNet, images: torch.Tensor, true: dict[str, np.ndarray],
                       near: dict[str, np.ndarray], batch_size: int = 256) -> dict[str, float]:
    """:func:`near_miss_ranking`'s question asked of the attribute classifier, so that a judge and the classifier
    are compared on one scale (chance 0.5): for each part in ``near`` ({part: value index (N,)} of the near miss),
    how often the classifier's logit for the true value ``true[part]`` (N,) beats the near miss's on ``images``
    (N, 3, H, W) in [-1, 1]."""
    from hwlib.metrics.features import map_batches

    net.eval()
    logits = map_batches(net, images, batch_size, lambda b: {k: net(b)[k].float() for k in near})
    rows = torch.arange(len(images))
    return {k: float((logits[k][rows, torch.as_tensor(true[k])] > logits[k][rows, torch.as_tensor(v)]).float().mean())
            for k, v in near.items()}
