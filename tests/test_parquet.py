"""Parquet export (verl / TRL layout) and import of the same layout."""
import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import reasonless
from reasonless.arms import arm_batches, token_layout
from reasonless.cli import main
from reasonless.corpus import Corpus
from reasonless.interchange import import_jsonl
from reasonless.parquet import export_parquet, row_group_rows

SEED = 2**63 + 5  # above int64: the seed column must be uint64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # A non-square grid catches rows/cols mix-ups; several shards and row groups catch batch-boundary mistakes.
    return reasonless.generate(tmp_path_factory.mktemp("pq") / "c", "wilson", count=230, rows=8, cols=10,
                               seed=SEED, shard_size=100)


def _texts(corpus, arm):
    return [t for b in arm_batches(corpus, arm, 3, 1000) for t in b.texts(token_layout(arm))]


@pytest.mark.parametrize("arm", ["correct", "swapped"])
def test_every_column_matches_the_corpus(corpus, tmp_path, arm):
    out = tmp_path / "c.parquet"
    meta = export_parquet(corpus, out, arm=arm, seed=3, row_group=64, split="test")
    f = pq.ParquetFile(out)
    # 230 rows in shards of 100: groups of at most 64 that never straddle a shard (64+36, 64+36, 30)
    assert [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)] == [64, 36, 64, 36, 30]
    assert json.loads(f.schema_arrow.metadata[b"reasonless"]) == meta
    assert meta["arm"] == arm and meta["rows"] == 8 and meta["cols"] == 10
    t = pq.read_table(out).to_pydict()
    texts = _texts(corpus, arm)
    n = len(corpus)
    assert t["text"] == texts
    for i in range(n):
        prompt, response = t["prompt_text"][i], t["response"][i]
        assert prompt + " " + response == texts[i]
        assert prompt.startswith("query start ") and "reasoning" not in prompt
        assert response.startswith("reasoning ") and response.endswith(" end")
        assert t["prompt"][i] == [{"role": "user", "content": prompt}]
        assert t["reward_model"][i] == {"style": "rule", "ground_truth": prompt}
        assert t["extra_info"][i] == {"split": "test", "index": i, "arm": arm, "rows": 8, "cols": 10}
    ex = corpus[57]  # the prompt names this example's own start, goal and walls
    assert t["prompt_text"][57].startswith(f"query start {ex.start[0]} {ex.start[1]} goal {ex.goal[0]} {ex.goal[1]}")
    assert t["prompt_text"][57].count(" wall ") + t["prompt_text"][57].endswith("wall") == int(ex.walls.sum())
    assert t["data_source"] == ["reasonless"] * n and t["ability"] == ["maze_astar"] * n
    assert t["rows"] == [8] * n and t["cols"] == [10] * n
    assert t["generator"] == ["wilson"] * n and t["seed"] == [SEED] * n
    assert t["index"] == list(range(n))
    assert t["maze_hash"] == corpus.column("maze_hash").tolist()
    table = pq.read_table(out)
    assert table.schema.field("seed").type == pa.uint64() and table.schema.field("maze_hash").type == pa.uint64()
    if arm == "swapped":  # the trace is another example's, the problem and plan are this one's
        own = _texts(corpus, "correct")
        assert all(a.split(" reasoning ")[0] == b.split(" reasoning ")[0] for a, b in zip(texts, own))
        assert sum(a != b for a, b in zip(texts, own)) > n // 2


def test_row_groups_are_sized_by_bytes(corpus):
    assert 64 <= row_group_rows(corpus) <= 65_536
    assert row_group_rows(corpus) > 1000  # 8x10 texts are small: big groups


def test_cli_export_then_import_round_trip(corpus, tmp_path, capsys):
    out = tmp_path / "c.parquet"
    assert main(["export", str(corpus.path), "--format", "parquet", "--out", str(out), "--quiet"]) == 0
    assert f"{len(corpus):,} rows" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]  # no temporary left behind
    assert main(["import", str(out), "--out", str(tmp_path / "back"), "--quiet"]) == 0
    assert f"stored trace identical to ours (fifo): {len(corpus)}/{len(corpus)}" in capsys.readouterr().out
    back = Corpus(tmp_path / "back")
    assert (back.rows, back.cols, len(back)) == (8, 10, len(corpus))
    for name in ("start", "goal", "maze_hash"):
        assert np.array_equal(back.column(name), corpus.column(name))


def test_import_accepts_prompt_response_columns_and_names_bad_rows(corpus, tmp_path):
    texts = _texts(corpus, "correct")[:20]
    prompts = [t.split(" reasoning ")[0] for t in texts]
    responses = ["reasoning " + t.split(" reasoning ")[1] for t in texts]
    responses[4] = "reasoning nonsense"
    src = tmp_path / "trl.parquet"
    pq.write_table(pa.table({"prompt": prompts, "response": responses, "rows": [8] * 20, "cols": [10] * 20}), src,
                   row_group_size=7)
    with pytest.raises(ValueError, match=r"trl.parquet:5: "):
        import_jsonl(src, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    report = import_jsonl(src, tmp_path / "y", skip_invalid=True)
    assert report.lines == 20 and report.imported == 19 and [ln for ln, _ in report.skipped] == [5]
    assert report.trace_equal == 19
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["x"]}), bad)
    with pytest.raises(ValueError, match="needs a 'text' column"):
        import_jsonl(bad, tmp_path / "z")


def test_failed_export_leaves_nothing(corpus, tmp_path, monkeypatch):
    from reasonless import parquet

    calls = []
    real = parquet.batch_table

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(*a, **k)

    monkeypatch.setattr(parquet, "batch_table", failing)
    with pytest.raises(OSError, match="disk gone"):
        export_parquet(corpus, tmp_path / "c.parquet", row_group=64)
    assert list(tmp_path.iterdir()) == []
