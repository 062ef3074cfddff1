"""Varlen flash attention (kernels/flash_attn.py) against a float64 reference.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1), so the sizes
here are small; the same checks at realistic sizes, and the model's loss through the "triton" backend, run
only where CUDA is available.

Every buffer the kernels write is allocated through ``flash_attn._empty``, which the ``poisoned`` fixture
replaces with a NaN-filled allocator: an element a kernel forgets to write stays NaN and fails the finiteness
and error checks, instead of passing by luck with whatever memory held.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from reasonless.kernels import flash_attn as fa
from reasonless.kernels.flash_attn import flash_attn_varlen, varlen_attention

CUDA = torch.cuda.is_available()
if fa._INTERPRET:
    DEVICE = "cpu"
elif CUDA:
    DEVICE = "cuda"
else:
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (set by conftest before imports)",
                allow_module_level=True)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TOLERANCE = {F32: 1e-3, F16: 2e-3, BF16: 1e-2}  # relative Frobenius norm against float64


@pytest.fixture
def poisoned(monkeypatch):
    allocated = []

    def nan_empty(shape, dtype, device):
        t = torch.full(shape, float("nan"), dtype=dtype, device=device)
        allocated.append(t)
        return t

    monkeypatch.setattr(fa, "_empty", nan_empty)
    return allocated


def cu_from_lengths(lengths, device=DEVICE):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def reference(q, k, v, cu_seqlens, causal, sm_scale=None):
    """Per-example attention in float64; KV heads repeated as in Qwen2's repeat_kv (head h reads h // group)."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[2]) if sm_scale is None else sm_scale
    out = []
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e == s:
            continue
        qe = q[s:e].transpose(0, 1)  # (H, L, D)
        ke = k[s:e].repeat_interleave(group, dim=1).transpose(0, 1)
        ve = v[s:e].repeat_interleave(group, dim=1).transpose(0, 1)
        scores = qe @ ke.transpose(1, 2) * scale
        if causal:
            hidden = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(hidden, float("-inf"))
        out.append((scores.softmax(-1) @ ve).transpose(0, 1))
    return torch.cat(out) if out else q.new_zeros(q.shape)


def rel_err(got, want):
    assert want.dtype == torch.float64, "errors are measured against the float64 reference"
    return ((got.double() - want).norm() / want.norm()).item()


