"""Formal verification of A* traces and plans (docs/design.md §5), in the modes ``paper`` and ``strict``.

The rules live in the C++ core (``cpp/verify.hpp`` documents the response grammar and every choice); this module
feeds it problems and responses in the forms they come in and summarises the verdicts:

* :func:`verify` — problems as arrays, responses as texts, token arrays, or one token array with offsets;
* :func:`verify_jsonl` — a paper-format JSONL (``{"text": …}``, optional ``rows``/``cols`` per line) or a
  predictions JSONL (``{"prompt": …, "response": …}``);
* :func:`verify_texts` — paper-format texts, or prompts and responses;
* :func:`parse_problem_text` — the problem of a paper-format prompt;
* :class:`Verdicts` — the per-example arrays, with :meth:`Verdicts.summary` and :meth:`Verdicts.per_example`;
  :func:`format_summary` prints a summary as a table.

A trace is valid iff no trace error was recorded; the plan errors (``plan_syntax_error``, ``illegal_start``,
``illegal_move``, ``plan_goal_not_reached``) concern the plan alone. ``first_error_at`` is the index of the
operation the first error concerns; errors found at the end of the response (missing goal, plan checks) sit at
``n_ops``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import _core
from .vocab import CLOSE, CREATE, FIRST_COORD, SOLUTION, UNK, check_grid_size, vocab_for

MODES = ("paper", "strict")
ERROR_NAMES: tuple[str, ...] = tuple(_core.error_names())
TRACE_ERROR_CODES: frozenset[int] = frozenset(_core.trace_error_codes())
PLAN_ERROR_NAMES: tuple[str, ...] = tuple(n for c, n in enumerate(ERROR_NAMES) if c not in TRACE_ERROR_CODES)
ERROR_CODES: dict[str, int] = {n: c for c, n in enumerate(ERROR_NAMES)}

_FIELDS = ("plan_valid", "plan_optimal", "trace_valid", "first_error", "first_error_at", "n_ops", "plan_len",
           "error_counts")
_DTYPES = {"plan_valid": np.bool_, "plan_optimal": np.bool_, "trace_valid": np.bool_, "first_error": np.int16,
           "first_error_at": np.int32, "n_ops": np.int32, "plan_len": np.int32, "error_counts": np.int32}


@dataclass
class Verdicts:
    """Per-example verdicts of one verifier mode (arrays of length N; ``error_counts`` is (N, len(error_names)))."""

    mode: str
    plan_valid: np.ndarray
    plan_optimal: np.ndarray
    trace_valid: np.ndarray
    first_error: np.ndarray      # int16 code, -1 = none
    first_error_at: np.ndarray   # int32 operation index, -1 = none
    n_ops: np.ndarray
    plan_len: np.ndarray
    error_counts: np.ndarray
    error_names: tuple[str, ...] = ERROR_NAMES
    line_numbers: np.ndarray | None = None  # input line of each example (verify_jsonl)

    def __len__(self) -> int:
        return len(self.plan_valid)

    @classmethod
    def empty(cls, n: int, mode: str) -> "Verdicts":
        arrays = {f: np.zeros((n, len(ERROR_NAMES)) if f == "error_counts" else n, dtype=_DTYPES[f]) for f in _FIELDS}
        arrays["first_error"][:] = -1
        arrays["first_error_at"][:] = -1
        return cls(mode=mode, **arrays)

    def assign(self, index, other: "Verdicts") -> None:
        """Writes other's examples at positions `index` of self."""
        for f in _FIELDS:
            getattr(self, f)[index] = getattr(other, f)

    def first_error_name(self, i: int) -> str | None:
        code = int(self.first_error[i])
        return None if code < 0 else self.error_names[code]

    def per_example(self) -> Iterator[dict]:
        """One dict per example: plan_valid, plan_optimal, trace_valid, first_error (name or None),
        first_error_at (None when no error), n_ops, plan_len and errors (name → count, nonzero only)."""
        names = self.error_names
        pv, po, tv = self.plan_valid.tolist(), self.plan_optimal.tolist(), self.trace_valid.tolist()
        fe, fa = self.first_error.tolist(), self.first_error_at.tolist()
        no, pl = self.n_ops.tolist(), self.plan_len.tolist()
        for i in range(len(self)):
            row = self.error_counts[i]
            nz = np.flatnonzero(row)
            yield {"plan_valid": pv[i], "plan_optimal": po[i], "trace_valid": tv[i],
                   "first_error": None if fe[i] < 0 else names[fe[i]],
                   "first_error_at": None if fe[i] < 0 else fa[i],
                   "n_ops": no[i], "plan_len": pl[i],
                   "errors": {names[c]: int(row[c]) for c in nz.tolist()}}

    def summary(self, top: int = 10) -> dict:
        """Rates (percent of examples), the plan × trace confusion matrix (counts) and the most frequent first
        errors (name, count), plus the total count of every error that occurred."""
        n = len(self)
        pv, tv = self.plan_valid.astype(bool), self.trace_valid.astype(bool)

        def pct(k: int, d: int) -> float | None:
            return 100.0 * k / d if d else None

        n_pv = int(pv.sum())
        codes, counts = np.unique(self.first_error[self.first_error >= 0], return_counts=True)
        order = sorted(zip(counts.tolist(), codes.tolist()), key=lambda t: (-t[0], t[1]))
        totals = self.error_counts.sum(axis=0, dtype=np.int64)
        return {
            "mode": self.mode,
            "examples": n,
            "plan_valid_pct": pct(n_pv, n),
            "plan_optimal_pct": pct(int(self.plan_optimal.sum()), n),
            "trace_valid_pct": pct(int(tv.sum()), n),
            "trace_valid_among_valid_plans_pct": pct(int((pv & tv).sum()), n_pv),
            "counts": {"plan_valid": [n_pv, n], "plan_optimal": [int(self.plan_optimal.sum()), n],
                       "trace_valid": [int(tv.sum()), n], "trace_valid_among_valid_plans": [int((pv & tv).sum()), n_pv]},
            "confusion": {
                "plan_valid": {"trace_valid": int((pv & tv).sum()), "trace_invalid": int((pv & ~tv).sum())},
                "plan_invalid": {"trace_valid": int((~pv & tv).sum()), "trace_invalid": int((~pv & ~tv).sum())},
            },
            "first_errors": [[self.error_names[c], k] for k, c in order[:top]],
            "error_totals": {self.error_names[c]: int(t) for c, t in enumerate(totals.tolist()) if t},
        }


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown verifier mode {mode!r}; choose 'paper' or 'strict'")


