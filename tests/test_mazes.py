"""Tests of reasonless.mazes: determinism, generator semantics, parameters and layout hashing.

Checks use independent pure-Python / NumPy code (BFS, component counts, a NumPy cellular-automaton
rule) rather than the module's own helpers.
"""
from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from reasonless import mazes
from reasonless.mazes import GENERATORS, default_params, generate_mazes, layout_hash, resolve_params

FIXTURES = Path(__file__).parent / "data" / "paper-tools"
PERFECT = ("wilson", "kruskal", "dfs")


# ---------------------------------------------------------------------------------------------
# Independent helpers
# ---------------------------------------------------------------------------------------------
def bfs_dist(walls_row, rows, cols, start, goal):
    """Shortest path length in moves between (x, y) cells, or -1 if unreachable (pure Python)."""
    grid = walls_row.reshape(rows, cols)
    sx, sy = int(start[0]), int(start[1])
    gx, gy = int(goal[0]), int(goal[1])
    dist = {(sx, sy): 0}
    queue = deque([(sx, sy)])
    while queue:
        x, y = queue.popleft()
        if (x, y) == (gx, gy):
            return dist[(x, y)]
        for nx, ny in ((x, y - 1), (x + 1, y), (x, y + 1), (x - 1, y)):
            if 0 <= nx < cols and 0 <= ny < rows and grid[ny, nx] == 0 and (nx, ny) not in dist:
                dist[(nx, ny)] = dist[(x, y)] + 1
                queue.append((nx, ny))
    return -1


def reachable_count(walls_row, rows, cols, start):
    grid = walls_row.reshape(rows, cols)
    seen = {(int(start[0]), int(start[1]))}
    queue = deque(seen)
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x, y - 1), (x + 1, y), (x, y + 1), (x - 1, y)):
            if 0 <= nx < cols and 0 <= ny < rows and grid[ny, nx] == 0 and (nx, ny) not in seen:
                seen.add((nx, ny))
                queue.append((nx, ny))
    return len(seen)


def free_edge_counts(walls, rows, cols):
    """Number of 4-adjacent free-free pairs per layout (vectorised)."""
    free = walls.reshape(-1, rows, cols) == 0
    return ((free[:, :, 1:] & free[:, :, :-1]).sum(axis=(1, 2))
            + (free[:, 1:, :] & free[:, :-1, :]).sum(axis=(1, 2)))


