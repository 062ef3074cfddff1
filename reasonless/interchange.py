"""Moving corpora in and out: the paper's JSONL text format and training token streams.

* :func:`export_jsonl` writes exactly ``{"text":"…"}`` per line, the format of the paper's datasets, with the
  trace of any training arm (:mod:`reasonless.arms`).
* :func:`export_tokens` writes a directory ``tokens.npy`` (uint16), ``offsets.npy`` (int64, n+1),
  ``prompt_lengths.npy`` (int32) and ``meta.json``; sequences are ``<|bos|> text <|eos|>``.
* :func:`import_jsonl` reads paper-format JSONL (as written by the public JavaScript and Rust generators), stores
  the problems as a corpus, re-solves them with our A* and reports how many stored traces equal ours.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_dir, atomic_file
from .corpus import DEFAULT_SHARD_SIZE, TIE_BREAKS, Corpus, solve, write_manifest, write_shard
from .progress import Progress
from .arms import arm_batch, arm_batches, check_arm, token_layout
from .vocab import check_grid_size, parse_sequence, vocab_for

EXPORT_BATCH = 20_000
NPY_HEADER_BYTES = 128  # fixed, so the header can be rewritten in place once the token count is known


def _npy_header(length: int) -> bytes:
    """A version 1.0 .npy header for a uint16 vector, padded to exactly NPY_HEADER_BYTES."""
    text = "{'descr': '<u2', 'fortran_order': False, 'shape': (%d,), }" % length
    text = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("ascii")


def shard_arm_batches(corpus: Corpus, arm: str, seed: int, size: int, threads: int, shard: int | None = None):
    """:func:`reasonless.arms.arm_batches` over the corpus, or over its shard `shard` only (with corpus-wide
    ``first``, so the arm's randomness and partners are those of the whole corpus)."""
    if shard is None:
        yield from arm_batches(corpus, arm, seed, size, threads)
        return
    first = span(corpus, shard)[0]
    for batch in corpus.shard_corpus(shard).batches(size):
        batch.first += first
        yield arm_batch(corpus, batch, arm, seed, threads)


def span(corpus: Corpus, shard: int | None) -> tuple[int, int]:
    """(first example, count) of shard `shard`, or of the whole corpus when None."""
    if shard is None:
        return 0, len(corpus)
    return int(corpus._starts[shard]), corpus.shards[shard].count


def _arm_token_batches(corpus: Corpus, arm: str, seed: int, threads: int, size: int = EXPORT_BATCH,
                       shard: int | None = None):
    """(batch, lengths, prompt lengths) of each batch of the corpus under `arm`, ready for tokenize_into."""
    from . import _core

    for batch in shard_arm_batches(corpus, arm, seed, size, threads, shard):
        try:
            lengths, prompts = _core.token_lengths(batch.walls, batch.rows, batch.cols, batch.ops_offsets,
                                                   batch.plan_offsets, token_layout(arm), threads)
        except ValueError as err:
            raise batch.locate(err) from None
        yield batch, lengths, prompts


def export_jsonl(corpus: Corpus, out: str | os.PathLike, arm: str = "correct", seed: int = 0, threads: int = 0,
                 progress: bool = False, shard: int | None = None) -> int:
    """Writes the paper-format JSONL of every example (or of shard `shard` only) under `arm`; returns the number
    of lines."""
    from . import _core

    check_arm(arm)
    n = span(corpus, shard)[1]
    bar = Progress(n, enabled=progress)
    with atomic_file(Path(out), "wb") as f:
        for batch in shard_arm_batches(corpus, arm, seed, EXPORT_BATCH, threads, shard):
            tokens, offsets, _ = batch.tokens(token_layout(arm), threads)
            blob, text_offsets = _core.render_text(tokens, offsets, corpus.rows, corpus.cols, threads)
            blob = bytes(blob)
            # The words are ASCII without quotes or backslashes, so no JSON escaping is needed.
            f.write(b"".join(b'{"text":"' + blob[a:b] + b'"}\n'
                             for a, b in zip(text_offsets[:-1].tolist(), text_offsets[1:].tolist())))
            bar.update(len(batch))
    bar.close()
    return n


def export_tokens(corpus: Corpus, out: str | os.PathLike, arm: str = "correct", seed: int = 0, threads: int = 0,
                  progress: bool = False, shard: int | None = None) -> dict:
    """Writes the token streams of an arm (of shard `shard` only, if given) in one pass; memory stays bounded by
    two batches whatever the corpus size (plus 12 bytes per example for the offsets and prompt lengths)."""
    from . import _core

    check_arm(arm)
    base, n = span(corpus, shard)
    offsets = np.zeros(n + 1, dtype=np.int64)
    prompts = np.empty(n, dtype=np.int32)
    bar = Progress(n, enabled=progress)
    with atomic_dir(Path(out)) as tmp:
        with open(tmp / "tokens.npy", "wb") as f:
            f.write(_npy_header(0))
            # Two buffers, reused: one is written to disk by a thread while the other is filled (fresh arrays
            # would cost as much in first-touch page faults as the tokenizing itself).
            buffers = [np.empty(0, dtype=np.uint16), np.empty(0, dtype=np.uint16)]
            with ThreadPoolExecutor(max_workers=1) as writer:
                writing = None
                batches = _arm_token_batches(corpus, arm, seed, threads, shard=shard)
                for k, (b, lengths, batch_prompts) in enumerate(batches):
                    spans = np.zeros(len(b) + 1, dtype=np.int64)
                    np.cumsum(lengths, out=spans[1:])
                    i = b.first - base
                    offsets[i + 1:i + len(b) + 1] = offsets[i] + spans[1:]
                    prompts[i:i + len(b)] = batch_prompts
                    if len(buffers[k % 2]) < spans[-1]:
                        buffers[k % 2] = np.empty(int(spans[-1] * 1.25), dtype=np.uint16)
                    buffer = buffers[k % 2]
                    try:
                        _core.tokenize_into(b.walls, b.rows, b.cols, b.start, b.goal, b.ops, b.ops_offsets,
                                            b.plan, b.plan_offsets, buffer, spans, token_layout(arm), threads)
                    except ValueError as err:
                        raise b.locate(err) from None
                    if writing is not None:
                        writing.result()
                    writing = writer.submit(f.write, buffer[:spans[-1]].data)
                    bar.update(len(b))
                if writing is not None:
                    writing.result()
            f.seek(0)
            f.write(_npy_header(int(offsets[-1])))
        meta = {"format": "reasonless-tokens", "format_version": 1, "arm": arm, "arm_seed": seed,
                "rows": corpus.rows, "cols": corpus.cols, "vocab": corpus.vocab.to_json(), "examples": n,
                "tokens": int(offsets[-1]), "corpus": str(Path(corpus.path).resolve()),
                "loss_mask": "the response, tokens[offsets[i] + prompt_lengths[i]:offsets[i + 1]], from "
                             "'reasoning' to <|eos|>",
                "corpus_key": {k: corpus.manifest.get(k) for k in ("kind", "generator", "params", "seed",
                                                                  "tie_break", "count")}}
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "prompt_lengths.npy", prompts)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    bar.close()
    return meta


