"""Decode attention kernels (reasonless.kernels.decode) against float64 references.

Without CUDA the kernels run in Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1), so sizes are small;
the CUDA tests at the end use the paper's shapes. Every kernel output is written into a NaN-poisoned ``out`` tensor,
so an element the kernels forget to write fails the finiteness check.
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from reasonless.kernels.decode import BLOCK_N, decode_attn, decode_attn_prefix_shared

# By module path: the package re-exports the function under the module's own name.
dmod = importlib.import_module("reasonless.kernels.decode")

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
# Relative Frobenius error against float64: fp32 runs IEEE dots (no TF32), so 1e-5 holds; 16-bit as in flash.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def ref_rows(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], scale: float | None = None):
    """float64 attention of q[b] (Hq, D) over keys[b], values[b] (L_b, Hkv, D); query head h reads KV head
    h // (Hq / Hkv)."""
    b_, hq, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.empty((b_, hq, d), dtype=torch.float64)
    for b in range(b_):
        k = keys[b].double().cpu()
        v = values[b].double().cpu()
        ratio = hq // k.shape[1]
        k = k.repeat_interleave(ratio, dim=1)
        v = v.repeat_interleave(ratio, dim=1)
        s = torch.einsum("hd,lhd->hl", q[b].double().cpu(), k) * scale
        out[b] = torch.einsum("hl,lhd->hd", torch.softmax(s, dim=-1), v)
    return out


def ref_decode(q, k_cache, v_cache, lens, scale=None):
    lens = lens.tolist()
    return ref_rows(q, [k_cache[b, :n] for b, n in enumerate(lens)], [v_cache[b, :n] for b, n in enumerate(lens)],
                    scale)


@pytest.fixture(autouse=True)
def poisoned_partials(monkeypatch):
    """The split kernels' float32 partial buffers start as NaN, so a (row, split) slot left unwritten reaches the
    output as NaN instead of passing with whatever memory held."""
    real = dmod._partials

    def nan_partials(*args):
        return tuple(t.fill_(float("nan")) for t in real(*args))

    monkeypatch.setattr(dmod, "_partials", nan_partials)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all(), "kernel output has NaN/inf (unwritten or invalid elements)"
    err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
    assert math.isfinite(err)
    return err


def poisoned(b, hq, d, dtype):
    return torch.full((b, hq, d), float("nan"), dtype=dtype, device=DEV)


def rand(*shape, dtype=torch.float32, gen=None):
    # Non-zero mean so that a kernel that drops a key or mis-weights a split visibly moves the output.
    return (torch.randn(*shape, generator=gen) + 0.3).to(dtype=dtype, device=DEV)


def test_rel_err_rejects_nan():
    ref = torch.ones(2, 2, 4, dtype=torch.float64)
    bad = torch.ones(2, 2, 4)
    bad[1, 1, 3] = float("nan")
    with pytest.raises(AssertionError):
        rel_err(bad, ref)


# (dtype, head dim, Hq, Hkv, num_splits values): GQA ratios 1, 2, 7; D 32, 64, 128; 1 split, several, and more
# splits than the 3 blocks of the longest row.
CASES = [
    (torch.float32, 32, 2, 2, [1, 3, 7]),
    (torch.float32, 64, 4, 2, [None, 2]),
    (torch.bfloat16, 128, 7, 1, [1, 3]),
    (torch.float16, 64, 14, 2, [None, 5]),
]


@pytest.mark.parametrize("dtype,d,hq,hkv,splits", CASES)
def test_decode_matches_reference(dtype, d, hq, hkv, splits):
    gen = torch.Generator().manual_seed(d * 100 + hq)
    s_max = 150
    lens = torch.tensor([1, BLOCK_N, BLOCK_N + 1, 77, s_max], dtype=torch.int32, device=DEV)
    b = lens.numel()
    q = rand(b, hq, d, dtype=dtype, gen=gen)
    k = rand(b, s_max, hkv, d, dtype=dtype, gen=gen)
    v = rand(b, s_max, hkv, d, dtype=dtype, gen=gen)
    ref = ref_decode(q, k, v, lens)
    outs = []
    for ns in splits:
        out = poisoned(b, hq, d, dtype)
        got = decode_attn(q, k, v, lens, num_splits=ns, out=out)
        assert got is out
        assert rel_err(out, ref) < TOL[dtype], (ns, rel_err(out, ref))
        outs.append(out)
    for other in outs[1:]:  # split counts change only the summation order
        assert rel_err(other, outs[0].double().cpu()) < TOL[dtype]


