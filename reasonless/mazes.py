"""Maze generators (docs/design.md §2), compiled with Numba and parallel over instances.

Every instance is a pure function of (seed, generator, parameters, instance index): each instance
gets its own xoshiro256** stream whose 256-bit state is derived with splitmix64 from
(seed, generator id, index), so the output never depends on the thread count or on how an index
range is split across calls, processes or machines. ``generate_mazes(..., start_index=k, count=m)``
returns instances k .. k+m-1 of the infinite sequence defined by (name, seed, params).

Conventions (shared with the rest of the project): ``walls`` is uint8 (N, rows*cols), 1 = wall,
cell index y*cols + x; ``start`` and ``goal`` are int32 (N, 2) holding (x, y). Start and goal are
always distinct free cells joined by a 4-connected path.

The generators follow the public JavaScript tool that made the paper's datasets
(kstechly/beyond-semantics-maze-visualizer, ``generators/*.js`` ``generateSync``) and its Rust
rewrite (kstechly/beyond-semantics-faster-maze-generator). Our choices where they differ or are
defective:

``wilson``, ``kruskal``, ``dfs`` — perfect mazes over a parity lattice. A random offset
o ∈ {0, 1} is drawn per instance; rooms are the cells with x ≡ o and y ≡ o (mod 2), a passage is
the cell between two adjacent rooms, every other cell is a wall. The rooms and carved passages
form a spanning tree of the room lattice, so all free cells are connected and acyclic.

- ``wilson``: uniform spanning tree by loop-erased random walks (Wilson's algorithm, implemented
  with last-exit pointers, which performs the loop erasure implicitly). The tree's root is the
  central room and walks start from the rooms in index order: Wilson's theorem makes the tree
  uniform for any root and any order (the JS tool draws the root and the walk starts at random,
  which yields the same distribution; a central root just makes the walks shorter). A walk step goes to a uniformly drawn in-bounds neighbouring room (the
  JS tool re-draws out-of-bounds moves, which is the same walk).
- ``kruskal``: the room edges (right and down) in uniformly random order (Fisher–Yates, drawn
  lazily and stopped once the tree is complete — the remaining edges would all be rejected),
  union–find over rooms, an edge's passage is carved when it joins two components.
- ``dfs``: recursive backtracker with an explicit stack from a uniformly drawn room, moving to a
  uniformly drawn unvisited neighbouring room. Unlike the JS tool (which always starts at (0, 0)
  with offset 0, leaving the last row and column walls on even grids) the offset and starting room
  are random; unlike the Rust tool, every room can be the starting room.
- Start and goal: a uniform ordered pair of distinct free cells (rooms and passages). The JS
  ``wilson``/``kruskal`` re-draw the goal only once and can return start == goal; we never do.

``drunkards_walk`` (param ``coverage``, default 0.5, 0 < coverage ≤ 1): all walls; a walk from a
uniformly drawn cell moves to a uniformly drawn in-bounds 4-neighbour and frees every wall it steps
on until ``max(2, floor(coverage·rows·cols + 1e-9))`` cells are free (the JS rule, with a tiny
epsilon so that e.g. 0.29·100 counts as 29, not 28). The free cells are the walk's trace, hence
connected. Start and goal: uniform ordered pair of distinct free cells.

``searchformer`` (params ``min_plan`` default max(rows, cols), ``wall_min`` 0.3, ``wall_max`` 0.5):
as in both paper tools, the number of walls k is a uniform integer in
[round(wall_min·n), round(wall_max·n)] (n = rows·cols) and the walls are a uniform random k-subset
of the cells (the tools compute the bounds as 3·floor(n/10) and 5·floor(n/10): identical whenever
n is a multiple of 10, e.g. 30×30 gives 270..450 walls, and at most n/10 cells apart otherwise). So
the wall density lies in [wall_min, wall_max] up to rounding to whole cells. Start and goal are a
uniform ordered pair of distinct free cells, re-drawn up to 100 times until they are connected and
the shortest plan (in cells, start and goal included) has at least ``min_plan`` cells; after 100
failed draws a new wall layout is drawn. A shorter plan is never accepted (the JS tool keeps the
last draw's plan whatever its length, ~2 % of its mazes at 30×30). ``min_plan`` ranges over
1 .. n − round(wall_min·n) (a plan needs that many free cells); a ``min_plan`` that the layouts
cannot reach in practice ends with a ValueError after 1000 layouts of one instance.

``cellular_automata`` (params ``fill`` 0.45, ``survive`` 4, ``birth`` 5, ``iterations`` 3): each
cell is a wall with probability ``fill`` (row-major draws), then ``iterations`` synchronous rounds
of the rule of the JS tool, where c is the number of walls among the 8 Moore neighbours with
out-of-bounds cells counted as walls:

    wall  → stays a wall iff c >= survive   (becomes free iff c < survive)
    free  → becomes a wall iff c >  birth   (strictly greater: with birth = 5 it takes 6 walls)

Start and goal are a uniform ordered pair of distinct free cells, re-drawn up to 100 times until
they lie in the same 4-connected component (the JS tool never checks: ~2 % of its mazes are
unsolvable); a layout with fewer than 2 free cells or 100 failed draws is replaced by a new
layout (then 1000 layouts without success raise ValueError: the parameters make no usable caves).

``layout_hash`` hashes only the wall layout and the grid shape (not start or goal), to deduplicate
layouts and keep test sets disjoint from training sets.

Implementation notes (none of them changes what is generated): Python threads hand out chunks of 64
instances to a nogil Numba function, each chunk allocating its scratch once; the generator is a literal
there, so each generator is its own specialization and a first run compiles only the one it uses (about
5 s rather than the half-minute one ``prange`` kernel holding all six took); uniform integers
use Lemire's unbiased multiply-shift (kruskal and dfs take two 32-bit draws from each 64-bit
output); the perfect-maze generators work on a room lattice padded by a sentinel ring (no bounds
checks), copy per-offset templates built once per chunk, and draw start and goal from the room and
carved-passage lists; cellular automata run on 64-bit rows (bit-sliced neighbour
counts, connectivity by bit-parallel flood fill); searchformer labels components lazily and
decides "shortest plan >= min_plan" with an A* bounded at min_plan - 2 moves.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numba
import numpy as np
from numba import literally, njit, prange, types
from numba.extending import overload

from .vocab import check_grid_size

GENERATORS: tuple[str, ...] = ("wilson", "kruskal", "dfs", "drunkards_walk", "searchformer", "cellular_automata")
_GEN_ID = {name: i for i, name in enumerate(GENERATORS)}

# Start/goal re-draws per layout, and layouts per instance before giving up (searchformer, cellular_automata).
PAIR_TRIES = 100
LAYOUT_CAP = 1000
_CHUNK = 64  # instances per parallel work item; each item allocates its scratch once
_CHUNKS_PER_CALL = 8  # chunks per call from a Python thread: calls cost microseconds, chunks ~1 ms

# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------
# name -> (kind, low, high, low_inclusive, high_inclusive, description). A None bound is open-ended;
# bounds that depend on the grid are checked in resolve_params.
_SPECS: dict[str, dict[str, tuple]] = {
    "wilson": {},
    "kruskal": {},
    "dfs": {},
    "drunkards_walk": {
        "coverage": ("float", 0.0, 1.0, False, True, "fraction of cells to free"),
    },
    "searchformer": {
        "min_plan": ("int", 1, None, True, True, "minimum plan length in cells, start and goal included"),
        "wall_min": ("float", 0.0, 1.0, True, True, "lowest wall density"),
        "wall_max": ("float", 0.0, 1.0, True, True, "highest wall density"),
    },
    "cellular_automata": {
        "fill": ("float", 0.0, 1.0, True, False, "initial wall probability"),
        "survive": ("int", 0, 8, True, True, "a wall stays a wall iff its wall-neighbour count >= survive"),
        "birth": ("int", 0, 8, True, True, "a free cell becomes a wall iff its wall-neighbour count > birth"),
        "iterations": ("int", 0, 100, True, True, "rounds of the birth/survival rule"),
    },
}


def _check_name(name: str) -> None:
    if name not in _GEN_ID:
        raise ValueError(f"unknown maze generator {name!r}; known generators: {', '.join(GENERATORS)}")


def default_params(name: str, rows: int, cols: int) -> dict:
    """The documented defaults of generator ``name`` for a rows×cols grid (see the module docstring)."""
    _check_name(name)
    check_grid_size(rows, cols)
    if name == "drunkards_walk":
        return {"coverage": 0.5}
    if name == "searchformer":
        return {"min_plan": int(max(rows, cols)), "wall_min": 0.3, "wall_max": 0.5}
    if name == "cellular_automata":
        return {"fill": 0.45, "survive": 4, "birth": 5, "iterations": 3}
    return {}


def _range_text(spec: tuple) -> str:
    _, lo, hi, lo_inc, hi_inc, _ = spec
    left = "(" if not lo_inc else "["
    right = ")" if not hi_inc else "]"
    return f"{left}{lo}, {'inf' if hi is None else hi}{right}"


def _convert(name: str, key: str, value, spec: tuple):
    kind, lo, hi, lo_inc, hi_inc, desc = spec
    what = f"{name} parameter {key}={value!r} ({desc})"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind == "int" and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ValueError(f"{what}: not a number; allowed: {kind} in {_range_text(spec)}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise ValueError(f"{what}: must be a {kind} in {_range_text(spec)}")
    if kind == "int":
        if not isinstance(value, Integral):
            if not math.isfinite(value) or value != int(value):
                raise ValueError(f"{what}: must be an integer in {_range_text(spec)}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{what}: must be a finite number in {_range_text(spec)}")
    if lo is not None and (value < lo or (value == lo and not lo_inc)):
        raise ValueError(f"{what}: out of range; allowed: {kind} in {_range_text(spec)}")
    if hi is not None and (value > hi or (value == hi and not hi_inc)):
        raise ValueError(f"{what}: out of range; allowed: {kind} in {_range_text(spec)}")
    return value


def _wall_bounds(n: int, wall_min: float, wall_max: float) -> tuple[int, int]:
    return int(math.floor(wall_min * n + 0.5)), int(math.floor(wall_max * n + 0.5))


def _drunkard_target(n: int, coverage: float) -> int:
    return max(2, min(n, int(math.floor(coverage * n + 1e-9))))


def resolve_params(name: str, rows: int, cols: int, params: dict | None) -> dict:
    """Validate ``params`` for generator ``name`` on a rows×cols grid and fill in the defaults.

    Strings (as they come from a command line) are converted to the parameter's type. Returns a
    new JSON-serialisable dict holding every parameter of the generator. Raises ValueError naming
    the generator, the offending key and the allowed values.
    """
    _check_name(name)
    check_grid_size(rows, cols)
    specs = _SPECS[name]
    out = default_params(name, rows, cols)
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"parameters of maze generator {name!r} must be a dict, got {type(params).__name__}")
    for key, value in (params or {}).items():
        if key not in specs:
            valid = ", ".join(specs) if specs else "none (it takes no parameters)"
            raise ValueError(f"unknown parameter {key!r} for maze generator {name!r}; valid parameters: {valid}")
        out[key] = _convert(name, key, value, specs[key])
    n = rows * cols
    if name == "searchformer":
        if out["wall_min"] > out["wall_max"]:
            raise ValueError(f"searchformer parameters wall_min={out['wall_min']} > wall_max={out['wall_max']}; "
                             "need wall_min <= wall_max")
        n_min, n_max = _wall_bounds(n, out["wall_min"], out["wall_max"])
        if n - n_max < 2:
            raise ValueError(f"searchformer parameter wall_max={out['wall_max']} leaves {n - n_max} free cells "
                             f"on a {rows}x{cols} grid; need at least 2 (wall_max <= {(n - 2.5) / n:.4f})")
        if out["min_plan"] > n - n_min:
            raise ValueError(f"searchformer parameter min_plan={out['min_plan']} exceeds the {n - n_min} free cells "
                             f"a {rows}x{cols} grid has at wall_min={out['wall_min']}; allowed: int in "
                             f"[1, {n - n_min}]")
    return out


def _param_vector(name: str, rows: int, cols: int, p: dict) -> np.ndarray:
    """The resolved parameters as the float64 vector the kernel reads (layout per generator)."""
    n = rows * cols
    if name == "drunkards_walk":
        return np.array([_drunkard_target(n, p["coverage"])], dtype=np.float64)
    if name == "searchformer":
        n_min, n_max = _wall_bounds(n, p["wall_min"], p["wall_max"])
        return np.array([p["min_plan"], n_min, n_max], dtype=np.float64)
    if name == "cellular_automata":
        return np.array([p["fill"], p["survive"], p["birth"], p["iterations"]], dtype=np.float64)
    return np.zeros(1, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Counter-based RNG: splitmix64 seeding, xoshiro256** stream per instance
# ----------------------------------------------------------------------------------------------
# Numba promotes uint64 (op) int64 to float64, so every constant in integer arithmetic is a uint64.
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U5 = np.uint64(5)
_U9 = np.uint64(9)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K_SEED = np.uint64(0x5245_4153_4F4E_4C53)  # domain separation constants ("REASONLS", "MAZEIDX.")
_K_IDX = np.uint64(0x4D41_5A45_4944_582E)
_K_HASH = np.uint64(0x6C61_796F_7574_2D68)
_MASK32 = np.uint64(0xFFFFFFFF)
_TWO32 = np.uint64(1 << 32)
_INV53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True)
def _seed_instance(s, seed, gen, index):
    h = _mix(seed ^ _K_SEED)
    h = _mix(h + np.uint64(gen + 1) * _GOLD)
    h = _mix(h ^ _mix(np.uint64(index) + _K_IDX))
    for j in range(4):
        h += _GOLD
        s[j] = _mix(h)


@njit(cache=True, inline="always")
def _next(s):
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    result = _rotl(s1 * _U5, 7) * _U9
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3
    return result


@njit(cache=True, inline="always")
def _below(s, n):
    """Uniform integer in [0, n) for 1 <= n < 2**32 (Lemire's method on 32 bits, unbiased)."""
    n64 = np.uint64(n)
    m = (_next(s) >> np.uint64(32)) * n64
    low = m & _MASK32
    if low < n64:
        threshold = (_TWO32 - n64) % n64
        while low < threshold:
            m = (_next(s) >> np.uint64(32)) * n64
            low = m & _MASK32
    return np.int64(m >> np.uint64(32))


@njit(cache=True, inline="always")
def _uniform(s):
    return np.float64(_next(s) >> np.uint64(11)) * _INV53


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------
# Every parallel work item builds xs/ys once (a cell's coordinates without a 64-bit division,
# which dominated the generators' cost) and DX/DY (the 4 moves).
@njit(cache=True, inline="always")
def _free_list(grid, n, buf):
    m = 0
    for j in range(n):  # branch-free: always store, advance on free cells
        buf[m] = j
        m += 1 - np.int64(grid[j])
    return m


@njit(cache=True, inline="always")
def _draw_two(s, m):
    """Uniform ordered pair of distinct indices in [0, m), m >= 2."""
    i = _below(s, m)
    k = _below(s, m - 1)
    if k >= i:
        k += 1
    return i, k


@njit(cache=True)
def _pick_pair(s, grid, n, nfree, buf):
    """Uniform ordered pair of distinct free cells. Rejection over all cells when free cells are
    common (no scan needed), an explicit list otherwise."""
    if nfree * 4 >= n:
        while True:
            a = _below(s, n)
            if grid[a] == 0:
                break
        while True:
            b = _below(s, n)
            if grid[b] == 0 and b != a:
                break
        return a, b
    m = _free_list(grid, n, buf)
    i, k = _draw_two(s, m)
    return np.int64(buf[i]), np.int64(buf[k])


@njit(cache=True, inline="always")
def _below32(s, r, n):
    """Uniform integer in [0, n) for 1 <= n < 2**32 from the 32-bit draw r (Lemire's method; a draw
    in the rejection zone is replaced by fresh bits from the stream, so the result is unbiased)."""
    n64 = np.uint64(n)
    m = r * n64
    low = m & _MASK32
    if low < n64:
        threshold = (_TWO32 - n64) % n64
        while low < threshold:
            m = (_next(s) >> np.uint64(32)) * n64
            low = m & _MASK32
    return np.int64(m >> np.uint64(32))


@njit(cache=True)
def _lattice_tables(rows, cols):
    """Per-offset tables of the parity lattice, built once per work item (they depend only on the
    grid shape). Rooms are numbered row-major on a lattice padded by one ring of sentinel rooms,
    width W = room columns + 2, so a neighbour is p ± 1 or p ± W without bounds checks.

    Returns (dims, cellof, sentinel, gridtpl, edges): dims[o] = (room rows, room cols, W, padded
    size, edge count); cellof[o, p] the cell of padded room p; sentinel[o, p] 1 on the ring;
    gridtpl[o] the grid with exactly the rooms free; edges[o] the right/down room edges, each packed
    as padded room << 13 | down << 12 | passage cell."""
    n = rows * cols
    rr0 = (rows + 1) // 2
    rc0 = (cols + 1) // 2
    npmax = (rr0 + 2) * (rc0 + 2)
    dims = np.zeros((2, 5), dtype=np.int64)
    cellof = np.zeros((2, npmax), dtype=np.int32)
    sentinel = np.ones((2, npmax), dtype=np.uint8)
    gridtpl = np.ones((2, n), dtype=np.uint8)
    edges = np.zeros((2, 2 * rr0 * rc0), dtype=np.int32)
    for o in range(2):
        rr = (rows - o + 1) // 2
        rc = (cols - o + 1) // 2
        W = rc + 2
        ne = 0
        for ry in range(rr):
            for rx in range(rc):
                p = (ry + 1) * W + rx + 1
                c = (o + 2 * ry) * cols + o + 2 * rx
                cellof[o, p] = c
                sentinel[o, p] = 0
                gridtpl[o, c] = 0
                if rx + 1 < rc:
                    edges[o, ne] = (p << 13) | (c + 1)
                    ne += 1
                if ry + 1 < rr:
                    edges[o, ne] = (p << 13) | 4096 | (c + cols)
                    ne += 1
        dims[o, 0] = rr
        dims[o, 1] = rc
        dims[o, 2] = W
        dims[o, 3] = (rr + 2) * W
        dims[o, 4] = ne
    return dims, cellof, sentinel, gridtpl, edges


@njit(cache=True, inline="always")
def _start_lattice(s, rows, cols, grid, dims, gridtpl):
    """Draws the parity offset o (rooms are the cells with x ≡ y ≡ o (mod 2)), fills grid with that lattice's
    template (all walls but the rooms) and returns (o, room rows, room cols, padded width, padded rooms, edges)."""
    o = np.int64(_next(s) >> np.uint64(63))
    # explicit copy loop: Numba's slice assignment costs more than the copy itself here
    for j in range(rows * cols):
        grid[j] = gridtpl[o, j]
    return o, dims[o, 0], dims[o, 1], dims[o, 2], dims[o, 3], dims[o, 4]


@njit(cache=True, inline="always")
def _set_moves(moves, W):
    """Room steps up, right, down, left on the padded room lattice of width W."""
    moves[0] = -W
    moves[1] = 1
    moves[2] = W
    moves[3] = -1


@njit(cache=True, inline="always")
def _pick_tree_pair(s, rr, rc, W, cellof, o, passages, npass):
    """Uniform ordered pair of distinct free cells of a perfect maze: the rr·rc rooms then the
    npass carved passages (no scan of the grid, no rejection)."""
    nr = rr * rc
    i, k = _draw_two(s, nr + npass)
    if i < nr:
        ry = i // rc
        a = np.int64(cellof[o, (ry + 1) * W + i - ry * rc + 1])
    else:
        a = np.int64(passages[i - nr])
    if k < nr:
        ry = k // rc
        b = np.int64(cellof[o, (ry + 1) * W + k - ry * rc + 1])
    else:
        b = np.int64(passages[k - nr])
    return a, b


# ----------------------------------------------------------------------------------------------
# Generators: each fills grid (the output row) and returns (start cell, goal cell, status).
# The perfect-maze generators work on padded room indices (see _lattice_tables); the passage
# between two rooms is the cell halfway between their cells.
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def _gen_wilson(s, rows, cols, grid, tabs, intree, half, passages, moves):
    dims, cellof, sentinel, gridtpl, _ = tabs
    o, rr, rc, W, NP, _ = _start_lattice(s, rows, cols, grid, dims, gridtpl)
    for p in range(NP):
        intree[p] = 0
    sent = sentinel[o]
    _set_moves(moves, W)
    # Any root gives the uniform tree; a central one shortens the walks (~20 % fewer steps).
    root = (rr // 2 + 1) * W + rc // 2 + 1
    intree[root] = 1
    npass = 0
    bits = _U0
    nbits = 0
    for ry in range(rr):
        for rx in range(rc):
            c = (ry + 1) * W + rx + 1
            if intree[c]:
                continue
            cur = c
            while not intree[cur]:
                if nbits == 0:
                    bits = _next(s)
                    nbits = 32
                d = np.int64(bits & _U3)
                bits >>= _U2
                nbits -= 1
                step = moves[d]
                nxt = cur + step
                # an off-lattice move is re-drawn: the step is uniform over the in-bounds neighbours
                if sent[nxt]:
                    continue
                half[cur] = step  # last exit: following these pointers is the loop-erased walk
                cur = nxt
            cur = c
            while not intree[cur]:
                intree[cur] = 1
                nx = cur + half[cur]
                pc = (cellof[o, cur] + cellof[o, nx]) >> 1
                grid[pc] = 0
                passages[npass] = pc
                npass += 1
                cur = nx
    a, b = _pick_tree_pair(s, rr, rc, W, cellof, o, passages, npass)
    return a, b, 0


@njit(cache=True)
def _gen_kruskal(s, rows, cols, grid, tabs, comp, edges, size, link, passages):
    dims, cellof, _, gridtpl, etpl = tabs
    o, rr, rc, W, NP, ne = _start_lattice(s, rows, cols, grid, dims, gridtpl)
    nr = rr * rc
    for j in range(ne):
        edges[j] = etpl[o, j]
    for p in range(NP):
        comp[p] = p
        size[p] = 1
        link[p] = -1
    # Union–find as quick-find: comp[] names each room's component, link[] chains a component's
    # rooms; a union relabels the smaller side. Finds are one load (no unpredictable loops).
    joined = 0
    bits = _U0
    half = False
    for i in range(ne):
        if joined == nr - 1:  # tree complete: every later edge would close a cycle
            break
        # two 32-bit draws per 64-bit output
        if half:
            r = bits & _MASK32
        else:
            bits = _next(s)
            r = bits >> np.uint64(32)
        half = not half
        j = i + _below32(s, r, ne - i)  # lazy Fisher–Yates: edges[i] is the i-th of a uniform order
        e = edges[j]
        edges[j] = edges[i]
        edges[i] = e
        u = e >> 13
        v = u + (W if e & 4096 else 1)
        ca = comp[u]
        cb = comp[v]
        if ca == cb:
            continue
        sa = size[ca]
        sb = size[cb]
        big = sa > sb
        small = cb if big else ca
        cb = ca if big else cb
        ca = small
        m = ca
        last = ca
        while m >= 0:
            comp[m] = cb
            last = m
            m = link[m]
        link[last] = link[cb]
        link[cb] = ca
        size[cb] = sa + sb
        pc = e & 4095
        grid[pc] = 0
        passages[joined] = pc
        joined += 1
    a, b = _pick_tree_pair(s, rr, rc, W, cellof, o, passages, joined)
    return a, b, 0


@njit(cache=True)
def _gen_dfs(s, rows, cols, grid, tabs, visited, stack, passages, sel, moves, steps):
    dims, cellof, sentinel, gridtpl, _ = tabs
    o, rr, rc, W, NP, _ = _start_lattice(s, rows, cols, grid, dims, gridtpl)
    for p in range(NP):  # the sentinel ring counts as visited
        visited[p] = sentinel[o, p]
    _set_moves(moves, W)
    steps[0] = -cols
    steps[1] = 1
    steps[2] = cols
    steps[3] = -1
    r = _below(s, rr * rc)
    ry = r // rc
    p = (ry + 1) * W + r - ry * rc + 1
    visited[p] = 1
    stack[0] = p
    top = 1
    npass = 0
    bits = _U0
    half = False
    while top > 0:
        u = stack[top - 1]
        # bit d set: the neighbour in direction d (0 up, 1 right, 2 down, 3 left) is unvisited
        m = ((1 - np.int64(visited[u - W])) | ((1 - np.int64(visited[u + 1])) << 1)
             | ((1 - np.int64(visited[u + W])) << 2) | ((1 - np.int64(visited[u - 1])) << 3))
        if m == 0:
            top -= 1
            continue
        # one 32-bit draw per step, even when k = 1 (then it is 0): cheaper than a mispredicted branch
        if half:
            rb = bits & _MASK32
        else:
            bits = _next(s)
            rb = bits >> np.uint64(32)
        half = not half
        d = sel[m, _below32(s, rb, sel[m, 4])]
        v = u + moves[d]
        visited[v] = 1
        pc = cellof[o, u] + steps[d]
        grid[pc] = 0
        passages[npass] = pc
        npass += 1
        stack[top] = v
        top += 1
    a, b = _pick_tree_pair(s, rr, rc, W, cellof, o, passages, npass)
    return a, b, 0


@njit(cache=True)
def _gen_drunkard(s, rows, cols, fp, grid, DX, DY, buf):
    n = rows * cols
    target = np.int64(fp[0])
    grid[:] = 1
    x = _below(s, cols)
    y = _below(s, rows)
    grid[y * cols + x] = 0
    carved = 1
    bits = _U0
    nbits = 0
    while carved < target:
        if nbits == 0:
            bits = _next(s)
            nbits = 32
        d = np.int64(bits & _U3)
        bits >>= _U2
        nbits -= 1
        nx = x + DX[d]
        ny = y + DY[d]
        # an off-grid direction is re-drawn: the move is uniform over the in-bounds neighbours
        if nx < 0 or nx >= cols or ny < 0 or ny >= rows:
            continue
        x = nx
        y = ny
        c = y * cols + x
        carved += grid[c]
        grid[c] = 0
    a, b = _pick_pair(s, grid, n, target, buf)
    return a, b, 0


# Searchformer works on a copy of the layout padded with a wall border (P = cols + 2 columns), so
# that neighbour moves need no bounds checks: lab[] holds -2 on walls and the border, -1 on free
# cells not yet labelled, else the component label.
@njit(cache=True)
def _flood_padded(lab, P, queue, seed, label):
    """Label the 4-connected free component of padded cell seed (branch-free inner loop)."""
    lab[seed] = label
    queue[0] = seed
    head = 0
    tail = 1
    while head < tail:
        u = queue[head]
        head += 1
        for v in (u - 1, u + 1, u - P, u + P):
            fresh = lab[v] == -1
            queue[tail] = v
            tail += fresh
            lab[v] = label if fresh else lab[v]


@njit(cache=True)
def _within(lab, P, pxs, pys, a, b, limit, g, closed, cur, nxt, touched):
    """True iff b is at most limit moves from a (same component, both padded indices).

    A* with the Manhattan heuristic and a two-bucket queue: on a 4-grid a move changes
    f = g + h by 0 (towards b) or +2 (away), so the nodes of f and of f + 2 are all that is open.
    It stops when b is closed (distance f) or when the open f exceeds limit.
    """
    bx = pxs[b]
    by = pys[b]
    f = abs(pxs[a] - bx) + abs(pys[a] - by)
    g[a] = 0
    touched[0] = a
    nt = 1
    cur[0] = a
    nc = 1
    nn = 0
    found = False
    while f <= limit:
        while nc > 0:
            nc -= 1
            u = cur[nc]  # LIFO within a bucket: runs straight at b through open ground
            if closed[u]:
                continue
            if u == b:
                found = True
                break
            closed[u] = 1
            gu = g[u] + 1
            for v in (u - P, u + 1, u + P, u - 1):
                if lab[v] < 0:
                    continue
                gv = g[v]
                if gv >= 0 and gv <= gu:
                    continue
                if gv < 0:
                    touched[nt] = v
                    nt += 1
                g[v] = gu
                if gu + abs(pxs[v] - bx) + abs(pys[v] - by) == f:
                    cur[nc] = v
                    nc += 1
                else:
                    nxt[nn] = v
                    nn += 1
        if found or nn == 0:
            break
        cur, nxt = nxt, cur
        nc = nn
        nn = 0
        f += 2
    for j in range(nt):  # reset only what this search touched
        g[touched[j]] = -1
        closed[touched[j]] = 0
    return found


@njit(cache=True)
def _gen_searchformer(s, rows, cols, fp, grid, pid, pxs, pys, perm, lab, queue, g, closed, cur, nxt):
    n = rows * cols
    P = cols + 2
    min_plan = np.int64(fp[0])
    n_min = np.int64(fp[1])
    n_max = np.int64(fp[2])
    for j in range(n):
        perm[j] = j
    lab[:] = -2
    for layout in range(LAYOUT_CAP):
        k = n_min + _below(s, n_max - n_min + 1)
        for j in range(k):  # partial Fisher–Yates: perm[:k] is a uniform k-subset
            r = j + _below(s, n - j)
            t = perm[j]
            perm[j] = perm[r]
            perm[r] = t
        grid[:] = 0
        for j in range(k):
            grid[perm[j]] = 1
        for c in range(n):
            lab[pid[c]] = -1 - np.int32(grid[c])
        nf = n - k
        if nf < 2:
            continue
        nlabels = 0
        for t in range(PAIR_TRIES):
            i, m = _draw_two(s, nf)
            a = np.int64(perm[k + i])
            b = np.int64(perm[k + m])
            pa = pid[a]
            pb = pid[b]
            if lab[pa] < 0:  # components are labelled lazily, when a start lands in one
                _flood_padded(lab, P, queue, pa, nlabels)
                nlabels += 1
            if lab[pa] != lab[pb]:
                continue
            if abs(pxs[pa] - pxs[pb]) + abs(pys[pa] - pys[pb]) + 1 >= min_plan:
                return a, b, 0
            if not _within(lab, P, pxs, pys, pa, pb, min_plan - 2, g, closed, cur, nxt, queue):
                return a, b, 0
    return 0, 0, 1


# Cellular automata on bit rows: bit x of rows[y] is cell (x, y), 1 = wall (cols <= 64).
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, inline="always")
def _at_least(b0, b1, b2, b3, t):
    """Lanes whose bit-sliced 4-bit count b3b2b1b0 is >= the constant t."""
    if t <= 0:
        return _ALL
    if t > 15:
        return _U0
    gt = _U0
    eq = _ALL
    if (t >> 3) & 1:
        eq &= b3
    else:
        gt |= eq & b3
        eq &= ~b3
    if (t >> 2) & 1:
        eq &= b2
    else:
        gt |= eq & b2
        eq &= ~b2
    if (t >> 1) & 1:
        eq &= b1
    else:
        gt |= eq & b1
        eq &= ~b1
    if t & 1:
        eq &= b0
    else:
        gt |= eq & b0
    return gt | eq


@njit(cache=True)
def _ca_step(bits, new, rows, full, hi, survive, birth):
    """One synchronous round of the rule; out-of-bounds neighbours are walls."""
    for y in range(rows):
        up = bits[y - 1] if y > 0 else full
        md = bits[y]
        dn = bits[y + 1] if y < rows - 1 else full
        # the 8 neighbours as masks: W = cell x-1 (bit 0 gets the wall outside), E = cell x+1
        a = ((up << _U1) | _U1) & full
        b = up
        c = (up >> _U1) | hi
        d = ((md << _U1) | _U1) & full
        e = (md >> _U1) | hi
        f = ((dn << _U1) | _U1) & full
        g = dn
        h = (dn >> _U1) | hi
        # carry-save adders: count = b0 + 2·y0 + 4·z0 + 8·z1 per lane
        s0 = a ^ b ^ c
        c0 = (a & b) | (c & (a ^ b))
        s1 = d ^ e ^ f
        c1 = (d & e) | (f & (d ^ e))
        s2 = g ^ h
        c2 = g & h
        b0 = s0 ^ s1 ^ s2
        k1 = (s0 & s1) | (s2 & (s0 ^ s1))
        x0 = c0 ^ c1 ^ c2
        x1 = (c0 & c1) | (c2 & (c0 ^ c1))
        y0 = x0 ^ k1
        y1 = x0 & k1
        z0 = x1 ^ y1
        z1 = x1 & y1
        stay = _at_least(b0, y0, z0, z1, survive)
        born = _at_least(b0, y0, z0, z1, birth + 1)
        new[y] = ((md & stay) | (~md & born)) & full
    for y in range(rows):
        bits[y] = new[y]


@njit(cache=True, inline="always")
def _spread(x, f):
    """Extend the set bits of x along the runs of set bits of f (x ⊆ f), both directions."""
    g = x
    p = f
    g |= p & (g << _U1)
    p &= p << _U1
    g |= p & (g << _U2)
    p &= p << _U2
    g |= p & (g << np.uint64(4))
    p &= p << np.uint64(4)
    g |= p & (g << np.uint64(8))
    p &= p << np.uint64(8)
    g |= p & (g << np.uint64(16))
    p &= p << np.uint64(16)
    g |= p & (g << np.uint64(32))
    r = x
    p = f
    r |= p & (r >> _U1)
    p &= p >> _U1
    r |= p & (r >> _U2)
    p &= p >> _U2
    r |= p & (r >> np.uint64(4))
    p &= p >> np.uint64(4)
    r |= p & (r >> np.uint64(8))
    p &= p >> np.uint64(8)
    r |= p & (r >> np.uint64(16))
    p &= p >> np.uint64(16)
    r |= p & (r >> np.uint64(32))
    return g | r


@njit(cache=True)
def _component_bits(free, comp, rows, x, y):
    """comp[] = the 4-connected component of free cell (x, y), as bit rows (sweeps to a fixpoint)."""
    for j in range(rows):
        comp[j] = _U0
    comp[y] = _spread(_U1 << np.uint64(x), free[y])
    lo = y
    hi = y
    changed = True
    while changed:
        changed = False
        for j in range(max(lo, 1), rows):
            r = comp[j] | (comp[j - 1] & free[j])
            if r != comp[j]:
                comp[j] = _spread(r, free[j])
                changed = True
                hi = max(hi, j)
        for j in range(min(hi, rows - 2), -1, -1):
            r = comp[j] | (comp[j + 1] & free[j])
            if r != comp[j]:
                comp[j] = _spread(r, free[j])
                changed = True
                lo = min(lo, j)


@njit(cache=True)
def _gen_cellular(s, rows, cols, fp, grid, xs, ys, bits, new, free, comp, buf, fill_out, record):
    n = rows * cols
    fill = fp[0]
    survive = np.int64(fp[1])
    birth = np.int64(fp[2])
    iterations = np.int64(fp[3])
    full = _ALL >> np.uint64(64 - cols)
    hi = _U1 << np.uint64(cols - 1)
    for layout in range(LAYOUT_CAP):
        for y in range(rows):  # each cell a wall with probability fill, row-major draws
            r = _U0
            for x in range(cols):
                if _uniform(s) < fill:
                    r |= _U1 << np.uint64(x)
            bits[y] = r
        if record:
            for j in range(n):
                fill_out[j] = (bits[ys[j]] >> np.uint64(xs[j])) & _U1
        for it in range(iterations):
            _ca_step(bits, new, rows, full, hi, survive, birth)
        for j in range(n):
            grid[j] = (bits[ys[j]] >> np.uint64(xs[j])) & _U1
        nf = _free_list(grid, n, buf)
        if nf < 2:
            continue
        for y in range(rows):
            free[y] = ~bits[y] & full
        ca = -1  # start cell whose component comp[] holds
        for t in range(PAIR_TRIES):
            i, m = _draw_two(s, nf)
            a = np.int64(buf[i])
            b = np.int64(buf[m])
            if ca < 0 or ((comp[ys[a]] >> np.uint64(xs[a])) & _U1) == 0:
                _component_bits(free, comp, rows, xs[a], ys[a])
                ca = a
            if (comp[ys[b]] >> np.uint64(xs[b])) & _U1:
                return a, b, 0
    return 0, 0, 1


# ----------------------------------------------------------------------------------------------
# Parallel driver
# ----------------------------------------------------------------------------------------------
def _make_maze(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs, ys,
               r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
    """One maze of generator `gen` into `grid`: (start cell, goal cell, status). Typed by the overload below."""
    raise NotImplementedError("only callable from jitted code")


@overload(_make_maze)
def _make_maze_for(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                   ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
    # `gen` is a literal (the kernel asks for it with `literally`): each generator gets its own specialization of
    # the kernel, and a first run compiles only the generator it uses, not all six (seconds, not half a minute).
    if not isinstance(gen, types.IntegerLiteral):
        return None
    g = gen.literal_value
    if g == 0:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_wilson(s, rows, cols, grid, tabs, rflags, rw1, w1, moves)
    elif g == 1:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_kruskal(s, rows, cols, grid, tabs, rw1, w2, rw2, rw3, w1)
    elif g == 2:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_dfs(s, rows, cols, grid, tabs, rflags, rw1, w1, sel, moves, steps)
    elif g == 3:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_drunkard(s, rows, cols, fp, grid, DX, DY, w1)
    elif g == 4:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_searchformer(s, rows, cols, fp, grid, pid, pxs, pys, w1, lab, pq, pg, closed, cur, nxt)
    else:
        def impl(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel, steps, DX, DY, xs,
                 ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur, nxt, fill, record):
            return _gen_cellular(s, rows, cols, fp, grid, xs, ys, r1, r2, r3, r4, w1, fill, record)
    return impl


@njit(cache=True, nogil=True)
def _chunks(gen, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed):
    """Chunks c0 .. c1-1 (of _CHUNK instances each) of generator `gen`; threads run disjoint chunk ranges. A plain
    nogil function driven by Python threads rather than a prange kernel: Numba compiles it in a fraction of the
    time, which is what a first run waits for."""
    literally(gen)
    n = rows * cols
    for c in range(c0, c1):
        s = np.empty(4, dtype=np.uint64)
        xs = np.empty(n, dtype=np.int64)
        ys = np.empty(n, dtype=np.int64)
        for j in range(n):
            ys[j] = j // cols
            xs[j] = j - ys[j] * cols
        DX = np.array([1, -1, 0, 0], dtype=np.int64)
        DY = np.array([0, 0, 1, -1], dtype=np.int64)
        flags = np.empty(n, dtype=np.uint8)
        w1 = np.empty(n, dtype=np.int32)
        w2 = np.empty(n, dtype=np.int32)
        r1 = np.empty(rows, dtype=np.uint64)
        r2 = np.empty(rows, dtype=np.uint64)
        r3 = np.empty(rows, dtype=np.uint64)
        r4 = np.empty(rows, dtype=np.uint64)
        # perfect mazes: lattice tables, room-space scratch, and for DFS the neighbour-set table
        # sel[m, j] = direction of the j-th set bit of m, sel[m, 4] = number of set bits
        tabs = _lattice_tables(rows, cols)
        npmax = tabs[1].shape[1]
        rflags = np.empty(npmax, dtype=np.uint8)
        rw1 = np.empty(npmax, dtype=np.int32)
        rw2 = np.empty(npmax, dtype=np.int32)
        rw3 = np.empty(npmax, dtype=np.int32)
        moves = np.empty(4, dtype=np.int64)
        steps = np.empty(4, dtype=np.int64)
        sel = np.zeros((16, 5), dtype=np.int64)
        for m in range(16):
            k = 0
            for d in range(4):
                if (m >> d) & 1:
                    sel[m, k] = d
                    k += 1
            sel[m, 4] = k
        if gen == 4:  # searchformer's padded-grid scratch
            P = cols + 2
            NP = (rows + 2) * P
            pid = np.empty(n, dtype=np.int32)
            for j in range(n):
                pid[j] = (ys[j] + 1) * P + xs[j] + 1
            pxs = np.empty(NP, dtype=np.int64)
            pys = np.empty(NP, dtype=np.int64)
            for j in range(NP):
                pys[j] = j // P
                pxs[j] = j - pys[j] * P
            lab = np.empty(NP, dtype=np.int32)
            pq = np.empty(NP, dtype=np.int32)
            pg = np.full(NP, -1, dtype=np.int32)
            closed = np.zeros(NP, dtype=np.uint8)
            cur = np.empty(4 * NP, dtype=np.int32)
            nxt = np.empty(4 * NP, dtype=np.int32)
        else:
            pid = w1[:0]
            pxs = xs[:0]
            pys = xs[:0]
            lab = w1[:0]
            pq = w1[:0]
            pg = w1[:0]
            closed = flags[:0]
            cur = w1[:0]
            nxt = w1[:0]
        lo = c * _CHUNK
        hi = min(count, lo + _CHUNK)
        for i in range(lo, hi):
            if failed[0] != 0:  # another instance hit the layout cap: the call raises anyway
                status[i] = 2
                continue
            _seed_instance(s, seed, gen, start_index + i)
            grid = walls[i]
            fill = fills[i if record else 0]
            a, b, st = _make_maze(gen, s, rows, cols, fp, grid, tabs, rflags, rw1, rw2, rw3, w1, w2, moves, sel,
                                  steps, DX, DY, xs, ys, r1, r2, r3, r4, pid, pxs, pys, lab, pq, pg, closed, cur,
                                  nxt, fill, record)
            status[i] = st
            if st != 0:
                failed[0] = 1
            start[i, 0] = xs[a]
            start[i, 1] = ys[a]
            goal[i, 0] = xs[b]
            goal[i, 1] = ys[b]


# One entry point per generator, each calling _chunks with its generator as a constant (hence a literal there):
# calling _chunks from Python with `gen` would re-resolve the literal specialization on every call (milliseconds).
@njit(cache=True, nogil=True)
def _chunks_wilson(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed):
    _chunks(0, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


@njit(cache=True, nogil=True)
def _chunks_kruskal(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed):
    _chunks(1, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


@njit(cache=True, nogil=True)
def _chunks_dfs(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed):
    _chunks(2, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


@njit(cache=True, nogil=True)
def _chunks_drunkard(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record,
                     failed):
    _chunks(3, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


@njit(cache=True, nogil=True)
def _chunks_searchformer(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record,
                         failed):
    _chunks(4, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


@njit(cache=True, nogil=True)
def _chunks_cellular(c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record,
                     failed):
    _chunks(5, c0, c1, rows, cols, seed, start_index, count, fp, walls, start, goal, status, fills, record, failed)


_CHUNK_RUNNERS = (_chunks_wilson, _chunks_kruskal, _chunks_dfs, _chunks_drunkard, _chunks_searchformer,
                  _chunks_cellular)


def _thread_count(threads: int | None) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, Integral):
        raise ValueError(f"threads={threads!r}: must be an integer (<= 0 or None: all {limit} threads)")
    return limit if threads <= 0 else min(int(threads), limit)


def _generate(name: str, rows: int, cols: int, seed: int, start_index: int, count: int,
              params: dict | None = None, threads: int | None = None, record_fill: bool = False):
    """generate_mazes, plus (if record_fill) the cellular_automata fill before the rule, per instance."""
    _check_name(name)
    check_grid_size(rows, cols)
    for what, v, lo, hi in (("seed", seed, 0, 2**64 - 1), ("start_index", start_index, 0, 2**62),
                            ("count", count, 1, 2**31)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, Integral) or not lo <= v <= hi:
            raise ValueError(f"{what}={v!r}: must be an integer in [{lo}, {hi}]")
    rows, cols, count = int(rows), int(cols), int(count)
    p = resolve_params(name, rows, cols, params)
    fp = _param_vector(name, rows, cols, p)
    n = rows * cols
    walls = np.empty((count, n), dtype=np.uint8)
    start = np.empty((count, 2), dtype=np.int32)
    goal = np.empty((count, 2), dtype=np.int32)
    status = np.zeros(count, dtype=np.int8)
    record = bool(record_fill) and name == "cellular_automata"
    fills = np.zeros((count if record else 1, n), dtype=np.uint8)
    runner, nchunks = _CHUNK_RUNNERS[_GEN_ID[name]], -(-count // _CHUNK)
    failed = np.zeros(1, dtype=np.int64)

    def work(c0: int) -> None:
        runner(c0, min(nchunks, c0 + _CHUNKS_PER_CALL), rows, cols, np.uint64(seed), np.int64(start_index), count,
               fp, walls, start, goal, status, fills, record, failed)

    firsts = range(0, nchunks, _CHUNKS_PER_CALL)
    workers = min(_thread_count(threads), len(firsts))
    if workers <= 1:
        for c0 in firsts:
            work(c0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, firsts))
    if status.any():
        bad = int(np.flatnonzero(status == 1)[0]) if (status == 1).any() else int(np.flatnonzero(status)[0])
        what = (f"no start/goal pair with a plan of >= {p.get('min_plan')} cells" if name == "searchformer"
                else "no layout with two connected free cells")
        raise ValueError(f"{name} on {rows}x{cols} with {p}: {what} in {LAYOUT_CAP} layouts "
                         f"(instance {start_index + bad}); the parameters are too strict")
    return walls, start, goal, (fills if record else None)


def generate_mazes(name: str, rows: int, cols: int, seed: int, start_index: int, count: int,
                   params: dict | None = None, threads: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances start_index .. start_index+count-1 of generator ``name``'s sequence for ``seed``.

    Returns ``walls`` uint8 (count, rows*cols) (1 = wall), ``start`` and ``goal`` int32 (count, 2)
    as (x, y). ``params`` are validated by :func:`resolve_params`. ``threads``: None or <= 0 uses
    every Numba thread; the result never depends on it.
    """
    walls, start, goal, _ = _generate(name, rows, cols, seed, start_index, count, params, threads)
    return walls, start, goal


# ----------------------------------------------------------------------------------------------
# Layout hash
# ----------------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _hash_kernel(walls, rows, cols, out):
    n = rows * cols
    h0 = _mix(_K_HASH ^ (np.uint64(rows) << np.uint64(32)) ^ np.uint64(cols))
    for i in prange(walls.shape[0]):
        h = h0
        word = _U0
        bit = 0
        for j in range(n):
            if walls[i, j] != 0:
                word |= _U1 << np.uint64(bit)
            bit += 1
            if bit == 64:
                # a bijective mix per 64-cell word chains the words like a CBC-MAC
                h = _mix(h ^ word) + _GOLD
                word = _U0
                bit = 0
        if bit > 0:
            h = _mix(h ^ word) + _GOLD
        out[i] = _mix(h ^ np.uint64(n))


def layout_hash(walls: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """uint64 (N,) 64-bit hash of each wall layout (any nonzero byte is a wall) and the grid shape.

    Start and goal do not enter the hash: equal layouts hash equal, different layouts collide with
    probability about 2**-64 per pair.
    """
    check_grid_size(rows, cols)
    walls = np.asarray(walls)
    if walls.ndim != 2 or walls.shape[1] != rows * cols:
        raise ValueError(f"walls must have shape (N, {rows * cols}) for a {rows}x{cols} grid, got {walls.shape}")
    if walls.dtype != np.uint8:
        if walls.dtype == np.bool_ or np.issubdtype(walls.dtype, np.integer):
            walls = (walls != 0).astype(np.uint8)
        else:
            raise ValueError(f"walls must be an integer or bool array, got dtype {walls.dtype}")
    walls = np.ascontiguousarray(walls)
    out = np.empty(walls.shape[0], dtype=np.uint64)
    if walls.shape[0]:
        _hash_kernel(walls, int(rows), int(cols), out)
    return out
