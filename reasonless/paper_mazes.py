"""The paper's random stream (docs/design.md §10): the public JavaScript tool's six maze generators, draw for draw.

``reasonless generate --rng paper --split train|test`` makes the examples of the tool that produced the datasets of
"Beyond Semantics" (kstechly/beyond-semantics-maze-visualizer, commit 9f64d5d, ``headless_gen/cli.js -g G -s astar
--mode M --seed S``) byte for byte. This module makes the mazes; A*, tokenization and writing are the usual C++
path of :mod:`reasonless.corpus` (the tool's A* is our ``fifo`` tie-break).

The stream: one 32-bit LCG, x ← (1664525·x + 1013904223) mod 2³², started at (2·seed + mode) mod 2³² (mode 0 =
train, 1 = test); a draw is x / 2³², and ``floor(draw·n)`` is computed exactly as (x·n) >> 32. One stream runs
through all mazes of a dataset in order, so maze i depends on every maze before it: generation is sequential
(one Numba kernel per generator, run over a chunk of consecutive mazes, the stream state carried between chunks).

What each generator draws, in order (cells row-major; "pick" = ``floor(draw·len)`` into a list):

- ``wilson``: offset o (draw < 0.5 → 0); rooms = cells with x ≡ y ≡ o (mod 2); the first tree room (pick); then
  while rooms are missing: a root re-picked until it is not in the tree, a walk whose every step picks one of
  (+2,0), (−2,0), (0,+2), (0,−2) (a move off the grid is re-drawn), erasing loops, until it hits the tree (here
  the walk records each cell's last exit and the path follows them from the root: the same loop-erased path, with
  no per-step bookkeeping); then start = pick of the free cells, goal = pick, re-picked **once** if equal to start.
- ``kruskal``: offset; room edges (each room: right, then down) shuffled by Fisher–Yates from the last edge; the
  edges joining two components are carved; start and goal by rejection (x = floor(draw·cols), then y) until free;
  the goal re-drawn **once** if equal to start.
- ``dfs``: a recursive backtracker that always starts at (0, 0) and picks among the walled cells two steps up,
  right, down, left (a draw even when one is left); start by rejection, goal by rejection until ≠ start.
- ``drunkards_walk`` (``coverage``): x, y; then a walk that picks among left, right, up, down (in-bounds) until
  ``max(2, min(n, floor(n·coverage)))`` cells are free; start = pick, goal re-picked until ≠ start.
- ``searchformer``: the cell list shuffled (Fisher–Yates, kept across retries); walls = the first
  3·floor(n/10) + floor(draw·(2·floor(n/10) + 1)) of it; the rest shuffled; up to 100 attempts take its first
  two cells as start and goal and accept a plan of ≥ max(rows, cols) cells, re-shuffling after every failed
  attempt (the last included); after 100 failures the last attempt is kept if it has any plan, else all again.
- ``cellular_automata`` (``fill``, ``survive``, ``birth``, ``iterations``): a wall where draw < fill, the
  birth/survival rounds of :mod:`reasonless.mazes`, start = pick of the free cells, goal re-picked until ≠ start.

Defects of the tool, kept on purpose and counted (``defect_counts``; the manifest's ``paper.defects``):
``start_is_goal`` (wilson, kruskal: the goal is re-drawn only once), ``unsolvable`` (cellular_automata: no
connectivity check; the tool writes the full failed search and the plan ``plan sx sy plan gx gy``, which
:meth:`PaperSource.finish` reproduces), ``short_plan`` (searchformer: a plan under max(rows, cols) cells kept after
100 failed draws), ``dfs_walled_edge`` (dfs: carving starts at (0, 0), so on an even number of rows or columns the
last row or column is all walls). A cellular_automata layout with fewer than two free cells makes the tool loop
forever; here it is a ValueError naming the maze.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .mazes import GENERATORS, resolve_params
from .vocab import check_grid_size

TOOL = "kstechly/beyond-semantics-maze-visualizer@9f64d5d headless_gen/cli.js -s astar"
DOCS = "docs/design.md, section 'Paper-exact datasets'"
SPLITS = ("train", "test")
DEFECTS = ("start_is_goal", "unsolvable", "short_plan", "dfs_walled_edge")
MAX_SEED = 2**52 - 1  # the tool computes 2·seed + mode in doubles: exact up to here
# our parameter name -> the tool's option name (cli.js passes unknown options to generateSync)
TOOL_PARAMS = {"drunkards_walk": {"coverage": "coverage"},
               "cellular_automata": {"fill": "fillProbability", "survive": "survivalThreshold",
                                     "birth": "birthThreshold", "iterations": "iterations"}}
_CHUNK = 50_000  # mazes per kernel call when skipping ahead

_A = np.uint64(1664525)
_C = np.uint64(1013904223)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S30 = np.uint64(30)  # floor(draw · 4) = x >> 30
_HALF = np.uint64(0x80000000)


def lcg_seed(seed: int, split: str) -> int:
    """The tool's initial state, (2·seed + mode) >>> 0."""
    return (2 * int(seed) + SPLITS.index(split)) % 2**32


