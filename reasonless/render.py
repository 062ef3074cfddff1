"""`reasonless render`: one maze with its search drawn — SVG by a small writer of our own, PNG through matplotlib.

Sources (:func:`load_scene`), example ``index``:

* a corpus directory (``manifest.json``): the example with its A* trace; with ``compare=EVAL.jsonl`` the model's
  response to it (the eval record of that corpus index, in the suite whose corpus this is) beside it;
* an arm's token directory (``meta.json`` of ``reasonless export --format tokens``): the example's sequence under
  that arm, judged like any response (a swapped or shuffled trace breaks rules), beside the A* trace of the corpus
  it was made from when that corpus is still there (not for the ``correct`` arm, whose trace is that one);
* a JSONL file, record ``index`` (0-based, blank lines not counted): a paper-format line ``{"text": …}`` (its own
  trace, judged), a predictions line ``{"prompt": …, "response": …}`` (the response beside our A* trace of the
  problem), or a record of `reasonless eval` (the response beside the A* trace of the suite's example; the suite's
  corpus is the one its ``.summary.json`` names). With ``suite=``, ``index`` is the corpus index of an eval record of
  that suite instead.

Each panel draws the grid at the same scale, side by side: walls, start (S), goal (G), every closed cell filled by
its close order (light = early, dark = late), cells created but never closed outlined, the plan as a path. For a
response, the operations are parsed with the verifier's grammar (``cpp/verify.hpp``: well-formed operations numbered
from 0 in text order, the plan the run of plan steps after the last operation) and replayed up to the first error
the verifier reports (one mode, ``strict`` unless said otherwise; an eval record's own primary mode); the first
error is marked on its cell and named with its code. Invalid operations — every operation at which the verifier
records a broken rule (:data:`OP_RULES`), anywhere in the response — have a dashed outline. They are found by
verifying every prefix of the response in one C++ call (up to :data:`MAX_CHECKED_OPS` operations): the verifier
records an operation's error when it reads that operation, so a prefix's error counts grow exactly at the invalid
operations. Errors found at the end of a response (``goal_not_reached``, plan errors) are marked on the cell they
concern (the goal, the plan's first illegal step).

The output is a pure function of the input: the same source and index give the same bytes (no time stamps, no
software versions, fixed number formatting).
"""
from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .vocab import CLOSE, CREATE, END, EOS, FIRST_COORD, PAD, PLAN, REASONING, SOLUTION, check_grid_size, vocab_for

# Rules the verifier checks when it reads an operation (cpp/verify.hpp); their errors sit on that operation.
OP_RULES = ("invalid_coordinates", "create_close_wall", "first_create_not_last_closed", "create_non_neighbor",
            "create_already_closed", "close_not_in_open_list", "close_not_lowest_f_value", "wrong_g", "wrong_h",
            "unexpected_create", "after_goal")
MAX_CHECKED_OPS = 5000

WALL, FREE, GRID_LINE, INK = "#3a3a3a", "#ffffff", "#d4d4d4", "#222222"
OPEN, PLAN_COLOR, START_COLOR, GOAL_COLOR, ERROR_COLOR = "#ff7f0e", "#d62728", "#2ca02c", "#1f77b4", "#e7298a"
# viridis, reversed: the first closed cell is light yellow, the last dark purple
RAMP = ("#fde725", "#addc30", "#5ec962", "#28ae80", "#21918c", "#2c728e", "#3b528b", "#472d7b", "#440154")
FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"


def ramp(t: float) -> str:
    """The fill of a closed cell at relative close order t in [0, 1]."""
    t = min(1.0, max(0.0, float(t))) * (len(RAMP) - 1)
    k = min(int(t), len(RAMP) - 2)
    f = t - k
    a, b = (tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (RAMP[k], RAMP[k + 1]))
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------- model
@dataclass
class Maze:
    rows: int
    cols: int
    walls: np.ndarray          # uint8 (rows, cols), 1 = wall
    start: tuple[int, int]     # (x, y)
    goal: tuple[int, int]

    def free(self, x: int, y: int) -> bool:
        return 0 <= x < self.cols and 0 <= y < self.rows and not self.walls[y, x]

    def inside(self, x: int, y: int) -> bool:
        return 0 <= x < self.cols and 0 <= y < self.rows


@dataclass
class Panel:
    """One drawn trace: the operations (all, or a response's), how many are replayed, the plan, the error marks."""

    title: str
    ops: list
    plan: list
    replayed: int
    notes: list[str] = field(default_factory=list)
    first_error: str | None = None
    first_error_at: int | None = None
    error_cell: tuple[int, int] | None = None
    invalid: dict[int, str] = field(default_factory=dict)


