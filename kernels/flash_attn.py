"""Varlen (packed) flash attention in Triton: forward and backward, causal or not, grouped-query heads.

Inputs are packed as in :mod:`reasonless.model`: ``q`` is ``(total_tokens, Hq, D)``, ``k`` and ``v`` are
``(total_tokens, Hkv, D)``, and ``cu_seqlens`` (int32, ``(B+1,)``) marks where each example starts. Token ``i``
of example ``b`` attends to the tokens of example ``b`` only (to those at or before ``i`` when causal); query
head ``h`` reads KV head ``h // (Hq // Hkv)`` (Qwen2's ``repeat_kv``). Scores are ``sm_scale · q·k``
(default ``1/√D``).

The algorithm is FlashAttention-2 (Dao, 2023):

* **Forward** (:func:`_attn_fwd`): one program per (query block, example, query head) streams the example's
  key/value blocks through an online softmax, never materialising the score matrix, and saves only the
  output and the per-row log-sum-exp (fp32).
* **Backward**: :func:`_attn_bwd_delta` computes ``delta = rowsum(dO ∘ O)``; :func:`_attn_bwd_dkdv` gives
  each (key block, example, KV head) to one program that recomputes the probabilities of every query of
  its GQA group that sees the block and accumulates ``dK`` and ``dV`` in registers (so the sum over the
  group's query heads costs nothing extra); :func:`_attn_bwd_dq` gives each (query block, example,
  query head) to one program that walks the key blocks like the forward and accumulates ``dQ``. Every
  output element has exactly one writer, so there are no atomics and the backward is deterministic; the
  price is that ``Q·Kᵀ`` and ``dO·Vᵀ`` are computed twice (7 block matmuls instead of 5).

Inside the kernels softmax runs in base 2: scores are multiplied by ``sm_scale·log2(e)`` and exponentiated
with ``exp2`` (one multiply cheaper than ``exp``); the saved LSE is in those base-2 units. Matmul operands
stay in the input dtype (fp16/bf16 tensor cores) with fp32 accumulation; fp32 inputs use IEEE fp32 dots (no
TF32), which is exact but slow: the fast paths are fp16 and bf16.

Causal masking is paid for only on the diagonal: a query block starting at ``m0`` sees every key below
``m0`` unmasked (stage 1), and only the key blocks in ``[m0, m0 + BLOCK_M)`` go through the masked loop
(stage 2). The same split is used by the dQ kernel, and mirrored by the dK/dV kernel (the query blocks in
``[n0, n0 + BLOCK_N)`` are masked, those after are not). Lengths need not be multiples of any block: loads
are masked; keys past an example's end only ever fall in the masked stage; query rows past the end are
computed but not stored, and in the dK/dV kernel they load ``lse = +inf``, which makes their probabilities
exactly 0 without a score mask.

Under ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, used by the tests on machines without a GPU) every
kernel runs one small fixed block configuration, and bfloat16 dot operands are widened to fp32 after
rounding (the interpreter's own bf16 dot is wrong; see :func:`_mma`). On a GPU the kernels are autotuned
(keyed on head dim, causal flag, a power-of-two bucket of ``max_seqlen`` and the dtypes);
``REASONLESS_AUTOTUNE=0`` (read at import) runs the first config of each list instead, which is what a test
suite of many small shapes wants.
"""
from __future__ import annotations

import contextlib
import math
import operator
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .interpreter import INTERPRET as _INTERPRET


