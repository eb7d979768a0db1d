"""Benchmark bookkeeping: name the device and write ``benchmarks/results/<name>.json``."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from hwlib.paths import committed_or_scratch, repo_root


DENSE_OPS = ("convolution", "mm", "linear")  # profiler names of convolutions and matrix products, eager or compiled


def is_dense(op: str) -> bool:
    """Whether a ``torch.profiler`` event name is a convolution or a matrix product (the work the benchmarks' speed
    ceilings keep)."""
    return any(k in op for k in DENSE_OPS)


def gemm_gflop_per_s(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048,
                     repeats: int = 10) -> float:
    """This device's dense ceiling: GFLOP/s of an (n × n) @ (n × n) matrix product in ``dtype`` (2n³ FLOPs; the
    median of ``repeats`` after one warm-up), at the thread count torch runs with. A convolution or matrix product
    in a network runs at some share of it; a benchmark divides its dense work by this to say how far that is from
    the device's limit."""
    device = torch.device(device)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    seconds = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first call is the warm-up
            seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(seconds) / 1e9


def ratio_summary(ratios: list[float], name: str = "speedup", digits: int = 3) -> dict[str, Any]:
    """Per-round ratios of two sides timed in turns -> ``{name: median, name_min, name_max, name_per_round}``, rounded
    to ``digits``: the median is the result, the range how far the shared machine moved it within the run."""
    return {name: round(statistics.median(ratios), digits), f"{name}_min": round(min(ratios), digits),
            f"{name}_max": round(max(ratios), digits), f"{name}_per_round": [round(v, digits) for v in ratios]}


def minor_page_faults() -> int:
    """This process's minor page faults so far (memory the kernel mapped afresh): the difference over a timed loop,
    per step, says how much of a step's memory the allocator handed back and had to fault in again."""
    import resource  # POSIX only: imported where it is used, so that hwlib.bench imports everywhere

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def device_name(device: torch.device | str | None = None) -> str:
    """A human-readable name: the GPU model, or the CPU model with its core count."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _results_dir() -> Path:
    return (repo_root() or Path.cwd()) / "benchmarks" / "results"


def results_dir() -> Path:
    """Where :func:`write_result` writes: ``benchmarks/results/``, or its scratch twin in smoke and dry runs."""
    return committed_or_scratch(_results_dir())


def write_result(name: str, result: dict[str, Any], device: torch.device | str | None = None,
                 echo: bool = True, tag: str = "") -> Path:
    """Write ``result`` plus device, versions and date to ``benchmarks/results/<name>[_<tag>].json``; print it
    (``echo``) or, for notebooks, one line naming the file. ``tag``: a benchmark's ``--tag`` (e.g. another machine's
    run), so that it does not replace the untagged result."""
    name += f"_{tag}" if tag else ""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "device": device_name(device),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min": round(os.getloadavg()[0], 2),  # CPU timings on a shared machine need this
        **result,
    }
    path = out / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2) if echo else f"results written to benchmarks/results/{name}.json")
    return path


def read_results(pattern: str) -> list[dict[str, Any]]:
    """Every ``benchmarks/results/<pattern>.json`` record (glob pattern, e.g. ``"stackgan_ladder/quick_*"``), by name."""
    paths = sorted(_results_dir().glob(f"{pattern}.json"))
    return [json.loads(p.read_text()) for p in paths]


def _serve(conn: Any, factory: Any, settings: dict[str, Any], env: dict[str, str]) -> None:
    """A :class:`Worker`'s process: build ``factory(**settings)``, then call its methods for the parent until told to
    stop; an exception goes back as its traceback."""
    import traceback

    try:
        os.environ.update(env)
        torch.set_num_threads(settings.pop("threads"))
        obj = factory(**settings)
        conn.send(("ok", None))
        while True:
            method, args = conn.recv()
            if method is None:
                return
            conn.send(("ok", getattr(obj, method)(*args)))
    except Exception:  # noqa: BLE001 - the parent raises it
        conn.send(("error", traceback.format_exc()))


class Worker:
    """An object built and called in a process of its own, for comparisons whose sides need process-wide settings
    that cannot be undone (glibc's allocator, :func:`hwlib.train.keep_freed_memory`) or must not leak into each other.

    ``factory(**settings)`` (a module-level class or function: ``spawn`` pickles it by name) builds the object in a
    fresh interpreter with ``env`` added to its environment and the parent's torch thread count;
    ``worker("method", *args)`` runs ``obj.method(*args)`` there and returns its (picklable) result. One call at a time: the other workers wait, so timings taken in turns do
    not share the CPU."""

    def __init__(self, factory: Any, name: str, env: dict[str, str] | None = None, **settings: Any) -> None:
        import multiprocessing

        self.name = name
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        settings = {"threads": torch.get_num_threads(), **settings}
        self.process = context.Process(target=_serve, args=(child, factory, settings, env or {}), daemon=True)
        self.process.start()
        self._answer()

    def _answer(self) -> Any:
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"{self.name} failed in its process:\n{value}")
        return value

    def __call__(self, method: str, *args: Any) -> Any:
        self.conn.send((method, args))
        return self._answer()

    def close(self) -> None:
        """Stop the process (it has already ended if a call failed)."""
        try:
            self.conn.send((None, ()))
        except OSError:  # BrokenPipeError: the process ended after a failed call
            pass
        self.process.join(timeout=60)
