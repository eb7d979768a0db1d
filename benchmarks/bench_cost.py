"""What each notebook's profiles cost: training FLOPs, measured CPU time, and estimates for a T4, an A100 and an H100.

For every notebook and profile the notebook runs as a dry run (``HWLIB_DRYRUN=1``: the profile's real networks in
batches of 2, two steps per training call), and :func:`hwlib.train.fit` writes the FLOPs of one real training step
of each run to a ledger (:mod:`hwlib.cost`). FLOPs per sample (matrix products and convolutions scale linearly
with the batch) times the profile's batch size and steps (``training_calls`` in ``hwlib/profiles/<notebook>.py``)
give the training FLOPs of the real run. The CPU column is the newest from-scratch wall time of the notebook in
``quick`` (``bench_train_speed.py --from-scratch``: no checkpoints, compilation included; ``cpu_source`` names the
result, its device and threads), never a published run's wall time, which may have resumed from checkpoints; the GPU
columns assume
:data:`hwlib.cost.UTILISATION` of the dense peak (:data:`hwlib.cost.PEAK`): compute-bound lower bounds that leave out
sampling and evaluation. Writes ``benchmarks/results/cost.json`` and prints the README's table.
Rows of other profiles and notebooks already in ``cost.json`` are kept. Usage:
``python benchmarks/bench_cost.py [--profiles quick gpu full] [--notebooks 01 02 03 04]``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import hwlib
from hwlib import cost, nbtools
from hwlib.bench import read_results, write_result

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [p.stem for p in nbtools.published()]


def from_scratch_seconds(notebook: str) -> tuple[float | None, str | None]:
    """The newest ``quick`` from-scratch wall time of ``notebook`` (``notebook_time_*_from_scratch*.json``) and where it
    comes from ("<result> (<device>)"), or (None, None) if it was never timed from scratch."""
    timed = [(r["date"], r["notebooks"][notebook]["wall_s"], f"{r['benchmark']} ({r['device']})")
             for r in read_results("notebook_time_*_from_scratch*") if notebook in r.get("notebooks", {})]
    if not timed:
        return None, None
    _, wall, source = max(timed)
    return wall, source


def dry_run(notebook: str, profile: str, work: Path) -> tuple[list[dict], float]:
    """Run ``notebook`` in ``profile`` as a dry run; return its cost ledger and wall seconds."""
    ledger = work / f"{notebook}_{profile}.jsonl"
    start = time.perf_counter()
    nbtools.execute(notebook, work / f"{notebook}_{profile}.ipynb", work, {"profile": profile},
                    env={"HWLIB_DRYRUN": "1", "HWLIB_COST_LEDGER": str(ledger)})
    return cost.read_ledger(ledger), time.perf_counter() - start


def price(notebook: str, profile: str, ledger: list[dict]) -> dict:
    """Training FLOPs of ``profile``'s real run from the dry run's FLOPs per sample."""
    cfg = hwlib.get_profile(notebook, profile, verbose=False)
    calls = hwlib.profiles.training_calls(notebook, cfg)
    per_sample = {e["name"]: e["flops"] / e["batch"] for e in ledger}
    missing = sorted(set(calls) - set(per_sample))
    if missing:
        raise SystemExit(f"{notebook} ({profile}): the dry run did not train {missing}; it trained {sorted(per_sample)}")
    runs = {name: {"batch": b, "steps": s, "flops": per_sample[name] * b * s} for name, (b, s) in calls.items()}
    return {"runs": runs, "flops": sum(r["flops"] for r in runs.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", nargs="+", default=["quick", "gpu", "full"])
    parser.add_argument("--notebooks", nargs="+", default=[n[:2] for n in NOTEBOOKS])
    args = parser.parse_args()
    if hwlib.profiles.is_dry_run():
        raise SystemExit("unset HWLIB_DRYRUN: this script prices the real profiles")
    previous = ROOT / "benchmarks" / "results" / "cost.json"  # rows of profiles not re-run this time are kept
    table = json.loads(previous.read_text())["table"] if previous.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for notebook in (n for n in NOTEBOOKS if n[:2] in args.notebooks):
            wall, source = from_scratch_seconds(notebook)
            for profile in args.profiles:
                ledger, seconds = dry_run(notebook, profile, Path(tmp))
                row = price(notebook, profile, ledger)
                row["dry_run_seconds"] = round(seconds, 1)
                row["cpu_seconds"], row["cpu_source"] = (wall, source) if profile == "quick" else (None, None)
                row["gpu_seconds"] = {k: round(v, 3) for k, v in cost.gpu_estimates(row["flops"]).items()}
                table[f"{notebook}/{profile}"] = row
                print(f"{notebook:20s} {profile:6s} {row['flops']:.3g} FLOP (dry run {seconds:.0f} s)", flush=True)
    write_result("cost", {"utilisation": cost.UTILISATION, "peak_flops": cost.PEAK, "table": table})
    gpus = list(cost.PEAK)
    print("\n| notebook | profile | training FLOPs | this CPU (measured) | " + " | ".join(gpus) + " |")
    print("|---|---|---|---|" + "---|" * len(gpus))
    for key, row in sorted(table.items(), key=lambda kv: (kv[0].split("/")[0], ["quick", "gpu", "full"].index(kv[0].split("/")[1]))):
        nb, profile = key.split("/")
        cpu = cost.format_duration(row["cpu_seconds"]) if row["cpu_seconds"] else "–"
        print(f"| {nb} | {profile} | {cost.format_flops(row['flops'])} | {cpu} | "
              + " | ".join(cost.format_duration(row["gpu_seconds"][g]) for g in gpus) + " |")


if __name__ == "__main__":
    main()
