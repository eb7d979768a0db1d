"""hwlib.text: the offline all-MiniLM-L6-v2 caption encoder."""
from __future__ import annotations

import numpy as np


def test_minilm_encoder_is_offline_and_semantic() -> None:
    from hwlib import text

    emb = text.encode(["this bird has a red crown and blue wings", "a bird with blue wings and a red crown",
                       "the bird has a yellow belly and a long black beak", "this bird has a red crown and blue wings"])
    assert emb.shape == (4, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert np.array_equal(emb[0], emb[3]) and emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1


def test_swap_colour_changes_exactly_one_colour_word() -> None:
    from hwlib import text

    rng = np.random.default_rng(0)
    caption = "this bird has a red crown, blue wings and a grey belly"
    for _ in range(50):
        swapped = text.swap_colour(caption, rng)
        changed = [(a, b) for a, b in zip(caption.split(), swapped.split()) if a != b]
        assert len(swapped.split()) == len(caption.split()) and len(changed) == 1
        old, new = (w.strip(",") for w in changed[0])
        assert old in text.COLOUR_WORDS and new in text.COLOUR_WORDS and new != old
        assert {old, new} != {"grey", "gray"}  # the two spellings are the same colour
    assert text.swap_colour("a small bird with a short pointed beak", rng) is None
