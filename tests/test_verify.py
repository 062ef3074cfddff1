"""The verifier (reasonless.verifier and _core.verify_batch) against hand-built responses, the paper tools' data, an
independent pure-Python A* and an independent pure-Python reference verifier (both written here from docs/design.md §5
and the grammar in cpp/verify.hpp, sharing no code with the C++)."""
from __future__ import annotations

import json
import random
import re
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonless import _core
from reasonless.verifier import (ERROR_NAMES, TRACE_ERROR_CODES, Verdicts, encode_response, format_summary,
                               parse_problem_text, verify, verify_jsonl, verify_texts)
from reasonless.vocab import (CLOSE, CREATE, END, EOS, FIRST_COORD, PAD, PLAN, REASONING, SOLUTION, UNK, Vocab,
                              vocab_for)

DATA = Path(__file__).parent / "data" / "paper-tools"
PLAN_ERRORS = {"plan_syntax_error", "illegal_start", "illegal_move", "plan_goal_not_reached"}
UNREACHABLE = {"plan_extraction_error", "extracted_plan_invalid"}
DIRS = ((0, -1), (1, 0), (0, 1), (-1, 0))  # up, right, down, left


# ---------------------------------------------------------------------------------------------------------------
# Problems, an independent A* and rendering
# ---------------------------------------------------------------------------------------------------------------

class Maze:
    def __init__(self, rows, cols, walls, start, goal):
        self.rows, self.cols = rows, cols
        self.walls = set(walls)  # {(x, y)}
        self.start, self.goal = tuple(start), tuple(goal)

    def free(self, x, y):
        return 0 <= x < self.cols and 0 <= y < self.rows and (x, y) not in self.walls

    def wall_array(self):
        w = np.zeros(self.rows * self.cols, dtype=np.uint8)
        for x, y in self.walls:
            w[y * self.cols + x] = 1
        return w

    def h(self, c):
        return abs(c[0] - self.goal[0]) + abs(c[1] - self.goal[1])


def astar(m: Maze, h_override=None):
    """fifo A*: the open list in insertion order, close the first entry with strictly lowest f; neighbours up,
    right, down, left; no create for the start; an improved g re-creates and keeps the entry's place.
    h_override {cell: h} replaces the Manhattan distance of some cells (to build misleading traces)."""
    if h_override:
        m = Maze(m.rows, m.cols, m.walls, m.start, m.goal)
        manhattan = m.h
        m.h = lambda c: h_override.get(c, manhattan(c))
    open_list = [m.start]
    g = {m.start: 0}
    parent = {}
    closed = set()
    ops = []
    reached = False
    while open_list:
        best = 0
        for k in range(1, len(open_list)):
            c = open_list[k]
            if g[c] + m.h(c) < g[open_list[best]] + m.h(open_list[best]):
                best = k
        cur = open_list.pop(best)
        ops.append(("close", cur[0], cur[1], g[cur], m.h(cur)))
        closed.add(cur)
        if cur == m.goal:
            reached = True
            break
        for dx, dy in DIRS:
            nb = (cur[0] + dx, cur[1] + dy)
            if not m.free(*nb) or nb in closed:
                continue
            if nb not in g or g[cur] + 1 < g[nb]:
                g[nb] = g[cur] + 1
                parent[nb] = cur
                ops.append(("create", nb[0], nb[1], g[nb], m.h(nb)))
                if nb not in open_list:
                    open_list.append(nb)
    plan = []
    if reached:
        c = m.goal
        while c != m.start:
            plan.append(c)
            c = parent[c]
        plan.append(m.start)
        plan.reverse()
    return ops, plan


def bfs_len(m: Maze):
    """Cells on a shortest start→goal path, or None."""
    dist = {m.start: 1}
    q = deque([m.start])
    while q:
        c = q.popleft()
        if c == m.goal:
            return dist[c]
        for dx, dy in DIRS:
            nb = (c[0] + dx, c[1] + dy)
            if m.free(*nb) and nb not in dist:
                dist[nb] = dist[c] + 1
                q.append(nb)
    return None


def render(ops, plan, solution=True, end=True):
    words = ["reasoning"]
    for kind, x, y, g, h in ops:
        words += [kind, str(x), str(y), f"c{g}", f"c{h}"]
    if solution:
        words.append("solution")
    for x, y in plan:
        words += ["plan", str(x), str(y)]
    if end:
        words.append("end")
    return " ".join(words)


def random_maze(rng: random.Random, rows, cols, density) -> Maze:
    cells = [(x, y) for y in range(rows) for x in range(cols)]
    walls = {c for c in cells if rng.random() < density}
    free = [c for c in cells if c not in walls]
    if len(free) < 2:
        walls.discard(cells[0])
        walls.discard(cells[-1])
        free = [c for c in cells if c not in walls]
    s, g = rng.sample(free, 2)
    return Maze(rows, cols, walls, s, g)