@dataclass
class Scene:
    maze: Maze
    panels: list[Panel]
    title: str


def maze_of(rows: int, cols: int, walls, start, goal) -> Maze:
    check_grid_size(rows, cols)
    return Maze(rows, cols, np.asarray(walls, dtype=np.uint8).reshape(rows, cols), (int(start[0]), int(start[1])),
                (int(goal[0]), int(goal[1])))


def reference_panel(maze: Maze, ops, plan, title: str = "A* reference") -> Panel:
    """A trace drawn whole (an A* trace needs no judging)."""
    ops = [tuple(int(v) if k else v for k, v in enumerate(op)) for op in ops]
    closes = sum(op[0] == "close" for op in ops)
    return Panel(title, ops, [tuple(map(int, c)) for c in plan], len(ops),
                 [f"{len(ops)} operations ({closes} closes), plan {len(plan)} cells"])


def parse_response(ids: np.ndarray, rows: int, cols: int) -> tuple[list, list[int], list]:
    """(operations, token position after each operation, plan) of a response, by the verifier's grammar
    (cpp/verify.hpp): a leading ``reasoning`` skipped, parsing stops at ``end``/<|eos|>/<|pad|>, ``solution``
    skipped, malformed pieces skipped up to the next keyword, the plan the run of steps after the last operation.
    Coordinates are kept as written (they may lie outside the grid)."""
    vocab = vocab_for(rows, cols)
    first_cost, size = vocab.first_cost, len(vocab)
    ids = [int(t) for t in np.asarray(ids).tolist()]
    is_coord = lambda t: FIRST_COORD <= t < first_cost  # noqa: E731
    is_cost = lambda t: first_cost <= t < size  # noqa: E731
    ops, ends, plan = [], [], []
    k = 1 if ids and ids[0] == REASONING else 0
    n = len(ids)
    while k < n:
        t = ids[k]
        if t in (END, EOS, PAD):
            break
        if t in (CREATE, CLOSE) and k + 4 < n and is_coord(ids[k + 1]) and is_coord(ids[k + 2]) \
                and is_cost(ids[k + 3]) and is_cost(ids[k + 4]):
            ops.append(("create" if t == CREATE else "close", ids[k + 1] - FIRST_COORD, ids[k + 2] - FIRST_COORD,
                        ids[k + 3] - first_cost, ids[k + 4] - first_cost))
            k += 5
            ends.append(k)
            plan = []
            continue
        if t == PLAN and k + 2 < n and is_coord(ids[k + 1]) and is_coord(ids[k + 2]):
            plan.append((ids[k + 1] - FIRST_COORD, ids[k + 2] - FIRST_COORD))
            k += 3
            continue
        k += 1  # solution, or a malformed piece: skip its arguments
        if t != SOLUTION:
            while k < n and (is_coord(ids[k]) or is_cost(ids[k])):
                k += 1
    return ops, ends, plan


def invalid_operations(maze: Maze, ids: np.ndarray, ends: list[int], mode: str) -> dict[int, str]:
    """{operation index: the rule it breaks} for the first MAX_CHECKED_OPS operations of a response: the verifier
    run on every prefix ending after an operation (one batch, all prefixes sharing the token array)."""
    from . import _core
    from .verifier import ERROR_CODES

    n = min(len(ends), MAX_CHECKED_OPS)
    if n == 0:
        return {}
    codes = np.array([ERROR_CODES[r] for r in OP_RULES])
    stops = np.array([0] + list(ends[:n]), dtype=np.int64)
    walls = np.repeat(maze.walls.reshape(1, -1), n + 1, axis=0)
    cells = lambda c: np.repeat(np.array([c], dtype=np.int32), n + 1, axis=0)  # noqa: E731
    out = _core.verify_batch(walls, maze.rows, maze.cols, cells(maze.start), cells(maze.goal),
                             np.ascontiguousarray(ids, dtype=np.uint16), np.zeros(n + 1, dtype=np.int64), stops,
                             mode, 1)
    counts = out["error_counts"][:, codes].astype(np.int64)
    grew = np.diff(counts, axis=0) > 0
    return {int(k): OP_RULES[int(np.argmax(grew[k]))] for k in np.flatnonzero(grew.any(axis=1))}


