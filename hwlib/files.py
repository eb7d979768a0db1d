"""Files hwlib writes and fingerprints: atomic writes of caches and folders, content digests.

- :func:`atomic_write`: a file object on a temporary name next to the target (unique per host and
  process), flushed, fsynced and renamed onto the target only when the ``with`` block succeeds.
- :func:`staging_dir` / :func:`publish_dir`: build a folder under a temporary name next to its final
  place and rename it there once complete, so a half-built folder is never taken for a finished one.
- :func:`write_arrays` / :func:`read_arrays`: ``.npy`` / ``.npz`` caches written atomically; an
  unreadable cache reads as ``None`` with a warning naming the file, so the caller computes it again.
- :func:`file_digest`: SHA-1 of a whole file, computed once per process (keyed by path, size, mtime);
  :func:`array_digest`: SHA-1 of an array's dtype, shape and bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _temp_name(final: Path) -> Path:
    """``.<name>.<host>.<pid>.<random>.tmp`` next to ``final``: unique per host, process and call."""
    return final.with_name(f".{final.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # makes a rename durable; not supported everywhere
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_write(p) as f: ...``: ``p`` holds either its old contents or everything written to ``f``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove_stale_staging(final: Path) -> None:
    """Delete staging folders of ``final`` left by killed processes of this host."""
    host = socket.gethostname()
    for stale in final.parent.glob(f".{final.name}.{host}.*.tmp"):
        pid = stale.name[len(f".{final.name}.{host}."):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder next to ``final`` (unique per host and process), removed on exit whatever happens.

    Build into it, then :func:`publish_dir` it (or a folder inside it) onto ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final)
    tmp = _temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(src: str | os.PathLike, final: str | os.PathLike) -> bool:
    """Flush everything to disk, then rename the complete folder ``src`` to ``final`` (an empty ``final`` is replaced).

    Returns False, leaving ``src`` in place, when ``final`` already holds files (another process finished first).
    """
    src, final = Path(src), Path(final)
    if hasattr(os, "sync"):
        os.sync()  # the files' contents reach the disk before the rename that marks them complete
    try:
        os.rename(src, final)
    except OSError:
        if final.is_dir() and any(final.iterdir()):
            return False
        raise
    _fsync_dir(final.parent)
    return True


def write_arrays(path: str | os.PathLike, data: np.ndarray | dict[str, np.ndarray]) -> Path:
    """Write an array as ``.npy`` or a dict of arrays as ``.npz``, atomically (:func:`atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as f:
        if isinstance(data, dict):
            np.savez(f, **data)
        else:
            np.save(f, data)
    return path


def read_arrays(path: str | os.PathLike, keys: Sequence[str] | None = None) -> np.ndarray | dict[str, np.ndarray] | None:
    """The array of an ``.npy`` cache (``keys=None``) or ``{key: array}`` of an ``.npz`` one.

    ``None`` when the file is missing; ``None`` with a warning naming the file when it cannot be read
    (truncated, not a numpy file, a key missing): the caller computes the cache again.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if keys is None:
                if not isinstance(data, np.ndarray):
                    raise ValueError("an .npz archive where a single .npy array was expected")
                return data
            with data:
                return {k: data[k] for k in keys}
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, ValueError, zlib.error, ...
        warn_unreadable(path, err)
        return None


def warn_unreadable(path: Path, err: BaseException | str) -> None:
    """Warn that the cache file ``path`` is unreadable and is being computed again."""
    why = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else err
    warnings.warn(f"hwlib: the cache file {path} is unreadable ({why}); computing it again and replacing it",
                  RuntimeWarning, stacklevel=3)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 (hex) of the whole file, hashed once per process while its path, size and mtime stay the same."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def array_digest(array: np.ndarray) -> str:
    """SHA-1 (hex) of an array's dtype, shape and contents (C order)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()