def maze_from_text(text, rows, cols) -> tuple[Maze, str]:
    walls, s, g, resp = parse_problem_text(text, rows, cols)
    cells = np.flatnonzero(walls)
    return Maze(rows, cols, [(int(c % cols), int(c // cols)) for c in cells], s, g), resp


def run(mazes, responses, mode, threads=0) -> Verdicts:
    rows, cols = mazes[0].rows, mazes[0].cols
    return verify(np.stack([m.wall_array() for m in mazes]), np.array([m.start for m in mazes], dtype=np.int32),
                  np.array([m.goal for m in mazes], dtype=np.int32), responses, rows=rows, cols=cols, mode=mode,
                  threads=threads)


def errors_of(v: Verdicts, i: int) -> dict:
    return {ERROR_NAMES[c]: int(k) for c, k in enumerate(v.error_counts[i]) if k}


# ---------------------------------------------------------------------------------------------------------------
# The reference verifier: words, lists and dicts, like the authors' script, plus the strict rules
# ---------------------------------------------------------------------------------------------------------------

def reference(m: Maze, ids, mode: str) -> dict:
    vocab = vocab_for(m.rows, m.cols)
    strict = mode == "strict"
    words = [vocab.words[t] if t < len(vocab) else "<|unk|>" for t in (int(t) for t in ids)]

    def is_coord(w):
        return w.isdigit() and w in vocab.ids

    def is_cost(w):
        return w.startswith("c") and w[1:].isdigit() and w in vocab.ids

    def is_arg(w):
        return is_coord(w) or is_cost(w)

    # ---- parse into items ----
    items = []  # ("syntax", name) | ("op", kind, x, y, g, h) | ("step", x, y)
    i = 1 if words[:1] == ["reasoning"] else 0
    while i < len(words):
        w = words[i]
        if w in ("end", "<|eos|>", "<|pad|>"):
            break
        if w == "solution":
            i += 1
        elif w in ("create", "close"):
            a = words[i + 1:i + 5]
            if len(a) == 4 and is_coord(a[0]) and is_coord(a[1]) and is_cost(a[2]) and is_cost(a[3]):
                items.append(("op", w, int(a[0]), int(a[1]), int(a[2][1:]), int(a[3][1:])))
                i += 5
            else:
                items.append(("syntax", "operation_syntax_error"))
                i += 1
                while i < len(words) and is_arg(words[i]):
                    i += 1
        elif w == "plan":
            a = words[i + 1:i + 3]
            if len(a) == 2 and is_coord(a[0]) and is_coord(a[1]):
                items.append(("step", int(a[0]), int(a[1])))
                i += 3
            else:
                items.append(("syntax", "plan_syntax_error"))
                i += 1
                while i < len(words) and is_arg(words[i]):
                    i += 1
        else:
            items.append(("syntax", "operation_syntax_error"))
            i += 1
            while i < len(words) and is_arg(words[i]):
                i += 1

    # ---- simulate ----
    errors = []
    open_list = [(m.start[0], m.start[1], 0, m.h(m.start))]
    closed = set()
    g_score, parent = {}, {}
    last = None  # (x, y, g)
    expected = set()
    goal_closed = False
    plan_bad = False
    plan = []
    pos = 0
    for item in items:
        if item[0] == "syntax":
            errors.append((item[1], pos))
            plan_bad |= item[1] == "plan_syntax_error"
            continue
        if item[0] == "step":
            plan.append(item[1:])
            continue
        _, kind, x, y, g, h = item
        p = pos
        pos += 1
        if plan:
            if strict:
                errors.append(("operation_syntax_error", p))
            plan = []

        def e(name):
            errors.append((name, p))

        if strict and goal_closed:
            e("after_goal")
            continue
        if not (0 <= x < m.cols and 0 <= y < m.rows):
            e("invalid_coordinates")
            continue
        if (x, y) in m.walls:
            e("create_close_wall")
            continue
        right_h = h == m.h((x, y))
        if kind == "create":
            if last is None:
                e("first_create_not_last_closed")
                continue
            if abs(x - last[0]) + abs(y - last[1]) != 1:
                e("create_non_neighbor")
                continue
            if (x, y) in closed:
                e("create_already_closed")
                continue
            if strict and g != last[2] + 1:
                e("wrong_g")
                continue
            if strict and not right_h:
                e("wrong_h")
                continue
            if strict and (x, y) not in expected:
                e("unexpected_create")
                continue
            expected.discard((x, y))
            found = [k for k, o in enumerate(open_list) if o[:2] == (x, y)]
            if found:
                if g < open_list[found[0]][2]:
                    open_list[found[0]] = (x, y, g, h)
            else:
                open_list.append((x, y, g, h))
            if (x, y) not in g_score or g < g_score[(x, y)]:
                g_score[(x, y)] = g
                parent[(x, y)] = last[:2]
        else:
            if strict and not right_h:
                e("wrong_h")
                continue
            if (x, y, g, h) not in open_list:
                e("close_not_in_open_list")
                continue
            if g + h != min(o[2] + o[3] for o in open_list):
                e("close_not_lowest_f_value")
                continue
            if strict:
                errors.extend([("missing_create", p)] * len(expected))
            open_list.remove((x, y, g, h))
            closed.add((x, y))
            last = (x, y, g)
            expected = set()
            if (x, y) == m.goal:
                goal_closed = True
            else:
                for dx, dy in DIRS:
                    nb = (x + dx, y + dy)
                    if not m.free(*nb) or nb in closed:
                        continue
                    best = [o[2] for o in open_list if o[:2] == nb]
                    if not best or g + 1 < best[0]:
                        expected.add(nb)

    n_ops = pos
    shortest = bfs_len(m)
    if strict and not goal_closed:
        errors.extend([("missing_create", n_ops)] * len(expected))
    if not goal_closed and (not strict or open_list or shortest is not None):
        errors.append(("goal_not_reached", n_ops))
    path = []
    if goal_closed:
        c = m.goal
        while c != m.start:
            path.append(c)
            if c not in parent:
                errors.append(("plan_extraction_error", n_ops))
                break
            c = parent[c]
        path.append(m.start)
        path.reverse()

    def plan_error(cells):
        if cells[0] != m.start:
            return "illegal_start"
        for a, b in zip(cells, cells[1:]):
            if not m.free(*b) or abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1:
                return "illegal_move"
        return None if cells[-1] == m.goal else "plan_goal_not_reached"

    if not plan_bad and not plan:
        errors.append(("plan_syntax_error", n_ops))
        plan_bad = True
    plan_valid = False
    if not plan_bad:
        if len(path) != len(plan):
            errors.append(("plan_length_mismatch", n_ops))
        elif plan_error(path):
            errors.append(("extracted_plan_invalid", n_ops))
        elif strict and path != plan:
            errors.append(("plan_differs_from_trace", n_ops))
        pe = plan_error(plan)
        if pe:
            errors.append((pe, n_ops))
        plan_valid = pe is None
    return {
        "plan_valid": plan_valid,
        "plan_optimal": plan_valid and len(plan) == shortest,
        "trace_valid": not any(name not in PLAN_ERRORS for name, _ in errors),
        "first_error": errors[0][0] if errors else None,
        "first_error_at": errors[0][1] if errors else None,
        "errors": dict(Counter(name for name, _ in errors)),
        "n_ops": n_ops,
        "plan_len": len(plan),
    }


def check_against_reference(mazes, token_lists, mode, label=""):
    """C++ verdicts equal the reference's on every example; returns the C++ verdicts."""
    v = run(mazes, token_lists, mode)
    for i, d in enumerate(v.per_example()):
        ref = reference(mazes[i], token_lists[i], mode)
        got = {k: d[k] for k in ("plan_valid", "plan_optimal", "trace_valid", "first_error", "first_error_at",
                                 "n_ops", "plan_len")}
        got["errors"] = d["errors"]
        if got != ref:
            text = " ".join(vocab_for(mazes[i].rows, mazes[i].cols).words[t] if t < len(
                vocab_for(mazes[i].rows, mazes[i].cols)) else "?" for t in token_lists[i])
            pytest.fail(f"{label} example {i} ({mode}): C++ {got} != reference {ref}\nmaze {mazes[i].rows}x"
                        f"{mazes[i].cols} start {mazes[i].start} goal {mazes[i].goal} walls "
                        f"{sorted(mazes[i].walls)}\nresponse {text}")
    return v


# ---------------------------------------------------------------------------------------------------------------
# Error codes, one hand-built response each
# ---------------------------------------------------------------------------------------------------------------

# rows 5, cols 4 (coordinates 0..4, so x = 4 is a coordinate token outside the grid), wall at (1, 1):
#   y=0  S . G .
#   y=1  . # . .
#   y=2..4 free
SMALL = Maze(5, 4, [(1, 1)], (0, 0), (2, 0))
C00 = "close 0 0 c0 c2"
C10 = "close 1 0 c1 c1"
C20 = "close 2 0 c2 c0"
MK10 = "create 1 0 c1 c1"
MK01 = "create 0 1 c1 c3"
MK20 = "create 2 0 c2 c0"
PLAN_TEXT = "solution plan 0 0 plan 1 0 plan 2 0 end"
VALID = f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}"
# 4x4 without walls, start (0, 0), goal (1, 1): two shortest paths; A* (fifo) takes the one through (1, 0).
OPEN = Maze(4, 4, [], (0, 0), (1, 1))
OPEN_TRACE = "reasoning close 0 0 c0 c2 create 1 0 c1 c1 create 0 1 c1 c1 close 1 0 c1 c1 create 2 0 c2 c2 " \
             "create 1 1 c2 c0 close 1 1 c2 c0"

# (maze, response, {mode: (first error, first_error_at, {error: count})}); "both" for both modes.
CASES = {
    "valid": (SMALL, VALID, {"both": (None, None, {})}),
    "operation_syntax_error": (SMALL, f"reasoning {C00} wall {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                               {"both": ("operation_syntax_error", 1, {"operation_syntax_error": 1})}),
    "operation_syntax_error_truncated_op": (
        SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} create 3 0 c3 {PLAN_TEXT}",
        {"both": ("operation_syntax_error", 6, {"operation_syntax_error": 1})}),
    "plan_syntax_error": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 0 plan 1 "
                                 "plan 2 0 end",
                          {"both": ("plan_syntax_error", 6, {"plan_syntax_error": 1})}),
    "plan_syntax_error_empty": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution end",
                                {"both": ("plan_syntax_error", 6, {"plan_syntax_error": 1})}),
    "invalid_coordinates": (SMALL, f"reasoning {C00} create 4 0 c1 c2 {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                            {"both": ("invalid_coordinates", 1, {"invalid_coordinates": 1})}),
    "create_close_wall": (SMALL, f"reasoning {C00} {MK10} create 1 1 c1 c2 {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                          {"both": ("create_close_wall", 2, {"create_close_wall": 1})}),
    "first_create_not_last_closed": (
        SMALL, f"reasoning {MK10} {C00} {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
        {"both": ("first_create_not_last_closed", 0, {"first_create_not_last_closed": 1})}),
    "create_non_neighbor": (SMALL, f"reasoning {C00} create 0 2 c1 c2 {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                            {"both": ("create_non_neighbor", 1, {"create_non_neighbor": 1})}),
    "create_already_closed": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} create 0 0 c2 c2 {MK20} {C20} {PLAN_TEXT}",
                              {"both": ("create_already_closed", 4, {"create_already_closed": 1})}),
    "close_not_in_open_list": (SMALL, f"reasoning {C00} {MK10} {MK01} close 1 0 c2 c1 {C10} {MK20} {C20} {PLAN_TEXT}",
                               {"both": ("close_not_in_open_list", 3, {"close_not_in_open_list": 1})}),
    "close_not_lowest_f_value": (
        SMALL, f"reasoning {C00} {MK10} {MK01} close 0 1 c1 c3 {C10} {MK20} {C20} {PLAN_TEXT}",
        {"both": ("close_not_lowest_f_value", 3, {"close_not_lowest_f_value": 1})}),
    # A truncated trace: the plan cannot match an extracted path that does not exist.
    "goal_not_reached": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {PLAN_TEXT}",
                         {"both": ("goal_not_reached", 5, {"goal_not_reached": 1, "plan_length_mismatch": 1})}),
    "goal_not_reached_stopped_early": (
        SMALL, f"reasoning {C00} {MK10} {MK01} {C10} solution end",
        {"paper": ("goal_not_reached", 4, {"goal_not_reached": 1, "plan_syntax_error": 1}),
         "strict": ("missing_create", 4, {"missing_create": 1, "goal_not_reached": 1, "plan_syntax_error": 1})}),
    "plan_length_mismatch": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 0 plan 1 0 "
                                    "plan 2 0 plan 1 0 plan 2 0 end",
                             {"both": ("plan_length_mismatch", 6, {"plan_length_mismatch": 1})}),
    "illegal_start": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 1 plan 0 0 "
                             "plan 1 0 end",
                      {"paper": ("illegal_start", 6, {"illegal_start": 1}),
                       "strict": ("plan_differs_from_trace", 6, {"plan_differs_from_trace": 1, "illegal_start": 1})}),
    "illegal_move": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 0 plan 1 1 plan 2 0 end",
                     {"paper": ("illegal_move", 6, {"illegal_move": 1}),
                      "strict": ("plan_differs_from_trace", 6, {"plan_differs_from_trace": 1, "illegal_move": 1})}),
    "illegal_move_outside_grid": (
        SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 0 plan 4 0 plan 2 0 end",
        {"paper": ("illegal_move", 6, {"illegal_move": 1}),
         "strict": ("plan_differs_from_trace", 6, {"plan_differs_from_trace": 1, "illegal_move": 1})}),
    "plan_goal_not_reached": (
        SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} solution plan 0 0 plan 1 0 plan 0 0 end",
        {"paper": ("plan_goal_not_reached", 6, {"plan_goal_not_reached": 1}),
         "strict": ("plan_differs_from_trace", 6, {"plan_differs_from_trace": 1, "plan_goal_not_reached": 1})}),
    # The wrong create comes before the right one, so only it is wrong in strict mode; paper takes it and then
    # the lower g of the right one.
    "wrong_g": (SMALL, f"reasoning {C00} create 1 0 c2 c1 {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                {"strict": ("wrong_g", 1, {"wrong_g": 1}), "paper": (None, None, {})}),
    # Paper keeps the first entry's h (the second create's g is not lower), so the close then misses it, and
    # the rest of the trace follows from a node that was never closed.
    "wrong_h": (SMALL, f"reasoning {C00} create 1 0 c1 c2 {MK10} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                {"strict": ("wrong_h", 1, {"wrong_h": 1}),
                 "paper": ("close_not_in_open_list", 4, {"close_not_in_open_list": 2, "create_non_neighbor": 1,
                                                         "goal_not_reached": 1, "plan_length_mismatch": 1})}),
    "wrong_h_close": (SMALL, f"reasoning {C00} {MK10} {MK01} close 1 0 c1 c2 {C10} {MK20} {C20} {PLAN_TEXT}",
                      {"strict": ("wrong_h", 3, {"wrong_h": 1}),
                       "paper": ("close_not_in_open_list", 3, {"close_not_in_open_list": 1})}),
    "unexpected_create": (SMALL, f"reasoning {C00} {MK10} {MK01} {MK01} {C10} {MK20} {C20} {PLAN_TEXT}",
                          {"strict": ("unexpected_create", 3, {"unexpected_create": 1}), "paper": (None, None, {})}),
    "missing_create": (SMALL, f"reasoning {C00} {MK10} {C10} {MK20} {C20} {PLAN_TEXT}",
                       {"strict": ("missing_create", 2, {"missing_create": 1}), "paper": (None, None, {})}),
    "after_goal": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} close 0 1 c1 c3 {PLAN_TEXT}",
                   {"strict": ("after_goal", 6, {"after_goal": 1}), "paper": (None, None, {})}),
    "plan_differs_from_trace": (OPEN, f"{OPEN_TRACE} solution plan 0 0 plan 0 1 plan 1 1 end",
                                {"strict": ("plan_differs_from_trace", 7, {"plan_differs_from_trace": 1}),
                                 "paper": (None, None, {})}),
    # A plan written before more operations is dropped; strict calls the stray steps a syntax error.
    "plan_before_operations": (SMALL, f"reasoning {C00} {MK10} {MK01} plan 0 0 {C10} {MK20} {C20} {PLAN_TEXT}",
                               {"strict": ("operation_syntax_error", 3, {"operation_syntax_error": 1}),
                                "paper": (None, None, {})}),
    # g of the goal one too high in both its create and its close: paper sees nothing wrong (and the plan is
    # still optimal: optimality comes from a BFS, not from the trace's g).
    "consistent_wrong_g": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} create 2 0 c3 c0 close 2 0 c3 c0 {PLAN_TEXT}",
                           {"paper": (None, None, {}),
                            "strict": ("wrong_g", 4, {"wrong_g": 1, "close_not_in_open_list": 1, "missing_create": 1,
                                                      "goal_not_reached": 1, "plan_length_mismatch": 1})}),
    "start_equals_goal": (Maze(4, 4, [], (2, 1), (2, 1)), "reasoning close 2 1 c0 c0 solution plan 2 1 end",
                          {"both": (None, None, {})}),
    # Everything after `end` (or <|eos|>) is ignored; `solution` is optional.
    "text_after_end": (SMALL, f"reasoning {C00} {MK10} {MK01} {C10} {MK20} {C20} plan 0 0 plan 1 0 plan 2 0 end "
                              "wall 1 2 <|unk|> create", {"both": (None, None, {})}),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_error_code_cases(name, mode):
    maze, text, expect = CASES[name]
    want = expect.get(mode, expect.get("both"))
    v = run([maze], [text], mode)
    d = next(v.per_example())
    assert (d["first_error"], d["first_error_at"], d["errors"]) == want, text
    trace_errors = {k for k in want[2] if k not in PLAN_ERRORS}
    plan_errors = {k for k in want[2] if k in PLAN_ERRORS}
    assert d["trace_valid"] == (not trace_errors)
    assert d["plan_valid"] == (not plan_errors)
    assert d["plan_optimal"] == (not plan_errors and d["plan_len"] == bfs_len(maze))
    # The independent reference agrees on the hand-built cases too.
    ref = reference(maze, encode_response(text, maze.rows, maze.cols), mode)
    assert (ref["first_error"], ref["first_error_at"], ref["errors"]) == want
    assert {k: d[k] for k in ref if k != "errors"} == {k: v for k, v in ref.items() if k != "errors"}