def _error_cell(maze: Maze, ops: list, plan: list, name: str, at: int) -> tuple[int, int]:
    """The cell the first error concerns (kept inside the grid for drawing)."""
    if name == "operation_syntax_error":
        cell = ops[at - 1][1:3] if 0 < at <= len(ops) else maze.start
    elif at < len(ops):
        cell = ops[at][1:3]
    elif name == "illegal_start":
        cell = plan[0] if plan else maze.start
    elif name == "illegal_move":
        cell = next((b for a, b in zip(plan, plan[1:])
                     if not maze.free(*b) or abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1), plan[-1] if plan else maze.goal)
    elif name == "plan_goal_not_reached" and plan:
        cell = plan[-1]
    elif name == "missing_create" and ops:
        cell = ops[-1][1:3]
    else:
        cell = maze.goal
    return min(max(int(cell[0]), 0), maze.cols - 1), min(max(int(cell[1]), 0), maze.rows - 1)


def response_panel(maze: Maze, response, mode: str = "strict", costs: bool = True,
                   title: str = "response") -> Panel:
    """A response (text from ``reasoning`` on, or token ids) judged by the verifier in `mode`. costs=False: a
    ``correct_no_costs`` response, whose costs the verifier's :func:`~reasonless.verifier.restore_costs` puts back."""
    from .verifier import _as_token_ids, encode_response, restore_costs, verify

    rows, cols = maze.rows, maze.cols
    ids = encode_response(response, rows, cols) if isinstance(response, str) else _as_token_ids(response)
    walls = maze.walls.reshape(1, -1)
    start, goal = np.array([maze.start], np.int32), np.array([maze.goal], np.int32)
    if not costs:
        ids, _, _ = restore_costs(walls, start, goal, ids, np.array([0]), np.array([len(ids)]), rows, cols)
    ops, ends, plan = parse_response(ids, rows, cols)
    v = verify(walls, start, goal, [ids], rows=rows, cols=cols, mode=mode, threads=1)
    pv, po, tv = bool(v.plan_valid[0]), bool(v.plan_optimal[0]), bool(v.trace_valid[0])
    name = v.first_error_name(0)
    at = None if name is None else int(v.first_error_at[0])
    panel = Panel(title, ops, plan, len(ops) if at is None else min(at, len(ops)))
    panel.invalid = invalid_operations(maze, ids, ends, mode)
    panel.notes = [f"{mode} verifier: plan {'valid' if pv else 'invalid'}" + (" (optimal)" if po else "")
                   + f", trace {'valid' if tv else 'invalid'}",
                   f"{len(ops)} operations, plan {len(plan)} cells"]
    if name is not None:
        panel.first_error, panel.first_error_at = name, at
        panel.error_cell = _error_cell(maze, ops, plan, name, at)
        if name == "operation_syntax_error":
            where = f"before operation {at}"
        elif at < len(ops):
            kind, x, y, g, h = ops[at]
            where = f"at operation {at} ({kind} {x} {y} c{g} c{h})"
        else:
            where = f"at the end (after {len(ops)} operations)"
        panel.notes.append(f"first error: {name} {where}")
        panel.notes.append(f"replayed: operations 0-{panel.replayed - 1}" if panel.replayed else "replayed: none")
    if panel.invalid:
        more = "" if len(ends) <= MAX_CHECKED_OPS else f" (of the first {MAX_CHECKED_OPS})"
        panel.notes.append(f"invalid operations: {len(panel.invalid)}{more}, dashed")
    return panel


def astar_reference(maze: Maze, tie_break: str = "fifo") -> Panel:
    """Our A* on a problem that came without its trace."""
    from .corpus import Example, solve

    b = solve(maze.walls.reshape(1, -1), maze.rows, maze.cols, np.array([maze.start], np.int32),
              np.array([maze.goal], np.int32), np.zeros(1, np.uint64), 0, tie_break, 0, 1)
    ex = Example(0, maze.rows, maze.cols, maze.walls, maze.start, maze.goal, b.ops, b.plan)
    return reference_panel(maze, ex.operations, ex.plan, f"A* reference ({tie_break})")


# ---------------------------------------------------------------------------------------------------- sources
def _records(path: Path):
    """(record number, line number, object) of each non-blank line of a JSONL file."""
    from .verifier import jsonl_objects

    for k, (lineno, obj) in enumerate(jsonl_objects(path)):
        yield k, lineno, obj


def is_eval_record(obj) -> bool:
    return isinstance(obj, dict) and "suite" in obj and "response" in obj and ("paper" in obj or "strict" in obj)


def eval_summary(path: Path) -> dict:
    from .evaluate import summary_path

    sp = summary_path(path)
    if not sp.is_file():
        return {}
    try:
        return json.loads(sp.read_text())
    except ValueError as err:
        raise ValueError(f"{sp}: not valid JSON ({err})") from None


