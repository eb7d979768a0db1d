"""hwlib.metrics.attributes: attribute accuracy over named targets and text-image consistency."""
from __future__ import annotations

import numpy as np
import torch

from hwlib.metrics.attributes import attribute_accuracy, consistency
from hwlib.models.attributes import AttributeNet, features, predict_attributes


def test_attribute_accuracy_ignores_unnamed_targets() -> None:
    acc = attribute_accuracy({"a": np.array([1, 2, 3]), "b": np.array([0, 0, 0])},
                             {"a": np.array([1, -1, 0]), "b": np.array([-1, -1, -1])})
    assert acc["a"] == 0.5 and np.isnan(acc["b"])


def test_consistency_is_accuracy_of_the_predictions_and_fid_to_real() -> None:
    torch.manual_seed(0)
    net = AttributeNet({"body": 10, "beak_length": 2}, width=4)
    images = torch.rand(12, 3, 64, 64) * 2 - 1
    pred = predict_attributes(net, images, batch_size=5)  # batched like the metric: the same predictions in any batch size
    assert all(np.array_equal(pred[k], predict_attributes(net, images, batch_size=12)[k]) for k in pred)
    targets = {"body": pred["body"].copy(), "beak_length": np.where(np.arange(12) < 6, pred["beak_length"], -1)}
    targets["body"][:3] = (targets["body"][:3] + 1) % 10  # three wrong of twelve
    out = consistency(net, images, targets, real_features=features(net, images))
    assert out["body"] == 0.75 and out["beak_length"] == 1.0
    assert abs(out["fid"]) < 1e-6  # the same images as the real set


def test_both_asked_counts_images_with_every_part_as_asked_over_captions_naming_all() -> None:
    from hwlib.metrics.attributes import both_asked

    torch.manual_seed(0)
    net = AttributeNet({"body": 10, "wing": 10}, width=4)
    images = torch.rand(8, 3, 64, 64) * 2 - 1
    pred = predict_attributes(net, images)
    body, wing = pred["body"].copy(), pred["wing"].copy()
    body[0] = (body[0] + 1) % 10  # image 0: wrong body; image 1: wrong wing; images 2-5 right; 6-7 name no wing
    wing[1] = (wing[1] + 1) % 10
    wing[6:] = -1
    assert both_asked(net, images, {"body": body, "wing": wing}) == 4 / 6
    assert both_asked(net, images, {"body": body, "wing": wing}, parts=("body",)) == 7 / 8
    assert np.isnan(both_asked(net, images, {"body": body, "wing": np.full(8, -1)}))


def test_asked_hits_marks_images_with_every_named_part_as_asked() -> None:
    from hwlib.metrics.attributes import asked_hits, both_asked

    torch.manual_seed(0)
    net = AttributeNet({"body": 10, "wing": 10, "belly": 10}, width=4)
    images = torch.rand(6, 3, 64, 64) * 2 - 1
    pred = predict_attributes(net, images)
    body, wing, belly = pred["body"].copy(), pred["wing"].copy(), pred["belly"].copy()
    body[0] = (body[0] + 1) % 10  # image 0: wrong body; 1: wrong belly; 2: no belly named; 3: nothing named
    belly[1] = (belly[1] + 1) % 10
    belly[2] = -1
    body[3] = wing[3] = belly[3] = -1
    targets = {"body": body, "wing": wing, "belly": belly}
    assert asked_hits(net, images, targets).tolist() == [False, False, True, True, True, True]
    assert asked_hits(net, images, targets, ("body", "wing")).tolist() == [False, True, True, True, True, True]
    bw = asked_hits(net, images, targets, ("body", "wing"))
    assert both_asked(net, images, targets) == bw[[0, 1, 2, 4, 5]].mean()  # the demo score: captions naming both


def test_part_hit_rates_are_per_caption_fractions_read_as_asked() -> None:
    from hwlib.data.synthbirds import COLOURS
    from hwlib.metrics.attributes import part_hit_rates

    torch.manual_seed(0)
    net = AttributeNet({"body": 10, "wing": 10}, width=4)
    images = torch.rand(8, 3, 64, 64) * 2 - 1  # 4 per caption
    body = predict_attributes(net, images)["body"]
    first = tuple(COLOURS)[body[0]]
    captions = [f"this bird is {first} with {'red' if first != 'red' else 'blue'} wings",
                "this bird has a red crown, blue wings and a short black beak"]  # names no body colour
    rates = part_hit_rates(net, images, captions, "body")
    assert rates.shape == (2,) and rates[0] == np.mean(body[:4] == body[0]) and np.isnan(rates[1])


