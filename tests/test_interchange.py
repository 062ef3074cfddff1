import json
from pathlib import Path

import numpy as np
import pytest

from reasonless import _core
from reasonless.corpus import Corpus, generate
from reasonless.interchange import export_jsonl, export_tokens, import_jsonl, load_tokens
from reasonless.stats import describe, sequence_lengths
from reasonless.vocab import BOS, EOS, REASONING, vocab_for

DATA = Path(__file__).parent / "data"
JS = DATA / "paper-tools" / "js"
RUST = DATA / "paper-tools" / "rust"


def texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def grid_of(path: Path) -> tuple[int, int]:
    rows, cols = path.stem.rsplit("_", 1)[1].split("x")
    return int(rows), int(cols)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("c") / "c", "drunkards_walk", 250, rows=11, cols=9, seed=3,
                    shard_size=100)


def test_jsonl_export_import_round_trip_is_lossless(small, tmp_path):
    out = tmp_path / "x.jsonl"
    assert export_jsonl(small, out) == 250
    lines = out.read_bytes().splitlines()
    assert all(line.startswith(b'{"text":"query start ') and line.endswith(b' end"}') for line in lines)
    assert json.loads(lines[7]) == {"text": small[7].text()}
    report = import_jsonl(out, tmp_path / "back", rows=11, cols=9)
    assert (report.imported, report.trace_equal, report.plan_equal) == (250, 250, 250)
    back = Corpus(tmp_path / "back")
    def column(c, name):  # offsets compared as lengths, since shards restart them at 0
        parts = [np.asarray(getattr(s, name)) for s in c.shards]
        return np.concatenate([np.diff(p) for p in parts] if name.endswith("offsets") else parts)

    for name in ("walls", "start", "goal", "maze_hash", "ops", "ops_offsets", "plan", "plan_offsets", "stats"):
        assert np.array_equal(column(small, name), column(back, name)), name
    export_jsonl(back, tmp_path / "y.jsonl")
    assert (tmp_path / "y.jsonl").read_bytes() == out.read_bytes()


@pytest.mark.parametrize("path", sorted(JS.glob("*.jsonl")), ids=lambda p: p.name)
def test_js_fixtures_reimport_with_identical_fifo_traces(path, tmp_path):
    rows, cols = grid_of(path)
    report = import_jsonl(path, tmp_path / "c", rows=rows, cols=cols, skip_invalid=True)
    lines = texts(path)
    assert report.lines == len(lines)
    # The JS tool's defects (see the fixtures' README) are the only lines we refuse.
    for lineno, reason in report.skipped:
        assert "no path" in reason or "same cell" in reason, reason
    assert report.trace_equal == report.imported == len(lines) - len(report.skipped)
    if path.name.startswith("cellular"):
        assert any("no path" in r for _, r in report.skipped)
    exported = tmp_path / "out.jsonl"
    export_jsonl(Corpus(tmp_path / "c"), exported)
    skipped = {ln for ln, _ in report.skipped}
    assert texts(exported) == [t for i, t in enumerate(lines, 1) if i not in skipped]


@pytest.mark.parametrize("path", sorted(RUST.glob("*.jsonl")), ids=lambda p: p.name)
def test_rust_fixtures_import_with_optimal_plans(path, tmp_path):
    report = import_jsonl(path, tmp_path / "c", rows=5, cols=5)  # the lines' rows/cols fields win over the flags
    assert report.imported == 40 and not report.skipped
    assert report.plan_length_equal == 40
    c = Corpus(tmp_path / "c")
    assert (c.rows, c.cols) == (30, 30)


def test_handwritten_fixture_with_a_node_created_twice(tmp_path):
    path = DATA / "handwritten_4x5.jsonl"
    report = import_jsonl(path, tmp_path / "c", rows=4, cols=5)
    assert report.trace_equal == 2
    c = Corpus(tmp_path / "c")
    creates = [op[1:3] for op in c[0].operations if op[0] == "create"]
    assert creates.count((2, 2)) == 2
    assert [op for op in c[0].operations if op[1:3] == (2, 2)] == [
        ("create", 2, 2, 5, 4), ("create", 2, 2, 3, 4), ("close", 2, 2, 3, 4)]
    assert [c[i].text() for i in range(2)] == texts(path)


