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
