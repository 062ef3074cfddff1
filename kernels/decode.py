"""Decode attention over a KV cache ("flash-decoding"), and its GRPO variant whose prompt cache is shared by a group.

One new query token per sequence attends, without a causal mask, to every cached position of its sequence.
Decoding is memory-bound: each step reads the whole cache once and does ~2·D FLOPs per byte-pair read, so the
kernels are organised around reading each KV block once, from as many streaming multiprocessors as possible:

* **GQA packing.** The ``R = Hq / Hkv`` query heads that share a KV head form the rows of one tile, so a KV block
  is loaded once per KV head rather than once per query head (R = 7 for the paper model).
* **Split-KV.** The cache of each (sequence, KV head) is cut into ``num_splits`` chunks handled by separate
  programs; a small second kernel merges their partial results. Batch 1 with 2 KV heads would otherwise occupy two
  streaming multiprocessors of an H100's 132.
* **Prefix sharing** (:func:`decode_attn_prefix_shared`). The G samples of a GRPO group continue the same prompt.
  The prompt's keys/values are stored once per group, and one program per (group, KV head, split) loads a prompt
  block once and scores it against all G·R query rows of the group (one tile), i.e. the prompt is read from memory
  once per group instead of G times. Each sample's own continuation is handled like plain decode, and the two
  sources are merged by the same log-sum-exp rule, since attention over a concatenation of key sets is the
  weighted merge of attention over each set.

Math (per query row q, keys k_j, values v_j, j in a chunk C, scale s): with base-2 scores
``x_j = s·log2(e)·q·k_j``, each split program keeps the online-softmax state ``m = max_j x_j``,
``l = Σ_j 2^(x_j − m)``, ``o = Σ_j 2^(x_j − m) v_j / l`` and stores ``(o, lse = m + log2 l)`` in float32 (an empty
chunk stores ``lse = −inf``, ``o = 0``). The combine kernel computes, over the chunks c of the row,
``M = max_c lse_c``, ``w_c = 2^(lse_c − M)``, ``out = Σ_c w_c o_c / Σ_c w_c``, which equals softmax(s·q·Kᵀ)·V over
the union of the chunks. Products are accumulated in float32; with 16-bit operands the probabilities are rounded to
the operand type before the P·V product (as in FlashAttention), with float32 operands both products are exact IEEE
float32 (no TF32).

Validation: shapes, dtypes, devices and strides are always checked (ValueError). The sequence lengths are checked
against their ranges only when ``check_lengths`` is true; it defaults to true for CPU tensors and false for CUDA
tensors, because reading them on the host costs a device synchronisation per call (per layer and step). The
kernels clamp every length to [0, S_max], so a bad length never reads outside the cache; a row that attends to
nothing (a length 0 in :func:`decode_attn`) comes out NaN.

Without CUDA the kernels run in Triton's CPU interpreter when ``TRITON_INTERPRET=1`` is set before this module is
imported (the tests do this); otherwise calling them on CPU tensors raises RuntimeError. Importing never needs CUDA.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .interpreter import INTERPRET as _INTERPRET

__all__ = ["decode_attn", "decode_attn_prefix_shared", "default_num_splits"]


HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BLOCK_N = 64          # cache positions per inner step
MIN_BLOCK_M = 16      # smallest M of a tensor-core tl.dot
MAX_BLOCK_M = 64      # query rows per tile in the prefix-shared kernel (register budget at D=128)
MAX_SPLITS = 64       # upper bound of the heuristic (explicit num_splits may exceed it)
MIN_BLOCKS_PER_SPLIT = 2
PROGRAMS_PER_SM = 4   # heuristic target: resident programs per SM, enough loads in flight to saturate HBM
COMBINE_SPLITS = 16   # splits merged per step of the combine kernel's loop
LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _decode_split_kernel(
    Q, K, V, SEQLENS, O_PART, LSE_PART, OUT,
    stride_qb, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    S_MAX, HKV, N_TILES, SPLIT_OFFSET, qk_scale,
    GROUP: tl.constexpr, RATIO: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, IS_FP32: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    """Partial attention of one chunk of one KV sequence against all the query rows that read it.

    Grid ``(n_seq · HKV · N_TILES, num_splits)``. Program (pid0, split) takes KV sequence ``seq`` (a batch row for
    plain decode, a group's prompt for the prefix-shared case), KV head ``kvh`` and tile ``tile`` of the
    ``GROUP·RATIO`` query rows that read this KV head of this sequence: row m is sample ``seq·GROUP + m // RATIO``,
    query head ``kvh·RATIO + m % RATIO``; BLOCK_M rows per tile, padded rows are masked. The sequence's length
    ``L = SEQLENS[seq]`` (clamped to [0, S_MAX]) is cut into ``num_splits`` chunks of whole BLOCK_N blocks (split s
    covers blocks [s·per, (s+1)·per), per = ceil(ceil(L/BLOCK_N)/num_splits)); trailing splits may be empty.
    Online softmax over the chunk's blocks, base-2 scores ``qk_scale = sm_scale·log2 e``. Writes, per row,
    ``O_PART[b, h, SPLIT_OFFSET + split, :] = o`` and ``LSE_PART[b, h, SPLIT_OFFSET + split] = m + log2 l``
    (float32), or, when DIRECT (one split and nothing to merge), the normalised output into OUT in its dtype.
    UPCAST_DOT (interpreter only): Triton 3.9's interpreter multiplies bfloat16 tiles as their raw uint16 bits, so
    16-bit operands are widened to float32 first; the products of 16-bit numbers are exact in float32, so the
    result matches the compiled tensor-core path up to summation order.
    """
    pid0 = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    tile = pid0 % N_TILES
    rest = pid0 // N_TILES
    kvh = rest % HKV
    seq = rest // HKV

    length = tl.load(SEQLENS + seq)
    length = tl.minimum(tl.maximum(length, 0), S_MAX)
    n_blocks = (length + BLOCK_N - 1) // BLOCK_N
    per_split = (n_blocks + n_splits - 1) // n_splits
    lo = split * per_split * BLOCK_N
    hi = tl.minimum(lo + per_split * BLOCK_N, length)

    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < GROUP * RATIO
    sample = (seq * GROUP + offs_m // RATIO).to(tl.int64)
    head = kvh * RATIO + offs_m % RATIO
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + sample[:, None] * stride_qb + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)

    k_base = K + seq.to(tl.int64) * stride_kb + kvh * stride_kh
    v_base = V + seq.to(tl.int64) * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_ok = offs_n < hi
        # K is read transposed, (HEAD_DIM, BLOCK_N), so the score tile is a plain q @ k.
        k = tl.load(k_base + offs_n[None, :] * stride_ks + offs_d[:, None],
                    mask=col_ok[None, :], other=0.0)
        if IS_FP32:
            qk = tl.dot(q, k, input_precision="ieee")
        elif UPCAST_DOT:
            qk = tl.dot(q.to(tl.float32), k.to(tl.float32))
        else:
            qk = tl.dot(q, k)
        qk = tl.where(col_ok[None, :], qk * qk_scale, float("-inf"))
        # Every block holds at least one valid position (start < hi), so m_new is finite for every row.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :],
                    mask=col_ok[:, None], other=0.0)
        if IS_FP32:
            pv = tl.dot(p, v, input_precision="ieee")
        elif UPCAST_DOT:
            pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32))
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    if DIRECT:
        # l_i = 0 only for a row with nothing to attend to (invalid input): 0/0 = NaN marks it.
        out = acc / l_i[:, None]
        tl.store(OUT + sample[:, None] * stride_ob + head[:, None] * stride_oh + offs_d[None, :],
                 out.to(OUT.dtype.element_ty), mask=row_ok[:, None])
    else:
        has = l_i > 0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        slot = SPLIT_OFFSET + split
        tl.store(O_PART + sample[:, None] * stride_pb + head[:, None] * stride_ph + slot * stride_ps
                 + offs_d[None, :], out, mask=row_ok[:, None])
        tl.store(LSE_PART + sample * stride_lb + head * stride_lh + slot, lse, mask=row_ok)


@triton.jit
def _decode_combine_kernel(
    O_PART, LSE_PART, OUT,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    HQ, N_SPLITS,
    HEAD_DIM: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
):
    """Log-sum-exp merge of the N_SPLITS partial results of one (row b, query head h).

    Grid ``(B · HQ,)``. ``OUT[b, h] = Σ_c 2^(lse_c − M) o_c / Σ_c 2^(lse_c − M)`` with ``M = max_c lse_c``, read in
    steps of SPLIT_BLOCK partials (two passes: the maximum, then the weighted sums), so any split count fits in
    registers. Empty chunks (lse = −inf) weigh 0; a row whose chunks are all empty comes out NaN (0/0).
    """
    pid = tl.program_id(0)
    b = (pid // HQ).to(tl.int64)
    h = pid % HQ
    offs_s = tl.arange(0, SPLIT_BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    lse_base = LSE_PART + b * stride_lb + h * stride_lh
    o_base = O_PART + b * stride_pb + h * stride_ph

    m_vec = tl.full([SPLIT_BLOCK], float("-inf"), tl.float32)
    for s0 in range(0, N_SPLITS, SPLIT_BLOCK):
        ok = s0 + offs_s < N_SPLITS
        m_vec = tl.maximum(m_vec, tl.load(lse_base + s0 + offs_s, mask=ok, other=float("-inf")))
    m = tl.max(m_vec, 0)
    m = tl.where(m == float("-inf"), 0.0, m)

    den = tl.zeros([SPLIT_BLOCK], tl.float32)
    acc = tl.zeros([SPLIT_BLOCK, HEAD_DIM], tl.float32)
    for s0 in range(0, N_SPLITS, SPLIT_BLOCK):
        ok = s0 + offs_s < N_SPLITS
        w = tl.exp2(tl.load(lse_base + s0 + offs_s, mask=ok, other=float("-inf")) - m)
        o = tl.load(o_base + (s0 + offs_s)[:, None] * stride_ps + offs_d[None, :], mask=ok[:, None], other=0.0)
        den += w
        acc += o * w[:, None]
    out = tl.sum(acc, 0) / tl.sum(den, 0)
    tl.store(OUT + b * stride_ob + h * stride_oh + offs_d, out.to(OUT.dtype.element_ty))


# --------------------------------------------------------------------------------------------------
# Host side


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(programs: int, kv_len: int, device: torch.device) -> int:
    """Heuristic split count for ``programs`` (sequence, KV head, row tile) programs over caches of ``kv_len``.

    Aims at ``PROGRAMS_PER_SM · SMs`` programs in all (a few resident per SM keep enough loads in flight to
    saturate memory bandwidth): ``ceil(target / programs)``, but at least MIN_BLOCKS_PER_SPLIT blocks of BLOCK_N
    positions per split (the merge costs a float32 partial per split) and at most MAX_SPLITS. ``kv_len`` is the
    cache's capacity S_max, not the true lengths (those live on the device; reading them would synchronise): short
    rows of a long cache leave their trailing splits empty, which return at once. Without CUDA (interpreter) the
    "SM count" is 1, so small test batches still exercise splitting. Large batches (B·Hkv ≥ target) get 1 split.
    """
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 1
    target = PROGRAMS_PER_SM * sms
    by_occupancy = -(-target // max(programs, 1))
    by_length = max(1, -(-kv_len // BLOCK_N) // MIN_BLOCKS_PER_SPLIT)
    return max(1, min(by_occupancy, by_length, MAX_SPLITS))


def _check_runnable(t: torch.Tensor) -> None:
    if not t.is_cuda and not _INTERPRET:
        raise RuntimeError("decode attention kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
                           "reasonless.kernels is imported to run them on CPU in Triton's interpreter")


def _check_tensor(name: str, t, dims: int, device: torch.device | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (same device as q)")


def _check_qkv(q, k_cache, v_cache, kname: str, vname: str) -> tuple[int, int, int, int]:
    _check_tensor("q", q, 3)
    _check_tensor(kname, k_cache, 4, q.device)
    _check_tensor(vname, v_cache, 4, q.device)
    if q.dtype not in DTYPES:
        raise ValueError(f"q has dtype {q.dtype}; supported: float32, float16, bfloat16")
    for name, t in ((kname, k_cache), (vname, v_cache)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype}, q has {q.dtype}; they must match")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"{kname} {tuple(k_cache.shape)} and {vname} {tuple(v_cache.shape)} differ in shape")
    _, hq, d = q.shape
    _, _, hkv, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"head dim of q ({d}) and {kname} ({dk}) differ")
    if d not in HEAD_DIMS:
        raise ValueError(f"head dim {d} is not supported; supported: {HEAD_DIMS}")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"query heads Hq={hq} must be a multiple of KV heads Hkv={hkv}")
    for name, t in (("q", q), (kname, k_cache), (vname, v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head) dimension; strides {t.stride()}")
    for name, t in ((kname, k_cache), (vname, v_cache)):
        # Offsets within one sequence are int32 in the kernel (fewer registers than int64 pointer math).
        if (t.shape[1] - 1) * abs(t.stride(1)) + (hkv - 1) * abs(t.stride(2)) + d >= 2**31:
            raise ValueError(f"{name}: one sequence spans more than 2^31 elements (strides {t.stride()})")
    return hq, hkv, d, k_cache.shape[1]


def _check_seqlens(name: str, lens, n: int, device: torch.device) -> None:
    _check_tensor(name, lens, 1, device)
    if lens.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {lens.dtype}")
    if lens.shape[0] != n:
        raise ValueError(f"{name} has {lens.shape[0]} entries, expected {n}")


def _check_range(name: str, lens: torch.Tensor, lo: int, hi: int) -> None:
    values = lens.tolist()
    for i, x in enumerate(values):
        if not lo <= x <= hi:
            raise ValueError(f"{name}[{i}] = {x} is outside [{lo}, {hi}]")


def _check_num_splits(num_splits) -> None:
    if num_splits is not None and (not isinstance(num_splits, int) or isinstance(num_splits, bool)
                                   or num_splits < 1):
        raise ValueError(f"num_splits must be None or a positive int, got {num_splits!r}")


def _check_out(out, b: int, hq: int, d: int, q: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty((b, hq, d), device=q.device, dtype=q.dtype)
    _check_tensor("out", out, 3, q.device)
    if tuple(out.shape) != (b, hq, d) or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be ({b}, {hq}, {d}) {q.dtype} contiguous in its last dimension; got "
                         f"{tuple(out.shape)} {out.dtype} strides {out.stride()}")
    return out


def _scale(sm_scale, d: int) -> float:
    if sm_scale is None:
        return 1.0 / math.sqrt(d)
    sm_scale = float(sm_scale)
    if not math.isfinite(sm_scale) or sm_scale <= 0:
        raise ValueError(f"sm_scale must be a positive finite number, got {sm_scale}")
    return sm_scale


def _launch_split(q, k, v, lens, o_part, lse_part, out, *, n_seq, group, ratio, hkv, s_max, splits, offset,
                  scale, direct):
    d = q.shape[2]
    block_m = max(MIN_BLOCK_M, min(MAX_BLOCK_M, triton.next_power_of_2(group * ratio)))
    n_tiles = -(-(group * ratio) // block_m)
    # Unused buffers in DIRECT mode still need a pointer and strides; the output stands in for them.
    po = o_part if o_part is not None else out
    pl = lse_part if lse_part is not None else out
    pstrides = (po.stride(0), po.stride(1), po.stride(2)) if o_part is not None else (0, 0, 0)
    lstrides = (pl.stride(0), pl.stride(1)) if lse_part is not None else (0, 0)
    grid = (n_seq * hkv * n_tiles, splits)
    _decode_split_kernel[grid](
        q, k, v, lens, po, pl, out,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        *pstrides, *lstrides,
        out.stride(0), out.stride(1),
        s_max, hkv, n_tiles, offset, scale * LOG2E,
        GROUP=group, RATIO=ratio, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=BLOCK_N, DIRECT=direct,
        IS_FP32=q.dtype == torch.float32, UPCAST_DOT=_INTERPRET,
        # 8 warps for the 64×128 tile keep its accumulator and scores in registers (ptxas, sm_90: 151 registers, no
        # spills); the small decode tiles use 4 (68 registers at D=64, cp.async-pipelined K/V loads).
        num_warps=8 if block_m * d >= 64 * 128 else 4, num_stages=2,
    )
    return n_tiles


def _launch_combine(o_part, lse_part, out, n_splits):
    b, hq, _, d = o_part.shape
    _decode_combine_kernel[(b * hq,)](
        o_part, lse_part, out,
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(1),
        hq, n_splits,
        HEAD_DIM=d, SPLIT_BLOCK=COMBINE_SPLITS,
        num_warps=1 if d <= 64 else 2,
    )


def _partials(b: int, hq: int, n_splits: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty((b, hq, n_splits, d), device=device, dtype=torch.float32),
            torch.empty((b, hq, n_splits), device=device, dtype=torch.float32))


def decode_attn(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
                sm_scale: float | None = None, num_splits: int | None = None, *, out: torch.Tensor | None = None,
                check_lengths: bool | None = None) -> torch.Tensor:
    """Attention of one new query token per sequence over its KV cache.

    ``q`` (B, Hq, D); ``k_cache``, ``v_cache`` (B, S_max, Hkv, D), contiguous in the last dimension only (a slice
    of a larger static cache works); ``cache_seqlens`` int32 (B,), each in [1, S_max]: row b attends to cache
    positions [0, cache_seqlens[b]) (the new token's own k/v already written at cache_seqlens[b] − 1). Query head
    h reads KV head h // (Hq/Hkv). ``sm_scale`` defaults to 1/√D. Returns (B, Hq, D) in q's dtype (written into
    ``out`` when given). float32/float16/bfloat16 operands, float32 accumulation, D in 16/32/64/128.

    ``num_splits``: chunks per (row, KV head) cache (flash-decoding); None picks :func:`default_num_splits` from
    B·Hkv and S_max. With one split the kernel writes the output directly; otherwise partials (float32) are
    merged by a second kernel. ``check_lengths``: verify the lengths' range on the host (default: only for CPU
    tensors, since on CUDA it synchronises).

    Launches ``_decode_split_kernel`` on grid (B·Hkv, num_splits), then, if num_splits > 1,
    ``_decode_combine_kernel`` on grid (B·Hq,).
    """
    hq, hkv, d, s_max = _check_qkv(q, k_cache, v_cache, "k_cache", "v_cache")
    b = q.shape[0]
    if k_cache.shape[0] != b:
        raise ValueError(f"k_cache has batch {k_cache.shape[0]}, q has {b}")
    if s_max < 1:
        raise ValueError("the cache has S_max = 0 positions")
    _check_seqlens("cache_seqlens", cache_seqlens, b, q.device)
    _check_num_splits(num_splits)
    scale = _scale(sm_scale, d)
    out = _check_out(out, b, hq, d, q)
    if check_lengths if check_lengths is not None else not q.is_cuda:
        _check_range("cache_seqlens", cache_seqlens, 1, s_max)
    _check_runnable(q)
    if b == 0:
        return out
    ratio = hq // hkv
    splits = num_splits or default_num_splits(b * hkv, s_max, q.device)
    if splits == 1:
        _launch_split(q, k_cache, v_cache, cache_seqlens, None, None, out, n_seq=b, group=1, ratio=ratio, hkv=hkv,
                      s_max=s_max, splits=1, offset=0, scale=scale, direct=True)
        return out
    o_part, lse_part = _partials(b, hq, splits, d, q.device)
    _launch_split(q, k_cache, v_cache, cache_seqlens, o_part, lse_part, out, n_seq=b, group=1, ratio=ratio, hkv=hkv,
                  s_max=s_max, splits=splits, offset=0, scale=scale, direct=False)
    _launch_combine(o_part, lse_part, out, splits)
    return out


def decode_attn_prefix_shared(q: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor,
                              prefix_seqlens: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              cache_seqlens: torch.Tensor, group_size: int, sm_scale: float | None = None,
                              num_splits: int | None = None, *, out: torch.Tensor | None = None,
                              check_lengths: bool | None = None) -> torch.Tensor:
    """Decode attention for GRPO groups whose samples share one stored copy of their prompt's keys/values.

    ``q`` (B, Hq, D) with B = n_groups · group_size, sample b in group b // group_size; ``prefix_k``,
    ``prefix_v`` (n_groups, P_max, Hkv, D); ``prefix_seqlens`` int32 (n_groups,) in [1, P_max]; ``k_cache``,
    ``v_cache`` (B, S_max, Hkv, D) each sample's own continuation; ``cache_seqlens`` int32 (B,) in [0, S_max].
    Row b attends to prefix[g][:prefix_seqlens[g]] followed by cache[b][:cache_seqlens[b]], g = b // group_size
    (no causal mask: the new token is the last cache entry, or the last prompt entry when cache_seqlens[b] = 0).
    Same dtypes, head dims, scale and ``out``/``check_lengths`` as :func:`decode_attn`.

    Three launches: ``_decode_split_kernel`` over the prompts on grid (n_groups·Hkv·tiles, prefix splits), whose
    tile holds the group's group_size·(Hq/Hkv) query rows (at most 64 per tile; tiles = ceil(rows / 64)), so each
    prompt block is read once per group and tile; the same kernel over the continuations on grid (B·Hkv, cache
    splits; skipped when S_max = 0); then ``_decode_combine_kernel`` on grid (B·Hq,) merging all partials of a row. ``num_splits`` applies
    to each of the two sources (None: :func:`default_num_splits` for each, from its own program count and
    capacity).
    """
    hq, hkv, d, p_max = _check_qkv(q, prefix_k, prefix_v, "prefix_k", "prefix_v")
    _check_qkv(q, k_cache, v_cache, "k_cache", "v_cache")
    b = q.shape[0]
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if b % group_size:
        raise ValueError(f"batch {b} is not a multiple of group_size {group_size}")
    n_groups = b // group_size
    if prefix_k.shape[0] != n_groups:
        raise ValueError(f"prefix_k has {prefix_k.shape[0]} groups, expected B / group_size = {n_groups}")
    if k_cache.shape[0] != b:
        raise ValueError(f"k_cache has batch {k_cache.shape[0]}, q has {b}")
    if k_cache.shape[2] != hkv:
        raise ValueError(f"k_cache has {k_cache.shape[2]} KV heads, prefix_k has {hkv}")
    if p_max < 1:
        raise ValueError("the prefix cache has P_max = 0 positions")
    s_max = k_cache.shape[1]
    _check_seqlens("prefix_seqlens", prefix_seqlens, n_groups, q.device)
    _check_seqlens("cache_seqlens", cache_seqlens, b, q.device)
    _check_num_splits(num_splits)
    scale = _scale(sm_scale, d)
    out = _check_out(out, b, hq, d, q)
    if check_lengths if check_lengths is not None else not q.is_cuda:
        _check_range("prefix_seqlens", prefix_seqlens, 1, p_max)
        _check_range("cache_seqlens", cache_seqlens, 0, s_max)
    _check_runnable(q)
    if b == 0:
        return out
    ratio = hq // hkv
    rows = group_size * ratio
    n_tiles = -(-rows // max(MIN_BLOCK_M, min(MAX_BLOCK_M, triton.next_power_of_2(rows))))
    p_splits = num_splits or default_num_splits(n_groups * hkv * n_tiles, p_max, q.device)
    # A continuation cache of capacity 0 (right after prefill) contributes nothing and is not launched (a CUDA
    # tensor with no elements may have no valid pointer to pass to a kernel).
    c_splits = (num_splits or default_num_splits(b * hkv, s_max, q.device)) if s_max > 0 else 0
    o_part, lse_part = _partials(b, hq, p_splits + c_splits, d, q.device)
    _launch_split(q, prefix_k, prefix_v, prefix_seqlens, o_part, lse_part, out, n_seq=n_groups, group=group_size,
                  ratio=ratio, hkv=hkv, s_max=p_max, splits=p_splits, offset=0, scale=scale, direct=False)
    if c_splits:
        _launch_split(q, k_cache, v_cache, cache_seqlens, o_part, lse_part, out, n_seq=b, group=1, ratio=ratio,
                      hkv=hkv, s_max=s_max, splits=c_splits, offset=p_splits, scale=scale, direct=False)
    _launch_combine(o_part, lse_part, out, p_splits + c_splits)
    return out
