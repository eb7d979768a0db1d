"""Text-image consistency on SynthBirds: does a generated bird show the attributes its caption names?

The SynthBirds attribute classifier (:class:`hwlib.models.attributes.AttributeNet`, trained on real drawings)
reads each generated image; an attribute counts as drawn when the classifier's prediction equals the value the
caption names (:func:`hwlib.data.synthbirds.caption_targets`, -1 where the caption names none).
:func:`near_miss_ranking` asks the same of a network that reads captions (StackGAN's discriminator, a matcher):
which parts of a caption does it check?
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


def both_asked(net: AttributeNet, images: torch.Tensor, targets: dict[str, np.ndarray],
               parts: tuple[str, ...] = ("body", "wing")) -> float:
    """The "type a caption" score: the fraction of ``images`` (N, 3, H, W) in [-1, 1] in which ``net`` reads every one
    of ``parts`` in the colour ``targets`` ({name: int64 (N,)}, -1 = not named; ``synthbirds.caption_targets``) asks,
    over the images whose caption names all of them (NaN if none does)."""
    named = np.all([np.asarray(targets[p]) >= 0 for p in parts], axis=0)
    if not named.any():
        return float("nan")
    pred = predict_attributes(net, images[torch.from_numpy(named)])
    return float(np.all([pred[p] == np.asarray(targets[p])[named] for p in parts], axis=0).mean())


def asked_hits(net: AttributeNet, images: torch.Tensor, targets: dict[str, np.ndarray],
               parts: tuple[str, ...] | None = None) -> np.ndarray:
    """Per image of ``images`` (N, 3, H, W) in [-1, 1]: whether ``net`` reads every one of ``parts`` (default: all of
    ``targets``) that its caption names in the colour asked (``targets`` as :func:`both_asked`'s; a part the caption
    does not name counts as drawn) -> bool (N,). :func:`both_asked` is its mean over captions naming both parts."""
    parts = tuple(targets) if parts is None else parts
    pred = predict_attributes(net, images)
    return np.all([(pred[p] == np.asarray(targets[p])) | (np.asarray(targets[p]) < 0) for p in parts], axis=0)


def part_hit_rates(net: AttributeNet, images: torch.Tensor, captions: list[str], part: str = "body") -> np.ndarray:
    """For ``images`` (len(captions) * K, 3, H, W) in [-1, 1], K per caption in the captions' order, the fraction of
    each caption's K images in which ``net`` reads ``part`` in the colour the caption names: float (len(captions),)
    (NaN where a caption names none)."""
    from hwlib.data.synthbirds import caption_targets

    k = len(images) // len(captions)
    asked = np.repeat(caption_targets(captions)[part], k)
    hit = (predict_attributes(net, images)[part] == asked).reshape(len(captions), k).mean(1)
    return np.where(asked.reshape(len(captions), k)[:, 0] >= 0, hit, np.nan)


def pair_composition(net: AttributeNet, images: torch.Tensor, seen: set[tuple[str, str, str, str]] | None = None,
                     part: str = "belly") -> dict[str, Any]:
    """How often ``net`` reads the body in the asked colour, for ``images`` (100 * K, 3, H, W) in [-1, 1] drawn K
    per caption of :func:`hwlib.data.synthbirds.pair_captions` ``(part)`` in order: ``matrix`` float (10, 10) (row:
    body colour, column: ``part`` colour, diagonal: ``part`` not named) and its means ``no_part`` (the diagonal),
    ``other_colour`` (off it), and, given ``seen`` (:func:`hwlib.data.synthbirds.training_pairs`), ``seen_pair`` /
    ``unseen_pair``: off-diagonal pairs some training species has / none has."""
    from hwlib.data.synthbirds import COLOURS, pair_captions

    colours = tuple(COLOURS)
    m = part_hit_rates(net, images, pair_captions(part), "body").reshape(len(colours), len(colours))
    other = ~np.eye(len(colours), dtype=bool)
    out: dict[str, Any] = {"matrix": m, "no_part": float(m.diagonal().mean()), "other_colour": float(m[other].mean())}
    if seen is not None:
        known = np.array([[("body", part, b, e) in seen for e in colours] for b in colours]) & other
        out |= {"seen_pair": float(m[known].mean()), "unseen_pair": float(m[other & ~known].mean()),
                "n_unseen_pairs": int((other & ~known).sum())}
    return out


def real_both_asked(net: AttributeNet, captions: list[str], n: int = 100, seed: int = 0,
                    parts: tuple[str, ...] = ("body", "wing")) -> dict[str, float]:
    """:func:`both_asked` of ``n`` real SynthBirds drawn to each of ``captions`` (caption ``k``'s from ``seed + k``,
    :func:`hwlib.data.synthbirds.caption_birds`, centre 64 px): how often ``net`` reads real birds of each caption as
    asked, the most a generator's birds of it can score under it. Returns {caption: score} (NaN for a caption that
    does not name every one of ``parts``); with equal ``n`` their ``nanmean`` is the score of all the birds at once."""
    from hwlib.data.cub import center_crop
    from hwlib.data.synthbirds import caption_birds, caption_targets

    return {c: both_asked(net, center_crop(torch.from_numpy(caption_birds(c, n, seed=seed + k)[0]), 64),
                          caption_targets([c] * n), parts) for k, c in enumerate(captions)}


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


def linear_probe(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray,
                 steps: int = 300, lr: float = 1e-2, seed: int = 0) -> float:
    """How linearly a representation carries a label: a softmax regression fitted on ``train_x`` (N, D) to
    ``train_y`` int64 (N,) (full batch, Adam, features standardised with the training statistics; -1 = no label,
    left out), and its accuracy on ``test_x`` (M, D) against ``test_y`` (M,) (rows with -1 left out). E.g. how much of
    a caption's crown colour its sentence embedding keeps. Repeated (row, label) pairs -- one caption written for
    many birds -- are fitted once, weighted by their count: the same loss, a fraction of the work."""
    gen = torch.Generator().manual_seed(seed)
    ytr, yte = torch.as_tensor(train_y), torch.as_tensor(test_y)
    keep, keep_te = ytr >= 0, yte >= 0
    rows, count = torch.unique(torch.cat([train_x[keep].float(), ytr[keep, None].float()], 1), dim=0, return_counts=True)
    xu, y, n = rows[:, :-1], rows[:, -1].long(), count.float()
    mean = (n[:, None] * xu).sum(0) / n.sum()
    std = ((n[:, None] * (xu - mean) ** 2).sum(0) / (n.sum() - 1)).sqrt().clamp_min(1e-6)
    x = (xu - mean) / std
    n_classes = int(max(int(y.max()), int(yte[keep_te].max()) if keep_te.any() else 0)) + 1
    w = (torch.randn(x.shape[1], n_classes, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = (n * F.cross_entropy(x @ w + b, y, reduction="none")).sum() / n.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = ((test_x[keep_te].float() - mean) / std @ w + b).argmax(1)
    return float((pred == yte[keep_te]).float().mean())
