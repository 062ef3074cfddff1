"""Batched KV-cache generation: equality with full-context decoding, batch independence, shared-prefix
groups, seeded sampling, budgets and stops, input errors, backend selection, loading a run."""
import math

import numpy as np
import pytest
import torch

from reasonless import checkpoint as ckpt_io
from reasonless.model import (
    KVCache,
    Model,
    decode_attention,
    decode_attention_prefix_shared,
    default_attn_backend,
    triton_head_dims,
    preset,
)
from reasonless.sample import (Generation, Sampling, _Draws, _Sampler, generate, generate_groups, load_model, row_key,
                               uniforms)
from reasonless.vocab import END, EOS

VOCAB = 96
SMALL = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=256)


def small_model(seed=0, dtype=torch.float64, **overrides):
    # A large init std makes the random model's argmax depend on the context (with 0.02 it is nearly constant).
    torch.manual_seed(seed)
    return Model(preset("tiny", VOCAB, **{**SMALL, "init_std": 0.3, **overrides})).to(dtype).eval()


def random_prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, n) for n in lengths]


def cu(*lengths):
    return torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32)


@torch.no_grad()
def full_context_greedy(model, prompt, n):
    """Re-runs the whole model on the growing sequence every step."""
    seq = [int(t) for t in prompt]
    for _ in range(n):
        logits = model(torch.tensor(seq), cu(len(seq)))
        seq.append(int(logits[-1].argmax()))
    return seq[len(prompt):]


def same_tokens(a: Generation, b: Generation):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a.tokens, b.tokens)):
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert np.array_equal(x, y), f"row {i}: {x.tolist()} != {y.tolist()}"
    assert np.array_equal(a.stopped, b.stopped)
    assert np.array_equal(a.prompt_lengths, b.prompt_lengths)


# --------------------------------------------------------------------------------------------------
# Decode attention (torch path)


def naive_decode(q, k, v, n):
    """q (Hq, D) against k, v (n, Hkv, D): explicit softmax with GQA by repetition."""
    group = q.shape[0] // k.shape[1]
    k, v = k[:n].repeat_interleave(group, dim=1), v[:n].repeat_interleave(group, dim=1)
    scores = torch.einsum("hd,nhd->hn", q, k) / math.sqrt(q.shape[1])
    return torch.einsum("hn,nhd->hd", scores.softmax(-1), v)


