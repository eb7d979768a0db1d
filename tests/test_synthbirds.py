"""SynthBirds: drawing, captions, the CUB layout it writes (read back by the CUB loader), and the caption encoder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwlib.data import cub, synthbirds


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthbirds.make_synthbirds(8, 4, seed=3, root=tmp_path_factory.mktemp("sb") / "synth", embed=False)


def test_species_table_is_seeded_and_split_class_disjoint(root: Path) -> None:
    assert synthbirds.species_table(1) == synthbirds.species_table(1) != synthbirds.species_table(2)
    train = cub.load_pickle(root / "birds/train/class_info.pickle")
    test = cub.load_pickle(root / "birds/test/class_info.pickle")
    assert train == list(range(1, 9)) and test == list(range(151, 155))
    assert json.loads((root / "synthbirds.json").read_text())["species"][0] == synthbirds.species_table(3)[0]


def test_drawing_is_antialiased_and_boxed() -> None:
    species = dict(synthbirds.species_table(0)[0], body="red", wing="blue")
    image, (x, y, w, h) = synthbirds.draw_bird(species, np.random.default_rng(0))
    assert image.shape == (304, 304, 3) and image.dtype == np.uint8
    assert 60 < w < 304 and 30 < h < 304 and 0 <= x and x + w <= 304.01
    inside = image[int(y):int(y + h), int(x):int(x + w)].reshape(-1, 3).astype(int)
    red = (inside[:, 0] > 150) & (inside[:, 1] < 90) & (inside[:, 2] < 90)
    blue = (inside[:, 2] > 150) & (inside[:, 0] < 100)
    assert red.mean() > 0.05 and blue.mean() > 0.02  # the body and wing colours are drawn inside the box
    _, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert (counts <= 3).sum() > 60  # rare mixed colours: anti-aliased edges (fills and gradient rows are frequent)


def test_captions_name_the_true_attributes() -> None:
    table = synthbirds.species_table(0)
    rng = np.random.default_rng(0)
    for species in table[:20]:
        captions = synthbirds.captions_for(species, rng)
        assert len(captions) == len(set(captions)) == 10
        for caption in captions:
            named = synthbirds.parse_caption(caption)
            assert named and all(species[k] == v for k, v in named.items()), caption
    assert synthbirds.parse_caption("this bird has a red crown, blue wings and a short black beak") == {
        "crown": "red", "wing": "blue", "beak_length": "short", "beak_colour": "black"}
    assert synthbirds.parse_caption("this bird is mostly gray") == {"body": "grey"}
    targets = synthbirds.caption_targets(["a bird with blue wings and a white breast", "this bird is mostly gray"])
    colours = synthbirds.ATTRIBUTES["body"]
    assert targets["wing"].tolist() == [colours.index("blue"), -1]
    assert targets["belly"].tolist() == [colours.index("white"), -1]
    assert targets["body"].tolist() == [-1, colours.index("grey")] and targets["beak_length"].tolist() == [-1, -1]


def test_layout_is_read_by_the_cub_loader(root: Path, monkeypatch) -> None:
    from hwlib import text

    monkeypatch.setattr(text, "encode", lambda caps: np.ones((len(caps), 384), np.float32))
    train = cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")
    assert len(train) == 8 and train.embeddings.shape == (8, 10, 384)
    assert (root / "birds/train/all-MiniLM-L6-v2-embeddings.npy").is_file()
    crops = train.images(76)
    assert crops.shape == (8, 3, 76, 76)
    labels = synthbirds.attribute_labels(root, train.class_ids)
    table = synthbirds.species_table(3)
    assert [synthbirds.ATTRIBUTES["wing"][i] for i in labels["wing"]] == [table[c - 1]["wing"] for c in train.class_ids]
    for i in range(8):
        named = synthbirds.parse_caption(train.captions(i)[0])
        assert all(table[train.class_ids[i] - 1][k] == v for k, v in named.items())


def test_consistency_set_is_seeded_and_matches_its_captions() -> None:
    class Split:  # the two things consistency_set reads from a BirdSplit
        embeddings = np.arange(20 * 10 * 3, dtype=np.float32).reshape(20, 10, 3)

        def __len__(self) -> int:
            return 20

        def captions(self, i: int) -> list[str]:
            return [f"a bird with {synthbirds.ATTRIBUTES['wing'][i % 10]} wings"] + ["other"] * 9

    text, z, targets, captions = synthbirds.consistency_set(Split(), 8, z_dim=5, seed=3)
    again = synthbirds.consistency_set(Split(), 8, z_dim=5, seed=3)
    assert text.shape == (8, 3) and z.shape == (8, 5)
    assert torch.equal(text, again[0]) and torch.equal(z, again[1])
    idx = (text[:, 0] / 30).long().numpy()  # row i of the embeddings starts at 30 i: which birds were drawn
    assert len(set(idx)) == 8 and targets["wing"].tolist() == (idx % 10).tolist()  # first caption of each
    assert captions == [f"a bird with {synthbirds.ATTRIBUTES['wing'][i % 10]} wings" for i in idx]


def test_other_settings_at_the_same_root_are_refused(root: Path) -> None:
    assert synthbirds.make_synthbirds(8, 4, seed=3, root=root, embed=False) == root  # same settings: reused
    for kwargs in ({"n_train": 9}, {"n_test": 5}, {"seed": 4}, {"image_size": 128}):
        settings = {"n_train": 8, "n_test": 4, "seed": 3, "image_size": 304, **kwargs}
        with pytest.raises(synthbirds.SynthBirdsError) as err:
            synthbirds.make_synthbirds(**settings, root=root, embed=False)
        message = str(err.value)
        assert str(root) in message and str(settings) in message
        assert "{'n_train': 8, 'n_test': 4, 'seed': 3, 'image_size': 304}" in message


def test_settings_of_older_sets_are_inferred(root: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(root, old)
    meta = json.loads((old / "synthbirds.json").read_text())
    del meta["settings"]  # what make_synthbirds wrote before it recorded its settings
    (old / "synthbirds.json").write_text(json.dumps(meta))
    assert synthbirds.make_synthbirds(8, 4, seed=3, root=old, embed=False) == old
    with pytest.raises(synthbirds.SynthBirdsError, match="'n_train': 8.*'n_train': 7"):
        synthbirds.make_synthbirds(7, 4, seed=3, root=old, embed=False)


def test_interrupted_build_leaves_nothing_to_reuse(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "synth"
    draw, calls = synthbirds.draw_bird, []

    def killed_after_three(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr(synthbirds, "draw_bird", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        synthbirds.make_synthbirds(4, 2, seed=1, image_size=64, root=target, embed=False)
    assert list(tmp_path.iterdir()) == []  # neither the root nor a temporary folder
    monkeypatch.setattr(synthbirds, "draw_bird", draw)
    synthbirds.make_synthbirds(4, 2, seed=1, image_size=64, root=target, embed=False)
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]
    assert len(cub.load_pickle(target / "birds/train/filenames.pickle")) == 4


def test_half_built_folder_is_not_taken_for_a_set(tmp_path: Path) -> None:
    target = tmp_path / "synth"
    (target / "CUB_200_2011").mkdir(parents=True)  # e.g. left by an older version killed mid-build
    with pytest.raises(synthbirds.SynthBirdsError, match=f"{target} holds files but no finished SynthBirds set"):
        synthbirds.make_synthbirds(2, 2, seed=1, image_size=64, root=target, embed=False)
    (target / "CUB_200_2011").rmdir()  # an empty folder is simply filled
    synthbirds.make_synthbirds(2, 2, seed=1, image_size=64, root=target, embed=False)
    assert (target / "synthbirds.json").is_file()


def test_attribute_birds_cache_is_atomic_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    images, labels = synthbirds.attribute_birds(6, seed=2, load_size=32, root=tmp_path)
    (path,) = tmp_path.iterdir()  # the cache only, no temporary
    assert path.name == "attribute_birds_n6_px32_seed2.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match=f"{path.name} is unreadable"):
        again, labels2 = synthbirds.attribute_birds(6, seed=2, load_size=32, root=tmp_path)
    assert np.array_equal(images, again) and all(np.array_equal(labels[a], labels2[a]) for a in labels)
    assert synthbirds.attribute_birds(6, seed=2, load_size=32, root=tmp_path)[0].shape == (6, 3, 32, 32)


def test_near_miss_captions_change_exactly_the_named_part() -> None:
    labels = {"body": np.array([0, 3]), "wing": np.array([1, 1]), "crown": np.array([2, 9]), "belly": np.array([4, 0])}
    truth, near = synthbirds.near_miss_captions(labels, np.random.default_rng(0))
    assert truth[0] == "a red bird with orange wings, a yellow crown and a blue belly"
    assert set(near) == {"body", "wing", "crown", "belly", "all"}
    for part in ("body", "wing", "crown", "belly"):
        for t, n in zip(truth, near[part]):
            was, now = synthbirds.parse_caption(t), synthbirds.parse_caption(n)
            assert [k for k in was if was[k] != now[k]] == [part]
    assert all(all(synthbirds.parse_caption(t)[k] != synthbirds.parse_caption(n)[k] for k in labels)
               for t, n in zip(truth, near["all"]))


def test_novel_captions_leave_out_the_excluded_colour_combinations():
    every = {(b, w, c, e) for b in synthbirds.COLOURS for w in synthbirds.COLOURS for c in synthbirds.COLOURS
             for e in ("red", "blue")}  # every combination with a red or blue belly
    captions = synthbirds.novel_captions(200, every, seed=1)
    assert len(captions) == 200 and captions == synthbirds.novel_captions(200, every, seed=1)
    bellies = {synthbirds.parse_caption(c).get("belly") for c in captions} - {None}
    assert bellies and not bellies & {"red", "blue"}


def test_novel_captions_with_seen_pairs_name_a_pair_of_colours_outside_them() -> None:
    assert synthbirds.colour_pairs([("red", "blue", "red", "grey"), {"wing": "green", "belly": "white"}]) == {
        ("body", "wing", "red", "blue"), ("body", "crown", "red", "red"), ("body", "belly", "red", "grey"),
        ("wing", "crown", "blue", "red"), ("wing", "belly", "blue", "grey"), ("crown", "belly", "red", "grey"),
        ("wing", "belly", "green", "white")}
    seen = synthbirds.colour_pairs([(b, w, c, e) for b in synthbirds.COLOURS for w in synthbirds.COLOURS
                                    for c in synthbirds.COLOURS for e in ("red", "blue")])  # every pair but ...
    captions = synthbirds.novel_captions(50, set(), seed=2, seen_pairs=seen)
    for caption in captions:  # ... those of a belly neither red nor blue beside another named part
        named = synthbirds.parse_caption(caption)
        assert named.get("belly") not in (None, "red", "blue") and len(set(named) & set(synthbirds.COLOUR_PARTS)) >= 2
    plain = synthbirds.novel_captions(50, set(), seed=2)
    assert plain == synthbirds.novel_captions(50, set(), seed=2) and plain != captions


def test_training_pairs_are_the_colour_pairs_of_the_training_species_only(root: Path) -> None:
    train = synthbirds.species_colours(root, np.arange(1, synthbirds.N_TRAIN_CLASSES + 1))
    assert synthbirds.training_pairs(root) == synthbirds.colour_pairs(train)
    test = synthbirds.species_colours(root, np.arange(synthbirds.N_TRAIN_CLASSES + 1, synthbirds.N_CLASSES + 1))
    assert synthbirds.colour_pairs(test) - synthbirds.training_pairs(root)  # some test species pair colours anew


def test_pair_captions_name_each_body_colour_beside_each_part_colour() -> None:
    captions, colours = synthbirds.pair_captions("belly"), tuple(synthbirds.COLOURS)
    assert len(captions) == 100
    for i, body in enumerate(colours):
        for j, belly in enumerate(colours):
            named = synthbirds.parse_caption(captions[10 * i + j])
            assert named["body"] == body and named["wing"] not in (body, belly)
            assert named.get("belly") == (belly if i != j else None)  # the same colour twice: the part left out


def test_caption_birds_draw_every_named_colour_and_are_seeded() -> None:
    birds = {}
    for caption in ("a small yellow bird with black wings and a long orange bill", "a small red bird with blue wings"):
        images, labels = synthbirds.caption_birds(caption, 6, seed=1, load_size=48)
        assert images.shape == (6, 3, 48, 48) and images.dtype == np.uint8
        assert np.array_equal(images, synthbirds.caption_birds(caption, 6, seed=1, load_size=48)[0])
        for attribute, value in synthbirds.parse_caption(caption).items():  # as named; the rest vary
            assert (labels[attribute] == synthbirds.ATTRIBUTES[attribute].index(value)).all()
        assert len(set(labels["crown"])) > 1
        birds[caption] = images.transpose(0, 2, 3, 1).reshape(6, -1, 3).astype(float)
    yellow, red = birds.values()
    for colour in ("yellow", "black"):  # every yellow bird shows more yellow and black than any red bird
        near = {k: (np.linalg.norm(v - synthbirds.COLOURS[colour], axis=-1) < 60).mean(1) for k, v in (("y", yellow), ("r", red))}
        assert near["y"].min() > near["r"].max(), colour


def test_part_label_mode_takes_the_commonest_colour_per_part_and_the_first_on_a_tie() -> None:
    red, blue, green = (list(synthbirds.COLOURS).index(c) for c in ("red", "blue", "green"))
    labels = np.array([[[blue, -1, green, -1], [red, -1, blue, -1], [blue, -1, -1, -1]]])  # (1 bird, 3 captions, 4)
    assert synthbirds.part_label_mode(labels).tolist() == [[blue, -1, min(green, blue), -1]]
