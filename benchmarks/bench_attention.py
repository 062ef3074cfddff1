"""Varlen causal flash attention (kernels/flash_attn.py) vs PyTorch SDPA's flash backend, bf16, on a GPU.

    PYTHONPATH=. python benchmarks/bench_attention.py [--quick]      # Markdown table, ~1-2 min on an H100
    PYTHONPATH=. python -m pytest benchmarks/bench_attention.py -q  # pytest-benchmark (skipped without CUDA)

Workload: example lengths drawn uniformly from 300..7000 tokens (the span of 30×30 maze traces), packed
back to back into 16k-64k tokens. Ours runs on the packed tokens with ``cu_seqlens``; SDPA
(``SDPBackend.FLASH_ATTENTION``) runs on the same examples padded to ``(B, H, Lmax, D)``, which is how a
model without varlen kernels would batch them. Query and KV heads are equal in the comparison rows (SDPA's
flash backend has no GQA); the last row is the paper's 14/2 GQA shape, with SDPA fed KV heads repeated
beforehand (outside the timing).

FLOPs are the *useful* causal ones, the same count for both columns, so padding and masked-out work are
SDPA's and our overhead rather than extra credit::

    forward  = 2 matmuls · 2 FLOPs · D · Hq · Σ_i L_i (L_i + 1) / 2
    backward = 2.5 × forward   (5 matmuls: QKᵀ recomputed, dV, dP, dQ, dK)

(our backward actually issues 7 block matmuls because dQ is computed by a separate kernel; those extra two
are not credited). Times are CUDA-event medians after warm-up (the warm-up includes Triton's autotuning),
forward alone and backward alone (``torch.autograd.grad`` on a retained graph).
"""
from __future__ import annotations

import argparse
import sys
import time

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="attention benchmarks need a CUDA GPU")

DTYPE = torch.bfloat16
MIN_LEN, MAX_LEN = 300, 7000


