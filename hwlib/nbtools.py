"""Notebook housekeeping: publish an executed notebook (from ``runs/``) into ``notebooks/``.

``python -m hwlib.nbtools publish runs/03_cgan_mnist.ipynb [notebooks/03_cgan_mnist.ipynb]``
keeps the outputs but strips papermill and widget metadata, execution timestamps, and widget
views (their plain-text fallback stays), and sets the kernelspec to ``python3``.
``python -m hwlib.nbtools check notebooks/*.ipynb`` verifies the conventions.
``python -m hwlib.nbtools run OUT_DIR NOTEBOOK...`` runs the notebooks (profile ``auto``) under papermill into
``OUT_DIR``, two at a time on a CPU (:func:`run_all`, ``make run``), with a summary in ``OUT_DIR/run_all.json``.
``python -m hwlib.nbtools report OUT_DIR NOTEBOOK...`` writes one self-contained HTML file per notebook (``make report``).
``python -m hwlib.nbtools numbers NOTEBOOK...`` lists the decimal numbers of the Markdown that no output prints
(:func:`unprinted_numbers`): after a re-run, the prose that still quotes the old run.
:func:`execute` runs a notebook under papermill with its checkpoints and figures in a scratch folder (the dry-run
tests, ``benchmarks/bench_cost.py`` and ``benchmarks/bench_seeds.py`` use it).
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import mimetypes
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hwlib.paths import repo_root

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _notebook_path(notebook: str | Path) -> Path:
    """A path as given, or a name (``"03_cgan_mnist"``) under the checkout's ``notebooks/``."""
    path = Path(notebook)
    return path if path.suffix else (repo_root() or Path.cwd()) / "notebooks" / f"{notebook}.ipynb"


def _papermill(path: Path, out: Path, parameters: dict[str, Any], *extra: str) -> list[str]:
    """The papermill command that runs ``path`` into ``out`` with ``parameters``, kernel ``python3``, no progress bar."""
    args = [sys.executable, "-m", "papermill", str(path), str(out), "-k", "python3", "--no-progress-bar", *extra]
    for key, value in parameters.items():
        args += ["-p", key, str(value)]
    return args


def scratch_env(work: Path) -> dict[str, str]:
    """The environment of notebooks run in the scratch folder ``work``: checkpoints in ``work/runs``, figures in
    ``work/figures``, no progress bars, matplotlib's Agg backend and ``$HWLIB_PROFILE`` empty (unset for
    :mod:`hwlib.profiles`: the ``profile`` parameter decides, not the caller's setting)."""
    return {"HWLIB_RUNS": str(work / "runs"), "HWLIB_FIGURES": str(work / "figures"), "HWLIB_PROGRESS": "off",
            "MPLBACKEND": "Agg", "HWLIB_PROFILE": ""}