SUPPORTED_HEAD_DIMS = (32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634
_MAX_GRID_YZ = 65535  # CUDA limit on grid dimensions 1 and 2 (examples, heads)


# Integer arguments Triton would otherwise compile separate variants for (== 1, multiple of 16) without any
# gain here: the GQA group size, the packed length, and the autotuner's bucket.
_NO_SPECIALIZE = ["group", "total_tokens", "SEQ_BUCKET"]


def _empty(shape, dtype, device) -> torch.Tensor:
    # Every buffer the kernels fill comes from here (tests replace it with a NaN-filled allocator to prove
    # that every element is written).
    return torch.empty(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------
# Forward


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr):
    # tl.dot with fp32 accumulation. "upcast" exists for Triton's CPU interpreter, whose dot multiplies
    # bfloat16 operands as their raw uint16 bits: the operands (already rounded to bfloat16, as the tensor
    # cores would see them) are widened to fp32 first, which gives the tensor cores' exact products.
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d, seqlen, lo, hi,
               qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               PRECISION: tl.constexpr):
    # Online softmax over the key blocks [lo, hi). MASKED blocks may hold keys past the example's end and,
    # when CAUSAL, keys after some of the block's queries; unmasked blocks are all visible to all rows.
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            valid = cols < seqlen
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=valid[:, None], other=0.0)
        else:
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :])
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :])
        s = _mma(q, tl.trans(k), None, PRECISION) * qk_scale
        if MASKED:
            keep = valid[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
        # The first block a row sees always holds a visible key (key m0 for causal rows >= m0, key 0
        # otherwise), so m_new is finite from then on and exp2(m_i - m_new) never sees -inf - -inf.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = _mma(p.to(v.dtype), v, acc, PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_fwd(Q, K, V, O, LSE, CU_SEQLENS,
              stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
              total_tokens, group, qk_scale, SEQ_BUCKET,
              HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Attention forward for one block of ``BLOCK_M`` queries of one example and one query head.

    Math (row ``i`` of the block, keys ``j`` of the same example, ``j <= i`` when causal), in base 2 with
    ``c = sm_scale·log2 e``::

        s_ij = c · q_i·k_j        m_i = max_j s_ij        l_i = Σ_j 2^(s_ij − m_i)
        o_i  = Σ_j 2^(s_ij − m_i) v_j / l_i               LSE_i = m_i + log2 l_i

    computed in one pass over key blocks with the running rescale ``2^(m_old − m_new)`` (online softmax).
    Writes ``O[i]`` (input dtype) and ``LSE[h, i]`` (fp32, base 2).

    Grid: ``(cdiv(max_seqlen, BLOCK_M), B, Hq)``; axis 0 runs backwards so the longest (causal) rows of an
    example start first. Programs whose block starts past their example's end exit at once.

    Limits: ``HEAD_DIM`` a power of two ≥ 16 (the wrapper allows 32, 64, 128); ``BLOCK_M`` a multiple of
    ``BLOCK_N`` (so the causal diagonal starts on a key-block boundary); the last dimension contiguous.
    """
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    hq = tl.program_id(2)
    hkv = hq // group
    start = tl.load(CU_SEQLENS + b)
    seqlen = tl.load(CU_SEQLENS + b + 1) - start
    m0 = pid_m * BLOCK_M
    if m0 >= seqlen:
        return
    start64 = start.to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seqlen

    q_base = Q + start64 * stride_qt + hq * stride_qh
    k_base = K + start64 * stride_kt + hkv * stride_kh
    v_base = V + start64 * stride_vt + hkv * stride_vh
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        # Stage 1: keys [0, m0) are before every query of the block. Stage 2: the diagonal.
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n,
                                   offs_d, seqlen, 0, m0, qk_scale, BLOCK_N, False, CAUSAL, PRECISION)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n,
                                   offs_d, seqlen, m0, tl.minimum(m0 + BLOCK_M, seqlen), qk_scale, BLOCK_N,
                                   True, CAUSAL, PRECISION)
    else:
        # Stage 1: the whole key blocks; stage 2: the ragged last one.
        full = (seqlen // BLOCK_N) * BLOCK_N
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n,
                                   offs_d, seqlen, 0, full, qk_scale, BLOCK_N, False, CAUSAL, PRECISION)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n,
                                   offs_d, seqlen, full, seqlen, qk_scale, BLOCK_N, True, CAUSAL, PRECISION)

    acc = acc / l_i[:, None]
    o_base = O + start64 * stride_ot + hq * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + hq.to(tl.int64) * total_tokens + start64 + offs_m, m_i + tl.log2(l_i), mask=row_ok)


# --------------------------------------------------------------------------------------------------
# Backward


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, total_tokens,
                    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """Backward preprocessing: ``DELTA[h, t] = Σ_d dO[t, h, d] · O[t, h, d]`` in fp32.

    ``delta_i = rowsum(dO ∘ O)_i = Σ_j P_ij dP_ij``, the term softmax's Jacobian subtracts:
    ``dS_ij = P_ij (dP_ij − delta_i)``. Computing it once per row here saves the dK/dV and dQ kernels
    from loading ``O``.

    Grid: ``(cdiv(total_tokens, BLOCK_T), Hq)``; works on the packed tokens directly (no example bounds).
    Limits: the last dimension of ``O`` and ``dO`` contiguous.
    """
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_t < total_tokens
    rows = offs_t.to(tl.int64)
    o = tl.load(O + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], mask=ok[:, None], other=0.0)
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + h.to(tl.int64) * total_tokens + rows, delta, mask=ok)


@triton.jit
def _bwd_kv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot, offs_n, offs_d,
                  seqlen, lo, hi, qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
                  PRECISION: tl.constexpr):
    # Query blocks [lo, hi) of one query head against the program's key block, transposed so that the
    # (BLOCK_N, BLOCK_M) tiles feed dK and dV without a transpose of P. Rows past the end load lse = +inf,
    # hence P = 0 there: only the causal diagonal needs a score mask.
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m0
        ok = rows < seqlen
        q = tl.load(q_base + rows[:, None] * stride_qt + offs_d[None, :], mask=ok[:, None], other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_dot + offs_d[None, :], mask=ok[:, None], other=0.0)
        lse = tl.load(lse_base + rows, mask=ok, other=float("inf"))
        delta = tl.load(delta_base + rows, mask=ok, other=0.0)
        s_t = _mma(k, tl.trans(q), None, PRECISION) * qk_scale
        p_t = tl.exp2(s_t - lse[None, :])
        if MASKED:
            p_t = tl.where(rows[None, :] >= offs_n[:, None], p_t, 0.0)
        dv = _mma(p_t.to(do.dtype), do, dv, PRECISION)
        dp_t = _mma(v, tl.trans(do), None, PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = _mma(ds_t.to(q.dtype), q, dk, PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                   stride_dkt, stride_dkh, stride_dvt, stride_dvh,
                   total_tokens, group, qk_scale, sm_scale, SEQ_BUCKET,
                   HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Attention backward, key side: ``dK`` and ``dV`` for one block of ``BLOCK_N`` keys of one KV head.

    Math, for key ``j`` and the queries ``i`` that see it, summed over the ``group`` query heads ``h``
    that share this KV head (``P`` recomputed from the saved base-2 LSE)::

        P_ij  = 2^(c·q_i·k_j − LSE_i)               dP_ij = dO_i·v_j
        dS_ij = P_ij (dP_ij − delta_i)
        dV_j  = Σ_h Σ_i P_ij dO_i                   dK_j  = sm_scale · Σ_h Σ_i dS_ij q_i

    Grid: ``(cdiv(max_seqlen, BLOCK_N), B, Hkv)``. Each program owns its rows of ``dK``/``dV`` (no atomics).
    With causal masking only the query blocks in ``[n0, n0 + BLOCK_N)`` are masked; the ones after are not,
    and the ones before are skipped (they see none of these keys).

    Limits: ``BLOCK_N`` a multiple of ``BLOCK_M``; the last dimension contiguous.
    """
    pid_n = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    hkv = tl.program_id(2)
    start = tl.load(CU_SEQLENS + b)
    seqlen = tl.load(CU_SEQLENS + b + 1) - start
    n0 = pid_n * BLOCK_N
    if n0 >= seqlen:
        return
    start64 = start.to(tl.int64)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < seqlen
    k = tl.load(K + start64 * stride_kt + hkv * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    v = tl.load(V + start64 * stride_vt + hkv * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for g in range(0, group):
        hq = hkv * group + g
        q_base = Q + start64 * stride_qt + hq * stride_qh
        do_base = DO + start64 * stride_dot + hq * stride_doh
        lse_base = LSE + hq.to(tl.int64) * total_tokens + start64
        delta_base = DELTA + hq.to(tl.int64) * total_tokens + start64
        if CAUSAL:
            dk, dv = _bwd_kv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                                   offs_n, offs_d, seqlen, n0, tl.minimum(n0 + BLOCK_N, seqlen), qk_scale,
                                   BLOCK_M, True, PRECISION)
            dk, dv = _bwd_kv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                                   offs_n, offs_d, seqlen, n0 + BLOCK_N, seqlen, qk_scale, BLOCK_M, False,
                                   PRECISION)
        else:
            dk, dv = _bwd_kv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                                   offs_n, offs_d, seqlen, 0, seqlen, qk_scale, BLOCK_M, False, PRECISION)
    dk = dk * sm_scale
    tl.store(DK + start64 * stride_dkt + hkv * stride_dkh + offs_n[:, None] * stride_dkt + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + start64 * stride_dvt + hkv * stride_dvh + offs_n[:, None] * stride_dvt + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _bwd_q_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d, seqlen,
                 lo, hi, qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                 PRECISION: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            valid = cols < seqlen
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=valid[:, None], other=0.0)
        else:
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :])
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :])
        s = _mma(q, tl.trans(k), None, PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            keep = valid[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = _mma(do, tl.trans(v), None, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = _mma(ds.to(k.dtype), k, dq, PRECISION)
    return dq


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS,
                 stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                 stride_dqt, stride_dqh,
                 total_tokens, group, qk_scale, sm_scale, SEQ_BUCKET,
                 HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Attention backward, query side: ``dQ`` for one block of ``BLOCK_M`` queries of one query head.

    Math, for query ``i`` and the keys ``j`` it sees (same notation as :func:`_attn_bwd_dkdv`)::

        dQ_i = sm_scale · Σ_j P_ij (dO_i·v_j − delta_i) k_j

    Grid: ``(cdiv(max_seqlen, BLOCK_M), B, Hq)``, the forward's. The key loop has the forward's two stages
    (unmasked keys below the block, masked diagonal).

    Limits: ``BLOCK_M`` a multiple of ``BLOCK_N``; the last dimension contiguous.
    """
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    hq = tl.program_id(2)
    hkv = hq // group
    start = tl.load(CU_SEQLENS + b)
    seqlen = tl.load(CU_SEQLENS + b + 1) - start
    m0 = pid_m * BLOCK_M
    if m0 >= seqlen:
        return
    start64 = start.to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seqlen
    q = tl.load(Q + start64 * stride_qt + hq * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + start64 * stride_dot + hq * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + hq.to(tl.int64) * total_tokens + start64 + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + hq.to(tl.int64) * total_tokens + start64 + offs_m, mask=row_ok, other=0.0)
    k_base = K + start64 * stride_kt + hkv * stride_kh
    v_base = V + start64 * stride_vt + hkv * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        dq = _bwd_q_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                          seqlen, 0, m0, qk_scale, BLOCK_N, False, CAUSAL, PRECISION)
        dq = _bwd_q_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                          seqlen, m0, tl.minimum(m0 + BLOCK_M, seqlen), qk_scale, BLOCK_N, True, CAUSAL,
                          PRECISION)
    else:
        full = (seqlen // BLOCK_N) * BLOCK_N
        dq = _bwd_q_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                          seqlen, 0, full, qk_scale, BLOCK_N, False, CAUSAL, PRECISION)
        dq = _bwd_q_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                          seqlen, full, seqlen, qk_scale, BLOCK_N, True, CAUSAL, PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + start64 * stride_dqt + hq * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])


# --------------------------------------------------------------------------------------------------
# Launch configurations

_DELTA_BLOCK_T = 64


def _configs(pairs):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in pairs]


# (BLOCK_M, BLOCK_N, warps, stages); BLOCK_M = queries, BLOCK_N = keys per tile. Forward and dQ need
# BLOCK_M % BLOCK_N == 0, dK/dV BLOCK_N % BLOCK_M == 0 (the causal diagonal must start on a tile boundary).
# The 16-bit configs all compile for sm_90 with at most ~100 KB of shared memory at D = 128 (checked offline
# with triton.compile); one a GPU cannot fit would be skipped by the autotuner. fp32 inputs use the single
# small _FP32_* config of each kernel.
_FWD_CONFIGS = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 4), (64, 64, 4, 3), (128, 128, 8, 2)]
_DKDV_CONFIGS = [(32, 128, 8, 3), (32, 64, 4, 3), (64, 128, 8, 2), (64, 64, 4, 3)]
_DQ_CONFIGS = [(128, 32, 8, 3), (64, 32, 4, 3), (128, 64, 8, 2), (64, 64, 4, 3)]
_FP32_FWD_CONFIG, _FP32_DKDV_CONFIG, _FP32_DQ_CONFIG = (64, 32, 4, 2), (32, 64, 4, 2), (64, 32, 4, 2)
_TUNE_KEY = ["HEAD_DIM", "CAUSAL", "SEQ_BUCKET"]  # the autotuner adds the tensors' dtypes itself
assert all(bm % bn == 0 for bm, bn, _, _ in _FWD_CONFIGS + _DQ_CONFIGS + [_FP32_FWD_CONFIG, _FP32_DQ_CONFIG])
assert all(bn % bm == 0 for bm, bn, _, _ in _DKDV_CONFIGS + [_FP32_DKDV_CONFIG])

if _INTERPRET:
    # The interpreter runs Python per program; autotuning there would run every config. Small blocks with
    # BLOCK_M != BLOCK_N exercise the multi-block diagonal paths on small test inputs.
    _fwd_kernel, _FWD_META = _attn_fwd, dict(BLOCK_M=32, BLOCK_N=16)
    _dkdv_kernel, _DKDV_META = _attn_bwd_dkdv, dict(BLOCK_M=16, BLOCK_N=32)
    _dq_kernel, _DQ_META = _attn_bwd_dq, dict(BLOCK_M=32, BLOCK_N=16)
elif os.environ.get("REASONLESS_AUTOTUNE", "1") == "0":
    # One fixed config per kernel (the first of each list): autotuning benchmarks every config for every new
    # key, minutes of compilation for a test suite of many small shapes. Timings should keep autotuning on.
    def _fixed(configs, fp32_config, kernel):
        first, fp32 = _configs([configs[0], fp32_config])

        def pick(configs, named_args, **kwargs):
            return [fp32] if kwargs.get("PRECISION") == "ieee" else [first]

        return triton.autotune([first, fp32], key=_TUNE_KEY, prune_configs_by={"early_config_prune": pick})(kernel)

    _fwd_kernel, _FWD_META = _fixed(_FWD_CONFIGS, _FP32_FWD_CONFIG, _attn_fwd), {}
    _dkdv_kernel, _DKDV_META = _fixed(_DKDV_CONFIGS, _FP32_DKDV_CONFIG, _attn_bwd_dkdv), {}
    _dq_kernel, _DQ_META = _fixed(_DQ_CONFIGS, _FP32_DQ_CONFIG, _attn_bwd_dq), {}
else:
    def _tuned(configs, fp32_config, kernel):
        tuned, (fp32,) = _configs(configs), _configs([fp32_config])

        def prune(configs, named_args, **kwargs):
            # fp32 (IEEE) dots run on the CUDA cores: not a fast path, and big tiles there only spill and
            # take a minute each to compile, so fp32 gets one small tile and no tuning.
            return [fp32] if kwargs.get("PRECISION") == "ieee" else configs

        return triton.autotune(tuned, key=_TUNE_KEY, prune_configs_by={"early_config_prune": prune})(kernel)

    _fwd_kernel, _FWD_META = _tuned(_FWD_CONFIGS, _FP32_FWD_CONFIG, _attn_fwd), {}
    _dkdv_kernel, _DKDV_META = _tuned(_DKDV_CONFIGS, _FP32_DKDV_CONFIG, _attn_bwd_dkdv), {}
    _dq_kernel, _DQ_META = _tuned(_DQ_CONFIGS, _FP32_DQ_CONFIG, _attn_bwd_dq), {}


def tile_configs() -> dict[str, list[tuple[int, int, int, int]]]:
    """Every (BLOCK_M, BLOCK_N, warps, stages) the autotuner may pick, per kernel: the 16-bit lists, then the
    fp32 config."""
    return {"fwd": _FWD_CONFIGS + [_FP32_FWD_CONFIG], "dkdv": _DKDV_CONFIGS + [_FP32_DKDV_CONFIG],
            "dq": _DQ_CONFIGS + [_FP32_DQ_CONFIG]}


@contextlib.contextmanager
def forced_tiles(fwd: tuple[int, int, int, int], dkdv: tuple[int, int, int, int], dq: tuple[int, int, int, int]):
    """Runs the three kernels with these tiles instead of the autotuner's choice (or the interpreter's fixed small
    tiles), so that tests exercise every config the autotuner may pick, not only the ones it happens to pick on
    the test's shapes. Changes module state: not for concurrent use."""
    global _fwd_kernel, _FWD_META, _dkdv_kernel, _DKDV_META, _dq_kernel, _DQ_META
    saved = (_fwd_kernel, _FWD_META, _dkdv_kernel, _DKDV_META, _dq_kernel, _DQ_META)

    def meta(config):
        bm, bn, warps, stages = config
        # The interpreter runs one program at a time; warps and stages mean nothing there.
        return dict(BLOCK_M=bm, BLOCK_N=bn) if _INTERPRET else dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
                                                                    num_stages=stages)

    _fwd_kernel, _FWD_META = _attn_fwd, meta(fwd)
    _dkdv_kernel, _DKDV_META = _attn_bwd_dkdv, meta(dkdv)
    _dq_kernel, _DQ_META = _attn_bwd_dq, meta(dq)
    try:
        yield
    finally:
        _fwd_kernel, _FWD_META, _dkdv_kernel, _DKDV_META, _dq_kernel, _DQ_META = saved


def _seq_bucket(max_seqlen: int) -> int:
    # Power-of-two bucket so the autotuner re-tunes only when the longest example changes scale.
    return max(64, triton.next_power_of_2(max_seqlen))


def _precision(dtype: torch.dtype) -> str:
    # fp32 operands: exact IEEE dots (TF32 would cost ~1e-3 relative error); 16-bit operands use the tensor
    # cores whatever this says (except in the interpreter, see _mma).
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if _INTERPRET and dtype == torch.bfloat16 else "tf32"


# --------------------------------------------------------------------------------------------------
# Host side


def _check_inputs(q, k, v, cu_seqlens, max_seqlen, causal, sm_scale, validate):
    for name, t in (("q", q), ("k", k), ("v", v), ("cu_seqlens", cu_seqlens)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"flash_attn_varlen: {name} must be a torch.Tensor; got {type(t).__name__}")
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"flash_attn_varlen: q must be (total_tokens, Hq, D) and k, v (total_tokens, Hkv, D); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"flash_attn_varlen: shapes do not match: q {tuple(q.shape)} (total_tokens, Hq, D), "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)} (total_tokens, Hkv, D)")
    total, hq, d = q.shape
    hkv = k.shape[1]
    if hkv < 1 or hq % hkv:
        raise ValueError(f"flash_attn_varlen: Hq={hq} must be a positive multiple of Hkv={hkv}")
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"flash_attn_varlen: head dim {d} is not supported; supported: {SUPPORTED_HEAD_DIMS}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"flash_attn_varlen: dtype {q.dtype} is not supported; use float16, bfloat16 or float32")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"flash_attn_varlen: q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"flash_attn_varlen: cu_seqlens must be a 1-D int32 tensor (B+1,) with B >= 1; got "
                         f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    devices = {t.device for t in (q, k, v, cu_seqlens)}
    if len(devices) != 1:
        raise ValueError(f"flash_attn_varlen: q, k, v and cu_seqlens must be on one device; got "
                         f"{', '.join(str(t.device) for t in (q, k, v, cu_seqlens))}")
    if not _INTERPRET and not q.is_cuda:
        raise RuntimeError(f"flash_attn_varlen: the Triton kernels need CUDA tensors (got {q.device}); on a "
                           "machine without a GPU set TRITON_INTERPRET=1 before importing reasonless.kernels "
                           "(slow, for tests) or use the model's 'torch' attention backend")
    try:
        max_seqlen = operator.index(max_seqlen)
    except TypeError:
        raise TypeError(f"flash_attn_varlen: max_seqlen must be an int; got {type(max_seqlen).__name__}") from None
    if max_seqlen < 0:
        raise ValueError(f"flash_attn_varlen: max_seqlen={max_seqlen} must be >= 0")
    if not isinstance(causal, bool):
        raise TypeError(f"flash_attn_varlen: causal must be a bool; got {causal!r}")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(d)
    else:
        sm_scale = float(sm_scale)
        if not (math.isfinite(sm_scale) and sm_scale > 0.0):
            raise ValueError(f"flash_attn_varlen: sm_scale={sm_scale} must be a finite positive number")
    batch = cu_seqlens.numel() - 1
    if batch > _MAX_GRID_YZ or hq > _MAX_GRID_YZ:
        raise ValueError(f"flash_attn_varlen: at most {_MAX_GRID_YZ} examples and query heads per call; got "
                         f"B={batch}, Hq={hq}")
    if validate is None:
        validate = cu_seqlens.device.type == "cpu"
    if validate:
        bounds = cu_seqlens.tolist()
        if bounds[0] != 0 or bounds[-1] != total:
            raise ValueError(f"flash_attn_varlen: cu_seqlens must start at 0 and end at total_tokens={total}; "
                             f"got {bounds[0]} ... {bounds[-1]}")
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        for i, length in enumerate(lengths):
            if length < 0:
                raise ValueError(f"flash_attn_varlen: cu_seqlens decreases at example {i}: "
                                 f"{bounds[i]} > {bounds[i + 1]}")
        longest = max(lengths)
        if longest > max_seqlen:
            raise ValueError(f"flash_attn_varlen: max_seqlen={max_seqlen} but example {lengths.index(longest)} "
                             f"has {longest} tokens")
    return max_seqlen, sm_scale


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(q, k, v, cu_seqlens, max_seqlen, causal, sm_scale):
    total, hq, d = q.shape
    group = hq // k.shape[1]
    batch = cu_seqlens.numel() - 1
    o = _empty((total, hq, d), q.dtype, q.device)
    lse = _empty((hq, total), torch.float32, q.device)
    if total == 0 or max_seqlen == 0:
        return o, lse

    def grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), batch, hq)

    _fwd_kernel[grid](q, k, v, o, lse, cu_seqlens,
                      q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                      o.stride(0), o.stride(1),
                      total, group, sm_scale * _LOG2E, _seq_bucket(max_seqlen),
                      HEAD_DIM=d, CAUSAL=causal, PRECISION=_precision(q.dtype), **_FWD_META)
    return o, lse