def test_every_reachable_code_has_a_case():
    seen = set()
    for _, _, expect in CASES.values():
        for first, _, errs in expect.values():
            seen |= set(errs)
    assert set(ERROR_NAMES) - seen == UNREACHABLE


def test_unreachable_codes_are_really_unreachable():
    """plan_extraction_error and extracted_plan_invalid (names kept from the authors' validator) cannot fire: the
    start is necessarily the first node closed and is never created, a created node's parent is the node closed
    last, which is a free 4-neighbour closed before it, so parent links from a closed goal always walk back to the
    start along free neighbours. The mutation and property tests below count them and find none; this checks the
    premise on a run where every trace-level rule is broken at least once."""
    rng = random.Random(5)
    mazes, texts = [], []
    for _ in range(200):
        m = random_maze(rng, 6, 7, 0.2)
        ops, plan = astar(m)
        ops = list(ops)
        rng.shuffle(ops)
        mazes.append(m)
        texts.append(render(ops, plan))
    for mode in ("paper", "strict"):
        v = run(mazes, texts, mode)
        for name in UNREACHABLE:
            assert v.error_counts[:, ERROR_NAMES.index(name)].sum() == 0
        assert v.error_counts.sum() > 0


def test_error_names_and_trace_codes():
    assert len(ERROR_NAMES) == 22 and len(set(ERROR_NAMES)) == 22
    assert {ERROR_NAMES[c] for c in range(22) if c not in TRACE_ERROR_CODES} == PLAN_ERRORS
    for name in ("operation_syntax_error", "plan_syntax_error", "invalid_coordinates", "create_close_wall",
                 "first_create_not_last_closed", "create_non_neighbor", "create_already_closed",
                 "close_not_in_open_list", "close_not_lowest_f_value", "goal_not_reached", "plan_extraction_error",
                 "plan_length_mismatch", "extracted_plan_invalid", "illegal_start", "illegal_move",
                 "plan_goal_not_reached", "wrong_g", "wrong_h", "unexpected_create", "missing_create", "after_goal",
                 "plan_differs_from_trace"):
        assert name in ERROR_NAMES


