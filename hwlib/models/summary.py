"""Architecture summaries: one row per sub-module (layer, type, output shape, parameters), as a Markdown table with
the full ``print(model)`` folded behind it, so a notebook shows a network in a screen instead of a hundred lines."""
from __future__ import annotations

import html
from typing import Any

import torch
from torch import nn


def _shape(out: Any) -> str:
    """Per-sample shape(s) of a module's output: ``1024×4×4``; tuples joined by commas."""
    if isinstance(out, torch.Tensor):
        return "×".join(map(str, out.shape[1:])) or "scalar"
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape(o) for o in out if o is not None)
    return type(out).__name__


def layer_table(model: nn.Module, *inputs: torch.Tensor, depth: int = 1) -> list[dict[str, Any]]:
    """Run ``model(*inputs)`` once (eval mode, no gradients, modes and RNG state restored) and return one row per call of a
    sub-module ``depth`` levels down: ``{"layer", "type", "output", "params"}``. Sub-modules this forward does not
    call (e.g. a discriminator's second head) get a row with output ``"not in forward"``."""
    targets = {name: m for name, m in model.named_modules() if name and name.count(".") == depth - 1}
    rows: list[dict[str, Any]] = []

    def hook(name: str):
        def record(module: nn.Module, args: Any, out: Any) -> None:
            rows.append({"layer": name, "type": type(module).__name__, "output": _shape(out),
                         "params": sum(p.numel() for p in module.parameters())})
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in targets.items()]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        cuda = sorted({t.device.index or 0 for t in inputs if t.is_cuda})
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):  # a summary must not shift the training's RNG
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    called = {r["layer"] for r in rows}
    rows += [{"layer": name, "type": type(m).__name__, "output": "not in forward",
              "params": sum(p.numel() for p in m.parameters())} for name, m in targets.items() if name not in called]
    return rows


def architecture_markdown(model: nn.Module, *inputs: torch.Tensor, title: str = "", depth: int = 1) -> str:
    """:func:`layer_table` as a Markdown table (per-sample output shapes, parameter counts, the total) followed by
    the full printout in a collapsed ``<details>`` block."""
    rows = layer_table(model, *inputs, depth=depth)
    lines = [f"**{title}**\n" if title else "", "| layer | type | output (per sample) | parameters |", "|---|---|---|---:|"]
    lines += [f"| `{r['layer']}` | {r['type']} | {r['output']} | {r['params']:,} |" for r in rows]
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"| **total** | | | **{total:,}** |")
    lines.append(f"\n<details><summary>full printout</summary>\n\n<pre>{html.escape(repr(model))}</pre>\n</details>\n")
    return "\n".join(lines)
