"""--rng paper: the JS tool's datasets byte for byte (issue 15). The oracle is tests/data/paper-tools/js/, made by
the public tool itself (node headless_gen/cli.js -g G -s astar --mode M --seed 7 -r R -c C -n N)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from reasonless.cli import main
from reasonless.corpus import Batch, Corpus, generate, merge
from reasonless.interchange import export_jsonl
from reasonless.paper_mazes import (DEFECTS, PaperSource, defect_counts, lcg_distance, lcg_seed, warning_line)

JS = Path(__file__).parent / "data" / "paper-tools" / "js"
FIXTURES = sorted(JS.glob("*.jsonl"))
NAME = re.compile(r"(?P<gen>.+)_(?P<split>train|test)_seed(?P<seed>\d+)_(?P<rows>\d+)x(?P<cols>\d+)\.jsonl")


def fixture_spec(path: Path) -> dict:
    m = NAME.fullmatch(path.name)
    return {"generator": m["gen"], "split": m["split"], "seed": int(m["seed"]), "rows": int(m["rows"]),
            "cols": int(m["cols"]), "count": len(path.read_bytes().splitlines())}


def tool_defects(path: Path, generator: str, rows: int, cols: int) -> dict:
    """The defects of the tool's own lines, read from its text alone."""
    out = dict.fromkeys(DEFECTS, 0)
    for line in path.read_text().splitlines():
        t = json.loads(line)["text"].split()
        start, goal = (int(t[2]), int(t[3])), (int(t[5]), int(t[6]))
        walls, i = set(), 7
        while t[i] == "wall":
            walls.add((int(t[i + 1]), int(t[i + 2])))
            i += 3
        last_close = max(j for j, w in enumerate(t) if w == "close")
        plan_cells = (len(t) - t.index("solution") - 2) // 3
        out["start_is_goal"] += start == goal
        out["unsolvable"] += (int(t[last_close + 1]), int(t[last_close + 2])) != goal
        out["short_plan"] += generator == "searchformer" and plan_cells < max(rows, cols)
        out["dfs_walled_edge"] += generator == "dfs" and (all((x, rows - 1) in walls for x in range(cols))
                                                          or all((cols - 1, y) in walls for y in range(rows)))
    return out


