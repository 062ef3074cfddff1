"""Qwen2-style decoder trained from scratch on maze sequences (docs/design.md §7).

One readable file: RMSNorm, rotary position embeddings (RoPE), SwiGLU MLP, grouped-query attention
(GQA) and tied input/output embeddings. Only the q/k/v projections carry biases, as in Qwen2, and the
module names follow Hugging Face's ``Qwen2ForCausalLM`` (``embed_tokens``, ``layers.{i}.self_attn.q_proj``,
``mlp.gate_proj``, ``input_layernorm``, ``norm``...) so an export is a 1:1 rename with a ``model.`` prefix.

Inputs are *packed*: a flat token vector of shape ``(total_tokens,)`` holding several whole examples
back to back, with ``cu_seqlens`` (int32, ``(B+1,)``, ``cu_seqlens[0] == 0``, ``cu_seqlens[-1] ==
total_tokens``) marking where each example starts. Attention is causal within an example and never
crosses a boundary, and RoPE positions restart at 0 for every example, so a packed example computes
what it would compute alone.

All attention goes through :func:`attention`, which dispatches on ``backend``: ``"torch"`` (exact
reference, any device) or ``"triton"`` (the CUDA kernels of ``reasonless.kernels``, imported only when
asked for). :func:`default_attn_backend` picks one at run time (``REASONLESS_ATTN`` overrides it).

Generation (``reasonless.sample``) runs the same layers against a :class:`KVCache`: :meth:`Model.prefill`
pushes packed prompts through the normal packed forward while the cache keeps every layer's keys and
values, then :meth:`Model.decode` feeds one token per cache row and attends over the cache
(:func:`decode_attention`, or :func:`decode_attention_prefix_shared` when rows of a group share one
prompt's cache).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int  # query heads
    n_kv_head: int  # key/value heads; n_head must be a multiple (GQA group size = n_head // n_kv_head)
    d_ff: int  # SwiGLU hidden width
    head_dim: Optional[int] = None  # None: d_model // n_head
    rope_theta: float = 10000.0
    max_seq_len: int = 8192  # longest single example (positions 0 .. max_seq_len-1)
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name}={value!r}: must be a positive integer")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"ModelConfig: n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim is None:
            if self.d_model % self.n_head:
                raise ValueError(
                    f"ModelConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}; set head_dim")
            object.__setattr__(self, "head_dim", self.d_model // self.n_head)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim!r}: RoPE needs a positive even head_dim")
        if not self.rope_theta > 1.0:
            raise ValueError(f"ModelConfig.rope_theta={self.rope_theta!r}: must be > 1")
        if not self.norm_eps > 0.0 or not self.init_std > 0.0:
            raise ValueError("ModelConfig: norm_eps and init_std must be > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


# Architecture shapes; vocab_size comes from the data (944 at 30×30).
PRESETS: dict[str, dict] = {
    # Trains on a 2-core CPU in minutes.
    "tiny": dict(n_layer=4, d_model=128, n_head=4, n_kv_head=2, d_ff=384, rope_theta=10000.0, max_seq_len=8192),
    "small": dict(n_layer=8, d_model=384, n_head=6, n_kv_head=2, d_ff=1024, rope_theta=10000.0, max_seq_len=16384),
    # Qwen2.5-0.5B: ≈0.36 B parameters with the 944-token vocabulary (0.49 B with Qwen's 151,936).
    "paper": dict(n_layer=24, d_model=896, n_head=14, n_kv_head=2, d_ff=4864, rope_theta=1e6, max_seq_len=32768),
}


def preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    """The config of preset ``name`` for a vocabulary of ``vocab_size`` tokens, with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets are: {', '.join(PRESETS)}")
    return ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


def num_params(config: ModelConfig) -> int:
    """Number of parameters of ``Model(config)``, counted analytically (the tied head counts once)."""
    d, hd = config.d_model, config.head_dim
    q_out, kv_out = config.n_head * hd, config.n_kv_head * hd
    attn = (d * q_out + q_out) + 2 * (d * kv_out + kv_out) + q_out * d  # q,k,v with bias; o without
    mlp = 3 * d * config.d_ff
    norms = 2 * d
    return config.vocab_size * d + config.n_layer * (attn + mlp + norms) + d


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token for examples of ``seq_len`` tokens.

    ``6·N + 12·L·H·D·T`` (the PaLM / nanoGPT convention used for MFU):

    * ``N`` = weights that take part in matrix multiplies: every linear layer of the blocks plus the
      output head (vocab·d_model, which is the tied embedding; the embedding *lookup* is free). Each
      weight costs 2 FLOPs per token forward (multiply + add) and 4 backward (input and weight grads).
    * ``12·L·H·D·T``: the attention scores ``QKᵀ`` and the weighted sum ``AV`` each cost ``2·H·D·T``
      FLOPs per token forward for ``H`` query heads of width ``D`` over ``T`` keys, ×3 for
      forward + backward, per layer. Causal masking halves the useful work but, following the
      convention, is not discounted; ``T`` is the attended length (an example's, not the packed row's).

    Biases, norms, RoPE, activations and softmax are O(d) per token and left out.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: must be >= 1")
    return train_flops(config, seq_len, seq_len * seq_len) / seq_len


