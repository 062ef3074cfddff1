"""The verifier on what the rest of the project produces: our A* traces and the CLI."""
import json

import numpy as np
import pytest

from reasonless import verifier as verify
from reasonless.cli import main
from reasonless.corpus import generate

GENERATORS = ["wilson", "kruskal", "dfs", "drunkards_walk", "searchformer", "cellular_automata"]
POLICIES = ["fifo", "min_g", "max_g", "lifo", "random"]


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("rows,cols", [(4, 4), (13, 8), (30, 30)])
def test_every_trace_our_astar_writes_passes_both_modes(tmp_path, generator, rows, cols):
    for policy in POLICIES:
        corpus = generate(tmp_path / policy, generator, 60, rows=rows, cols=cols, seed=11, tie_break=policy)
        for mode in verify.MODES:
            v = verify.verify_corpus(corpus, mode=mode)
            bad = np.flatnonzero(~(v.trace_valid & v.plan_valid & v.plan_optimal))
            assert bad.size == 0, (policy, mode, [v.first_error_name(i) for i in bad[:3]])
            assert np.array_equal(v.n_ops, corpus.column("stats")[:, 1])


def test_verify_command_on_a_corpus_and_on_jsonl(tmp_path, capsys):
    corpus = generate(tmp_path / "c", "searchformer", 50, rows=10, cols=10, seed=1)
    assert main(["verify", str(tmp_path / "c"), "--per-example", str(tmp_path / "v.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "examples" in out and "100.00 %" in out
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(50)) and all(r["trace_valid"] for r in rows)

    # Predictions: the corpus's own responses, with example 1's trace swapped for example 0's.
    texts = [corpus[i].text() for i in range(3)]
    prompts = [t[:t.index(" reasoning")] for t in texts]
    responses = [t[t.index("reasoning"):] for t in texts]
    responses[1] = responses[0]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"prompt": p, "response": r, "rows": 10, "cols": 10}) + "\n"
                            for p, r in zip(prompts, responses)))
    assert main(["verify", str(pred), "--json", "--mode", "paper", "--per-example", str(tmp_path / "p.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 3 and summary["mode"] == "paper"
    per = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["trace_valid"] for p in per] == [True, False, True]
    assert per[1]["first_error"] is not None and per[1]["first_error_at"] is not None

    pred.write_text('{"prompt": "query start 0 0", "response": "reasoning"}\n{oops\n')
    assert main(["verify", str(pred)]) == 2
    assert "pred.jsonl:1" in capsys.readouterr().err


def test_package_level_verify_function(tmp_path):
    import reasonless

    corpus = generate(tmp_path / "c", "dfs", 4, rows=8, cols=8, seed=3)
    batch = next(corpus.batches())
    responses = [t[t.index("reasoning"):] for t in batch.texts()]
    responses[2] = responses[2].replace("close", "create", 1)  # the first operation may not be a create
    v = reasonless.verify(batch.walls, batch.start, batch.goal, responses, rows=8, cols=8, mode="paper")
    assert v.trace_valid.tolist() == [True, True, False, True]
    assert v.first_error_name(2) == "first_create_not_last_closed"


def _damaged(batch, seed):
    """The batch with some ops' costs and cells changed, so that many verdicts are failures of several kinds."""
    rng = np.random.default_rng(seed)
    ops = batch.ops.copy()
    hit = rng.random(len(ops)) < 0.01
    ops[hit, 1] = np.minimum(ops[hit, 1] + 1, batch.rows * batch.cols - 1)
    moved = rng.random(len(ops)) < 0.005
    ops[moved, 0] = (ops[moved, 0] & 0x8000) | ((ops[moved, 0] & 0x7FFF) + 1) % (batch.rows * batch.cols)
    return ops


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_fused_corpus_verification_equals_verifying_the_tokens(tmp_path, mode):
    from reasonless import _core

    corpus = generate(tmp_path / "c", "drunkards_walk", 400, rows=12, cols=9, seed=5)
    b = next(corpus.batches())
    ops = _damaged(b, 1)
    tokens, offsets, prompts = b.tokens("correct")
    # The same examples with the damaged ops, tokenized the ordinary way and verified as token streams...
    _core.tokenize_into(b.walls, b.rows, b.cols, b.start, b.goal, ops, b.ops_offsets, b.plan, b.plan_offsets,
                        tokens, offsets, "correct", 0)
    want = _core.verify_batch(b.walls, b.rows, b.cols, b.start, b.goal, tokens, offsets[:-1] + prompts, offsets[1:],
                              mode, 2)
    assert 0 < want["trace_valid"].sum() < len(b)  # the damage made failures, not only
    # ... and fused, on offsets that do not start at 0 (a window of the shard's arrays, as verify_corpus passes).
    lo, hi = 37, 311
    got = _core.verify_examples(b.walls[lo:hi], b.rows, b.cols, b.start[lo:hi], b.goal[lo:hi], ops,
                                b.ops_offsets[lo:hi + 1], b.plan, b.plan_offsets[lo:hi + 1], mode, 2)
    for field, value in want.items():
        assert np.array_equal(got[field], value[lo:hi]), field


def test_fused_corpus_verification_names_the_bad_example(tmp_path):
    from reasonless import _core

    corpus = generate(tmp_path / "c", "wilson", 20, rows=8, cols=8, seed=5)
    b = next(corpus.batches())
    walls = b.walls.copy()
    x, y = b.goal[13]
    walls[13, y * 8 + x] = 1
    with pytest.raises(ValueError, match=r"example 13: goal \(\d, \d\) is a wall"):
        _core.verify_examples(walls, 8, 8, b.start, b.goal, b.ops, b.ops_offsets, b.plan, b.plan_offsets)
    ops = b.ops.copy()
    ops[b.ops_offsets[4] + 2, 1] = 64  # a cost outside the 8x8 vocabulary
    with pytest.raises(ValueError, match="example 4: op 2 .* costs must be below rows\\*cols = 64"):
        _core.verify_examples(b.walls, 8, 8, b.start, b.goal, ops, b.ops_offsets, b.plan, b.plan_offsets)
