"""hwlib's hand-written CPU kernels: ``hwlib/csrc/<name>.c`` (plain C with OpenMP, with the headers beside it)
compiled on first use with the machine's C compiler (the one ``torch.compile`` already needs on a CPU) into
``<data>/kernels/``, cached by sources, flags and CPU, and loaded with :mod:`ctypes`. Where a library cannot be built
(no compiler, not Linux) :func:`library` returns None after one warning, and its callers compute the same thing with
PyTorch's operators.

Used by :mod:`hwlib.models.group_norm_silu` (the U-Net's GroupNorm + SiLU), :mod:`hwlib.models.batch_norm_act`
(StackGAN's batch norms), :mod:`hwlib.models.shift_cutout` (StackGAN's DiffAugment) and
:mod:`hwlib.models.dropout` (dropout's random noise).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

_SOURCES = Path(__file__).resolve().parent.parent / "csrc"
_CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]  # fast-math at compile time only: linking
_LDFLAGS = ["-shared", "-fopenmp", "-lm"]  # with it would add crtfastmath.o, which flushes denormals to zero for the
# whole process
_libs: dict[str, ctypes.CDLL] = {}
_failed: dict[str, str] = {}


def source(name: str) -> Path:
    """The C file of kernel library ``name``."""
    return _SOURCES / f"{name}.c"


def _cpu_fingerprint() -> str:
    """The CPU's model and feature flags (a ``-march=native`` library is only valid on such a CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compile(src: Path, target: Path) -> None:
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "k.o", Path(tmp) / "k.so"
        subprocess.run([cc, *_CFLAGS, "-c", str(src), "-o", str(obj)], check=True, capture_output=True, text=True)
        subprocess.run([cc, str(obj), *_LDFLAGS, "-o", str(lib)], check=True, capture_output=True, text=True)
        os.replace(lib, target)  # atomic: a second process sees the old file or the whole new one


def library(name: str, signatures: dict[str, tuple[list, type | None]]) -> ctypes.CDLL | None:
    """The compiled ``hwlib/csrc/<name>.c`` with its functions' ``signatures`` set ({function: (argument ctypes,
    result ctype or None for void)}); compiled on first use, then loaded from the cache; None where that failed
    (warned once)."""
    if name in _libs or name in _failed:
        return _libs.get(name)
    src = source(name)
    if not sys.platform.startswith("linux"):
        _failed[name] = f"not built on {sys.platform}"  # written for gcc and Linux; elsewhere PyTorch's ops, quietly
        return None
    from hwlib.paths import data_dir

    headers = b"".join(h.read_bytes() for h in sorted(_SOURCES.glob("*.h")))  # what the sources include
    key = hashlib.sha256(src.read_bytes() + headers + " ".join(_CFLAGS + _LDFLAGS).encode()
                         + _cpu_fingerprint().encode()).hexdigest()
    target = data_dir() / "kernels" / f"{name}_{key[:16]}.so"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file():
            _compile(src, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        _failed[name] = f"{type(err).__name__}: {detail.strip()[:300]}"
        warnings.warn(f"hwlib: the CPU kernels {src} could not be built or loaded ({_failed[name]}); training uses "
                      "PyTorch's operators instead (same results, slower). Install a C compiler (gcc) to use them.",
                      RuntimeWarning, stacklevel=3)
        return None
    for function, (argtypes, restype) in signatures.items():
        fn = getattr(lib, function)
        fn.argtypes, fn.restype = argtypes, restype
    _libs[name] = lib
    return lib
