"""Writes that either complete or leave nothing behind: build under a temporary name, then rename."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

TMP_MARK = ".tmp-"


def tmp_name(final: Path) -> Path:
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yields a temporary directory beside `final`; renames it to `final` if the block succeeds."""
    final = Path(final)
    tmp = tmp_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, final) if not final.exists() else _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, final: Path) -> None:
    # A directory cannot be renamed over a non-empty one: move the old one aside first.
    old = final.with_name(f"{final.name}{TMP_MARK}old-{os.getpid()}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path, mode: str = "wb"):
    """Yields an open file under a temporary name; renames it to `final` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class HashingWriter:
    """A write-only file wrapper that hashes what passes through (numpy writes .npy through .write)."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def save_npy(path: Path, array: np.ndarray) -> str:
    """Saves `array` as .npy and returns the sha256 of the file's bytes."""
    with open(path, "wb") as f:
        w = HashingWriter(f)
        np.lib.format.write_array(w, np.ascontiguousarray(array), allow_pickle=False)
    return w.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def remove_stale_tmp(directory: Path) -> list[Path]:
    """Removes leftovers of interrupted writes inside `directory`; returns what was removed."""
    removed = []
    for p in Path(directory).glob(f"*{TMP_MARK}*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        removed.append(p)
    return removed
