import json
from pathlib import Path

import numpy as np
import pytest

from reasonless.vocab import (BOS, CLOSE_BIT, END, EOS, FIRST_COORD, KEYWORDS, REASONING, SPECIALS, Vocab,
                              parse_sequence, vocab_for)

DATA = Path(__file__).parent / "data" / "paper-tools"


def test_paper_vocabulary_size_and_layout():
    v = Vocab(30, 30)
    assert len(v) == 944
    assert v.words[:4] == SPECIALS and v.words[4:14] == KEYWORDS
    assert v.ids["0"] == FIRST_COORD and v.ids["29"] == FIRST_COORD + 29
    assert v.ids["c0"] == FIRST_COORD + 30 and v.words[-1] == "c899"
    assert v.coord(7) == v.ids["7"] and v.cost(123) == v.ids["c123"]


@pytest.mark.parametrize("rows,cols", [(4, 4), (12, 17), (17, 12), (64, 64), (5, 63)])
def test_any_grid_size(rows, cols):
    v = Vocab(rows, cols)
    assert len(v) == 14 + max(rows, cols) + rows * cols
    assert v.is_coord(v.ids[str(max(rows, cols) - 1)]) and not v.is_coord(v.ids["c0"])
    assert v.is_cost(v.ids[f"c{rows * cols - 1}"])
    with pytest.raises(ValueError, match="cost"):
        v.cost(rows * cols)


@pytest.mark.parametrize("rows,cols", [(3, 30), (30, 65), (0, 0)])
def test_grid_size_limits(rows, cols):
    with pytest.raises(ValueError, match="4 to 64"):
        Vocab(rows, cols)


def test_encode_decode_round_trip_and_unknown_words():
    v = vocab_for(8, 8)
    text = "query start 1 2 goal 3 4 wall 0 0 reasoning close 1 2 c0 c4 solution plan 1 2 end"
    ids = v.encode(text)
    assert ids.dtype == np.uint16 and v.decode(ids) == text
    with pytest.raises(ValueError, match="'c64'"):
        v.encode("query c64")
    assert v.encode("query banana", strict=False)[1] == 1  # <|unk|>
    with pytest.raises(ValueError, match="outside"):
        v.decode([len(v)])


def test_parse_js_fixture_line():
    line = json.loads((DATA / "js" / "wilson_train_seed7_8x8.jsonl").read_text().splitlines()[0])["text"]
    v = vocab_for(8, 8)
    walls, start, goal, ops, plan = parse_sequence(v, np.concatenate([[BOS], v.encode(line), [EOS]]))
    words = line.split()
    assert walls.sum() == words.count("wall") and start == (6, 0) and goal == (1, 6)
    assert walls.reshape(8, 8)[7].all()  # offset-0 lattice on an even grid: last row is wall
    assert len(ops) == words.count("create") + words.count("close")
    assert ops[0, 0] == CLOSE_BIT | (0 * 8 + 6) and tuple(ops[0, 1:]) == (0, 11)
    assert plan[0] == 6 and plan[-1] == 6 * 8 + 1 and len(plan) == words.count("plan")


@pytest.mark.parametrize("text,reason", [
    ("query start 1 2 goal 3 4 solution plan 1 2 end", "reasoning"),
    ("query start 1 2 goal 3 4 wall 0 reasoning solution plan 1 2 end", "wall"),
    ("query start 1 8 goal 3 4 reasoning solution plan 1 2 end", "outside"),
    ("query start 1 2 goal 3 4 reasoning close 1 2 c0 solution plan 1 2 end", "operations"),
    ("query start 1 2 goal 3 4 reasoning close 1 2 c0 c4 solution end", "plan"),
    ("query start 1 2 goal 3 4 reasoning close 1 2 c0 c4 solution plan 1 2", "end"),
    ("query start 1 2 goal 3 4 reasoning close 1 2 5 c4 solution plan 1 2 end", "cost"),
])
def test_parse_rejects_malformed(text, reason):
    v = vocab_for(8, 9)  # 8 rows, 9 cols: the token 8 exists, but y = 8 is outside the grid
    with pytest.raises(ValueError, match=reason):
        parse_sequence(v, v.encode(text))


def test_keyword_ids_are_fixed():
    v = vocab_for(30, 30)
    assert v.ids["reasoning"] == REASONING and v.ids["end"] == END
