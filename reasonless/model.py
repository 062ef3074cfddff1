"""Qwen2-style decoder trained from scratch on maze sequences (DESIGN §7).

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
asked for).
"""
from __future__ import annotations

import dataclasses
import math
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
    d, hd = config.d_model, config.head_dim
    q_out, kv_out = config.n_head * hd, config.n_kv_head * hd
    per_layer = d * q_out + 2 * d * kv_out + q_out * d + 3 * d * config.d_ff
    n_matmul = config.n_layer * per_layer + config.vocab_size * d
    return 6.0 * n_matmul + 12.0 * config.n_layer * config.n_head * hd * seq_len


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


def _attention_triton(q, k, v, cu_seqlens, max_seqlen):
    # Dispatch point of the kernels issue. Contract: reasonless.kernels.varlen_attention(q, k, v,
    # cu_seqlens, max_seqlen) with the same shapes and semantics as attention(), differentiable.
    if not torch.cuda.is_available() or not q.is_cuda:
        raise RuntimeError("attention backend 'triton' needs CUDA tensors on a CUDA machine; "
                           "use backend='torch' on CPU")
    try:
        from reasonless.kernels import varlen_attention  # lazy: Triton is imported only when asked for
    except ImportError as exc:
        raise RuntimeError(f"attention backend 'triton' is not available ({exc}); "
                           "it needs reasonless.kernels.varlen_attention and the triton package") from exc
    return varlen_attention(q, k, v, cu_seqlens, max_seqlen)


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


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Position of every packed token within its example (restarting at 0), int64 (total_tokens,)."""
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    starts = torch.repeat_interleave(cu[:-1], lengths, output_size=total_tokens)
    return torch.arange(total_tokens, device=cu.device) - starts


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
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


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
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen, backend):
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.n_head, self.head_dim)
        k = self.k_proj(x).view(t, self.n_kv_head, self.head_dim)
        v = self.v_proj(x).view(t, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attention(q, k, v, cu_seqlens, max_seqlen, backend=backend)
        return self.o_proj(y.reshape(t, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen, backend):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cu_seqlens, max_seqlen, backend)
        return x + self.mlp(self.post_attention_layernorm(x))


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
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
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
                max_seqlen: Optional[int] = None) -> torch.Tensor:
        """Logits (total_tokens, vocab_size) for packed ``tokens`` int64 (total_tokens,).

        ``positions`` defaults to each token's offset in its example. ``max_seqlen`` (the longest
        example) is computed from ``cu_seqlens`` when not given, at the cost of one host sync.
        """
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
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, rope_dtype)
        x = self.embed_tokens(tokens)
        for block in self.layers:
            x = block(x, cos, sin, cu_seqlens, max_seqlen, self.attn_backend)
        return F.linear(self.norm(x), self.lm_head_weight)
