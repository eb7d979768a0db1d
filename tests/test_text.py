"""hwlib.text: the offline all-MiniLM-L6-v2 caption encoder."""
from __future__ import annotations

import numpy as np


def test_minilm_encoder_is_offline_and_semantic() -> None:
    from hwlib import text

    emb = text.encode(["this bird has a red crown and blue wings", "a bird with blue wings and a red crown",
                       "the bird has a yellow belly and a long black beak", "this bird has a red crown and blue wings"])
    assert emb.shape == (4, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert np.array_equal(emb[0], emb[3]) and emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1
