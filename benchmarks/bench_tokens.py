"""Tokenizer throughput on synthetic 30×30 Wilson-sized examples (≈450 walls, 300 ops, 100 plan cells,
≈3,160 tokens each). Project target: ≥ 200,000 examples/s for token_lengths + tokenize_into.

    PYTHONPATH=. python -m pytest benchmarks/bench_tokens.py -q
    PYTHONPATH=. python benchmarks/bench_tokens.py [N]     # plain examples/s table

Tokens go into a preallocated array whose pages are already touched, so the numbers are the tokenizer's and
not the kernel's first-touch page faults (a fresh np.empty or memory map adds those; the script shows both).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from reasonless import _core

ROWS = COLS = 30
N_WALLS, N_OPS, N_PLAN = 450, 300, 100


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cells = ROWS * COLS
    keys = rng.random((n, cells))
    walls = (keys < np.partition(keys, N_WALLS, axis=1)[:, N_WALLS:N_WALLS + 1]).astype(np.uint8)  # 450 each
    start = rng.integers(0, COLS, (n, 2)).astype(np.int32)
    goal = rng.integers(0, COLS, (n, 2)).astype(np.int32)
    ops = np.empty((n * N_OPS, 3), np.uint16)
    ops[:, 0] = rng.integers(0, cells, n * N_OPS) | (rng.integers(0, 2, n * N_OPS) << 15)
    ops[:, 1:] = rng.integers(0, 2 * COLS, (n * N_OPS, 2))
    plan = rng.integers(0, cells, n * N_PLAN).astype(np.uint16)
    return dict(walls=walls, start=start, goal=goal, ops=ops, ops_offsets=np.arange(n + 1, dtype=np.int64) * N_OPS,
                plan=plan, plan_offsets=np.arange(n + 1, dtype=np.int64) * N_PLAN)


def lengths_and_tokenize(b, out, threads):
    lengths, _ = _core.token_lengths(b["walls"], ROWS, COLS, b["ops_offsets"], b["plan_offsets"], "correct", threads)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    _core.tokenize_into(b["walls"], ROWS, COLS, b["start"], b["goal"], b["ops"], b["ops_offsets"], b["plan"],
                        b["plan_offsets"], out, offsets, "correct", threads)
    return offsets


@pytest.fixture(scope="module")
def data():
    b = synthetic(20_000)
    lengths, _ = _core.token_lengths(b["walls"], ROWS, COLS, b["ops_offsets"], b["plan_offsets"])
    out = np.zeros(int(lengths.sum()), np.uint16)
    return b, out


@pytest.mark.parametrize("threads", [1, 2])
def test_tokenize(benchmark, data, threads):
    b, out = data
    benchmark.extra_info["examples"] = len(b["walls"])
    benchmark(lengths_and_tokenize, b, out, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_render(benchmark, data, threads):
    b, out = data
    offsets = lengths_and_tokenize(b, out, threads)
    benchmark.extra_info["examples"] = len(b["walls"])
    benchmark(_core.render_text, out, offsets, ROWS, COLS, threads)


def main(n: int) -> None:
    b = synthetic(n)
    lengths, _ = _core.token_lengths(b["walls"], ROWS, COLS, b["ops_offsets"], b["plan_offsets"])
    total = int(lengths.sum())
    print(f"{n} examples of {total / n:.0f} tokens ({2 * total / 1e6:.0f} MB of tokens)")
    out = np.zeros(total, np.uint16)
    for threads in (1, 2):
        best_tok = best_render = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            offsets = lengths_and_tokenize(b, out, threads)
            t1 = time.perf_counter()
            _core.render_text(out, offsets, ROWS, COLS, threads)
            t2 = time.perf_counter()
            best_tok, best_render = min(best_tok, t1 - t0), min(best_render, t2 - t1)
        fresh = np.empty(total, np.uint16)
        t0 = time.perf_counter()
        lengths_and_tokenize(b, fresh, threads)
        t_fresh = time.perf_counter() - t0
        del fresh
        print(f"threads={threads}: token_lengths+tokenize_into {n / best_tok:,.0f} ex/s "
              f"(fresh np.empty out: {n / t_fresh:,.0f} ex/s), render_text {n / best_render:,.0f} ex/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