def execute(notebook: str | Path, out: Path, work: Path, parameters: dict[str, Any], env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``notebook`` (a path, or a name under the checkout's ``notebooks/``) with papermill into ``out``, with
    ``parameters`` (e.g. ``{"profile": "quick", "seed": 1}``), in the scratch folder ``work`` (:func:`scratch_env`)
    and ``env`` on top. Output is captured (text); ``check`` raises on failure with the end of papermill's error."""
    path = _notebook_path(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **scratch_env(work), **(env or {})}
    run = subprocess.run(_papermill(path, out, parameters), env=full_env, capture_output=True, text=True)
    if check and run.returncode != 0:
        raise RuntimeError(f"{path.name} failed under papermill ({parameters}):\n{run.stderr[-3000:]}")
    return run


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers narrow), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def lanes_and_threads(cores: int, gpu: bool) -> tuple[int, int]:
    """How many notebooks :func:`run_all` runs at once, and the torch threads of each: ``$HWLIB_LANES`` and
    ``$OMP_NUM_THREADS`` where set; otherwise one at a time where a GPU trains them (they would share its memory), and
    on a CPU with two cores or more two at once, each on half the cores. The quick profiles' networks are small, and
    much of a notebook (Python, data, compilation, evaluation) uses one core: on the 2-core Intel Xeon without AMX
    each notebook took 1.3-1.6x longer at 1 thread beside another than alone at 2, and the four from scratch 1,506 s
    against about 1,930 one after another (README, "Speed on a CPU"). The numbers are then a 1-thread run's: float
    sums in another order than at 2 threads, so GAN scores move within their seed spread."""
    lanes = int(os.environ.get("HWLIB_LANES") or 0) or (1 if gpu or cores < 2 else 2)
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, cores // lanes)
    return lanes, threads


def run_all(notebooks: list[str | Path], out_dir: Path, parameters: dict[str, Any], *, lanes: int, threads: int,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``notebooks`` under papermill into ``out_dir/<name>.ipynb``, ``lanes`` at a time, each with ``threads``
    torch threads (``OMP_NUM_THREADS``) and ``env`` on top of this process's environment, in the order given, each lane
    taking the next when its notebook ends (``make run``: 01, the longest, in one lane; 02, 03 and 04 one after
    another in the other). With one lane papermill's log streams here; with more, each notebook's goes to
    ``out_dir/<name>.log`` and a line marks its start and end. A failing notebook does not stop the others; Ctrl-C stops them all (their checkpoints stay).
    Returns ``{"lanes", "threads", "wall_s", "notebooks": {name: {"wall_s", "returncode", "log"}}}``."""
    paths = [_notebook_path(n) for n in notebooks]
    out_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    results: dict[str, dict[str, Any]] = {}
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()
    start = time.perf_counter()

    def one(path: Path) -> None:
        log = out_dir / f"{path.stem}.log" if lanes > 1 else None
        began = time.perf_counter()
        with open(log, "w") if log else contextlib.nullcontext() as sink:
            if log:
                print(f"== {path.stem}: started at {began - start:.0f} s (log: {log})", flush=True)
            else:
                print(f"== papermill {path} -> {out_dir / path.name}", flush=True)
            proc = subprocess.Popen(_papermill(path, out_dir / path.name, parameters, "--log-output"), env=full_env,
                                    stdout=sink, stderr=subprocess.STDOUT if sink else None)
            with lock:
                running.add(proc)
            code = proc.wait()
            with lock:
                running.discard(proc)
        wall = time.perf_counter() - began
        results[path.stem] = {"wall_s": round(wall, 1), "returncode": code, "log": str(log) if log else None}
        status = "done" if code == 0 else f"FAILED (exit code {code}{f'; see {log}' if log else ''})"
        print(f"== {path.stem}: {status} in {wall:.0f} s", flush=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=lanes) as pool:
        futures = [pool.submit(one, path) for path in paths]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            with lock:
                for proc in running:
                    proc.terminate()
            raise
    return {"lanes": lanes, "threads": threads, "wall_s": round(time.perf_counter() - start, 1),
            "notebooks": {p.stem: results[p.stem] for p in paths if p.stem in results}}


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


PROGRESS_LINE = re.compile(r"^[^\n]*\d+%\|[^\n]*\|\s*\d+/\d+")  # a tqdm bar: "name:  50%|#####     | 2/4 [..]"


def published() -> list[Path]:
    """The checkout's notebooks, ``notebooks/NN_*.ipynb``, in order."""
    return sorted(((repo_root() or Path.cwd()) / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def wall_seconds(path: Path) -> int | None:
    """The wall time of the run a notebook was published from (:func:`clean` keeps it), or None."""
    return json.loads(Path(path).read_text()).get("metadata", {}).get("hwlib", {}).get("wall_seconds")


def slowest_cells(path: Path, n: int = 8) -> list[dict]:
    """The ``n`` longest code cells of an executed notebook (papermill's per-cell durations), longest first:
    [{"cell": index among all cells, "seconds", "source": the cell's first line}]; [] where none was timed."""
    cells = json.loads(Path(path).read_text()).get("cells", [])
    timed = [{"cell": i, "seconds": round(float(c["metadata"]["papermill"]["duration"]), 1),
              "source": "".join(c.get("source", "")).strip().split("\n")[0][:100]}
             for i, c in enumerate(cells)
             if c["cell_type"] == "code" and c.get("metadata", {}).get("papermill", {}).get("duration") is not None]
    return sorted(timed, key=lambda c: -c["seconds"])[:n]


def clean(nb: dict) -> dict:
    """Strip run metadata and papermill's ``injected-parameters`` cell from a notebook dict (in place); return it.

    The injected cell pins the profile a run used (``profile = "quick"``); committed, it would make "Run all" on
    a GPU train the CPU profile. Without it the ``parameters`` cell's ``profile = "auto"`` decides.
    """
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in _tags(c)]
    meta = nb.setdefault("metadata", {})
    duration = meta.get("papermill", {}).get("duration")
    if duration is not None:  # the wall time of the published run (benchmarks/bench_cost.py reports it)
        meta["hwlib"] = {"wall_seconds": round(float(duration))}
    for key in ("papermill", "widgets", "vscode", "toc", "varInspector"):
        meta.pop(key, None)
    meta["kernelspec"] = dict(KERNELSPEC)
    meta.setdefault("language_info", {"name": "python"})
    for cell in nb["cells"]:
        cmeta = cell.get("metadata", {})
        for key in ("papermill", "execution", "collapsed", "scrolled", "jupyter"):
            cmeta.pop(key, None)
        cell.pop("id", None) if nb.get("nbformat_minor", 0) < 5 else None
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if not data:
                    continue
            out.get("metadata", {}).pop("papermill", None)
            if out.get("output_type") == "stream":  # progress-bar residue is not part of a report
                text = "".join(out.get("text", ""))
                kept = [line for line in text.replace("\r", "\n").splitlines(True) if not PROGRESS_LINE.match(line)]
                if not "".join(kept).strip():
                    continue
                out["text"] = "".join(kept)
            outputs.append(out)
        cell["outputs"] = outputs
    return nb


def problems(nb: dict, name: str) -> list[str]:
    """Convention violations of one notebook."""
    found = []
    cells = nb["cells"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    injected = sum("injected-parameters" in _tags(c) for c in cells)
    if injected:
        found.append(f"{name}: {injected} papermill 'injected-parameters' cell(s) pin a profile; publish with "
                     "`python -m hwlib.nbtools publish`, which removes them")
    failed = [line for c in cells if c["cell_type"] == "code" for out in c.get("outputs", [])
              for line in "".join(out.get("text", "")).splitlines() if line.startswith("✗ ")]
    for line in failed:
        found.append(f"{name}: a claim does not hold for its numbers: {line}")
    if len(tagged) != 1:
        found.append(f"{name}: {len(tagged)} cells tagged 'parameters' (need exactly one)")
    elif "profile" not in "".join(cells[tagged[0]]["source"]):
        found.append(f"{name}: the parameters cell does not set `profile`")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        found.append(f"{name}: kernelspec is not python3")
    if "papermill" in nb.get("metadata", {}) or "widgets" in nb.get("metadata", {}):
        found.append(f"{name}: papermill/widget metadata not stripped")
    first = "".join(cells[0]["source"]) if cells else ""
    if "colab.research.google.com" not in first:
        found.append(f"{name}: first cell lacks the Colab badge")
    if not any("google.colab" in "".join(c["source"]) for c in cells[:3] if c["cell_type"] == "code"):
        found.append(f"{name}: no Colab install cell at the top")
    missing = sum("id" not in c for c in cells)
    if (nb.get("nbformat", 0), nb.get("nbformat_minor", 0)) >= (4, 5) and missing:
        found.append(f"{name}: {missing} cells without an id (nbformat 4.5 requires one per cell)")
    return found


_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def inline_images(nb: dict, base: Path) -> dict:
    """Replace markdown image links to local files (relative to ``base``) by ``data:`` URIs, in place; return nb.

    nbconvert's ``--embed-images`` refuses files outside the notebook's folder, and the figures live in
    ``../figures/``.
    """
    def embed(match: re.Match) -> str:
        alt, src = match.groups()
        path = (base / src).resolve()
        if "://" in src or src.startswith("data:") or not path.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"![{alt}](data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()})"

    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = _IMAGE_LINK.sub(embed, "".join(cell["source"]))
    return nb


def report(notebook: Path, out_dir: Path) -> Path:
    """A self-contained HTML export of an executed notebook (figures embedded) as ``out_dir/<name>.html``."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = inline_images(nbformat.reads(notebook.read_text(), as_version=4), notebook.parent)
    html, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{notebook.stem}.html"
    out.write_text(html)
    return out


_NUMBER = re.compile(r"(?<![\w.§])\d+(?:,\d{3})*\.\d+(?![\w])")  # 0.47, 1,234.5; not §5.3, v1.2 or 3 alone
_NOT_PROSE = [re.compile(r"\$\$.*?\$\$", re.S), re.compile(r"\$[^$]*\$"), re.compile(r"`[^`]*`"),
              re.compile(r"^#+ .*$", re.M)]  # maths, code spans, headings


def _roundings(number: str) -> set[str]:
    """Every way a prose number can quote the printed ``number``: rounded to 0-4 decimals (half up or half even),
    also as a percentage of it or a fraction of it (``0.437`` is quoted as ``43.7 %``, ``43.7 %`` as ``0.437``)."""
    from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

    value = Decimal(number.replace(",", ""))
    return {str(v.quantize(Decimal(1).scaleb(-d), rounding=mode)) for v in (value, value * 100, value / 100)
            for d in range(5) for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN)}


def unprinted_numbers(nb: dict) -> list[tuple[int, str, str]]:
    """(cell index, number, its context) for every decimal number in a Markdown cell that no output of the notebook
    prints (text, or a text/* display such as a Markdown table), up to rounding and percentages. A report, not a
    check: papers' numbers and constants are quoted by design; a stale one is a sentence written for another run."""
    printed: set[str] = set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                for n in set(_NUMBER.findall("".join(text))):
                    printed |= _roundings(n)
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        prose = "".join(cell["source"])
        for pattern in _NOT_PROSE:
            prose = pattern.sub(" ", prose)
        for m in _NUMBER.finditer(prose):
            if m.group().replace(",", "") not in printed:
                found.append((i, m.group(), " ".join(prose[max(0, m.start() - 60):m.end() + 20].split())))
    return found


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "publish":
        src = Path(argv[1])
        dst = Path(argv[2]) if len(argv) > 2 else Path("notebooks") / src.name
        nb = clean(json.loads(src.read_text()))
        dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print(f"published {src} -> {dst}")
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        found = [p for f in argv[1:] for p in problems(json.loads(Path(f).read_text()), f)]
        print("\n".join(found) or "notebooks follow the conventions")
        return 1 if found else 0
    if len(argv) >= 2 and argv[0] == "numbers":
        for f in argv[1:]:
            found = unprinted_numbers(json.loads(Path(f).read_text()))
            print(f"{f}: {len(found)} number(s) in the Markdown that no output prints")
            for i, number, context in found:
                print(f"  cell {i}: {number}  ...{context}...")
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        import torch

        cores = cpu_cores()
        lanes, threads = lanes_and_threads(cores, torch.cuda.is_available())
        load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"
        print(f"== {len(argv) - 2} notebooks, {lanes} at a time, {threads} torch threads each ({cores} cores, load "
              f"{load}; HWLIB_LANES and OMP_NUM_THREADS choose otherwise)", flush=True)
        try:
            summary = run_all(argv[2:], Path(argv[1]), {"profile": "auto"}, lanes=lanes, threads=threads)
        except KeyboardInterrupt:
            print("== interrupted: the notebooks were stopped; their checkpoints are kept, and running again resumes "
                  "from them", flush=True)
            return 130
        (Path(argv[1]) / "run_all.json").write_text(json.dumps(summary, indent=1) + "\n")
        failed = [name for name, r in summary["notebooks"].items() if r["returncode"] != 0]
        print(f"== {len(summary['notebooks'])} notebooks in {summary['wall_s']:.0f} s"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
        return 1 if failed else 0
    if len(argv) >= 3 and argv[0] == "report":
        for f in argv[2:]:
            print(f"report: {report(Path(f), Path(argv[1]))}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
