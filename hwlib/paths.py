"""Where hwlib reads and writes: never relative to a notebook's working directory.

- data:    ``$HWLIB_DATA``    or ``~/.cache/hwlib``              (datasets, reference statistics)
- runs:    ``$HWLIB_RUNS``    or ``<data>/runs``                 (checkpoints, loss CSVs, per-epoch grids)
- figures: ``$HWLIB_FIGURES`` or ``<repo>/figures`` in a checkout, else ``./figures``

A ``smoke`` run (a process that resolved the smoke profile, or ``$HWLIB_PROFILE=smoke``) never writes into the checkout's committed
``figures/`` or ``benchmarks/results/``, whatever the environment says: :func:`committed_or_scratch` sends it to
``<tmp>/hwlib-smoke/`` instead.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The data cache folder (created on first use)."""
    path = Path(os.environ.get("HWLIB_DATA") or Path.home() / ".cache" / "hwlib").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path | None:
    """The checkout that holds this package (``pyproject.toml`` + ``notebooks/``), or None when installed."""
    root = _PACKAGE_ROOT.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def runs_dir(name: str = "") -> Path:
    """Folder for one training run's checkpoints and logs, e.g. ``runs_dir("03_cgan_mnist/mlp")``."""
    base = Path(os.environ.get("HWLIB_RUNS") or data_dir() / "runs").expanduser()
    path = base / name if name else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def committed_or_scratch(path: Path) -> Path:
    """``path``, unless this is a smoke run or a dry run (``HWLIB_DRYRUN``) and ``path`` lies in the checkout's
    ``figures/`` or ``benchmarks/results/``: then the same relative place under ``<tmp>/hwlib-smoke/``."""
    from hwlib.profiles import is_dry_run, is_smoke_run

    root = repo_root()
    if root is None or not (is_smoke_run() or is_dry_run()):
        return path
    path = Path(os.path.abspath(path))
    for committed in (root / "figures", root / "benchmarks" / "results"):
        if path == committed or committed in path.parents:
            return Path(tempfile.gettempdir()) / "hwlib-smoke" / path.relative_to(root)
    return path


def figures_dir(notebook: str = "") -> Path:
    """Folder for a notebook's figures and GIFs, e.g. ``figures_dir("03_cgan_mnist")``."""
    env = os.environ.get("HWLIB_FIGURES")
    root = repo_root()
    base = Path(env).expanduser() if env else (root / "figures" if root else Path.cwd() / "figures")
    path = committed_or_scratch(base / notebook if notebook else base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shown(path: str | os.PathLike) -> str:
    """``path`` as a report should print it: relative to the checkout (``figures/03_cgan_mnist/mlp_final.png``), to
    the data folder (``<data>/cub``) or to the temporary folder (``<tmp>/...``), never the absolute path of the
    machine that ran it."""
    path = Path(os.path.abspath(path))
    bases = [(repo_root(), ""), (data_dir(), "<data>/"), (Path(tempfile.gettempdir()), "<tmp>/")]
    for base, prefix in bases:
        if base is not None and (path == base or base in path.parents):
            return prefix + path.relative_to(base).as_posix()
    return path.name
