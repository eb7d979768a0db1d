"""hwlib: the shared helpers behind the course notebooks on deep generative models.

One import serves every notebook (``import hwlib``); the pieces live in small modules:

- ``hwlib.profiles``  -- smoke / quick / full settings per notebook (``hwlib.get_profile``)
- ``hwlib.paths``     -- data, cache, run and figure folders (env vars ``HWLIB_DATA`` ...)
- ``hwlib.data``      -- MNIST from four offline-first sources, resident batch iterator, birds
- ``hwlib.train``     -- device, seeding, EMA, checkpoints, the resumable training loop
- ``hwlib.viz``       -- grids, GIFs, loss curves
- ``hwlib.models``    -- the networks; ``hwlib.diffusion`` the diffusion maths; ``hwlib.metrics``
"""
import os as _os
import sys as _sys

from hwlib.paths import data_dir, figures_dir, runs_dir, shown
from hwlib.profiles import get_profile, resolve_profile


def _figures_inline_in_kernels() -> None:
    """Show figures inline in a Jupyter kernel even if it inherited ``MPLBACKEND=Agg`` from its shell.

    papermill and nbval kernels inherit the environment; with Agg (usual in CI and headless shells)
    every ``plt.show()`` would silently produce nothing and executed notebooks would lose their figures.
    """
    if "ipykernel" not in _sys.modules or _os.environ.get("MPLBACKEND", "").lower() != "agg":
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        del _os.environ["MPLBACKEND"]
        shell.run_line_magic("matplotlib", "inline")  # backend, PNG formatters and the flush hook


_figures_inline_in_kernels()

__version__ = "0.1.0"
__all__ = ["data_dir", "figures_dir", "runs_dir", "shown", "get_profile", "resolve_profile", "__version__"]
