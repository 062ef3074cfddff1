"""C++ tokenizer (reasonless._core.token_lengths / tokenize_into / render_text) against an independent Python
builder of the paper text (docs/design.md §4), the vocabulary of reasonless/vocab.py and the JS tool's fixtures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from reasonless import _core
from reasonless.vocab import BOS, EOS, PAD, REASONING, Vocab

JS_DIR = Path(__file__).parent / "data" / "paper-tools" / "js"
CLOSE = 0x8000


# ----------------------------------------------------------------------------- independent reference

def build_text(walls_row, rows, cols, start, goal, ops, plan, arm="correct") -> str:
    """The paper's text, word by word, from one example's arrays."""
    words = ["query", "start", str(start[0]), str(start[1]), "goal", str(goal[0]), str(goal[1])]
    for y in range(rows):
        for x in range(cols):
            if walls_row[y * cols + x]:
                words += ["wall", str(x), str(y)]
    words.append("reasoning")
    if arm == "correct":
        for c, g, h in ops.tolist():
            cell = c & 0x7FFF
            words += ["close" if c & CLOSE else "create", str(cell % cols), str(cell // cols), f"c{g}", f"c{h}"]
    words.append("solution")
    for cell in plan.tolist():
        words += ["plan", str(cell % cols), str(cell // cols)]
    words.append("end")
    return " ".join(words)


def random_batch(rng, n, rows, cols, max_ops=40, max_plan=20, ops_lead=0, plan_lead=0):
    """Random arrays in the shared layout; they need not be real A* results to be tokenized. ops_lead /
    plan_lead put unrelated rows before the first example so that offsets start above zero."""
    cells = rows * cols
    density = rng.uniform(0, 1, size=(n, 1))
    walls = (rng.random((n, cells)) < density).astype(np.uint8)
    start = np.stack([rng.integers(0, cols, n), rng.integers(0, rows, n)], axis=1).astype(np.int32)
    goal = np.stack([rng.integers(0, cols, n), rng.integers(0, rows, n)], axis=1).astype(np.int32)
    n_ops = rng.integers(0, max_ops + 1, n)
    n_ops[rng.random(n) < 0.1] = 0
    n_plan = rng.integers(0, max_plan + 1, n)
    n_plan[rng.random(n) < 0.1] = 0  # unsolvable mazes have empty plans
    m, p = ops_lead + int(n_ops.sum()), plan_lead + int(n_plan.sum())
    ops = np.empty((m, 3), dtype=np.uint16)
    ops[:, 0] = rng.integers(0, cells, m) | (rng.integers(0, 2, m) * CLOSE)
    ops[:, 1:] = rng.integers(0, cells, (m, 2))
    plan = rng.integers(0, cells, p).astype(np.uint16)
    ops_offsets = ops_lead + np.concatenate([[0], np.cumsum(n_ops)]).astype(np.int64)
    plan_offsets = plan_lead + np.concatenate([[0], np.cumsum(n_plan)]).astype(np.int64)
    return dict(walls=walls, rows=rows, cols=cols, start=start, goal=goal, ops=ops, ops_offsets=ops_offsets,
                plan=plan, plan_offsets=plan_offsets)


def expected_sequences(b, arm="correct"):
    v = Vocab(b["rows"], b["cols"])
    seqs, texts = [], []
    for i in range(len(b["walls"])):
        ops = b["ops"][b["ops_offsets"][i]:b["ops_offsets"][i + 1]]
        plan = b["plan"][b["plan_offsets"][i]:b["plan_offsets"][i + 1]]
        text = build_text(b["walls"][i], b["rows"], b["cols"], b["start"][i], b["goal"][i], ops, plan, arm)
        texts.append(text)
        seqs.append(np.concatenate([[BOS], v.encode(text), [EOS]]).astype(np.uint16))
    return seqs, texts


def lengths_of(b, arm="correct", threads=0):
    return _core.token_lengths(b["walls"], b["rows"], b["cols"], b["ops_offsets"], b["plan_offsets"], arm, threads)


def tokenize(b, arm="correct", threads=0, out=None, out_offsets=None):
    lengths, prompts = lengths_of(b, arm, threads)
    if out_offsets is None:
        out_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if out is None:
        out = np.full(int(out_offsets[-1]), 0xFFFF, dtype=np.uint16)
    _core.tokenize_into(b["walls"], b["rows"], b["cols"], b["start"], b["goal"], b["ops"], b["ops_offsets"],
                        b["plan"], b["plan_offsets"], out, out_offsets, arm, threads)
    return out, out_offsets, lengths, prompts


def texts_of(blob, text_offsets):
    data = np.asarray(blob).tobytes()
    return [data[a:b].decode("ascii") for a, b in zip(text_offsets[:-1].tolist(), text_offsets[1:].tolist())]


# ----------------------------------------------------------------------------- tokenization

@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8), (12, 17), (17, 12), (30, 30), (4, 64), (64, 64)])
@pytest.mark.parametrize("arm", ["correct", "none"])
def test_matches_python_builder(rows, cols, arm):
    rng = np.random.default_rng(rows * 100 + cols + (arm == "none"))
    b = random_batch(rng, 60, rows, cols, ops_lead=3, plan_lead=2)
    out, offsets, lengths, prompts = tokenize(b, arm)
    seqs, _ = expected_sequences(b, arm)
    assert lengths.dtype == np.int64 and prompts.dtype == np.int32
    assert lengths.tolist() == [len(s) for s in seqs]
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(out[offsets[i]:offsets[i + 1]], s, err_msg=f"example {i}")
        # the prompt is everything before `reasoning`, <|bos|> included
        assert prompts[i] == int(np.flatnonzero(s == REASONING)[0]) == 8 + 3 * int(b["walls"][i].sum())


def test_arm_none_drops_only_the_ops():
    b = random_batch(np.random.default_rng(1), 30, 10, 10)
    full, off_full, len_full, p_full = tokenize(b, "correct")
    none, off_none, len_none, p_none = tokenize(b, "none")
    np.testing.assert_array_equal(p_full, p_none)
    np.testing.assert_array_equal(len_full - len_none, 5 * np.diff(b["ops_offsets"]))
    for i in range(30):
        s = none[off_none[i]:off_none[i + 1]]
        r = int(np.flatnonzero(s == REASONING)[0])
        assert s[r + 1] == Vocab(10, 10).ids["solution"]


def test_extremes_of_the_grid_and_empty_parts():
    """All walls, no walls, the last cell and largest cost, no ops and no plan."""
    for rows, cols in [(4, 4), (12, 17), (64, 64)]:
        cells = rows * cols
        walls = np.zeros((3, cells), np.uint8)
        walls[0] = 1
        walls[2, -1] = 1
        start = np.array([[cols - 1, rows - 1], [0, 0], [cols - 1, 0]], np.int32)
        goal = np.array([[0, rows - 1], [cols - 1, rows - 1], [0, 0]], np.int32)
        ops = np.array([[(cells - 1) | CLOSE, cells - 1, 0], [0, 0, cells - 1]], np.uint16)
        plan = np.array([cells - 1, 0], np.uint16)
        b = dict(walls=walls, rows=rows, cols=cols, start=start, goal=goal, ops=ops,
                 ops_offsets=np.array([0, 2, 2, 2], np.int64), plan=plan, plan_offsets=np.array([0, 0, 2, 2], np.int64))
        out, offsets, _, _ = tokenize(b)
        seqs, _ = expected_sequences(b)
        for i in range(3):
            np.testing.assert_array_equal(out[offsets[i]:offsets[i + 1]], seqs[i])


def test_vocabulary_ids_match_vocab_py():
    for rows, cols in [(30, 30), (12, 17), (17, 12), (4, 4), (64, 64), (5, 40)]:
        v = Vocab(rows, cols)
        cells = rows * cols
        x, y, g, h = cols - 1, rows - 1, cells - 1, cells // 2
        b = dict(walls=np.zeros((1, cells), np.uint8), rows=rows, cols=cols,
                 start=np.array([[x, y]], np.int32), goal=np.array([[0, 0]], np.int32),
                 ops=np.array([[y * cols + x, g, h]], np.uint16), ops_offsets=np.array([0, 1], np.int64),
                 plan=np.zeros(0, np.uint16), plan_offsets=np.array([0, 0], np.int64))
        out, _, _, _ = tokenize(b)
        assert out[3] == v.coord(x) and out[4] == v.coord(y)
        # ... reasoning create X Y cG cH solution end eos
        assert out.tolist()[-9:] == [REASONING, v.ids["create"], v.coord(x), v.coord(y), v.cost(g), v.cost(h),
                                     v.ids["solution"], v.ids["end"], EOS]
        # the largest id renders, one past it is outside the vocabulary
        last = np.array([len(v) - 1], np.uint16)
        blob, _ = _core.render_text(last, np.array([0, 1], np.int64), rows, cols)
        assert bytes(blob).decode() == v.words[-1] == f"c{cells - 1}"
        with pytest.raises(ValueError, match="sequence 0"):
            _core.render_text(last + 1, np.array([0, 1], np.int64), rows, cols)
    assert len(Vocab(30, 30)) == 944
    _core.render_text(np.array([943], np.uint16), np.array([0, 1], np.int64), 30, 30)
    with pytest.raises(ValueError, match="944-token vocabulary"):
        _core.render_text(np.array([944], np.uint16), np.array([0, 1], np.int64), 30, 30)


def test_threads_agree_and_nothing_is_written_outside_the_spans():
    b = random_batch(np.random.default_rng(7), 3000, 30, 30, max_ops=80, max_plan=60)
    lengths, prompts = lengths_of(b, threads=1)
    l2, p2 = lengths_of(b, threads=2)
    np.testing.assert_array_equal(lengths, l2)
    np.testing.assert_array_equal(prompts, p2)
    # a gap before, between-free spans, and slack after: the sentinel must survive outside the spans
    offsets = 5 + np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    results = []
    for threads in (1, 2, 0):
        out = np.full(int(offsets[-1]) + 7, 0xFFFF, dtype=np.uint16)
        tokenize(b, threads=threads, out=out, out_offsets=offsets)
        assert (out[:5] == 0xFFFF).all() and (out[-7:] == 0xFFFF).all()
        assert not (out[5:-7] == 0xFFFF).any()
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    seqs, _ = expected_sequences({k: (v[:200] if k in ("walls", "start", "goal") else v) for k, v in b.items()})
    for i in range(200):
        np.testing.assert_array_equal(results[1][offsets[i]:offsets[i + 1]], seqs[i])


def test_writes_into_a_memory_map(tmp_path):
    b = random_batch(np.random.default_rng(3), 200, 12, 17)
    lengths, _ = lengths_of(b)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    path = tmp_path / "tokens.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(int(offsets[-1]),))
    tokenize(b, out=mm, out_offsets=offsets, threads=2)
    mm.flush()
    del mm
    back = np.load(path)
    seqs, _ = expected_sequences(b)
    np.testing.assert_array_equal(back, np.concatenate(seqs))


def test_non_contiguous_inputs_are_read_correctly():
    b = random_batch(np.random.default_rng(4), 40, 8, 8)
    out_ref, _, _, _ = tokenize(b)
    wide = np.zeros((40, 2, 64), np.uint8)
    wide[:, 0] = b["walls"]
    ops_wide = np.zeros((len(b["ops"]), 6), np.uint16)
    ops_wide[:, ::2] = b["ops"]
    b2 = dict(b, walls=wide[:, 0], start=np.asfortranarray(b["start"]), ops=ops_wide[:, ::2])
    assert not b2["walls"].flags.c_contiguous and not b2["ops"].flags.c_contiguous
    out, _, _, _ = tokenize(b2)
    np.testing.assert_array_equal(out, out_ref)


def test_empty_batch():
    b = random_batch(np.random.default_rng(0), 0, 6, 6)
    out, offsets, lengths, prompts = tokenize(b)
    assert len(out) == 0 and len(lengths) == 0 and len(prompts) == 0
    blob, text_offsets = _core.render_text(out, offsets, 6, 6)
    assert len(blob) == 0 and text_offsets.tolist() == [0]


# ----------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("rows,cols", [(4, 4), (12, 17), (30, 30), (64, 64)])
def test_render_of_tokenize_is_the_python_text(rows, cols):
    b = random_batch(np.random.default_rng(rows + cols), 80, rows, cols)
    out, offsets, _, _ = tokenize(b)
    _, texts = expected_sequences(b)
    for threads in (1, 2):
        blob, text_offsets = _core.render_text(out, offsets, rows, cols, threads)
        assert np.asarray(blob).dtype == np.uint8 and text_offsets.dtype == np.int64
        assert texts_of(blob, text_offsets) == texts


def test_render_drops_pad_bos_eos_and_keeps_unk():
    v = Vocab(8, 8)
    seq = np.array([BOS, PAD] + v.encode("query start 1 2").tolist() + [PAD, 1, EOS, PAD], np.uint16)
    other = v.encode("wall 7 7 c63")
    tokens = np.concatenate([seq, [PAD, BOS, EOS], other]).astype(np.uint16)
    offsets = np.array([0, len(seq), len(seq), len(seq) + 3, len(tokens)], np.int64)
    blob, text_offsets = _core.render_text(tokens, offsets, 8, 8)
    assert texts_of(blob, text_offsets) == ["query start 1 2 <|unk|>", "", "", "wall 7 7 c63"]


def js_fixtures():
    files = sorted(JS_DIR.glob("*.jsonl"))
    assert files, f"no fixtures in {JS_DIR}"
    return files


@pytest.mark.parametrize("path", js_fixtures(), ids=lambda p: p.name)
def test_js_fixture_lines_render_back_and_tokenize_identically(path):
    rows, cols = map(int, re.search(r"_(\d+)x(\d+)\.jsonl$", path.name).groups())  # ROWSxCOLS
    v = Vocab(rows, cols)
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    seqs = [np.concatenate([[BOS], v.encode(t), [EOS]]).astype(np.uint16) for t in texts]
    tokens = np.concatenate(seqs)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    blob, text_offsets = _core.render_text(tokens, offsets, rows, cols, 2)
    assert texts_of(blob, text_offsets) == texts

    # Parse the fixtures into the shared arrays and tokenize them: the JS tool's own sequences come back.
    b = parse_paper_texts(texts, rows, cols)
    out, out_offsets, lengths, prompts = tokenize(b)
    np.testing.assert_array_equal(out, tokens)
    np.testing.assert_array_equal(out_offsets, offsets)


def parse_paper_texts(texts, rows, cols):
    """Paper text -> arrays, independently of the C++ code (walls are re-sorted row-major by the builder)."""
    n, cells = len(texts), rows * cols
    walls = np.zeros((n, cells), np.uint8)
    start = np.zeros((n, 2), np.int32)
    goal = np.zeros((n, 2), np.int32)
    ops, plan, n_ops, n_plan = [], [], [], []
    for i, text in enumerate(texts):
        w = text.split()
        start[i], goal[i] = (int(w[2]), int(w[3])), (int(w[5]), int(w[6]))
        k, before = 7, (len(ops), len(plan))
        while k < len(w):
            word = w[k]
            if word == "wall":
                walls[i, int(w[k + 2]) * cols + int(w[k + 1])] = 1
                k += 3
            elif word in ("create", "close"):
                cell = int(w[k + 2]) * cols + int(w[k + 1])
                ops.append((cell | (CLOSE if word == "close" else 0), int(w[k + 3][1:]), int(w[k + 4][1:])))
                k += 5
            elif word == "plan":
                plan.append(int(w[k + 2]) * cols + int(w[k + 1]))
                k += 3
            else:
                k += 1
        n_ops.append(len(ops) - before[0])
        n_plan.append(len(plan) - before[1])
    return dict(walls=walls, rows=rows, cols=cols, start=start, goal=goal,
                ops=np.array(ops, np.uint16).reshape(-1, 3), ops_offsets=np.concatenate([[0], np.cumsum(n_ops)]).astype(np.int64),
                plan=np.array(plan, np.uint16), plan_offsets=np.concatenate([[0], np.cumsum(n_plan)]).astype(np.int64))


# ----------------------------------------------------------------------------- bad inputs

@pytest.fixture
def batch():
    return random_batch(np.random.default_rng(11), 1000, 10, 10)


def raises(match, b, arm="correct", out=None, out_offsets=None, threads=2):
    with pytest.raises(ValueError, match=match):
        tokenize(b, arm, threads, out=out, out_offsets=out_offsets)


def test_unknown_arm(batch):
    with pytest.raises(ValueError, match="token layout must be 'correct', 'none' or 'no_costs'"):
        lengths_of(batch, "reasonless")
    raises("token layout must be", batch, arm="Correct")


def test_out_offsets_inconsistent_or_out_too_small(batch):
    lengths, _ = lengths_of(batch)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    bad = offsets.copy()
    bad[500] += 1  # example 499 one token longer, 500 one shorter
    raises(r"^example 499: out_offsets\[499\]", batch, out_offsets=bad)
    # spans from the other arm
    none_lengths, _ = lengths_of(batch, "none")
    none_offsets = np.concatenate([[0], np.cumsum(none_lengths)]).astype(np.int64)
    first = int(np.flatnonzero(none_lengths != lengths)[0])
    raises(rf"^example {first}: out_offsets", batch, out_offsets=none_offsets)
    # out one token short: the last example does not fit
    short = np.zeros(int(offsets[-1]) - 1, np.uint16)
    raises("^example 999: .*inside out of length", batch, out=short, out_offsets=offsets)
    raises("^example 0: ", batch, out=np.zeros(int(offsets[-1]), np.uint16), out_offsets=offsets - 1)
    raises("out_offsets.shape", batch, out_offsets=offsets[:-1])


def test_cells_and_costs_out_of_range(batch):
    cells = 100
    for column, value, match in [(0, cells, "has cell 100"), (0, CLOSE | cells, "has cell 100"),
                                 (1, cells, "costs must be below"), (2, 65535, "costs must be below")]:
        b = dict(batch, ops=batch["ops"].copy())
        row = int(batch["ops_offsets"][700]) + 1
        assert batch["ops_offsets"][701] > row
        b["ops"][row, column] = value
        raises(f"^example 700: op 1 .*{match}", b)
        # the same values are harmless when the arm leaves ops out
        tokenize(b, "none")
    b = dict(batch, plan=batch["plan"].copy())
    b["plan"][batch["plan_offsets"][650]] = cells
    raises("^example 650: plan step 0 .*cell 100", b)


def test_first_bad_example_is_reported_whatever_the_threads(batch):
    b = dict(batch, plan=batch["plan"].copy())
    for i in (990, 333, 870):
        if batch["plan_offsets"][i + 1] > batch["plan_offsets"][i]:
            b["plan"][batch["plan_offsets"][i]] = 4000
    first = min(i for i in (990, 333, 870) if batch["plan_offsets"][i + 1] > batch["plan_offsets"][i])
    for threads in (1, 2):
        raises(f"^example {first}: ", b, threads=threads)


def test_bad_offsets_coordinates_walls_and_arrays(batch):
    oo = batch["ops_offsets"].copy()
    oo[400] = oo[401] + 1  # example 400 ends before it starts
    raises(r"^example 400: ops_offsets", dict(batch, ops_offsets=oo))
    with pytest.raises(ValueError, match=r"^example 400: ops_offsets"):
        lengths_of(dict(batch, ops_offsets=oo))
    oo = batch["ops_offsets"].copy()
    oo[-1] = len(batch["ops"]) + 1  # past the array
    raises(r"^example 999: ops_offsets.*at most", dict(batch, ops_offsets=oo))
    po = batch["plan_offsets"].copy()
    po[0] = -1
    raises(r"^example 0: plan_offsets", dict(batch, plan_offsets=po))

    start = batch["start"].copy()
    start[5] = (10, 0)  # x == cols
    raises(r"^example 5: start \(x=10, y=0\) is outside", dict(batch, start=start))
    goal = batch["goal"].copy()
    goal[6] = (0, -1)
    raises(r"^example 6: goal", dict(batch, goal=goal))
    walls = batch["walls"].copy()
    walls[8, 3] = 2
    raises(r"^example 8: walls\[8, 3\] = 2", dict(batch, walls=walls))
    with pytest.raises(ValueError, match=r"^example 8: walls"):
        lengths_of(dict(batch, walls=walls))

    raises("walls must have dtype uint8, got int64", dict(batch, walls=batch["walls"].astype(np.int64)))
    raises(r"walls.shape\[1\] = 100, expected 99", dict(batch, cols=9, rows=11))
    raises("ops must have dtype uint16", dict(batch, ops=batch["ops"].astype(np.int32)))
    raises(r"ops.shape\[1\]", dict(batch, ops=batch["ops"][:, :2]))
    raises("start must have dtype int32", dict(batch, start=batch["start"].astype(np.int64)))
    raises(r"start.shape\[0\]", dict(batch, start=batch["start"][1:]))
    raises("plan_offsets must be a numpy int64 array", dict(batch, plan_offsets=batch["plan_offsets"].tolist()))
    raises("rows=3", dict(batch, rows=3))
    with pytest.raises(ValueError, match="out must be a numpy uint16 array, got dtype int32"):
        tokenize(batch, out=np.zeros(10**6, np.int32))
    ro = np.zeros(10**6, np.uint16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        tokenize(batch, out=ro)
    with pytest.raises(ValueError, match="out must be contiguous"):
        tokenize(batch, out=np.zeros(2 * 10**6, np.uint16)[::2])


def test_render_rejects_bad_offsets_and_ids():
    tokens = np.array([4, 5, 6, 7, 8, 9], np.uint16)
    with pytest.raises(ValueError, match=r"offsets\[1\] = 7"):
        _core.render_text(tokens, np.array([0, 7], np.int64), 4, 4)
    with pytest.raises(ValueError, match=r"offsets\[2\] = 1"):
        _core.render_text(tokens, np.array([0, 3, 1], np.int64), 4, 4)
    bad = tokens.copy()
    bad[4] = len(Vocab(4, 4))
    with pytest.raises(ValueError, match=r"^sequence 1: token id 34 at position 1 is outside the 34-token"):
        _core.render_text(bad, np.array([0, 3, 6], np.int64), 4, 4)
    with pytest.raises(ValueError, match="tokens must have dtype uint16"):
        _core.render_text(tokens.astype(np.int64), np.array([0, 6], np.int64), 4, 4)
