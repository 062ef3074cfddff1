"""Parquet for RL trainers (verl, TRL, Hugging Face ``datasets``): one row per example.

Layout (one file; row groups of about :data:`ROW_GROUP_BYTES` of text, so readers stream them):

=================  ============================================  ===========================================
column             type                                          content
=================  ============================================  ===========================================
``data_source``    string                                        ``"reasonless"`` (verl picks the reward by it)
``prompt``         list<struct<role: string, content: string>>   verl's chat prompt: one ``user`` message whose
                                                                 content is ``prompt_text``
``ability``        string                                        ``"maze_astar"``
``reward_model``   struct<style: string, ground_truth: string>   ``{"style": "rule", "ground_truth":
                                                                 prompt_text}``: the problem itself, which a
                                                                 reward function verifies a response against
``extra_info``     struct<split, index, arm, rows, cols>         what verl passes on to the reward function
``prompt_text``    string                                        the problem: ``query … wall X Y`` (the text
                                                                 before ``reasoning``)
``response``       string                                        ``reasoning … end`` under the arm
``text``           string                                        ``prompt_text + " " + response``, the paper's
                                                                 JSONL ``text``
``rows``/``cols``  int32                                         grid size
``generator``      string                                        the corpus's generator (``imported`` for
                                                                 imported corpora)
``seed``           uint64                                        the corpus seed
``index``          int64                                         the example's index in the corpus
``maze_hash``      uint64                                        hash of the wall layout (leakage checks)
=================  ============================================  ===========================================

``prompt`` is the chat list because that is the column verl's ``data.prompt_key`` reads by default (and TRL
accepts conversational prompts); the plain string is ``prompt_text``. The schema's metadata key ``reasonless``
holds the arm, its seed, the grid and the corpus key as JSON.

:func:`export_parquet` writes batch by batch under a temporary name and renames at the end, so memory is bounded
by one row group whatever the corpus size. :func:`read_problems` yields rows of such a file (or any Parquet file
with a ``text`` column, or ``prompt``/``prompt_text`` plus ``response`` strings) for ``reasonless import``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .arms import check_arm, token_layout
from .atomic import atomic_file
from .corpus import Corpus
from .interchange import shard_arm_batches, span
from .progress import Progress

FORMAT = "reasonless-parquet"
FORMAT_VERSION = 1
DATA_SOURCE = "reasonless"
ABILITY = "maze_astar"
ROW_GROUP_BYTES = 32 << 20  # text bytes per row group (the in-memory table is ~4x that: prompt copies)
MIN_ROW_GROUP, MAX_ROW_GROUP = 64, 65_536
_REASONING = re.compile(rb" reasoning")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 'reasonless[parquet]' (or pip install pyarrow)") \
            from None
    return pa, pq


def schema(metadata: dict | None = None):
    pa, _ = _pyarrow()
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    fields = [
        ("data_source", pa.string()), ("prompt", pa.list_(message)), ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("arm", pa.string()),
                                  ("rows", pa.int32()), ("cols", pa.int32())])),
        ("prompt_text", pa.string()), ("response", pa.string()), ("text", pa.string()),
        ("rows", pa.int32()), ("cols", pa.int32()), ("generator", pa.string()), ("seed", pa.uint64()),
        ("index", pa.int64()), ("maze_hash", pa.uint64()),
    ]
    meta = {b"reasonless": json.dumps(metadata).encode()} if metadata is not None else None
    return pa.schema(fields, metadata=meta)


def row_group_rows(corpus: Corpus) -> int:
    """Rows per row group: about ROW_GROUP_BYTES of `text`, estimated from the manifest's counts (a wall ~10
    bytes, with half the cells taken as walls; an operation ~20; a plan cell ~10)."""
    counts = corpus.manifest.get("counts", {})
    n = max(int(counts.get("examples", len(corpus))), 1)
    per_example = 40 + 5 * corpus.rows * corpus.cols + 20 * counts.get("ops", 0) / n \
        + 10 * counts.get("plan_cells", 0) / n
    return int(min(MAX_ROW_GROUP, max(MIN_ROW_GROUP, ROW_GROUP_BYTES // per_example)))


def _strings(data: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """A pyarrow string array of the byte ranges [starts[i], ends[i]) of `data` (uint8); the ranges are sorted
    and do not overlap, so one mask over `data` selects them all in order."""
    pa, _ = _pyarrow()
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("a row group over 2 GiB of text; lower the row-group size")
    if len(starts) and np.array_equal(starts[1:], ends[:-1]):  # contiguous: no copy
        values = data[starts[0]:ends[-1]]
    else:  # keep the bytes of each range, drop the gaps before them
        runs = np.empty(2 * len(starts), dtype=np.int64)
        runs[0::2] = starts - np.concatenate([[0], ends[:-1]])
        runs[1::2] = ends - starts
        values = data[:ends[-1]][np.repeat(np.tile(np.array([False, True]), len(starts)), runs)]
    return pa.StringArray.from_buffers(len(starts), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(values))


def _constant(value: str, n: int):
    pa, _ = _pyarrow()
    raw = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def batch_table(corpus: Corpus, batch, arm: str, split: str, threads: int = 0):
    """The rows of one arm batch (from :func:`reasonless.arms.arm_batches`) as a pyarrow Table."""
    from . import _core

    pa, _ = _pyarrow()
    n = len(batch)
    tokens, offsets, _ = batch.tokens(token_layout(arm), threads)
    blob, text_offsets = _core.render_text(tokens, offsets, corpus.rows, corpus.cols, threads)
    blob = bytes(blob)
    text_offsets = np.asarray(text_offsets, dtype=np.int64)
    cut = np.fromiter((m.start() for m in _REASONING.finditer(blob)), dtype=np.int64)
    if len(cut) != n or not (np.all(cut > text_offsets[:-1]) and np.all(cut < text_offsets[1:])):
        raise ValueError(f"examples {batch.first:,}–{batch.first + n - 1:,}: expected one ' reasoning' per text")
    data = np.frombuffer(blob, dtype=np.uint8)
    prompt = _strings(data, text_offsets[:-1], cut)
    response = _strings(data, cut + 1, text_offsets[1:])
    text = _strings(data, text_offsets[:-1], text_offsets[1:])
    index = np.arange(batch.first, batch.first + n, dtype=np.int64)
    rows = np.full(n, corpus.rows, dtype=np.int32)
    cols = np.full(n, corpus.cols, dtype=np.int32)
    sch = schema()
    chat_type = sch.field("prompt").type
    chat = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                    pa.StructArray.from_arrays([_constant("user", n), prompt],
                                                               fields=list(chat_type.value_type)))
    reward = pa.StructArray.from_arrays([_constant("rule", n), prompt],
                                        fields=list(sch.field("reward_model").type))
    extra = pa.StructArray.from_arrays([_constant(split, n), pa.array(index), _constant(arm, n), pa.array(rows),
                                        pa.array(cols)], fields=list(sch.field("extra_info").type))
    columns = [_constant(DATA_SOURCE, n), chat, _constant(ABILITY, n), reward, extra, prompt, response, text,
               pa.array(rows), pa.array(cols), _constant(str(corpus.manifest.get("generator")), n),
               pa.array(np.full(n, int(corpus.manifest.get("seed", 0)), dtype=np.uint64)), pa.array(index),
               pa.array(np.asarray(batch.maze_hash, dtype=np.uint64))]
    return pa.Table.from_arrays(columns, schema=sch)


def export_parquet(corpus: Corpus, out: str | os.PathLike, arm: str = "correct", seed: int = 0, threads: int = 0,
                   split: str = "train", row_group: int | None = None, progress: bool = False,
                   shard: int | None = None) -> dict:
    """Writes every example of `corpus` (or of its shard `shard` only, with corpus-wide indexes and arm) under
    `arm` as one Parquet file (layout in the module docstring), one row group per batch; returns the metadata
    stored in the file."""
    _, pq = _pyarrow()
    meta = export_meta(corpus, arm, seed, split, row_group, shard)
    bar = Progress(meta["examples"], enabled=progress)
    with atomic_file(Path(out), "wb") as f:
        with pq.ParquetWriter(f, schema(meta), compression="zstd") as writer:
            for batch in shard_arm_batches(corpus, arm, seed, meta["row_group"], threads, shard):
                writer.write_table(batch_table(corpus, batch, arm, split, threads), row_group_size=len(batch))
                bar.update(len(batch))
    bar.close()
    return meta


def export_meta(corpus: Corpus, arm: str, seed: int, split: str, row_group: int | None = None,
                shard: int | None = None) -> dict:
    """What a Parquet export of `corpus` (or of one shard) records in its schema metadata."""
    check_arm(arm)
    size = row_group or row_group_rows(corpus)
    if size < 1:
        raise ValueError(f"row_group={row_group}: must be at least 1")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "arm": arm, "arm_seed": seed, "split": split,
            "rows": corpus.rows, "cols": corpus.cols, "examples": len(corpus), "row_group": size,
            "vocab_size": len(corpus.vocab),
            "corpus_key": {k: corpus.manifest.get(k) for k in ("kind", "generator", "params", "seed", "tie_break",
                                                              "count")}}
    if shard is not None:
        first, count = span(corpus, shard)
        meta.update(shard=shard, first=first, examples=count)
    return meta


def read_meta(path: str | os.PathLike) -> dict | None:
    """The ``reasonless`` metadata of a complete Parquet file, or None (not Parquet, damaged, or none)."""
    _, pq = _pyarrow()
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"reasonless")
        return json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None


def is_parquet(path: str | os.PathLike) -> bool:
    """Whether the file starts with Parquet's magic bytes."""
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def count_rows(path: str | os.PathLike) -> int:
    _, pq = _pyarrow()
    return pq.ParquetFile(path).metadata.num_rows


