"""Training arms (reasonless/arms.py, cpp/arms.cpp, cpp/search.cpp): each arm's promise, checked on small corpora
and against independent pure-Python searches."""
from __future__ import annotations

import heapq
from collections import deque

import numpy as np
import pytest

from reasonless import _core, arms, verifier
from reasonless.corpus import Batch, generate

CLOSE = 0x8000
ALGORITHMS = ("bfs", "dfs", "greedy", "dijkstra")


@pytest.fixture(scope="module")
def kruskal(tmp_path_factory):
    # Several shards, so swapped partners come from other shards' memory maps.
    return generate(tmp_path_factory.mktemp("arms") / "k", "kruskal", 300, rows=10, cols=12, seed=5, shard_size=64)


@pytest.fixture(scope="module")
def caves(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("arms") / "d", "drunkards_walk", 200, rows=9, cols=11, seed=8,
                    shard_size=80)


def whole(corpus):
    """The whole corpus as one Batch (corpus.batches stops at shard ends)."""
    parts = list(corpus.batches(10_000))
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])

    def offsets(name):
        out, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            o = getattr(p, name)
            out.append(o[1:] + base)
            base += int(o[-1])
        return np.concatenate(out)

    return Batch(corpus.rows, corpus.cols, 0, cat("walls"), cat("start"), cat("goal"), cat("maze_hash"), cat("ops"),
                 offsets("ops_offsets"), cat("plan"), offsets("plan_offsets"))