# ---------------------------------------------------------------------------------------------------------------
# Valid traces, unsolvable mazes, the paper tools' data
# ---------------------------------------------------------------------------------------------------------------

def test_paper_accepts_misleading_h():
    """A wrong h steers A* onto a detour: paper accepts the trace, the plan is valid but not optimal (optimality
    is measured against a BFS, never taken from the trace's g); strict rejects the wrong h."""
    walls = [(1, 1), (3, 0), (3, 1), (3, 2), (3, 3), (0, 3), (1, 3), (2, 3)]
    m = Maze(4, 4, walls, (0, 0), (2, 0))
    ops, plan = astar(m, h_override={(1, 0): 9})
    assert len(plan) == 7 and bfs_len(m) == 3
    text = render(ops, plan)
    d = next(run([m], [text], "paper").per_example())
    assert (d["trace_valid"], d["plan_valid"], d["plan_optimal"], d["first_error"]) == (True, True, False, None)
    d = next(run([m], [text], "strict").per_example())
    assert (d["trace_valid"], d["plan_valid"], d["plan_optimal"], d["first_error"]) == (False, True, False, "wrong_h")


def test_unsolvable_maze():
    # The start is walled in: the strict trace exhausts the open list and the plan is empty.
    m = Maze(4, 5, [(1, 0), (0, 1), (1, 1)], (0, 0), (3, 3))
    text = "reasoning close 0 0 c0 c6 solution end"
    d = next(run([m], [text], "strict").per_example())
    assert (d["trace_valid"], d["plan_valid"], d["first_error"], d["errors"]) == (
        True, False, "plan_syntax_error", {"plan_syntax_error": 1})
    d = next(run([m], [text], "paper").per_example())
    assert (d["trace_valid"], d["first_error"], d["errors"]) == (
        False, "goal_not_reached", {"goal_not_reached": 1, "plan_syntax_error": 1})
    # A trace that stops before the open list is empty did not prove anything.
    m2 = Maze(4, 5, [(2, 0), (2, 1), (2, 2), (2, 3)], (0, 0), (4, 0))
    ops, plan = astar(m2)
    assert plan == [] and len(ops) > 3
    d = next(run([m2], [render(ops[:3], [])], "strict").per_example())
    assert d["first_error"] == "goal_not_reached" and not d["trace_valid"]
    d = next(run([m2], [render(ops, [])], "strict").per_example())
    assert d["trace_valid"] and d["errors"] == {"plan_syntax_error": 1}


def _random_valid_set(seed, count, sizes, densities):
    rng = random.Random(seed)
    mazes, texts, plans = [], [], []
    for _ in range(count):
        m = random_maze(rng, rng.choice(sizes), rng.choice(sizes), rng.choice(densities))
        ops, plan = astar(m)
        mazes.append(m)
        texts.append(render(ops, plan, solution=rng.random() < 0.8, end=rng.random() < 0.8))
        plans.append(plan)
    return mazes, texts, plans


