"""Vocabulary and text format of maze sequences (docs/design.md §4).

For an R×C grid the token ids are laid out as::

    0..3          <|pad|> <|unk|> <|bos|> <|eos|>
    4..13         query start goal wall reasoning create close solution plan end
    14..14+M-1    coordinates 0 .. M-1, M = max(R, C)
    14+M..        costs c0 .. c(R·C-1)

which gives 944 tokens at 30×30, as in the paper. The C++ tokenizer and verifier compute the
same ids from (rows, cols) with the formulas of :class:`Vocab`; the tests hold the two together.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SPECIALS = ("<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>")
KEYWORDS = ("query", "start", "goal", "wall", "reasoning", "create", "close", "solution", "plan", "end")
PAD, UNK, BOS, EOS = range(4)
QUERY, START, GOAL, WALL, REASONING, CREATE, CLOSE, SOLUTION, PLAN, END = range(4, 14)
FIRST_COORD = 14
MIN_SIDE, MAX_SIDE = 4, 64


def check_grid_size(rows: int, cols: int) -> None:
    for name, side in (("rows", rows), ("cols", cols)):
        if not isinstance(side, (int, np.integer)) or not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"{name}={side!r}: grid sides must be integers from {MIN_SIDE} to {MAX_SIDE}")


class Vocab:
    """Token ids ↔ words for one grid size."""

    def __init__(self, rows: int, cols: int):
        check_grid_size(rows, cols)
        self.rows, self.cols = int(rows), int(cols)
        self.n_coords = max(self.rows, self.cols)
        self.n_costs = self.rows * self.cols
        self.first_cost = FIRST_COORD + self.n_coords
        self.words: tuple[str, ...] = (
            SPECIALS + KEYWORDS + tuple(str(i) for i in range(self.n_coords))
            + tuple(f"c{i}" for i in range(self.n_costs))
        )
        self.ids: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self._word_array = np.array(self.words, dtype=object)

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"Vocab(rows={self.rows}, cols={self.cols}, size={len(self)})"

    def coord(self, value: int) -> int:
        if not 0 <= value < self.n_coords:
            raise ValueError(f"coordinate {value} outside 0..{self.n_coords - 1}")
        return FIRST_COORD + value

    def cost(self, value: int) -> int:
        if not 0 <= value < self.n_costs:
            raise ValueError(f"cost c{value} outside c0..c{self.n_costs - 1}")
        return self.first_cost + value

    def is_coord(self, token: int) -> bool:
        return FIRST_COORD <= token < self.first_cost

    def is_cost(self, token: int) -> bool:
        return self.first_cost <= token < len(self.words)

    def encode(self, text: str, *, strict: bool = True) -> np.ndarray:
        """Words separated by whitespace → uint16 ids. Unknown words raise, or map to <|unk|>."""
        ids = self.ids
        if strict:
            try:
                return np.fromiter((ids[w] for w in text.split()), dtype=np.uint16)
            except KeyError as err:
                raise ValueError(f"unknown token {err.args[0]!r} for a {self.rows}x{self.cols} vocabulary") from None
        return np.fromiter((ids.get(w, UNK) for w in text.split()), dtype=np.uint16)

    def decode(self, tokens) -> str:
        """uint ids → words joined by single spaces. Out-of-range ids raise."""
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self.words)):
            bad = arr[(arr < 0) | (arr >= len(self.words))][0]
            raise ValueError(f"token id {bad} outside this {len(self.words)}-token vocabulary")
        return " ".join(self._word_array[arr].tolist())

    def to_json(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "size": len(self), "layout": "specials+keywords+coords+costs"}


@lru_cache(maxsize=None)
def vocab_for(rows: int, cols: int) -> Vocab:
    return Vocab(rows, cols)


CLOSE_BIT = 0x8000  # column 0 of an operation row is cell | CLOSE_BIT for `close`, the bare cell for `create`


def parse_sequence(vocab: Vocab, ids: np.ndarray):
    """Parses one complete paper-format sequence (optionally wrapped in <|bos|> … <|eos|>).

    Returns (walls uint8[R*C], start (x, y), goal (x, y), ops uint16[M, 3], plan uint16[P]) with the operation and
    plan encodings of the corpus. Raises ValueError saying what is malformed. This is the strict reader used to
    import data; judging model outputs, which may be arbitrary, is the verifier's job.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and ids[0] == BOS:
        ids = ids[1:]
    if ids.size and ids[-1] == EOS:
        ids = ids[:-1]
    rows, cols = vocab.rows, vocab.cols

    def coords(xs: np.ndarray, ys: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        if not (np.all((xs >= FIRST_COORD) & (xs < vocab.first_cost)) and np.all((ys >= FIRST_COORD) & (ys < vocab.first_cost))):
            raise ValueError(f"{what}: expected coordinates after the keyword")
        x, y = xs - FIRST_COORD, ys - FIRST_COORD
        bad = (x >= cols) | (y >= rows)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{what}: cell ({x[i]}, {y[i]}) outside the {rows}x{cols} grid")
        return x, y

    where = np.flatnonzero(ids == REASONING)
    if where.size != 1:
        raise ValueError(f"expected exactly one 'reasoning' token, found {where.size}")
    r = int(where[0])
    if r < 7 or ids[0] != QUERY or ids[1] != START or ids[4] != GOAL:
        raise ValueError("the prompt must begin 'query start X Y goal X Y'")
    (sx, gx), (sy, gy) = coords(ids[[2, 5]], ids[[3, 6]], "start/goal")
    wall_part = ids[7:r]
    if wall_part.size % 3 or np.any(wall_part[0::3] != WALL):
        raise ValueError("the prompt after the goal must be 'wall X Y' triples")
    wx, wy = coords(wall_part[1::3], wall_part[2::3], "wall")
    walls = np.zeros(rows * cols, dtype=np.uint8)
    walls[wy * cols + wx] = 1

    where = np.flatnonzero(ids == SOLUTION)
    if where.size != 1 or where[0] < r:
        raise ValueError(f"expected exactly one 'solution' after 'reasoning', found {where.size}")
    s = int(where[0])
    op_part = ids[r + 1:s]
    if op_part.size % 5:
        raise ValueError("the reasoning must be 'create|close X Y cG cH' operations")
    kinds = op_part[0::5]
    if np.any((kinds != CREATE) & (kinds != CLOSE)):
        raise ValueError("the reasoning must be 'create|close X Y cG cH' operations")
    ox, oy = coords(op_part[1::5], op_part[2::5], "operation")
    costs = np.stack([op_part[3::5], op_part[4::5]], axis=1) - vocab.first_cost
    if np.any(costs < 0):
        raise ValueError("operation costs must be cost tokens c<int>")
    ops = np.empty((kinds.size, 3), dtype=np.uint16)
    ops[:, 0] = (oy * cols + ox) | np.where(kinds == CLOSE, CLOSE_BIT, 0)
    ops[:, 1:] = costs

    if ids[-1] != END:
        raise ValueError("the sequence must end with 'end'")
    plan_part = ids[s + 1:-1]
    if plan_part.size == 0 or plan_part.size % 3 or np.any(plan_part[0::3] != PLAN):
        raise ValueError("the solution must be one or more 'plan X Y' triples followed by 'end'")
    px, py = coords(plan_part[1::3], plan_part[2::3], "plan")
    plan = (py * cols + px).astype(np.uint16)
    return walls, (int(sx), int(sy)), (int(gx), int(gy)), ops, plan
