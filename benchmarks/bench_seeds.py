"""The spread of a notebook's headline numbers over training seeds: runs the notebook under papermill once per seed.

Each run records its headline numbers through ``hwlib.report.record_seed`` as
``benchmarks/results/seeds/<notebook>_<profile>_seed<k>.json``; the notebook's "spread over seeds" cell reads them
all back (``hwlib.report.print_seed_spread``). Checkpoints and figures of these runs go to a scratch folder, so the
committed figures stay those of the published run (seed 0). Threads are pinned (``--threads``, default 1):
numbers are bitwise reproducible only at the same thread count.

Usage: ``python benchmarks/bench_seeds.py 03_cgan_mnist --seeds 1 2 [--profile quick] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hwlib import nbtools
from hwlib.report import print_seed_spread


def run_seed(notebook: str, profile: str, seed: int, threads: int, scratch: Path) -> float:
    """Run ``notebook`` with ``seed`` under papermill; return its wall time in seconds."""
    work = scratch / f"{notebook}_{profile}_seed{seed}"
    start = time.perf_counter()
    nbtools.execute(notebook, work / "out.ipynb", work, {"profile": profile, "seed": seed},
                    env={"OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="e.g. 03_cgan_mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "hwlib-seeds")
    args = parser.parse_args()
    for seed in args.seeds:
        seconds = run_seed(args.notebook, args.profile, seed, args.threads, args.scratch)
        print(f"{args.notebook} seed {seed}: {seconds:.0f} s", flush=True)
    print_seed_spread(args.notebook, args.profile, seed=args.seeds[0])


if __name__ == "__main__":
    main()
