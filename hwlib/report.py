"""Notebook reporting: claims checked against their numbers, and benchmark tables read from their results.

``claim(cond, text)`` prints a measured statement with ✓ or ✗ beside it, so a sentence can never outlive the
numbers it was written for (the notebook tests fail on a ✗ in a committed notebook).
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

PASS, FAIL = "✓", "✗"


def claim(condition: bool, text: str) -> None:
    """Print ``✓ text`` when ``condition`` holds, else ``✗ text``. A statement, like ``print``: it returns nothing, so
    a notebook cell that ends with a claim shows the claim's line and no stray ``True`` under it."""
    print(f"{PASS if condition else FAIL} {text}")


def spread(values: list[float] | np.ndarray, digits: int = 2) -> str:
    """``mean (min–max, n = k)`` of a few runs' numbers."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ({v.min():.{digits}f}–{v.max():.{digits}f}, n = {len(v)})"


def run_name(record: dict[str, Any]) -> str:
    """A benchmark record's run name less its seed: ``stackgan_ladder/quick_caption_paper_train2`` -> ``quick_caption_paper``."""
    return record["benchmark"].split("/")[-1].rsplit("_train", 1)[0]


def ladder_table(records: list[dict[str, Any]], split: str, step: int | None = None,
                 keys: tuple[str, ...] = ("body", "wing", "crown", "belly", "fid")) -> dict[str, dict[str, list[float]]]:
    """Group StackGAN ladder results (``benchmarks/bench_stackgan_consistency.py``) by run name less its seed.

    For each group, the values of ``keys`` on ``split`` (``"unseen"``/``"seen"``) at ``step`` (default: each
    run's last scored step), one per training seed. Returns ``{group: {key: [values...], "seeds": [...]}}``.
    """
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        rows = [row for row in r["curve"] if split in row and (step is None or row["step"] == step)]
        if not rows:
            continue
        row = rows[-1]
        g = groups[f"{run_name(r)} @ {row['step']}"]
        g["seeds"].append(r["train_seed"])
        for k in keys:
            g[k].append(row[split][k])
    return {k: dict(v) for k, v in groups.items()}


def print_ladder(records: list[dict[str, Any]], split: str, step: int | None = None) -> dict[str, dict[str, list[float]]]:
    """Print :func:`ladder_table` as one line per group: mean (min–max) of each colour accuracy and the FID."""
    table = ladder_table(records, split, step)
    width = max([58] + [len(name) for name in table])  # names spell out a recipe's fields
    print(f"{'run @ steps':{width}s} {'seeds':>5s} " + " ".join(f"{k:>17s}" for k in ("body", "wing", "crown", "belly", "FID")))
    for name, g in sorted(table.items()):
        cells = []
        for k in ("body", "wing", "crown", "belly", "fid"):
            v, d = np.asarray(g[k], dtype=float), 0 if k == "fid" else 2
            cells.append(f"{v.mean():>6.{d}f} ({f'{v.min():.{d}f}–{v.max():.{d}f}':>9s})")
        print(f"{name:{width}s} {len(g['seeds']):5d} " + " ".join(cells))
    return table


def print_grouped(records: list[dict[str, Any]], columns: dict[str, str], digits: int = 2) -> dict[str, dict[str, list[float]]]:
    """Group benchmark records by name less ``_train<seed>`` and print one line per group: ``mean (min–max)`` of each
    column over its seeds. ``columns``: ``{header: dotted key into a record}``, e.g. ``{"S-II body": "stage2.body"}``.
    Returns ``{group: {header: [values...], "seeds": [...]}}``."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        g = groups[run_name(r)]
        g["seeds"].append(r["train_seed"])
        for header, key in columns.items():
            value: Any = r
            for part in key.split("."):
                value = value[part]
            g[header].append(float(value))
    width = max([12] + [len(name) for name in groups])
    cell = max(13, *(len(h) for h in columns))
    print(f"{'run':{width}s} {'seeds':>5s} " + " ".join(f"{h:>{cell}s}" for h in columns))
    for name, g in sorted(groups.items()):
        cells = [f"{np.mean(g[h]):.{digits}f} ({min(g[h]):.{digits}f}–{max(g[h]):.{digits}f})" for h in columns]
        print(f"{name:{width}s} {len(g['seeds']):5d} " + " ".join(f"{c:>{cell}s}" for c in cells))
    return {k: dict(v) for k, v in groups.items()}


def record_seed(notebook: str, profile: str, seed: int, numbers: dict[str, float]) -> None:
    """Keep this run's headline ``numbers`` as ``benchmarks/results/seeds/<notebook>_<profile>_seed<seed>.json``,
    so that :func:`print_seed_spread` can set them beside other training seeds' (``benchmarks/bench_seeds.py``
    runs the seeds). Smoke and dry runs write to the scratch folder instead."""
    from hwlib.bench import write_result

    write_result(f"seeds/{notebook}_{profile}_seed{seed}",
                 {"notebook": notebook, "profile": profile, "seed": seed,
                  "numbers": {k: float(v) for k, v in numbers.items()}}, echo=False)


def seed_table(notebook: str, profile: str, folder: str = "seeds") -> dict[str, dict[int, float]]:
    """``{number: {seed: value}}`` over every recorded seed of ``notebook`` under ``profile`` (see :func:`record_seed`);
    ``folder`` (under ``benchmarks/results/``) reads an archived set instead, e.g. ``seeds/before_fast_core``."""
    from hwlib.bench import results_dir

    table: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(results_dir().glob(f"{folder}/{notebook}_{profile}_seed*.json")):
        r = json.loads(path.read_text())
        for k, v in r["numbers"].items():
            table[k][int(r["seed"])] = v
    return dict(table)


def print_seed_spread(notebook: str, profile: str, seed: int, digits: int = 2) -> dict[str, dict[int, float]]:
    """Print, per headline number, this run's value (``seed``) and the mean (min–max, n) over all recorded seeds."""
    table = seed_table(notebook, profile)
    seeds = sorted({s for values in table.values() for s in values})
    print(f"training seeds recorded for {notebook} ({profile}): {seeds}")
    for name, values in table.items():
        this = f"{values[seed]:.{digits}f}" if seed in values else "–"
        print(f"  {name:34s} this run (seed {seed}) {this:>8s}   over seeds: {spread(list(values.values()), digits)}")
    return table


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def settings_table(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str], why: dict[str, str],
                   skip: tuple[str, ...] = ("profile", "notebook")) -> str:
    """A Markdown table of every setting (nested keys as ``mlp.lr``) where profiles ``a`` and ``b`` differ, with
    the reason ``why[key]`` for each (``why`` must cover every difference: a departure needs a reason)."""
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k not in skip and fa.get(k) != fb.get(k)]
    missing = [k for k in keys if k not in why]
    if missing:
        raise KeyError(f"no reason given for the departures {missing}")
    fmt = lambda v: "–" if v is None else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    rows = [f"| setting | {names[0]} | {names[1]} | why |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {fmt(fa.get(k))} | {fmt(fb.get(k))} | {why[k]} |" for k in keys]
    return "\n".join(rows)
