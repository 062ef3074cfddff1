"""`reasonless render`: the cells and colours of a hand-made maze's SVG, the first-error mark of broken responses,
the grammar shared with the verifier, deterministic bytes, every kind of source from the command line.

`make_eval` (also used by test_browser.py) evaluates scripted answers (correct, one broken operation, garbage,
another maze's trace, never stopping) on a small suite, so its eval JSONL has every kind of failure."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from reasonless import render
from reasonless.cli import main
from reasonless.corpus import Corpus, generate
from reasonless.evaluate import Suite, evaluate_model, load_problems
from reasonless.interchange import export_jsonl
from reasonless.verifier import verify
from reasonless.vocab import CLOSE, CREATE, END, REASONING, SOLUTION, vocab_for
from test_evaluate import ROWS, COLS, ScriptedGenerator, fake_model, reference_response

SVG = "{http://www.w3.org/2000/svg}"

# The hand-made 4×5 maze (x right, y down):   S . # . .
#                                              . . # . .
#                                              . . . . G
#                                              # . # # .
WALLS = [(2, 0), (2, 1), (0, 3), (2, 3), (3, 3)]
START, GOAL = (0, 0), (4, 2)
# A* (fifo) by hand: closes in this order, and two cells created but never closed
CLOSED = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (3, 2), (4, 2)]
OPEN = {(1, 3), (3, 1)}
PLAN = [(0, 0), (1, 0), (1, 1), (1, 2), (2, 2), (3, 2), (4, 2)]


@pytest.fixture(scope="module")
def maze():
    walls = np.zeros((4, 5), np.uint8)
    for x, y in WALLS:
        walls[y, x] = 1
    return render.maze_of(4, 5, walls, START, GOAL)


def parse(svg: str):
    root = ET.fromstring(svg.encode())
    assert root.tag == SVG + "svg" and int(root.get("width")) > 0 and int(root.get("height")) > 0
    return root


def panels(root):
    return [g for g in root.iter(SVG + "g") if g.get("class") == "panel"]


def cells(panel, cls):
    return [e for e in panel.iter() if e.get("class") == cls]


def xy(e):
    return int(e.get("data-x")), int(e.get("data-y"))


def reference_text(ref) -> str:
    ops = " ".join(f"{k} {x} {y} c{g} c{h}" for k, x, y, g, h in ref.ops)
    return f"reasoning {ops} solution " + " ".join(f"plan {x} {y}" for x, y in ref.plan) + " end"


def test_hand_made_maze_cells_and_colours(maze):
    ref = render.astar_reference(maze)
    assert [op[1:3] for op in ref.ops if op[0] == "close"] == CLOSED and ref.plan == PLAN
    root = parse(render.render_svg(render.Scene(maze, [ref], "hand-made")))
    (panel,) = panels(root)
    size = render.cell_size(4, 5)
    assert size == 40
    walls = cells(panel, "wall")
    assert sorted(xy(e) for e in walls) == sorted(WALLS)
    assert {e.get("fill") for e in walls} == {render.WALL}
    closed = sorted(cells(panel, "closed"), key=lambda e: int(e.get("data-order")))
    assert [xy(e) for e in closed] == CLOSED
    # light to dark: first close yellow, the middle one teal, the last purple (viridis reversed)
    assert [closed[k].get("fill") for k in (0, 4, 8)] == ["#fde725", "#21918c", "#440154"]
    fills = [closed[k].get("fill") for k in range(9)]
    assert len(set(fills)) == 9
    grid = cells(panel, "grid")[0]
    x0, y0 = float(grid.get("x")), float(grid.get("y"))
    for e in closed:  # each fill sits on its cell
        x, y = xy(e)
        assert (float(e.get("x")), float(e.get("y"))) == (x0 + x * size, y0 + y * size)
    assert {xy(e) for e in cells(panel, "open")} == OPEN
    assert all(e.get("fill") == "none" and e.get("stroke") == render.OPEN for e in cells(panel, "open"))
    (plan,) = cells(panel, "plan")
    points = [tuple(map(float, p.split(","))) for p in plan.get("points").split()]
    assert points == [(x0 + (x + 0.5) * size, y0 + (y + 0.5) * size) for x, y in PLAN]
    (start,) = cells(panel, "start")
    (goal,) = cells(panel, "goal")
    assert xy(start) == START and xy(goal) == GOAL
    assert not cells(panel, "first-error") and not cells(panel, "invalid")


def test_first_error_mark_sits_on_the_broken_operation(maze):
    ref = render.astar_reference(maze)
    ops = [f"{k} {x} {y} c{g} c{h}" for k, x, y, g, h in ref.ops]
    plan = " ".join(f"plan {x} {y}" for x, y in PLAN)
    # operation 3 closes (1, 1), which is not open yet (it is created by operation 4): every later operation
    # then hangs off the wrong last-closed cell
    broken = ops[:3] + ["close 1 1 c2 c4"] + ops[4:]
    for mode in ("paper", "strict"):
        panel = render.response_panel(maze, "reasoning " + " ".join(broken) + f" solution {plan} end", mode)
        assert (panel.first_error, panel.first_error_at, panel.error_cell) == ("close_not_in_open_list", 3, (1, 1))
        assert panel.replayed == 3 and panel.invalid[3] == "close_not_in_open_list"
        assert panel.invalid[4] == "create_non_neighbor"  # the create of (1, 1) next to the start, not (1, 0)
        (g,) = panels(parse(render.render_svg(render.Scene(maze, [ref, panel], "broken"))))[1:]
        (mark,) = cells(g, "first-error")
        assert (mark.get("data-op"), mark.get("data-code"), xy(mark)) == ("3", "close_not_in_open_list", (1, 1))
        size, grid = render.cell_size(4, 5), cells(g, "grid")[0]
        assert float(mark.get("cx")) == float(grid.get("x")) + 1.5 * size
        assert float(mark.get("cy")) == float(grid.get("y")) + 1.5 * size
        # replayed up to the error: operations 0-2 close the start and open its two neighbours
        assert [xy(e) for e in cells(g, "closed")] == [(0, 0)]
        assert {xy(e) for e in cells(g, "open")} == {(1, 0), (0, 1)}
        assert {int(e.get("data-op")) for e in cells(g, "invalid")} == set(panel.invalid)
        notes = " ".join(e.text for e in cells(g, "note"))  # wrapped to the panel's width
        assert "first error: close_not_in_open_list at operation 3 (close 1 1 c2 c4)" in notes

    # a plan error is marked where it happens: the step into the wall at (2, 0)
    detour = " ".join(f"plan {x} {y}" for x, y in [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (3, 2), (4, 2)])
    panel = render.response_panel(maze, "reasoning " + " ".join(ops) + f" solution {detour} end", "paper")
    assert (panel.first_error, panel.first_error_at, panel.error_cell) == ("illegal_move", len(ops), (2, 0))
    assert panel.replayed == len(ops) and not panel.invalid
    # a syntax error before operation 2 is marked on the operation before it
    panel = render.response_panel(maze, "reasoning " + " ".join(ops[:2]) + " wall " + " ".join(ops[2:]), "paper")
    assert (panel.first_error, panel.first_error_at, panel.error_cell) == ("operation_syntax_error", 2, (1, 0))


def test_the_parser_reads_responses_as_the_verifier_does():
    rows, cols = 4, 5
    size = len(vocab_for(rows, cols))
    rng = np.random.default_rng(7)
    walls = np.zeros((1, rows * cols), np.uint8)
    for t in range(400):
        n = int(rng.integers(0, 60))
        ids = np.where(rng.random(n) < 0.4, rng.integers(0, 14, n), rng.integers(0, size + 3, n))
        ops, ends, plan = render.parse_response(ids, rows, cols)
        v = verify(walls, [[0, 0]], [[4, 3]], [ids], rows=rows, cols=cols, mode="strict")
        assert (len(ops), len(plan)) == (v.n_ops[0], v.plan_len[0]), ids.tolist()
        assert ends == sorted(ends) and all(ids[e - 5] in (CREATE, CLOSE) for e in ends)


def test_bytes_are_deterministic(maze, tmp_path):
    ref = render.astar_reference(maze)
    broken = reference_text(ref).replace("close 1 0 c1 c5", "close 4 4 c1 c5", 1)

    def scene():
        return render.Scene(maze, [render.astar_reference(maze), render.response_panel(maze, broken)], "t")

    assert render.render_svg(scene()) == render.render_svg(scene())
    render.write(scene(), tmp_path / "a.png")
    render.write(scene(), tmp_path / "b.png")
    png = (tmp_path / "a.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (tmp_path / "b.png").read_bytes()
    with pytest.raises(ValueError, match="must end in .svg or .png"):
        render.write(scene(), tmp_path / "a.jpg")


# ---------------------------------------------------------------------------------------------------- sources
def make_eval(root):
    """A 6×6 suite of 6 Wilson mazes at root/suite and an eval of scripted answers at root/eval.jsonl:
    0 and 5 correct, 1 with operation 1 broken (valid plan, invalid trace), 2 garbage, 3 another maze's
    response, 4 never stopping. Returns (suite path, eval path)."""
    suite = root / "suite"
    corpus = generate(suite, "wilson", 6, rows=ROWS, cols=COLS, seed=3)
    problems = load_problems(corpus)
    refs = [reference_response(corpus[i]) for i in range(len(corpus))]
    vocab = corpus.vocab
    broken = list(refs[1])
    broken[6:11] = [CLOSE, vocab.coord(corpus[1].goal[0]), vocab.coord(corpus[1].goal[1]), vocab.cost(0),
                    vocab.cost(0)]
    answers = [refs[0], broken, [REASONING, CLOSE, 14, SOLUTION, END], refs[4], None, refs[5]]
    gen = ScriptedGenerator({p.tobytes(): a for p, a in zip(problems.prompts, answers)})
    out = root / "eval.jsonl"
    evaluate_model(fake_model(), [Suite("wil", corpus)], out, generate_fn=gen,
                   meta={"arm": "correct", "run_name": "scripted"}, mode="paper")
    return suite, out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return make_eval(tmp_path_factory.mktemp("render"))


def _render(capsys, *argv):
    code = main(["render", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_renders_every_kind_of_source(evaluated, tmp_path, capsys):
    suite, eval_path = evaluated
    rows = [json.loads(line) for line in eval_path.read_text().splitlines()]
    assert [r["paper"]["plan_valid"] for r in rows] == [True, True, False, False, False, True]
    assert rows[1]["paper"]["trace_valid"] is False

    def titles(path):
        return [g.get("data-title") for g in panels(parse(path.read_text()))]

    # a corpus: its A* trace
    code, out, err = _render(capsys, suite, "--index", 2, "--out", tmp_path / "c.svg")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "c.svg")
    assert titles(tmp_path / "c.svg") == ["A* trace (fifo)"]
    # a corpus with the evaluation: the model's broken response beside it, marked where the verifier says
    code, _, err = _render(capsys, suite, "--index", 1, "--compare", eval_path, "--out", tmp_path / "cmp.svg")
    assert code == 0, err
    root = parse((tmp_path / "cmp.svg").read_text())
    assert titles(tmp_path / "cmp.svg") == ["A* reference", "model response (arm correct)"]
    (mark,) = cells(panels(root)[1], "first-error")
    assert (mark.get("data-code"), int(mark.get("data-op"))) == (rows[1]["paper"]["first_error"],
                                                                rows[1]["paper"]["first_error_at"])
    # the eval file itself: record 1 is the same picture
    code, _, err = _render(capsys, eval_path, "--index", 1, "--out", tmp_path / "ev.svg")
    assert code == 0, err
    assert (tmp_path / "ev.svg").read_bytes() == (tmp_path / "cmp.svg").read_bytes()
    code, _, err = _render(capsys, eval_path, "--index", 4, "--suite", "wil", "--mode", "strict", "--out",
                           tmp_path / "ev4.png")
    assert code == 0 and (tmp_path / "ev4.png").read_bytes()[:4] == b"\x89PNG", err
    # an arm's token dir: a swapped trace judged, beside the corpus's own
    assert main(["export", str(suite), "--format", "tokens", "--arm", "swapped", "--out", str(tmp_path / "sw"),
                 "--quiet"]) == 0
    capsys.readouterr()
    code, _, err = _render(capsys, tmp_path / "sw", "--index", 0, "--out", tmp_path / "sw.svg")
    assert code == 0, err
    assert titles(tmp_path / "sw.svg") == ["A* reference", "arm swapped"]
    assert cells(parse((tmp_path / "sw.svg").read_text()), "first-error")
    # paper-format JSONL (its own trace, valid) and predictions JSONL (beside our A*)
    export_jsonl(Corpus(suite), tmp_path / "paper.jsonl")
    code, _, err = _render(capsys, tmp_path / "paper.jsonl", "--index", 3, "--rows", ROWS, "--cols", COLS,
                           "--out", tmp_path / "p.svg")
    assert code == 0, err
    assert titles(tmp_path / "p.svg") == ["the line's own trace"]
    assert not cells(parse((tmp_path / "p.svg").read_text()), "first-error")
    text = json.loads((tmp_path / "paper.jsonl").read_text().splitlines()[3])["text"]
    prompt, response = text.split(" reasoning ")
    (tmp_path / "pred.jsonl").write_text("\n" + json.dumps({"prompt": prompt, "response": "reasoning " +
                                                            response.replace("close", "create", 2),
                                                            "rows": ROWS, "cols": COLS}) + "\n")
    code, _, err = _render(capsys, tmp_path / "pred.jsonl", "--index", 0, "--out", tmp_path / "pred.svg")
    assert code == 0, err
    assert titles(tmp_path / "pred.svg") == ["A* reference (fifo)", "response"]
    assert cells(parse((tmp_path / "pred.svg").read_text()), "first-error")


def test_cli_errors_name_the_file_and_index(evaluated, tmp_path, capsys):
    suite, eval_path = evaluated
    (tmp_path / "junk.jsonl").write_text('{"text": "query start 0 0"}\nnot json\n')
    moved = tmp_path / "moved.jsonl"
    moved.write_text(eval_path.read_text())
    (tmp_path / "moved.jsonl.summary.json").write_text(
        eval_path.with_name(eval_path.name + ".summary.json").read_text().replace(str(suite), str(tmp_path / "gone")))
    cases = [((suite, "--index", 6), f"{suite}: --index 6 outside 0..5"),
             ((tmp_path / "nope", "--index", 0), "no such corpus, token directory or JSONL file"),
             ((eval_path, "--index", 9), f"{eval_path}: no record 9"),
             ((tmp_path / "junk.jsonl", "--index", 0), "junk.jsonl:1:"),
             ((tmp_path / "junk.jsonl", "--index", 1), "junk.jsonl:2: not valid JSON"),
             ((eval_path, "--index", 0, "--compare", eval_path), "--compare needs a corpus"),
             ((suite, "--index", 0, "--compare", eval_path, "--suite", "other"), "no record for example 0 of suite"),
             ((moved, "--index", 2), "moved.jsonl: record 2: the corpus of suite 'wil'"),
             ((suite, "--index", 0, "--out", tmp_path / "x.gif"), "must end in .svg or .png")]
    for argv, message in cases:
        code, _, err = _render(capsys, *argv)
        assert code == 2 and message in err, (argv, err)


def test_readme_picture_is_what_its_command_draws(tmp_path, capsys):
    """docs/render-greedy.svg is the output of the README's Render commands (run here under tmp_path)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("## Render", 1)[1].split("```", 2)[1]
    commands = [line.split()[1:] for line in block.strip().splitlines()]
    assert [c[0] for c in commands] == ["generate", "export", "render"]
    for argv in commands:
        argv = [str(tmp_path / a) if a.startswith(("data/", "docs/")) else a for a in argv]
        (tmp_path / "docs").mkdir(exist_ok=True)
        assert main(argv) == 0, capsys.readouterr().err
    picture = commands[-1][commands[-1].index("--out") + 1]
    assert (tmp_path / picture).read_bytes() == (root / picture).read_bytes()
