"""The resident batch iterator: seeded order, coverage, mid-epoch restart."""
from __future__ import annotations

import pytest
import torch

from hwlib.data import ResidentLoader


def test_order_for_a_given_seed_is_pinned():
    loader = ResidentLoader(torch.arange(10), batch_size=3, seed=5)
    # epoch e uses a CPU generator seeded with seed * 100003 + e: the same on every device and after a resume
    for epoch in (0, 1, 7):
        expected = torch.randperm(10, generator=torch.Generator().manual_seed(5 * 100_003 + epoch))
        assert torch.equal(loader.order(epoch), expected)
    assert loader.order(0).tolist() == ResidentLoader(torch.zeros(10), batch_size=3, seed=5).order(0).tolist()
    assert loader.order(0).tolist() != loader.order(1).tolist()
    assert loader.order(0).tolist() != ResidentLoader(torch.arange(10), batch_size=3, seed=6).order(0).tolist()


def test_batches_cover_each_epoch_and_keep_pairs_together():
    x = torch.arange(20).float().view(20, 1)
    y = torch.arange(20) * 10
    loader = ResidentLoader(x, y, batch_size=6, seed=0)
    assert len(loader) == 3  # drop_last
    seen = []
    for xb, yb in loader.epoch(2):
        assert xb.shape == (6, 1) and torch.equal(yb, xb[:, 0].long() * 10)
        seen += xb[:, 0].long().tolist()
    assert seen == loader.order(2)[:18].tolist()
    assert len(ResidentLoader(x, batch_size=6, drop_last=False)) == 4


def test_start_skips_batches_and_iteration_advances_epochs():
    loader = ResidentLoader(torch.arange(12), batch_size=4, seed=1)
    full = [b[0].tolist() for b in loader.epoch(3)]
    assert [b[0].tolist() for b in loader.epoch(3, start=1)] == full[1:]
    first, second = [[b[0].tolist() for b in loader] for _ in range(2)]
    assert first == [b[0].tolist() for b in loader.epoch(0)] and second == [b[0].tolist() for b in loader.epoch(1)]
    unshuffled = ResidentLoader(torch.arange(12), batch_size=4, shuffle=False)
    assert [b[0].tolist() for b in unshuffled.epoch(0)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_tensors_move_to_the_device_once():
    loader = ResidentLoader(torch.zeros(8, 2), batch_size=4, device="cpu")
    assert all(t.device.type == "cpu" for t in loader.tensors)
    with pytest.raises(ValueError, match="differ in length"):
        ResidentLoader(torch.zeros(8), torch.zeros(7), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        ResidentLoader(torch.zeros(8), batch_size=9)