def ca_reference(fill, rows, cols, survive, birth, iterations, strict_birth=True):
    """The JS rule in NumPy: Moore count with out-of-bounds walls; wall stays iff c >= survive,
    free becomes wall iff c > birth (or c >= birth when strict_birth is False)."""
    g = fill.reshape(-1, rows, cols).astype(np.int64)
    for _ in range(iterations):
        p = np.pad(g, ((0, 0), (1, 1), (1, 1)), constant_values=1)
        c = sum(p[:, 1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
        became = (c > birth) if strict_birth else (c >= birth)
        g = np.where(g == 1, c >= survive, became).astype(np.int64)
    return g.reshape(len(g), -1).astype(np.uint8)


def load_fixture_walls(path, rows, cols):
    out = []
    for line in path.read_text().splitlines():
        tokens = json.loads(line)["text"].split()
        grid = np.zeros((rows, cols), np.uint8)
        for i, tok in enumerate(tokens):
            if tok == "reasoning":
                break
            if tok == "wall":
                grid[int(tokens[i + 2]), int(tokens[i + 1])] = 1
        out.append(grid.ravel())
    return np.array(out)


def check_start_goal(name, walls, start, goal, rows, cols, limit=None):
    n = len(walls)
    xs, ys = start[:, 0], start[:, 1]
    xg, yg = goal[:, 0], goal[:, 1]
    assert ((xs >= 0) & (xs < cols) & (ys >= 0) & (ys < rows)).all()
    assert ((xg >= 0) & (xg < cols) & (yg >= 0) & (yg < rows)).all()
    assert not ((xs == xg) & (ys == yg)).any(), f"{name}: start == goal"
    rows_idx = np.arange(n)
    assert (walls[rows_idx, ys * cols + xs] == 0).all(), f"{name}: start on a wall"
    assert (walls[rows_idx, yg * cols + xg] == 0).all(), f"{name}: goal on a wall"
    for i in range(n if limit is None else min(n, limit)):
        assert bfs_dist(walls[i], rows, cols, start[i], goal[i]) > 0, f"{name} instance {i}: not connected"


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GENERATORS)
def test_independent_of_threads_and_split(name):
    rows, cols, n, k = 12, 17, 300, 77  # k splits inside a work chunk
    one = generate_mazes(name, rows, cols, 11, 0, n, threads=1)
    two = generate_mazes(name, rows, cols, 11, 0, n, threads=2)
    first = generate_mazes(name, rows, cols, 11, 0, k, threads=2)
    rest = generate_mazes(name, rows, cols, 11, k, n - k, threads=1)
    middle = generate_mazes(name, rows, cols, 11, 130, 5)
    for a, b, c, d, m in zip(one, two, first, rest, middle):
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() == np.concatenate([c, d]).tobytes()
        assert a[130:135].tobytes() == m.tobytes()
    walls, start, goal = one
    assert walls.dtype == np.uint8 and walls.shape == (n, rows * cols) and walls.flags.c_contiguous
    assert start.dtype == np.int32 and start.shape == (n, 2)
    assert goal.dtype == np.int32 and goal.shape == (n, 2)
    assert set(np.unique(walls)) <= {0, 1}


@pytest.mark.parametrize("name", GENERATORS)
def test_deterministic_and_seed_dependent(name):
    a = generate_mazes(name, 10, 10, 3, 0, 200)
    b = generate_mazes(name, 10, 10, 3, 0, 200)
    c = generate_mazes(name, 10, 10, 4, 0, 200)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    same = (a[0] == c[0]).all(axis=1) & (a[1] == c[1]).all(axis=1) & (a[2] == c[2]).all(axis=1)
    assert same.mean() < 0.05, f"{name}: seeds 3 and 4 give {same.sum()} identical instances of 200"
    # consecutive indices differ too (a counter-based stream per instance, not a shared one)
    assert len({row.tobytes() for row in a[0]}) > 150


def test_extreme_seed_and_index():
    a = generate_mazes("kruskal", 6, 6, 2**64 - 1, 2**62 - 3, 3)
    b = generate_mazes("kruskal", 6, 6, 2**64 - 1, 2**62 - 2, 2, threads=1)
    assert all(np.array_equal(x[1:], y) for x, y in zip(a, b))


def test_generators_differ_for_same_seed():
    layouts = {name: generate_mazes(name, 8, 8, 5, 0, 50)[0] for name in PERFECT}
    assert not np.array_equal(layouts["wilson"], layouts["kruskal"])
    assert not np.array_equal(layouts["wilson"], layouts["dfs"])


# ---------------------------------------------------------------------------------------------
# Perfect mazes
# ---------------------------------------------------------------------------------------------
def assert_perfect_lattice(walls, rows, cols, starts=None):
    """Free cells = the rooms of one parity lattice plus passages forming a spanning tree.
    Returns each layout's lattice offset."""
    count = len(walls)
    grid = walls.reshape(count, rows, cols)
    offset = grid[:, 0, 0].astype(int)  # (0, 0) is a room for offset 0 and a wall for offset 1
    y, x = np.mgrid[0:rows, 0:cols]
    for o in (0, 1):
        sel = grid[offset == o]
        room = ((x % 2) == o) & ((y % 2) == o)
        between = ((x % 2) != o) & ((y % 2) != o)
        assert (sel[:, room] == 0).all(), f"a room of lattice {o} is a wall"
        assert (sel[:, between] == 1).all(), "a non-lattice cell is free"
        assert (sel[:, (x < o) | (y < o)] == 1).all()
    free = (walls == 0).sum(axis=1)
    assert (free_edge_counts(walls, rows, cols) == free - 1).all(), "free cells are not a tree"
    for i in range(count):
        some_free = np.flatnonzero(walls[i] == 0)[0]
        origin = (some_free % cols, some_free // cols) if starts is None else starts[i]
        assert reachable_count(walls[i], rows, cols, origin) == free[i], f"layout {i}: not connected"
    return offset


@pytest.mark.parametrize("name", PERFECT)
@pytest.mark.parametrize("rows,cols,count", [(4, 4, 300), (7, 7, 300), (8, 8, 300), (12, 17, 200),
                                             (30, 30, 60), (64, 64, 16), (5, 64, 40)])
def test_perfect_maze(name, rows, cols, count):
    walls, start, goal = generate_mazes(name, rows, cols, 1, 0, count)
    offset = assert_perfect_lattice(walls, rows, cols, start)
    assert {0, 1} <= set(offset.tolist()), f"{name}: only lattice offsets {set(offset.tolist())} occur"
    check_start_goal(name, walls, start, goal, rows, cols)


@pytest.mark.parametrize("path,rows,cols", [("js/wilson_train_seed7_8x8.jsonl", 8, 8),
                                            ("js/wilson_train_seed7_10x10.jsonl", 10, 10),
                                            ("js/kruskal_test_seed7_30x30.jsonl", 30, 30),
                                            ("rust/wilson_seed7_30x30.jsonl", 30, 30),
                                            ("rust/dfs_seed7_30x30.jsonl", 30, 30)])
def test_paper_tools_use_the_same_lattice(path, rows, cols):
    # our reading of the paper tools' perfect mazes: the same lattice rule, both offsets
    offset = assert_perfect_lattice(load_fixture_walls(FIXTURES / path, rows, cols), rows, cols)
    assert set(offset.tolist()) == {0, 1}


def test_dfs_starts_anywhere():
    # Depth-first trees of the 3x3 room lattice: 88 distinct ones when the starting room is uniform,
    # only 14 when it is always the corner room (the JS tool's choice).
    walls, _, _ = generate_mazes("dfs", 5, 5, 2, 0, 20_000)
    assert len(np.unique(walls[walls[:, 0] == 0], axis=0)) == 88


@pytest.mark.parametrize("name,uniform", [("wilson", True), ("kruskal", False)])
def test_spanning_tree_uniformity(name, uniform):
    # 5x5: offset 0 has 3x3 rooms (192 spanning trees), offset 1 has 2x2 rooms (4 trees).
    walls, _, _ = generate_mazes(name, 5, 5, 3, 0, 40_000)
    offset0 = walls[:, 0] == 0
    layouts, counts = np.unique(walls[offset0], axis=0, return_counts=True)
    assert len(layouts) == 192
    expected = counts.mean()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    bound = 191 + 5 * math.sqrt(2 * 191)  # 5 standard deviations of chi-square(191)
    if uniform:
        assert chi2 < bound, f"wilson spanning trees are not uniform: chi2={chi2:.0f}"
        _, counts1 = np.unique(walls[~offset0], axis=0, return_counts=True)
        assert len(counts1) == 4 and counts1.min() > 0.9 * counts1.mean()
    else:  # the same statistic has the power to reject a non-uniform generator
        assert chi2 > bound, f"kruskal unexpectedly uniform: chi2={chi2:.0f}"


# ---------------------------------------------------------------------------------------------
# Drunkard's walk
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,cols,coverage", [(30, 30, 0.5), (12, 17, 0.29), (4, 4, 1.0), (64, 64, 0.0001),
                                                (10, 10, 0.8), (7, 9, "0.33")])