@pytest.mark.parametrize("hq,hkv", [(4, 2), (4, 4), (6, 1)])
def test_decode_attention_matches_naive(hq, hkv):
    gen = torch.Generator().manual_seed(hq + hkv)
    b, s, d = 5, 19, 8
    q = torch.randn(b, hq, d, generator=gen, dtype=torch.float64)
    k = torch.randn(b, s, hkv, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, s, hkv, d, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([1, 19, 7, 12, 3], dtype=torch.int32)
    out = decode_attention(q, k, v, lengths)
    for i in range(b):
        torch.testing.assert_close(out[i], naive_decode(q[i], k[i], v[i], int(lengths[i])), atol=1e-12, rtol=1e-12)
    # Finite garbage beyond a row's length gets no weight at all: the output is bit for bit the same.
    k2, v2 = k.clone(), v.clone()
    k2[0, 1:], v2[0, 1:] = 1e3, -1e3
    assert torch.equal(decode_attention(q, k2, v2, lengths)[0], out[0])
    # A row with no key gives 0 (it weighs nothing when parts are merged).
    empty = decode_attention(q, k, v, torch.tensor([0, 19, 7, 12, 3], dtype=torch.int32))
    assert torch.equal(empty[0], torch.zeros_like(empty[0])) and torch.equal(empty[1:], out[1:])


@pytest.mark.parametrize("hq,hkv,group", [(4, 2, 3), (6, 1, 2), (4, 4, 1)])
def test_prefix_shared_decode_attention_matches_concatenation(hq, hkv, group):
    gen = torch.Generator().manual_seed(hq * group)
    n_groups, p_max, s, d = 3, 11, 6, 8
    b = n_groups * group
    q = torch.randn(b, hq, d, generator=gen, dtype=torch.float64)
    pk = torch.randn(n_groups, p_max, hkv, d, generator=gen, dtype=torch.float64)
    pv = torch.randn(n_groups, p_max, hkv, d, generator=gen, dtype=torch.float64)
    ck = torch.randn(b, s, hkv, d, generator=gen, dtype=torch.float64)
    cv = torch.randn(b, s, hkv, d, generator=gen, dtype=torch.float64)
    prefix_len = torch.tensor([11, 1, 5], dtype=torch.int32)
    own_len = torch.tensor([(3 * i) % (s + 1) for i in range(b)], dtype=torch.int32)  # includes 0
    assert 0 in own_len.tolist()
    out = decode_attention_prefix_shared(q, pk, pv, prefix_len, ck, cv, own_len, group)
    for i in range(b):
        gi, p, n = i // group, int(prefix_len[i // group]), int(own_len[i])
        keys = torch.cat([pk[gi, :p], ck[i, :n]])
        values = torch.cat([pv[gi, :p], cv[i, :n]])
        torch.testing.assert_close(out[i], naive_decode(q[i], keys, values, p + n), atol=1e-12, rtol=1e-12)


def test_decode_attention_rejects_bad_inputs():
    q, k = torch.randn(2, 4, 8), torch.randn(2, 5, 2, 8)
    with pytest.raises(ValueError, match="int32"):
        decode_attention(q, k, k, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="multiple"):
        decode_attention(torch.randn(2, 3, 8), k, k, torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="backend"):
        decode_attention(q, k, k, torch.tensor([1, 2], dtype=torch.int32), backend="magic")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            decode_attention(q, k, k, torch.tensor([1, 2], dtype=torch.int32), backend="triton")


@torch.no_grad()
@pytest.mark.parametrize("grouped", [False, True])
def test_decode_logits_equal_full_forward_at_every_step(grouped):
    """Model.prefill + Model.decode over a KVCache give the logits of the full model on the whole sequence."""
    model = small_model()
    prompts = random_prompts((7, 3, 12))
    g = 2 if grouped else 1
    rows = [p for p in prompts for _ in range(g)]
    steps = 6
    lengths = [len(p) for p in prompts]
    if grouped:
        cache = KVCache(model.config, len(rows), steps, dtype=torch.float64, group_size=g, prefix_len=max(lengths))
    else:
        cache = KVCache(model.config, len(rows), max(lengths) + steps, dtype=torch.float64)
    logits = model.prefill(torch.from_numpy(np.concatenate(prompts)), cu(*lengths), cache)
    logits = logits.repeat_interleave(g, 0)
    seqs = [list(map(int, p)) for p in rows]
    gen = torch.Generator().manual_seed(5)
    for step in range(steps):
        for r, seq in enumerate(seqs):
            full = model(torch.tensor(seq), cu(len(seq)))[-1]
            torch.testing.assert_close(logits[r], full, atol=1e-9, rtol=1e-9, msg=f"row {r} step {step}")
        # Random next tokens (different within a group), to exercise the rows' own caches.
        nxt = torch.randint(0, VOCAB, (len(rows),), generator=gen)
        for seq, t in zip(seqs, nxt.tolist()):
            seq.append(t)
        logits = model.decode(nxt, cache)


@torch.no_grad()
def test_decode_rows_that_do_not_advance_keep_their_cache():
    model = small_model()
    prompts = random_prompts((5, 8))
    cache = KVCache(model.config, 2, 20, dtype=torch.float64)
    model.prefill(torch.from_numpy(np.concatenate(prompts)), cu(5, 8), cache)
    a = model.decode(torch.tensor([1, 2]), cache, advance=torch.tensor([True, False]))
    assert cache.lengths.tolist() == [6, 8]
    b = model.decode(torch.tensor([3, 2]), cache)  # row 1 feeds its token again at the same position
    torch.testing.assert_close(a[1], b[1], atol=0, rtol=0)
    assert cache.lengths.tolist() == [7, 9]


# --------------------------------------------------------------------------------------------------
# generate


def test_greedy_generation_equals_full_context_argmax():
    model = small_model()
    prompts = random_prompts((9, 1, 23, 4))
    out = generate(model, prompts, 15, stop_ids=())
    assert len({t for row in out.tokens for t in row.tolist()}) > 10  # the test model does not repeat one token
    for i, p in enumerate(prompts):
        assert out.tokens[i].tolist() == full_context_greedy(model, p, 15), f"prompt {i}"
    assert not out.stopped.any()
    assert out.prompt_lengths.tolist() == [9, 1, 23, 4]


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, seed=7),
                                      Sampling(temperature=0.8, top_k=10, top_p=0.9, seed=123)])