def train_flops(config: ModelConfig, n_tokens: int, sum_sq_lengths: int) -> float:
    """Training FLOPs of a step over examples whose lengths ℓᵢ sum to ``n_tokens`` and whose squares sum to
    ``sum_sq_lengths``: ``6·N·Σℓᵢ + 12·L·H·D·Σℓᵢ²`` (see :func:`flops_per_token`). Packed examples attend only
    within themselves, so the attention term is per example, from the real lengths; padding counts nowhere."""
    d, hd = config.d_model, config.head_dim
    q_out, kv_out = config.n_head * hd, config.n_kv_head * hd
    per_layer = d * q_out + 2 * d * kv_out + q_out * d + 3 * d * config.d_ff
    n_matmul = config.n_layer * per_layer + config.vocab_size * d
    return 6.0 * n_matmul * n_tokens + 12.0 * config.n_layer * config.n_head * hd * sum_sq_lengths


# --------------------------------------------------------------------------------------------------
# Attention over packed examples


def check_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int) -> list[int]:
    """Validate ``cu_seqlens`` and return it as a Python list (one host sync)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
        raise ValueError("cu_seqlens must be a 1-D int32 tensor of example boundaries (B+1,)")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total_tokens:
        raise ValueError(f"cu_seqlens must start at 0 and end at total_tokens={total_tokens}; got {bounds[:3]}..."
                         f"{bounds[-1:] if bounds else []}")
    for i in range(len(bounds) - 1):
        if bounds[i + 1] < bounds[i]:
            raise ValueError(f"cu_seqlens is decreasing at example {i}: {bounds[i]} > {bounds[i + 1]}")
    return bounds


def _attention_torch(q, k, v, cu_seqlens, max_seqlen):
    # One causal SDPA call per example: exact, memory O(longest example²) at worst on the math path,
    # and no mask over the whole packed row (which would be O(total_tokens²)).
    bounds = check_cu_seqlens(cu_seqlens, q.shape[0])
    group = q.shape[1] // k.shape[1]
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        # (T, H, D) -> (1, H, T, D); query head h reads KV head h // group, as in Qwen2's repeat_kv.
        qe = q[start:end].transpose(0, 1).unsqueeze(0)
        ke = k[start:end].repeat_interleave(group, dim=1).transpose(0, 1).unsqueeze(0)
        ve = v[start:end].repeat_interleave(group, dim=1).transpose(0, 1).unsqueeze(0)
        oe = F.scaled_dot_product_attention(qe, ke, ve, is_causal=True)
        outs.append(oe.squeeze(0).transpose(0, 1))
    if not outs:
        return q.new_empty(q.shape)
    return torch.cat(outs, dim=0)


def _triton_kernel(name: str, q: torch.Tensor):
    """``reasonless.kernels.<name>`` for CUDA tensors, imported only when first asked for (Triton included)."""
    if not torch.cuda.is_available() or not q.is_cuda:
        raise RuntimeError("attention backend 'triton' needs CUDA tensors on a CUDA machine; "
                           "use backend='torch' on CPU")
    try:
        from reasonless import kernels
        return getattr(kernels, name)
    except ImportError as exc:
        raise RuntimeError(f"attention backend 'triton' is not available ({exc}); "
                           f"it needs reasonless.kernels.{name} and the triton package") from exc


def _attention_triton(q, k, v, cu_seqlens, max_seqlen):
    # Contract: reasonless.kernels.varlen_attention(q, k, v, cu_seqlens, max_seqlen) with the same shapes and
    # semantics as attention(), differentiable.
    return _triton_kernel("varlen_attention", q)(q, k, v, cu_seqlens, max_seqlen)


ATTENTION_BACKENDS = {"torch": _attention_torch, "triton": _attention_triton}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
              max_seqlen: int, backend: str = "torch") -> torch.Tensor:
    """Causal attention over packed examples.

    ``q``: (total_tokens, Hq, D); ``k``, ``v``: (total_tokens, Hkv, D) with Hq a multiple of Hkv;
    ``cu_seqlens``: int32 (B+1,) example boundaries; ``max_seqlen``: longest example (used by fused
    kernels). Token i of example b attends to tokens cu_seqlens[b]..i, scaled by 1/√D.
    Returns (total_tokens, Hq, D).
    """
    fn = ATTENTION_BACKENDS.get(backend)
    if fn is None:
        raise ValueError(f"unknown attention backend {backend!r}; backends are: {', '.join(ATTENTION_BACKENDS)}")
    if q.dim() != 3 or k.shape != v.shape or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"attention: q must be (T, Hq, D) and k, v (T, Hkv, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"attention: Hq={q.shape[1]} is not a multiple of Hkv={k.shape[1]}")
    return fn(q, k, v, cu_seqlens, max_seqlen)


ATTN_ENV = "REASONLESS_ATTN"


def _triton_import_error(decode: bool = False) -> Optional[str]:
    """None when the Triton kernels (and, with ``decode``, the decode kernels) import, else why not."""
    try:
        from reasonless.kernels import varlen_attention  # noqa: F401
        if decode:
            from reasonless.kernels import decode_attn, decode_attn_prefix_shared  # noqa: F401
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def triton_head_dims() -> tuple[int, ...]:
    """Head dims the Triton kernels take for both training and decoding (importing them imports Triton)."""
    from reasonless.kernels.decode import HEAD_DIMS
    from reasonless.kernels.flash_attn import SUPPORTED_HEAD_DIMS

    return tuple(d for d in SUPPORTED_HEAD_DIMS if d in HEAD_DIMS)


def default_attn_backend(device=None, *, decode: bool = False, head_dim: Optional[int] = None) -> str:
    """The attention backend for a model on ``device`` (default: CUDA when available, else CPU).

    "triton" on CUDA when ``reasonless.kernels`` provides the kernels (with ``decode``, the decode
    kernels too) and takes the model's ``head_dim``, "torch" otherwise — with a one-line notice when only the head
    dim stands in the way. The environment variable ``REASONLESS_ATTN`` (torch, triton or auto) overrides the
    choice; forcing triton where it cannot run raises instead of falling back."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    raw = os.environ.get(ATTN_ENV, "")
    forced = raw.strip().lower()
    if forced not in ("", "auto", *ATTENTION_BACKENDS):
        raise ValueError(f"{ATTN_ENV}={raw!r}: must be one of {', '.join(ATTENTION_BACKENDS)} or auto")
    if forced == "torch":
        return "torch"
    if forced == "triton":
        if device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(f"{ATTN_ENV}=triton needs a CUDA device, but the model runs on {device}; "
                               f"unset it or use {ATTN_ENV}=torch")
        error = _triton_import_error(decode)
        if error is not None:
            raise RuntimeError(f"{ATTN_ENV}=triton: the Triton kernels are not available ({error})")
        if head_dim is not None and head_dim not in triton_head_dims():
            raise RuntimeError(f"{ATTN_ENV}=triton: the Triton kernels take head dims {triton_head_dims()}, "
                               f"not {head_dim}")
        return "triton"
    if device.type != "cuda" or _triton_import_error(decode) is not None:
        return "torch"
    if head_dim is not None and head_dim not in triton_head_dims():
        print(f"attention: head dim {head_dim} is not one the Triton kernels take {triton_head_dims()}; using the "
              f"torch path", file=sys.stderr)
        return "torch"
    return "triton"


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Position of every packed token within its example (restarting at 0), int64 (total_tokens,)."""
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    starts = torch.repeat_interleave(cu[:-1], lengths, output_size=total_tokens)
    return torch.arange(total_tokens, device=cu.device) - starts


# --------------------------------------------------------------------------------------------------
# Decode attention: one new query per sequence against a key/value cache


def decode_key_bias(lengths: torch.Tensor, n_keys: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, n_keys) of ``dtype``: 0 at the cache positions [0, lengths[b]) that row b attends to, −inf beyond.
    Added to the scores, it masks them at a fraction of a masked fill's cost on CPU; whatever a cache holds
    beyond a row's length must then be finite (a KVCache's always is: zeros or keys written earlier)."""
    beyond = torch.arange(n_keys, device=lengths.device)[None, :] >= lengths.to(torch.int64)[:, None]
    return torch.zeros(beyond.shape, device=lengths.device, dtype=dtype).masked_fill_(beyond, float("-inf"))


