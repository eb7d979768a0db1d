"""The spread of a notebook's headline numbers over training seeds: runs the notebook under papermill once per seed.

Each run records its headline numbers through ``hwlib.report.record_seed`` as
``benchmarks/results/seeds/<notebook>_<profile>_seed<k>.json``; the notebook's "spread over seeds" cell reads them
all back (``hwlib.report.print_seed_spread``). Checkpoints and figures of these runs go to a scratch folder, so the
committed figures stay those of the published run (seed 0). The folder is a fresh one per invocation (printed), so every
seed trains with today's code: a run resumes from checkpoints only with ``--scratch DIR`` naming the folder of an
interrupted run, since resuming keys on the profile's settings, not on the code that trained them. Threads are pinned (``--threads``, default 1):
numbers are bitwise reproducible only at the same thread count.

Usage: ``python benchmarks/bench_seeds.py 03_cgan_mnist --seeds 1 2 [--profile quick] [--threads 1]``.

``--compare seeds/before_fast_core`` runs nothing: it sets every headline number's mean (min–max) over the recorded
seeds beside the same over an archived set of seeds (there: the runs made before ``hwlib.train``'s fused Adam, bf16
autocast and ``torch.compile``), says whether the new mean lies inside the archived range, and writes
``benchmarks/results/seeds/compare_<notebook>_<profile>[_<tag>].json`` (``--tag``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hwlib import nbtools
from hwlib.bench import write_result
from hwlib.report import print_seed_spread, seed_table, spread


def run_seed(notebook: str, profile: str, seed: int, threads: int, scratch: Path) -> float:
    """Run ``notebook`` with ``seed`` under papermill; return its wall time in seconds."""
    work = scratch / f"{notebook}_{profile}_seed{seed}"
    start = time.perf_counter()
    nbtools.execute(notebook, work / "out.ipynb", work, {"profile": profile, "seed": seed},
                    env={"OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start


def compare(notebook: str, profile: str, folder: str, tag: str = "") -> None:
    """Print and record the recorded seeds' numbers beside the archived ones in ``folder`` (``tag``: a suffix of the
    result's name, so that a later comparison does not replace an earlier one)."""
    new, old = seed_table(notebook, profile), seed_table(notebook, profile, folder)
    if not old:
        raise SystemExit(f"no archived seeds of {notebook} ({profile}) under benchmarks/results/{folder}")
    rows = {}
    for name in (k for k in new if k in old):
        a, b = list(old[name].values()), list(new[name].values())
        mean = sum(b) / len(b)
        rows[name] = {"before": spread(a), "after": spread(b), "after_mean_inside_before_range": min(a) <= mean <= max(a)}
        print(f"  {name:34s} before {rows[name]['before']:30s} after {rows[name]['after']:30s} "
              f"{'inside' if rows[name]['after_mean_inside_before_range'] else 'OUTSIDE'} the range before")
    write_result(f"seeds/compare_{notebook}_{profile}", {"notebook": notebook, "profile": profile, "before": folder,
                                                          "numbers": rows}, echo=False, tag=tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="e.g. 03_cgan_mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=None,
                        help="the folder of an interrupted run to resume (default: a fresh folder)")
    parser.add_argument("--compare", metavar="FOLDER", help="compare with archived seeds instead of running any")
    parser.add_argument("--tag", default="", help="with --compare: write compare_<notebook>_<profile>_<tag>.json")
    args = parser.parse_args()
    if args.compare:
        compare(args.notebook, args.profile, args.compare, args.tag)
        return
    if args.scratch is None:
        args.scratch = Path(tempfile.mkdtemp(prefix="hwlib-seeds-"))
    print(f"checkpoints and figures of these runs: {args.scratch} (resume with --scratch {args.scratch})", flush=True)
    for seed in args.seeds:
        seconds = run_seed(args.notebook, args.profile, seed, args.threads, args.scratch)
        print(f"{args.notebook} seed {seed}: {seconds:.0f} s", flush=True)
    print_seed_spread(args.notebook, args.profile, seed=args.seeds[0])


if __name__ == "__main__":
    main()