def _backward(do, q, k, v, o, lse, cu_seqlens, max_seqlen, causal, sm_scale):
    total, hq, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    batch = cu_seqlens.numel() - 1
    dq = _empty(q.shape, q.dtype, q.device)
    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)
    if total == 0 or max_seqlen == 0:
        return dq, dk, dv
    delta = _empty((hq, total), torch.float32, q.device)
    _attn_bwd_delta[(triton.cdiv(total, _DELTA_BLOCK_T), hq)](
        o, do, delta, o.stride(0), o.stride(1), do.stride(0), do.stride(1), total,
        HEAD_DIM=d, BLOCK_T=_DELTA_BLOCK_T)
    common = dict(HEAD_DIM=d, CAUSAL=causal, PRECISION=_precision(q.dtype))
    bucket = _seq_bucket(max_seqlen)

    def grid_kv(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_N"]), batch, hkv)

    _dkdv_kernel[grid_kv](q, k, v, do, lse, delta, dk, dv, cu_seqlens,
                          q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                          do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
                          total, group, sm_scale * _LOG2E, sm_scale, bucket, **common, **_DKDV_META)

    def grid_q(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), batch, hq)

    _dq_kernel[grid_q](q, k, v, do, lse, delta, dq, cu_seqlens,
                       q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                       do.stride(0), do.stride(1), dq.stride(0), dq.stride(1),
                       total, group, sm_scale * _LOG2E, sm_scale, bucket, **common, **_DQ_META)
    return dq, dk, dv


