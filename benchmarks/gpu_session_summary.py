"""Summarise what ``benchmarks/gpu_session.sh`` brought back from a lent GPU into one results file.

Reads the unpacked tarballs (``logs/summary.txt``, ``logs/env.txt``, ``logs/dryrun.log`` -- ``dryrun_full.log`` in
sessions before the `gpu` dry runs --, ``results/ledger.jsonl``, ``nb/<notebook>.ipynb``) and writes
``benchmarks/results/<device>/gpu_session.json``: every step's exit code and seconds, the cost measured for each
training call that started (seconds per step on the device, the steps the profile plans, their product), and each
notebook's progress (cells done, seconds per cell).

Usage: ``python benchmarks/gpu_session_summary.py /path/to/unpacked [--folder h200]``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def notebook_progress(path: Path) -> dict:
    """Cells executed before the run stopped, the slowest ones and the cell that was running."""
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    done = [c for c in cells if c.get("metadata", {}).get("papermill", {}).get("status") == "completed"]
    running = [c for c in cells if c.get("metadata", {}).get("papermill", {}).get("status") == "running"]
    slow = sorted(done, key=lambda c: -(c["metadata"]["papermill"].get("duration") or 0))[:3]
    # the headline numbers a finished notebook records (hwlib.report.record_seed prints "<name>  this run (seed S)  <value>")
    printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in done for o in c.get("outputs", []))
    headline = {m[1].strip(): float(m[2]) for m in re.finditer(r"^ +(\S.*?) +this run \(seed \d+\) +(-?[\d.]+)", printed, re.M)}
    return {"code_cells": len(cells), "completed": len(done), **({"headline": headline} if headline else {}),
            "running_cell": "".join(running[0]["source"]).splitlines()[0] if running else None,
            "slowest_cells": [{"first_line": "".join(c["source"]).splitlines()[0],
                               "seconds": round(c["metadata"]["papermill"]["duration"], 1)} for c in slow]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unpacked", type=Path)
    parser.add_argument("--folder", default="h200", help="subfolder of benchmarks/results for this device")
    args = parser.parse_args()
    src = args.unpacked
    steps = {}
    for line in (src / "logs" / "summary.txt").read_text().splitlines():
        m = re.match(r"(\S+) rc=(\d+) seconds=(\d+) limit=(\d+)", line)
        if m:
            steps[m[1]] = {"rc": int(m[2]), "seconds": int(m[3]), "limit": int(m[4]), "timed_out": m[2] == "124"}
    ledger = [json.loads(line) for line in (src / "results" / "ledger.jsonl").read_text().splitlines() if line.strip()]
    training = {e["name"]: {"batch": e["batch"], "planned_steps": e["steps"], "s_per_step": round(e["seconds"], 4),
                            "projected_minutes": round(e["steps"] * e["seconds"] / 60, 1)}
                for e in ledger if e["batch"] > 2}  # batch 2: the dry runs' calls
    # env.txt ends with "<torch> <numpy> <GPU name>", printed by gpu_session.sh
    torch_version, _, device = (src / "logs" / "env.txt").read_text().strip().splitlines()[-1].split(" ", 2)
    dry_log = next((src / "logs" / f for f in ("dryrun.log", "dryrun_full.log") if (src / "logs" / f).is_file()),
                   src / "logs" / "dryrun.log")
    dry = dry_log.read_text().strip().splitlines()[-1] if dry_log.is_file() else None  # EXTRAS=0: none ran
    record = {
        "benchmark": "gpu_session",
        "device": device,
        "torch": torch_version,
        "what": f"notebooks {', '.join(p.stem[:2] for p in sorted((src / 'nb').glob('*.ipynb')))} in profile auto (= gpu) "
                + ("side by side on one GPU with the dry runs, each notebook stopped at its time limit; seconds per "
                   "step are the two timed steps of hwlib.cost.measure_step, taken while the other jobs shared the GPU "
                   "(time-sliced), so they are upper bounds" if dry else
                   "alone on the GPU (EXTRAS=0), each stopped at its time limit; seconds per step are the two timed steps "
                   "of hwlib.cost.measure_step"),
        "steps": steps,
        "dry_runs": dry,
        "training_calls": training,
        "notebooks": {p.stem: notebook_progress(p) for p in sorted((src / "nb").glob("*.ipynb"))},
    }
    out = ROOT / "benchmarks" / "results" / args.folder / "gpu_session.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
