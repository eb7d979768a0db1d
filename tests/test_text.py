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


def _species_captions(n_species: int, per_species: int, seed: int) -> tuple[list[list[str]], np.ndarray]:
    """SynthBirds-style captions: ``per_species`` birds of each of ``n_species`` random species, ten captions each."""
    from hwlib.data import synthbirds

    rng = np.random.default_rng(seed)
    captions, classes = [], []
    for k in range(n_species):
        species = synthbirds.random_species(rng)
        for _ in range(per_species):
            captions.append(synthbirds.captions_for(species, rng))
            classes.append(k)
    return captions, np.array(classes)


def test_ngram_encoder_keeps_each_colour_bound_to_its_part() -> None:
    """Trained on the captions of 60 species, the n-gram encoder tells a red crown with blue wings from a blue crown
    with red wings (MiniLM: cosine 0.994) more than from the same colours with another beak."""
    from hwlib import text

    captions, classes = _species_captions(60, 4, seed=0)
    enc = text.fit_ngram_encoder(captions, classes, steps=300)
    a, swapped, other_beak = enc.encode(["this bird has a red crown, blue wings and a short black beak",
                                         "this bird has a blue crown, red wings and a short black beak",
                                         "this bird has a red crown, blue wings and a long black beak"])
    assert {"red crown", "blue wings", "blue crown", "red wings"} <= set(enc.vocab)
    assert a @ swapped < a @ other_beak - 0.2 and a @ swapped < 0.8
    assert np.allclose(np.linalg.norm(enc.encode(["a red bird", "a grey bird"]), axis=1), 1, atol=1e-5)


def test_ngram_encoder_is_deterministic_round_trips_and_names_unknown_words() -> None:
    from hwlib import text

    captions, classes = _species_captions(8, 2, seed=1)
    enc = text.fit_ngram_encoder(captions, classes, steps=20, dim=16)
    again = text.fit_ngram_encoder(captions, classes, steps=20, dim=16)
    np.testing.assert_array_equal(enc.state()["weight"], again.state()["weight"])
    restored = text.NgramEncoder.from_state(enc.state())
    caption = "a small grey bird with crimson wings"
    np.testing.assert_array_equal(restored.encode([caption]), enc.encode([caption]))
    assert enc.unknown(caption) == ["crimson"] and text.ngrams("A GRAY bird") == ["a", "grey", "bird", "a grey", "grey bird"]
    assert not enc.encode(["zzz qqq"]).any()  # nothing it knows: zeros


def test_ngram_encoder_part_slots_name_each_part_of_an_unseen_combination() -> None:
    """With part labels the encoder's slots (the ``part-ngrams`` embedding) learn which n-grams speak of which part:
    a caption written for no training bird fills each slot with its own part's colour."""
    from hwlib import text
    from hwlib.data import synthbirds

    captions, classes = _species_captions(60, 4, seed=0)
    labels = synthbirds.part_labels([c for caps in captions for c in caps]).reshape(len(captions), 10, -1)
    enc = text.fit_ngram_encoder(captions, classes, steps=300, labels=labels, part_classes=len(synthbirds.COLOURS))
    novel = ["this bird is white with green wings and a purple belly", "a small yellow bird with grey wings and a red crown"]
    emb = enc.encode(novel)
    assert emb.shape == (2, 128) and np.allclose(np.linalg.norm(emb[:, :64], axis=1), 1, atol=1e-5)
    named = enc.part_head(enc.slots([enc.ids(c) for c in novel])).argmax(-1).numpy()  # (2, 4), 10 = none named
    np.testing.assert_array_equal(named, np.where(synthbirds.part_labels(novel) < 0, 10, synthbirds.part_labels(novel)))
    restored = text.NgramEncoder.from_state(enc.state())
    np.testing.assert_array_equal(restored.encode(novel), emb)
    assert not restored.encode(["zzz qqq"]).any()  # nothing it knows: zeros, slots included