def suite_corpus_path(eval_path: Path, summary: dict, suite: str) -> Path | None:
    """The corpus a suite of an evaluation was drawn from (as its summary records it; a relative path is tried
    from the working directory, then from the eval file's folder), or None when it is not there."""
    recorded = (summary.get("suites", {}).get(suite) or {}).get("path")
    if not recorded:
        return None
    for p in (Path(recorded), eval_path.parent / recorded):
        if (p / "manifest.json").is_file():
            return p
    return None


def eval_scene(eval_path: Path, record: int, row: dict, summary: dict, mode: str | None = None,
               corpora: dict | None = None) -> Scene:
    """The scene of one eval record: the suite example's A* trace beside the model's response."""
    from .corpus import Corpus

    suite = row.get("suite")
    corpus_path = suite_corpus_path(eval_path, summary, suite)
    if corpus_path is None:
        recorded = (summary.get("suites", {}).get(suite) or {}).get("path")
        raise ValueError(f"{eval_path}: record {record}: the corpus of suite {suite!r} "
                         + (f"({recorded}) is not there" if recorded else "is not named in its summary file")
                         + "; render the suite corpus with --compare EVAL.jsonl instead")
    corpora = {} if corpora is None else corpora
    corpus = corpora.get(corpus_path) or corpora.setdefault(corpus_path, Corpus(corpus_path))
    meta = summary.get("meta", {})
    return compare_scene(corpus, row, eval_path, record, mode or meta.get("mode", "paper"), meta.get("arm"))


def compare_scene(corpus, row: dict, eval_path: Path, record: int, mode: str, arm: str | None) -> Scene:
    index = row.get("index")
    if not isinstance(index, int) or not 0 <= index < len(corpus):
        raise ValueError(f"{eval_path}: record {record}: index {index!r} is not an example of {corpus.path} "
                         f"({len(corpus)} examples)")
    ex = corpus[index]
    maze = maze_of(ex.rows, ex.cols, ex.walls, ex.start, ex.goal)
    resp = response_panel(maze, str(row.get("response", "")), mode, costs=arm != "correct_no_costs",
                          title=f"model response (arm {arm})" if arm else "model response")
    return Scene(maze, [reference_panel(maze, ex.operations, ex.plan), resp],
                 f"{eval_path.name} record {record}: suite {row.get('suite')} example {index}")


def _find_eval_record(path: Path, index: int, suite: str | None, corpus_dir: Path | None = None):
    """(record number, row, summary) of an eval file: record `index`, or (suite and/or corpus_dir given) the
    record of corpus index `index` in that suite / in the suite drawn from corpus_dir."""
    summary = eval_summary(path)
    by_position = suite is None and corpus_dir is None
    seen_suites = []
    for k, lineno, obj in _records(path):
        if by_position:
            if k == index:
                if not is_eval_record(obj):
                    raise ValueError(f"{path}:{lineno}: not a record of `reasonless eval`")
                return k, obj, summary
            continue
        if not is_eval_record(obj) or obj.get("index") != index:
            continue
        seen_suites.append(obj["suite"])
        if suite is not None and obj["suite"] != suite:
            continue
        if corpus_dir is not None:
            found = suite_corpus_path(path, summary, obj["suite"])
            if found is not None and found.resolve() != corpus_dir.resolve():
                continue
        return k, obj, summary
    if by_position:
        raise ValueError(f"{path}: no record {index} (records are numbered from 0, blank lines not counted)")
    where = f" of suite {suite!r}" if suite else ""
    where += f" drawn from {corpus_dir}" if corpus_dir is not None else ""
    raise ValueError(f"{path}: no record for example {index}{where}"
                     + (f" (example {index} is in suites {', '.join(sorted(set(seen_suites)))})" if seen_suites
                        else ""))