class _FlashAttnVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, causal, sm_scale):
        o, lse = _forward(q, k, v, cu_seqlens, max_seqlen, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens)
        ctx.max_seqlen, ctx.causal, ctx.sm_scale = max_seqlen, causal, sm_scale
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse, cu_seqlens = ctx.saved_tensors
        # Under autocast the incoming gradient may be fp32 while O is bf16: the kernels want one dtype.
        do = _last_dim_contiguous(do.to(o.dtype))
        dq, dk, dv = _backward(do, q, k, v, o, lse, cu_seqlens, ctx.max_seqlen, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None, None, None


def flash_attn_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                      max_seqlen: int, causal: bool = True, sm_scale: Optional[float] = None, *,
                      validate: Optional[bool] = None) -> torch.Tensor:
    """Attention over packed examples, differentiable in ``q``, ``k`` and ``v``.

    ``q``: ``(total_tokens, Hq, D)``; ``k``, ``v``: ``(total_tokens, Hkv, D)`` with ``Hq`` a multiple of
    ``Hkv`` (query head ``h`` uses KV head ``h // (Hq // Hkv)``); one dtype among float16, bfloat16, float32;
    ``D`` in 32, 64, 128. ``cu_seqlens``: int32 ``(B+1,)`` example boundaries on the same device, from 0 to
    ``total_tokens``, non-decreasing (empty examples are allowed). ``max_seqlen``: the longest example's
    length (it sizes the launch grid; an example longer than it would be left partly unwritten).
    ``causal``: token ``i`` sees only tokens ``<= i`` of its example. ``sm_scale``: default ``1/√D``.

    Returns ``(total_tokens, Hq, D)`` in ``q``'s dtype. Accumulation is fp32 throughout.

    ``validate`` checks ``cu_seqlens`` against ``total_tokens`` and ``max_seqlen``; that reads
    ``cu_seqlens`` on the host, which on a GPU is a synchronisation, so by default (``None``) it runs only
    when ``cu_seqlens`` is on the CPU. Shapes, dtypes and devices are always checked.

    Needs CUDA tensors, or ``TRITON_INTERPRET=1`` set before this module is imported (CPU interpreter).
    """
    max_seqlen, sm_scale = _check_inputs(q, k, v, cu_seqlens, max_seqlen, causal, sm_scale, validate)
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    cu_seqlens = cu_seqlens.contiguous()
    return _FlashAttnVarlen.apply(q, k, v, cu_seqlens, max_seqlen, causal, sm_scale)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int) -> torch.Tensor:
    """The model's attention contract (:func:`reasonless.model.attention`): causal, scale ``1/√D``."""
    return flash_attn_varlen(q, k, v, cu_seqlens, max_seqlen, causal=True)
