"""A* throughput on 30×30 perfect mazes (the paper's main size).

    PYTHONPATH=. python -m pytest benchmarks/bench_astar.py --benchmark-only
    PYTHONPATH=. python benchmarks/bench_astar.py [N]      # prints solves/s per policy and thread count
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from reasonless import _core

ROWS = COLS = 30


def perfect_mazes(n: int, rows: int = ROWS, cols: int = COLS, seed: int = 0):
    """n perfect mazes by randomized DFS on the even-coordinate cells, all mazes stepped together in numpy.
    Start and goal are random free cells (start != goal where possible)."""
    rng = np.random.default_rng(seed)
    h, w = (rows + 1) // 2, (cols + 1) // 2
    walls = np.ones((n, rows, cols), np.uint8)
    seen = np.zeros((n, h, w), bool)
    stack = np.zeros((n, h * w), np.int64)
    depth = np.ones(n, np.int64)
    seen[:, 0, 0] = True
    walls[:, 0, 0] = 0
    dy = np.array([-1, 0, 1, 0])
    dx = np.array([0, 1, 0, -1])
    idx = np.arange(n)
    while (depth > 0).any():
        live = depth > 0
        cur = stack[idx, np.maximum(depth - 1, 0)]
        cy, cx = cur // w, cur % w
        ny, nx = cy[:, None] + dy, cx[:, None] + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ok &= ~seen[idx[:, None], np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)]
        ok &= live[:, None]
        pick = np.argmax(np.where(ok, rng.random(ok.shape), -1.0), axis=1)
        go = ok.any(axis=1)
        g = idx[go]
        py, px = ny[g, pick[g]], nx[g, pick[g]]
        seen[g, py, px] = True
        walls[g, cy[g] + py, cx[g] + px] = 0  # the wall between, at the midpoint in grid coordinates
        walls[g, 2 * py, 2 * px] = 0
        stack[g, depth[g]] = py * w + px
        depth[g] += 1
        back = live & ~go
        depth[back] -= 1
    flat = walls.reshape(n, -1)
    start = np.zeros((n, 2), np.int32)
    goal = np.zeros((n, 2), np.int32)
    for i in range(n):
        free = np.flatnonzero(flat[i] == 0)
        a, b = rng.choice(free, 2, replace=False)
        start[i] = (a % cols, a // cols)
        goal[i] = (b % cols, b // cols)
    return flat, start, goal


@pytest.fixture(scope="module")
def mazes():
    return perfect_mazes(5000)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("policy", ["fifo", "random"])
def test_astar_batch_30x30(benchmark, mazes, threads, policy):
    walls, start, goal = mazes
    ops, oo, plan, po = benchmark(_core.astar_batch, walls, ROWS, COLS, start, goal, policy=policy, threads=threads)
    benchmark.extra_info["solves"] = len(walls)
    benchmark.extra_info["mean_ops"] = len(ops) / len(walls)
    assert (np.diff(po) > 0).all()


def main(n: int) -> None:
    t0 = time.perf_counter()
    walls, start, goal = perfect_mazes(n)
    print(f"{n} perfect {ROWS}x{COLS} mazes built in {time.perf_counter() - t0:.1f} s")
    for policy in ("fifo", "random"):
        for threads in (1, 2):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                ops, oo, plan, po = _core.astar_batch(walls, ROWS, COLS, start, goal, policy=policy, threads=threads)
                best = min(best, time.perf_counter() - t0)
            print(f"{policy:6s} threads={threads}: {n / best:11,.0f} solves/s  ({best * 1e3:.1f} ms, "
                  f"{len(ops) / n:.0f} ops and {len(plan) / n:.0f} plan cells per maze)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