def test_batched_generation_equals_one_by_one(sampling):
    model = small_model(seed=1)
    lengths = (14, 3, 20, 8, 8, 1)
    prompts = random_prompts(lengths, seed=2)
    budgets = [10, 3, 12, 1, 0, 7]  # mixed: rows finish at different steps, so the batch gets compacted
    batched = generate(model, prompts, budgets, stop_ids=(), sampling=sampling, batch_size=64)
    assert [len(t) for t in batched.tokens] == budgets
    # batch_size 1: every prompt alone.
    for bs in (1, 4):
        same_tokens(batched, generate(model, prompts, budgets, stop_ids=(), sampling=sampling, batch_size=bs))
    if not sampling.greedy:
        other_seed = generate(model, prompts, budgets, stop_ids=(), sampling=Sampling(
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=sampling.seed + 1))
        assert any(not np.array_equal(a, b) for a, b in zip(batched.tokens, other_seed.tokens))


def test_float32_batched_equals_one_by_one_greedy():
    model = small_model(dtype=torch.float32)
    prompts = random_prompts((6, 17, 2, 11), seed=4)
    same_tokens(generate(model, prompts, 10, stop_ids=()), generate(model, prompts, 10, stop_ids=(), batch_size=1))


def test_stop_token_ends_the_row_and_is_kept():
    model = small_model()
    prompts = random_prompts((5, 12, 7), seed=3)
    free = generate(model, prompts, 12, stop_ids=())
    stop = int(free.tokens[0][4])
    first = [int(np.argmax(row == stop)) if (row == stop).any() else None for row in free.tokens]
    out = generate(model, prompts, 12, stop_ids=[stop])
    for i, row in enumerate(free.tokens):
        if first[i] is None:
            assert not out.stopped[i] and np.array_equal(out.tokens[i], row)
        else:
            assert out.stopped[i] and np.array_equal(out.tokens[i], row[:first[i] + 1])
            assert out.tokens[i][-1] == stop
    assert out.stopped[0]


def test_a_model_that_never_stops_hits_its_budget():
    model = small_model()
    with torch.no_grad():  # zero embeddings give the stop tokens logit 0, below the random tokens' best
        model.embed_tokens.weight[[END, EOS]] = 0.0
    out = generate(model, random_prompts((4, 9, 2)), [7, 1, 13])
    assert not out.stopped.any()
    assert [len(t) for t in out.tokens] == [7, 1, 13]


def test_budget_is_capped_by_max_seq_len():
    model = small_model(max_seq_len=40)
    prompts = random_prompts((35, 10, 40), seed=5)
    out = generate(model, prompts, 20, stop_ids=())
    assert [len(t) for t in out.tokens] == [5, 20, 0]
    assert out.tokens[0].tolist() == full_context_greedy(model, prompts[0], 5)
    with pytest.raises(ValueError, match="prompt 1 has 41 tokens"):
        generate(model, [prompts[0], np.zeros(41, dtype=np.int64)], 5)


def test_empty_inputs_and_zero_budgets():
    model = small_model()
    out = generate(model, [], 5)
    assert len(out) == 0 and out.stopped.shape == (0,) and out.prompt_lengths.shape == (0,)
    out = generate(model, random_prompts((3, 4)), 0)
    assert [len(t) for t in out.tokens] == [0, 0] and not out.stopped.any()