def lcg_distance(x: int, y: int) -> int:
    """How many draws lead the LCG from state x to state y (it has full period 2^32, so always some number below
    2^32): bit by bit, as in PCG's distance. lcg_distance(lcg_seed(S, "train"), lcg_seed(S, "test")) says where
    the test stream of seed S starts within the train stream of seed S (see docs/design.md on the overlap)."""
    mult, plus, cur, bit, steps = 1664525, 1013904223, x % 2**32, 1, 0
    y %= 2**32
    while cur != y:
        if (cur ^ y) & bit:
            cur = (cur * mult + plus) % 2**32
            steps |= bit
        plus = (mult + 1) * plus % 2**32
        mult = mult * mult % 2**32
        bit <<= 1
    return steps


# ----------------------------------------------------------------------------------------------------- the LCG
@njit(cache=True, inline="always")
def _step(x):
    return (x * _A + _C) & _MASK


@njit(cache=True, inline="always")
def _pick(x, n):
    """floor((x / 2^32) · n), exactly."""
    return np.int64((x * np.uint64(n)) >> _S32)


@njit(cache=True, inline="always")
def _free_cells(g, out):
    nf = 0
    for c in range(g.size):  # branch-free: the store is overwritten unless the cell is free
        out[nf] = c
        nf += g[c]
    return nf


@njit(cache=True, inline="always")
def _put_pair(i, s, t, cols, start, goal):
    start[i, 0] = s % cols
    start[i, 1] = s // cols
    goal[i, 0] = t % cols
    goal[i, 1] = t // cols


@njit(cache=True, inline="always")
def _emit(g, i, s, t, cols, walls, start, goal):
    for c in range(g.size):
        walls[i, c] = 1 - g[c]
    _put_pair(i, s, t, cols, start, goal)


@njit(cache=True, inline="always")
def _pick_by_rejection(x, g, rows, cols):
    while True:
        x = _step(x)
        px = _pick(x, cols)
        x = _step(x)
        py = _pick(x, rows)
        if g[py * cols + px] != 0:
            return x, py * cols + px


@njit(cache=True, inline="always")
def _lattice(x, rows, cols, rooms):
    """Draws the parity offset and lists the rooms row-major; returns (state, number of rooms)."""
    x = _step(x)
    off = 0 if x < _HALF else 1
    nr = 0
    for yy in range(off, rows, 2):
        for xx in range(off, cols, 2):
            rooms[nr] = yy * cols + xx
            nr += 1
    return x, nr