def load_tokens(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Memory-maps a token export: (tokens, offsets, prompt_lengths, meta)."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    return (np.load(path / "tokens.npy", mmap_mode="r"), np.load(path / "offsets.npy"),
            np.load(path / "prompt_lengths.npy"), meta)


# --------------------------------------------------------------------------------------------- import
@dataclass
class ImportReport:
    source: str
    lines: int = 0
    imported: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    trace_equal: int = 0
    plan_equal: int = 0
    plan_length_equal: int = 0
    tie_break: str = "fifo"

    def summary(self) -> str:
        n = max(self.imported, 1)
        lines = [f"{self.source}: {self.lines} lines, {self.imported} imported, {len(self.skipped)} skipped",
                 f"stored trace identical to ours ({self.tie_break}): {self.trace_equal}/{self.imported} "
                 f"({100 * self.trace_equal / n:.1f}%)",
                 f"stored plan identical to ours: {self.plan_equal}/{self.imported} ({100 * self.plan_equal / n:.1f}%)",
                 f"stored plan as short as ours: {self.plan_length_equal}/{self.imported} "
                 f"({100 * self.plan_length_equal / n:.1f}%)"]
        reasons = Counter(r for _, r in self.skipped)
        lines += [f"  skipped {c}x: {r}" for r, c in reasons.most_common(5)]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"source": self.source, "lines": self.lines, "imported": self.imported,
                "skipped": [{"line": ln, "reason": r} for ln, r in self.skipped[:1000]],
                "skipped_count": len(self.skipped), "trace_equal": self.trace_equal, "plan_equal": self.plan_equal,
                "plan_length_equal": self.plan_length_equal, "tie_break": self.tie_break}


def _records(path: Path):
    """(line or row number, raw JSON line or parsed Parquet row) of a JSONL or Parquet file, and their count."""
    from . import parquet

    if parquet.is_parquet(path):
        return parquet.read_problems(path), parquet.count_rows(path)

    def lines():
        with open(path, "rb") as f:
            yield from enumerate(f, 1)
    with open(path, "rb") as f:
        return lines(), sum(1 for _ in f)


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_problem(line: bytes | dict, lineno: int, default_rows: int, default_cols: int):
    try:
        obj = line if isinstance(line, dict) else json.loads(line)
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text (byte 0x{line[err.start]:02x} at column {err.start + 1})") from None
    except ValueError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValueError('expected an object with a "text" string')
    rows, cols = obj.get("rows", default_rows), obj.get("cols", default_cols)
    if isinstance(rows, bool) or isinstance(cols, bool) or not isinstance(rows, int) or not isinstance(cols, int):
        raise ValueError(f'"rows"/"cols" must be integers, got {rows!r}/{cols!r}')
    check_grid_size(rows, cols)
    vocab = vocab_for(rows, cols)
    walls, start, goal, ops, plan = parse_sequence(vocab, vocab.encode(obj["text"]))
    for name, (x, y) in (("start", start), ("goal", goal)):
        if walls[y * cols + x]:
            raise ValueError(f"{name} ({x}, {y}) is a wall")
    if start == goal:
        raise ValueError(f"start and goal are the same cell {start}")
    return rows, cols, walls, start, goal, ops, plan


