"""Verifier throughput (traces/s) on 30×30 Wilson mazes and their fifo A* traces (≈300 operations each), correct and
corrupted, strict and paper. Project target: ≥ 500,000 traces/s in strict mode on the 2-core machine (goal 1,000,000).

    PYTHONPATH=. python -m pytest benchmarks/bench_verify.py -q
    PYTHONPATH=. python benchmarks/bench_verify.py [N]     # plain traces/s table

Mazes come from reasonless.mazes (Wilson) and traces from _core.astar_batch (without them, from a pure-Python
DFS maze generator and A*, 500 distinct mazes tiled); the responses (`reasoning <ops> solution <plan> end`) are
assembled here with NumPy, so only the verifier is timed.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from reasonless import _core
from reasonless.vocab import CLOSE, CREATE, END, FIRST_COORD, PLAN, REASONING, SOLUTION

ROWS = COLS = 30
FIRST_COST = FIRST_COORD + max(ROWS, COLS)
N_DEFAULT = 50_000


def responses(ops, ops_off, plan, plan_off):
    """Token ids of `reasoning <ops> solution <plan> end` per example, and their offsets."""
    n = len(ops_off) - 1
    n_ops, n_plan = np.diff(ops_off), np.diff(plan_off)
    lengths = 3 + 5 * n_ops + 3 * n_plan
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    tok = np.empty(off[-1], np.uint16)
    tok[off[:-1]] = REASONING
    ex = np.repeat(np.arange(n), n_ops)
    at = off[ex] + 1 + 5 * (np.arange(len(ops)) - ops_off[ex])
    cell = ops[:, 0] & 0x7FFF
    tok[at] = np.where(ops[:, 0] & 0x8000, CLOSE, CREATE)
    tok[at + 1] = FIRST_COORD + cell % COLS
    tok[at + 2] = FIRST_COORD + cell // COLS
    tok[at + 3] = FIRST_COST + ops[:, 1]
    tok[at + 4] = FIRST_COST + ops[:, 2]
    sol = off[:-1] + 1 + 5 * n_ops
    tok[sol] = SOLUTION
    ex = np.repeat(np.arange(n), n_plan)
    at = sol[ex] + 1 + 3 * (np.arange(len(plan)) - plan_off[ex])
    tok[at] = PLAN
    tok[at + 1] = FIRST_COORD + plan % COLS
    tok[at + 2] = FIRST_COORD + plan // COLS
    tok[off[1:] - 1] = END
    return tok, off


def corrupt(tok, off, n_ops, seed=1):
    """One edit per response, a third each: g of a random operation +1, h of one +1, or the response cut at a
    random token. Returns new tokens and (begins, ends)."""
    rng = np.random.default_rng(seed)
    tok = tok.copy()
    n = len(off) - 1
    kind = rng.integers(0, 3, n)
    k = (rng.random(n) * n_ops).astype(np.int64)
    at = off[:-1] + 1 + 5 * k + np.where(kind == 0, 3, 4)
    edit = kind < 2
    tok[at[edit]] += 1
    ends = off[1:].copy()
    cut = kind == 2
    ends[cut] = off[:-1][cut] + (rng.random(cut.sum()) * (off[1:] - off[:-1])[cut]).astype(np.int64)
    return tok, off[:-1].copy(), ends


def python_mazes_and_traces(n: int, seed: int):
    """Fallback without the project's generators: perfect mazes by randomized DFS over the room lattice and fifo
    A* traces in pure Python, 500 distinct ones tiled to n."""
    import random

    rng = random.Random(seed)
    k = min(n, 500)
    walls = np.ones((k, ROWS * COLS), np.uint8)
    start = np.zeros((k, 2), np.int32)
    goal = np.zeros((k, 2), np.int32)
    all_ops, all_plan, n_ops, n_plan = [], [], [], []
    for m in range(k):
        w = walls[m]
        rooms = [(x, y) for y in range(0, ROWS, 2) for x in range(0, COLS, 2)]
        stack, seen = [rng.choice(rooms)], set()
        seen.add(stack[0])
        w[stack[0][1] * COLS + stack[0][0]] = 0
        while stack:
            x, y = stack[-1]
            nxt = [(x + dx, y + dy) for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2))
                   if 0 <= x + dx < COLS and 0 <= y + dy < ROWS and (x + dx, y + dy) not in seen]
            if not nxt:
                stack.pop()
                continue
            nx, ny = rng.choice(nxt)
            w[((y + ny) // 2) * COLS + (x + nx) // 2] = 0
            w[ny * COLS + nx] = 0
            seen.add((nx, ny))
            stack.append((nx, ny))
        free = np.flatnonzero(w == 0)
        s, g = rng.sample(list(free), 2)
        start[m], goal[m] = (s % COLS, s // COLS), (g % COLS, g // COLS)
        hh = lambda c: abs(c % COLS - g % COLS) + abs(c // COLS - g // COLS)  # noqa: E731
        open_list, best, parent, closed, ops = [s], {s: 0}, {}, set(), []
        while open_list:
            j = min(range(len(open_list)), key=lambda t: (best[open_list[t]] + hh(open_list[t]), t))
            c = open_list.pop(j)
            ops.append((c | 0x8000, best[c], hh(c)))
            closed.add(c)
            if c == g:
                break
            x, y = c % COLS, c // COLS
            for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0)):
                if 0 <= x + dx < COLS and 0 <= y + dy < ROWS:
                    nb = (y + dy) * COLS + x + dx
                    if w[nb] or nb in closed or best.get(nb, 1 << 30) <= best[c] + 1:
                        continue
                    best[nb], parent[nb] = best[c] + 1, c
                    ops.append((nb, best[nb], hh(nb)))
                    if nb not in open_list:
                        open_list.append(nb)
        path = [g]
        while path[-1] != s:
            path.append(parent[path[-1]])
        all_ops += ops
        all_plan += path[::-1]
        n_ops.append(len(ops))
        n_plan.append(len(path))
    reps = -(-n // k)
    idx = np.tile(np.arange(k), reps)[:n]
    ops_k, plan_k = np.array(all_ops, np.uint16), np.array(all_plan, np.uint16)
    ops_off_k, plan_off_k = np.concatenate([[0], np.cumsum(n_ops)]), np.concatenate([[0], np.cumsum(n_plan)])
    ops = np.concatenate([ops_k[ops_off_k[i]:ops_off_k[i + 1]] for i in idx])
    plan = np.concatenate([plan_k[plan_off_k[i]:plan_off_k[i + 1]] for i in idx])
    ops_off = np.concatenate([[0], np.cumsum(np.array(n_ops)[idx])]).astype(np.int64)
    plan_off = np.concatenate([[0], np.cumsum(np.array(n_plan)[idx])]).astype(np.int64)
    return walls[idx], start[idx], goal[idx], ops, ops_off, plan, plan_off


def build(n: int, seed: int = 7):
    try:
        from reasonless.mazes import generate_mazes

        walls, start, goal = generate_mazes("wilson", ROWS, COLS, seed, 0, n)
        ops, ops_off, plan, plan_off = _core.astar_batch(walls, ROWS, COLS, start, goal, "fifo")
    except (ImportError, AttributeError):
        walls, start, goal, ops, ops_off, plan, plan_off = python_mazes_and_traces(n, seed)
    tok, off = responses(ops, ops_off, plan, plan_off)
    bad_tok, bad_b, bad_e = corrupt(tok, off, np.diff(ops_off))
    return dict(walls=walls, start=start, goal=goal, n_ops=np.diff(ops_off),
                correct=(tok, off[:-1].copy(), off[1:].copy()), corrupted=(bad_tok, bad_b, bad_e))


def run(d, which, mode, threads):
    tok, b, e = d[which]
    return _core.verify_batch(d["walls"], ROWS, COLS, d["start"], d["goal"], tok, b, e, mode, threads)


@pytest.fixture(scope="module")
def data():
    d = build(N_DEFAULT)
    for mode in ("strict", "paper"):
        r = run(d, "correct", mode, 0)
        assert r["trace_valid"].all() and r["plan_optimal"].all()
        assert not run(d, "corrupted", mode, 0)["trace_valid"].all()
    return d


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["strict", "paper"])
@pytest.mark.parametrize("which", ["correct", "corrupted"])
def test_verify_throughput(benchmark, data, which, mode, threads):
    benchmark.extra_info.update(traces=len(data["walls"]), mean_ops=float(data["n_ops"].mean()))
    benchmark(run, data, which, mode, threads)
    benchmark.extra_info["traces_per_s"] = len(data["walls"]) / benchmark.stats.stats.mean


def main(n: int) -> None:
    t0 = time.perf_counter()
    d = build(n)
    print(f"{n} 30x30 traces, mean {d['n_ops'].mean():.0f} operations, built in {time.perf_counter() - t0:.1f} s")
    for which in ("correct", "corrupted"):
        for mode in ("strict", "paper"):
            for threads in (1, 2):
                best = float("inf")
                for _ in range(5):
                    t = time.perf_counter()
                    run(d, which, mode, threads)
                    best = min(best, time.perf_counter() - t)
                print(f"{which:9} {mode:6} threads={threads}: {n / best:12,.0f} traces/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else N_DEFAULT)