def test_valid_traces_random_mazes():
    mazes, texts, plans = _random_valid_set(1, 260, [4, 5, 7, 8, 11, 16, 23, 30, 40, 64], [0.0, 0.1, 0.25, 0.35, 0.45])
    by_size = {}
    for k, m in enumerate(mazes):
        by_size.setdefault((m.rows, m.cols), []).append(k)
    n_unsolvable = 0
    for idx in by_size.values():
        ms, ts = [mazes[k] for k in idx], [texts[k] for k in idx]
        for mode in ("paper", "strict"):
            v = run(ms, ts, mode)
            for j, k in enumerate(idx):
                if plans[k]:
                    assert v.plan_valid[j] and v.plan_optimal[j] and v.trace_valid[j], (mode, errors_of(v, j))
                    assert v.first_error[j] == -1 and v.plan_len[j] == len(plans[k]) == bfs_len(mazes[k])
                else:
                    n_unsolvable += mode == "strict"
                    want = {"plan_syntax_error": 1} if mode == "strict" else {"goal_not_reached": 1,
                                                                              "plan_syntax_error": 1}
                    assert errors_of(v, j) == want
                    assert v.trace_valid[j] == (mode == "strict") and not v.plan_valid[j]
    assert n_unsolvable >= 5  # the dense mazes give some


def _fixture_lines():
    for path in sorted(DATA.glob("*/*.jsonl")):
        m = re.search(r"_(\d+)x(\d+)\.jsonl$", path.name)
        for lineno, raw in enumerate(path.read_text().splitlines(), 1):
            obj = json.loads(raw)
            rows, cols = (obj["rows"], obj["cols"]) if "rows" in obj else (int(m.group(1)), int(m.group(2)))
            yield path, lineno, rows, cols, obj["text"]


def test_paper_tool_fixtures():
    groups = {}
    for path, lineno, rows, cols, text in _fixture_lines():
        maze, resp = maze_from_text(text, rows, cols)
        groups.setdefault((rows, cols), []).append((path, lineno, maze, resp))
    n_defect = 0
    for (rows, cols), lines in groups.items():
        mazes = [t[2] for t in lines]
        resps = [t[3] for t in lines]
        for mode in ("paper", "strict"):
            v = run(mazes, resps, mode)
            for j, (path, lineno, maze, resp) in enumerate(lines):
                where = f"{path.parent.name}/{path.name}:{lineno} {mode}"
                if bfs_len(maze) is None:
                    # JS cellular_automata does not check connectivity and writes the plan `start goal`.
                    assert path.name.startswith("cellular_automata"), where
                    assert v.plan_len[j] == 2 and not v.plan_valid[j], where
                    want = {"plan_length_mismatch": 1, "illegal_move": 1}
                    if mode == "paper":
                        want["goal_not_reached"] = 1
                    assert errors_of(v, j) == want, where
                    n_defect += mode == "paper"
                else:
                    assert v.plan_valid[j] and v.plan_optimal[j] and v.trace_valid[j], (where, errors_of(v, j))
                    if path.parent.name == "js":
                        # Our reference A* is the JS one: it reproduces the trace and plan word for word.
                        ops, plan = astar(maze)
                        assert render(ops, plan) == resp, where
    assert n_defect == 2


def test_verify_jsonl_fixtures(tmp_path):
    path = DATA / "rust" / "wilson_seed7_30x30.jsonl"
    out = tmp_path / "per.jsonl"
    v = verify_jsonl(path, mode="strict", per_example=out)
    assert len(v) == 40 and v.trace_valid.all() and v.plan_optimal.all()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 41))
    assert all(r["first_error"] is None and r["first_error_at"] is None and r["plan_valid"] for r in rows)
    v = verify_jsonl(DATA / "js" / "searchformer_train_seed7_12x17.jsonl", rows=12, cols=17, mode="paper")
    assert len(v) == 100 and v.trace_valid.all()
    # The wrong grid size makes walls fall outside the grid: the error names the line.
    with pytest.raises(ValueError, match=r"searchformer_train_seed7_12x17.jsonl:1: .*outside the grid"):
        verify_jsonl(DATA / "js" / "searchformer_train_seed7_12x17.jsonl", rows=10, cols=10)


# ---------------------------------------------------------------------------------------------------------------
# Mutation test against the reference
# ---------------------------------------------------------------------------------------------------------------

def mutate(rng: random.Random, m: Maze, ops, plan):
    """One single edit of a valid response; returns token ids."""
    vocab = vocab_for(m.rows, m.cols)
    M, RC = vocab.n_coords, vocab.n_costs
    ops = [list(o) for o in ops]
    plan = [list(p) for p in plan]
    kind = rng.randrange(17)
    if ops and kind == 0:  # g
        o = rng.choice(ops)
        o[3] = min(max(o[3] + rng.choice([-2, -1, 1, 2, 5]), 0), RC - 1)
    elif ops and kind == 1:  # h
        o = rng.choice(ops)
        o[4] = min(max(o[4] + rng.choice([-2, -1, 1, 2, 7]), 0), RC - 1)
    elif ops and kind == 2:  # a coordinate (may leave a rectangular grid)
        o = rng.choice(ops)
        k = rng.choice([1, 2])
        o[k] = min(max(o[k] + rng.choice([-1, 1, 3]), 0), M - 1) if rng.random() < 0.7 else rng.randrange(M)
    elif ops and kind == 3:  # drop
        del ops[rng.randrange(len(ops))]
    elif ops and kind == 4:  # duplicate
        k = rng.randrange(len(ops))
        ops.insert(rng.choice([k, rng.randrange(len(ops) + 1)]), list(ops[k]))
    elif len(ops) > 1 and kind == 5:  # swap (neighbours or anywhere)
        a = rng.randrange(len(ops) - 1)
        b = a + 1 if rng.random() < 0.6 else rng.randrange(len(ops))
        ops[a], ops[b] = ops[b], ops[a]
    elif ops and kind == 6:  # create <-> close
        o = rng.choice(ops)
        o[0] = "close" if o[0] == "create" else "create"
    elif ops and kind == 7:  # truncate the trace, keep the plan
        ops = ops[:rng.randrange(len(ops))]
    elif plan and kind == 8:  # plan: drop, duplicate or swap a step
        k = rng.randrange(len(plan))
        r = rng.random()
        if r < 0.4:
            del plan[k]
        elif r < 0.7:
            plan.insert(k, list(plan[k]))
        elif len(plan) > 1:
            j = rng.randrange(len(plan))
            plan[k], plan[j] = plan[j], plan[k]
    elif plan and kind == 9:  # plan: a coordinate
        p = rng.choice(plan)
        k = rng.choice([0, 1])
        p[k] = min(max(p[k] + rng.choice([-1, 1]), 0), M - 1)
    elif ops and kind == 11:  # g or h of one cell changed in all its operations alike
        x, y = rng.choice(ops)[1:3]
        k = rng.choice([3, 4])
        delta = rng.choice([-1, 1, 2])
        for o in ops:
            if o[1:3] == [x, y]:
                o[k] = min(max(o[k] + delta, 0), RC - 1)
    elif kind == 10:  # plan: empty, truncated, or a detour
        r = rng.random()
        if r < 0.3 or not plan:
            plan = []
        elif r < 0.6:
            plan = plan[:rng.randrange(len(plan))]
        elif len(plan) > 1:
            plan = plan[:2] + [list(plan[0])] + plan[1:]
    else:  # token level: replace, insert or delete one token, or truncate the whole response
        ids = list(encode_response(render([tuple(o) for o in ops], [tuple(p) for p in plan]), m.rows, m.cols))
        r = rng.random()
        special = [PAD, UNK, EOS, CREATE, CLOSE, PLAN, SOLUTION, END, REASONING, 4, 7, len(vocab), 65535]
        tok = rng.choice(special) if rng.random() < 0.4 else rng.randrange(len(vocab))
        k = rng.randrange(len(ids) + 1)
        if r < 0.3 and k < len(ids):
            ids[k] = tok
        elif r < 0.6:
            ids.insert(k, tok)
        elif r < 0.8 and k < len(ids):
            del ids[k]
        else:
            ids = ids[:k]
        return np.array(ids, dtype=np.uint16)
    return encode_response(render([tuple(o) for o in ops], [tuple(p) for p in plan]), m.rows, m.cols)


