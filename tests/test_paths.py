"""hwlib.paths.shown: paths as a report prints them, never the machine's absolute path."""
from __future__ import annotations

import tempfile
from pathlib import Path

import hwlib
from hwlib.paths import repo_root, shown


def test_shown_paths_are_relative_to_checkout_data_or_tmp(isolated_paths):
    root = repo_root()
    assert shown(root / "figures" / "03_cgan_mnist" / "mlp_final.png") == "figures/03_cgan_mnist/mlp_final.png"
    assert shown(hwlib.data_dir() / "cub") == "<data>/cub"
    assert shown(Path(tempfile.gettempdir()) / "x" / "y.png") == "<tmp>/x/y.png"
    assert shown("/somewhere/else/file.txt") == "file.txt"
