"""hwlib.files: atomic writes of files and folders, unreadable caches, content digests."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hwlib import files


def test_atomic_write_keeps_old_contents_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "stats.npz"
    files.write_arrays(path, {"a": np.arange(3)})
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_write(path) as f:
            f.write(b"half a file")
            raise RuntimeError("killed")
    assert files.read_arrays(path, ("a",))["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temporary left behind
    files.write_arrays(path, np.ones(2))  # an .npy payload written through the same path
    assert files.read_arrays(path).tolist() == [1.0, 1.0]


def test_temporary_names_are_unique_and_hidden(tmp_path: Path) -> None:
    a, b = files._temp_name(tmp_path / "x.npy"), files._temp_name(tmp_path / "x.npy")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.npy.") and f".{os.getpid()}." in a.name


def test_unreadable_cache_reads_as_none_with_a_warning(tmp_path: Path) -> None:
    assert files.read_arrays(tmp_path / "missing.npz", ("a",)) is None
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.warns(RuntimeWarning, match=r"bad\.npz is unreadable.*computing it again"):
        assert files.read_arrays(bad, ("a",)) is None
    files.write_arrays(bad, {"b": np.zeros(1)})
    with pytest.warns(RuntimeWarning, match="bad.npz"):  # a key missing: unreadable too
        assert files.read_arrays(bad, ("a",)) is None


def test_staging_dir_is_removed_and_published_whole(tmp_path: Path) -> None:
    final = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        with files.staging_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with files.staging_dir(final) as tmp:
        (tmp / "done").write_text("x")
        assert files.publish_dir(tmp, final)
    assert [p.name for p in tmp_path.iterdir()] == ["set"] and (final / "done").is_file()
    with files.staging_dir(final) as tmp:  # someone finished first: theirs stays, ours is discarded
        (tmp / "other").write_text("y")
        assert not files.publish_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["done"] and len(list(tmp_path.iterdir())) == 1


def test_staging_dirs_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    final = tmp_path / "set"
    dead = tmp_path / f".set.{files.socket.gethostname()}.999999999.abcd1234.tmp"
    dead.mkdir()
    with files.staging_dir(final):
        assert not dead.exists()


def test_file_digest_hashes_the_whole_file_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    head = bytes(range(256)) * 4096 * 2  # 2 MiB in common
    a.write_bytes(head + b"one")
    b.write_bytes(head + b"two")
    assert files.file_digest(a) != files.file_digest(b)  # differing after the first MiB
    digest, st = files.file_digest(a), a.stat()
    a.write_bytes(head + b"six")  # same size; restore the mtime: the cached digest is returned, not re-hashed
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files.file_digest(a) == digest
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime: hashed again
    assert files.file_digest(a) != digest


def test_array_digest_sees_content_dtype_and_shape() -> None:
    x = np.arange(12, dtype=np.float32)
    assert files.array_digest(x) == files.array_digest(x.copy())
    assert files.array_digest(x) != files.array_digest(x.reshape(3, 4))
    assert files.array_digest(x) != files.array_digest(x.astype(np.float64))
    y = x.copy()
    y[5] += 1
    assert files.array_digest(x) != files.array_digest(y)
    assert files.array_digest(x.reshape(3, 4).T) == files.array_digest(np.ascontiguousarray(x.reshape(3, 4).T))
