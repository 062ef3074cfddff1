"""Packed loader: coverage, loss mask, segments, determinism, resume, bad input (reasonless.data)."""
import itertools
import json
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest

from reasonless.data import IGNORE_INDEX, PackedLoader, pack_rows, split_indices
from reasonless.interchange import load_tokens

SEQ = 512


@pytest.fixture(scope="module")
def tok(tmp_path_factory, make_token_dir):
    return make_token_dir(tmp_path_factory.mktemp("data"), 300)


@pytest.fixture(scope="module")
def stream(tok):
    tokens, offsets, prompts, meta = load_tokens(tok)
    return np.asarray(tokens), offsets, prompts, meta


def epoch_batches(loader):
    return list(iter(loader))


def segments(batch):
    cu = batch.cu_seqlens.numpy()
    return [(int(a), int(b), int(e)) for a, b, e in zip(cu[:-1], cu[1:], batch.segment_example)]


def check_batch(batch, stream, seq_len, rows):
    """Every invariant of one batch against the original token stream."""
    tokens, offsets, prompts, _ = stream
    assert batch.tokens.shape == batch.targets.shape == batch.positions.shape == (rows, seq_len)
    flat_t = batch.tokens.numpy().reshape(-1)
    flat_y = batch.targets.numpy().reshape(-1)
    flat_p = batch.positions.numpy().reshape(-1)
    cu = batch.cu_seqlens.numpy()
    assert batch.cu_seqlens.dtype.is_floating_point is False and cu.dtype == np.int32
    assert cu[0] == 0 and cu[-1] == rows * seq_len and np.all(np.diff(cu) > 0)
    assert set(range(0, rows * seq_len + 1, seq_len)) <= set(cu.tolist()), "row boundaries are segment boundaries"
    assert batch.max_seqlen == int(np.diff(cu).max())
    expect_y = np.full(rows * seq_len, IGNORE_INDEX, np.int64)
    loss_tokens = 0
    for a, b, ex in segments(batch):
        assert a // seq_len == (b - 1) // seq_len, "a segment crosses a row"
        np.testing.assert_array_equal(flat_p[a:b], np.arange(b - a))
        if ex < 0:
            assert np.all(flat_t[a:b] == 0) and b % seq_len == 0, "padding is <|pad|> at the end of a row"
            continue
        seq = tokens[offsets[ex]:offsets[ex + 1]]
        assert b - a == len(seq), "example split or truncated"
        np.testing.assert_array_equal(flat_t[a:b], seq)
        p = prompts[ex]
        # the response tokens seq[p:], each predicted from the token before it; the last token predicts nothing
        expect_y[a + p - 1:b - 1] = seq[p:]
        loss_tokens += len(seq) - p
    np.testing.assert_array_equal(flat_y, expect_y)
    assert batch.n_loss_tokens == loss_tokens == int((flat_y != IGNORE_INDEX).sum())


@pytest.mark.parametrize("world_size", [1, 3])
def test_each_example_once_per_epoch_across_ranks(tok, stream, world_size):
    rows = 2
    loaders = [PackedLoader(tok, SEQ, rows, seed=5, rank=r, world_size=world_size, split="all")
               for r in range(world_size)]
    n = len(stream[2])
    for epoch in range(2):
        seen = Counter()
        steps = set()
        for loader in loaders:
            batches = epoch_batches(loader)
            steps.add(len(batches))
            for b in batches:
                assert b.epoch == epoch
                check_batch(b, stream, SEQ, rows)
                seen.update(int(e) for e in b.segment_example if e >= 0)
        assert len(steps) == 1, "ranks must take the same number of steps"
        assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}
        assert all(lo.epoch == epoch + 1 and lo.step == 0 for lo in loaders)


