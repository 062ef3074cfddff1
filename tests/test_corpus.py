import json
from collections import deque

import numpy as np
import pytest

import reasonless
from reasonless import corpus as corpus_mod
from reasonless.corpus import SHARD_FILES, Corpus, generate, merge
from reasonless.vocab import BOS, EOS, REASONING

SMALL = dict(generator="kruskal", count=300, rows=10, cols=12, seed=5)


def arrays(c: Corpus) -> dict[str, np.ndarray]:
    """Every shard array concatenated, offsets made global: what 'the same corpus' means byte for byte."""
    out = {}
    for name in SHARD_FILES:
        parts = [np.asarray(getattr(s, name)) for s in c.shards]
        if name.endswith("_offsets"):
            base, fixed = 0, []
            for p in parts:
                fixed.append(p[:-1] + base)
                base += int(p[-1])
            parts = fixed + [np.array([base])]
        out[name] = np.concatenate(parts)
    return out


def assert_same_corpus(a: Corpus, b: Corpus):
    x, y = arrays(a), arrays(b)
    for name in SHARD_FILES:
        assert np.array_equal(x[name], y[name]), name


def bfs_length(walls2d, start, goal):
    rows, cols = walls2d.shape
    dist = {start: 1}
    q = deque([start])
    while q:
        x, y = q.popleft()
        for nx, ny in ((x, y - 1), (x + 1, y), (x, y + 1), (x - 1, y)):
            if 0 <= nx < cols and 0 <= ny < rows and not walls2d[ny, nx] and (nx, ny) not in dist:
                dist[(nx, ny)] = dist[(x, y)] + 1
                q.append((nx, ny))
    return dist.get(goal)


def test_generate_writes_a_complete_corpus(tmp_path):
    c = generate(tmp_path / "c", shard_size=128, **SMALL)
    assert len(c) == 300 and [s.count for s in c.shards] == [128, 128, 44]
    m = c.manifest
    assert m["generator"] == "kruskal" and m["rows"] == 10 and m["cols"] == 12 and m["seed"] == 5
    assert m["counts"]["examples"] == 300 and m["vocab"]["size"] == 14 + 12 + 120
    assert m["instances"] == [0, 300] and m["tie_break"] == "fifo"
    c.verify_checksums()
    assert not list((tmp_path / "c").glob("*.tmp-*"))
    stats = c.column("stats")
    assert stats.shape == (300, 3)
    for i in (0, 127, 128, 299, -1):
        ex = c[i]
        assert ex.walls.shape == (10, 12)
        assert not ex.grid[ex.start[1], ex.start[0]] and not ex.grid[ex.goal[1], ex.goal[0]]
        assert ex.plan[0] == ex.start and ex.plan[-1] == ex.goal
        assert len(ex.plan) == bfs_length(ex.grid, ex.start, ex.goal)
        ops = ex.operations
        assert ops[0][:3] == ("close", *ex.start) and ops[-1][:3] == ("close", *ex.goal)
        k = i % 300
        assert tuple(stats[k]) == (ex.walls.sum(), len(ops), len(ex.plan))
    with pytest.raises(IndexError):
        c[300]


def test_example_text_and_tokens(tmp_path):
    c = generate(tmp_path / "c", **SMALL)
    ex = c[3]
    text = ex.text()
    assert text.startswith(f"query start {ex.start[0]} {ex.start[1]} goal {ex.goal[0]} {ex.goal[1]} wall ")
    assert text.endswith("end") and text.count(" wall ") == ex.walls.sum()
    tokens = ex.tokens()
    assert tokens[0] == BOS and tokens[-1] == EOS
    assert c.vocab.decode(tokens[1:-1]) == text
    none = ex.text("none")
    assert "reasoning solution plan" in none and "close" not in none
    assert (tokens == REASONING).sum() == 1


def test_thread_count_does_not_change_bytes(tmp_path):
    a = generate(tmp_path / "a", threads=1, shard_size=100, **SMALL)
    b = generate(tmp_path / "b", threads=2, shard_size=100, **SMALL)
    for sa, sb in zip(a.shards, b.shards):
        for f in sa.path.iterdir():
            assert f.read_bytes() == (sb.path / f.name).read_bytes(), f.name


@pytest.mark.parametrize("tie_break", ["fifo", "random"])
def test_shard_split_does_not_change_content(tmp_path, tie_break):
    whole = generate(tmp_path / "whole", shard_size=1000, tie_break=tie_break, **SMALL)
    small = generate(tmp_path / "small", shard_size=7, tie_break=tie_break, **SMALL)
    assert len(small.shards) == 43
    assert_same_corpus(whole, small)


def test_distributed_parts_then_merge(tmp_path):
    ref = generate(tmp_path / "ref", shard_size=50, **SMALL)
    parts = []
    for k in range(3):
        part = tmp_path / f"part{k}"
        assert generate(part, shard_size=50, shard=f"{k}/3", **SMALL) is None
        assert not (part / "manifest.json").exists()
        parts.append(part)
    with pytest.raises(ValueError, match="shards missing"):
        merge(parts[:2], tmp_path / "incomplete")
    assert not (tmp_path / "incomplete").exists()
    merged = merge(parts, tmp_path / "merged")
    assert len(merged) == 300
    merged.verify_checksums()
    assert_same_corpus(ref, merged)
    # All parts writing into one shared directory completes it without a merge.
    for k in range(3):
        last = generate(tmp_path / "shared", shard_size=50, shard=f"{k}/3", **SMALL)
    assert last is not None and len(last) == 300
    assert_same_corpus(ref, last)


