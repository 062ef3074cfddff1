"""Decode attention on a GPU: reasonless.kernels.decode / decode_attn_prefix_shared against the torch paths.

    PYTHONPATH=. python benchmarks/bench_decode.py [--quick]     # Markdown table on stdout
    PYTHONPATH=. python -m pytest benchmarks/bench_decode.py -s   # same table (quick), skipped without CUDA

One call = one attention layer of one decode step: B new query tokens, each attending to its whole KV cache. Shape
of the paper model (Qwen2.5-0.5B): 14 query heads, 2 KV heads, head dim 64, bf16. Cases: batch 1, 8, 64 with
caches of 1,000 and 5,000 tokens (every row full), and GRPO decoding with 8 groups × 8 samples, a 1,000-token
prompt and 4,000 generated tokens.

Methods:
* ``triton``: decode_attn with the default split heuristic; ``triton 1 split``: num_splits=1 (no flash-decoding).
* ``triton shared``: decode_attn_prefix_shared (prompt stored once per group).
* ``torch sdpa``: F.scaled_dot_product_attention over the padded cache with a boolean length mask (mask built in
  the timed region, as a sampler would every step), GQA through enable_gqa (or repeat_interleave on old torch).
* ``torch loop``: one SDPA call per row over its exact cache slice (what torch does without a mask).

Columns: time per call (CUDA events, after warm-up), decode tokens/s = B / time, the K/V bytes the method must
read at least (the prompt once per group for ``triton shared``, once per sample for the others), and achieved
bandwidth = those bytes / time, the honest metric for a memory-bound kernel (H100 SXM peak ≈ 3.35 TB/s).
A failing row prints its exception instead of stopping the table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

try:
    from reasonless.kernels.decode import decode_attn, decode_attn_prefix_shared
except ImportError:  # run as a script from a source checkout without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from reasonless.kernels.decode import decode_attn, decode_attn_prefix_shared

HQ, HKV, D = 14, 2, 64
DTYPE = torch.bfloat16
DEVICE = "cuda"


def time_call(fn, iters: int, warmup: int = 3) -> float:
    """Mean seconds per call over ``iters`` calls timed by CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def sdpa(q, k, v, mask=None):
    """SDPA with GQA: enable_gqa where torch has it (2.5+), else the KV heads repeated."""
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    ratio = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(ratio, 1), v.repeat_interleave(ratio, 1),
                                          attn_mask=mask)


def sdpa_padded(q, k_cache, v_cache, lens):
    k = k_cache.transpose(1, 2)  # (B, Hkv, S, D) views of the cache
    v = v_cache.transpose(1, 2)
    mask = (torch.arange(k.shape[2], device=q.device)[None, :] < lens[:, None])[:, None, None, :]
    return sdpa(q[:, :, None], k, v, mask)[:, :, 0]


def sdpa_loop(q, k_cache, v_cache, host_lens):
    outs = []
    for b, n in enumerate(host_lens):
        outs.append(sdpa(q[b:b + 1, :, None], k_cache[b:b + 1, :n].transpose(1, 2),
                         v_cache[b:b + 1, :n].transpose(1, 2))[:, :, 0])
    return torch.cat(outs)


def kv_bytes(tokens: int) -> int:
    return tokens * HKV * D * 2 * torch.tensor([], dtype=DTYPE).element_size()