def test_decode_scale_and_default_out():
    gen = torch.Generator().manual_seed(3)
    q, k, v = rand(2, 2, 32, gen=gen), rand(2, 40, 1, 32, gen=gen), rand(2, 40, 1, 32, gen=gen)
    lens = torch.tensor([40, 9], dtype=torch.int32, device=DEV)
    out = decode_attn(q, k, v, lens, sm_scale=0.5, num_splits=2)
    assert out.shape == (2, 2, 32) and out.dtype == torch.float32
    assert rel_err(out, ref_decode(q, k, v, lens, scale=0.5)) < 1e-5


def test_decode_strided_views():
    # A slice of a larger static cache (strided batch, positions, heads) and a non-contiguous q.
    gen = torch.Generator().manual_seed(4)
    big_k = rand(4, 100, 3, 64, dtype=torch.bfloat16, gen=gen)
    big_v = rand(4, 100, 3, 64, dtype=torch.bfloat16, gen=gen)
    k, v = big_k[::2, :70, 1:], big_v[::2, :70, 1:]
    q = rand(2, 4, 2, 64, dtype=torch.bfloat16, gen=gen)[:, :, 0]
    assert not k.is_contiguous() and not q.is_contiguous()
    lens = torch.tensor([70, 33], dtype=torch.int32, device=DEV)
    out = poisoned(2, 4, 64, torch.bfloat16)
    decode_attn(q, k, v, lens, num_splits=2, out=out)
    assert rel_err(out, ref_decode(q, k, v, lens)) < 1e-2


def test_decode_head_major_storage():
    # KVCache stores each head's keys contiguously, (B, Hkv, S, D), and hands the kernels (B, S, Hkv, D) views.
    gen = torch.Generator().manual_seed(6)
    store_k, store_v = rand(2, 3, 2, 80, 32, gen=gen), rand(2, 3, 2, 80, 32, gen=gen)  # (layers, B, Hkv, S, D)
    k, v = store_k[1, :, :, :65].transpose(1, 2), store_v[1, :, :, :65].transpose(1, 2)
    q = rand(3, 4, 32, gen=gen)
    lens = torch.tensor([65, 1, 40], dtype=torch.int32, device=DEV)
    for splits in (None, 3):
        out = poisoned(3, 4, 32, torch.float32)
        decode_attn(q, k, v, lens, num_splits=splits, out=out)
        assert rel_err(out, ref_decode(q, k, v, lens)) < 1e-5, splits
    pk, pv = store_k[0, :1, :, :50].transpose(1, 2), store_v[0, :1, :, :50].transpose(1, 2)
    prefix_lens = torch.tensor([50], dtype=torch.int32, device=DEV)
    out = poisoned(3, 4, 32, torch.float32)
    decode_attn_prefix_shared(q, pk, pv, prefix_lens, k, v, lens, 3, out=out)
    full_k = unshared_cache(pk, prefix_lens, k, lens, 3)
    full_v = unshared_cache(pv, prefix_lens, v, lens, 3)
    assert rel_err(out, ref_decode(q, full_k, full_v, lens + 50)) < 1e-5


def causal_full_attention_last(q, k, v, pos):
    """float64 causal self-attention over a whole sequence (T, H, D) with GQA, output at position pos."""
    t, hq, d = q.shape
    ratio = hq // k.shape[1]
    qd = q.double().cpu().transpose(0, 1)
    kd = k.double().cpu().repeat_interleave(ratio, dim=1).transpose(0, 1)
    vd = v.double().cpu().repeat_interleave(ratio, dim=1).transpose(0, 1)
    s = qd @ kd.transpose(1, 2) / math.sqrt(d)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, dim=-1) @ vd).transpose(0, 1)[pos]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_against_full_attention_during_generation(dtype):
    gen = torch.Generator().manual_seed(5)
    hq, hkv, d, steps = 4, 2, 32, 6
    prompts = [3, 20, 60]  # the last one crosses a block boundary during generation
    b, s_max = len(prompts), 72
    total = max(prompts) + steps
    seq_q = rand(b, total, hq, d, dtype=dtype, gen=gen)
    seq_k = rand(b, total, hkv, d, dtype=dtype, gen=gen)
    seq_v = rand(b, total, hkv, d, dtype=dtype, gen=gen)
    k_cache = torch.zeros(b, s_max, hkv, d, dtype=dtype, device=DEV)
    v_cache = torch.zeros_like(k_cache)
    for i, p in enumerate(prompts):  # prefill all but the prompt's last token, which is decoded at step 0
        k_cache[i, :p - 1] = seq_k[i, :p - 1]
        v_cache[i, :p - 1] = seq_v[i, :p - 1]
    for step in range(steps):
        pos = [p - 1 + step for p in prompts]
        for i, p in enumerate(pos):
            k_cache[i, p] = seq_k[i, p]
            v_cache[i, p] = seq_v[i, p]
        q = torch.stack([seq_q[i, p] for i, p in enumerate(pos)])
        lens = torch.tensor([p + 1 for p in pos], dtype=torch.int32, device=DEV)
        out = poisoned(b, hq, d, dtype)
        decode_attn(q, k_cache, v_cache, lens, out=out)
        ref = torch.stack([causal_full_attention_last(seq_q[i, :p + 1], seq_k[i, :p + 1], seq_v[i, :p + 1], p)
                           for i, p in enumerate(pos)])
        assert rel_err(out, ref) < TOL[dtype], step


