"""Corpora on disk (docs/design.md §6): a manifest plus memory-mappable .npy shards.

Layout of a corpus directory::

    manifest.json            format version, how it was made (generator, params, grid, seed, tie-break, range,
                             command), vocabulary, counts and per-file CRC-32 of every shard
    shard-00000/             one directory per shard, renamed into place only when complete
        shard.json           this shard's entry of the manifest (lets interrupted or distributed runs be resumed
                             and merged)
        walls.npy            uint8 (n, ceil(R·C/8)): wall bits, row-major cells, little bit order
        start.npy goal.npy   int32 (n, 2): (x, y)
        maze_hash.npy        uint64 (n,): hash of the wall layout (deduplication, leakage checks)
        ops.npy              uint16 (m, 3): A* operations: cell | 0x8000 for close, g, h
        ops_offsets.npy      int64 (n+1,)
        plan.npy             uint16 (p,): plan cells, start first; empty when the maze has no path
        plan_offsets.npy     int64 (n+1,)
        stats.npy            int32 (n, 3): walls, operations, plan cells

A shard holds the instances [first, first + n) of the corpus; instance i is a pure function of the corpus key
(generator, params, grid, seed, tie-break), so any shard can be made alone, on any machine, and merged.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import TMP_MARK, atomic_dir, atomic_file, crc32_file, map_npy, save_npy
from .progress import Progress
from .vocab import CLOSE_BIT, Vocab, check_grid_size, vocab_for

FORMAT = "reasonless-corpus"
FORMAT_VERSION = 1
SHARD_FILES = ("walls", "start", "goal", "maze_hash", "ops", "ops_offsets", "plan", "plan_offsets", "stats")
STATS_COLUMNS = ("walls", "ops", "plan")
TIE_BREAKS = ("fifo", "min_g", "max_g", "lifo", "random")
DEFAULT_SHARD_SIZE = 50_000


MAX_COUNT = 2**40


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


# --------------------------------------------------------------------------------------------- in-memory batches
@dataclass
class Batch:
    """Problems and A* results of consecutive examples, walls unpacked, offsets starting at 0."""

    rows: int
    cols: int
    first: int  # corpus index of the first example
    walls: np.ndarray  # uint8 (n, R*C)
    start: np.ndarray  # int32 (n, 2)
    goal: np.ndarray  # int32 (n, 2)
    maze_hash: np.ndarray  # uint64 (n,)
    ops: np.ndarray  # uint16 (m, 3)
    ops_offsets: np.ndarray  # int64 (n+1,)
    plan: np.ndarray  # uint16 (p,)
    plan_offsets: np.ndarray  # int64 (n+1,)
    source: str | None = None  # the shard directory the batch was read from, for error messages

    def __len__(self) -> int:
        return len(self.start)

    def locate(self, err: ValueError) -> ValueError:
        """The C++ loops' "example i: …" (i counted within the batch) as the corpus index and the shard it lives in,
        so that a message names what a user can find: ``shard-00001: example 12,505 (corpus index): …``."""
        match = re.match(r"example (\d+): (.*)", str(err), re.S)
        if match is None:
            return err
        where = f"{self.source}: " if self.source else ""
        return ValueError(f"{where}example {self.first + int(match[1]):,} (corpus index): {match[2]}")

    def stats(self, packed_walls: np.ndarray | None = None) -> np.ndarray:
        """int32 (n, 3): walls, operations and plan cells of each example."""
        packed_walls = pack_walls(self.walls) if packed_walls is None else packed_walls
        walls = np.bitwise_count(packed_walls).sum(axis=1)
        return np.stack([walls, np.diff(self.ops_offsets), np.diff(self.plan_offsets)], axis=1).astype(np.int32)

    def select(self, rows: np.ndarray) -> "Batch":
        """The examples at positions `rows` (sorted), as a new batch; `first` keeps this batch's numbering."""
        rows = np.asarray(rows, dtype=np.int64)
        ops_parts = [self.ops[self.ops_offsets[i]:self.ops_offsets[i + 1]] for i in rows.tolist()]
        plan_parts = [self.plan[self.plan_offsets[i]:self.plan_offsets[i + 1]] for i in rows.tolist()]
        ops_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.diff(self.ops_offsets)[rows], out=ops_offsets[1:])
        plan_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.diff(self.plan_offsets)[rows], out=plan_offsets[1:])
        return Batch(self.rows, self.cols, self.first, self.walls[rows], self.start[rows], self.goal[rows],
                     self.maze_hash[rows],
                     np.concatenate(ops_parts) if ops_parts else self.ops[:0], ops_offsets,
                     np.concatenate(plan_parts) if plan_parts else self.plan[:0], plan_offsets, self.source)

    def tokens(self, arm: str = "correct", threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training token streams: (uint16 tokens, int64 offsets, int32 prompt lengths)."""
        from . import _core

        try:
            lengths, prompt = _core.token_lengths(self.walls, self.rows, self.cols, self.ops_offsets,
                                                  self.plan_offsets, arm, threads)
            offsets = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            out = np.empty(int(offsets[-1]), dtype=np.uint16)
            _core.tokenize_into(self.walls, self.rows, self.cols, self.start, self.goal, self.ops, self.ops_offsets,
                                self.plan, self.plan_offsets, out, offsets, arm, threads)
        except ValueError as err:
            raise self.locate(err) from None
        return out, offsets, prompt

    def texts(self, arm: str = "correct", threads: int = 0) -> list[str]:
        """Paper-format text of each example."""
        from . import _core

        tokens, offsets, _ = self.tokens(arm, threads)
        blob, text_offsets = _core.render_text(tokens, offsets, self.rows, self.cols, threads)
        blob = bytes(blob)
        return [blob[a:b].decode("ascii") for a, b in zip(text_offsets[:-1].tolist(), text_offsets[1:].tolist())]


def pack_walls(walls: np.ndarray) -> np.ndarray:
    return np.packbits(walls.astype(bool, copy=False), axis=1, bitorder="little")


def unpack_walls(packed: np.ndarray, cells: int) -> np.ndarray:
    return np.unpackbits(packed, axis=1, count=cells, bitorder="little")


def solve(walls, rows, cols, start, goal, maze_hash, first: int, tie_break: str, seed: int, threads: int) -> Batch:
    """Runs A* on a batch of problems; `first` numbers the instances (the random tie-break draws from it)."""
    from . import _core

    ids = np.arange(first, first + len(start), dtype=np.int64)
    ops, ops_offsets, plan, plan_offsets = _core.astar_batch(walls, rows, cols, start, goal, tie_break, seed, ids,
                                                              threads)
    return Batch(rows, cols, first, walls, start, goal, maze_hash, ops, ops_offsets, plan, plan_offsets)


# --------------------------------------------------------------------------------------------- shards on disk
class Shard:
    """One shard directory, its arrays memory-mapped on first use. The first use of each file checks its CRC-32
    against the manifest, so a damaged file (a flipped bit, a truncated copy) is never read silently."""

    def __init__(self, corpus: "Corpus", entry: dict):
        self.corpus = corpus
        self.entry = entry
        self.path = corpus.path / entry["dir"]
        self.first = int(entry["first"])
        self.count = int(entry["count"])
        self._arrays: dict[str, np.ndarray] = {}
        self._checked: set[str] = set()

    def __len__(self) -> int:
        return self.count

    def __getattr__(self, name: str) -> np.ndarray:
        if name in SHARD_FILES:
            if name not in self._arrays:
                self._arrays[name] = self._open(name)
            return self._arrays[name]
        raise AttributeError(name)

    def _open(self, name: str) -> np.ndarray:
        path = self.path / f"{name}.npy"
        where = f"shard {self.entry['index']} of {self.corpus.path}, examples {self.first:,}–{self.first + self.count - 1:,}"
        if not path.is_file():
            raise ValueError(f"{path}: missing ({where}); regenerate the corpus")
        recorded = self.entry.get("crc32", {}).get(f"{name}.npy")
        array, crc = map_npy(path, checksum=name not in self._checked and recorded is not None)
        if crc is not None and crc != recorded:
            raise ValueError(f"{path}: damaged, its CRC-32 differs from the one recorded when it was written "
                             f"({where}); re-run the `reasonless generate` command that made {self.corpus.path} to "
                             f"remake it")
        self._checked.add(name)
        return array

    def release(self) -> None:
        """Drops the memory maps, so that a pass over a large corpus keeps one shard resident at a time."""
        self._arrays.clear()

    def batch(self, lo: int = 0, hi: int | None = None, copy: bool = True) -> Batch:
        """Examples [lo, hi) of this shard (shard-local positions) read into memory. With ``copy=False``, views of
        the memory maps instead (walls aside, which are unpacked): ops and plan are then the shard's whole arrays and
        the offsets index them, not starting at 0 — what the C++ loops accept, and half the memory traffic."""
        hi = self.count if hi is None else hi
        rows, cols = self.corpus.rows, self.corpus.cols
        if not copy:
            return Batch(rows, cols, self.first + lo, unpack_walls(self.walls[lo:hi], rows * cols), self.start[lo:hi],
                         self.goal[lo:hi], self.maze_hash[lo:hi], self.ops, self.ops_offsets[lo:hi + 1], self.plan,
                         self.plan_offsets[lo:hi + 1], str(self.path))
        oo = np.array(self.ops_offsets[lo:hi + 1], dtype=np.int64)
        po = np.array(self.plan_offsets[lo:hi + 1], dtype=np.int64)
        return Batch(rows, cols, self.first + lo, unpack_walls(np.asarray(self.walls[lo:hi]), rows * cols),
                     np.array(self.start[lo:hi]), np.array(self.goal[lo:hi]), np.array(self.maze_hash[lo:hi]),
                     np.array(self.ops[oo[0]:oo[-1]]), oo - oo[0], np.array(self.plan[po[0]:po[-1]]), po - po[0],
                     str(self.path))


def write_shard(directory: Path, index: int, batch: Batch, key: dict) -> dict:
    """Writes one shard atomically and returns its manifest entry."""
    directory = Path(directory)
    packed = pack_walls(batch.walls)
    arrays = {
        "walls": packed, "start": batch.start.astype(np.int32), "goal": batch.goal.astype(np.int32),
        "maze_hash": batch.maze_hash.astype(np.uint64), "ops": batch.ops, "ops_offsets": batch.ops_offsets,
        "plan": batch.plan, "plan_offsets": batch.plan_offsets, "stats": batch.stats(packed),
    }
    entry = {"index": index, "dir": shard_name(index), "first": batch.first, "count": len(batch),
             "ops": int(batch.ops_offsets[-1]), "plan_cells": int(batch.plan_offsets[-1]), "key": key, "crc32": {}}
    with atomic_dir(directory / shard_name(index)) as tmp:
        for name, arr in arrays.items():
            entry["crc32"][f"{name}.npy"] = save_npy(tmp / f"{name}.npy", arr)
        (tmp / "shard.json").write_text(json.dumps(entry, indent=1) + "\n")
    return entry


def read_shard_entry(shard_dir: Path, check_files: bool = False) -> dict | None:
    """The entry of a complete shard directory, or None if it is not one. Optionally re-hashes its files."""
    try:
        entry = json.loads((shard_dir / "shard.json").read_text())
    except (OSError, ValueError):
        return None
    for name, digest in entry.get("crc32", {}).items():
        path = shard_dir / name
        if not path.is_file() or (check_files and crc32_file(path) != digest):
            return None
    return entry if len(entry.get("crc32", {})) == len(SHARD_FILES) else None


# --------------------------------------------------------------------------------------------- the corpus
@dataclass
class Example:
    """One problem and its A* result."""

    index: int
    rows: int
    cols: int
    walls: np.ndarray  # uint8 (R, C), 1 = wall
    start: tuple[int, int]
    goal: tuple[int, int]
    ops: np.ndarray  # uint16 (m, 3)
    plan_cells: np.ndarray  # uint16 (p,)

    @property
    def grid(self) -> np.ndarray:
        """bool (R, C), True where there is a wall."""
        return self.walls.astype(bool)

    @property
    def operations(self) -> list[tuple[str, int, int, int, int]]:
        """(kind, x, y, g, h) per A* operation."""
        out = []
        for code, g, h in self.ops.tolist():
            cell = code & ~CLOSE_BIT
            out.append(("close" if code & CLOSE_BIT else "create", cell % self.cols, cell // self.cols, g, h))
        return out

    @property
    def plan(self) -> list[tuple[int, int]]:
        return [(c % self.cols, c // self.cols) for c in self.plan_cells.tolist()]

    def _batch(self) -> Batch:
        return Batch(self.rows, self.cols, self.index, self.walls.reshape(1, -1).astype(np.uint8),
                     np.array([self.start], np.int32), np.array([self.goal], np.int32), np.zeros(1, np.uint64),
                     self.ops, np.array([0, len(self.ops)], np.int64), self.plan_cells,
                     np.array([0, len(self.plan_cells)], np.int64))

    def tokens(self, arm: str = "correct") -> np.ndarray:
        """uint16 ids of <|bos|> text <|eos|>."""
        return self._batch().tokens(arm, threads=1)[0]

    def text(self, arm: str = "correct") -> str:
        return self._batch().texts(arm, threads=1)[0]


class Corpus:
    """A complete corpus directory: ``len(corpus)``, ``corpus[i]`` → :class:`Example`, ``corpus.batches()``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            hint = ""
            if any(self.path.glob("shard-*")):
                hint = " (it has shards: an unfinished run? re-run the same `reasonless generate` to resume, or " \
                       "`reasonless merge` the parts of a sharded run)"
            raise FileNotFoundError(f"{self.path}: no manifest.json, not a complete corpus{hint}")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise ValueError(f"{manifest_path}: not valid JSON ({err})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        self.rows, self.cols = int(self.manifest["rows"]), int(self.manifest["cols"])
        self.shards = [Shard(self, e) for e in self.manifest["shards"]]
        self._starts = np.cumsum([0] + [s.count for s in self.shards])

    @property
    def vocab(self) -> Vocab:
        return vocab_for(self.rows, self.cols)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        m = self.manifest
        return f"Corpus({str(self.path)!r}, {len(self)} examples, {m.get('generator')} {self.rows}x{self.cols})"

    def _locate(self, index: int) -> tuple[Shard, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"example {index} out of range for a corpus of {n}")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.shards[k], index - int(self._starts[k])

    def __getitem__(self, index: int) -> Example:
        shard, i = self._locate(int(index))
        b = shard.batch(i, i + 1)
        return Example(int(self._starts[self.shards.index(shard)]) + i, self.rows, self.cols,
                       b.walls.reshape(self.rows, self.cols), tuple(b.start[0].tolist()), tuple(b.goal[0].tolist()),
                       b.ops, b.plan)

    def batches(self, size: int = 20_000, copy: bool = True):
        """Yields :class:`Batch` objects covering the corpus in order, at most `size` examples each (views of the
        shards' memory maps with ``copy=False``: see :meth:`Shard.batch`)."""
        first = 0
        for shard in self.shards:
            for lo in range(0, shard.count, size):
                b = shard.batch(lo, min(lo + size, shard.count), copy)
                b.first = first + lo
                yield b
            first += shard.count
            shard.release()

    def shard_corpus(self, k: int) -> "Corpus":
        """Shard `k` alone as a corpus (its examples numbered from 0): work split by shard, e.g. Ray tasks."""
        part = copy.copy(self)
        part.shards = [Shard(part, self.shards[k].entry)]
        part._starts = np.array([0, part.shards[0].count])
        return part

    def column(self, name: str) -> np.ndarray:
        """One per-example array over the whole corpus: start, goal, maze_hash or stats."""
        parts = []
        for s in self.shards:
            parts.append(np.array(getattr(s, name)))
            s.release()
        return np.concatenate(parts)

    def verify_checksums(self) -> None:
        for s in self.shards:
            for name, digest in s.entry["crc32"].items():
                if crc32_file(s.path / name) != digest:
                    raise ValueError(f"{s.path / name}: checksum mismatch, the file changed after it was written")


def write_manifest(directory: Path, header: dict, entries: list[dict]) -> dict:
    entries = sorted(entries, key=lambda e: e["index"])
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **header,
        "vocab": vocab_for(header["rows"], header["cols"]).to_json(),
        "counts": {"examples": sum(e["count"] for e in entries), "ops": sum(e["ops"] for e in entries),
                   "plan_cells": sum(e["plan_cells"] for e in entries), "shards": len(entries)},
        "shards": [{k: v for k, v in e.items() if k != "key"} for e in entries],
        "reasonless_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with atomic_file(Path(directory) / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


# --------------------------------------------------------------------------------------------- generation
def parse_shard_spec(spec: str) -> tuple[int, int]:
    """'K/N' → (K, N), K counted from 0."""
    try:
        k, n = (int(p) for p in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected K/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard {spec!r}: need N ≥ 1 and 0 ≤ K < N (parts are numbered from 0)")
    return k, n


def generate(out: str | os.PathLike, generator: str, count: int, rows: int = 30, cols: int = 30, seed: int = 0,
             params: dict | None = None, tie_break: str = "fifo", threads: int | None = None,
             shard: tuple[int, int] | str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
             progress: bool = False, command: str | None = None, engine=None, rng: str = "counter",
             split: str | None = None) -> Corpus | None:
    """Generates `count` problems with `generator`, solves them with A* and writes a corpus to `out`.

    ``rng="paper"`` with ``split="train"|"test"`` makes the JS tool's dataset instead (:mod:`reasonless.paper_mazes`).

    Resumes: shards already complete in `out` (same corpus key) are kept. With ``shard=(K, N)`` only part K of N of
    the shards is made; the manifest is written once every shard is present (else merge the parts later).
    Returns the Corpus when complete, else None. ``engine(out, key, todo)``, when given, makes the missing shards
    elsewhere (:func:`make_shard_batch` + :func:`write_shard` per index, e.g. as Ray tasks) and returns their
    manifest entries by index.
    """
    from . import mazes

    check_grid_size(rows, cols)
    if count < 1:
        raise ValueError(f"count={count}: must be at least 1")
    if count > MAX_COUNT:
        raise ValueError(f"count={count:,}: at most {MAX_COUNT:,} (2^40) examples per corpus — beyond that a corpus "
                         f"takes petabytes (≥ 200 bytes per example even for 8x8 mazes); split it into several "
                         f"corpora with different seeds")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed={seed}: must be from 0 to 2^64 - 1")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: must be at least 1")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie-break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}")
    paper = _paper_source(rng, split, generator, rows, cols, seed, params)
    full_params = paper.params if paper else mazes.resolve_params(generator, rows, cols, params)
    if isinstance(shard, str):
        shard = parse_shard_spec(shard)
    part, parts = shard or (0, 1)
    threads = threads or 0

    key = {"kind": "generated", "generator": generator, "params": full_params, "rows": rows, "cols": cols,
           "seed": seed, "tie_break": tie_break, "count": count, "shard_size": shard_size,
           **(paper.key if paper else {})}
    out = Path(out)
    _claim_directory(out, key)
    n_shards = -(-count // shard_size)
    mine = range(part * n_shards // parts, (part + 1) * n_shards // parts)
    done = _complete_shards(out, key, mine)
    todo = [i for i in mine if i not in done]
    if engine is not None and todo:
        done.update(engine(out, key, todo))
        todo = []

    total = sum(min(shard_size, count - i * shard_size) for i in todo)
    if todo:
        _warm_up(generator, rows, cols, seed, full_params, progress, paper)
    bar = Progress(total, enabled=progress)
    # One thread writes shard i (packing, hashing, disk) while the cores make shard i + 1.
    with ThreadPoolExecutor(max_workers=1) as writer:
        writing = None
        for i in todo:
            batch = make_shard_batch(key, i, threads)
            if writing is not None:
                entry = writing.result()
                done[entry["index"]] = entry
                bar.update(entry["count"])
            writing = writer.submit(write_shard, out, i, batch, key)
        if writing is not None:
            entry = writing.result()
            done[entry["index"]] = entry
            bar.update(entry["count"])
    bar.close()

    if len(done) < n_shards:
        missing = n_shards - len(done)
        if progress:
            print(f"{out}: part {part}/{parts} done; {missing} of {n_shards} shards still missing — run the other "
                  f"parts, then `reasonless merge`", file=sys.stderr)
        return None
    header = {**key, "instances": [0, count], "command": command or _default_command()}
    if paper:
        from .paper_mazes import manifest_entry
        header.update(manifest_entry(paper, out, list(done.values())))
    write_manifest(out, header, list(done.values()))
    return Corpus(out)


def _paper_source(rng: str, split: str | None, generator: str, rows: int, cols: int, seed: int, params):
    """The JS tool's maze stream for rng="paper" (validated), None for our own generators."""
    if rng == "counter" and split is None:
        return None
    if rng != "paper":
        raise ValueError(f"rng={rng!r}: choose counter (our generators, the default) or paper (the JS tool's stream)"
                         if rng != "counter" else "split is only for rng='paper' (the JS tool's train/test modes)")
    from .paper_mazes import PaperSource
    return PaperSource(generator, rows, cols, seed, split, params)


def make_shard_batch(key: dict, index: int, threads: int = 0) -> Batch:
    """Problems and A* results of shard `index` of the generated corpus `key`: a pure function of the two, so
    any process on any machine makes the same bytes."""
    from . import mazes

    rows, cols, seed, size = key["rows"], key["cols"], key["seed"], key["shard_size"]
    first = index * size
    n = min(size, key["count"] - first)
    if key.get("rng") == "paper":
        from .paper_mazes import shard_mazes
        walls, start, goal = shard_mazes(key, first, n)
    else:
        walls, start, goal = mazes.generate_mazes(key["generator"], rows, cols, seed, first, n, key["params"],
                                                  threads=threads or None)
    hashes = mazes.layout_hash(walls, rows, cols)
    batch = solve(walls, rows, cols, start, goal, hashes, first, key["tie_break"], seed, threads)
    if key.get("rng") == "paper":
        from .paper_mazes import PaperSource
        batch = PaperSource.finish(batch)
    return batch


def _warm_up(generator: str, rows: int, cols: int, seed: int, params: dict, progress: bool, paper=None) -> None:
    """Makes one maze before the progress bar starts, so that compiling the Numba kernels (seconds on the first
    run, then loaded from Numba's cache) is never counted as generation time."""
    from . import mazes

    t0 = time.perf_counter()
    if progress:
        print("preparing the maze kernels (compiled on the first run only, then cached)...", file=sys.stderr,
              flush=True)
    if paper is None:
        walls, _, _ = mazes.generate_mazes(generator, rows, cols, seed, 0, 1, params, threads=1)
    else:
        walls = paper.warm_up()
    mazes.layout_hash(walls, rows, cols)
    if progress:
        print(f"kernels ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def _default_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _claim_directory(out: Path, key: dict) -> None:
    """Refuses to write into a directory that holds something other than this corpus."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        old_key = {k: old.get(k) for k in key}
        if old_key != key:
            raise ValueError(f"{out}: already holds a different corpus ({_key_diff(old_key, key)}); "
                             f"choose another --out")
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(("manifest.json", "shard-"))]
    if foreign:
        raise ValueError(f"{out}: not empty and not a corpus (found {', '.join(sorted(foreign)[:3])}); "
                         f"choose another --out")


def _key_diff(old: dict, new: dict) -> str:
    return "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} asked" for k in new if old.get(k) != new[k])


def _complete_shards(out: Path, key: dict, mine: range) -> dict[int, dict]:
    """The complete shards of this corpus in `out`. Leftovers of interrupted writes of the shards in `mine` are
    removed; other parts' shards are never touched, since their makers may be writing them right now."""
    done = {}
    # One listing of what exists, not one lookup per shard index: the work is proportional to the shards on disk.
    for shard_dir in sorted(out.glob("shard-*")):
        if TMP_MARK in shard_dir.name:
            index = shard_dir.name[len("shard-"):].split(TMP_MARK)[0]
            if index.isdigit() and int(index) in mine:
                shutil.rmtree(shard_dir)
            continue
        entry = read_shard_entry(shard_dir, check_files=True)
        if entry is None:  # damaged (a file deleted, truncated or changed): remake it if it is ours
            if int(shard_dir.name.split("-")[1]) in mine:
                shutil.rmtree(shard_dir)
            continue
        if entry["key"] != key:
            raise ValueError(f"{shard_dir}: belongs to a different corpus ({_key_diff(entry['key'], key)})")
        done[int(entry["index"])] = entry
    return done


def subset(corpus: Corpus, keep: np.ndarray, out: str | os.PathLike, note: dict) -> Corpus:
    """Writes the examples of `corpus` where `keep` is True as a new corpus at `out` (atomically); `note` (e.g. why
    and how many were removed) goes into its manifest."""
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != len(corpus):
        raise ValueError(f"keep has {len(keep)} entries for a corpus of {len(corpus)}")
    key = {k: corpus.manifest[k] for k in ("generator", "params", "rows", "cols", "seed", "tie_break")}
    key.update(kind="subset", count=int(keep.sum()), shard_size=corpus.manifest["shard_size"],
               source_count=len(corpus), source_command=corpus.manifest.get("command"), **note)
    if key["count"] == 0:
        raise ValueError(f"{out}: no example left after filtering {corpus.path}")
    entries: list[dict] = []
    with atomic_dir(Path(out)) as tmp:
        for batch in corpus.batches(key["shard_size"]):
            rows = np.flatnonzero(keep[batch.first:batch.first + len(batch)])
            if len(rows):
                part = batch.select(rows)
                part.first = sum(e["count"] for e in entries)
                entries.append(write_shard(tmp, len(entries), part, key))
        write_manifest(tmp, {**key, "instances": [0, key["count"]], "command": corpus.manifest.get("command")},
                       entries)
    return Corpus(out)


def merge(inputs: list[str | os.PathLike], out: str | os.PathLike, command: str | None = None) -> Corpus:
    """Merges the parts of a sharded run (directories holding shards of one corpus) into one corpus at `out`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; merge writes a new directory")
    key, found = None, {}
    for d in map(Path, inputs):
        dirs = sorted(d.glob("shard-*")) if d.is_dir() else []
        if not dirs:
            raise ValueError(f"{d}: holds no shards")
        for shard_dir in dirs:
            if TMP_MARK in shard_dir.name:  # leftover of an interrupted write
                continue
            entry = read_shard_entry(shard_dir, check_files=True)
            if entry is None:
                raise ValueError(f"{shard_dir}: incomplete or damaged shard (missing file or checksum mismatch)")
            if key is None:
                key = entry["key"]
            elif entry["key"] != key:
                raise ValueError(f"{shard_dir}: from a different corpus ({_key_diff(entry['key'], key)})")
            other = found.setdefault(int(entry["index"]), (shard_dir, entry))
            if other[0] != shard_dir and other[1]["crc32"] != entry["crc32"]:
                raise ValueError(f"{shard_dir} and {other[0]}: the same shard with different contents")
    n_shards = -(-key["count"] // key["shard_size"])
    missing = sorted(set(range(n_shards)) - set(found))
    if missing:
        raise ValueError(f"shards missing: {', '.join(shard_name(i) for i in missing[:10])}"
                         f"{' …' if len(missing) > 10 else ''} of {n_shards}")
    with atomic_dir(out) as tmp:
        for i, (shard_dir, entry) in sorted(found.items()):
            dest = tmp / shard_dir.name
            dest.mkdir()
            for f in shard_dir.iterdir():
                _link_or_copy(f, dest / f.name)
        header = {**key, "instances": [0, key["count"]], "command": command or _default_command()}
        write_manifest(tmp, header, [e for _, e in found.values()])
    return Corpus(out)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