def test_mutants_match_reference():
    rng = random.Random(2024)
    sizes = [(4, 4), (5, 7), (8, 6), (10, 10), (12, 17), (16, 9)]
    bases = []
    for k in range(120):
        rows, cols = sizes[k % len(sizes)]
        m = random_maze(rng, rows, cols, rng.choice([0.0, 0.15, 0.3, 0.4]))
        bases.append((m, *astar(m)))
    per_base = 30
    verdicts = {}
    counts = {}
    for rows, cols in sizes:
        group = [(m, ops, plan) for m, ops, plan in bases if (m.rows, m.cols) == (rows, cols)]
        mazes, mutants = [], []
        for m, ops, plan in group:
            for _ in range(per_base):
                mazes.append(m)
                mutants.append(mutate(rng, m, ops, plan))
        for mode in ("paper", "strict"):
            v = check_against_reference(mazes, mutants, mode, label=f"{rows}x{cols} mutant")
            verdicts.setdefault(mode, []).append(v)
            for name in UNREACHABLE:
                assert v.error_counts[:, ERROR_NAMES.index(name)].sum() == 0
        counts[(rows, cols)] = len(mutants)
    total = sum(counts.values())
    assert total >= 3000
    pv = np.concatenate([v.trace_valid & v.plan_valid for v in verdicts["paper"]])
    sv = np.concatenate([v.trace_valid & v.plan_valid for v in verdicts["strict"]])
    assert not np.any(sv & ~pv)  # strict accepts nothing paper rejects
    firsts = Counter(ERROR_NAMES[c] for v in verdicts["strict"] for c in v.first_error.tolist() if c >= 0)
    print(f"\n{total} mutants: paper accepts {int(pv.sum())}, strict {int(sv.sum())}; paper accepts "
          f"{int((pv & ~sv).sum())} that strict rejects; strict first errors {dict(firsts.most_common(8))}")
    assert (pv & ~sv).sum() > 0
    assert len(firsts) >= 12  # the mutants reach most rules


def test_mutants_large_grids():
    """The largest and the most elongated grids (cells near the end of the padded arrays, BFS over them)."""
    rng = random.Random(77)
    for rows, cols in ((64, 64), (64, 5), (4, 64)):
        mazes, mutants = [], []
        for _ in range(3):
            m = random_maze(rng, rows, cols, rng.choice([0.1, 0.3]))
            # start and goal in opposite corners when free, so that paths are long
            free = [(x, y) for y in range(rows) for x in range(cols) if (x, y) not in m.walls]
            m = Maze(rows, cols, m.walls, free[0], free[-1])
            ops, plan = astar(m)
            for _ in range(12):
                mazes.append(m)
                mutants.append(mutate(rng, m, ops, plan))
        for mode in ("paper", "strict"):
            check_against_reference(mazes, mutants, mode, label=f"{rows}x{cols} mutant")


# ---------------------------------------------------------------------------------------------------------------
# Adversarial input: total parsing
# ---------------------------------------------------------------------------------------------------------------

PROP_MAZE = Maze(6, 5, [(1, 1), (2, 1), (3, 3), (0, 4)], (0, 0), (4, 5))  # rows 6, cols 5: x = 5 leaves the grid
PROP_VOCAB = vocab_for(6, 5)


def well_formed(v: Verdicts, i: int):
    fe, fa, n_ops = int(v.first_error[i]), int(v.first_error_at[i]), int(v.n_ops[i])
    counts = v.error_counts[i]
    assert (counts >= 0).all()
    assert -1 <= fe < len(ERROR_NAMES)
    assert (fe == -1) == (counts.sum() == 0) == (fa == -1)
    if fe >= 0:
        assert counts[fe] >= 1 and 0 <= fa <= n_ops
    trace_bad = any(counts[c] for c in TRACE_ERROR_CODES)
    plan_bad = any(counts[c] for c in range(len(ERROR_NAMES)) if c not in TRACE_ERROR_CODES)
    assert bool(v.trace_valid[i]) == (not trace_bad)
    assert bool(v.plan_valid[i]) == (not plan_bad)
    assert not v.plan_optimal[i] or v.plan_valid[i]
    assert 0 <= v.plan_len[i] and 0 <= n_ops


soup_token = st.one_of(
    st.sampled_from([CREATE, CLOSE, PLAN, SOLUTION, END, REASONING, EOS, PAD, UNK, 2, 4, 5, 6, 7]),
    st.integers(FIRST_COORD, PROP_VOCAB.first_cost - 1),
    st.integers(PROP_VOCAB.first_cost, PROP_VOCAB.first_cost + 12),
    st.integers(PROP_VOCAB.first_cost, len(PROP_VOCAB) - 1),
    st.integers(len(PROP_VOCAB), 65535),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(soup_token, max_size=120), min_size=1, max_size=8))
def test_property_token_soup(batch):
    arrays = [np.array(t, dtype=np.uint16) for t in batch]
    for mode in ("paper", "strict"):
        v = check_against_reference([PROP_MAZE] * len(arrays), arrays, mode, label="soup")
        for i in range(len(arrays)):
            well_formed(v, i)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 65535), max_size=400), st.integers(0, 10**6))
def test_property_random_ids_and_truncations(ids, cut):
    ops, plan = astar(PROP_MAZE)
    valid = encode_response(render(ops, plan), 6, 5)
    arrays = [np.array(ids, dtype=np.uint16), valid[:cut % (len(valid) + 1)],
              np.concatenate([valid[:cut % len(valid)], np.array(ids[:20], dtype=np.uint16)])]
    for mode in ("paper", "strict"):
        v = check_against_reference([PROP_MAZE] * 3, arrays, mode, label="random")
        for i in range(3):
            well_formed(v, i)