def read_problems(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(row number from 1, {"text", and "rows"/"cols" when the file has them}) per row, one row group at a time.
    The text is the ``text`` column, else ``prompt_text`` (or a string ``prompt``) + " " + ``response``."""
    pa, pq = _pyarrow()
    f = pq.ParquetFile(path)
    names = set(f.schema_arrow.names)
    prompt_col = "prompt_text" if "prompt_text" in names else "prompt"
    if "text" in names:
        wanted = ["text"]
    elif prompt_col in names and "response" in names and pa.types.is_string(f.schema_arrow.field(prompt_col).type):
        wanted = [prompt_col, "response"]
    else:
        raise ValueError(f"{path}: a Parquet file needs a 'text' column, or 'prompt_text' (or a string 'prompt') "
                         f"and 'response'; found {', '.join(sorted(names))}")
    wanted += [c for c in ("rows", "cols") if c in names]
    number = 0
    for group in range(f.num_row_groups):
        table = f.read_row_group(group, columns=wanted).to_pydict()
        texts = table["text"] if "text" in table else \
            [None if p is None or r is None else f"{p} {r}" for p, r in zip(table[prompt_col], table["response"])]
        for i, text in enumerate(texts):
            number += 1
            record = {"text": text}
            for c in ("rows", "cols"):
                if c in table:
                    record[c] = table[c][i]
            yield number, record
