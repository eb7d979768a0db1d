"""hwlib.models.summary: one row per sub-module with its per-sample output shape and parameters."""
import torch
from torch import nn

from hwlib.models.summary import architecture_markdown, layer_table


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4 * 8 * 8, 2)
        self.unused = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.head(h.flatten(1)), h


def test_layer_table_rows_shapes_and_params():
    net = TwoHeads().train()
    stats = net.body[1].running_mean.clone()
    rows = layer_table(net, torch.randn(2, 1, 8, 8))
    assert [(r["layer"], r["output"], r["params"]) for r in rows] == [
        ("body", "4×8×8", 4 * 9 + 4 + 8), ("head", "2", 256 * 2 + 2), ("unused", "not in forward", 4)]
    assert net.training and net.body[1].training  # modes restored
    assert torch.equal(net.body[1].running_mean, stats)  # eval mode: batch norm statistics untouched


class Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)  # draws from the global RNG in eval mode too (as StackGAN's CA does)


def test_layer_table_leaves_the_rng_alone():
    net = nn.Sequential(Noisy(), nn.Linear(3, 3))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    layer_table(net, torch.ones(1, 3))
    assert torch.equal(torch.rand(3), expected)


def test_layer_table_depth_two_and_markdown():
    net = TwoHeads()
    rows = layer_table(net, torch.randn(1, 1, 8, 8), depth=2)
    assert [r["layer"] for r in rows] == ["body.0", "body.1", "body.2"]
    md = architecture_markdown(net, torch.randn(1, 1, 8, 8), title="two heads")
    assert "**two heads**" in md and f"**{sum(p.numel() for p in net.parameters()):,}**" in md
    assert "<details>" in md and "TwoHeads(" in md
