"""Profiles and paths: one place, env overrides, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

import hwlib
from hwlib.profiles import Config, resolve_profile
from hwlib.profiles.cgan_mnist import PROFILES


def test_resolve_profile(monkeypatch):
    monkeypatch.delenv("HWLIB_PROFILE", raising=False)
    assert resolve_profile("smoke") == "smoke" and resolve_profile("QUICK") == "quick"
    assert resolve_profile("auto") == ("gpu" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("HWLIB_PROFILE", "smoke")
    assert resolve_profile("auto") == "smoke"  # the environment replaces the notebook's `auto`
    assert resolve_profile("full") == "full"  # an explicit profile wins


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HWLIB_PROFILE", raising=False)
    with pytest.raises(ValueError, match="unknown profile 'fast'.*'smoke', 'quick', 'gpu', 'full'"):
        resolve_profile("fast")
    with pytest.raises(ValueError, match="no profiles for notebook"):
        hwlib.get_profile("99_nothing", "smoke")


def test_config_attribute_access():
    cfg = Config({"a": 1, "nested": {"b": 2}})
    assert cfg.a == 1 and cfg.nested.b == 2
    cfg.c = 3
    assert cfg["c"] == 3
    with pytest.raises(AttributeError, match="no key 'd'"):
        cfg.d


def test_paths_follow_environment(isolated_paths):
    assert hwlib.data_dir() == isolated_paths / "data"
    assert hwlib.runs_dir("x/y") == isolated_paths / "runs" / "x" / "y"
    assert hwlib.figures_dir("03_cgan_mnist") == isolated_paths / "figures" / "03_cgan_mnist"
    assert (isolated_paths / "runs" / "x" / "y").is_dir()


def test_profile_of_the_wrong_type_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HWLIB_PROFILE", raising=False)
    with pytest.raises(TypeError, match=r"profile must be a string .* not 123 \(int\)"):
        hwlib.get_profile("03_cgan_mnist", 123)


def test_smoke_runs_never_write_into_the_committed_figures_or_results(monkeypatch, tmp_path):
    # as a CI maintainer would run nbval: HWLIB_FIGURES unset, or pointing at the checkout itself
    import hwlib.profiles
    from hwlib.bench import write_result
    from hwlib.paths import repo_root

    root = repo_root()
    assert root is not None
    monkeypatch.setattr(hwlib.profiles, "_resolved", set())
    monkeypatch.setenv("HWLIB_PROFILE", "smoke")
    for env in (None, str(root / "figures")):
        if env is None:
            monkeypatch.delenv("HWLIB_FIGURES", raising=False)
        else:
            monkeypatch.setenv("HWLIB_FIGURES", env)
        path = hwlib.figures_dir("01_stackgan_cub")
        assert root / "figures" not in path.parents and "hwlib-smoke" in str(path)
    out = write_result("test_smoke_guard", {"x": 1})
    assert root not in out.parents
    out.unlink()
    monkeypatch.delenv("HWLIB_PROFILE")
    hwlib.get_profile("03_cgan_mnist", "quick", verbose=False)  # a quick run writes the committed figures
    monkeypatch.delenv("HWLIB_FIGURES")
    assert hwlib.figures_dir("x") == root / "figures" / "x"
    hwlib.get_profile("03_cgan_mnist", "smoke", verbose=False)  # any smoke profile in the process: scratch
    assert "hwlib-smoke" in str(hwlib.figures_dir("x"))
    monkeypatch.setattr(hwlib.profiles, "_resolved", set())
    assert hwlib.figures_dir("x") == root / "figures" / "x"
    monkeypatch.setenv("HWLIB_DRYRUN", "1")  # a dry run of a real profile: scratch as well
    assert "hwlib-smoke" in str(hwlib.figures_dir("x"))
    out = write_result("test_dry_run_guard", {"x": 1})
    assert root not in out.parents
    out.unlink()
    out = write_result("test_dry_run_guard", {"x": 1}, tag="xeon")  # a benchmark's --tag: its own file
    assert out.name == "test_dry_run_guard_xeon.json" and json.loads(out.read_text())["benchmark"] == "test_dry_run_guard_xeon"
    out.unlink()
    (root / "figures" / "x").rmdir()


def test_cgan_profiles():
    full = PROFILES["full"]
    assert (full["batch_size"], full["n_critic"], full["epochs"], full["mlp"]["lr"]) == (128, 5, 60, 1e-4)
    assert full["train_subset"] is None and full["mlp"]["dropout"] > 0 and not full["mlp"]["batchnorm"]
    for name in ("smoke", "quick", "full"):
        cfg = hwlib.get_profile("03_cgan_mnist", name, verbose=False)
        assert cfg.profile in ("smoke", "quick", "full") and cfg.conv.label_mode in ("channel", "projection")


def test_oversubscription_warning():
    from hwlib.profiles import oversubscription_warning

    assert oversubscription_warning(2, load=0.1, cores=2) is None  # a quiet machine
    assert oversubscription_warning(1, load=5.0, cores=2) is None  # one thread does not wait for others
    warning = oversubscription_warning(2, load=1.9, cores=2)
    assert warning and "OMP_NUM_THREADS=1" in warning and "2 torch threads on 2 cores" in warning


def test_stackgan_side_recipes_train_their_own_epochs():
    from hwlib.profiles.stackgan_cub import stage1_epochs, training_calls

    quick = hwlib.get_profile("01_stackgan_cub", "quick", verbose=False)
    assert quick.recipe == "stable" and "paper" in quick.recipes
    assert (stage1_epochs(quick, "stable"), stage1_epochs(quick, "paper")) == (64, 8)
    steps = {name: n for name, (_, n) in training_calls(quick).items()}
    assert steps["Stage-I (stable)"] == 8 * steps["Stage-I (paper)"] == 64 * (1800 // 16)
    full = hwlib.get_profile("01_stackgan_cub", "full", verbose=False)  # the paper's recipe is full's main recipe
    assert full.recipes == ("paper",) and stage1_epochs(full, "paper") == full.epochs1 == 600