def test_million_operations():
    m = Maze(64, 64, [], (0, 0), (63, 63))
    vocab = vocab_for(64, 64)
    rng = np.random.default_rng(0)
    n = 10**6
    # Operations of every kind at random cells with random small costs, and a long stretch of creates with
    # nothing closed; then a million raw random ids.
    ops = np.empty((n, 5), dtype=np.uint16)
    ops[:, 0] = np.where(rng.random(n) < 0.5, CREATE, CLOSE)
    ops[:, 1:3] = FIRST_COORD + rng.integers(0, 64, size=(n, 2))
    ops[:, 3:5] = vocab.first_cost + rng.integers(0, 200, size=(n, 2))
    soup = np.concatenate([[REASONING], ops.ravel()]).astype(np.uint16)
    raw = rng.integers(0, 65536, size=n, dtype=np.uint16)
    # A legal long walk: the start closed, then a million alternating creates of its right neighbour.
    legal = np.tile(np.array([CREATE, FIRST_COORD + 1, FIRST_COORD, vocab.first_cost + 1, vocab.first_cost + 125],
                             dtype=np.uint16), n)
    legal = np.concatenate([np.array([REASONING, CLOSE, FIRST_COORD, FIRST_COORD, vocab.first_cost,
                                      vocab.first_cost + 126], dtype=np.uint16), legal])
    for mode in ("paper", "strict"):
        v = run([m] * 3, [soup, raw, legal], mode)
        for i in range(3):
            well_formed(v, i)
        assert v.n_ops[0] == n and v.n_ops[2] == n + 1 and not v.trace_valid.any()
    assert errors_of(v, 2)["unexpected_create"] == n - 1