def run_and_check(lengths, hq, hkv, d, dtype, causal, sm_scale=None, seed=0, fused=False):
    """Forward + backward of flash_attn_varlen vs the float64 reference; returns the four relative errors."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    cu = cu_from_lengths(lengths)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dtype)

    if fused:
        # q, k, v as strided views of one projection output, like a fused QKV linear layer.
        qkv = rand(total, hq + 2 * hkv, d).requires_grad_()
        q, k, v = qkv[:, :hq], qkv[:, hq:hq + hkv], qkv[:, hq + hkv:]
        leaves = (qkv,)
    else:
        q, k, v = rand(total, hq, d).requires_grad_(), rand(total, hkv, d).requires_grad_(), \
            rand(total, hkv, d).requires_grad_()
        leaves = (q, k, v)
    do = rand(total, hq, d)

    out = flash_attn_varlen(q, k, v, cu, max(lengths), causal=causal, sm_scale=sm_scale)
    assert out.shape == (total, hq, d) and out.dtype == dtype and out.device == q.device
    grads = torch.autograd.grad(out, leaves, do)

    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    if fused:
        q64, k64, v64 = leaves64[0][:, :hq], leaves64[0][:, hq:hq + hkv], leaves64[0][:, hq + hkv:]
    else:
        q64, k64, v64 = leaves64
    want = reference(q64, k64, v64, cu, causal, sm_scale)
    want_grads = torch.autograd.grad(want, leaves64, do.double())

    errors = {}
    for name, got, ref in [("out", out, want)] + [(f"grad{i}", g, w) for i, (g, w) in
                                                  enumerate(zip(grads, want_grads))]:
        assert torch.isfinite(got).all(), f"{name} has non-finite elements"
        assert got.dtype == dtype
        errors[name] = rel_err(got, ref)
    tol = TOLERANCE[dtype]
    assert all(e < tol for e in errors.values()), f"errors {errors} exceed {tol} ({dtype})"
    return errors


# (lengths, Hq, Hkv, D, dtype, causal): ragged lengths with 1-token examples, lengths no block size divides,
# GQA groups 1, 2 and 7, each head dim, each dtype, causal and not.
CASES = [
    ([1, 17, 40, 5, 33], 2, 2, 32, F32, True),
    ([23, 1, 50], 4, 2, 64, F32, False),
    ([37, 1, 20], 7, 1, 128, BF16, True),
    ([70, 3, 1], 2, 1, 64, F16, True),
    ([45, 1, 19], 14, 2, 32, BF16, False),
    ([1, 31, 9], 7, 1, 128, F32, False),
    ([33, 1, 48], 4, 2, 64, BF16, True),
]


@pytest.mark.parametrize("lengths,hq,hkv,d,dtype,causal", CASES,
                         ids=[f"{'causal' if c[5] else 'full'}-g{c[1] // c[2]}-d{c[3]}-{str(c[4])[6:]}"
                              for c in CASES])
def test_matches_float64_reference(poisoned, lengths, hq, hkv, d, dtype, causal):
    run_and_check(lengths, hq, hkv, d, dtype, causal)
    assert poisoned, "the NaN allocator was not used: the poison check is void"


def test_strided_views_empty_examples_and_scale(poisoned):
    # q/k/v share one fused buffer (token stride != heads * D); an empty example sits in the middle.
    run_and_check([19, 0, 1, 26], 4, 2, 32, F32, True, sm_scale=0.3, fused=True, seed=3)


def test_single_token_examples_only(poisoned):
    # A 1-token example attends only to itself: O = V, dV = Σ_group dO, and dQ = dK = 0 up to rounding
    # (the reference's zero gradients leave no relative error to measure).
    gen = torch.Generator().manual_seed(4)
    cu = cu_from_lengths([1, 1, 1])
    q = torch.randn(3, 2, 64, generator=gen).to(DEVICE, BF16).requires_grad_()
    k, v = (torch.randn(3, 1, 64, generator=gen).to(DEVICE, BF16).requires_grad_() for _ in range(2))
    do = torch.randn(3, 2, 64, generator=gen).to(DEVICE, BF16)
    out = flash_attn_varlen(q, k, v, cu, 1)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), do)
    assert torch.equal(out, v.detach().expand(3, 2, 64))
    torch.testing.assert_close(dv.float(), do.float().sum(1, keepdim=True), rtol=1e-2, atol=1e-2)
    for g in (dq, dk):
        assert torch.isfinite(g).all() and g.float().abs().max() < 1e-2 * do.float().abs().max()


def test_matches_model_torch_backend():
    from reasonless.model import attention

    gen = torch.Generator().manual_seed(5)
    lengths = [29, 1, 35]
    cu = cu_from_lengths(lengths)
    q = torch.randn(sum(lengths), 4, 32, generator=gen).to(DEVICE)
    k, v = (torch.randn(sum(lengths), 2, 32, generator=gen).to(DEVICE) for _ in range(2))
    want = attention(q.cpu(), k.cpu(), v.cpu(), cu.cpu(), max(lengths), backend="torch")
    got = varlen_attention(q, k, v, cu, max(lengths))
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


def test_backward_is_deterministic():
    gen = torch.Generator().manual_seed(6)
    lengths = [40, 7]
    cu = cu_from_lengths(lengths)
    q = torch.randn(47, 4, 32, generator=gen).to(DEVICE, BF16).requires_grad_()
    k, v = (torch.randn(47, 2, 32, generator=gen).to(DEVICE, BF16).requires_grad_() for _ in range(2))
    do = torch.randn(47, 4, 32, generator=gen).to(DEVICE, BF16)
    first = torch.autograd.grad(flash_attn_varlen(q, k, v, cu, 40), (q, k, v), do)
    second = torch.autograd.grad(flash_attn_varlen(q, k, v, cu, 40), (q, k, v), do)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_no_tokens():
    q = torch.randn(0, 2, 32, device=DEVICE, requires_grad=True)
    k = torch.randn(0, 1, 32, device=DEVICE, requires_grad=True)
    cu = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    out = flash_attn_varlen(q, k, k, cu, 0)
    assert out.shape == (0, 2, 32)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


def test_max_seqlen_larger_than_needed(poisoned):
    gen = torch.Generator().manual_seed(7)
    cu = cu_from_lengths([9, 4])
    q, k, v = (torch.randn(13, 2, 32, generator=gen).to(DEVICE) for _ in range(3))
    got = flash_attn_varlen(q, k, v, cu, 100)
    assert rel_err(got, reference(q, k, v, cu, True)) < 1e-5


# --------------------------------------------------------------------------------------------------
# Bad input


def _inputs(t=8, hq=2, hkv=1, d=32, dtype=F32):
    return (torch.randn(t, hq, d, device=DEVICE, dtype=dtype), torch.randn(t, hkv, d, device=DEVICE, dtype=dtype),
            torch.randn(t, hkv, d, device=DEVICE, dtype=dtype), cu_from_lengths([t]))


@pytest.mark.parametrize("d", [16, 48, 256])
def test_rejects_head_dim(d):
    with pytest.raises(ValueError, match="head dim"):
        flash_attn_varlen(*_inputs(d=d), 8)


def test_rejects_dtypes():
    with pytest.raises(ValueError, match="dtype"):
        flash_attn_varlen(*_inputs(dtype=torch.float64), 8)
    q, k, v, cu = _inputs()
    with pytest.raises(ValueError, match="share a dtype"):
        flash_attn_varlen(q, k.to(BF16), v, cu, 8)
    with pytest.raises(ValueError, match="int32"):
        flash_attn_varlen(q, k, v, cu.long(), 8)


def test_rejects_shapes():
    q, k, v, cu = _inputs(hq=3, hkv=2)
    with pytest.raises(ValueError, match="multiple"):
        flash_attn_varlen(q, k, v, cu, 8)
    q, k, v, cu = _inputs()
    with pytest.raises(ValueError, match="shapes do not match"):
        flash_attn_varlen(q, k, v[:7], cu, 8)
    with pytest.raises(ValueError, match="total_tokens, Hq, D"):
        flash_attn_varlen(q[0], k, v, cu, 8)
    with pytest.raises(ValueError, match="1-D int32"):
        flash_attn_varlen(q, k, v, cu[:1], 8)


def test_rejects_bad_cu_seqlens_and_max_seqlen():
    q, k, v, _ = _inputs()
    cpu = dict(validate=True)
    with pytest.raises(ValueError, match="end at total_tokens=8"):
        flash_attn_varlen(q, k, v, cu_from_lengths([3, 4]), 8, **cpu)
    with pytest.raises(ValueError, match="decreases at example 1: 5 > 3"):
        flash_attn_varlen(q, k, v, torch.tensor([0, 5, 3, 8], dtype=torch.int32, device=DEVICE), 8, **cpu)
    with pytest.raises(ValueError, match="example 1 has 5 tokens"):
        flash_attn_varlen(q, k, v, cu_from_lengths([3, 5]), 4, **cpu)
    with pytest.raises(ValueError, match="max_seqlen=-1"):
        flash_attn_varlen(q, k, v, cu_from_lengths([8]), -1)
    with pytest.raises(TypeError, match="max_seqlen must be an int"):
        flash_attn_varlen(q, k, v, cu_from_lengths([8]), 8.0)


def test_rejects_scale_causal_and_types():
    q, k, v, cu = _inputs()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sm_scale"):
            flash_attn_varlen(q, k, v, cu, 8, sm_scale=bad)
    with pytest.raises(TypeError, match="causal must be a bool"):
        flash_attn_varlen(q, k, v, cu, 8, causal=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        flash_attn_varlen(q.numpy() if DEVICE == "cpu" else q.tolist(), k, v, cu, 8)


def test_rejects_mixed_devices():
    q, k, v, cu = _inputs()
    with pytest.raises(ValueError, match="one device"):
        flash_attn_varlen(q, k, v, cu.to("meta"), 8)


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.setattr(fa, "_INTERPRET", False)
    q, k, v, cu = (t.cpu() for t in _inputs())
    with pytest.raises(RuntimeError, match="need CUDA tensors"):
        flash_attn_varlen(q, k, v, cu, 8)


# --------------------------------------------------------------------------------------------------
# CUDA only: realistic sizes and the model through the "triton" backend

cuda_only = pytest.mark.skipif(not CUDA or fa._INTERPRET, reason="needs CUDA (compiled Triton kernels)")


def _every_tile_config():
    """(fwd, dkdv, dq) triples covering every config of tile_configs() at least once: 16-bit lists side by side,
    then the fp32 configs together."""
    tiles = fa.tile_configs()
    sixteen = {name: configs[:-1] for name, configs in tiles.items()}
    rounds = max(len(c) for c in sixteen.values())
    triples = [tuple(sixteen[n][i % len(sixteen[n])] for n in ("fwd", "dkdv", "dq")) for i in range(rounds)]
    return triples + [tuple(tiles[n][-1] for n in ("fwd", "dkdv", "dq"))]


@pytest.mark.parametrize("index", range(len(_every_tile_config())))
def test_every_autotune_config_matches_the_reference(poisoned, index):
    # Lengths that no tile divides, one longer than the biggest tile (128), a 1-token example; GQA group 2.
    fwd, dkdv, dq = _every_tile_config()[index]
    dtype = F32 if index == len(_every_tile_config()) - 1 else F16
    lengths = [1, 150, 37] if fa._INTERPRET else [1, 1500, 37, 700]
    with fa.forced_tiles(fwd, dkdv, dq):
        run_and_check(lengths, 4, 2, 32 if fa._INTERPRET else 64, dtype, True, seed=20 + index)
    assert fa._FWD_META != dict(BLOCK_M=fwd[0], BLOCK_N=fwd[1])  # restored afterwards


@cuda_only
@pytest.mark.parametrize("d,hq,hkv,causal,lengths", [
    (64, 14, 2, True, [1, 300, 1777, 4096, 2500, 1000, 37]),        # the paper's heads, ~9.7k tokens
    (128, 8, 1, True, [4097, 3, 2048, 6000, 511]),                  # ~12.7k tokens, group 8
    (128, 4, 4, False, [1500, 1, 2222]),
    (64, 6, 2, True, [7000, 7001, 2000]),                           # 16k tokens, long examples
])
def test_cuda_realistic_sizes(poisoned, d, hq, hkv, causal, lengths):
    # The float64 reference on 7000-token examples needs a few GB; done one example at a time.
    errors = run_and_check(lengths, hq, hkv, d, BF16, causal, seed=11)
    print(errors)


@cuda_only
def test_cuda_fp16_and_fp32():
    run_and_check([513, 1, 1200, 64], 4, 2, 64, F16, True, seed=12)
    run_and_check([513, 1, 700], 4, 2, 128, F32, True, seed=13)


@cuda_only
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_cuda_model_loss_triton_vs_torch(name):
    from reasonless.model import Model, preset

    torch.manual_seed(0)
    model = Model(preset(name, 944)).cuda()
    lengths = [1500, 1, 700, 2222, 64]
    cu = cu_from_lengths(lengths, "cuda")
    tokens = torch.randint(0, 944, (sum(lengths),), device="cuda")
    targets = torch.randint(0, 944, (sum(lengths),), device="cuda")

    def loss_and_grads(backend):
        model.attn_backend = backend
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens, cu, max_seqlen=max(lengths))
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        return loss.item(), grads

    loss_torch, grads_torch = loss_and_grads("torch")
    loss_triton, grads_triton = loss_and_grads("triton")
    assert math.isfinite(loss_triton) and torch.isfinite(grads_triton).all()
    assert abs(loss_triton - loss_torch) / loss_torch < 1e-2, (loss_triton, loss_torch)
    grad_err = ((grads_triton - grads_torch).norm() / grads_torch.norm()).item()
    assert grad_err < 5e-2, grad_err


def test_autotune_switch_picks_one_config_per_precision():
    # The compiled (GPU) launch tables are built at import; check them in a fresh process without the interpreter.
    code = r"""
import os
import reasonless.kernels.flash_attn as fa
for kernel, configs, fp32 in ((fa._fwd_kernel, fa._FWD_CONFIGS, fa._FP32_FWD_CONFIG),
                              (fa._dkdv_kernel, fa._DKDV_CONFIGS, fa._FP32_DKDV_CONFIG),
                              (fa._dq_kernel, fa._DQ_CONFIGS, fa._FP32_DQ_CONFIG)):
    prune = kernel.early_config_prune
    def shape(c):
        return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
    fast = [shape(c) for c in prune(kernel.configs, {}, PRECISION="tf32")]
    slow = [shape(c) for c in prune(kernel.configs, {}, PRECISION="ieee")]
    if os.environ["REASONLESS_AUTOTUNE"] == "0":
        assert fast == [configs[0]] and slow == [fp32], (fast, slow)
    else:
        assert fast == list(configs) and slow == [fp32], (fast, slow)
print("ok")
"""
    import subprocess
    import sys
    for switch in ("0", "1"):
        env = {**os.environ, "TRITON_INTERPRET": "0", "REASONLESS_AUTOTUNE": switch}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