def test_drunkards_walk(rows, cols, coverage):
    walls, start, goal = generate_mazes("drunkards_walk", rows, cols, 9, 0, 60, {"coverage": coverage})
    n = rows * cols
    expected = max(2, math.floor(float(coverage) * n + 1e-9))
    free = (walls == 0).sum(axis=1)
    assert (free == expected).all()
    for i in range(len(walls)):  # the free cells are one walk: connected
        assert reachable_count(walls[i], rows, cols, start[i]) == expected
    check_start_goal("drunkards_walk", walls, start, goal, rows, cols)


# ---------------------------------------------------------------------------------------------
# Searchformer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,cols,params", [(30, 30, None), (12, 17, None), (4, 4, None),
                                              (20, 20, {"min_plan": 35, "wall_min": 0.1, "wall_max": 0.25}),
                                              (9, 40, {"min_plan": "12", "wall_min": "0.4", "wall_max": "0.4"})])
def test_searchformer(rows, cols, params):
    p = resolve_params("searchformer", rows, cols, params)
    count = 150
    walls, start, goal = generate_mazes("searchformer", rows, cols, 21, 0, count, params)
    n = rows * cols
    density = walls.mean(axis=1)
    assert (density >= round(p["wall_min"] * n) / n - 1e-12).all()
    assert (density <= round(p["wall_max"] * n) / n + 1e-12).all()
    if p["wall_max"] - p["wall_min"] > 0.1:  # the density is spread over the range
        span = p["wall_max"] - p["wall_min"]
        assert density.min() < p["wall_min"] + 0.25 * span and density.max() > p["wall_max"] - 0.25 * span
    for i in range(count):
        d = bfs_dist(walls[i], rows, cols, start[i], goal[i])
        assert d >= 0 and d + 1 >= p["min_plan"], f"instance {i}: plan of {d + 1} cells < {p['min_plan']}"
    check_start_goal("searchformer", walls, start, goal, rows, cols, limit=0)