# ----------------------------------------------------------------------------------------------------- generators
# Each kernel makes `count` consecutive mazes from state[0], writes walls (1 = wall), start and goal as (x, y), and
# leaves the state after the last maze in state[0]. g is the tool's grid (1 = free).
@njit(cache=True, nogil=True)
def _wilson(state, rows, cols, count, walls, start, goal):
    n = rows * cols
    x = state[0]
    tree = np.empty(n, np.uint8)  # per room number: in the tree
    in_tree_cell = np.empty(n, np.uint8)  # the same per cell
    room_of = np.empty(n, np.int32)  # room number of a room cell
    exit_to = np.empty(n, np.int32)  # the cell the walk last left this cell for
    rooms = np.empty(n, np.int32)
    free = np.empty(n, np.int32)
    jump = np.full(4 * n, -1, np.int32)  # the cell two steps in direction d (+x, -x, +y, -y), -1 off the grid
    for c in range(n):
        cx = c % cols
        cy = c // cols
        if cx + 2 < cols:
            jump[4 * c] = c + 2
        if cx >= 2:
            jump[4 * c + 1] = c - 2
        if cy + 2 < rows:
            jump[4 * c + 2] = c + 2 * cols
        if cy >= 2:
            jump[4 * c + 3] = c - 2 * cols
    for i in range(count):
        w = walls[i]  # carved in place (1 = wall): the hot kernel skips the tool-grid copy of the others
        w[:] = 1
        in_tree_cell[:] = 0
        x, nr = _lattice(x, rows, cols, rooms)
        tree[:nr] = 0
        for r in range(nr):
            room_of[rooms[r]] = r
        x = _step(x)
        r = _pick(x, nr)
        w[rooms[r]] = 0
        tree[r] = 1
        in_tree_cell[rooms[r]] = 1
        in_tree = 1
        while in_tree < nr:
            while True:
                x = _step(x)
                r = _pick(x, nr)
                if tree[r] == 0:
                    break
            root = rooms[r]
            cur = root
            while True:  # the walk; a move off the grid is drawn again
                x = _step(x)
                nc = jump[4 * cur + np.int64(x >> _S30)]
                if nc < 0:
                    continue
                exit_to[cur] = nc
                cur = nc
                if in_tree_cell[nc] != 0:
                    break
            # The tool erases each loop as it closes; following the last exits from the root gives the same path.
            c = root
            while in_tree_cell[c] == 0:
                in_tree_cell[c] = 1
                tree[room_of[c]] = 1
                in_tree += 1
                w[c] = 0
                w[(c + exit_to[c]) // 2] = 0  # the cell between two rooms
                c = exit_to[c]
        nf = 0
        for c in range(n):  # the free cells, row-major (branch-free)
            free[nf] = c
            nf += 1 - w[c]
        x = _step(x)
        s = free[_pick(x, nf)]
        x = _step(x)
        t = free[_pick(x, nf)]
        if s == t:
            x = _step(x)
            t = free[_pick(x, nf)]
        _put_pair(i, s, t, cols, start, goal)
    state[0] = x
    return -1


@njit(cache=True, inline="always")
def _root(parent, a):
    """Union-find root of a, halving the path on the way (draws nothing: the stream is unaffected)."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _kruskal(state, rows, cols, count, walls, start, goal):
    n = rows * cols
    x = state[0]
    g = np.empty(n, np.uint8)
    rid = np.empty(n, np.int32)
    rooms = np.empty(n, np.int32)
    eu = np.empty(2 * n, np.int32)
    ev = np.empty(2 * n, np.int32)
    ew = np.empty(2 * n, np.int32)
    order = np.empty(2 * n, np.int32)
    parent = np.empty(n, np.int32)
    for i in range(count):
        g[:] = 0
        rid[:] = -1
        x, nr = _lattice(x, rows, cols, rooms)
        for r in range(nr):
            rid[rooms[r]] = r
            g[rooms[r]] = 1
            parent[r] = r
        ne = 0
        for r in range(nr):
            c = rooms[r]
            if c % cols + 2 < cols and rid[c + 2] >= 0:
                eu[ne] = r
                ev[ne] = rid[c + 2]
                ew[ne] = c + 1
                ne += 1
            if c // cols + 2 < rows and rid[c + 2 * cols] >= 0:
                eu[ne] = r
                ev[ne] = rid[c + 2 * cols]
                ew[ne] = c + cols
                ne += 1
        for e in range(ne):
            order[e] = e
        for k in range(ne - 1, 0, -1):
            x = _step(x)
            j = _pick(x, k + 1)
            tmp = order[k]
            order[k] = order[j]
            order[j] = tmp
        for k in range(ne):
            e = order[k]
            a = _root(parent, eu[e])
            b = _root(parent, ev[e])
            if a != b:
                parent[a] = b
                g[ew[e]] = 1
        x, s = _pick_by_rejection(x, g, rows, cols)
        x, t = _pick_by_rejection(x, g, rows, cols)
        if s == t:
            x, t = _pick_by_rejection(x, g, rows, cols)
        _emit(g, i, s, t, cols, walls, start, goal)
    state[0] = x
    return -1


@njit(cache=True, nogil=True)
def _dfs(state, rows, cols, count, walls, start, goal):
    n = rows * cols
    x = state[0]
    g = np.empty(n, np.uint8)
    stack = np.empty(n, np.int32)
    nb = np.empty(4, np.int32)
    for i in range(count):
        g[:] = 0
        g[0] = 1
        stack[0] = 0
        top = 1
        while top > 0:
            c = stack[top - 1]
            cx = c % cols
            cy = c // cols
            m = 0
            if cy > 1 and g[c - 2 * cols] == 0:
                nb[m] = c - 2 * cols
                m += 1
            if cx < cols - 2 and g[c + 2] == 0:
                nb[m] = c + 2
                m += 1
            if cy < rows - 2 and g[c + 2 * cols] == 0:
                nb[m] = c + 2 * cols
                m += 1
            if cx > 1 and g[c - 2] == 0:
                nb[m] = c - 2
                m += 1
            if m > 0:
                x = _step(x)
                nc = nb[_pick(x, m)]
                g[(c + nc) // 2] = 1
                g[nc] = 1
                stack[top] = nc
                top += 1
            else:
                top -= 1
        x, s = _pick_by_rejection(x, g, rows, cols)
        while True:
            x, t = _pick_by_rejection(x, g, rows, cols)
            if t != s:
                break
        _emit(g, i, s, t, cols, walls, start, goal)
    state[0] = x
    return -1


@njit(cache=True, nogil=True)
def _drunkards_walk(state, rows, cols, count, target, walls, start, goal):
    n = rows * cols
    x = state[0]
    g = np.empty(n, np.uint8)
    free = np.empty(n, np.int32)
    steps = np.empty(4, np.int32)
    for i in range(count):
        g[:] = 0
        x = _step(x)
        cx = _pick(x, cols)
        x = _step(x)
        cy = _pick(x, rows)
        g[cy * cols + cx] = 1
        carved = 1
        while carved < target:
            m = 0
            if cx > 0:
                steps[m] = 0
                m += 1
            if cx < cols - 1:
                steps[m] = 1
                m += 1
            if cy > 0:
                steps[m] = 2
                m += 1
            if cy < rows - 1:
                steps[m] = 3
                m += 1
            x = _step(x)
            d = steps[_pick(x, m)]
            if d == 0:
                cx -= 1
            elif d == 1:
                cx += 1
            elif d == 2:
                cy -= 1
            else:
                cy += 1
            if g[cy * cols + cx] == 0:
                g[cy * cols + cx] = 1
                carved += 1
        nf = _free_cells(g, free)
        x = _step(x)
        a = _pick(x, nf)
        while True:
            x = _step(x)
            b = _pick(x, nf)
            if b != a:
                break
        _emit(g, i, free[a], free[b], cols, walls, start, goal)
    state[0] = x
    return -1


@njit(cache=True, inline="always")
def _shuffle(x, arr, m):
    for k in range(m - 1, 0, -1):
        x = _step(x)
        j = _pick(x, k + 1)
        tmp = arr[k]
        arr[k] = arr[j]
        arr[j] = tmp
    return x


@njit(cache=True)
def _plan_cells(g, rows, cols, s, t, seen, stamp, queue, dist):
    """Cells of a shortest plan from s to t (the tool's A* is optimal), 0 if there is none."""
    seen[s] = stamp
    dist[s] = 1
    queue[0] = s
    head = 0
    tail = 1
    while head < tail:
        c = queue[head]
        head += 1
        if c == t:
            return dist[c]
        cx = c % cols
        for k in range(4):
            if k == 0:
                if c < cols:
                    continue
                nc = c - cols
            elif k == 1:
                if cx == cols - 1:
                    continue
                nc = c + 1
            elif k == 2:
                if c >= (rows - 1) * cols:
                    continue
                nc = c + cols
            else:
                if cx == 0:
                    continue
                nc = c - 1
            if g[nc] != 0 and seen[nc] != stamp:
                seen[nc] = stamp
                dist[nc] = dist[c] + 1
                queue[tail] = nc
                tail += 1
    return 0


@njit(cache=True, nogil=True)
def _searchformer(state, rows, cols, count, walls, start, goal):
    n = rows * cols
    x = state[0]
    base = n // 10
    lo = 3 * base
    span = 2 * base + 1
    need = max(rows, cols)
    g = np.empty(n, np.uint8)
    cells = np.empty(n, np.int32)
    free = np.empty(n, np.int32)
    seen = np.zeros(n, np.int64)
    queue = np.empty(n, np.int32)
    dist = np.empty(n, np.int32)
    stamp = 0
    for i in range(count):
        for c in range(n):
            cells[c] = c
        while True:
            x = _shuffle(x, cells, n)
            x = _step(x)
            k = lo + _pick(x, span)
            g[:] = 0
            m = n - k
            for j in range(m):
                g[cells[k + j]] = 1
                free[j] = cells[k + j]
            x = _shuffle(x, free, m)
            found = 0
            for attempt in range(100):
                s = free[0]
                t = free[1]
                stamp += 1
                found = _plan_cells(g, rows, cols, s, t, seen, stamp, queue, dist)
                if found >= need:
                    break
                x = _shuffle(x, free, m)
            if found > 0:
                break
        _emit(g, i, s, t, cols, walls, start, goal)
    state[0] = x
    return -1


@njit(cache=True, nogil=True)
def _cellular_automata(state, rows, cols, count, fill, survive, birth, iterations, walls, start, goal):
    n = rows * cols
    x = state[0]
    g = np.empty(n, np.uint8)
    free = np.empty(n, np.int32)
    pc = cols + 2
    wall = np.ones((rows + 2) * pc, np.int32)  # 1 = wall, with a ring of walls around the grid (they count)
    for i in range(count):
        for c in range(n):
            x = _step(x)
            g[c] = 0 if x / 4294967296.0 < fill else 1
        for _ in range(iterations):
            for y in range(rows):
                for xx in range(cols):
                    wall[(y + 1) * pc + xx + 1] = 1 - g[y * cols + xx]
            for y in range(rows):
                for xx in range(cols):
                    p = (y + 1) * pc + xx + 1
                    walls_around = (wall[p - pc - 1] + wall[p - pc] + wall[p - pc + 1] + wall[p - 1] + wall[p + 1]
                                    + wall[p + pc - 1] + wall[p + pc] + wall[p + pc + 1])
                    c = y * cols + xx
                    if g[c] == 0:  # a wall stays one unless fewer than `survive` walls surround it
                        g[c] = 1 if walls_around < survive else 0
                    else:  # a free cell becomes a wall when more than `birth` walls surround it
                        g[c] = 0 if walls_around > birth else 1
        nf = _free_cells(g, free)
        if nf < 2:  # the tool re-draws the goal forever
            state[0] = x
            return i
        x = _step(x)
        a = _pick(x, nf)
        while True:
            x = _step(x)
            b = _pick(x, nf)
            if b != a:
                break
        _emit(g, i, free[a], free[b], cols, walls, start, goal)
    state[0] = x
    return -1


# ----------------------------------------------------------------------------------------------------- Python API
def resolve_paper_params(generator: str, rows: int, cols: int, params: dict | None) -> dict:
    """Validates the parameters the tool's generator takes (our names: see TOOL_PARAMS) and fills in its defaults.
    wilson, kruskal, dfs and searchformer take none (the tool's searchformer has fixed wall bounds and minimum)."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown maze generator {generator!r}; the JS tool has: {', '.join(GENERATORS)}")
    check_grid_size(rows, cols)
    names = TOOL_PARAMS.get(generator, {})
    extra = sorted(set(params or {}) - set(names))
    if extra:
        valid = ", ".join(f"{k} (the tool's --{v})" for k, v in names.items()) or "none"
        raise ValueError(f"--rng paper: the JS tool's {generator} does not take {', '.join(extra)}; "
                         f"its parameters: {valid}")
    return resolve_params(generator, rows, cols, params) if names else {}


def _check_seed_split(seed: int, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"--rng paper needs --split train or --split test (the tool's --mode), got {split!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--rng paper: seed {seed} must be from 0 to 2^52 - 1 (the tool computes 2·seed + mode "
                         f"in floating point, exact only up to there)")


class PaperSource:
    """The mazes of one (generator, grid, params, seed, split) dataset of the JS tool, in order.

    ``mazes(first, n)`` returns mazes first .. first+n-1; consecutive calls continue the stream, any other first
    replays it from the start (skipping is sequential too). ``finish(batch)`` gives A*'s results the tool's plan
    for unsolvable mazes. One caller at a time (the background thread of ``then`` is its own)."""

    def __init__(self, generator: str, rows: int, cols: int, seed: int, split: str, params: dict | None = None):
        _check_seed_split(seed, split)
        self.generator, self.rows, self.cols, self.seed, self.split = generator, int(rows), int(cols), int(seed), split
        self.params = resolve_paper_params(generator, rows, cols, params)
        self.key = {"rng": "paper", "split": split}
        self._lock = threading.Lock()
        self._pending = None  # ((first, count), future) of mazes made ahead
        self._pool = None
        self._rewind()

    def _rewind(self) -> None:
        self._state = np.array([lcg_seed(self.seed, self.split)], dtype=np.uint64)
        self._position = 0

    def _run(self, count: int, walls, start, goal) -> None:
        rows, cols, p, st = self.rows, self.cols, self.params, self._state
        name = self.generator
        if name == "drunkards_walk":
            target = max(2, min(rows * cols, math.floor(rows * cols * p["coverage"])))
            bad = _drunkards_walk(st, rows, cols, count, target, walls, start, goal)
        elif name == "cellular_automata":
            bad = _cellular_automata(st, rows, cols, count, float(p["fill"]), int(p["survive"]), int(p["birth"]),
                                     int(p["iterations"]), walls, start, goal)
        else:
            kernel = {"wilson": _wilson, "kruskal": _kruskal, "dfs": _dfs, "searchformer": _searchformer}[name]
            bad = kernel(st, rows, cols, count, walls, start, goal)
        if bad >= 0:
            index = self._position + int(bad)
            self._rewind()
            raise ValueError(f"--rng paper: {name} maze {index} ({self.rows}x{self.cols}, {self.params}, seed "
                             f"{self.seed}, {self.split}) has fewer than two free cells; the JS tool loops forever "
                             f"there, so this dataset cannot be made beyond {index} examples")
        self._position += count

    def _produce(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._lock:
            if first < self._position:
                self._rewind()
            n = self.rows * self.cols
            while self._position < first:  # skip ahead
                k = min(_CHUNK, first - self._position)
                self._run(k, np.empty((k, n), np.uint8), np.empty((k, 2), np.int32), np.empty((k, 2), np.int32))
            walls = np.empty((count, n), np.uint8)
            start = np.empty((count, 2), np.int32)
            goal = np.empty((count, 2), np.int32)
            self._run(count, walls, start, goal)
            return walls, start, goal

    def mazes(self, first: int, count: int, then: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """walls uint8 (count, R·C) (1 = wall), start and goal int32 (count, 2) as (x, y). With ``then`` > 0 the
        next `then` mazes are made in a background thread meanwhile (the kernels release the GIL), for the next
        call to pick up: so the sequential stream overlaps A* and writing."""
        pending, self._pending = self._pending, None
        result = None
        if pending is not None:
            ahead, future = pending
            try:
                done = future.result()
            except ValueError:
                if ahead == (first, count):
                    raise
                done = None
            if ahead == (first, count):
                result = done
        if result is None:
            result = self._produce(first, count)
        if then > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paper-mazes")
            self._pending = ((first + count, then), self._pool.submit(self._produce, first + count, then))
        return result

    def warm_up(self) -> np.ndarray:
        """Compiles (or loads from Numba's cache) this generator's kernel on a throw-away stream; returns the walls
        of maze 0."""
        probe = PaperSource(self.generator, self.rows, self.cols, self.seed, self.split, self.params)
        return probe.mazes(0, 1)[0]

    @staticmethod
    def finish(batch):
        """The tool's plan for a maze without a path is [start, goal] (its path reconstruction stops at the goal's
        missing parent): A* leaves such plans empty, this puts the two cells in."""
        lengths = np.diff(batch.plan_offsets)
        empty = np.flatnonzero(lengths == 0)
        if len(empty) == 0:
            return batch
        lengths[empty] = 2
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        cells = np.stack([batch.start[empty, 1] * batch.cols + batch.start[empty, 0],
                          batch.goal[empty, 1] * batch.cols + batch.goal[empty, 0]], axis=1).ravel()
        plan = np.insert(batch.plan, np.repeat(batch.plan_offsets[empty], 2), cells.astype(batch.plan.dtype))
        batch.plan, batch.plan_offsets = plan, offsets
        return batch


_LAST: list = [None, None]  # (key, source) of the last corpus served by shard_mazes: its stream goes on from there


def shard_mazes(key: dict, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mazes first .. first+count-1 of the --rng paper corpus `key` (a corpus key of :mod:`reasonless.corpus`).
    Shards asked for in order continue one stream; any other order replays it from the start."""
    ident = {k: key[k] for k in ("generator", "rows", "cols", "seed", "split", "params")}
    if _LAST[0] != ident:
        _LAST[:] = [ident, PaperSource(key["generator"], key["rows"], key["cols"], key["seed"], key["split"],
                                       key["params"])]
    after = min(key["shard_size"], key["count"] - first - count)  # the next shard, made while this one is solved
    return _LAST[1].mazes(first, count, then=max(after, 0))


# ----------------------------------------------------------------------------------------------------- defects
def defect_counts(generator: str, rows: int, cols: int, start: np.ndarray, goal: np.ndarray, plan_cells: np.ndarray,
                  packed_walls: np.ndarray) -> dict[str, int]:
    """How many examples carry each of the tool's defects (DEFECTS). ``plan_cells`` per example as written (an
    unsolvable maze has the two-cell plan [start, goal] with start and goal not adjacent); ``packed_walls`` as in a
    shard (little bit order)."""
    start = np.asarray(start, np.int64)
    goal = np.asarray(goal, np.int64)
    plan_cells = np.asarray(plan_cells, np.int64)
    same = (start == goal).all(axis=1)
    apart = np.abs(start - goal).sum(axis=1)
    out = dict.fromkeys(DEFECTS, 0)
    out["start_is_goal"] = int(same.sum())
    out["unsolvable"] = int(((plan_cells == 2) & (apart != 1)).sum())
    if generator == "searchformer":
        out["short_plan"] = int(((plan_cells < max(rows, cols)) & (plan_cells > 0)).sum())
    if generator == "dfs" and len(start):
        last_row = np.arange((rows - 1) * cols, rows * cols)
        last_col = np.arange(cols - 1, rows * cols, cols)
        packed = np.asarray(packed_walls)

        def all_walls(cells):
            bits = (packed[:, cells // 8] >> (cells % 8).astype(np.uint8)) & 1
            return bits.all(axis=1)

        out["dfs_walled_edge"] = int((all_walls(last_row) | all_walls(last_col)).sum())
    return out


def corpus_defects(directory, entries: list[dict], generator: str, rows: int, cols: int) -> dict[str, int]:
    """defect_counts summed over the shards (manifest entries) of a corpus directory."""
    from pathlib import Path

    total = dict.fromkeys(DEFECTS, 0)
    for e in entries:
        d = Path(directory) / e["dir"]
        arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ("start", "goal", "stats", "walls")}
        counts = defect_counts(generator, rows, cols, arrays["start"], arrays["goal"], arrays["stats"][:, 2],
                               arrays["walls"])
        for k, v in counts.items():
            total[k] += v
    return total


def manifest_entry(source: PaperSource, directory, entries: list[dict]) -> dict:
    """The manifest's ``paper`` object: the tool, the LCG's start, the defect counts and where they are explained."""
    return {"paper": {"tool": TOOL, "lcg_state": lcg_seed(source.seed, source.split),
                      "tool_params": {TOOL_PARAMS[source.generator][k]: v for k, v in source.params.items()}
                      if source.generator in TOOL_PARAMS else {},
                      "defects": corpus_defects(directory, entries, source.generator, source.rows, source.cols),
                      "docs": DOCS}}


def warning_line(manifest: dict) -> str | None:
    """One line naming the tool's defects in a --rng paper corpus, None for other corpora."""
    paper = manifest.get("paper")
    if not paper:
        return None
    found = ", ".join(f"{v:,} {k}" for k, v in paper["defects"].items() if v) or "none found here"
    return (f"warning: --rng paper copies the JS tool, defects included ({found}); "
            f"train and test streams overlap — see {paper.get('docs', DOCS)}")