def test_bad_inputs_are_clear_errors():
    model = small_model()
    good = random_prompts((3, 4))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [good[0], []], 3)
    with pytest.raises(ValueError, match=r"prompt 0: token ids must be in \[0, 96\)"):
        generate(model, [[1, 2, 96]], 3)
    with pytest.raises(ValueError, match="prompt 0: must be a 1-D"):
        generate(model, [[[1, 2]]], 3)
    with pytest.raises(ValueError, match="prompt 0: must be a 1-D sequence of integer"):
        generate(model, [[1.5, 2.0]], 3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        generate(model, good, -1)
    with pytest.raises(ValueError, match="one integer per prompt"):
        generate(model, good, [3])
    with pytest.raises(ValueError, match="stop id"):
        generate(model, good, 3, stop_ids=[VOCAB])
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, good, 3, batch_size=0)
    with pytest.raises(ValueError, match="group_size"):
        generate_groups(model, good, 0, 3)
    with pytest.raises(ValueError, match="model is on cpu"):
        generate(model, good, 3, device="meta")
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=float("nan"))
    with pytest.raises(ValueError, match="top_k"):
        Sampling(top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)
    with pytest.raises(ValueError, match="seed"):
        Sampling(seed=-1)
    with pytest.raises(ValueError, match="sampling must be a Sampling"):
        generate(model, good, 3, sampling={"temperature": 1.0})


# --------------------------------------------------------------------------------------------------
# Groups


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, top_p=0.95, seed=11)])
def test_groups_share_the_prefix_with_the_result_of_independent_rows(sampling):
    model = small_model(seed=3)
    prompts = random_prompts((10, 4, 15, 7, 1), seed=6)
    budgets = [8, 10, 3, 9, 5]
    g = 3
    shared = generate_groups(model, prompts, g, budgets, stop_ids=(), sampling=sampling, batch_groups=2)
    independent = generate_groups(model, prompts, g, budgets, stop_ids=(), sampling=sampling, share_prefix=False)
    same_tokens(shared, independent)
    same_tokens(shared, generate_groups(model, prompts, g, budgets, stop_ids=(), sampling=sampling, batch_groups=64))
    assert shared.prompt_lengths.tolist() == [n for n in (10, 4, 15, 7, 1) for _ in range(g)]
    assert [len(t) for t in shared.tokens] == [b for b in budgets for _ in range(g)]
    samples = [shared.tokens[i * g:(i + 1) * g] for i in range(len(prompts))]
    if sampling.greedy:
        for i, group in enumerate(samples):
            assert all(np.array_equal(s, group[0]) for s in group)
            assert group[0].tolist() == full_context_greedy(model, prompts[i], budgets[i])
    else:
        assert all(len({tuple(s.tolist()) for s in group}) > 1 for group in samples if len(group[0]) > 3)
    # One sample per prompt is generate() itself.
    same_tokens(generate_groups(model, prompts, 1, budgets, stop_ids=(), sampling=sampling),
                generate(model, prompts, budgets, stop_ids=(), sampling=sampling))


def test_groups_stop_per_sample():
    model = small_model(seed=4)
    prompts = random_prompts((6, 9), seed=7)
    sampling = Sampling(temperature=1.5, seed=2)
    free = generate_groups(model, prompts, 4, 10, stop_ids=(), sampling=sampling)
    stop = int(free.tokens[1][2])
    out = generate_groups(model, prompts, 4, 10, stop_ids=[stop], sampling=sampling)
    ref = generate_groups(model, prompts, 4, 10, stop_ids=[stop], sampling=sampling, share_prefix=False)
    same_tokens(out, ref)
    assert out.stopped[1] and out.tokens[1][-1] == stop and len(out.tokens[1]) <= 3


# --------------------------------------------------------------------------------------------------
# Sampling


