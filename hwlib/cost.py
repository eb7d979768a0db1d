"""What a training run costs, known before it starts.

:func:`measure_step` runs one real training step under :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
products and convolutions, forward and backward, counted from the real shapes), times a few more, and then puts
back every weight, optimiser state, EMA and RNG state it touched, so training continues as if nothing had run.
:func:`describe` turns (FLOPs per step, steps, seconds per step) into one line with estimates for the GPUs students
use. :func:`fit <hwlib.train.fit>` prints that line before a fresh run and appends it to :data:`LEDGER`
(also written to ``$HWLIB_COST_LEDGER`` as JSON lines when set; ``benchmarks/bench_cost.py`` reads it).

The GPU estimates divide FLOPs by ``UTILISATION`` x peak: a compute-bound lower bound. Small networks are often
bound by kernel launches instead, so a real run can take several times longer; the measured seconds per step on
the current device are the number to trust.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hwlib.bench import device_name

# Dense peak throughput (FLOP/s) of the precision each GPU trains in here: a T4 has no bf16, so it trains in fp32.
PEAK = {"T4 fp32": 8.1e12, "A100 bf16": 312e12, "H100 bf16": 989e12}
UTILISATION = 0.3  # assumed fraction of peak for the estimates
LEDGER: list[dict[str, Any]] = []  # every StepCost fit measured in this process, with its run's name and steps


@dataclass
class StepCost:
    """One training step: ``flops`` (counted at batch ``batch``) and ``seconds`` (measured here, after one warm-up)."""

    flops: int
    batch: int
    seconds: float | None
    device: str

    def total(self, steps: int) -> float:
        return float(self.flops) * steps


def _snapshot(modules: dict[str, nn.Module], optimizers: dict[str, Any], emas: dict[str, Any]) -> dict[str, Any]:
    from hwlib.train import rng_state, unwrap

    return copy.deepcopy({"modules": {k: unwrap(m).state_dict() for k, m in modules.items()},
                          "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                          "emas": {k: e.state_dict() for k, e in emas.items()}, "rng": rng_state(),
                          "training": {k: m.training for k, m in modules.items()}})


def _put_back(snap: dict[str, Any], modules: dict[str, nn.Module], optimizers: dict[str, Any],
              emas: dict[str, Any]) -> None:
    from hwlib.train import set_rng_state, unwrap

    for k, m in modules.items():
        unwrap(m).load_state_dict(snap["modules"][k])
        m.train(snap["training"][k])
        for p in m.parameters():
            p.grad = None
    for k, o in optimizers.items():
        o.load_state_dict(snap["optimizers"][k])
    for k, e in emas.items():
        e.load_state_dict(snap["emas"][k])
    set_rng_state(snap["rng"])


def measure_step(step_fn: Callable[[tuple[torch.Tensor, ...], int], Any], batch: tuple[torch.Tensor, ...], *,
                 modules: dict[str, nn.Module], optimizers: dict[str, Any], emas: dict[str, Any] | None = None,
                 timed: int = 2) -> StepCost:
    """FLOPs of ``step_fn(batch, 0)`` and its seconds per step (mean of ``timed`` steps after the counted one and
    one warm-up step).

    The FLOPs are counted with compiled networks (``torch.compile``) run eagerly; the warm-up step compiles them, so
    the timed steps, and the run that follows, run the compiled code. Every module, optimiser, EMA and RNG state
    is restored afterwards: the run that follows is bitwise the one that would have run without the measurement."""
    from hwlib.train import timer

    emas = emas or {}
    device = next(next(iter(modules.values())).parameters()).device
    snap = _snapshot(modules, optimizers, emas)
    try:
        with torch.compiler.set_stance("force_eager"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")
            with FlopCounterMode(display=False) as counter:  # its module hooks are global ones
                step_fn(batch, 0)
        seconds = None
        if timed > 0:
            step_fn(batch, 1)  # warm-up (and compilation, if any)
            with timer() as t:  # synchronises CUDA around the timed steps
                for i in range(timed):
                    out = step_fn(batch, i + 2)
                if isinstance(out, dict):  # the step's logs are lazy tensors: wait for them
                    [v.item() for v in out.values() if torch.is_tensor(v)]
            seconds = t["seconds"] / timed
    finally:
        _put_back(snap, modules, optimizers, emas)
    size = batch[0].shape[0] if isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]) else 0
    return StepCost(int(counter.get_total_flops()), int(size), seconds, device_name(device))


def format_flops(x: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def gpu_estimates(total_flops: float) -> dict[str, float]:
    """Seconds for ``total_flops`` on each GPU of :data:`PEAK` at :data:`UTILISATION` of its peak."""
    return {name: total_flops / (UTILISATION * peak) for name, peak in PEAK.items()}


def describe(name: str, cost: StepCost, steps: int) -> str:
    """One line: FLOPs per step x steps, the time on this device from the measured steps, and the GPU estimates."""
    total = cost.total(steps)
    here = f"{format_duration(cost.seconds * steps)} here ({cost.seconds:.3g} s/step on {cost.device})" if cost.seconds else ""
    gpus = ", ".join(f"{k} {format_duration(v)}" for k, v in gpu_estimates(total).items())
    return (f"cost of {name}: {format_flops(cost.flops)} per step (batch {cost.batch}) x {steps:,} steps = {format_flops(total)}; "
            f"{here}; at {UTILISATION:.0%} of peak: {gpus}")


def record(name: str, cost: StepCost, steps: int) -> dict[str, Any]:
    """Append the cost of a run to :data:`LEDGER` (and to ``$HWLIB_COST_LEDGER`` when set); returns the entry."""
    entry = {"name": name, "steps": steps, **asdict(cost)}
    LEDGER.append(entry)
    path = os.environ.get("HWLIB_COST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return entry


def read_ledger(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries a run wrote to ``$HWLIB_COST_LEDGER``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