def pack_lengths(total: int, seed: int = 0) -> list[int]:
    """Example lengths uniform in [MIN_LEN, MAX_LEN] until ``total`` tokens; the last one is cut to fit."""
    gen = torch.Generator().manual_seed(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(int(torch.randint(MIN_LEN, MAX_LEN + 1, (1,), generator=gen)))
    lengths[-1] -= sum(lengths) - total
    return lengths


def causal_fwd_flops(lengths: list[int], hq: int, d: int) -> float:
    return 4.0 * d * hq * sum(n * (n + 1) / 2 for n in lengths)


def time_ms(fn, warmup: int, iters: int) -> float:
    """Median CUDA-event time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


class Workload:
    """Packed inputs for our kernel and the padded copy of the same examples for SDPA."""

    def __init__(self, total: int, hq: int, hkv: int, d: int, seed: int = 0):
        self.lengths = pack_lengths(total, seed)
        self.hq, self.hkv, self.d = hq, hkv, d
        gen = torch.Generator(device="cuda").manual_seed(seed)
        cu = [0]
        for n in self.lengths:
            cu.append(cu[-1] + n)
        self.cu = torch.tensor(cu, dtype=torch.int32, device="cuda")
        self.max_len = max(self.lengths)

        def rand(*shape):
            return torch.randn(*shape, generator=gen, device="cuda", dtype=DTYPE)

        self.q, self.k, self.v = rand(total, hq, d), rand(total, hkv, d), rand(total, hkv, d)
        self.do = rand(total, hq, d)
        self.flops_fwd = causal_fwd_flops(self.lengths, hq, d)

    def padded(self):
        """(B, H, Lmax, D) copies for SDPA, KV heads repeated to Hq, and the padded output gradient."""
        b, group = len(self.lengths), self.hq // self.hkv

        def pad(x, repeat=1):
            x = x.repeat_interleave(repeat, dim=1) if repeat > 1 else x
            out = torch.zeros(b, self.max_len, x.shape[1], self.d, device="cuda", dtype=DTYPE)
            for i, (s, e) in enumerate(zip(self.cu[:-1].tolist(), self.cu[1:].tolist())):
                out[i, :e - s] = x[s:e]
            return out.transpose(1, 2).contiguous()

        return pad(self.q), pad(self.k, group), pad(self.v, group), pad(self.do)

    def unpad(self, x):
        x = x.transpose(1, 2)
        return torch.cat([x[i, :n] for i, n in enumerate(self.lengths)])


def ours_fns(w: Workload):
    from reasonless.kernels.flash_attn import flash_attn_varlen

    q, k, v = (t.detach().requires_grad_() for t in (w.q, w.k, w.v))

    def fwd():
        with torch.no_grad():
            return flash_attn_varlen(q, k, v, w.cu, w.max_len)

    out = flash_attn_varlen(q, k, v, w.cu, w.max_len)

    def bwd():
        return torch.autograd.grad(out, (q, k, v), w.do, retain_graph=True)

    return fwd, bwd, out


def sdpa_fns(w: Workload):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qp, kp, vp, dop = w.padded()
    qp, kp, vp = (t.requires_grad_() for t in (qp, kp, vp))

    def fwd():
        with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

    def bwd():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.autograd.grad(out, (qp, kp, vp), dop, retain_graph=True)

    return fwd, bwd, out


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


# --------------------------------------------------------------------------------------------------
# pytest-benchmark


def _cuda_timed(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


@pytest.fixture(scope="module", params=[(64, 16, 16), (128, 8, 8), (64, 14, 2)], ids=["d64", "d128", "d64-gqa7"])
def workload(request):
    d, hq, hkv = request.param
    return Workload(32768, hq, hkv, d)


@pytest.mark.parametrize("impl", ["ours", "sdpa"])
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
def test_attention(benchmark, workload, impl, direction):
    fwd, bwd, _ = (ours_fns if impl == "ours" else sdpa_fns)(workload)
    fn = _cuda_timed(fwd if direction == "fwd" else bwd)
    for _ in range(3):  # compile + autotune outside the measurement
        fn()
    benchmark.pedantic(fn, rounds=10, iterations=1)
    flops = workload.flops_fwd * (1.0 if direction == "fwd" else 2.5)
    benchmark.extra_info["tflops"] = round(tflops(flops, benchmark.stats.stats.median * 1e3), 1)
    benchmark.extra_info["tokens"] = sum(workload.lengths)
    benchmark.extra_info["examples"] = len(workload.lengths)


# --------------------------------------------------------------------------------------------------
# Script


def row(total: int, d: int, hq: int, hkv: int, warmup: int, iters: int) -> list[str]:
    w = Workload(total, hq, hkv, d, seed=total + d)
    cells = [str(d), f"{hq}/{hkv}", f"{total // 1024}k ({len(w.lengths)})"]
    o_fwd, o_bwd, o_out = ours_fns(w)
    t_of, t_ob = time_ms(o_fwd, warmup, iters), time_ms(o_bwd, warmup, iters)
    try:
        s_fwd, s_bwd, s_out = sdpa_fns(w)
        t_sf, t_sb = time_ms(s_fwd, warmup, iters), time_ms(s_bwd, warmup, iters)
        ref = w.unpad(s_out).float()
        diff = ((o_out.float() - ref).norm() / ref.norm()).item()
        sdpa = [f"{tflops(w.flops_fwd, t_sf):.0f}", f"{tflops(2.5 * w.flops_fwd, t_sb):.0f}", f"{diff:.1e}"]
        del s_fwd, s_bwd, s_out
    except Exception as exc:  # SDPA's flash backend may refuse a shape; keep our numbers
        sdpa = ["—", "—", f"SDPA failed: {type(exc).__name__}: {str(exc)[:80]}"]
    cells += [f"{tflops(w.flops_fwd, t_of):.0f}", sdpa[0], f"{tflops(2.5 * w.flops_fwd, t_ob):.0f}", sdpa[1],
              f"{t_of:.2f} / {t_ob:.2f}", sdpa[2]]
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16k tokens only, fewer iterations")
    args = parser.parse_args(argv)
    if not CUDA:
        print("bench_attention: no CUDA GPU; nothing to measure")
        return 0
    totals = [16384] if args.quick else [16384, 32768, 65536]
    warmup, iters = (2, 5) if args.quick else (3, 10)
    shapes = [(64, 16, 16), (128, 8, 8)]
    rows = [(t, *s) for s in shapes for t in totals] + [(totals[-1], 64, 14, 2)]
    started = time.time()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, causal; TFLOP/s on useful causal FLOPs "
          "(backward = 2.5 × forward); SDPA = flash backend on padded (B, H, Lmax, D)\n")
    header = ["D", "Hq/Hkv", "tokens (examples)", "fwd ours", "fwd SDPA", "bwd ours", "bwd SDPA",
              "ours ms fwd / bwd", "rel. diff vs SDPA"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for total, d, hq, hkv in rows:
        try:
            cells = row(total, d, hq, hkv, warmup, iters)
        except Exception as exc:  # one failing shape must not cost the other rows
            cells = [str(d), f"{hq}/{hkv}", f"{total // 1024}k", f"FAILED: {type(exc).__name__}: {str(exc)[:160]}"]
            cells += [""] * (len(header) - len(cells))
        print("| " + " | ".join(cells) + " |", flush=True)
        torch.cuda.empty_cache()
    print(f"\n{time.time() - started:.0f} s in all (first rows include Triton compilation and autotuning)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
