"""Training arms: which trace a training sequence carries (docs/design.md §1).

Every arm keeps the example's own problem (the prompt) and its own optimal A* plan; only the part between
``reasoning`` and ``solution`` changes. Comparing models trained on different arms of one corpus therefore isolates
what the *trace* contributes. The arms, each defined once in :data:`ARM_DEFINITIONS`:

``correct``
    The example's own A* trace (docs/design.md §3), as generated.
``correct_no_costs``
    The example's own A* trace with the cost tokens left out: ``create X Y`` and ``close X Y`` instead of
    ``create X Y cG cH``. It tests whether computing g and h is what makes traces hard to learn; its responses are
    verified with :func:`reasonless.verifier.verify` ``costs=False`` (plan checks unchanged, g/h checks skipped).
``none``
    No trace: ``reasoning`` is followed directly by ``solution`` (the solution-only baseline).
``swapped``
    The A* trace of a *different* example of the same corpus, as in the paper: example i carries the trace of
    example ``partner_indices(len(corpus), seed)[i]``, a seeded derangement, so no example keeps its own trace.
    Trace and plan then describe different mazes.
``shuffled``
    The example's own A* operations in a uniformly random order (a Fisher–Yates shuffle seeded per example): the
    same multiset of operations, with the order — which carries the search — destroyed.
``reversed``
    The example's own A* operations, last to first (it starts by closing the goal).
``noise``
    As many operations as the own trace, each drawn independently: ``create`` or ``close`` with probability 1/2, a
    uniformly random *free* cell of this maze (free, so that the noise is not told apart by naming walls), and g
    and h each uniform in [0, R·C). The trace's length is the only thing it shares with the real one.
``other_algorithm:bfs`` / ``:dfs`` / ``:greedy`` / ``:dijkstra``
    The trace of another search on the same maze from the same start to the same goal, in A*'s create/close
    language: ``close`` when a cell is taken from the frontier, ``create`` for each neighbour pushed (neighbours
    scanned up, right, down, left as in A*), g = cost of the path to the cell along the search's own parent links,
    h = Manhattan distance to the goal (written even when the algorithm ignores it); each stops right after it
    closes the goal and emits no ``create`` for the start. ``bfs``: first-in first-out queue, a cell pushed once,
    when first reached. ``dfs``: last-in first-out stack with cells marked visited when *popped* (the textbook
    iterative depth-first search): every free neighbour not yet closed is pushed and created, again if it is
    already on the stack, and a popped cell that is already closed is skipped without an operation; the last
    neighbour pushed (left) is explored first. ``greedy``: best-first on h alone, ties first-in first-out, a cell
    pushed once. ``dijkstra``: uniform-cost on g, ties first-in first-out, a cell created again only when its g
    improves. On unit-cost grids g never improves after the first push and the pop order by (g, insertion) is the
    queue order of BFS, so ``dijkstra`` traces equal ``bfs`` traces exactly (a property of the grids, kept visible
    as its own arm rather than hidden). The algorithms are in ``cpp/search.{hpp,cpp}``.

Randomness is deterministic given the seed: ``swapped`` draws one permutation of the whole corpus with NumPy's
PCG64; ``shuffled`` and ``noise`` seed each example from (seed, arm, corpus index) with splitmix64, so the result
does not depend on batch boundaries or the number of threads.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Iterator

import numpy as np

from .corpus import Batch, Corpus

ARM_DEFINITIONS: dict[str, str] = {
    "correct": "the example's own A* trace",
    "correct_no_costs": "the example's own A* trace without the cG cH cost tokens",
    "none": "no trace (solution-only baseline)",
    "swapped": "the A* trace of another example of the corpus (seeded derangement)",
    "shuffled": "the example's own A* operations in a seeded random order",
    "reversed": "the example's own A* operations, last to first",
    "noise": "random operations on random free cells with random costs, as many as the own trace",
    "other_algorithm:bfs": "breadth-first search trace on the same maze",
    "other_algorithm:dfs": "depth-first search trace on the same maze (visited marked at pop)",
    "other_algorithm:greedy": "greedy best-first (on h) search trace on the same maze",
    "other_algorithm:dijkstra": "uniform-cost (Dijkstra) search trace on the same maze (equals bfs on unit grids)",
}
ARMS: tuple[str, ...] = tuple(ARM_DEFINITIONS)
# Arms computed per example by the C++ core (cpp/arms.cpp).
_CORE_ARMS = ("shuffled", "reversed", "noise", "other_algorithm:bfs", "other_algorithm:dfs", "other_algorithm:greedy",
              "other_algorithm:dijkstra")


def check_arm(name: str) -> str:
    """Returns `name` if it is an arm, else raises ValueError naming it and listing the arms."""
    if name not in ARM_DEFINITIONS:
        raise ValueError(f"unknown arm {name!r}; choose one of {', '.join(ARMS)}")
    return name


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer ≥ 0")
    return int(seed)


def partner_indices(n: int, seed: int) -> np.ndarray:
    """The swapped arm's partners: int64 (n,), a derangement of 0..n-1 (p[i] != i for every i), a pure function
    of (n, seed).

    Algorithm: a uniformly random permutation (``np.random.Generator(PCG64(seed)).permutation(n)``), then its
    fixed points are repaired: two or more fixed points f_0 < f_1 < … are rotated among themselves
    (p[f_k] = f_(k+1 mod m), so none stays fixed and the values stay a permutation); a single fixed point i swaps
    its value with a uniformly chosen other position j (p[j] != j and p[j] != i before the swap, so neither is
    fixed after it). A random permutation has about one fixed point on average, so the result is close to a
    uniform random derangement while needing only vectorised work (1,000,000 examples in well under a second).
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"the swapped arm needs at least 2 examples to swap traces between, got {n}")
    return _partners(n, _check_seed(seed))