def _check_decode_shapes(q, k_cache, v_cache, cache_seqlens):
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape or k_cache.shape[0] != q.shape[0] \
            or k_cache.shape[3] != q.shape[2]:
        raise ValueError(f"decode attention: q must be (B, Hq, D) and k_cache, v_cache (B, S, Hkv, D); got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if q.shape[1] % k_cache.shape[2]:
        raise ValueError(f"decode attention: Hq={q.shape[1]} is not a multiple of Hkv={k_cache.shape[2]}")
    if cache_seqlens.dtype != torch.int32 or cache_seqlens.shape != (q.shape[0],):
        raise ValueError(f"decode attention: cache_seqlens must be int32 ({q.shape[0]},); got "
                         f"{cache_seqlens.dtype} {tuple(cache_seqlens.shape)}")


def _check_key_bias(key_bias, b: int, n_keys: int, dtype):
    if key_bias.dtype != dtype or key_bias.shape != (b, n_keys):
        raise ValueError(f"decode attention: key_bias must be {dtype} ({b}, {n_keys}); got {key_bias.dtype} "
                         f"{tuple(key_bias.shape)}")


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
                     backend: str = "torch", key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One query token per sequence against its cache.

    ``q``: (B, Hq, D); ``k_cache``, ``v_cache``: (B, S, Hkv, D) (views of a larger cache are fine);
    ``cache_seqlens``: int32 (B,), sequence b attends to cache positions [0, cache_seqlens[b]) (its own
    new key already written at cache_seqlens[b]-1; 0 gives an output of 0). Query head h reads KV head
    h // (Hq/Hkv). The torch path needs finite values beyond a row's length (they get no weight).
    ``key_bias``: that path's mask, :func:`decode_key_bias` (cache_seqlens, S, float32 or float64 as q's
    precision), made here when None; a caller passes it to share one mask between layers, and then every row
    must have a key. Returns (B, Hq, D) in q's dtype."""
    _check_decode_shapes(q, k_cache, v_cache, cache_seqlens)
    scale = 1.0 / math.sqrt(q.shape[2])
    if backend == "triton":
        return _triton_kernel("decode_attn", q)(q, k_cache, v_cache, cache_seqlens, sm_scale=scale)
    if backend != "torch":
        raise ValueError(f"unknown attention backend {backend!r}; backends are: {', '.join(ATTENTION_BACKENDS)}")
    b, hq, d = q.shape
    hkv, s = k_cache.shape[2], k_cache.shape[1]
    work = torch.promote_types(q.dtype, torch.float32)
    given = key_bias is not None
    if not given:
        key_bias = decode_key_bias(cache_seqlens, s, work)
    _check_key_bias(key_bias, b, s, work)
    # The cache stores a head's keys as contiguous rows, so these views are one batched product that BLAS
    # reads in place. The scale goes on q (Hq·D numbers), not on the scores (Hq·S).
    k, v = k_cache.to(work).transpose(1, 2), v_cache.to(work).transpose(1, 2)
    scores = torch.matmul((q.to(work) * scale).view(b, hkv, hq // hkv, d), k.transpose(2, 3))
    scores += key_bias[:, None, None, :]
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    if not given:  # a row with no key has an all -inf row of scores, whose softmax is NaN: it gets 0
        out = torch.where(cache_seqlens[:, None, None, None] > 0, out, 0.0)
    return out.reshape(b, hq, d).to(q.dtype)


def decode_attention_prefix_shared(q: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor,
                                   prefix_seqlens: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                   cache_seqlens: torch.Tensor, group_size: int, backend: str = "torch",
                                   key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`decode_attention` for groups of sequences that continue one shared prompt.

    ``q``: (B, Hq, D) with B = n_groups·group_size, sequence b in group b // group_size;
    ``prefix_k``, ``prefix_v``: (n_groups, P, Hkv, D), the group's prompt (stored once), of which
    [0, prefix_seqlens[g]) counts; ``k_cache``, ``v_cache``: (B, S, Hkv, D), each sequence's own tokens
    after the prompt, [0, cache_seqlens[b]) counting (0 allowed). ``key_bias``: the torch path's mask over the
    P prompt positions then the S own ones, :func:`prefix_shared_key_bias`, made here when None (as in
    :func:`decode_attention`).

    The torch path scores a group's queries against its prompt once, puts those scores beside each sequence's
    scores for its own tokens, and takes one softmax over both: the prompt is neither copied nor repeated."""
    _check_decode_shapes(q, k_cache, v_cache, cache_seqlens)
    b, hq, d = q.shape
    n_groups = prefix_k.shape[0]
    if group_size < 1 or n_groups * group_size != b or prefix_k.shape != prefix_v.shape or prefix_k.dim() != 4 \
            or prefix_k.shape[2:] != k_cache.shape[2:]:
        raise ValueError(f"prefix-shared decode attention: q {tuple(q.shape)}, prefix {tuple(prefix_k.shape)}, "
                         f"cache {tuple(k_cache.shape)}, group_size {group_size} do not fit (B = n_groups·group_size)")
    if prefix_seqlens.dtype != torch.int32 or prefix_seqlens.shape != (n_groups,):
        raise ValueError(f"prefix_seqlens must be int32 ({n_groups},); got {prefix_seqlens.dtype} "
                         f"{tuple(prefix_seqlens.shape)}")
    scale = 1.0 / math.sqrt(d)
    if backend == "triton":
        shared = _triton_kernel("decode_attn_prefix_shared", q)
        return shared(q, prefix_k, prefix_v, prefix_seqlens, k_cache, v_cache, cache_seqlens, group_size,
                      sm_scale=scale)
    if backend != "torch":
        raise ValueError(f"unknown attention backend {backend!r}; backends are: {', '.join(ATTENTION_BACKENDS)}")
    g, hkv, p, s = group_size, k_cache.shape[2], prefix_k.shape[1], k_cache.shape[1]
    rep = hq // hkv
    dtype, work = q.dtype, torch.promote_types(q.dtype, torch.float32)
    given = key_bias is not None
    if not given:
        key_bias = prefix_shared_key_bias(prefix_seqlens, p, cache_seqlens, s, work)
    _check_key_bias(key_bias, b, p + s, work)
    q = (q.to(work) * scale).view(n_groups, g, hkv, rep, d)
    # A group's queries, all its samples' heads side by side, against the prompt stored once.
    scores_p = torch.matmul(q.transpose(1, 2).reshape(n_groups, hkv, g * rep, d),
                            prefix_k.to(work).permute(0, 2, 3, 1))  # (n_groups, Hkv, g·rep, P)
    scores_c = torch.matmul(q.view(b, hkv, rep, d), k_cache.to(work).permute(0, 2, 3, 1))  # (B, Hkv, rep, S)
    scores = torch.cat((scores_p.view(n_groups, hkv, g, rep, p).transpose(1, 2),
                        scores_c.view(n_groups, g, hkv, rep, s)), dim=-1).view(b, hkv, rep, p + s)
    scores += key_bias[:, None, None, :]
    weights = torch.softmax(scores, dim=-1)
    weights_p = weights[..., :p].reshape(n_groups, g, hkv, rep, p).transpose(1, 2).reshape(n_groups, hkv, g * rep, p)
    out_p = torch.matmul(weights_p, prefix_v.to(work).transpose(1, 2))  # (n_groups, Hkv, g·rep, D)
    out = torch.matmul(weights[..., p:], v_cache.to(work).transpose(1, 2))  # (B, Hkv, rep, D)
    out = out.view(n_groups, g, hkv, rep, d) + out_p.view(n_groups, hkv, g, rep, d).transpose(1, 2)
    if not given:  # a row with no key at all (empty prompt and no own token) gets 0, as in decode_attention
        has_keys = prefix_seqlens.repeat_interleave(g) + cache_seqlens > 0
        out = torch.where(has_keys.view(n_groups, g, 1, 1, 1), out, 0.0)
    return out.reshape(b, hq, d).to(dtype)


def prefix_shared_key_bias(prefix_seqlens: torch.Tensor, n_prefix: int, cache_seqlens: torch.Tensor, n_keys: int,
                           dtype: torch.dtype) -> torch.Tensor:
    """(B, n_prefix + n_keys): the key mask of :func:`decode_attention_prefix_shared` as :func:`decode_key_bias`
    makes it, the group's prompt positions [0, n_prefix) then the sequence's own positions [0, n_keys)."""
    group_size = cache_seqlens.shape[0] // max(prefix_seqlens.shape[0], 1)
    return torch.cat((decode_key_bias(prefix_seqlens.repeat_interleave(group_size), n_prefix, dtype),
                      decode_key_bias(cache_seqlens, n_keys, dtype)), dim=1)


class KVCache:
    """Static key/value cache of a decoding batch: per layer, keys and values that attention reads as
    (B, S, Hkv, D). They are stored as (B, Hkv, S, D), a head's keys one contiguous block, which the torch
    decode path multiplies in place and the Triton kernels read through strides.

    Row b holds ``lengths[b]`` tokens. :meth:`Model.prefill` fills rows 0..n-1 with n packed prompts;
    :meth:`Model.decode` then writes one token per row at ``lengths[b]`` and attends over the row.

    With ``group_size`` G, the cache serves groups of G rows that continue one shared prompt: the
    prompts (one per group) go to a prefix store (n_groups, prefix_len, Hkv, D) written once by
    :meth:`Model.prefill`, and each row's own store holds only the tokens after its prompt, so a row's
    next RoPE position is its group's prompt length plus its own length.

    The cache takes over attention in the layers (:meth:`attend`), so the model itself stays the
    packed-sequence model it is in training."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, *, device=None, dtype=torch.float32,
                 group_size: Optional[int] = None, prefix_len: int = 0):
        if batch < 1 or max_len < 1:
            raise ValueError(f"KVCache: batch={batch} and max_len={max_len} must be positive")
        shape = (config.n_layer, batch, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(batch, device=device, dtype=torch.int32)
        self.max_length = 0  # an upper bound of lengths, on the host: how much of the cache attention reads
        self.group_size = group_size
        self.prefix_k = self.prefix_v = self.prefix_lengths = None
        if group_size is not None:
            if group_size < 1 or batch % group_size or prefix_len < 1:
                raise ValueError(f"KVCache: batch={batch} must be a multiple of group_size={group_size} "
                                 f"and prefix_len={prefix_len} positive")
            pshape = (config.n_layer, batch // group_size, config.n_kv_head, prefix_len, config.head_dim)
            self.prefix_k = torch.zeros(pshape, device=device, dtype=dtype)
            self.prefix_v = torch.zeros(pshape, device=device, dtype=dtype)
            self.prefix_lengths = torch.zeros(batch // group_size, device=device, dtype=torch.int32)
        self._mode = None
        self._dest = None  # prefill: (slot, position) of every packed token; decode: (row, position)
        self._seqlens = None
        self._key_bias = None  # a decode step's torch-path mask, made by its first layer, shared by the others
        self._fused = {}
        self._rope = None

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    # Phases, driven by Model.prefill and Model.decode

    def begin_prefill(self, cu_seqlens: torch.Tensor, bounds: list[int]) -> None:
        """Packed example i goes to row i (or, with groups, to group i's prefix), starting at position 0."""
        n = len(bounds) - 1
        slots = self.k.shape[1] if self.group_size is None else self.prefix_k.shape[1]
        room = self.k.shape[3] if self.group_size is None else self.prefix_k.shape[3]
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        if n > slots or max(lengths, default=0) > room:
            raise ValueError(f"KVCache: {n} prompts of up to {max(lengths, default=0)} tokens do not fit "
                             f"{slots} slots of {room} positions")
        device = self.k.device
        lens = torch.tensor(lengths, dtype=torch.int64, device=device)
        slot = torch.repeat_interleave(torch.arange(n, device=device), lens, output_size=bounds[-1])
        self._dest = (slot, positions_from_cu_seqlens(cu_seqlens.to(device), bounds[-1]))
        target = self.lengths if self.group_size is None else self.prefix_lengths
        target.zero_()
        target[:n] = lens.to(torch.int32)
        if self.group_size is None:
            self.max_length = max(lengths, default=0)
        else:
            self.lengths.zero_()
            self.max_length = 0
        self._mode = "prefill"

    def begin_decode(self) -> torch.Tensor:
        """Starts a decode step; returns the RoPE position of each row's new token, int64 (B,)."""
        rows = torch.arange(self.batch, device=self.k.device)
        self._dest = (rows, self.lengths.to(torch.int64))
        self._seqlens = self.lengths + 1
        self._mode = "decode"
        positions = self.lengths.to(torch.int64)
        if self.group_size is not None:
            positions = positions + self.prefix_lengths.to(torch.int64).repeat_interleave(self.group_size)
        return positions

    def end_decode(self, advance: Optional[torch.Tensor] = None) -> None:
        """Keeps the step's token in the rows where ``advance`` (bool (B,), default all) is set; the other
        rows leave their length as it was, so their next step overwrites the same position."""
        self.lengths = self._seqlens if advance is None else torch.where(advance, self._seqlens, self.lengths)
        # A cheap bound without a host sync; the caller keeps every row within the cache.
        self.max_length = min(self.max_length + 1, self.k.shape[3])
        self._mode = self._dest = self._seqlens = self._key_bias = None

    def end_prefill(self) -> None:
        self._mode = self._dest = None

    def abort_decode(self) -> None:
        """Leaves the cache as before a decode step that failed half-way (lengths unchanged; the positions
        written are rewritten by the next step)."""
        self._mode = self._dest = self._seqlens = self._key_bias = None

    def rope(self, positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
        """:func:`rope_cos_sin` of ``positions``, looked up in a table of every position the cache can hold
        (made on first use): a decoding step then costs two lookups instead of computing the angles."""
        if self._rope is None or self._rope[0].dtype != dtype:
            room = self.k.shape[3] + (0 if self.group_size is None else self.prefix_k.shape[3])
            self._rope = rope_cos_sin(torch.arange(room, device=self.k.device), head_dim, theta, dtype)
        cos, sin = self._rope
        return cos[positions], sin[positions]

    def fused(self, *linears: nn.Linear) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One weight (and bias) for ``linears`` that read the same input, so that a decoding step computes
        their outputs, side by side, in one matrix product instead of several small ones. Built on first use:
        the weights of a model do not change while a batch decodes."""
        key = tuple(id(linear) for linear in linears)
        if key not in self._fused:
            weight = torch.cat([linear.weight for linear in linears])
            bias = None if linears[0].bias is None else torch.cat([linear.bias for linear in linears])
            self._fused[key] = (weight, bias)
        return self._fused[key]

    def layer(self, store: torch.Tensor, layer: int, upto: Optional[int] = None) -> torch.Tensor:
        """Layer ``layer`` of a store as attention reads it, (B, S, Hkv, D), positions [0, upto)."""
        return store[layer][:, :, :upto].transpose(1, 2)

    def attend(self, layer: int, q, k, v, cu_seqlens, max_seqlen, backend: str) -> torch.Tensor:
        """Attention of one layer in the current phase; stores the layer's new keys and values."""
        if self._mode == "prefill":
            store_k, store_v = (self.k, self.v) if self.group_size is None else (self.prefix_k, self.prefix_v)
            self.layer(store_k, layer)[self._dest] = k.to(store_k.dtype)
            self.layer(store_v, layer)[self._dest] = v.to(store_v.dtype)
            return attention(q, k, v, cu_seqlens, max_seqlen, backend=backend)
        if self._mode != "decode":
            raise RuntimeError("KVCache.attend outside Model.prefill / Model.decode")
        self.layer(self.k, layer)[self._dest] = k.to(self.k.dtype)
        self.layer(self.v, layer)[self._dest] = v.to(self.v.dtype)
        # Read only the filled part of the cache: the rest would be masked anyway.
        upto = min(self.max_length + 1, self.k.shape[3])
        kc, vc = self.layer(self.k, layer, upto), self.layer(self.v, layer, upto)
        q = q.to(kc.dtype)
        if backend == "torch" and self._key_bias is None:
            work = torch.promote_types(q.dtype, torch.float32)
            self._key_bias = decode_key_bias(self._seqlens, upto, work) if self.group_size is None else \
                prefix_shared_key_bias(self.prefix_lengths, self.prefix_k.shape[3], self._seqlens, upto, work)
        bias = self._key_bias if backend == "torch" else None
        if self.group_size is None:
            return decode_attention(q, kc, vc, self._seqlens, backend=backend, key_bias=bias)
        return decode_attention_prefix_shared(q, self.layer(self.prefix_k, layer), self.layer(self.prefix_v, layer),
                                              self.prefix_lengths, kc, vc, self._seqlens, self.group_size,
                                              backend=backend, key_bias=bias)

    # Dropping finished rows

    def keep(self, index: torch.Tensor) -> None:
        """Keeps only rows ``index`` (int64, in that order), or with groups only the groups ``index``
        (all their rows). Copies the kept part of the cache: worth it once many rows are done."""
        if self._mode is not None:
            raise RuntimeError("KVCache.keep in the middle of a step")
        index = index.to(self.k.device)
        if self.group_size is not None:
            self.prefix_k = self.prefix_k.index_select(1, index)
            self.prefix_v = self.prefix_v.index_select(1, index)
            self.prefix_lengths = self.prefix_lengths.index_select(0, index)
            g = self.group_size
            index = (index[:, None] * g + torch.arange(g, device=index.device)[None, :]).reshape(-1)
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        self.lengths = self.lengths.index_select(0, index)


# --------------------------------------------------------------------------------------------------
# Layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalize in float32 under bf16 autocast, as Qwen2 does, so exported logits match.
        dtype = x.dtype
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32):
    """cos, sin of shape (T, head_dim) for Qwen2's half-split rotary layout.

    float32 (as Qwen2 computes them) even under bf16 autocast: a bf16 angle would be off by whole
    radians at long positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim))
    freqs = positions.to(dtype)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (T, H, D): pair (i, i + D/2) is rotated by angle position·θ^(-2i/D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    work = torch.promote_types(x.dtype, cos.dtype)  # at least float32, float64 stays float64
    return (x.to(work) * cos + rotated.to(work) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.layer_idx = layer_idx  # which layer of a KVCache is this one's
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen, backend, cache=None):
        t = x.shape[0]
        if cache is None:
            q = self.q_proj(x).view(t, self.n_head, self.head_dim)
            k = self.k_proj(x).view(t, self.n_kv_head, self.head_dim)
            v = self.v_proj(x).view(t, self.n_kv_head, self.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            y = attention(q, k, v, cu_seqlens, max_seqlen, backend=backend)
        else:
            # Generation runs a few rows at a time, where each op's fixed cost dominates: one product for
            # q, k and v, one rotation for q and k.
            qkv = F.linear(x, *cache.fused(self.q_proj, self.k_proj, self.v_proj))
            qkv = qkv.view(t, self.n_head + 2 * self.n_kv_head, self.head_dim)
            qk = apply_rope(qkv[:, :self.n_head + self.n_kv_head], cos, sin)
            q, k, v = qk[:, :self.n_head], qk[:, self.n_head:], qkv[:, self.n_head + self.n_kv_head:]
            y = cache.attend(self.layer_idx, q, k, v, cu_seqlens, max_seqlen, backend)
        return self.o_proj(y.reshape(t, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x, cache=None):
        if cache is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = F.linear(x, *cache.fused(self.gate_proj, self.up_proj)).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen, backend, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cu_seqlens, max_seqlen, backend, cache)
        return x + self.mlp(self.post_attention_layernorm(x), cache)


# --------------------------------------------------------------------------------------------------
# Model


class Model(nn.Module):
    """The decoder. ``attn_backend`` ("torch" or "triton") may be changed at any time."""

    def __init__(self, config: ModelConfig, attn_backend: str = "torch"):
        super().__init__()
        if attn_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {attn_backend!r}; backends are: {', '.join(ATTENTION_BACKENDS)}")
        self.config = config
        self.attn_backend = attn_backend
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.reset_parameters()

    @property
    def lm_head_weight(self) -> nn.Parameter:
        """The output projection: the input embedding itself (tied), so state_dict holds one copy."""
        return self.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self):
        """Normal(0, init_std) weights; residual-branch outputs (o_proj, down_proj) scaled by
        1/√(2·n_layer) (GPT-2) so the residual stream's variance does not grow with depth; zero biases,
        unit norms. Deterministic under torch.manual_seed."""
        std = self.config.init_std
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=std)
        for block in self.layers:
            for lin in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                        block.mlp.gate_proj, block.mlp.up_proj):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            for lin in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(lin.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))
            nn.init.ones_(block.input_layernorm.weight)
            nn.init.ones_(block.post_attention_layernorm.weight)
        nn.init.ones_(self.norm.weight)

    def forward(self, tokens: torch.Tensor, cu_seqlens: torch.Tensor, positions: Optional[torch.Tensor] = None,
                max_seqlen: Optional[int] = None, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (total_tokens, vocab_size) for packed ``tokens`` int64 (total_tokens,).

        ``positions`` defaults to each token's offset in its example. ``max_seqlen`` (the longest
        example) is computed from ``cu_seqlens`` when not given, at the cost of one host sync.
        ``rows`` (int64 token indices): only these tokens' logits, (len(rows), vocab_size), in that order; the
        output projection, the largest product of a small model, then skips the tokens nobody scores.
        """
        x = self._hidden(tokens, cu_seqlens, positions, max_seqlen)
        return self._logits(x if rows is None else x[rows])

    def prefill(self, tokens: torch.Tensor, cu_seqlens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Runs packed prompts (as :meth:`forward`) and stores their keys and values in ``cache``:
        prompt i in row i, or in group i's prefix for a grouped cache. Returns the logits of each prompt's
        last token, (n_prompts, vocab_size); the rest of the logits are never computed."""
        bounds = check_cu_seqlens(cu_seqlens, tokens.shape[0])
        if any(b == a for a, b in zip(bounds[:-1], bounds[1:])):
            raise ValueError("prefill: every prompt needs at least one token")
        cache.begin_prefill(cu_seqlens, bounds)
        try:
            max_seqlen = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
            x = self._hidden(tokens, cu_seqlens, None, max_seqlen, cache)
        finally:
            cache.end_prefill()
        return self._logits(x[cu_seqlens[1:].to(torch.int64) - 1])

    def decode(self, tokens: torch.Tensor, cache: KVCache, advance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Feeds ``tokens`` int64 (B,), one per cache row, at each row's next position; returns the logits
        of the next token (B, vocab_size). ``advance`` (bool (B,)): rows whose token is kept; the other
        rows (finished ones) compute but leave their cache as it was."""
        if tokens.dim() != 1 or tokens.dtype != torch.int64 or tokens.shape[0] != cache.batch:
            raise ValueError(f"decode: tokens must be int64 ({cache.batch},), one per cache row; got "
                             f"{tokens.dtype} {tuple(tokens.shape)}")
        positions = cache.begin_decode()
        try:
            # Every row is a one-token "example" whose context lives in the cache.
            x = self._hidden(tokens, None, positions, 1, cache)
        except BaseException:
            cache.abort_decode()
            raise
        cache.end_decode(advance)
        return self._logits(x)

    def _hidden(self, tokens, cu_seqlens, positions, max_seqlen, cache=None):
        if tokens.dim() != 1 or tokens.dtype != torch.int64:
            raise ValueError(f"tokens must be a 1-D int64 tensor (total_tokens,); got {tokens.dtype} {tuple(tokens.shape)}")
        total = tokens.shape[0]
        if max_seqlen is None:
            bounds = check_cu_seqlens(cu_seqlens, total)
            max_seqlen = max((b - a for a, b in zip(bounds[:-1], bounds[1:])), default=0)
        if max_seqlen > self.config.max_seq_len:
            raise ValueError(f"an example has {max_seqlen} tokens, more than max_seq_len={self.config.max_seq_len}")
        if positions is None:
            positions = positions_from_cu_seqlens(cu_seqlens, total)
        elif positions.shape != tokens.shape:
            raise ValueError(f"positions must have the shape of tokens {tuple(tokens.shape)}; got {tuple(positions.shape)}")
        rope_dtype = torch.float64 if self.embed_tokens.weight.dtype == torch.float64 else torch.float32
        rope = rope_cos_sin if cache is None else cache.rope
        cos, sin = rope(positions, self.config.head_dim, self.config.rope_theta, rope_dtype)
        x = self.embed_tokens(tokens)
        for block in self.layers:
            x = block(x, cos, sin, cu_seqlens, max_seqlen, self.attn_backend, cache)
        return x

    def _logits(self, x):
        return F.linear(self.norm(x), self.lm_head_weight)