def unshared_cache(prefix_k, prefix_lens, k_cache, cache_lens, group):
    """Each sample's prompt copied in front of its continuation: (B, P_max + S_max, Hkv, D)."""
    b, s_max, hkv, d = k_cache.shape
    full = torch.zeros(b, prefix_k.shape[1] + s_max, hkv, d, dtype=k_cache.dtype, device=k_cache.device)
    for i in range(b):
        p, c = int(prefix_lens[i // group]), int(cache_lens[i])
        full[i, :p] = prefix_k[i // group, :p]
        full[i, p:p + c] = k_cache[i, :c]
    return full


@pytest.mark.parametrize("dtype,group,hq,hkv,d,splits", [
    (torch.float32, 1, 4, 2, 32, [None, 1, 4]),
    (torch.float32, 4, 14, 2, 64, [None, 3]),
    (torch.bfloat16, 4, 4, 1, 128, [2]),
    (torch.float32, 10, 7, 1, 32, [None]),  # 70 query rows per group: two row tiles
])
def test_prefix_shared_equals_unshared(dtype, group, hq, hkv, d, splits):
    gen = torch.Generator().manual_seed(group * 10 + d)
    n_groups = 2
    b, p_max, s_max = n_groups * group, 90, 70
    prefix_lens = torch.tensor([1, p_max] if group != 4 else [65, 30], dtype=torch.int32, device=DEV)
    cache_lens = torch.tensor([[0, 70, 5, 64, 1, 33, 0, 2, 69, 17][i % 10] for i in range(b)], dtype=torch.int32,
                              device=DEV)
    q = rand(b, hq, d, dtype=dtype, gen=gen)
    pk, pv = rand(n_groups, p_max, hkv, d, dtype=dtype, gen=gen), rand(n_groups, p_max, hkv, d, dtype=dtype, gen=gen)
    ck, cv = rand(b, s_max, hkv, d, dtype=dtype, gen=gen), rand(b, s_max, hkv, d, dtype=dtype, gen=gen)
    full_k = unshared_cache(pk, prefix_lens, ck, cache_lens, group)
    full_v = unshared_cache(pv, prefix_lens, cv, cache_lens, group)
    full_lens = prefix_lens.repeat_interleave(group) + cache_lens
    ref = ref_decode(q, full_k, full_v, full_lens)
    unshared = poisoned(b, hq, d, dtype)
    decode_attn(q, full_k, full_v, full_lens, out=unshared)
    assert rel_err(unshared, ref) < TOL[dtype]
    for ns in splits:
        out = poisoned(b, hq, d, dtype)
        decode_attn_prefix_shared(q, pk, pv, prefix_lens, ck, cv, cache_lens, group, num_splits=ns, out=out)
        assert rel_err(out, ref) < TOL[dtype], ns
        assert rel_err(out, unshared.double().cpu()) < TOL[dtype], ns


def test_prefix_shared_strided_prefix_and_empty_continuation_cache():
    # The prompt cache as a slice of a larger one; the continuation cache has capacity 0 (right after prefill).
    gen = torch.Generator().manual_seed(8)
    big = rand(2, 50, 2, 32, gen=gen)
    pk, pv = big[:, :40], rand(2, 40, 2, 32, gen=gen)
    q = rand(4, 2, 32, gen=gen)
    ck = torch.empty(4, 0, 2, 32, device=DEV)
    prefix_lens = torch.tensor([40, 7], dtype=torch.int32, device=DEV)
    cache_lens = torch.zeros(4, dtype=torch.int32, device=DEV)
    out = poisoned(4, 2, 32, torch.float32)
    decode_attn_prefix_shared(q, pk, pv, prefix_lens, ck, ck, cache_lens, 2, out=out)
    ref = ref_rows(q, [pk[i // 2, :int(prefix_lens[i // 2])] for i in range(4)],
                   [pv[i // 2, :int(prefix_lens[i // 2])] for i in range(4)])
    assert rel_err(out, ref) < 1e-5


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_zero_length_row_is_nan_when_unchecked():
    q, k = torch.ones(2, 1, 16, device=DEV), torch.ones(2, 8, 1, 16, device=DEV)
    lens = torch.tensor([0, 8], dtype=torch.int32, device=DEV)
    for ns in (1, 2):
        out = decode_attn(q, k, k, lens, num_splits=ns, check_lengths=False)
        assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()


def test_default_num_splits(monkeypatch):
    cpu = torch.device("cpu")
    assert dmod.default_num_splits(1, 10 * BLOCK_N, cpu) == 4
    assert dmod.default_num_splits(1, BLOCK_N, cpu) == 1      # one block cannot be split
    assert dmod.default_num_splits(8, 10_000, cpu) == 1        # enough programs already
    assert dmod.default_num_splits(1, 10**6, cpu) == dmod.PROGRAMS_PER_SM  # one "SM" without CUDA
    # On a 132-SM card one program would want 4 * 132 splits and a 10^6 cache allows 7,812: MAX_SPLITS caps it.
    monkeypatch.setattr(dmod, "_sm_count", lambda index: 132)
    assert dmod.default_num_splits(1, 10**6, torch.device("cuda", 0)) == dmod.MAX_SPLITS == 64
    assert dmod.default_num_splits(66, 10**6, torch.device("cuda", 0)) == 8  # ceil(528 / 66)
    assert dmod.default_num_splits(66, 5 * BLOCK_N, torch.device("cuda", 0)) == 2  # two blocks per split at least


def i32(values):
    return torch.tensor(values, dtype=torch.int32, device=DEV)


def test_bad_inputs():
    q = torch.zeros(2, 4, 32, device=DEV)
    k = torch.zeros(2, 10, 2, 32, device=DEV)
    lens = torch.tensor([3, 10], dtype=torch.int32, device=DEV)
    bad = [
        (lambda: decode_attn(q[0], k, k, lens), "dimensions"),
        (lambda: decode_attn(q, k.half(), k.half(), lens), "dtype"),
        (lambda: decode_attn(q.double(), k.double(), k.double(), lens), "dtype"),
        (lambda: decode_attn(q, k, k[:, :5], lens), "shape"),
        (lambda: decode_attn(q, k, k, lens.long()), "int32"),
        (lambda: decode_attn(q, k, k, lens[:1]), "entries"),
        (lambda: decode_attn(q[:, :3], k, k, lens), "multiple"),
        (lambda: decode_attn(torch.zeros(2, 4, 48), torch.zeros(2, 10, 2, 48), torch.zeros(2, 10, 2, 48), lens),
         "head dim"),
        (lambda: decode_attn(q, torch.zeros(2, 10, 2, 64), torch.zeros(2, 10, 2, 64), lens), "head dim"),
        (lambda: decode_attn(q, k[:1], k[:1], lens), "batch"),
        (lambda: decode_attn(q, k, k, i32([0, 3]), check_lengths=True), r"\[0\] = 0"),
        (lambda: decode_attn(q, k, k, i32([3, 11]), check_lengths=True), r"\[1\] = 11"),
        (lambda: decode_attn(q, k.transpose(2, 3).contiguous().transpose(2, 3), k, lens), "contiguous"),
        (lambda: decode_attn(q, k, k, lens, num_splits=0), "num_splits"),
        (lambda: decode_attn(q, k, k, lens, sm_scale=-1.0), "sm_scale"),
        (lambda: decode_attn(q, k, k, lens, out=torch.zeros(2, 4, 16)), "out"),
        (lambda: decode_attn(q, k, k, [3, 10]), "torch.Tensor"),
    ]
    pk = torch.zeros(1, 6, 2, 32, device=DEV)
    plens = torch.tensor([6], dtype=torch.int32, device=DEV)
    clens = torch.tensor([0, 10], dtype=torch.int32, device=DEV)
    bad += [
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens, k, k, clens, 3), "multiple of group_size"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens, k, k, clens, 0), "group_size"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens, k, k, clens, 1), "groups"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, i32([0]), k, k, clens, 2, check_lengths=True),
         r"prefix_seqlens\[0\] = 0"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens, k, k, i32([0, 11]), 2, check_lengths=True),
         r"cache_seqlens\[1\] = 11"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens.cpu() if CUDA else plens.double(), k, k, clens, 2),
         "prefix_seqlens"),
        (lambda: decode_attn_prefix_shared(q, pk, pk, plens, k[:, :, :1], k[:, :, :1], clens, 2), "KV heads"),
        (lambda: decode_attn_prefix_shared(q, pk.half(), pk.half(), plens, k, k, clens, 2), "dtype"),
    ]
    for fn, match in bad:
        with pytest.raises(ValueError, match=match):
            fn()
    # The valid prefix call runs.
    out = decode_attn_prefix_shared(q + 1, pk + 1, pk + 1, plens, k + 1, k + 1, clens, 2)
    assert torch.isfinite(out).all()


@pytest.mark.skipif(CUDA, reason="checks the CPU path without the interpreter")
def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(dmod, "_INTERPRET", False)
    q, k = torch.zeros(1, 1, 16), torch.zeros(1, 4, 1, 16)
    with pytest.raises(RuntimeError, match="CUDA"):
        decode_attn(q, k, k, torch.tensor([4], dtype=torch.int32))


# --------------------------------------------------------------------------------------------------
# CUDA, paper shapes (Hq 14, Hkv 2, D 64, bf16)


def sdpa_reference(q, k_cache, v_cache, lens):
    """float32 SDPA over the padded cache with a length mask (the torch path)."""
    b, hq, d = q.shape
    ratio = hq // k_cache.shape[2]
    k = k_cache.float().transpose(1, 2).repeat_interleave(ratio, dim=1)
    v = v_cache.float().transpose(1, 2).repeat_interleave(ratio, dim=1)
    mask = torch.arange(k.shape[2], device=q.device)[None, :] < lens[:, None].long()
    out = torch.nn.functional.scaled_dot_product_attention(q.float()[:, :, None], k, v, attn_mask=mask[:, None, None])
    return out[:, :, 0]


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_paper_shape_decode():
    torch.manual_seed(0)
    b, s_max, hq, hkv, d = 64, 5000, 14, 2, 64
    q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, s_max, hkv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, s_max, hkv, d, device="cuda", dtype=torch.bfloat16)
    lens = torch.randint(1, s_max + 1, (b,), device="cuda", dtype=torch.int32)
    lens[0], lens[1] = 1, s_max
    ref = sdpa_reference(q, k, v, lens)
    for ns in (None, 1, 7, 200):
        out = torch.full_like(q, float("nan"))
        decode_attn(q, k, v, lens, num_splits=ns, out=out)
        assert torch.isfinite(out).all()
        assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2, ns
    q32, k32, v32 = q.float(), k.float(), v.float()
    out = decode_attn(q32, k32, v32, lens)
    assert ((out - sdpa_reference(q32, k32, v32, lens)).norm() / ref.norm()).item() < 1e-3


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_paper_shape_prefix_shared():
    torch.manual_seed(1)
    n_groups, group, p_max, s_max, hq, hkv, d = 8, 8, 1000, 4000, 14, 2, 64
    b = n_groups * group
    dt = torch.bfloat16
    q = torch.randn(b, hq, d, device="cuda", dtype=dt)
    pk = torch.randn(n_groups, p_max, hkv, d, device="cuda", dtype=dt)
    pv = torch.randn(n_groups, p_max, hkv, d, device="cuda", dtype=dt)
    ck = torch.randn(b, s_max, hkv, d, device="cuda", dtype=dt)
    cv = torch.randn(b, s_max, hkv, d, device="cuda", dtype=dt)
    plens = torch.randint(1, p_max + 1, (n_groups,), device="cuda", dtype=torch.int32)
    clens = torch.randint(0, s_max + 1, (b,), device="cuda", dtype=torch.int32)
    clens[0] = 0
    full_k = unshared_cache(pk, plens, ck, clens, group)
    full_v = unshared_cache(pv, plens, cv, clens, group)
    full_lens = plens.repeat_interleave(group) + clens
    ref = sdpa_reference(q, full_k, full_v, full_lens)
    for ns in (None, 1, 5):
        out = torch.full_like(q, float("nan"))
        decode_attn_prefix_shared(q, pk, pv, plens, ck, cv, clens, group, num_splits=ns, out=out)
        assert torch.isfinite(out).all()
        assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2, ns