@functools.lru_cache(maxsize=4)
def _partners(n: int, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    p = rng.permutation(n).astype(np.int64)
    fixed = np.flatnonzero(p == np.arange(n))
    if len(fixed) >= 2:
        p[fixed] = np.roll(fixed, -1)
    elif len(fixed) == 1:
        i = int(fixed[0])
        j = (i + 1 + int(rng.integers(n - 1))) % n
        p[i], p[j] = p[j], i
    p.setflags(write=False)  # cached and shared between calls
    return p


def gather_ops(corpus: Corpus, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The A* operations of corpus examples `indices` (in that order): (ops uint16 (M, 3), offsets int64 (n+1,)).
    Reads each shard's memory maps; only the rows asked for are copied."""
    from . import _core

    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    if n and (indices.min() < 0 or indices.max() >= len(corpus)):
        raise ValueError(f"example indices must lie in [0, {len(corpus)})")
    starts = np.asarray(corpus._starts, dtype=np.int64)
    shard_of = np.searchsorted(starts, indices, side="right") - 1
    order = np.argsort(shard_of, kind="stable")
    bounds = np.searchsorted(shard_of[order], np.arange(len(corpus.shards) + 1))
    begin = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    for k, shard in enumerate(corpus.shards):
        sel = order[bounds[k]:bounds[k + 1]]
        if len(sel):
            local = indices[sel] - starts[k]
            oo = shard.ops_offsets
            begin[sel] = oo[local]
            counts[sel] = oo[local + 1] - begin[sel]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    ops = np.empty((int(offsets[-1]), 3), np.uint16)
    for k, shard in enumerate(corpus.shards):
        sel = order[bounds[k]:bounds[k + 1]]
        if len(sel):
            _core.copy_op_spans(np.ascontiguousarray(shard.ops), begin[sel], counts[sel], ops, offsets[sel])
            shard.release()  # a pass over the corpus maps every shard: keep resident memory to one at a time
    return ops, offsets


def arm_batch(corpus: Corpus | None, batch: Batch, arm: str, seed: int = 0, threads: int = 0) -> Batch:
    """`batch` with its trace replaced by the arm's: a :class:`~reasonless.corpus.Batch` whose ``ops`` and
    ``ops_offsets`` are the arm's trace, problem and plan unchanged. Tokenize it with arm ``"correct"``.

    ``batch.first`` must be the corpus index of its first example (as :meth:`Corpus.batches` and
    :meth:`Shard.batch` give): it seeds the per-example randomness and picks the swapped partners. `corpus` is
    needed only by ``swapped`` (partners may sit in any shard). threads <= 0: every core.
    """
    check_arm(arm)
    seed = _check_seed(seed)
    n = len(batch)
    if arm in ("correct", "correct_no_costs"):
        return replace(batch)
    if arm == "none":
        return replace(batch, ops=np.zeros((0, 3), np.uint16), ops_offsets=np.zeros(n + 1, np.int64))
    if arm == "swapped":
        if corpus is None:
            raise ValueError("the swapped arm needs the corpus (partners come from the whole corpus)")
        if batch.first < 0 or batch.first + n > len(corpus):
            raise ValueError(f"batch of {n} examples from index {batch.first} does not lie in the corpus of "
                             f"{len(corpus)}")
        partners = partner_indices(len(corpus), seed)[batch.first:batch.first + n]
        ops, offsets = gather_ops(corpus, partners)
        return replace(batch, ops=ops, ops_offsets=offsets)
    from . import _core

    ids = np.arange(batch.first, batch.first + n, dtype=np.int64)
    ops, offsets = _core.arm_ops_batch(arm, batch.walls, batch.rows, batch.cols, batch.start, batch.goal, batch.ops,
                                       batch.ops_offsets, ids, seed, threads)
    return replace(batch, ops=ops, ops_offsets=offsets)


def token_layout(arm: str) -> str:
    """How the C++ tokenizer writes an arm's batch (from :func:`arm_batch`): ``"correct"`` (ops with costs),
    ``"no_costs"`` (ops without) or ``"none"`` (no ops)."""
    return {"none": "none", "correct_no_costs": "no_costs"}.get(check_arm(arm), "correct")


def arm_tokens(corpus: Corpus | None, batch: Batch, arm: str, seed: int = 0,
               threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training token streams of `batch` under `arm`: (uint16 tokens, int64 offsets, int32 prompt lengths)."""
    if check_arm(arm) == "none":
        return batch.tokens("none", threads)
    return arm_batch(corpus, batch, arm, seed, threads).tokens(token_layout(arm), threads)


def arm_batches(corpus: Corpus, arm: str, seed: int = 0, size: int = 20_000, threads: int = 0) -> Iterator[Batch]:
    """:func:`arm_batch` over the whole corpus in order, at most `size` examples per batch."""
    check_arm(arm)
    _check_seed(seed)
    for batch in corpus.batches(size):
        yield arm_batch(corpus, batch, arm, seed, threads)