def encode_response(text: str, rows: int, cols: int) -> np.ndarray:
    """Token ids of a response text (words outside the vocabulary become <|unk|>), like
    ``Vocab(rows, cols).encode(text, strict=False)`` but in C++."""
    if not text.isascii():
        # Python splits at Unicode whitespace too; after this the words are the same for the C++ splitter.
        text = " ".join(text.split())
    return _core.encode_words(text, rows, cols)


def parse_problem_text(text: str, rows: int, cols: int):
    """Parses a paper-format prompt ``[<|bos|>] query start X Y goal X Y wall X Y …``, optionally followed by the
    response from ``reasoning`` on. Returns (walls uint8[rows*cols], (sx, sy), (gx, gy), response text or None).
    Raises ValueError saying what is malformed (a word that does not belong, a coordinate outside the grid,
    start or goal on a wall)."""
    check_grid_size(rows, cols)
    if not isinstance(text, str):
        raise ValueError(f"the problem text must be a string, got {type(text).__name__}")
    if not text.isascii():
        text = " ".join(text.split())
    return _core.parse_prompt_text(text, rows, cols)


def _as_walls(walls, rows, cols) -> tuple[np.ndarray, int, int]:
    w = np.asarray(walls)
    if w.dtype.kind not in "biu":
        raise ValueError(f"walls must hold integers or booleans, got dtype {w.dtype}")
    if w.ndim == 3:
        if rows is not None and rows != w.shape[1] or cols is not None and cols != w.shape[2]:
            raise ValueError(f"walls of shape {w.shape} disagree with rows={rows}, cols={cols}")
        rows, cols = w.shape[1], w.shape[2]
        w = w.reshape(w.shape[0], rows * cols)
    elif w.ndim != 2 or rows is None or cols is None:
        raise ValueError("walls must have shape (N, rows, cols), or (N, rows*cols) with rows= and cols= given")
    check_grid_size(int(rows), int(cols))
    if w.size and (w.min() < 0 or w.max() > 1):
        raise ValueError("walls must be 0 (free) or 1 (wall)")
    return np.ascontiguousarray(w, dtype=np.uint8), int(rows), int(cols)