def _token_dir_scene(path: Path, index: int, mode: str) -> Scene:
    from .arms import token_layout
    from .corpus import Corpus
    from .data import check_token_dir
    from .verifier import parse_problem_text

    tokens, offsets, prompts, meta = check_token_dir(path)
    if not 0 <= index < len(prompts):
        raise ValueError(f"{path}: --index {index} outside 0..{len(prompts) - 1}")
    rows, cols, arm = int(meta["rows"]), int(meta["cols"]), str(meta.get("arm", "?"))
    seq = np.asarray(tokens[offsets[index]:offsets[index + 1]])
    try:
        walls, start, goal, _ = parse_problem_text(vocab_for(rows, cols).decode(seq[:prompts[index]]), rows, cols)
    except ValueError as err:
        raise ValueError(f"{path}: example {index}: {err}") from None
    maze = maze_of(rows, cols, walls, start, goal)
    panel = response_panel(maze, seq[prompts[index]:], mode, costs=token_layout(arm) != "no_costs",
                           title=f"arm {arm}")
    panels = [panel]
    src = Path(str(meta.get("corpus", "")))
    if arm not in ("correct", "correct_no_costs") and (src / "manifest.json").is_file():
        ex = Corpus(src)[index]
        if np.array_equal(ex.walls, maze.walls) and tuple(ex.start) == maze.start and tuple(ex.goal) == maze.goal:
            panels.insert(0, reference_panel(maze, ex.operations, ex.plan))
    return Scene(maze, panels, f"{path.name} (arm {arm}) example {index}")


def _jsonl_scene(path: Path, index: int, mode: str | None, suite: str | None, rows: int, cols: int) -> Scene:
    from .verifier import _read_example

    if suite is not None:
        k, row, summary = _find_eval_record(path, index, suite)
        return eval_scene(path, k, row, summary, mode)
    for k, lineno, obj in _records(path):
        if k != index:
            continue
        if is_eval_record(obj):
            return eval_scene(path, k, obj, eval_summary(path), mode)
        try:
            r, c, walls, start, goal, response = _read_example(obj, rows, cols)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
        maze = maze_of(r, c, walls, start, goal)
        mode = mode or "strict"
        if "text" in obj and "prompt" not in obj:
            return Scene(maze, [response_panel(maze, response, mode, title="the line's own trace")],
                         f"{path.name} record {k}")
        return Scene(maze, [astar_reference(maze), response_panel(maze, response, mode)], f"{path.name} record {k}")
    raise ValueError(f"{path}: no record {index} (records are numbered from 0, blank lines not counted)")


def load_scene(src: str | os.PathLike, index: int, compare: str | os.PathLike | None = None,
               mode: str | None = None, suite: str | None = None, rows: int = 30, cols: int = 30) -> Scene:
    """The scene of example `index` of `src` (see the module docstring for the kinds of source)."""
    from .corpus import Corpus

    if mode is not None and mode not in ("paper", "strict"):
        raise ValueError(f"unknown verifier mode {mode!r}; choose 'paper' or 'strict'")
    if index < 0:
        raise ValueError(f"--index {index}: must be 0 or more")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such corpus, token directory or JSONL file")
    if compare is not None and not (src / "manifest.json").is_file():
        raise ValueError(f"--compare needs a corpus as the source (the suite the evaluation was drawn from); "
                         f"{src} is not one")
    if (src / "manifest.json").is_file():
        corpus = Corpus(src)
        if index >= len(corpus):
            raise ValueError(f"{src}: --index {index} outside 0..{len(corpus) - 1}")
        if compare is not None:
            compare = Path(compare)
            k, row, summary = _find_eval_record(compare, index, suite, corpus_dir=src)
            arm = summary.get("meta", {}).get("arm")
            return compare_scene(corpus, row, compare, k, mode or summary.get("meta", {}).get("mode", "paper"), arm)
        ex = corpus[index]
        maze = maze_of(ex.rows, ex.cols, ex.walls, ex.start, ex.goal)
        tie = corpus.manifest.get("tie_break", "fifo")
        return Scene(maze, [reference_panel(maze, ex.operations, ex.plan, f"A* trace ({tie})")],
                     f"{src.name} example {index}")
    if src.is_dir():
        if (src / "meta.json").is_file():
            return _token_dir_scene(src, index, mode or "strict")
        raise ValueError(f"{src}: neither a corpus (manifest.json) nor a token directory (meta.json)")
    return _jsonl_scene(src, index, mode, suite, rows, cols)


# ---------------------------------------------------------------------------------------------------- drawing
def _num(v: float) -> str:
    v = round(float(v), 2)
    return str(int(v)) if v.is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")


