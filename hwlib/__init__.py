"""hwlib: the shared helpers behind the course notebooks on deep generative models.

One import serves every notebook (``import hwlib``); the pieces live in small modules:

- ``hwlib.profiles``  -- smoke / quick / full settings per notebook (``hwlib.get_profile``)
- ``hwlib.paths``     -- data, cache, run and figure folders (env vars ``HWLIB_DATA`` ...)
- ``hwlib.data``      -- MNIST from four offline-first sources, resident batch iterator, birds
- ``hwlib.train``     -- device, seeding, EMA, checkpoints, the resumable training loop
- ``hwlib.viz``       -- grids, GIFs, loss curves
- ``hwlib.models``    -- the networks; ``hwlib.diffusion`` the diffusion maths; ``hwlib.metrics``
"""
from hwlib.paths import data_dir, figures_dir, runs_dir
from hwlib.profiles import get_profile, resolve_profile

__version__ = "0.1.0"
__all__ = ["data_dir", "figures_dir", "runs_dir", "get_profile", "resolve_profile", "__version__"]
