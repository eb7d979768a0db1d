"""Run profiles, in one place for every notebook.

``smoke``: seconds, tiny data and models (tests). ``quick``: a 2-core CPU in ~10 minutes per
notebook with recognisable results. ``gpu``: about an hour on one free Colab T4 (16 GB). ``full``: the papers'
and the assignment's settings, chosen explicitly. ``auto`` picks ``gpu`` when CUDA is available, else ``quick``;
``$HWLIB_PROFILE`` replaces ``auto`` (an explicit profile argument, e.g. ``get_profile(nb, "full")``, wins over it).
Each notebook's settings live in ``hwlib/profiles/<notebook>.py`` as ``PROFILES = {"smoke": {...}, "quick": {...},
"gpu": {...}, "full": {...}}``.

**Dry run.** With ``$HWLIB_DRYRUN=1`` a profile keeps every architecture, width, timestep count and code path but
takes the notebook's ``DRYRUN`` settings on top (data sets of a few batches, batches of 2, evaluation on a few
samples); :func:`hwlib.train.fit` stops each training call after two optimiser steps and bf16 autocast is on for
the CPU. ``make test`` runs every notebook's ``full`` profile this way.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

NAMES = ("smoke", "quick", "gpu", "full")
_resolved: set[str] = set()  # every profile get_profile resolved in this process


def is_dry_run() -> bool:
    """True when ``$HWLIB_DRYRUN`` is set to 1 / true / yes (see the module's docstring)."""
    return (os.environ.get("HWLIB_DRYRUN") or "").strip().lower() in ("1", "true", "yes")


def is_smoke_run() -> bool:
    """True when this process resolved the ``smoke`` profile (or ``$HWLIB_PROFILE`` is smoke): its outputs are
    throwaway and never go into the checkout's committed folders."""
    return "smoke" in _resolved or (os.environ.get("HWLIB_PROFILE") or "").strip().lower() == "smoke"


class Config(dict):
    """A dict whose keys are also attributes (``cfg.epochs``); nested dicts become Configs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if isinstance(value, dict) and not isinstance(value, Config):
                self[key] = Config(value)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}; keys: {sorted(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def resolve_profile(profile: str = "auto") -> str:
    """Turn ``profile`` into one of :data:`NAMES`; ``auto`` means ``$HWLIB_PROFILE`` when set."""
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a string ('auto', {', '.join(map(repr, NAMES))}), not {profile!r} "
                        f"({type(profile).__name__})")
    chosen = (profile or "auto").strip().lower()
    if chosen == "auto":  # only `auto` is replaced by the environment: an explicit profile wins
        chosen = (os.environ.get("HWLIB_PROFILE") or "auto").strip().lower()
    if chosen == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "quick"
    if chosen not in NAMES:
        raise ValueError(
            f"unknown profile {chosen!r}: choose one of 'auto', {', '.join(map(repr, NAMES))} "
            "(set by the notebook's `profile` parameter or the HWLIB_PROFILE environment variable)"
        )
    return chosen


def oversubscription_warning(threads: int, load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when ``threads`` torch threads plus the machine's load exceed its cores (None otherwise).

    OpenMP threads wait for each other at every parallel region; on a 2-core machine a notebook at 2 threads next to
    another job ran its StackGAN steps about 40 times slower (4.29 s against 0.103 s per step, measured by the cost
    line). The numbers are the same (they depend on the thread count, not on the load); only the time is not."""
    if load is None:
        if not hasattr(os, "getloadavg"):
            return None
        load = os.getloadavg()[0]
    cores = cores or os.cpu_count() or 1
    if threads <= 1 or threads + load <= cores + 0.5:
        return None
    return (f"hwlib: warning: {threads} torch threads on {cores} cores with a load average of {load:.1f}: the threads "
            f"will wait for each other and training can be many times slower. Wait for the other jobs, or start the "
            f"kernel with OMP_NUM_THREADS=1 (numbers are bitwise reproducible only at the same thread count).")


def _module(notebook: str):
    """``hwlib.profiles.<name>`` of ``notebook`` (``"03_cgan_mnist"`` -> ``cgan_mnist``)."""
    module_name = notebook.split("_", 1)[-1] if notebook[:2].isdigit() else notebook
    try:
        return importlib.import_module(f"hwlib.profiles.{module_name}")
    except ModuleNotFoundError:
        raise ValueError(f"no profiles for notebook {notebook!r} (expected hwlib/profiles/{module_name}.py)") from None


def training_calls(notebook: str, cfg: Any) -> dict[str, tuple[int, int]]:
    """{training run: (batch size, optimiser steps)} that ``notebook`` makes under the settings ``cfg``
    (the ``training_calls`` of its profile module)."""
    return _module(notebook).training_calls(cfg)


def get_profile(notebook: str, profile: str = "auto", verbose: bool = True, **overrides: Any) -> Config:
    """The settings of ``notebook`` (e.g. ``"03_cgan_mnist"``) under ``profile``.

    The result carries ``profile`` and ``notebook`` keys; ``overrides`` replace top-level keys.
    """
    name = resolve_profile(profile)
    _resolved.add(name)
    module = _module(notebook)
    cfg = Config(module.PROFILES[name])
    if is_dry_run():
        cfg.update(getattr(module, "DRYRUN", {}))
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)} for {notebook!r}; known: {sorted(cfg)}")
    cfg.update(overrides)
    cfg.profile, cfg.notebook = name, notebook
    if verbose:
        source = " (from HWLIB_PROFILE)" if os.environ.get("HWLIB_PROFILE") and (profile or "auto").lower() == "auto" else ""
        dry = " as a DRY RUN (HWLIB_DRYRUN: a few batches of 2, two steps per training call)" if is_dry_run() else ""
        import torch

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        threads = torch.get_num_threads()
        from hwlib.train import autocast, cpu_bf16_is_faster, cpu_has_native_bf16, get_device

        device = get_device()
        if isinstance(autocast(device), torch.autocast):
            precision = "bf16 autocast (HWLIB_CPU_BF16=0: fp32)"
        elif device.type == "cpu" and not cpu_has_native_bf16():
            precision = "fp32 (this CPU has no native bf16; HWLIB_CPU_BF16=force emulates it, ~10x slower)"
        elif device.type == "cpu" and not cpu_bf16_is_faster():
            precision = "fp32 (this CPU's bf16 is no faster than its fp32 without AMX; HWLIB_CPU_BF16=force uses it)"
        else:
            precision = "fp32"
        print(f"hwlib: notebook {notebook}, profile {name!r}{source}{dry}; torch uses {threads} threads on "
              f"{os.cpu_count()} cores" + (f", load average {load:.1f}" if load is not None else "")
              + f"; training in {precision}")
        warning = oversubscription_warning(threads, load) if load is not None else None
        if warning:
            print(warning)
    return Config(cfg)