def test_searchformer_min_plan_binds():
    # with min_plan 1 short plans are common; with the default they never occur
    w, s, g = generate_mazes("searchformer", 16, 16, 1, 0, 200, {"min_plan": 1})
    short = [bfs_dist(w[i], 16, 16, s[i], g[i]) + 1 < 16 for i in range(200)]
    assert sum(short) > 50


def test_searchformer_impossible_min_plan_raises():
    with pytest.raises(ValueError, match="min_plan"):
        generate_mazes("searchformer", 8, 8, 0, 0, 4, {"min_plan": 32, "wall_min": 0.5, "wall_max": 0.5})


# ---------------------------------------------------------------------------------------------
# Cellular automata
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,cols,params", [
    (30, 30, None), (64, 64, None), (4, 64, None), (64, 5, None), (13, 11, None),
    (20, 33, {"fill": 0.4, "survive": 3, "birth": 4, "iterations": 5}),
    (16, 16, {"fill": "0.5", "survive": "5", "birth": "3", "iterations": "1"}),
    (12, 12, {"fill": 0.3, "iterations": 0}),
])
def test_cellular_automata_rule(rows, cols, params):
    p = resolve_params("cellular_automata", rows, cols, params)
    count = 200
    walls, start, goal, fills = mazes._generate("cellular_automata", rows, cols, 5, 0, count, params,
                                                record_fill=True)
    assert fills.shape == walls.shape
    expected = ca_reference(fills, rows, cols, p["survive"], p["birth"], p["iterations"])
    assert np.array_equal(walls, expected)
    # the initial fill is Bernoulli(fill)
    sd = math.sqrt(p["fill"] * (1 - p["fill"]) / fills.size)
    assert abs(fills.mean() - p["fill"]) < 6 * sd + 0.01
    if p["iterations"] > 0:  # the comparison can tell the JS rule (c > birth) from c >= birth
        other = ca_reference(fills, rows, cols, p["survive"], p["birth"], p["iterations"], strict_birth=False)
        assert not np.array_equal(walls, other)
    check_start_goal("cellular_automata", walls, start, goal, rows, cols)
    # record_fill does not change the mazes
    plain = generate_mazes("cellular_automata", rows, cols, 5, 0, count, params)
    assert np.array_equal(plain[0], walls) and np.array_equal(plain[1], start)


def test_cellular_automata_matches_paper_tool_density():
    js = load_fixture_walls(FIXTURES / "js" / "cellular_automata_test_seed7_30x30.jsonl", 30, 30)
    ours, _, _ = generate_mazes("cellular_automata", 30, 30, 7, 0, 2000)
    # means of the free fraction: JS ≈ 0.757 (40 mazes, sd 0.043); the c >= birth rule gives ≈ 0.57
    assert abs((1 - js.mean()) - (1 - ours.mean())) < 0.03


def test_cellular_automata_redraws_unusable_layouts():
    # dense fills leave small pockets: start/goal must still be connected (the JS tool's defect)
    params = {"fill": 0.55, "iterations": 2}
    walls, start, goal = generate_mazes("cellular_automata", 20, 20, 3, 0, 200, params)
    check_start_goal("cellular_automata", walls, start, goal, 20, 20)