def test_sampler_frequencies_follow_the_filtered_softmax():
    v, n = 6, 40_000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], dtype=torch.float64).expand(n, v)
    keys = row_key(9, torch.arange(n))  # the hash works on int64 tensors as on ints
    assert keys[17] == row_key(9, 17)

    def freqs(sampling):
        tok = _Sampler(sampling, v, "cpu")(logits, _Draws(keys), step=3)
        return torch.bincount(tok, minlength=v).double() / n

    def expect(weights):
        return weights / weights.sum()

    probs = torch.softmax(logits[0] / 0.7, -1)
    torch.testing.assert_close(freqs(Sampling(temperature=0.7)), probs, atol=0.01, rtol=0)
    top3 = probs.clone()
    top3[3:] = 0
    torch.testing.assert_close(freqs(Sampling(temperature=0.7, top_k=3)), expect(top3), atol=0.01, rtol=0)
    # top_p: the smallest prefix of the sorted probabilities that reaches p.
    cum = probs.cumsum(0)
    k = int((cum < 0.8).sum()) + 1
    nucleus = probs.clone()
    nucleus[k:] = 0
    torch.testing.assert_close(freqs(Sampling(temperature=0.7, top_p=0.8)), expect(nucleus), atol=0.01, rtol=0)
    assert freqs(Sampling(temperature=5.0, top_k=1))[0] == 1.0  # top-1 is greedy
    assert freqs(Sampling(temperature=5.0, top_p=1e-9))[0] == 1.0


def test_noise_depends_only_on_key_and_step():
    keys = torch.tensor([row_key(1, i, j) for i in range(4) for j in range(3)], dtype=torch.int64)
    u = uniforms(keys, 5, 1)[:, 0]
    assert u.dtype == torch.float64 and bool(((u > 0) & (u < 1)).all()) and len(set(u.tolist())) == 12
    torch.testing.assert_close(uniforms(keys[[7, 2]], 5, 1)[:, 0], u[[7, 2]], atol=0, rtol=0)
    assert not torch.equal(uniforms(keys, 6, 1)[:, 0], u)
    # A block of steps holds each step's numbers, whatever step it starts at.
    torch.testing.assert_close(uniforms(keys, 3, 4)[:, 2], u, atol=0, rtol=0)
    assert len({row_key(0, i, j) for i in range(100) for j in range(8)}) == 800
    assert row_key(0, 5) != row_key(1, 5) and row_key(2**40, 5) != row_key(0, 5)


def test_draws_give_each_row_its_own_numbers_across_blocks_and_dropped_rows():
    keys = torch.tensor([row_key(3, i) for i in range(6)], dtype=torch.int64)
    draws, rows = _Draws(keys), torch.arange(6)
    for step in range(2 * _Draws.BLOCK + 5):
        if step in (7, _Draws.BLOCK + 1):  # rows finish in the middle of a block and at its start
            keep = torch.arange(0, len(rows), 2)
            draws.keep(keep)
            rows = rows[keep]
        expected = uniforms(keys[rows], step, 1)[:, 0]
        assert torch.equal(draws.at(step), expected), step


# --------------------------------------------------------------------------------------------------
# Backend selection and loading


def test_attn_backend_selection(monkeypatch):
    monkeypatch.delenv("REASONLESS_ATTN", raising=False)
    assert default_attn_backend("cpu") == "torch"
    assert default_attn_backend("cpu", decode=True) == "torch"
    for value in ("torch", " Torch ", "auto", ""):
        monkeypatch.setenv("REASONLESS_ATTN", value)
        assert default_attn_backend("cpu") == "torch"
    monkeypatch.setenv("REASONLESS_ATTN", "flash")
    with pytest.raises(ValueError, match="REASONLESS_ATTN='flash'"):
        default_attn_backend("cpu")
    monkeypatch.setenv("REASONLESS_ATTN", "triton")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        default_attn_backend("cpu")


