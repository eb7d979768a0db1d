"""Shared test set-up: quiet, single-threaded torch and a private data cache per test session."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HWLIB_PROGRESS", "off")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def isolated_paths(tmp_path, monkeypatch):
    """Point HWLIB_DATA / HWLIB_RUNS / HWLIB_FIGURES at a fresh temporary folder."""
    for var, sub in (("HWLIB_DATA", "data"), ("HWLIB_RUNS", "runs"), ("HWLIB_FIGURES", "figures")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: ``make test``'s workers take their work units (a module, a class, a notebook) in collection
    order, so the dry runs (minutes each, ``tests/test_dryrun.py``) and the notebooks go first and the short tests fill
    in around them, instead of one long unit finishing alone at the end. The sort is stable: a notebook's cells keep
    their order."""
    items.sort(key=lambda item: 0 if "::TestDryRun" in item.nodeid else 1 if item.path.suffix == ".ipynb" else 2)