def spans(ops, offsets):
    return [ops[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def concat_batches(corpus, arm, seed, size, threads=0):
    parts = [arms.arm_batch(corpus, b, arm, seed, threads) for b in corpus.batches(size)]
    return [s for p in parts for s in spans(p.ops, p.ops_offsets)]


# ------------------------------------------------------------------------------------------------ names
def test_arm_names_and_unknown_arm():
    for name in ("correct", "none", "swapped", "shuffled", "reversed", "noise", "other_algorithm:bfs",
                 "other_algorithm:dfs", "other_algorithm:greedy", "other_algorithm:dijkstra"):
        assert name in arms.ARMS and arms.check_arm(name) == name
    assert set(arms.ARMS) == set(arms.ARM_DEFINITIONS)
    for bad in ("shuffle", "other_algorithm:astar", "other_algorithm", ""):
        with pytest.raises(ValueError, match="unknown arm") as err:
            arms.check_arm(bad)
        assert repr(bad) in str(err.value) and "other_algorithm:dfs" in str(err.value)


def test_unknown_arm_in_batch_and_core(kruskal):
    b = next(kruskal.batches(10))
    with pytest.raises(ValueError, match="'scrambled'"):
        arms.arm_batch(kruskal, b, "scrambled", 0)
    with pytest.raises(ValueError, match="'scrambled'"):
        arms.arm_tokens(kruskal, b, "scrambled", 0)
    with pytest.raises(ValueError, match="unknown arm 'bfs'"):
        _core.arm_ops_batch("bfs", b.walls, b.rows, b.cols, b.start, b.goal, b.ops, b.ops_offsets,
                            np.arange(len(b)), 0, 1)
    with pytest.raises(ValueError, match="seed"):
        arms.arm_batch(kruskal, b, "shuffled", -1)


def test_core_rejects_bad_inputs_naming_the_example(kruskal):
    b = next(kruskal.batches(10))
    ids = np.arange(len(b))
    start = b.start.copy()
    wall = np.flatnonzero(b.walls[3])[0]
    start[3] = (wall % b.cols, wall // b.cols)
    with pytest.raises(ValueError, match="example 3: start .* is a wall"):
        _core.arm_ops_batch("other_algorithm:bfs", b.walls, b.rows, b.cols, start, b.goal, b.ops, b.ops_offsets,
                            ids, 0, 1)
    bad_offsets = b.ops_offsets.copy()
    bad_offsets[5] = bad_offsets[6] + 1
    with pytest.raises(ValueError, match=r"example 5: ops_offsets\[5:7\]"):
        _core.arm_ops_batch("reversed", b.walls, b.rows, b.cols, b.start, b.goal, b.ops, bad_offsets, ids, 0, 1)
    with pytest.raises(ValueError, match="uint16"):
        _core.arm_ops_batch("reversed", b.walls, b.rows, b.cols, b.start, b.goal, b.ops.astype(np.int64),
                            b.ops_offsets, ids, 0, 1)
    with pytest.raises(ValueError, match="instance_ids"):
        _core.arm_ops_batch("noise", b.walls, b.rows, b.cols, b.start, b.goal, b.ops, b.ops_offsets, ids[:-1], 0, 1)


# ------------------------------------------------------------------------------------------------ correct, none
def test_correct_is_own_trace_and_valid(kruskal):
    b = whole(kruskal)
    a = arms.arm_batch(kruskal, b, "correct", 0)
    assert np.array_equal(a.ops, b.ops) and np.array_equal(a.ops_offsets, b.ops_offsets)
    tokens, offsets, prompt = arms.arm_tokens(kruskal, b, "correct", 0)
    v = verify_tokens(b, tokens, offsets, prompt)
    assert v.trace_valid.all() and v.plan_valid.all() and v.plan_optimal.all()


def test_none_has_no_trace(kruskal):
    b = whole(kruskal)
    a = arms.arm_batch(kruskal, b, "none", 0)
    assert len(a.ops) == 0 and not a.ops_offsets.any()
    t_none = b.tokens("none")
    t_empty = a.tokens("correct")
    for x, y in zip(t_none, t_empty):
        assert np.array_equal(x, y)
    assert all(np.array_equal(x, y) for x, y in zip(arms.arm_tokens(kruskal, b, "none", 0), t_none))


def verify_tokens(b, tokens, offsets, prompt):
    responses = [tokens[offsets[i] + prompt[i]:offsets[i + 1]] for i in range(len(b))]
    return verifier.verify(b.walls, b.start, b.goal, responses, rows=b.rows, cols=b.cols, mode="strict")


# ------------------------------------------------------------------------------------------------ swapped
@pytest.mark.parametrize("n", [2, 3, 4, 7, 100, 5000])
def test_partner_indices_is_a_seeded_derangement(n):
    for seed in range(20 if n < 10 else 3):
        p = arms.partner_indices(n, seed)
        assert p.dtype == np.int64 and p.shape == (n,)
        assert np.array_equal(np.sort(p), np.arange(n)), "not a permutation"
        assert not np.any(p == np.arange(n)), "an example keeps its own trace"
        assert np.array_equal(p, arms.partner_indices(n, seed))
    if n >= 7:
        assert not np.array_equal(arms.partner_indices(n, 1), arms.partner_indices(n, 2))


def test_partner_indices_small_n_takes_every_derangement():
    # n = 4 has 9 derangements; a seeded family should reach all of them (fixed-point repair is not degenerate).
    seen = {tuple(arms.partner_indices(4, s).tolist()) for s in range(400)}
    assert len(seen) == 9
    with pytest.raises(ValueError, match="at least 2"):
        arms.partner_indices(1, 0)


def test_swapped_trace_is_partners_and_plan_is_own(kruskal):
    n = len(kruskal)
    partners = arms.partner_indices(n, 11)
    b = whole(kruskal)
    # Batches that straddle shard boundaries, partners in every shard.
    got = concat_batches(kruskal, "swapped", 11, size=47)
    assert len(got) == n
    for i in range(n):
        assert np.array_equal(got[i], kruskal[int(partners[i])].ops)
    a = arms.arm_batch(kruskal, b, "swapped", 11)
    assert np.array_equal(a.plan, b.plan) and np.array_equal(a.plan_offsets, b.plan_offsets)
    assert np.array_equal(a.walls, b.walls) and np.array_equal(a.start, b.start) and np.array_equal(a.goal, b.goal)
    tokens, offsets, prompt = arms.arm_tokens(kruskal, b, "swapped", 11)
    v = verify_tokens(b, tokens, offsets, prompt)
    assert v.plan_valid.all() and v.plan_optimal.all()
    assert v.trace_valid.mean() < 0.05  # another maze's trace almost never fits this one
    other = concat_batches(kruskal, "swapped", 12, size=1000)
    assert any(not np.array_equal(x, y) for x, y in zip(got, other))


def test_swapped_needs_corpus_and_range(kruskal):
    b = next(kruskal.batches(10))
    with pytest.raises(ValueError, match="corpus"):
        arms.arm_batch(None, b, "swapped", 0)
    b.first = len(kruskal) - 5
    with pytest.raises(ValueError, match="does not lie"):
        arms.arm_batch(kruskal, b, "swapped", 0)


# ------------------------------------------------------------------------------------------------ shuffled etc.
def rows_sorted(a):
    return a[np.lexsort(a.T[::-1])]


def test_shuffled_reversed_noise_promises(caves):
    b = whole(caves)
    own = spans(b.ops, b.ops_offsets)
    cells = b.rows * b.cols
    sh = spans(*(lambda a: (a.ops, a.ops_offsets))(arms.arm_batch(caves, b, "shuffled", 3)))
    rv = spans(*(lambda a: (a.ops, a.ops_offsets))(arms.arm_batch(caves, b, "reversed", 3)))
    nz = spans(*(lambda a: (a.ops, a.ops_offsets))(arms.arm_batch(caves, b, "noise", 3)))
    moved = 0
    for i, o in enumerate(own):
        assert np.array_equal(rows_sorted(sh[i]), rows_sorted(o))
        moved += not np.array_equal(sh[i], o)
        assert np.array_equal(rv[i], o[::-1])
        assert len(nz[i]) == len(o)
        cell = nz[i][:, 0] & 0x7FFF
        assert (cell < cells).all() and not b.walls[i][cell].any(), "noise names only free cells"
        assert (nz[i][:, 1:] < cells).all()
    assert moved > 0.9 * len(own)
    allnoise = np.concatenate(nz)
    close_rate = (allnoise[:, 0] >= CLOSE).mean()
    assert 0.45 < close_rate < 0.55
    assert allnoise[:, 1].max() > 0.8 * cells and allnoise[:, 2].max() > 0.8 * cells
    # Every arm tokenizes (cells and costs in the vocabulary) and keeps the own plan.
    for arm in ("shuffled", "reversed", "noise"):
        tokens, offsets, prompt = arms.arm_tokens(caves, b, arm, 3)
        assert np.array_equal(np.diff(offsets), np.diff(b.tokens()[1]))
        v = verify_tokens(b, tokens, offsets, prompt)
        assert v.plan_valid.all()


@pytest.mark.parametrize("arm", ["shuffled", "noise", "reversed", "other_algorithm:dfs", "other_algorithm:greedy"])
def test_deterministic_and_independent_of_threads_and_batches(caves, arm):
    ref = concat_batches(caves, arm, 9, size=1000, threads=1)
    for size, threads in ((33, 2), (200, 0), (1, 1)):
        got = concat_batches(caves, arm, 9, size=size, threads=threads)
        assert all(np.array_equal(x, y) for x, y in zip(got, ref)) and len(got) == len(ref)
    if arm in ("shuffled", "noise"):
        other = concat_batches(caves, arm, 10, size=1000)
        assert sum(not np.array_equal(x, y) for x, y in zip(other, ref)) > 0.9 * len(ref)


# ------------------------------------------------------------------------------------------------ other algorithms
def reference_search(walls: np.ndarray, rows: int, cols: int, start: int, goal: int, algorithm: str):
    """Independent pure-Python statement of each search (see reasonless/arms.py): list of (code, g, h)."""
    wall = walls.reshape(rows, cols)

    def h(c):
        return abs(c % cols - goal % cols) + abs(c // cols - goal // cols)

    def neighbours(c):
        x, y = c % cols, c // cols
        for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0)):
            nx, ny = x + dx, y + dy
            if 0 <= nx < cols and 0 <= ny < rows and not wall[ny, nx]:
                yield ny * cols + nx

    ops = []
    if algorithm == "bfs":
        g, queue = {start: 0}, deque([start])
        while queue:
            c = queue.popleft()
            ops.append((c | CLOSE, g[c], h(c)))
            if c == goal:
                break
            for nb in neighbours(c):
                if nb not in g:
                    g[nb] = g[c] + 1
                    queue.append(nb)
                    ops.append((nb, g[nb], h(nb)))
    elif algorithm == "dfs":
        stack, closed = [(start, 0)], set()
        while stack:
            c, gc = stack.pop()
            if c in closed:
                continue
            closed.add(c)
            ops.append((c | CLOSE, gc, h(c)))
            if c == goal:
                break
            for nb in neighbours(c):
                if nb not in closed:
                    stack.append((nb, gc + 1))
                    ops.append((nb, gc + 1, h(nb)))
    else:
        by_g = algorithm == "dijkstra"
        best, closed, heap, seq = {start: 0}, set(), [(0 if by_g else h(start), 0, start)], 1
        while heap:
            _, _, c = heapq.heappop(heap)
            if c in closed:
                continue
            closed.add(c)
            ops.append((c | CLOSE, best[c], h(c)))
            if c == goal:
                break
            for nb in neighbours(c):
                ng = best[c] + 1
                if nb in closed or (ng >= best.get(nb, 1 << 30) if by_g else nb in best):
                    continue
                best[nb] = ng
                heapq.heappush(heap, (ng if by_g else h(nb), seq, nb))
                seq += 1
                ops.append((nb, ng, h(nb)))
    return ops


def random_mazes(rng, n, rows, cols):
    """Random-wall grids from empty rooms to dense; start and goal distinct free cells (maybe disconnected)."""
    walls = np.zeros((n, rows * cols), np.uint8)
    start = np.zeros((n, 2), np.int32)
    goal = np.zeros((n, 2), np.int32)
    for i in range(n):
        density = (0.0, 0.1, 0.25, 0.4)[i % 4]
        walls[i] = rng.random(rows * cols) < density
        free = np.flatnonzero(walls[i] == 0)
        s, t = rng.choice(free, 2, replace=False)
        start[i] = (s % cols, s // cols)
        goal[i] = (t % cols, t // cols)
    return walls, start, goal


def check_against_reference(walls, rows, cols, start, goal, algorithm, must_reach):
    n = len(walls)
    empty = np.zeros((0, 3), np.uint16)
    ops, offsets = _core.arm_ops_batch(f"other_algorithm:{algorithm}", walls, rows, cols, start, goal, empty,
                                       np.zeros(n + 1, np.int64), np.arange(n), 0, 2)
    reached = 0
    for i, got in enumerate(spans(ops, offsets)):
        s = int(start[i, 1] * cols + start[i, 0])
        t = int(goal[i, 1] * cols + goal[i, 0])
        want = reference_search(walls[i], rows, cols, s, t, algorithm)
        assert [tuple(r) for r in got.tolist()] == want, f"{algorithm}, maze {i}"
        ends_at_goal = len(want) > 0 and want[-1][0] == (t | CLOSE)
        assert ends_at_goal or not must_reach, f"{algorithm}, maze {i}: does not end with the close of the goal"
        reached += ends_at_goal
        # Nothing but the final op closes the goal.
        assert sum(code == (t | CLOSE) for code, _, _ in want[:-1]) == 0
    return reached


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_other_algorithm_matches_python_reference_on_corpora(kruskal, caves, algorithm):
    for corpus in (kruskal, caves):
        b = whole(corpus)
        assert check_against_reference(b.walls, b.rows, b.cols, b.start, b.goal, algorithm, True) == len(b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_other_algorithm_matches_python_reference_on_random_grids(algorithm):
    rng = np.random.default_rng(42)
    for rows, cols in ((4, 4), (7, 5), (12, 16)):
        walls, start, goal = random_mazes(rng, 80, rows, cols)
        reached = check_against_reference(walls, rows, cols, start, goal, algorithm, False)
        assert reached > 40  # most are connected; the rest exhaust the frontier without closing the goal


def test_other_algorithms_differ_from_astar_and_each_other(kruskal, caves):
    b = whole(caves)
    traces = {a: arms.arm_batch(caves, b, f"other_algorithm:{a}", 0) for a in ALGORITHMS}
    own = spans(b.ops, b.ops_offsets)
    for a in ("bfs", "dfs", "greedy"):
        t = spans(traces[a].ops, traces[a].ops_offsets)
        assert sum(not np.array_equal(x, y) for x, y in zip(t, own)) > 0.5 * len(own), a
    # Documented: with unit costs dijkstra's pop order is bfs's queue order.
    assert np.array_equal(traces["dijkstra"].ops, traces["bfs"].ops)
    for a in ALGORITHMS:
        tokens, offsets, prompt = arms.arm_tokens(caves, b, f"other_algorithm:{a}", 0)
        v = verify_tokens(b, tokens, offsets, prompt)
        assert v.plan_valid.all()


# ------------------------------------------------------------------------------------------------ correct_no_costs
def no_costs_verdicts(b, tokens, offsets, prompt, mode="strict"):
    return verifier.verify(b.walls, b.start, b.goal, tokens, rows=b.rows, cols=b.cols, mode=mode,
                           offsets=np.concatenate([offsets[:-1] + prompt, offsets[-1:]]), costs=False)


def test_correct_no_costs_is_the_correct_stream_without_cost_tokens(kruskal, caves, tmp_path):
    from reasonless.interchange import export_jsonl
    from reasonless.stats import describe
    from reasonless.vocab import vocab_for

    for corpus in (kruskal, caves):
        b = whole(corpus)
        full, full_off, full_prompt = arms.arm_tokens(corpus, b, "correct", 0)
        bare, bare_off, bare_prompt = arms.arm_tokens(corpus, b, "correct_no_costs", 0)
        first_cost = vocab_for(corpus.rows, corpus.cols).first_cost
        assert np.array_equal(bare_prompt, full_prompt)
        for i in range(len(b)):
            seq = full[full_off[i]:full_off[i + 1]]
            assert np.array_equal(bare[bare_off[i]:bare_off[i + 1]], seq[seq < first_cost])
        assert np.diff(bare_off).tolist() == (np.diff(full_off) - 2 * np.diff(b.ops_offsets)).tolist()
        stats = describe(corpus, "correct_no_costs")
        assert stats["total_tokens"]["max"] == int(np.diff(bare_off).max())
    export_jsonl(kruskal, tmp_path / "bare.jsonl", arm="correct_no_costs")
    export_jsonl(kruskal, tmp_path / "full.jsonl", arm="correct")
    import json
    import re
    bare_lines = [json.loads(l)["text"] for l in open(tmp_path / "bare.jsonl")]
    full_lines = [json.loads(l)["text"] for l in open(tmp_path / "full.jsonl")]
    assert bare_lines[0].split(" reasoning ")[1].startswith("close ")
    assert bare_lines == [re.sub(r" c\d+", "", t) for t in full_lines]


def test_correct_no_costs_verdicts(caves):
    b = whole(caves)
    tokens, offsets, prompt = arms.arm_tokens(caves, b, "correct_no_costs", 0)
    for mode in ("paper", "strict"):
        v = no_costs_verdicts(b, tokens, offsets, prompt, mode)
        assert v.trace_valid.all() and v.plan_valid.all() and v.plan_optimal.all(), mode
    # With costs=True the same responses are syntax errors: the cost tokens are missing.
    v = verifier.verify(b.walls, b.start, b.goal, tokens, rows=b.rows, cols=b.cols,
                        offsets=np.concatenate([offsets[:-1] + prompt, offsets[-1:]]))
    assert not v.trace_valid.any()

    from reasonless.vocab import CLOSE as CLOSE_ID, CREATE as CREATE_ID, FIRST_COORD, vocab_for
    vocab = vocab_for(b.rows, b.cols)
    i = next(k for k in range(len(b)) if b.ops_offsets[k + 1] - b.ops_offsets[k] >= 6)
    resp = tokens[offsets[i] + prompt[i]:offsets[i + 1]].astype(np.int64)
    ops_at = [k for k, t in enumerate(resp) if t in (CREATE_ID, CLOSE_ID)]
    closes = [k for k in ops_at if resp[k] == CLOSE_ID]

    def judge(r, mode="strict"):
        return verifier.verify(b.walls[i:i + 1], b.start[i:i + 1], b.goal[i:i + 1], [r], rows=b.rows, cols=b.cols,
                               mode=mode, costs=False)

    assert judge(resp).trace_valid[0]
    # A create far from the last closed cell: create_non_neighbor, whatever the costs would have been.
    bad = resp.copy()
    k = next(k for k in ops_at if resp[k] == CREATE_ID)
    sx, sy = int(b.start[i][0]), int(b.start[i][1])
    far = [(x, y) for y in range(b.rows) for x in range(b.cols)
           if abs(x - sx) + abs(y - sy) > 2 and not b.walls[i][y * b.cols + x]]
    bad[k + 1], bad[k + 2] = FIRST_COORD + far[0][0], FIRST_COORD + far[0][1]
    v = judge(bad, "paper")
    assert not v.trace_valid[0] and v.first_error_name(0) in ("create_non_neighbor", "create_close_wall")
    # Dropping a close: later creates are no longer next to the last closed cell, or a close skips the order.
    if len(closes) >= 3:
        k = closes[-2]
        cut = np.concatenate([resp[:k], resp[k + 3:]])
        assert not judge(cut).trace_valid[0]
    # Plan checks are unchanged: a plan cut short is invalid in both modes.
    sol = int(np.flatnonzero(resp == vocab.ids["solution"])[0])
    short = np.concatenate([resp[:sol + 1], resp[sol + 4:]])
    assert not judge(short).plan_valid[0]
