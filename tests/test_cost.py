"""hwlib.cost: FLOPs counted on a real step, the step undone afterwards, and the one-line estimate."""
from __future__ import annotations

import torch
from torch import nn

from hwlib import cost
from hwlib.data import ResidentLoader
from hwlib.train import EMA, fit


def _linear_step(model: nn.Linear, opt: torch.optim.Optimizer, ema: EMA):
    def step(batch, _):
        (x,) = batch
        loss = model(x + 0.1 * torch.randn_like(x)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        return {"loss": loss.detach()}
    return step


def test_measure_step_counts_forward_and_backward_and_restores_everything():
    torch.manual_seed(0)
    model = nn.Linear(32, 16, bias=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    ema = EMA(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randn(8, 32),)
    rng = torch.get_rng_state()
    c = cost.measure_step(_linear_step(model, opt, ema), batch, modules={"m": model},
                          optimizers={"m": opt}, emas={"m": ema})
    # forward 2*B*in*out; backward: the weight gradient only (the input needs none) -> 2*B*in*out
    assert c.flops == 2 * (2 * 8 * 32 * 16) and c.batch == 8 and c.seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not opt.state and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), model.parameters()))


def test_fit_measures_before_training_and_trains_as_without(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cost, "LEDGER", [])
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("HWLIB_COST_LEDGER", str(ledger))
    torch.manual_seed(0)
    data = torch.randn(32, 32)
    model = nn.Linear(32, 16)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    ema = EMA(model, 0.9)
    fit(_linear_step(model, opt, ema), ResidentLoader(data, batch_size=8), epochs=2, run_dir=tmp_path / "a",
        modules={"m": model}, optimizers={"m": opt}, emas={"m": ema}, seed=3, progress=False, desc="lin")
    out = capsys.readouterr().out
    assert "cost of lin:" in out and "x 8 steps" in out and "T4 fp32" in out
    entry, = cost.read_ledger(ledger)
    assert entry["name"] == "lin" and entry["steps"] == 8 and entry["batch"] == 8 and entry["flops"] > 0
    # the same run by hand, with no measurement: bitwise the same weights
    torch.manual_seed(0)
    _ = torch.randn(32, 32)
    ref = nn.Linear(32, 16)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.1)
    ref_ema = EMA(ref, 0.9)
    monkeypatch.setattr(cost, "measure_step", lambda *a, **k: cost.StepCost(1, 8, 0.001, "cpu"))
    fit(_linear_step(ref, ref_opt, ref_ema), ResidentLoader(data, batch_size=8), epochs=2, run_dir=tmp_path / "b",
        modules={"m": ref}, optimizers={"m": ref_opt}, emas={"m": ref_ema}, seed=3, progress=False, desc="lin")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_describe_states_flops_time_and_gpu_estimates():
    line = cost.describe("Stage-I", cost.StepCost(flops=2_000_000_000, batch=16, seconds=0.5, device="cpu"), 1000)
    assert line.startswith("cost of Stage-I: 2 GFLOP per step (batch 16) x 1,000 steps = 2 TFLOP")
    assert "8 min here" in line and "30% of peak" in line
    t4 = cost.gpu_estimates(2e12)["T4 fp32"]
    assert abs(t4 - 2e12 / (0.3 * 8.1e12)) < 1e-9
    assert cost.format_duration(0.0123) == "12.3 ms" and cost.format_duration(7200) == "2.0 h"