def test_threads_identical():
    rng = random.Random(9)
    mazes, texts, _ = _random_valid_set(3, 60, [12], [0.0, 0.3])
    ids = []
    for k, m in enumerate(mazes):
        ops, plan = astar(m)
        for _ in range(40):
            ids.append(mutate(rng, m, ops, plan))
    all_mazes = [m for m in mazes for _ in range(40)]
    for mode in ("paper", "strict"):
        a, b = run(all_mazes, ids, mode, threads=1), run(all_mazes, ids, mode, threads=2)
        for f in ("plan_valid", "plan_optimal", "trace_valid", "first_error", "first_error_at", "n_ops", "plan_len",
                  "error_counts"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


# ---------------------------------------------------------------------------------------------------------------
# The Python API
# ---------------------------------------------------------------------------------------------------------------

def test_encode_matches_vocab():
    rng = random.Random(1)
    for rows, cols in ((4, 4), (12, 17), (30, 30), (64, 5)):
        vocab = Vocab(rows, cols)
        extra = ["c", "c-1", "-1", "01", "c01", "c00", "0", "c0", str(vocab.n_coords), f"c{vocab.n_costs}",
                 f"c{vocab.n_costs - 1}", str(vocab.n_coords - 1), "Close", "<|unk|>", "<|bos|>", "x", "9" * 12,
                 "c" + "9" * 12, "plan,", "é", "3\u00a04"]
        words = list(vocab.words) + extra
        for _ in range(20):
            text = rng.choice([" ", "\t", "\n", "  ", "\x1f"]).join(rng.choice(words) for _ in range(200))
            np.testing.assert_array_equal(encode_response(text, rows, cols), vocab.encode(text, strict=False))


def test_parse_problem_text():
    text = "query start 1 0 goal 3 2 wall 0 1 wall 2 2 reasoning close 1 0 c0 c4 end"
    walls, s, g, resp = parse_problem_text(text, 5, 4)
    assert s == (1, 0) and g == (3, 2) and resp == "reasoning close 1 0 c0 c4 end"
    assert walls.dtype == np.uint8 and walls.shape == (20,) and set(np.flatnonzero(walls)) == {4, 10}
    walls, s, g, resp = parse_problem_text("<|bos|> query  start 1 0\ngoal 3 2 wall 0 1 ", 5, 4)
    assert resp is None and walls.sum() == 1
    bad = {
        "": "empty",
        "query start 1 0 goal 3": "ends inside",
        "query start 1 0 goal 3 2 wall 0": "ends inside",
        "start 1 0 goal 3 2": "expected 'query'",
        "query start 1 0 goal 3 2 wall 4 0": "outside the grid",
        "query start 1 0 goal 3 2 wall 0 5": "outside the grid",
        "query start 1 0 goal 3 2 wall 01 1": "coordinate",
        "query start 1 0 goal 3 2 wall -1 1": "coordinate",
        "query start 1 0 goal 3 2 wal 1 1": "expected 'wall' or 'reasoning'",
        "query start 1 0 goal 3 2 wall 1 0": "start .* is a wall",
        "query start 1 0 goal 3 2 wall 3 2": "goal .* is a wall",
        "query goal 1 0 start 3 2": "expected 'start'",
        "query start 1 0 goal 3 2 wall 1 1 wall é 2": r"found '\\xc3\\xa9'",
    }
    for t, why in bad.items():
        with pytest.raises(ValueError, match=why):
            parse_problem_text(t, 5, 4)
    with pytest.raises(ValueError, match="grid sides"):
        parse_problem_text(text, 3, 4)


def test_parse_problem_text_matches_fixture_walls():
    for path, lineno, rows, cols, text in _fixture_lines():
        words = text.split()
        walls, s, g, resp = parse_problem_text(text, rows, cols)
        r = words.index("reasoning")
        expect = np.zeros(rows * cols, dtype=np.uint8)
        for k in range(7, r, 3):
            expect[int(words[k + 2]) * cols + int(words[k + 1])] = 1
        np.testing.assert_array_equal(walls, expect)
        assert s == (int(words[2]), int(words[3])) and g == (int(words[5]), int(words[6]))
        assert resp == " ".join(words[r:])


def test_verify_input_forms():
    m = SMALL
    text = VALID
    ids = encode_response(text, m.rows, m.cols)
    walls3 = m.wall_array().reshape(1, m.rows, m.cols)
    a = verify(walls3, [m.start], [m.goal], [text])
    b = verify(walls3.reshape(1, -1), np.array([m.start]), np.array([m.goal]), [ids.astype(np.int64)], rows=5, cols=4)
    c = verify(np.repeat(walls3, 2, 0), [m.start] * 2, [m.goal] * 2, np.concatenate([ids, ids[:5]]),
               offsets=[0, len(ids), len(ids) + 5], mode="paper")
    assert a.trace_valid[0] and b.trace_valid[0] and c.trace_valid[0] and not c.trace_valid[1]
    # Ids that uint16 cannot hold are unknown tokens, i.e. syntax errors.
    d = verify(walls3, [m.start], [m.goal], [np.concatenate([ids[:6], [-100], ids[6:]])])
    assert d.first_error_name(0) == "operation_syntax_error"
    with pytest.raises(ValueError, match="mode"):
        verify(walls3, [m.start], [m.goal], [text], mode="lenient")
    with pytest.raises(ValueError, match="responses for"):
        verify(walls3, [m.start], [m.goal], [text, text])
    with pytest.raises(ValueError, match="rows= and cols="):
        verify(walls3.reshape(1, -1), [m.start], [m.goal], [text])
    with pytest.raises(ValueError, match="outside the grid"):
        verify(walls3, [(4, 0)], [m.goal], [text])
    with pytest.raises(ValueError, match="is a wall"):
        verify(walls3, [(1, 1)], [m.goal], [text])
    with pytest.raises(ValueError, match="offsets"):
        verify(walls3, [m.start], [m.goal], ids, offsets=[0, len(ids) + 1])


def test_verify_texts():
    prompt = "query start 0 0 goal 2 0 wall 1 1"
    v = verify_texts([f"{prompt} {VALID}", prompt, f"{prompt} reasoning"], rows=5, cols=4)
    assert v.trace_valid.tolist() == [True, False, False]
    v = verify_texts([prompt, prompt + " reasoning"], [VALID, VALID[len("reasoning "):]], rows=5, cols=4,
                     mode="paper")
    assert v.trace_valid.all() and v.plan_optimal.all()
    with pytest.raises(ValueError, match="problem 1: .*expected 'query'"):
        verify_texts([prompt, "start 0 0"], rows=5, cols=4)
    with pytest.raises(ValueError, match="1 responses for 2 prompts"):
        verify_texts([prompt, prompt], [VALID], rows=5, cols=4)


def test_core_argument_checks():
    w = SMALL.wall_array()[None]
    s = np.array([SMALL.start], dtype=np.int32)
    g = np.array([SMALL.goal], dtype=np.int32)
    t = encode_response(VALID, 5, 4)
    b, e = np.array([0], dtype=np.int64), np.array([len(t)], dtype=np.int64)
    assert _core.verify_batch(w, 5, 4, s, g, t, b, e, "strict", 1)["trace_valid"][0]
    with pytest.raises(ValueError, match="tokens must have dtype uint16"):
        _core.verify_batch(w, 5, 4, s, g, t.astype(np.int32), b, e, "strict", 1)
    with pytest.raises(ValueError, match="example 0: response span"):
        _core.verify_batch(w, 5, 4, s, g, t, b, e + 1, "strict", 1)
    with pytest.raises(ValueError, match="walls must have shape"):
        _core.verify_batch(w, 5, 5, s, g, t, b, e, "strict", 1)
    w2 = w.copy()
    w2[0, 3] = 2
    with pytest.raises(ValueError, match="example 0: walls must be 0"):
        _core.verify_batch(w2, 5, 4, s, g, t, b, e, "strict", 1)
    empty = _core.verify_batch(w[:0], 5, 4, s[:0], g[:0], t, b[:0], e[:0], "paper", 0)
    assert empty["error_counts"].shape == (0, len(ERROR_NAMES))


def test_summary_and_per_example():
    mazes = [SMALL] * 4
    texts = [VALID,                                           # plan valid, trace valid
             CASES["wrong_g"][1],                             # strict: plan valid, trace invalid
             CASES["plan_syntax_error_empty"][1],             # plan invalid, trace valid
             CASES["goal_not_reached"][1]]                    # plan valid (the plan is fine), trace invalid
    v = run(mazes, texts, "strict")
    s = v.summary()
    assert s["examples"] == 4 and s["plan_valid_pct"] == 75.0 and s["trace_valid_pct"] == 50.0
    assert s["trace_valid_among_valid_plans_pct"] == pytest.approx(100 / 3)
    assert s["confusion"] == {"plan_valid": {"trace_valid": 1, "trace_invalid": 2},
                              "plan_invalid": {"trace_valid": 1, "trace_invalid": 0}}
    assert s["first_errors"] == [["plan_syntax_error", 1], ["goal_not_reached", 1], ["wrong_g", 1]]
    assert s["error_totals"]["plan_length_mismatch"] == 1
    rows = list(v.per_example())
    assert [r["first_error"] for r in rows] == [None, "wrong_g", "plan_syntax_error", "goal_not_reached"]
    assert rows[1]["first_error_at"] == 1 and rows[0]["first_error_at"] is None
    table = format_summary(s)
    for needle in ("examples", "plan valid", "plan optimal", "trace valid among valid plans", "75.00 %",
                   "most frequent first errors", "wrong_g", "trace invalid"):
        assert needle in table
    json.dumps(s)
    empty = Verdicts.empty(0, "paper").summary()
    assert empty["plan_valid_pct"] is None and "—" in format_summary(empty)


def test_verify_jsonl_formats_and_errors(tmp_path):
    text = "query start 0 0 goal 2 0 wall 1 1 " + VALID
    prompt, response = text.split(" reasoning ")
    lines = [
        json.dumps({"text": text, "rows": 5, "cols": 4}),
        "",
        json.dumps({"prompt": "<|bos|> " + prompt, "response": "reasoning " + response + " <|eos|>", "rows": 5,
                    "cols": 4}),
        json.dumps({"prompt": prompt + " reasoning", "response": response, "rows": 5, "cols": 4}),
        json.dumps({"prompt": prompt, "response": "reasoning close 0 0 c0 c2 fnord", "rows": 5, "cols": 4}),
        json.dumps({"text": prompt, "rows": 5, "cols": 4}),  # no response at all
    ]
    p = tmp_path / "preds.jsonl"
    p.write_text("\n".join(lines) + "\n")
    out = tmp_path / "per.jsonl"
    v = verify_jsonl(p, per_example=out)
    assert v.trace_valid.tolist() == [True, True, True, False, False]
    assert v.first_error_name(3) == "operation_syntax_error"
    assert v.line_numbers.tolist() == [1, 3, 4, 5, 6]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 3, 4, 5, 6]
    assert [r["first_error"] for r in rows] == [None, None, None, "operation_syntax_error", "goal_not_reached"]
    assert set(tmp_path.iterdir()) == {p, out}
    bad = {
        "{not json": "line 1: not valid JSON",
        "[1, 2]": "line 1: expected a JSON object",
        json.dumps({"foo": 1}): 'line 1: expected "text" or "prompt"',
        json.dumps({"prompt": prompt}): "line 1: .*\"response\"",
        json.dumps({"text": text, "rows": 3, "cols": 4}): "line 1: .*grid sides",
        json.dumps({"text": text, "rows": "5", "cols": 4}): "line 1: rows/cols must be integers",
        json.dumps({"text": "query start 0 0 goal 2 0 wall 1 x " + VALID, "rows": 5, "cols": 4}):
            "line 1: word 9: expected the y coordinate of wall, found 'x'",
    }
    for content, why in bad.items():
        q = tmp_path / "bad.jsonl"
        q.write_text(json.dumps({"text": text, "rows": 5, "cols": 4}) + "\n" + content + "\n")
        with pytest.raises(ValueError, match=why.replace("line 1", "bad.jsonl:2")):
            verify_jsonl(q, per_example=tmp_path / "bad_out.jsonl")
        assert not (tmp_path / "bad_out.jsonl").exists()
        assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    # Mixed grid sizes in one file come back in input order.
    mixed = tmp_path / "mixed.jsonl"
    js = (DATA / "js" / "wilson_train_seed7_8x8.jsonl").read_text().splitlines()[:3]
    mixed.write_text("\n".join([json.dumps({**json.loads(js[0]), "rows": 8, "cols": 8}), lines[0],
                                json.dumps({**json.loads(js[1]), "rows": 8, "cols": 8}), lines[4]]) + "\n")
    v = verify_jsonl(mixed, mode="paper")
    assert v.trace_valid.tolist() == [True, True, True, False] and v.plan_len[0] == len(
        json.loads(js[0])["text"].split("solution")[1].split()) // 3