def test_merge_refuses_mixed_corpora_and_damage(tmp_path):
    generate(tmp_path / "a", shard_size=100, shard="0/2", **SMALL)
    generate(tmp_path / "b", shard_size=100, shard="1/2", **{**SMALL, "seed": 6})
    with pytest.raises(ValueError, match="different corpus"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    generate(tmp_path / "c", shard_size=100, shard="1/2", **SMALL)
    victim = next((tmp_path / "c").glob("shard-*")) / "plan.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        merge([tmp_path / "a", tmp_path / "c"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_interrupted_run_resumes_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "c"
    real = corpus_mod.write_shard
    calls = []

    def failing(directory, index, batch, key):
        calls.append(index)
        if len(calls) == 3:
            # Die in the middle of writing the third shard: after some files are in the temporary directory.
            def boom(*a, **k):
                raise KeyboardInterrupt

            monkeypatch.setattr(corpus_mod, "save_npy", boom)
        return real(directory, index, batch, key)

    monkeypatch.setattr(corpus_mod, "write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(out, shard_size=64, **SMALL)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000", "shard-00001"]
    # A stale temporary directory from a killed process is cleaned up too.
    (out / "shard-00002.tmp-99999").mkdir()
    calls.clear()
    monkeypatch.setattr(corpus_mod, "write_shard", lambda *a: calls.append(a[1]) or real(*a))
    resumed = generate(out, shard_size=64, **SMALL)
    assert calls == [2, 3, 4]
    assert_same_corpus(resumed, generate(tmp_path / "fresh", shard_size=64, **SMALL))
    assert not list(out.glob("*.tmp-*"))


def test_damaged_shard_is_remade(tmp_path):
    out = tmp_path / "c"
    ref = generate(out, shard_size=100, **SMALL)
    expected = arrays(ref)
    (out / "manifest.json").unlink()
    (out / "shard-00001" / "ops.npy").unlink()
    again = generate(out, shard_size=100, **SMALL)
    for name, arr in arrays(again).items():
        assert np.array_equal(arr, expected[name])


def test_refuses_to_overwrite_other_data(tmp_path):
    generate(tmp_path / "c", **SMALL)
    with pytest.raises(ValueError, match="different corpus"):
        generate(tmp_path / "c", **{**SMALL, "seed": 9})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a corpus"):
        generate(tmp_path / "d", **SMALL)
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs,match", [
    ({"generator": "prim"}, "prim"),
    ({"params": {"coverage": "0.5"}}, "coverage"),
    ({"rows": 3}, "rows"),
    ({"cols": 65}, "cols"),
    ({"count": 0}, "count"),
    ({"tie_break": "best"}, "tie-break"),
    ({"shard": "3/3"}, "shard"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(tmp_path / "c", **{**SMALL, **kwargs})
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


@pytest.mark.parametrize("generator", ["wilson", "kruskal", "dfs", "drunkards_walk", "searchformer",
                                       "cellular_automata"])
def test_every_generator_and_tie_break_end_to_end(tmp_path, generator):
    for tie_break in ("fifo", "min_g", "max_g", "lifo", "random"):
        c = reasonless.generate(tmp_path / tie_break, generator, 40, rows=9, cols=14, seed=2, tie_break=tie_break)
        for ex in (c[0], c[39]):
            assert len(ex.plan) == bfs_length(ex.grid, ex.start, ex.goal)
            assert ex.operations[-1][:3] == ("close", *ex.goal)


def test_manifest_is_readable_json_with_the_command(tmp_path):
    generate(tmp_path / "c", command="reasonless generate --generator kruskal", **SMALL)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["command"] == "reasonless generate --generator kruskal"
    assert m["format"] == "reasonless-corpus" and m["params"] == {}
    for entry in m["shards"]:
        assert set(entry["crc32"]) == {f"{n}.npy" for n in SHARD_FILES}


def test_incomplete_directory_is_not_a_corpus(tmp_path):
    generate(tmp_path / "p", shard_size=100, shard="0/2", **SMALL)
    with pytest.raises(FileNotFoundError, match="merge"):
        Corpus(tmp_path / "p")


def test_parts_sharing_a_directory_leave_each_other_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    # Part 0 is busy writing shard 0 on another machine: its temporary directory must survive part 1's start.
    busy = shared / "shard-00000.tmp-4242"
    busy.mkdir()
    (busy / "walls.npy").write_bytes(b"half")
    assert generate(shared, shard_size=100, shard="1/2", **SMALL) is None
    assert (busy / "walls.npy").read_bytes() == b"half"
    # Part 0, restarted on its own machine, clears its own leftover and completes the corpus.
    assert len(generate(shared, shard_size=100, shard="0/2", **SMALL)) == 300
    assert not busy.exists()