def test_attn_backend_auto_for_cuda_follows_the_kernels_head_dims(monkeypatch, capsys):
    # The dispatch logic only: no CUDA needed to decide, only the kernels' import (Triton is in the install).
    monkeypatch.delenv("REASONLESS_ATTN", raising=False)
    assert triton_head_dims() == (32, 64, 128)
    for decode in (False, True):
        assert default_attn_backend("cuda", decode=decode, head_dim=64) == "triton"
        assert default_attn_backend("cuda", decode=decode) == "triton"
        assert capsys.readouterr().err == ""
        assert default_attn_backend("cuda", decode=decode, head_dim=16) == "torch"
        assert "head dim 16 is not one the Triton kernels take (32, 64, 128); using the torch path" in \
            capsys.readouterr().err
    monkeypatch.setenv("REASONLESS_ATTN", "torch")
    assert default_attn_backend("cuda", head_dim=64) == "torch"


def test_load_model_from_a_run(tmp_path):
    model = small_model(dtype=torch.float32)
    run = tmp_path / "run"
    for step, val in ((10, 2.0), (20, 3.0)):
        with torch.no_grad():
            model.layers[0].mlp.up_proj.weight.add_(0.01 * step)
        ckpt_io.save_checkpoint(run, step, model, model.config.to_dict(), None,
                                {"val_loss": val, "data": {"grid": [8, 8]}})
    latest, meta = load_model(run, device="cpu", which="latest")
    assert meta["step"] == 20 and meta["grid"] == (8, 8) and meta["selected_by"] == "latest"
    assert not latest.training and latest.attn_backend == "torch"
    for name, t in model.state_dict().items():
        assert torch.equal(latest.state_dict()[name], t), name
    best, meta = load_model(run, device="cpu")
    assert meta["step"] == 10 and meta["selected_by"] == "best validation loss"
    prompts = random_prompts((5, 8))
    same_tokens(generate(latest, prompts, 6, stop_ids=()), generate(model, prompts, 6, stop_ids=()))
    same_model, meta = load_model(run / "checkpoints" / "step-000020", device="cpu")
    assert meta["step"] == 20
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        load_model(run, which="first")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoints"):
        load_model(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# The Triton path: the real kernels behind the KVCache (Triton's interpreter on CPU, the GPU on CUDA)


def _kernels_runnable():
    try:
        from reasonless.kernels import decode_attn, varlen_attention  # noqa: F401
        from reasonless.kernels.interpreter import INTERPRET
    except ImportError:
        return False
    return torch.cuda.is_available() or INTERPRET


@pytest.mark.skipif(not _kernels_runnable(), reason="needs the Triton kernels (CUDA, or TRITON_INTERPRET=1)")
@torch.no_grad()
def test_triton_backend_decodes_as_the_torch_backend(monkeypatch):
    from reasonless import model as model_mod
    from reasonless.kernels import decode_attn, decode_attn_prefix_shared, varlen_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # the dispatch refuses CPU tensors; the interpreter runs the same kernels there
        kernels = {"decode_attn": decode_attn, "decode_attn_prefix_shared": decode_attn_prefix_shared,
                   "varlen_attention": varlen_attention}
        monkeypatch.setattr(model_mod, "_triton_kernel", lambda name, q: kernels[name])
    # float32 weights and cache, no autocast, head_dim 32 (a size the kernels take); one layer keeps the
    # interpreter's time down (each kernel call costs it ~0.25 s).
    model = small_model(dtype=torch.float32, n_layer=1, d_model=64, n_head=4, n_kv_head=2, head_dim=32).to(device)
    prompts = random_prompts((9, 2, 14), seed=8)
    lengths = [len(p) for p in prompts]
    tokens = torch.from_numpy(np.concatenate(prompts)).to(device)
    feed = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0)).to(device)

    def run(backend, grouped):
        model.attn_backend = backend
        if grouped:
            cache = KVCache(model.config, 6, 3, device=device, group_size=2, prefix_len=max(lengths))
        else:
            cache = KVCache(model.config, 3, max(lengths) + 3, device=device)
        out = [model.prefill(tokens, cu(*lengths).to(device), cache)]
        for step in range(2):
            out.append(model.decode(feed[step, :cache.batch], cache))
        return out

    for grouped in (False, True):
        for step, (a, b) in enumerate(zip(run("torch", grouped), run("triton", grouped))):
            torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-4, msg=f"grouped={grouped} step {step}")