def import_jsonl(path: str | os.PathLike, out: str | os.PathLike, rows: int = 30, cols: int = 30,
                 tie_break: str = "fifo", skip_invalid: bool = False, threads: int = 0,
                 shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = False,
                 command: str | None = None) -> ImportReport:
    """Imports a paper-format JSONL file, or a Parquet file in the layout of :mod:`reasonless.parquet` (its
    ``text``, ``rows`` and ``cols`` columns), as a corpus (our A* traces) and compares the stored traces with ours.

    A malformed line, a start or goal on a wall, or a maze without a path raises ValueError naming the line, unless
    `skip_invalid`, which skips and reports such lines. Blank lines are ignored. Nothing is left at `out` on error.
    """
    from . import mazes

    path, out = Path(path), Path(out)
    check_grid_size(rows, cols)
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie-break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; import writes a new corpus")
    digest = _sha256(path)
    report = ImportReport(str(path), tie_break=tie_break)
    grid = None
    pending: list[tuple] = []
    entries: list[dict] = []
    records, n_lines = _records(path)
    bar = Progress(n_lines, unit="lines", enabled=progress)

    def fail(lineno: int, reason: str) -> None:
        if not skip_invalid:
            raise ValueError(f"{path}:{lineno}: {reason}")
        report.skipped.append((lineno, reason))

    def flush(tmp: Path) -> None:
        r, c = grid
        walls = np.stack([p[3] for p in pending])
        start = np.array([p[4] for p in pending], np.int32)
        goal = np.array([p[5] for p in pending], np.int32)
        first = report.imported
        batch = solve(walls, r, c, start, goal, mazes.layout_hash(walls, r, c), first, tie_break, 0, threads)
        keep = np.flatnonzero(np.diff(batch.plan_offsets) > 0)
        for j in np.flatnonzero(np.diff(batch.plan_offsets) == 0):
            fail(pending[j][0], "the maze has no path from start to goal")
        if len(keep) < len(pending):
            walls, start, goal = walls[keep], start[keep], goal[keep]
            batch = solve(walls, r, c, start, goal, mazes.layout_hash(walls, r, c), first, tie_break, 0, threads)
            pending[:] = [pending[j] for j in keep]
        for j, p in enumerate(pending):
            ops = batch.ops[batch.ops_offsets[j]:batch.ops_offsets[j + 1]]
            plan = batch.plan[batch.plan_offsets[j]:batch.plan_offsets[j + 1]]
            plan_same = np.array_equal(plan, p[7])
            report.trace_equal += bool(plan_same and np.array_equal(ops, p[6]))
            report.plan_equal += bool(plan_same)
            report.plan_length_equal += len(plan) == len(p[7])
        if len(batch):
            entries.append(write_shard(tmp, len(entries), batch, key))
            report.imported += len(batch)
        pending.clear()

    key: dict = {}
    with atomic_dir(out) as tmp:
        for lineno, line in records:
            report.lines += 1
            bar.update(1)
            if not isinstance(line, dict) and not line.strip():
                continue
            try:
                r, c, *problem = _read_problem(line, lineno, rows, cols)
            except ValueError as err:
                fail(lineno, str(err))
                continue
            if grid is None:
                grid = (r, c)
                key.update({"kind": "imported", "generator": "imported", "params": {"source": path.name,
                            "source_sha256": digest}, "rows": r, "cols": c, "seed": 0, "tie_break": tie_break,
                            "shard_size": shard_size})
            elif (r, c) != grid:
                fail(lineno, f"grid {r}x{c} differs from the first line's {grid[0]}x{grid[1]}; a corpus has "
                             f"one grid size")
                continue
            pending.append((lineno, r, c, *problem))
            if len(pending) == shard_size:
                flush(tmp)
        if pending:
            flush(tmp)
        bar.close()
        if report.imported == 0:
            raise ValueError(f"{path}: no importable lines ({report.lines} read, {len(report.skipped)} skipped)")
        key["count"] = report.imported
        for e in entries:  # the count is known only now; shards carry the final key
            e["key"] = key
            (tmp / e["dir"] / "shard.json").write_text(json.dumps(e, indent=1) + "\n")
        header = {**key, "instances": [0, report.imported], "import_report": report.to_json(),
                  "command": command or f"reasonless import {path}"}
        write_manifest(tmp, header, entries)
    return report
