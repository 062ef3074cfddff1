"""Writes that either complete or leave nothing behind: build under a temporary name, then rename."""
from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import zlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TMP_MARK = ".tmp-"


def tmp_name(final: Path) -> Path:
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def sweep_stale(final: Path) -> list[Path]:
    """Removes what killed writers of `final` left behind (``final.tmp-PID``, ``final.tmp-old-PID`` whose
    process is gone), so a kill -9 costs no disk space after the next run; returns what was removed."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    prefix = f"{final.name}{TMP_MARK}"
    for p in final.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):].removeprefix("old-")
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yields a temporary directory beside `final`; renames it to `final` if the block succeeds."""
    final = Path(final)
    sweep_stale(final)
    tmp = tmp_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, final) if not final.exists() else _replace_dir(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(err, final)
        raise


def _raise_if_disk_full(err: BaseException, final: Path) -> None:
    """Says what a full disk means for the output, instead of NumPy's "N requested and M written"."""
    full = isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "requested and" in str(err) and "written" in str(err))
    if full:
        state = "its previous version is unchanged" if final.exists() else "nothing was written there"
        raise OSError(errno.ENOSPC, f"{final}: No space left on device (the partial copy was removed; {state}); "
                                    f"free some space and rerun the same command") from None


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
    sweep_stale(final)
    tmp = tmp_name(final)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_if_disk_full(err, final)
        raise


def save_npy(path: Path, array: np.ndarray) -> str:
    """Saves `array` as .npy and returns the CRC-32 of the file's bytes (hex).

    CRC-32 catches damaged or truncated copies (what merging parts made on other machines must guard against) at
    a third of the cost of SHA-256, which matters when writing 100,000 examples per second.
    """
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, np.lib.format.header_data_from_array_1_0(array))
    with open(path, "wb") as f:
        f.write(header.getbuffer())
        array.tofile(f)  # file.write of a large buffer goes through an extra copy; tofile does not
    return f"{zlib.crc32(array.reshape(-1).view(np.uint8), zlib.crc32(header.getbuffer())):08x}"


def map_npy(path: Path, checksum: bool = True) -> tuple[np.ndarray, str | None]:
    """A read-only memory map of a .npy file as an array, and the CRC-32 of the file's bytes (hex; None without
    `checksum`).

    The checksum is computed over the same mapping the array reads: the file is faulted into memory once, by the
    checksum, and nothing is copied (reading the file for its checksum and then mapping it cost a third more).
    Raises ValueError naming the file when it is not a complete .npy file.
    """
    import mmap

    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0)(f)
        except (ValueError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy file ({err})") from None
        if dtype.hasobject:  # would need unpickling; no file of ours holds objects
            raise ValueError(f"{path}: holds Python objects ({dtype}), which are never loaded")
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != need:
            raise ValueError(f"{path}: {size:,} bytes, but its header describes {need:,} (a {dtype} array of shape "
                             f"{shape}): the file is {'truncated' if size < need else 'longer than its array'}")
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    crc = f"{crc32_parallel(mapping):08x}" if checksum else None
    array = np.ndarray(shape, dtype, buffer=mapping, offset=offset, order="F" if fortran else "C")
    return array, crc


# ---- CRC-32 on every core: zlib.crc32 releases the GIL, and CRCs of consecutive pieces combine exactly.
_PIECE = 1 << 23  # bytes per piece handed to a thread; also the length whose zero-shift operator is cached


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


@functools.lru_cache(maxsize=8)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC-32 over `length` zero bytes (zlib's crc32_combine, as a matrix)."""
    one_bit = [0xEDB88320] + [1 << n for n in range(31)]
    power = _gf2_square(_gf2_square(_gf2_square(one_bit)))  # 8 zero bits: one zero byte
    result = None
    while length:
        if length & 1:
            result = power if result is None else [_gf2_times(power, result[n]) for n in range(32)]
        length >>= 1
        if length:
            power = _gf2_square(power)
    return tuple(result)


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from crc32(A), crc32(B) and len(B)."""
    return crc1 if length2 == 0 else _gf2_times(list(_zeros_operator(length2)), crc1) ^ crc2


def crc32_parallel(data, threads: int | None = None) -> int:
    """zlib.crc32(data) computed by `threads` threads (default: every core) over pieces of the buffer."""
    view = memoryview(data).cast("B")
    n = len(view)
    threads = threads or os.cpu_count() or 1
    if threads == 1 or n < 4 * _PIECE:
        return zlib.crc32(view)
    # The first piece takes the remainder, so every later piece is exactly _PIECE long and shares one operator.
    head = n % _PIECE
    pieces = [view[:head]] + [view[i:i + _PIECE] for i in range(head, n, _PIECE)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        crcs = list(pool.map(zlib.crc32, pieces))
    crc = crcs[0]
    for piece_crc in crcs[1:]:
        crc = crc32_combine(crc, piece_crc, _PIECE)
    return crc


def crc32_file(path: Path) -> str:
    """CRC-32 of a file's bytes (hex), over a read-only memory map on every core, as map_npy checks shards."""
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    return f"{crc32_parallel(mapping):08x}"
