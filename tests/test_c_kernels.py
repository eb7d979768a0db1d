"""hwlib's C kernel libraries: built once per source and CPU into the data folder, loaded from there afterwards,
and a missing compiler said once, naming the file and the remedy."""
from __future__ import annotations

import subprocess
import warnings
from unittest import mock

import pytest

from hwlib.models import batch_norm_act, c_kernels, dropout, group_norm_silu, shift_cutout

LIBRARIES = {"group_norm_silu": group_norm_silu.SIGNATURES, "batch_norm_act": batch_norm_act.SIGNATURES,
             "shift_cutout": shift_cutout.SIGNATURES, "bernoulli_noise": dropout.SIGNATURES}


@pytest.mark.parametrize("name", LIBRARIES)
def test_a_library_is_built_once_per_source_and_cpu(name, isolated_paths, monkeypatch):
    monkeypatch.setattr(c_kernels, "_libs", {})
    monkeypatch.setattr(c_kernels, "_failed", {})
    with mock.patch("subprocess.run", side_effect=subprocess.run) as run:
        lib = c_kernels.library(name, LIBRARIES[name])
        if lib is None:
            pytest.skip(f"no C compiler here: {c_kernels._failed[name]}")
        assert run.call_count == 2  # compile, then link
        built = list((isolated_paths / "data" / "kernels").glob(f"{name}_*.so"))
        assert len(built) == 1
        for function, (argtypes, restype) in LIBRARIES[name].items():
            assert getattr(lib, function).argtypes == argtypes and getattr(lib, function).restype == restype
        monkeypatch.setattr(c_kernels, "_libs", {})  # a new process: the cached library, no compiler call
        assert c_kernels.library(name, LIBRARIES[name]) is not None and run.call_count == 2


def test_without_a_compiler_each_library_warns_once(isolated_paths, monkeypatch):
    monkeypatch.setattr(c_kernels, "_libs", {})
    monkeypatch.setattr(c_kernels, "_failed", {})
    monkeypatch.setenv("CC", str(isolated_paths / "no-such-compiler"))
    for name, signatures in LIBRARIES.items():
        with pytest.warns(RuntimeWarning, match=rf"{name}\.c.*Install a C compiler"):
            assert c_kernels.library(name, signatures) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: later calls are quiet
        for name, signatures in LIBRARIES.items():
            assert c_kernels.library(name, signatures) is None
