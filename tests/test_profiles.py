"""Profiles and paths: one place, env overrides, clear errors."""
from __future__ import annotations

import pytest
import torch

import hwlib
from hwlib.profiles import Config, resolve_profile


def test_resolve_profile(monkeypatch):
    monkeypatch.delenv("HWLIB_PROFILE", raising=False)
    assert resolve_profile("smoke") == "smoke" and resolve_profile("QUICK") == "quick"
    assert resolve_profile("auto") == ("full" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("HWLIB_PROFILE", "smoke")
    assert resolve_profile("full") == "smoke"  # the environment overrides the notebook parameter


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HWLIB_PROFILE", raising=False)
    with pytest.raises(ValueError, match="unknown profile 'fast'.*'smoke', 'quick', 'full'"):
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