def write_lines(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = texts(DATA / "handwritten_4x5.jsonl")[0]


@pytest.mark.parametrize("bad,reason", [
    ("{not json", "not valid JSON"),
    ('{"prompt": "x"}', '"text"'),
    (json.dumps({"text": GOOD.replace("reasoning", "thinking")}), "thinking"),
    (json.dumps({"text": GOOD.replace("start 0 1", "start 3 0")}), "start (3, 0) is a wall"),
    (json.dumps({"text": GOOD.replace("goal 4 0", "goal 3 1")}), "goal (3, 1) is a wall"),
    (json.dumps({"text": GOOD.replace(" end", "")}), "end"),
    (json.dumps({"text": GOOD, "rows": 4, "cols": 6}), "differs from the first line"),
    (json.dumps({"text": GOOD, "rows": "4"}), "integers"),
    (json.dumps({"text": GOOD.replace("wall 3 0 wall 1 1", "wall 3 0 wall 4 1 wall 1 1")}), "no path"),
])
def test_malformed_line_is_named_and_nothing_is_written(tmp_path, bad, reason):
    good = json.dumps({"text": GOOD})
    path = write_lines(tmp_path, [good, good, bad, good])
    with pytest.raises(ValueError, match=f"in.jsonl:3: .*{reason}".replace("(", r"\(").replace(")", r"\)")):
        import_jsonl(path, tmp_path / "c", rows=4, cols=5)
    assert not (tmp_path / "c").exists()
    report = import_jsonl(path, tmp_path / "c", rows=4, cols=5, skip_invalid=True)
    assert report.imported == 3 and [ln for ln, _ in report.skipped] == [3]
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["import_report"]["skipped"][0]["line"] == 3 and manifest["kind"] == "imported"


def test_import_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        import_jsonl(DATA / "handwritten_4x5.jsonl", tmp_path / "c", rows=4, cols=5)
    assert (tmp_path / "c" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("arm", ["correct", "none"])
def test_token_export(small, tmp_path, arm):
    meta = export_tokens(small, tmp_path / "t", arm=arm)
    tokens, offsets, prompts, meta2 = load_tokens(tmp_path / "t")
    assert meta == meta2 and meta["examples"] == 250 and meta["tokens"] == len(tokens) == offsets[-1]
    assert tokens.dtype == np.uint16 and offsets.dtype == np.int64 and prompts.dtype == np.int32
    v = vocab_for(11, 9)
    for i in (0, 99, 100, 249):
        seq = tokens[offsets[i]:offsets[i + 1]]
        assert seq[0] == BOS and seq[-1] == EOS and seq[prompts[i]] == REASONING
        assert v.decode(seq[1:-1]) == small[i].text(arm)
    lengths = sequence_lengths(small.column("stats"), arm)
    assert np.array_equal(np.diff(offsets), lengths["total_tokens"])
    assert np.array_equal(prompts, lengths["prompt_tokens"])


def test_stats_lengths_match_the_tokenizer(small):
    s = describe(small)
    assert s["examples"] == 250
    lengths, prompts = _core.token_lengths(next(small.batches()).walls, 11, 9,
                                           next(small.batches()).ops_offsets, next(small.batches()).plan_offsets,
                                           "correct", 0)
    first = sequence_lengths(small.column("stats")[:100])
    assert np.array_equal(first["total_tokens"], lengths) and np.array_equal(first["prompt_tokens"], prompts)
    for q in ("prompt_tokens", "trace_tokens", "plan_tokens", "total_tokens", "operations", "plan_cells"):
        assert s[q]["min"] <= s[q]["median"] <= s[q]["p95"] <= s[q]["max"]
    assert s["trace_tokens"]["mean"] == pytest.approx(5 * s["operations"]["mean"])


def test_every_arm_exports_as_jsonl_and_tokens(small, tmp_path):
    from reasonless.arms import ARMS, arm_tokens, partner_indices

    export_jsonl(small, tmp_path / "correct.jsonl")
    own = texts(tmp_path / "correct.jsonl")
    for arm in ARMS:
        export_jsonl(small, tmp_path / "a.jsonl", arm=arm, seed=3)
        texts_of = texts(tmp_path / "a.jsonl")
        assert len(texts_of) == 250
        for i in (0, 101, 249):  # problem and plan are always the example's own
            assert texts_of[i].split(" reasoning ")[0] == own[i].split(" reasoning ")[0]
            assert texts_of[i].split(" solution ")[1] == own[i].split(" solution ")[1]
        meta = export_tokens(small, tmp_path / arm, arm=arm, seed=3)
        tokens, offsets, prompts, _ = load_tokens(tmp_path / arm)
        assert meta["tokens"] == len(tokens) == offsets[-1] and meta["arm_seed"] == 3
        batch = next(small.batches(100))
        expected, exp_offsets, exp_prompts = arm_tokens(small, batch, arm, seed=3)
        assert np.array_equal(tokens[:offsets[100]], expected) and np.array_equal(prompts[:100], exp_prompts)
        v = vocab_for(11, 9)
        assert v.decode(tokens[offsets[7] + 1:offsets[8] - 1]) == texts_of[7]
    export_jsonl(small, tmp_path / "s.jsonl", arm="swapped", seed=3)
    partners = partner_indices(250, 3)
    got = texts(tmp_path / "s.jsonl")

    def trace(text):
        return text.split(" reasoning ")[1].split(" solution ")[0]

    for i in (0, 5, 200):
        assert trace(got[i]) == trace(own[partners[i]]) != trace(own[i])