def test_cellular_automata_hopeless_params_raise():
    with pytest.raises(ValueError, match="cellular_automata"):
        generate_mazes("cellular_automata", 8, 8, 0, 0, 3, {"fill": 0.99, "survive": 0})


# ---------------------------------------------------------------------------------------------
# All generators: start and goal
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("rows,cols", [(4, 4), (6, 9), (30, 30), (64, 48)])
def test_start_goal_free_distinct_connected(name, rows, cols):
    walls, start, goal = generate_mazes(name, rows, cols, 13, 1000, 40)
    check_start_goal(name, walls, start, goal, rows, cols)


@pytest.mark.parametrize("name", PERFECT + ("drunkards_walk",))
def test_start_goal_cover_free_cells(name):
    # uniform over free cells: on 4x4 every free cell serves as start and as goal
    walls, start, goal = generate_mazes(name, 4, 4, 17, 0, 3000)
    for pts in (start, goal):
        cells = pts[:, 1] * 4 + pts[:, 0]
        freq = np.bincount(cells, minlength=16)
        ever_free = (walls == 0).any(axis=0)
        assert (freq[ever_free] > 0).all()


# ---------------------------------------------------------------------------------------------
# Parameters and bad input
# ---------------------------------------------------------------------------------------------
def test_default_and_resolved_params():
    assert default_params("wilson", 30, 30) == {}
    assert default_params("drunkards_walk", 30, 30) == {"coverage": 0.5}
    assert default_params("searchformer", 12, 17) == {"min_plan": 17, "wall_min": 0.3, "wall_max": 0.5}
    assert default_params("cellular_automata", 30, 30) == {"fill": 0.45, "survive": 4, "birth": 5, "iterations": 3}
    p = resolve_params("searchformer", 30, 30, {"min_plan": "40", "wall_max": "0.45"})
    assert p == {"min_plan": 40, "wall_min": 0.3, "wall_max": 0.45}
    assert isinstance(p["min_plan"], int) and isinstance(p["wall_max"], float)
    p = resolve_params("cellular_automata", 30, 30, {"iterations": 4.0, "fill": np.float32(0.5)})
    assert p["iterations"] == 4 and isinstance(p["iterations"], int) and isinstance(p["fill"], float)
    for name in GENERATORS:
        json.dumps(resolve_params(name, 9, 9, None))
    # defaults given explicitly change nothing
    a = generate_mazes("drunkards_walk", 9, 9, 1, 0, 20)
    b = generate_mazes("drunkards_walk", 9, 9, 1, 0, 20, {"coverage": "0.5"})
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("call,match", [
    (lambda: generate_mazes("prim", 8, 8, 0, 0, 1), r"unknown maze generator 'prim'.*wilson, kruskal"),
    (lambda: resolve_params("wilson", 8, 8, {"coverage": 0.5}), r"unknown parameter 'coverage'.*no parameters"),
    (lambda: resolve_params("drunkards_walk", 8, 8, {"cover": 0.5}), r"unknown parameter 'cover'.*coverage"),
    (lambda: resolve_params("searchformer", 8, 8, {"min_len": 3}), r"'min_len'.*min_plan, wall_min, wall_max"),
    (lambda: resolve_params("drunkards_walk", 8, 8, {"coverage": 0}), r"coverage=0.*\(0.0, 1.0\]"),
    (lambda: resolve_params("drunkards_walk", 8, 8, {"coverage": 1.5}), r"coverage.*out of range"),
    (lambda: resolve_params("drunkards_walk", 8, 8, {"coverage": "half"}), r"coverage='half'.*not a number"),
    (lambda: resolve_params("drunkards_walk", 8, 8, {"coverage": float("nan")}), r"coverage"),
    (lambda: resolve_params("cellular_automata", 8, 8, {"survive": 9}), r"survive=9.*\[0, 8\]"),
    (lambda: resolve_params("cellular_automata", 8, 8, {"iterations": 2.5}), r"iterations=2.5.*integer"),
    (lambda: resolve_params("cellular_automata", 8, 8, {"birth": True}), r"birth=True"),
    (lambda: resolve_params("cellular_automata", 8, 8, {"fill": 1.0}), r"fill=1.0.*\[0.0, 1.0\)"),
    (lambda: resolve_params("searchformer", 8, 8, {"wall_min": 0.6, "wall_max": 0.5}), r"wall_min.*wall_max"),
    (lambda: resolve_params("searchformer", 8, 8, {"wall_max": 1.0, "wall_min": 0.9}), r"wall_max=1.0.*free"),
    (lambda: resolve_params("searchformer", 8, 8, {"min_plan": 60}), r"min_plan=60.*\[1, 45\]"),
    (lambda: resolve_params("searchformer", 8, 8, {"min_plan": 0}), r"min_plan=0"),
    (lambda: generate_mazes("wilson", 3, 8, 0, 0, 1), r"rows=3.*4 to 64"),
    (lambda: generate_mazes("wilson", 8, 65, 0, 0, 1), r"cols=65.*4 to 64"),
    (lambda: generate_mazes("wilson", 8, 8, 0, 0, 0), r"count=0"),
    (lambda: generate_mazes("wilson", 8, 8, -1, 0, 1), r"seed=-1"),
    (lambda: generate_mazes("wilson", 8, 8, 0, -5, 1), r"start_index=-5"),
    (lambda: generate_mazes("wilson", 8, 8, 2**64, 0, 1), r"seed=18446744073709551616"),
    (lambda: generate_mazes("wilson", 8, 8, 0, 0, 1, threads="2"), r"threads='2'"),
    (lambda: resolve_params("drunkards_walk", 8, 8, [("coverage", 0.5)]), r"must be a dict"),
    (lambda: default_params("maze", 8, 8), r"unknown maze generator"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Layout hash
# ---------------------------------------------------------------------------------------------
def test_layout_hash():
    # small grids repeat layouts: equal layouts must hash equal, different ones differently
    walls = np.concatenate([generate_mazes(name, 4, 4, 1, 0, 1500)[0] for name in GENERATORS])
    h = layout_hash(walls, 4, 4)
    assert h.dtype == np.uint64 and h.shape == (len(walls),)
    layouts, inverse = np.unique(walls, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    assert len(np.unique(h)) == len(layouts)
    for k in range(len(layouts)):
        assert len(np.unique(h[inverse == k])) == 1
    assert len(layouts) < len(walls) // 2  # the check above really saw duplicates
    # every single-cell change of a 64x64 layout changes the hash
    big = generate_mazes("wilson", 64, 64, 2, 0, 1)[0]
    flips = np.repeat(big, 4096, axis=0)
    flips[np.arange(4096), np.arange(4096)] ^= 1
    hf = layout_hash(flips, 64, 64)
    assert len(np.unique(np.concatenate([hf, layout_hash(big, 64, 64)]))) == 4097
    # the shape enters the hash
    sq = generate_mazes("kruskal", 6, 8, 1, 0, 1)[0]
    assert layout_hash(sq, 6, 8)[0] != layout_hash(sq, 8, 6)[0]
    # bool and wider integer arrays hash like the uint8 layout; bad shapes are refused
    assert layout_hash(walls.astype(bool), 4, 4).tobytes() == h.tobytes()
    assert layout_hash(walls.astype(np.int64) * 3, 4, 4).tobytes() == h.tobytes()
    assert np.array_equal(layout_hash(walls[:5], 4, 4), layout_hash(walls, 4, 4)[:5])
    with pytest.raises(ValueError, match="shape"):
        layout_hash(walls, 4, 5)


def test_layout_hash_ignores_start_goal():
    # two generate calls sharing layouts but not start/goal: wilson at 4x4 offset 1 has 4 layouts
    walls, start, goal = generate_mazes("wilson", 4, 4, 8, 0, 400)
    h = layout_hash(walls, 4, 4)
    by_layout = {}
    for i in range(len(walls)):
        by_layout.setdefault(walls[i].tobytes(), set()).add(int(h[i]))
    assert all(len(v) == 1 for v in by_layout.values())
    # instances with the same layout and different start/goal exist, and share the hash
    key = max(by_layout, key=lambda k: sum(walls[i].tobytes() == k for i in range(len(walls))))
    idx = [i for i in range(len(walls)) if walls[i].tobytes() == key]
    assert len({(tuple(start[i]), tuple(goal[i])) for i in idx}) > 1
    assert len({int(h[i]) for i in idx}) == 1