def test_pair_composition_splits_body_hits_by_the_belly_named_and_by_pairs_seen() -> None:
    from hwlib.data.synthbirds import COLOURS
    from hwlib.metrics.attributes import pair_composition

    torch.manual_seed(0)
    net = AttributeNet({"body": 10, "belly": 10}, width=4)
    images = torch.rand(200, 3, 64, 64) * 2 - 1  # 2 per caption of pair_captions("belly")
    body = predict_attributes(net, images)["body"].reshape(10, 10, 2)
    expected = (body == np.arange(10)[:, None, None]).mean(-1)  # row i asks for body colour i
    colours = tuple(COLOURS)
    seen = {("body", "belly", colours[i], colours[(i + 1) % 10]) for i in range(10)}  # one pair per body colour
    out = pair_composition(net, images, seen)
    other = ~np.eye(10, dtype=bool)
    known = np.zeros((10, 10), bool)
    known[np.arange(10), (np.arange(10) + 1) % 10] = True
    np.testing.assert_allclose(out["matrix"], expected)
    assert out["no_part"] == expected.diagonal().mean() and out["other_colour"] == expected[other].mean()
    assert out["seen_pair"] == expected[known].mean() and out["unseen_pair"] == expected[other & ~known].mean()
    assert out["n_unseen_pairs"] == 80 and "seen_pair" not in pair_composition(net, images)


def test_real_both_asked_scores_real_birds_of_each_caption_that_names_every_part() -> None:
    from hwlib.data.synthbirds import COLOURS
    from hwlib.metrics.attributes import real_both_asked

    class Reads(torch.nn.Module):  # always reads a yellow body and black wings
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # (batches go to the device of its parameters)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            assert x.shape[1:] == (3, 64, 64) and -1 <= x.min() and x.max() <= 1
            logits = torch.zeros(len(x), len(COLOURS))
            return {"body": logits.index_fill(1, torch.tensor(list(COLOURS).index("yellow")), 1.0),
                    "wing": logits.index_fill(1, torch.tensor(list(COLOURS).index("black")), 1.0)}

    captions = ["a small yellow bird with black wings", "a small red bird with black wings", "this bird has a red crown"]
    scores = real_both_asked(Reads(), captions, n=3)
    assert list(scores) == captions and scores[captions[0]] == 1.0 and scores[captions[1]] == 0.0
    assert np.isnan(scores[captions[2]])  # the crown caption names no body: not counted
    wings = real_both_asked(Reads(), captions, n=3, parts=("wing",))
    assert wings[captions[0]] == wings[captions[1]] == 1.0 and np.isnan(wings[captions[2]])


def test_near_miss_ranking_is_how_often_the_true_caption_scores_higher() -> None:
    from hwlib.metrics.attributes import near_miss_ranking

    true = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    near = {"crown": torch.tensor([[0.0], [3.0], [0.0], [5.0]]), "same": true.clone()}
    out = near_miss_ranking(lambda t: t[:, 0], true, near)
    assert out == {"crown": 0.5, "same": 0.0}  # ties do not count as ranked above


def test_classifier_ranking_compares_the_true_and_the_near_miss_logit() -> None:
    from hwlib.metrics.attributes import classifier_ranking
    from hwlib.models.attributes import AttributeNet

    torch.manual_seed(0)
    net = AttributeNet({"crown": 3}, width=4).eval()
    images = torch.rand(5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        logits = net(images)["crown"]
    best, worst = logits.argmax(1).numpy(), logits.argmin(1).numpy()
    assert classifier_ranking(net, images, {"crown": best}, {"crown": worst}) == {"crown": 1.0}
    assert classifier_ranking(net, images, {"crown": worst}, {"crown": best}) == {"crown": 0.0}


def test_linear_probe_reads_a_linear_label_and_not_noise() -> None:
    from hwlib.metrics.attributes import linear_probe

    gen = torch.Generator().manual_seed(0)
    x, x_te = torch.randn(300, 8, generator=gen), torch.randn(100, 8, generator=gen)
    label = lambda v: v[:, :4].argmax(1).numpy()  # four linearly separable classes
    y, y_te = label(x), label(x_te)
    y[:10] = -1  # unlabelled rows are left out
    assert linear_probe(x, y, x_te, y_te) > 0.9
    noise = np.random.default_rng(0).integers(0, 4, 100)
    assert linear_probe(x[:100], noise, x_te, y_te) < 0.5
