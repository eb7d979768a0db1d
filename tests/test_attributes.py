"""hwlib.models.attributes: the SynthBirds attribute classifier and its accuracy."""
from __future__ import annotations

import pytest
import torch

from hwlib.data import synthbirds
from hwlib.models import attributes
from hwlib.models.attributes import AttributeNet, predict_attributes


def test_attribute_net_and_accuracy() -> None:
    net = AttributeNet({"body": 10, "beak_length": 2}, width=4)
    out = net(torch.randn(3, 3, 256, 256))
    assert out["body"].shape == (3, 10) and net.features(torch.randn(3, 3, 64, 64)).shape == (3, 16)
    loss = net.loss(torch.randn(3, 3, 64, 64), {"body": torch.tensor([1, -1, 2]), "beak_length": torch.tensor([-1, -1, 0])})
    assert torch.isfinite(loss)
    assert set(predict_attributes(net, torch.randn(5, 3, 64, 64), batch_size=2)) == {"body", "beak_length"}


def test_train_attribute_net_learns_and_resumes(tmp_path) -> None:
    from hwlib.models.attributes import train_attribute_net

    images, labels = synthbirds.attribute_birds(200, seed=0, root=tmp_path)
    net, hist = train_attribute_net(images, labels, width=8, epochs=2, run_dir=tmp_path / "clf")
    assert not net.training and len(hist) == 2 * (200 // 64) and hist["loss"][-1] < hist["loss"][0]
    again, hist2 = train_attribute_net(images, labels, width=8, epochs=2, run_dir=tmp_path / "clf")  # restored
    assert len(hist2) == len(hist)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_train_part_judge_reads_each_colour_part_and_ranks_candidates(tmp_path) -> None:
    from hwlib.models import stackgan
    from hwlib.models.attributes import train_part_judge

    images, labels = synthbirds.attribute_birds(256, seed=0, root=tmp_path)
    parts = torch.stack([torch.as_tensor(labels[p]) for p in synthbirds.COLOUR_PARTS], 1).numpy()
    parts[:8, 2] = -1  # a part no caption names is left out of the loss
    judge = train_part_judge(images, parts, width=8, epochs=3, run_dir=tmp_path / "judge")
    assert set(judge.heads) == set(synthbirds.COLOUR_PARTS) and not judge.training
    x = torch.as_tensor(images[:6, :, 6:70, 6:70]).float() / 127.5 - 1
    logits = judge.read_parts(x)
    assert logits.shape == (6, 4, len(synthbirds.COLOURS))
    torch.testing.assert_close(logits[:, 1], judge(x)["wing"])  # body, wing, crown, belly, in COLOUR_PARTS' order
    asked = torch.as_tensor(parts[:6]).clamp_min(0)
    scores = stackgan.part_scores(judge, x, asked)  # the same scores generate(rerank=K, judge=...) ranks by
    torch.testing.assert_close(scores, torch.log_softmax(logits, -1).gather(-1, asked[..., None]).squeeze(-1).sum(1))


def test_part_reader_reads_each_part_as_a_mix_of_local_readings(tmp_path) -> None:
    from hwlib.models.attributes import PartReader, train_part_judge

    net = PartReader(width=4).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    read = net.read_parts(x)
    assert read.shape == (3, 4, len(synthbirds.COLOURS)) and set(net(x)) == set(synthbirds.COLOUR_PARTS)
    torch.testing.assert_close(net.read_parts(torch.nn.functional.interpolate(x, size=128)), read, atol=1e-5, rtol=1e-5)
    # every part's logits lie within the range of the colour logits of the 16x16 cells: an attention-weighted mean
    cells = net.colour(net.local(x)).flatten(2).view(3, 4, len(synthbirds.COLOURS), -1)
    assert (read <= cells.amax(-1) + 1e-5).all() and (read >= cells.amin(-1) - 1e-5).all()
    images, labels = synthbirds.attribute_birds(128, seed=0, root=tmp_path)
    parts = torch.stack([torch.as_tensor(labels[p]) for p in synthbirds.COLOUR_PARTS], 1).numpy()
    reader = train_part_judge(images, parts, width=4, epochs=2, run_dir=tmp_path / "reader", arch="local")
    assert isinstance(reader, PartReader) and not reader.training
    flat = train_part_judge(images, parts, width=4, epochs=2, run_dir=tmp_path / "judge")
    assert not isinstance(flat, PartReader)
    with pytest.raises(ValueError, match="arch"):
        train_part_judge(images, parts, width=4, epochs=1, run_dir=tmp_path / "x", arch="deep")


def test_judge_ensemble_averages_the_judges_colour_probabilities():
    torch.manual_seed(0)
    judges = [attributes.AttributeNet({p: 10 for p in synthbirds.COLOUR_PARTS}, width=4) for _ in range(2)]
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    ens = attributes.JudgeEnsemble(judges).eval()
    probs = torch.stack([j.eval().read_parts(x).softmax(-1) for j in judges]).mean(0)
    torch.testing.assert_close(ens.read_parts(x).exp(), probs)
    one = attributes.JudgeEnsemble(judges[:1])
    torch.testing.assert_close(one.read_parts(x), judges[0].read_parts(x).log_softmax(-1), atol=1e-5, rtol=0)
    picked = attributes.predict_attributes(ens, x)  # the ensemble reads colours like one judge
    assert {k: v.tolist() for k, v in picked.items()} == {p: probs[:, j].argmax(1).tolist()
                                                         for j, p in enumerate(synthbirds.COLOUR_PARTS)}


def test_train_part_judges_trains_one_judge_per_seed_and_averages_them(tmp_path) -> None:
    images, labels = synthbirds.attribute_birds(64, seed=0, root=tmp_path)
    parts = torch.stack([torch.as_tensor(labels[p]) for p in synthbirds.COLOUR_PARTS], 1).numpy()
    one = attributes.train_part_judges(images, parts, 1, width=4, epochs=1, run_dir=tmp_path / "judge")
    assert isinstance(one, AttributeNet)
    two = attributes.train_part_judges(images, parts, 2, width=4, epochs=1, run_dir=tmp_path / "judge")
    assert isinstance(two, attributes.JudgeEnsemble) and len(two.judges) == 2
    assert (tmp_path / "judge_seed1").is_dir()  # the second judge's own run, at the next seed
    first = attributes.train_part_judge(images, parts, width=4, epochs=1, run_dir=tmp_path / "judge")  # restored
    second = attributes.train_part_judge(images, parts, width=4, epochs=1, seed=1, run_dir=tmp_path / "judge_seed1")
    for a, b in zip(two.judges, (first, second)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(first.state_dict().values(), second.state_dict().values()))
    amp = attributes.train_part_judges(images, parts, 2, width=4, epochs=1, run_dir=tmp_path / "judge", amp=True)
    assert len(amp.judges) == 2 and (tmp_path / "judge_amp").is_dir() and (tmp_path / "judge_amp_seed1").is_dir()


def test_train_attribute_net_amp_trains_channels_last_in_a_run_of_its_own(tmp_path) -> None:
    from hwlib.checkpoints import RunMismatch

    images, labels = synthbirds.attribute_birds(64, seed=0, root=tmp_path)
    parts = torch.stack([torch.as_tensor(labels[p]) for p in synthbirds.COLOUR_PARTS], 1).numpy()
    judge = attributes.train_part_judge(images, parts, width=4, epochs=1, run_dir=tmp_path / "amp", amp=True)
    conv = judge.body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32  # fp32 master weights
    assert judge.read_parts(torch.randn(2, 3, 64, 64)).shape == (2, 4, 10)
    with pytest.raises(RunMismatch):  # an fp32 run never resumes the amp run's checkpoints (nor the other way)
        attributes.train_part_judge(images, parts, width=4, epochs=1, run_dir=tmp_path / "amp")
