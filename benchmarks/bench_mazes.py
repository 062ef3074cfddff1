"""Maze generation throughput (examples/s) per generator at 30x30, all Numba threads.

Run: PYTHONPATH=. python -m pytest benchmarks/bench_mazes.py --benchmark-only -q
     (MAZES_BENCH_COUNT=200000 for the project's reference measurement; default 50,000)
The project's end-to-end targets (generate + A* + disk, 2 cores, 30x30) are Wilson >= 50k/s,
Kruskal/DFS/drunkard's >= 100k/s, Searchformer >= 20k/s; generation alone should be several
times faster.
"""
from __future__ import annotations

import os

import pytest

from reasonless.mazes import GENERATORS, generate_mazes, layout_hash

COUNT = int(os.environ.get("MAZES_BENCH_COUNT", "50000"))


@pytest.mark.parametrize("name", GENERATORS)
def test_generate_30x30(benchmark, name):
    generate_mazes(name, 30, 30, 0, 0, 1000)  # JIT / cache load outside the timing
    walls, _, _ = benchmark.pedantic(generate_mazes, args=(name, 30, 30, 1, 0, COUNT), rounds=3, iterations=1)
    benchmark.extra_info["examples_per_s"] = COUNT / benchmark.stats.stats.min
    assert walls.shape == (COUNT, 900)


def test_layout_hash_30x30(benchmark):
    walls, _, _ = generate_mazes("kruskal", 30, 30, 1, 0, COUNT)
    layout_hash(walls[:10], 30, 30)
    h = benchmark.pedantic(layout_hash, args=(walls, 30, 30), rounds=3, iterations=1)
    benchmark.extra_info["examples_per_s"] = COUNT / benchmark.stats.stats.min
    assert h.shape == (COUNT,)