def make(tmp: Path, spec: dict, shard_size: int = 50_000, **kw) -> Corpus:
    return generate(tmp / "c", spec["generator"], spec["count"], rows=spec["rows"], cols=spec["cols"],
                    seed=spec["seed"], rng="paper", split=spec["split"], shard_size=shard_size, **kw)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_export_equals_the_tools_jsonl_byte_for_byte(tmp_path, path):
    spec = fixture_spec(path)
    # Shards of 16 examples: the stream carries over from shard to shard (and is made ahead in a thread).
    corpus = make(tmp_path, spec, shard_size=16)
    export_jsonl(corpus, tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == path.read_bytes()
    # Every defect the tool produced here is counted, and the counts match the tool's lines.
    assert corpus.manifest["paper"]["defects"] == tool_defects(path, spec["generator"], spec["rows"], spec["cols"])
    assert corpus.manifest["rng"] == "paper" and corpus.manifest["split"] == spec["split"]


def test_the_fixtures_hold_the_defect_classes_we_count():
    """The defects the tool produced in its fixture files (the test above checks that our counts match)."""
    found = {p.stem: {k: v for k, v in tool_defects(p, **{k: fixture_spec(p)[k] for k in ("generator", "rows",
                                                                                           "cols")}).items() if v}
             for p in FIXTURES}
    assert found["cellular_automata_test_seed7_30x30"] == {"unsolvable": 2}
    assert found["searchformer_test_seed7_30x30"] == {"short_plan": 1}
    assert found["searchformer_train_seed7_12x17"] == {"short_plan": 6}
    assert found["dfs_test_seed7_30x30"] == {"dfs_walled_edge": 40}


def test_cli_generate_then_export_diff_is_empty(tmp_path, capsys):
    path = JS / "searchformer_train_seed7_12x17.jsonl"
    assert main(["generate", "--rng", "paper", "--split", "train", "--seed", "7", "--generator", "searchformer",
                 "--rows", "12", "--cols", "17", "--count", "100", "--out", str(tmp_path / "c"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: --rng paper" in err and "6 short_plan" in err and "docs/design.md" in err
    assert len([line for line in err.splitlines() if "warning" in line]) == 1
    assert main(["export", str(tmp_path / "c"), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"),
                 "--quiet"]) == 0
    assert (tmp_path / "x.jsonl").read_bytes() == path.read_bytes()
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "c")]) == 0
    assert "6 short_plan" in capsys.readouterr().out


def test_resume_and_parts_replay_the_stream(tmp_path):
    path = JS / "kruskal_test_seed7_30x30.jsonl"
    spec = fixture_spec(path)
    corpus = make(tmp_path, spec, shard_size=7)
    shutil.rmtree(corpus.path / "shard-00002")  # a lost middle shard: the rerun replays the stream up to it
    (corpus.path / "manifest.json").unlink()
    export_jsonl(make(tmp_path, spec, shard_size=7), tmp_path / "resumed.jsonl")
    assert (tmp_path / "resumed.jsonl").read_bytes() == path.read_bytes()
    for k in (1, 0):  # parts made out of order, in separate directories, then merged
        generate(tmp_path / f"part{k}", "kruskal", spec["count"], seed=7, rng="paper", split="test", shard_size=7,
                 shard=(k, 2))
    export_jsonl(merge([tmp_path / "part0", tmp_path / "part1"], tmp_path / "merged"), tmp_path / "merged.jsonl")
    assert (tmp_path / "merged.jsonl").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("generator", ["wilson", "kruskal"])
def test_start_equal_to_goal_is_kept_and_counted(tmp_path, generator):
    """The tool re-draws an equal goal only once. No fixture of the tool has such a line (they are 30×30 and
    rare there), so this checks what its A* does with one: close the start, plan = the start alone."""
    corpus = generate(tmp_path / "c", generator, 300, rows=4, cols=4, seed=7, rng="paper", split="train")
    start, goal = corpus.column("start"), corpus.column("goal")
    same = np.flatnonzero((start == goal).all(axis=1))
    assert len(same) > 0 and corpus.manifest["paper"]["defects"]["start_is_goal"] == len(same)
    ex = corpus[int(same[0])]
    x, y = ex.start
    assert ex.text().endswith(f"reasoning close {x} {y} c0 c0 solution plan {x} {y} end")


def test_unsolvable_mazes_get_the_tools_two_cell_plan():
    b = Batch(4, 4, 0, np.zeros((2, 16), np.uint8), np.array([[0, 0], [1, 1]], np.int32),
              np.array([[3, 3], [1, 2]], np.int32), np.zeros(2, np.uint64), np.zeros((0, 3), np.uint16),
              np.zeros(3, np.int64), np.array([5, 9], np.uint16), np.array([0, 0, 2], np.int64))
    PaperSource.finish(b)
    assert b.plan_offsets.tolist() == [0, 2, 4] and b.plan.tolist() == [0, 15, 5, 9]
    packed = np.zeros((1, 2), np.uint8)
    counts = defect_counts("cellular_automata", 4, 4, [[0, 0]], [[3, 3]], [2], packed)
    assert counts["unsolvable"] == 1 and defect_counts("cellular_automata", 4, 4, [[0, 0]], [[0, 1]], [2],
                                                       packed)["unsolvable"] == 0


def test_the_lcg_and_the_overlap_of_train_and_test():
    assert lcg_seed(7, "train") == 14 and lcg_seed(7, "test") == 15
    assert lcg_seed(2**31 + 7, "test") == 15  # (2·seed + mode) >>> 0: seeds 2^31 apart are the same stream
    x = 123456789
    for k in range(1, 2000):
        x = (1664525 * x + 1013904223) % 2**32
        if k in (1, 2, 999, 1999):
            assert lcg_distance(123456789, x) == k
    # The test stream of seed 7 starts 1,282,594,051 draws into the train stream of seed 7.
    assert lcg_distance(lcg_seed(7, "train"), lcg_seed(7, "test")) == 1_282_594_051
    assert warning_line({"generator": "wilson"}) is None


@pytest.mark.parametrize("argv, message", [
    (["--split", "test"], "--split is only for --rng paper"),
    (["--rng", "paper"], "--rng paper needs --split"),
    (["--rng", "paper", "--split", "train", "--param", "min_plan=5", "--generator", "searchformer"],
     "does not take min_plan"),
    (["--rng", "paper", "--split", "train", "--seed", str(2**52)], "2^52"),
    (["--rng", "paper", "--split", "train", "--rows", "65"], "rows"),
    (["--rng", "paper", "--split", "train", "--generator", "prim"], "unknown maze generator"),
    (["--rng", "paper", "--split", "train", "--generator", "cellular_automata", "--rows", "4", "--cols", "4",
      "--param", "fill=0.95"], "loops forever"),
])
def test_clear_errors(tmp_path, capsys, argv, message):
    args = ["generate", "--count", "5", "--out", str(tmp_path / "x"), "--quiet", *argv]
    if "--generator" not in argv:
        args += ["--generator", "wilson"]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_the_tools_parameters_change_the_mazes(tmp_path):
    a = PaperSource("drunkards_walk", 10, 10, 7, "train").mazes(0, 5)[0]
    b = PaperSource("drunkards_walk", 10, 10, 7, "train", {"coverage": 0.7}).mazes(0, 5)[0]
    assert (a == 0).sum(axis=1).tolist() == [50] * 5 and (b == 0).sum(axis=1).tolist() == [70] * 5
    corpus = generate(tmp_path / "c", "cellular_automata", 3, rows=8, cols=8, seed=1, rng="paper", split="test",
                      params={"fill": "0.4", "iterations": "2"})
    assert corpus.manifest["paper"]["tool_params"] == {"fillProbability": 0.4, "survivalThreshold": 4,
                                                       "birthThreshold": 5, "iterations": 2}