def _as_cells(a, name: str, n: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must have shape (N, 2) = ({n}, 2) of (x, y), got {arr.shape}")
    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
        raise ValueError(f"{name} holds values outside int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _as_token_ids(a) -> np.ndarray:
    """uint16 ids; anything not representable (negative, >= 65536) becomes <|unk|> and so a syntax error."""
    arr = np.asarray(a)
    if arr.dtype == np.uint16:
        return arr.ravel()
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint16)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"token arrays must hold integers, got dtype {arr.dtype}")
    arr = arr.ravel()
    bad = (arr < 0) | (arr > 0xFFFF)
    out = arr.astype(np.uint16)
    out[bad] = UNK
    return out


def _responses(responses, n: int, rows: int, cols: int, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if offsets is not None:
        tokens = _as_token_ids(responses)
        off = np.asarray(offsets)
        if off.dtype.kind not in "iu" or off.shape != (n + 1,):
            raise ValueError(f"offsets must be integers of shape (N+1,) = ({n + 1},), got {off.dtype} {off.shape}")
        off = off.astype(np.int64)
        if n and (off[0] < 0 or np.any(np.diff(off) < 0) or off[-1] > len(tokens)):
            raise ValueError(f"offsets must be non-decreasing within 0..len(tokens)={len(tokens)}")
        return tokens, np.ascontiguousarray(off[:-1]), np.ascontiguousarray(off[1:])
    if isinstance(responses, (str, bytes, np.ndarray)):
        raise ValueError("responses must be a sequence with one text or token array per example "
                         "(or one token array together with offsets=)")
    items = list(responses)
    if len(items) != n:
        raise ValueError(f"{len(items)} responses for {n} problems")
    parts = [encode_response(r, rows, cols) if isinstance(r, str) else _as_token_ids(r) for r in items]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    return tokens.astype(np.uint16, copy=False), ends - lengths, ends


def restore_costs(walls: np.ndarray, start: np.ndarray, goal: np.ndarray, tokens: np.ndarray, begins: np.ndarray,
                  ends: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Responses of the ``correct_no_costs`` arm (``create X Y``, ``close X Y``) with the costs a checker derives
    from the trace itself put back, so the C++ verifier judges them with the g/h checks passing by construction.

    Replaying the trace as the verifier does: ``create X Y`` gets g = g(last closed) + 1 (1 before any close) and
    h = Manhattan distance to the goal; ``close X Y`` gets the g of the cell's open entry (the lowest created, as
    the verifier keeps it; 0 when it is not open, which the verifier reports as ``close_not_in_open_list`` unless
    it is the start) and its h. Every other rule — creates only next to the last closed cell, closes in order of
    lowest f = g + h, the plan's checks — is checked unchanged, so a valid response is an A* search whose costs
    were left unsaid. Tokens after ``solution`` and anything malformed pass through as they are."""
    vocab = vocab_for(rows, cols)
    first_cost, top = vocab.first_cost, len(vocab) - 1
    coord = lambda t: t - FIRST_COORD if FIRST_COORD <= t < first_cost else None  # noqa: E731
    out, new_begins, new_ends = [], np.empty(len(begins), np.int64), np.empty(len(begins), np.int64)
    pos = 0
    for i, (b, e) in enumerate(zip(begins.tolist(), ends.tolist())):
        resp = tokens[b:e].tolist()
        gx, gy = int(goal[i][0]), int(goal[i][1])
        open_g = {(int(start[i][0]), int(start[i][1])): 0}
        closed, last_g, k, res = set(), None, 0, []
        while k < len(resp):
            t = resp[k]
            if t == SOLUTION:
                res.extend(resp[k:])
                break
            x = coord(resp[k + 1]) if t in (CREATE, CLOSE) and k + 2 < len(resp) else None
            y = coord(resp[k + 2]) if x is not None else None
            if y is None:
                res.append(t)
                k += 1
                continue
            cell, h = (x, y), abs(x - gx) + abs(y - gy)
            if t == CREATE:
                g = 1 if last_g is None else last_g + 1
                if cell not in closed and g < open_g.get(cell, g + 1):
                    open_g[cell] = g
            else:
                g = open_g.pop(cell, 0)
                closed.add(cell)
                last_g = g
            res += [t, resp[k + 1], resp[k + 2], first_cost + min(g, top - first_cost),
                    first_cost + min(h, top - first_cost)]
            k += 3
        new_begins[i] = pos
        pos += len(res)
        new_ends[i] = pos
        out.extend(res)
    return np.asarray(out, dtype=np.uint16), new_begins, new_ends


def verify(walls, start, goal, responses, *, rows: int | None = None, cols: int | None = None,
           mode: str = "strict", threads: int = 0, offsets=None, costs: bool = True) -> Verdicts:
    """Verifies N responses against N problems.

    walls: (N, rows, cols), or (N, rows*cols) with rows= and cols=; 1 = wall. start, goal: (N, 2) of (x, y).
    responses: a sequence of N texts (``reasoning close X Y cG cH …``; unknown words become <|unk|>) or of N token
    id arrays of the rows×cols vocabulary, or one token array with offsets= (N+1 int, response i is
    tokens[offsets[i]:offsets[i+1]]). mode: ``paper`` or ``strict``. threads <= 0: all cores.
    costs=False: responses without cost tokens (the ``correct_no_costs`` arm), judged by :func:`restore_costs`.
    """
    _check_mode(mode)
    w, rows, cols = _as_walls(walls, rows, cols)
    n = w.shape[0]
    s, g = _as_cells(start, "start", n), _as_cells(goal, "goal", n)
    tokens, begins, ends = _responses(responses, n, rows, cols, offsets)
    if not costs:
        tokens, begins, ends = restore_costs(w, s, g, tokens, begins, ends, rows, cols)
    out = _core.verify_batch(w, rows, cols, s, g, np.ascontiguousarray(tokens), begins, ends, mode, threads)
    return Verdicts(mode=mode, **{f: out[f] for f in _FIELDS})


def verify_texts(texts: Sequence[str], responses: Sequence[str] | None = None, *, rows: int = 30, cols: int = 30,
                 mode: str = "strict", threads: int = 0) -> Verdicts:
    """Verifies paper-format texts: each text is a whole example (``query … reasoning … end``), or, with responses,
    a prompt (``query …``) whose response is responses[i]. A prompt that already holds ``reasoning …`` starts its
    response. Raises ValueError naming the first malformed prompt."""
    check_grid_size(rows, cols)
    if responses is not None and len(responses) != len(texts):
        raise ValueError(f"{len(responses)} responses for {len(texts)} prompts")
    n = len(texts)
    walls = np.zeros((n, rows * cols), dtype=np.uint8)
    start = np.zeros((n, 2), dtype=np.int32)
    goal = np.zeros((n, 2), dtype=np.int32)
    resp = []
    for i, text in enumerate(texts):
        try:
            walls[i], start[i], goal[i], rest = parse_problem_text(text, rows, cols)
        except ValueError as err:
            raise ValueError(f"problem {i}: {err}") from None
        if responses is None:
            resp.append(rest or "")
        else:
            resp.append(responses[i] if rest is None else rest + " " + responses[i])
    return verify(walls, start, goal, resp, rows=rows, cols=cols, mode=mode, threads=threads)


# ---- JSONL ----

JSONL_BATCH = 8192


def _grid_of(obj: dict, rows: int, cols: int) -> tuple[int, int]:
    r, c = obj.get("rows", rows), obj.get("cols", cols)
    if isinstance(r, bool) or isinstance(c, bool) or not isinstance(r, int) or not isinstance(c, int):
        raise ValueError(f"rows/cols must be integers, got rows={r!r} cols={c!r}")
    check_grid_size(r, c)
    return r, c


def _read_example(obj, rows: int, cols: int):
    """(rows, cols, walls, start, goal, response text) of one JSONL object; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    r, c = _grid_of(obj, rows, cols)
    if "prompt" in obj or "response" in obj:
        prompt, response = obj.get("prompt"), obj.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ValueError('a predictions line needs string fields "prompt" and "response"')
        walls, s, g, rest = parse_problem_text(prompt, r, c)
        if rest is not None:  # the prompt already holds `reasoning` (and maybe more): it begins the response
            response = rest + " " + response
    elif "text" in obj:
        if not isinstance(obj["text"], str):
            raise ValueError('"text" must be a string')
        walls, s, g, response = parse_problem_text(obj["text"], r, c)
        if response is None:
            response = ""
    else:
        raise ValueError(f'expected "text" or "prompt" and "response", found keys {sorted(obj)[:8]}')
    return r, c, walls, s, g, response


def _verify_group(batch: list, mode: str, threads: int) -> Verdicts:
    rows, cols = batch[0][0], batch[0][1]
    return verify(np.stack([b[2] for b in batch]), np.array([b[3] for b in batch], dtype=np.int32),
                  np.array([b[4] for b in batch], dtype=np.int32), [b[5] for b in batch], rows=rows, cols=cols,
                  mode=mode, threads=threads)


def jsonl_objects(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line of a JSONL file (UTF-8, a byte-order mark at its start
    allowed); a line that is not UTF-8 or not JSON raises ValueError naming it."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                # Decoded here, not by json.loads(bytes), which would also take a line for UTF-16 or UTF-32.
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from None
            yield lineno, obj


def verify_jsonl(path: str | os.PathLike, mode: str = "strict", rows: int = 30, cols: int = 30,
                 per_example: str | os.PathLike | None = None, threads: int = 0) -> Verdicts:
    """Verifies every non-blank line of a JSONL file, in order. A line is ``{"text": "query … reasoning … end"}``
    (paper format, its own trace and plan) or ``{"prompt": "query …", "response": "reasoning …"}`` (predictions);
    a line's ``rows``/``cols`` fields override the defaults. A malformed line raises ValueError naming its line
    number. With per_example, writes one JSON object per example (its ``line`` number, the verdict fields of
    :meth:`Verdicts.per_example`) to that path, atomically (temporary file, then rename).
    """
    _check_mode(mode)
    check_grid_size(rows, cols)
    path = Path(path)
    parts: list[Verdicts] = []
    line_numbers: list[int] = []
    sink = None
    if per_example is not None:
        per_example = Path(per_example)
        _check_output_folder(per_example)
        fd, tmp_name = tempfile.mkstemp(prefix=per_example.name + ".", suffix=".tmp", dir=per_example.parent or ".")
        sink = os.fdopen(fd, "w", encoding="utf-8")

    def flush(batch: list, numbers: list[int]) -> None:
        if not batch:
            return
        out = Verdicts.empty(len(batch), mode)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, b in enumerate(batch):
            groups.setdefault((b[0], b[1]), []).append(k)
        for idx in groups.values():
            out.assign(np.array(idx), _verify_group([batch[k] for k in idx], mode, threads))
        parts.append(out)
        if sink is not None:
            sink.write("".join(json.dumps({"line": ln, **d}) + "\n" for ln, d in zip(numbers, out.per_example())))

    try:
        batch: list = []
        numbers: list[int] = []
        for lineno, obj in jsonl_objects(path):
            try:
                batch.append(_read_example(obj, rows, cols))
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
            numbers.append(lineno)
            if len(batch) == JSONL_BATCH:
                flush(batch, numbers)
                line_numbers.extend(numbers)
                batch, numbers = [], []
        flush(batch, numbers)
        line_numbers.extend(numbers)
        if sink is not None:
            sink.close()
            os.replace(tmp_name, per_example)
            sink = None
    finally:
        if sink is not None:
            sink.close()
            os.unlink(tmp_name)
    result = Verdicts.empty(sum(len(p) for p in parts), mode)
    at = 0
    for p in parts:
        result.assign(slice(at, at + len(p)), p)
        at += len(p)
    result.line_numbers = np.array(line_numbers, dtype=np.int64)
    return result


def _check_output_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"--per-example {path}: the folder {folder} does not exist")


def verify_corpus(corpus, mode: str = "strict", threads: int = 0,
                  per_example: str | os.PathLike | None = None, batch_size: int = 20_000) -> Verdicts:
    """Verifies a corpus's own traces and plans (the `correct` arm), batch by batch. With per_example, writes one
    JSON object per example (its ``index`` and the fields of :meth:`Verdicts.per_example`), atomically."""
    from .atomic import atomic_file

    _check_mode(mode)
    result = Verdicts.empty(len(corpus), mode)

    def run(sink) -> None:
        for batch in corpus.batches(batch_size, copy=False):
            # Tokenized example by example inside the verifier's threads: the corpus's tokens are never all in
            # memory, and each sequence is verified while it is in cache.
            try:
                out = _core.verify_examples(batch.walls, corpus.rows, corpus.cols, batch.start, batch.goal,
                                            batch.ops, batch.ops_offsets, batch.plan, batch.plan_offsets, mode,
                                            threads)
            except ValueError as err:
                raise batch.locate(err) from None
            part = Verdicts(mode=mode, **{f: out[f] for f in _FIELDS})
            result.assign(slice(batch.first, batch.first + len(batch)), part)
            if sink is not None:
                sink.write("".join(json.dumps({"index": batch.first + i, **d}) + "\n"
                                   for i, d in enumerate(part.per_example())))

    if per_example is not None:
        _check_output_folder(Path(per_example))
    if per_example is None:
        run(None)
    else:
        with atomic_file(Path(per_example), "w") as sink:
            run(sink)
    return result


# ---- Printing ----

def percent(k: int, n: int, digits: int = 2) -> str:
    """k/n in percent, never rounded to 100 when one failed nor to 0 when one passed (19,999 of 20,000 is 99.99,
    not 100.00)."""
    text = f"{100.0 * k / n:.{digits}f}"
    unit = 10.0 ** -digits
    if k < n and float(text) >= 100.0:
        text = f"{100.0 - unit:.{digits}f}"
    elif k > 0 and float(text) <= 0.0:
        text = f"{unit:.{digits}f}"
    return text


def format_summary(summary: dict) -> str:
    """The table of a :meth:`Verdicts.summary`: rates with their counts, the plan × trace confusion matrix, the top
    first errors."""
    counts = summary["counts"]

    def rate(key: str) -> str:
        k, d = counts[key]
        return "—" if not d else f"{percent(k, d):>6} %  ({k:,} / {d:,})"

    n = summary["examples"]
    lines = [
        f"verifier mode                  {summary.get('mode', '?')}",
        f"examples                       {n:,}",
        f"plan valid                     {rate('plan_valid')}",
        f"plan optimal                   {rate('plan_optimal')}",
        f"trace valid                    {rate('trace_valid')}",
        f"trace valid among valid plans  {rate('trace_valid_among_valid_plans')}",
        "",
        f"{'':16}{'trace valid':>14}{'trace invalid':>16}",
    ]
    for row in ("plan_valid", "plan_invalid"):
        cell = summary["confusion"][row]
        lines.append(f"{row.replace('_', ' '):16}{cell['trace_valid']:>14,}{cell['trace_invalid']:>16,}")
    lines.append("")
    if summary["first_errors"]:
        lines.append("most frequent first errors")
        for name, k in summary["first_errors"]:
            lines.append(f"  {name:30}{k:>10,}  {percent(k, n):>6} %")
    else:
        lines.append("no errors")
    return "\n".join(lines)