class Drawing:
    """A list of shapes in pixel coordinates (y down), written as SVG or drawn with matplotlib."""

    def __init__(self, width: int, height: int, title: str = ""):
        self.width, self.height, self.title = int(width), int(height), title
        self.items: list[tuple] = []

    def rect(self, x, y, w, h, /, fill="none", stroke=None, width=0.0, dash=None, cls=None, **data):
        self.items.append(("rect", dict(x=x, y=y, w=w, h=h, fill=fill, stroke=stroke, width=width, dash=dash),
                           cls, data))

    def circle(self, cx, cy, r, /, fill="none", stroke=None, width=0.0, cls=None, **data):
        self.items.append(("circle", dict(cx=cx, cy=cy, r=r, fill=fill, stroke=stroke, width=width), cls, data))

    def polyline(self, points, /, stroke, width, cls=None, **data):
        self.items.append(("polyline", dict(points=list(points), stroke=stroke, width=width), cls, data))

    def line(self, x1, y1, x2, y2, stroke, width, cls=None):
        self.items.append(("line", dict(x1=x1, y1=y1, x2=x2, y2=y2, stroke=stroke, width=width), cls, {}))

    def text(self, x, y, s, size=12, anchor="start", fill=INK, bold=False, cls=None):
        self.items.append(("text", dict(x=x, y=y, s=str(s), size=size, anchor=anchor, fill=fill, bold=bold), cls,
                           {}))

    def group(self, cls, **data):
        self.items.append(("group", {}, cls, data))

    def end_group(self):
        self.items.append(("end", {}, None, {}))

    # --- SVG
    def svg(self) -> str:
        def attrs(pairs) -> str:
            return "".join(f' {k}="{escape(str(v), {chr(34): "&quot;"})}"' for k, v in pairs if v is not None)

        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
               f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">',
               f"<title>{escape(self.title)}</title>",
               f'<rect width="{self.width}" height="{self.height}" fill="{FREE}"/>']
        for kind, a, cls, data in self.items:
            extra = [("class", cls)] + [(f"data-{k.replace('_', '-')}", v) for k, v in data.items()]
            stroke = [("stroke", a.get("stroke")), ("stroke-width", _num(a["width"]) if a.get("stroke") else None)]
            if kind == "rect":
                out.append("<rect" + attrs([("x", _num(a["x"])), ("y", _num(a["y"])), ("width", _num(a["w"])),
                                            ("height", _num(a["h"])), ("fill", a["fill"])] + stroke
                                           + [("stroke-dasharray", a["dash"])] + extra) + "/>")
            elif kind == "circle":
                out.append("<circle" + attrs([("cx", _num(a["cx"])), ("cy", _num(a["cy"])), ("r", _num(a["r"])),
                                              ("fill", a["fill"])] + stroke + extra) + "/>")
            elif kind == "polyline":
                pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in a["points"])
                out.append("<polyline" + attrs([("points", pts), ("fill", "none")] + stroke
                                               + [("stroke-linejoin", "round"), ("stroke-linecap", "round")] + extra)
                           + "/>")
            elif kind == "line":
                out.append("<line" + attrs([("x1", _num(a["x1"])), ("y1", _num(a["y1"])), ("x2", _num(a["x2"])),
                                            ("y2", _num(a["y2"]))] + stroke + extra) + "/>")
            elif kind == "text":
                out.append("<text" + attrs([("x", _num(a["x"])), ("y", _num(a["y"])), ("font-size", _num(a["size"])),
                                            ("text-anchor", a["anchor"]), ("fill", a["fill"]),
                                            ("font-weight", "bold" if a["bold"] else None)] + extra)
                           + f">{escape(a['s'])}</text>")
            elif kind == "group":
                out.append("<g" + attrs(extra) + ">")
            else:
                out.append("</g>")
        out.append("</svg>")
        return "\n".join(out) + "\n"

    # --- PNG
    def png(self, path: str | os.PathLike) -> None:
        """Draws the same shapes with matplotlib (Agg) at 1 px per unit; no software version in the file."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Circle, Rectangle

        pt = 72.0 / 100.0  # points per pixel at 100 dpi
        fig = plt.figure(figsize=(self.width / 100.0, self.height / 100.0), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, self.width)
        ax.set_ylim(self.height, 0)
        ax.axis("off")
        fig.patch.set_facecolor(FREE)
        z = 0
        for kind, a, _, _ in self.items:
            z += 1
            edge = dict(edgecolor=a.get("stroke") or "none", linewidth=a.get("width", 0) * pt if a.get("stroke") else 0)
            if kind == "rect":
                ax.add_patch(Rectangle((a["x"], a["y"]), a["w"], a["h"], facecolor=a["fill"], zorder=z,
                                       linestyle="--" if a["dash"] else "-", **edge))
            elif kind == "circle":
                ax.add_patch(Circle((a["cx"], a["cy"]), a["r"], facecolor=a["fill"], zorder=z, **edge))
            elif kind in ("polyline", "line"):
                pts = a["points"] if kind == "polyline" else [(a["x1"], a["y1"]), (a["x2"], a["y2"])]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=a["stroke"], linewidth=a["width"] * pt,
                        solid_joinstyle="round", solid_capstyle="round", zorder=z)
            elif kind == "text":
                ax.text(a["x"], a["y"], a["s"], fontsize=a["size"] * pt, color=a["fill"], zorder=z,
                        ha={"start": "left", "middle": "center", "end": "right"}[a["anchor"]], va="baseline",
                        fontweight="bold" if a["bold"] else "normal", family="DejaVu Sans")
        fig.savefig(path, format="png", dpi=100, metadata={"Software": None}, facecolor=FREE)
        plt.close(fig)


def cell_size(rows: int, cols: int) -> int:
    return max(8, min(40, 480 // max(rows, cols)))


LEGEND = (("wall", "wall"), ("closed", "closed (light = early, dark = late)"), ("open", "created, never closed"),
          ("plan", "plan"), ("start", "start"), ("goal", "goal"), ("first-error", "first error"),
          ("invalid", "invalid operation"))
LEGEND_COLUMN = 250
PANEL_MIN_WIDTH = 320


def draw(scene: Scene) -> Drawing:
    """The scene's panels side by side at one scale, a title above and a legend below."""
    maze = scene.maze
    S = cell_size(maze.rows, maze.cols)
    margin, line = 16, 16
    grid_w, grid_h = maze.cols * S, maze.rows * S
    panel_w = max(grid_w, PANEL_MIN_WIDTH)
    notes = max(len(_wrapped(p.notes, panel_w)) for p in scene.panels)
    top = margin + 22 + 20
    legend_y = top + grid_h + 10 + notes * line + 14
    width = margin + len(scene.panels) * (panel_w + margin)
    shown = {"wall", "closed", "open", "plan", "start", "goal"}
    shown |= {"first-error"} if any(p.error_cell is not None for p in scene.panels) else set()
    shown |= {"invalid"} if any(p.invalid for p in scene.panels) else set()
    legend = [item for item in LEGEND if item[0] in shown]
    per_row = max(1, (width - margin) // LEGEND_COLUMN)
    legend_rows = -(-len(legend) // per_row)
    height = legend_y + legend_rows * 20 + margin
    d = Drawing(width, height, scene.title)
    d.text(margin, margin + 14, scene.title, size=14, bold=True, cls="scene-title")
    for k, panel in enumerate(scene.panels):
        _draw_panel(d, maze, panel, margin + k * (panel_w + margin), top, S, line)
    d.group("legend")
    for k, (cls, label) in enumerate(legend):
        x = margin + (k % per_row) * LEGEND_COLUMN
        y = legend_y + (k // per_row) * 20
        _swatch(d, cls, x, y - 11, 14)
        d.text(x + 20, y, label, size=11)
    d.end_group()
    return d


def _swatch(d: Drawing, cls: str, x: float, y: float, s: float) -> None:
    if cls == "wall":
        d.rect(x, y, s, s, fill=WALL)
    elif cls == "closed":
        for i in range(3):
            d.rect(x + i * s / 3, y, s / 3, s, fill=ramp(i / 2))
    elif cls == "open":
        d.rect(x + 1, y + 1, s - 2, s - 2, stroke=OPEN, width=2)
    elif cls == "plan":
        d.line(x, y + s / 2, x + s, y + s / 2, stroke=PLAN_COLOR, width=3)
    elif cls in ("start", "goal"):
        d.circle(x + s / 2, y + s / 2, s * 0.4, fill=START_COLOR if cls == "start" else GOAL_COLOR)
    elif cls == "first-error":
        d.circle(x + s / 2, y + s / 2, s * 0.42, stroke=ERROR_COLOR, width=2.5)
    else:
        d.rect(x + 1, y + 1, s - 2, s - 2, stroke=ERROR_COLOR, width=2, dash="3 2")


def _draw_panel(d: Drawing, maze: Maze, panel: Panel, x0: int, y0: int, S: int, line: int) -> None:
    cx = lambda x: x0 + x * S + S / 2  # noqa: E731
    cy = lambda y: y0 + y * S + S / 2  # noqa: E731
    d.group("panel", title=panel.title, ops=len(panel.ops), replayed=panel.replayed)
    d.text(x0, y0 - 8, panel.title, size=13, bold=True, cls="panel-title")
    d.rect(x0, y0, maze.cols * S, maze.rows * S, fill=FREE, stroke=INK, width=1, cls="grid")
    # replay: closes in order, creates that were never closed
    order: dict[tuple[int, int], int] = {}
    opened: dict[tuple[int, int], None] = {}
    for kind, x, y, _, _ in panel.ops[:panel.replayed]:
        if not maze.inside(x, y):
            continue
        if kind == "close":
            order.setdefault((x, y), len(order))
            opened.pop((x, y), None)
        elif (x, y) not in order:
            opened[(x, y)] = None
    last = max(len(order) - 1, 1)
    for (x, y), k in order.items():
        d.rect(x0 + x * S, y0 + y * S, S, S, fill=ramp(k / last), cls="closed", x=x, y=y, order=k)
    for y, x in zip(*np.nonzero(maze.walls)):
        d.rect(x0 + int(x) * S, y0 + int(y) * S, S, S, fill=WALL, cls="wall", x=int(x), y=int(y))
    for i in range(1, maze.cols):
        d.line(x0 + i * S, y0, x0 + i * S, y0 + maze.rows * S, stroke=GRID_LINE, width=0.5)
    for j in range(1, maze.rows):
        d.line(x0, y0 + j * S, x0 + maze.cols * S, y0 + j * S, stroke=GRID_LINE, width=0.5)
    for x, y in opened:
        d.rect(x0 + x * S + 1.5, y0 + y * S + 1.5, S - 3, S - 3, stroke=OPEN, width=2, cls="open", x=x, y=y)
    for k, rule in sorted(panel.invalid.items()):
        kind, x, y = panel.ops[k][:3]
        x, y = min(max(x, 0), maze.cols - 1), min(max(y, 0), maze.rows - 1)
        d.rect(x0 + x * S + 3, y0 + y * S + 3, S - 6, S - 6, stroke=ERROR_COLOR, width=2, dash="3 2", cls="invalid",
               op=k, code=rule, x=x, y=y)
    # the plan: consecutive steps inside the grid
    run: list = []
    for step in list(panel.plan) + [None]:
        if step is not None and maze.inside(*step):
            run.append((cx(step[0]), cy(step[1])))
            continue
        if len(run) >= 2:
            d.polyline(run, stroke=PLAN_COLOR, width=max(2.0, S / 5), cls="plan")
        elif len(run) == 1:
            d.circle(*run[0], max(2.0, S / 8), fill=PLAN_COLOR, cls="plan")
        run = []
    for (x, y), color, letter, cls in ((maze.start, START_COLOR, "S", "start"), (maze.goal, GOAL_COLOR, "G", "goal")):
        d.circle(cx(x), cy(y), S * 0.32, fill=color, stroke=FREE, width=1.5, cls=cls, x=x, y=y)
        if S >= 14:
            d.text(cx(x), cy(y) + S * 0.13, letter, size=round(S * 0.36), anchor="middle", fill=FREE, bold=True)
    if panel.error_cell is not None:
        x, y = panel.error_cell
        d.circle(cx(x), cy(y), S * 0.46, stroke=ERROR_COLOR, width=max(2.5, S / 8), cls="first-error",
                 op=panel.first_error_at, code=panel.first_error, x=x, y=y)
    for k, (note, color) in enumerate(_wrapped(panel.notes, max(maze.cols * S, PANEL_MIN_WIDTH))):
        d.text(x0, y0 + maze.rows * S + 10 + (k + 1) * line - 4, note, size=12, fill=color, cls="note")
    d.end_group()


def _wrapped(notes: list[str], width: int) -> list[tuple[str, str]]:
    """(line, colour) of a panel's notes wrapped to its width (12 px text, 7.5 px a character at most); the first
    error's lines in the error colour."""
    out = []
    for note in notes:
        color = ERROR_COLOR if note.startswith("first error") else INK
        out += [(piece, color) for piece in textwrap.wrap(note, max(20, int(width / 7.5)))]
    return out


def render_svg(scene: Scene) -> str:
    return draw(scene).svg()


def write(scene: Scene, out: str | os.PathLike) -> Path:
    """Writes the scene as SVG, or PNG when `out` ends in .png (needs matplotlib); atomically."""
    from .atomic import atomic_file

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise ValueError(f"{out}: the output must end in .svg or .png")
    if not out.parent.is_dir() and str(out.parent):
        raise FileNotFoundError(f"{out}: the folder {out.parent} does not exist")
    drawing = draw(scene)
    if suffix == ".svg":
        with atomic_file(out, "w") as f:
            f.write(drawing.svg())
        return out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"{out}: PNG output needs matplotlib (pip install matplotlib); write .svg instead") from None
    with atomic_file(out, "wb") as f:
        drawing.png(f)
    return out