def test_ranks_disjoint_and_drop_last(tok):
    full = [epoch_batches(PackedLoader(tok, SEQ, 3, seed=2, rank=r, world_size=2, split="all")) for r in range(2)]
    share = [{int(e) for b in bs for e in b.segment_example if e >= 0} for bs in full]
    assert share[0] and share[1] and not share[0] & share[1]
    dropped = PackedLoader(tok, SEQ, 3, seed=2, rank=0, world_size=2, split="all", drop_last=True)
    kept = PackedLoader(tok, SEQ, 3, seed=2, rank=0, world_size=2, split="all")
    assert len(dropped) == kept.rows_per_epoch // 6 and len(kept) == -(-kept.rows_per_epoch // 6)


def test_batch_tokens_and_packing_fill(tok, stream):
    loader = PackedLoader(tok, SEQ, batch_tokens=4 * SEQ + 7, seed=0, split="all")
    assert loader.rows_per_batch == 4
    assert 0.8 < loader.fill <= 1.0
    for b in itertools.islice(iter(loader), 3):
        check_batch(b, stream, SEQ, 4)
    with pytest.raises(ValueError, match="exactly one"):
        PackedLoader(tok, SEQ, 4, batch_tokens=2048)


def test_pack_rows_is_best_fit():
    rng = np.random.default_rng(0)
    for seq_len in (16, 100, 4096):
        lengths = rng.integers(1, seq_len + 1, size=400)
        lengths[::7] = rng.integers(1, max(2, seq_len // 8), size=len(lengths[::7]))
        row_ptr, items = pack_rows(lengths, seq_len)
        assert sorted(items.tolist()) == list(range(len(lengths)))
        row_of = np.empty(len(lengths), np.int64)
        for r in range(len(row_ptr) - 1):
            mine = items[row_ptr[r]:row_ptr[r + 1]]
            assert np.all(np.diff(mine) > 0), "placement order kept within a row"
            assert lengths[mine].sum() <= seq_len
            row_of[mine] = r
        room = []
        for k, need in enumerate(lengths):  # replay: each item went to the tightest open row that fits
            fits = [left for left in room if left >= need]
            r = row_of[k]
            if r == len(room):
                assert not fits, f"item {k} opened a row although one fit"
                room.append(seq_len)
            else:
                assert room[r] == min(fits), f"item {k} not placed best-fit"
            room[r] -= need


def test_determinism_and_seed(tok):
    def order(seed, epoch=0):
        loader = PackedLoader(tok, SEQ, 2, seed=seed)
        loader.epoch = epoch
        return [tuple(b.segment_example.tolist()) for b in loader]

    a, b = order(7), order(7)
    assert a == b
    assert order(8) != a
    assert order(7, epoch=1) != a
    first = [x.tokens for x in PackedLoader(tok, SEQ, 2, seed=7)]
    again = [x.tokens for x in PackedLoader(tok, SEQ, 2, seed=7)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))


def test_resume_mid_epoch_equals_uninterrupted(tok):
    run = PackedLoader(tok, SEQ, 2, seed=3, rank=1, world_size=2)
    per_epoch = len(run)
    total = per_epoch + 6  # crosses an epoch boundary
    uninterrupted = [(b.epoch, b.step, b.tokens.numpy().copy(), b.targets.numpy().copy())
                     for b in itertools.islice(run.forever(), total)]
    for cut in (0, 5, per_epoch - 1, per_epoch, per_epoch + 2):
        first = PackedLoader(tok, SEQ, 2, seed=3, rank=1, world_size=2)
        it = first.forever()
        for _ in range(cut):
            next(it)
        state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
        resumed = PackedLoader(tok, SEQ, 2, seed=99, rank=1, world_size=2)  # seed comes from the state
        resumed.load_state_dict(state)
        rest = [(b.epoch, b.step, b.tokens.numpy(), b.targets.numpy())
                for b in itertools.islice(resumed.forever(), total - cut)]
        for u, r in zip(uninterrupted[cut:], rest, strict=True):
            assert u[:2] == r[:2]
            np.testing.assert_array_equal(u[2], r[2])
            np.testing.assert_array_equal(u[3], r[3])
    other = PackedLoader(tok, SEQ, 3, seed=3)
    with pytest.raises(ValueError, match="global_rows"):
        other.load_state_dict(state)


def test_validation_split(tok, stream):
    n = len(stream[2])
    train, val = split_indices(n, val_fraction=0.1, seed=4)
    assert len(val) == 30 and len(train) == 270 and not set(train) & set(val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    t2, v2 = split_indices(n, val_fraction=0.1, seed=4)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    assert not np.array_equal(val, split_indices(n, val_fraction=0.1, seed=5)[1])
    assert len(split_indices(n, val_count=7)[1]) == 7
    assert len(split_indices(n, val_fraction=0.0001)[1]) == 1
    with pytest.raises(ValueError):
        split_indices(n, val_count=n)

    def seen(split, seed):
        lo = PackedLoader(tok, SEQ, 2, seed=seed, split=split, val_fraction=0.1, split_seed=4)
        return {int(e) for b in lo for e in b.segment_example if e >= 0}

    assert seen("train", 0) == set(train.tolist()) == seen("train", 1)  # the shuffle seed does not move the split
    assert seen("val", 0) == set(val.tolist())


def test_too_long_examples_skipped_and_reported(tok, stream):
    tokens, offsets, prompts, _ = stream
    lengths = np.diff(offsets)
    seq_len = int(np.percentile(lengths, 80))
    longer = np.flatnonzero(lengths > seq_len)
    assert len(longer) > 0
    with pytest.warns(UserWarning, match=rf"{len(longer)} of 300 all examples are longer than seq_len={seq_len}"):
        loader = PackedLoader(tok, seq_len, 2, split="all")
    np.testing.assert_array_equal(loader.skipped, longer)
    seen = Counter()
    for b in loader:
        check_batch(b, stream, seq_len, 2)
        seen.update(int(e) for e in b.segment_example if e >= 0)
    assert sorted(seen) == sorted(set(range(300)) - set(longer.tolist())) and set(seen.values()) == {1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(PackedLoader(tok, int(lengths.max()), 2, split="all").skipped) == 0
    with pytest.raises(ValueError, match="shorter than every example"):
        PackedLoader(tok, int(lengths.min()) - 1, 2, split="all")


def test_bad_data_dirs(tok, tmp_path):
    with pytest.raises(ValueError, match=r"meta\.json.*86 tokens.*expected 944"):
        PackedLoader(tok, SEQ, 2, expect_vocab_size=944)
    with pytest.raises(ValueError, match=r"meta\.json: grid 8x8, expected 30x30"):
        PackedLoader(tok, SEQ, 2, expect_grid=(30, 30))
    PackedLoader(tok, SEQ, 2, expect_vocab_size=86, expect_grid=(8, 8))

    def broken(edit):
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tok, bad)
        edit(bad)
        return bad

    def meta_edit(**changes):
        def edit(d):
            meta = json.loads((d / "meta.json").read_text())
            meta.update(changes)
            (d / "meta.json").write_text(json.dumps(meta))
        return edit

    with pytest.raises(ValueError, match=r"meta\.json: format"):
        PackedLoader(broken(meta_edit(format="other")), SEQ, 2)
    with pytest.raises(ValueError, match=r"meta\.json: vocab size 944 does not match"):
        PackedLoader(broken(meta_edit(vocab={"rows": 8, "cols": 8, "size": 944})), SEQ, 2)
    with pytest.raises(ValueError, match=r"offsets\.npy"):
        PackedLoader(broken(lambda d: np.save(d / "offsets.npy", np.load(d / "offsets.npy")[:-1])), SEQ, 2)
    with pytest.raises(ValueError, match=r"meta\.json: missing"):
        PackedLoader(tmp_path / "nowhere", SEQ, 2)
    with pytest.raises(ValueError, match="seq_len"):
        PackedLoader(tok, 1, 2)
    with pytest.raises(ValueError, match="rank"):
        PackedLoader(tok, SEQ, 2, rank=2, world_size=2)
