"""A run directory's safety: atomic numbered checkpoints, a lock per run, and run identity vs schedule.

Nothing here deletes work a user might want:

- :class:`Checkpointer` writes ``ckpt_<step>.pt`` atomically, moves unreadable files to ``corrupt/`` and
  prunes only older readable checkpoints, never the one just written; :meth:`Checkpointer.supersede` moves a
  run's files to ``superseded/<time>/`` instead of deleting them.
- :class:`RunLock` gives one process at a time a run directory (``fcntl.flock``, released by the OS when the
  process dies); a second process fails at once, naming the directory and the holder.
- :func:`split_config` separates what identifies a run (architecture, data, seed) from its schedule
  (epochs of any stage, learning rates): a changed schedule resumes, a changed identity is refused.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import socket
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from hwlib.files import atomic_write


class RunLocked(RuntimeError):
    """Another process is training in this run directory."""


class RunMismatch(ValueError):
    """The checkpoints in a run directory belong to a run with another identity (architecture, data, seed)."""


def is_schedule_key(key: str) -> bool:
    """True for keys of a run's schedule: ``epochs``, ``epochs2``, ``lr``, ``lr_d``, ``lr_decay_epochs``,
    ``compare_epochs``, ``steps``, ``warmup_steps`` ... (the last part of a dotted key decides)."""
    last = key.rsplit(".", 1)[-1]
    return last.startswith(("epochs", "lr", "steps")) or last.endswith(("_epochs", "_lr", "_steps"))


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1] or "config": config}


def check_json(config: Any, where: str = "config") -> Any:
    """``config`` as plain JSON (tuples become lists); a set, function, tensor ... raises a clear TypeError."""
    def walk(value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise TypeError(f"{where}: {path} is {value}, which JSON cannot hold; give a finite number")
            return value
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, str):
                    raise TypeError(f"{where}: {path} has a key {k!r} of type {type(k).__name__}; use strings")
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        raise TypeError(f"{where}: {path} is a {type(value).__name__} ({value!r:.60}), not plain JSON; give "
                        "numbers, strings, lists or dicts (e.g. a sorted list instead of a set, a name instead of a function)")
    return walk(config, "config")


def split_config(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(identity, schedule) of a JSON config as flat dotted-key dicts; a non-dict config is all identity."""
    flat = _flatten(check_json(config))
    identity = {k: v for k, v in flat.items() if not is_schedule_key(k)}
    schedule = {k: v for k, v in flat.items() if is_schedule_key(k)}
    return identity, schedule


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Lines ``key: old -> new`` for every key whose value differs (missing keys shown as <absent>)."""
    lines = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if a != b:
            lines.append(f"{k}: {a!r} -> {b!r}")
    return lines


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def readable(path: Path) -> bool:
    """A cheap check that ``path`` is a complete ``torch.save`` archive: its zip directory (written last) reads."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


class Checkpointer:
    """Numbered checkpoints ``ckpt_<step>.pt`` in ``directory``, written atomically.

    A save goes to a hidden temporary file unique to the process, is flushed and fsynced, then renamed over
    its final name (atomic on POSIX): a kill at any moment leaves either the previous newest checkpoint or
    the new one. After a save the ``keep`` newest *readable* checkpoints by step are kept, the one just
    written always among them; unreadable files are moved to ``corrupt/`` with a message, never deleted.
    Loading uses ``torch.load(weights_only=True)``.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, keep)

    def paths(self) -> list[Path]:
        """Checkpoints, oldest (lowest step) first."""
        return sorted(self.dir.glob("ckpt_*.pt"), key=lambda p: (_step_of(p), p.name))

    def quarantine(self, path: Path, why: str) -> Path:
        """Move an unreadable checkpoint to ``corrupt/`` (with a message naming both places)."""
        dest_dir = self.dir / "corrupt"
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / path.name
        n = 1
        while dest.exists():
            dest, n = dest_dir / f"{path.stem}.{n}{path.suffix}", n + 1
        os.replace(path, dest)
        print(f"hwlib: checkpoint {path} is unreadable ({why}); moved to {dest}", file=sys.stderr)
        return dest

    def save(self, state: dict[str, Any], step: int) -> Path:
        final = self.dir / f"ckpt_{step:09d}.pt"
        with atomic_write(final) as f:
            torch.save(state, f)
        self.prune(final)
        return final

    def prune(self, newest: Path) -> None:
        """Keep ``newest`` and the ``keep - 1`` newest other readable checkpoints of lower step; quarantine the unreadable."""
        kept = 1
        for path in reversed(self.paths()):
            if path == newest:
                continue
            if not readable(path):
                self.quarantine(path, "not a complete checkpoint archive")
            elif _step_of(path) > _step_of(newest):
                continue  # a later step than the one just written: leave it for the user
            elif kept < self.keep:
                kept += 1
            else:
                path.unlink(missing_ok=True)
        for stale in self.dir.glob(".ckpt_*.tmp"):  # temporaries of killed writers (the run lock is held)
            stale.unlink(missing_ok=True)

    def load_latest(self, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint that loads (unreadable newer ones are moved to ``corrupt/``), or None."""
        for path in reversed(self.paths()):
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable file: set it aside, try the previous one
                self.quarantine(path, f"{type(err).__name__}: {str(err)[:200]}")
        return None

    def supersede(self) -> Path | None:
        """Move every checkpoint and ``history.csv`` to ``superseded/<UTC time>/``; return that folder (None if empty)."""
        files = self.paths() + [p for p in (self.dir / "history.csv",) if p.exists()]
        if not files:
            return None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.dir / "superseded" / stamp
        dest.mkdir(parents=True)
        for path in files:
            os.replace(path, dest / path.name)
        print(f"hwlib: the previous checkpoints of {self.dir} were moved to {dest}")
        return dest


class RunLock:
    """An exclusive lock on a run directory for the life of a training call (``with RunLock(dir): ...``).

    The lock file ``.lock`` names the holder (host, pid, start time). A second process fails at once with
    :class:`RunLocked`; a lock whose process died is free again (the OS releases ``flock``). Taking it also
    proves the directory is writable before any training starts.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.path = self.dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise PermissionError(f"cannot write in the run directory {self.dir} ({err.strerror}); give a writable "
                                  "folder (HWLIB_RUNS or run_dir)") from err
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no lock
            pass
        except OSError:
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunLocked(f"the run directory {self.dir} is in use by another process ({holder or 'unknown holder'}); "
                            "wait for it to finish, stop it, or train into another run directory") from None
        note = f"host {socket.gethostname()}, pid {os.getpid()}, since {_dt.datetime.now().isoformat(timespec='seconds')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        except OSError as err:
            os.close(fd)
            raise PermissionError(f"cannot write in the run directory {self.dir} ({err.strerror})") from err
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def check_free_space(directory: Path, state_bytes: int) -> None:
    """Refuse to start when ``directory`` cannot hold two checkpoints of ``state_bytes`` plus a temporary."""
    free = shutil.disk_usage(directory).free
    need = 3 * state_bytes
    if free < need:
        raise OSError(f"the run directory {directory} has {free / 2**20:.0f} MiB free, but its checkpoints need "
                      f"about {need / 2**20:.0f} MiB (two kept plus one being written); free some space or "
                      "point HWLIB_RUNS at a larger disk")


def state_nbytes(*objects: Any) -> int:
    """Bytes of every tensor in nested dicts/lists (a checkpoint's size before serialisation overhead)."""
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if torch.is_tensor(obj):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return total