def run_plain(b: int, length: int, iters: int):
    g = torch.Generator(device=DEVICE).manual_seed(b * 7 + length)
    q = torch.randn(b, HQ, D, device=DEVICE, dtype=DTYPE, generator=g)
    k = torch.randn(b, length, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    v = torch.randn(b, length, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    lens = torch.full((b,), length, device=DEVICE, dtype=torch.int32)
    host = [length] * b
    nbytes = kv_bytes(b * length)
    methods = {
        "triton": lambda: decode_attn(q, k, v, lens),
        "triton 1 split": lambda: decode_attn(q, k, v, lens, num_splits=1),
        "torch sdpa": lambda: sdpa_padded(q, k, v, lens),
        "torch loop": lambda: sdpa_loop(q, k, v, host),
    }
    ref = sdpa_padded(q.float(), k.float(), v.float(), lens)
    for name, fn in methods.items():
        yield f"B={b}, cache {length}", name, b, nbytes, lambda fn=fn: check_and_time(fn, ref, iters)


def run_shared(iters: int, n_groups: int = 8, group: int = 8, prompt: int = 1000, gen_len: int = 4000):
    b = n_groups * group
    g = torch.Generator(device=DEVICE).manual_seed(11)
    q = torch.randn(b, HQ, D, device=DEVICE, dtype=DTYPE, generator=g)
    pk = torch.randn(n_groups, prompt, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    pv = torch.randn(n_groups, prompt, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    ck = torch.randn(b, gen_len, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    cv = torch.randn(b, gen_len, HKV, D, device=DEVICE, dtype=DTYPE, generator=g)
    plens = torch.full((n_groups,), prompt, device=DEVICE, dtype=torch.int32)
    clens = torch.full((b,), gen_len, device=DEVICE, dtype=torch.int32)
    # The unshared layout a sampler without prefix sharing keeps: the prompt copied into every sample's cache.
    fk = torch.cat([pk.repeat_interleave(group, 0), ck], dim=1)
    fv = torch.cat([pv.repeat_interleave(group, 0), cv], dim=1)
    flens = plens.repeat_interleave(group) + clens
    host = flens.tolist()
    shared_bytes = kv_bytes(n_groups * prompt + b * gen_len)
    full_bytes = kv_bytes(b * (prompt + gen_len))
    ref = sdpa_padded(q.float(), fk.float(), fv.float(), flens)
    case = f"GRPO {n_groups}x{group}, prompt {prompt} + {gen_len}"
    methods = {
        "triton shared": (lambda: decode_attn_prefix_shared(q, pk, pv, plens, ck, cv, clens, group), shared_bytes),
        "triton (unshared cache)": (lambda: decode_attn(q, fk, fv, flens), full_bytes),
        "torch sdpa (unshared)": (lambda: sdpa_padded(q, fk, fv, flens), full_bytes),
        "torch loop (unshared)": (lambda: sdpa_loop(q, fk, fv, host), full_bytes),
    }
    for name, (fn, nbytes) in methods.items():
        yield case, name, b, nbytes, lambda fn=fn: check_and_time(fn, ref, iters)


def check_and_time(fn, ref, iters: int) -> float:
    out = fn()
    err = ((out.float() - ref).norm() / ref.norm()).item()
    if not err < 2e-2:
        raise AssertionError(f"relative error {err:.3g} against float32 SDPA")
    return time_call(fn, iters)


def table(quick: bool = False) -> str:
    iters = 20 if quick else 100
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    lines = [f"Decode attention, {device}, Hq {HQ}, Hkv {HKV}, D {D}, bf16, "
             f"torch {torch.__version__}",
             "",
             "| case | method | µs/call | tokens/s | K/V MB read | GB/s |",
             "|---|---|---:|---:|---:|---:|"]
    cases = [lambda b=b, n=n: run_plain(b, n, iters) for b in (1, 8, 64) for n in (1000, 5000)]
    cases.append(lambda: run_shared(iters))
    # Lazily, one case's tensors alive at a time.
    for case, name, b, nbytes, run in (row for make in cases for row in safe_rows(make)):
        try:
            t = run()
            lines.append(f"| {case} | {name} | {t * 1e6:,.1f} | {b / t:,.0f} | {nbytes / 1e6:,.1f} | "
                         f"{nbytes / t / 1e9:,.0f} |")
        except Exception as exc:  # one bad row must not lose the rest of a short GPU session
            lines.append(f"| {case} | {name} | error: {type(exc).__name__}: {str(exc)[:200]} | | | |")
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return "\n".join(lines)


def safe_rows(make):
    """The rows of one case; a failure while building its inputs becomes one error row."""
    try:
        yield from make()
    except Exception as exc:
        msg = f"{type(exc).__name__}: {str(exc)[:200]}"

        def fail(msg=msg):
            raise RuntimeError(msg)
        yield "setup", "-", 1, 1, fail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode attention benchmark needs CUDA")
def test_bench_decode():
    print("\n" + table(quick=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed iterations")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("CUDA is not available: the decode attention benchmark needs a GPU; skipped.")
        return 0
    print(table(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
