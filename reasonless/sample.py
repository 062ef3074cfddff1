"""Batched generation with a static KV cache (docs/design.md §7, issue 7).

:func:`generate` continues many prompts at once. Prompts are sorted by length and cut into batches; a
batch is prefilled in one packed forward pass (prompts of different lengths back to back, as in
training) that also fills a static per-layer key/value cache, then every row gets one token per step
from :meth:`Model.decode`, which attends over that row's part of the cache. A row stops at a stop token
(kept in its output) or at its token budget; once at most half of a batch's rows are still running,
the finished ones are dropped from the cache so they cost nothing more. Results come back in input order.

:func:`generate_groups` draws G samples per prompt (GRPO groups): each prompt is prefilled once and its
cache is shared by its G rows, which store only their own new tokens.

Sampling is greedy (temperature 0) or from softmax(logits / temperature), optionally limited to the
top-k tokens and to the smallest set of tokens whose probability reaches top-p. The randomness is a
counter-based hash of (seed, prompt index, sample index, step), one uniform number per row and step that
picks the token by inverting the cumulative distribution, so a row's tokens depend on its prompt, the seed
and its indices only, never on which rows share its batch or on ``batch_size``.

Budgets: a row generates at most ``max_new_tokens`` tokens, and never more than
``model.config.max_seq_len - len(prompt)`` (a prompt plus its continuation fit the model's context);
a prompt of exactly max_seq_len tokens gets an empty continuation, a longer one is an error.

Devices and precision: the model runs where its weights are. On CUDA with float32 weights the whole
generation runs under bf16 autocast, as training does (the residual stream stays float32, the matmuls
and the KV cache are bf16); weights already in bf16 run as they are. On CPU it runs in the weights'
dtype (float32, or float64 in tests). The attention backend is the model's ``attn_backend``
(:func:`load_model` sets it with :func:`reasonless.model.default_attn_backend`): "triton" uses the
kernels of ``reasonless.kernels`` for prefill and decode.

On CPU, decoding is many small ops; when other processes share the cores, torch's intra-op threads spend
their time waiting for each other (10× slower was measured on a busy 2-core machine), and one thread
(``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)``) is the faster setting.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

from . import checkpoint as ckpt_io
from .model import KVCache, Model, ModelConfig, default_attn_backend
from .progress import Progress
from .vocab import END, EOS

STOP_IDS = (END, EOS)

PromptLike = Union[Sequence[int], np.ndarray]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. ``temperature`` 0 is greedy (argmax; top_k and top_p are then
    ignored). ``top_k`` 0 and ``top_p`` 1.0 switch those filters off. ``seed``: a non-negative integer."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) \
                or self.temperature < 0:
            raise ValueError(f"Sampling.temperature={self.temperature!r}: must be a finite number >= 0 (0 = greedy)")
        if not isinstance(self.top_k, (int, np.integer)) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"Sampling.top_k={self.top_k!r}: must be an integer >= 0 (0 = off)")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"Sampling.top_p={self.top_p!r}: must be in (0, 1] (1.0 = off)")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise ValueError(f"Sampling.seed={self.seed!r}: must be an integer in [0, 2**64)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """Per row: the generated ids (int32, the stop token included when one was produced), whether the row
    produced a stop token (False: it used its whole budget), and the length of its prompt."""
    tokens: list[np.ndarray]
    stopped: np.ndarray  # bool (N,)
    prompt_lengths: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.tokens)


# --------------------------------------------------------------------------------------------------
# Counter-based randomness: a 32-bit integer hash (Wellons' "lowbias32") of (seed, prompt, sample,
# step, token), on Python ints and int64 tensors alike. Products are split in 16-bit halves so no
# intermediate leaves the int64 range (int64 overflow is not something to rely on).

_M32 = 0xFFFFFFFF


def _mul32(x, m: int):
    """(x · m) mod 2³² for 0 <= x < 2³², 0 <= m < 2³²."""
    return ((x & 0xFFFF) * m + ((((x >> 16) * m) & 0xFFFF) << 16)) & _M32


def _mix32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _combine(h, value):
    """Hash of (h, value); both in [0, 2³²)."""
    return _mix32(h ^ _mix32((value + 0x9E3779B9) & _M32))


def row_key(seed: int, prompt: int, sample: int = 0) -> int:
    """The random stream of the row that continues prompt ``prompt`` (its index in the caller's list) as
    sample ``sample`` of its group (0 for :func:`generate`)."""
    h = _mix32(seed & _M32)
    for value in (seed >> 32, prompt & _M32, prompt >> 32, sample & _M32):
        h = _combine(h, value)
    return h


def uniforms(keys: torch.Tensor, first_step: int, n_steps: int) -> torch.Tensor:
    """The uniform number of each row (``keys`` int64 (R,)) at steps first_step .. first_step+n_steps-1:
    float64 (R, n_steps) strictly inside (0, 1), each a function of (key, step) only."""
    steps = torch.arange(first_step, first_step + n_steps, dtype=torch.int64, device=keys.device) & _M32
    bits = _mix32(_combine(keys[:, None], steps[None, :]) ^ 0x5BD1E995)
    return (bits.to(torch.float64) + 0.5) * (1.0 / 2**32)


class _Draws:
    """The rows' uniform numbers for the coming steps, hashed ``BLOCK`` steps at a time: the hash is some sixty
    small tensor operations, which cost more than a small model's decoding step when done every step."""
    BLOCK = 64

    def __init__(self, keys: torch.Tensor):
        self.keys, self.block, self.first = keys, None, 0

    def at(self, step: int) -> torch.Tensor:
        if self.block is None or not self.first <= step < self.first + self.BLOCK:
            self.block, self.first = uniforms(self.keys, step, self.BLOCK), step
        return self.block[:, step - self.first]

    def keep(self, index: torch.Tensor) -> None:
        self.keys = self.keys[index]
        self.block = None if self.block is None else self.block[index]


class _Sampler:
    def __init__(self, sampling: Sampling, vocab_size: int, device):
        self.sampling = sampling
        self.vocab_size = vocab_size

    def __call__(self, logits: torch.Tensor, draws: _Draws, step: int) -> torch.Tensor:
        s = self.sampling
        if s.greedy:
            return logits.argmax(-1)
        x = logits.to(torch.float64) / s.temperature
        if 0 < s.top_k < self.vocab_size:
            kth = torch.topk(x, s.top_k, dim=-1).values[:, -1:]
            x = x.masked_fill(x < kth, float("-inf"))  # ties with the k-th are kept
        if s.top_p < 1.0:
            probs = torch.softmax(x, dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
            # Keep a token while the tokens ranked above it hold less than top_p: the smallest set reaching it.
            drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= s.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            x = x.masked_fill(drop, float("-inf"))
        # Inverse CDF: the first token whose cumulative probability exceeds u. One uniform per row and step (noise
        # per token, as Gumbel-max needs, costs more than the model's step for a small model on CPU); tokens
        # filtered out have probability 0, so a cumulative sum never stops on them.
        cdf = torch.softmax(x, dim=-1).cumsum(-1)
        u = draws.at(step)[:, None] * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(self.vocab_size - 1)


# --------------------------------------------------------------------------------------------------
# Inputs


def _check_prompts(prompts, vocab_size: int, max_seq_len: int) -> list[np.ndarray]:
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        prompts = list(prompts)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a sequence of token-id sequences; got {type(prompts).__name__}")
    out = []
    for i, p in enumerate(prompts):
        arr = np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise ValueError(f"prompt {i}: must be a 1-D sequence of integer token ids; got shape {arr.shape} "
                             f"dtype {arr.dtype}")
        if arr.size == 0:
            raise ValueError(f"prompt {i} is empty; a prompt needs at least one token (e.g. <|bos|>)")
        if arr.min() < 0 or arr.max() >= vocab_size:
            raise ValueError(f"prompt {i}: token ids must be in [0, {vocab_size}); got {arr.min()}..{arr.max()}")
        if arr.size > max_seq_len:
            raise ValueError(f"prompt {i} has {arr.size} tokens, more than the model's max_seq_len={max_seq_len}")
        out.append(arr.astype(np.int64))
    return out


def _check_budgets(max_new_tokens, n: int, what: str) -> np.ndarray:
    if isinstance(max_new_tokens, (int, np.integer)) and not isinstance(max_new_tokens, bool):
        budgets = np.full(n, int(max_new_tokens), dtype=np.int64)
    else:
        try:
            budgets = np.asarray(max_new_tokens)
        except (TypeError, ValueError):
            budgets = np.asarray([None])
        if budgets.shape != (n,) or not (np.issubdtype(budgets.dtype, np.integer) or n == 0):
            raise ValueError(f"max_new_tokens must be an integer or one integer per {what} ({n}); got "
                             f"{max_new_tokens!r:.80}")
        budgets = budgets.astype(np.int64)
    if n and budgets.min() < 0:
        raise ValueError(f"max_new_tokens must be >= 0; {what} {int(np.argmin(budgets))} has {int(budgets.min())}")
    return budgets


def _check_stop_ids(stop_ids, vocab_size: int) -> list[int]:
    ids = list(stop_ids)
    for t in ids:
        if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or not 0 <= t < vocab_size:
            raise ValueError(f"stop id {t!r}: must be a token id in [0, {vocab_size})")
    return [int(t) for t in ids]


def _resolve_device(model: Model, device) -> torch.device:
    here = next(model.parameters()).device
    if device is None:
        return here
    device = torch.device(device)
    if device.type != here.type or (device.index is not None and here.index is not None and device.index != here.index):
        raise ValueError(f"the model is on {here}, not on device={device}; move it there first (model.to(device))")
    return here


def _precision(model: Model, device: torch.device):
    """(autocast context, KV-cache dtype)."""
    dtype = next(model.parameters()).dtype
    if device.type == "cuda" and dtype == torch.float32:
        return torch.autocast("cuda", dtype=torch.bfloat16), torch.bfloat16
    return nullcontext(), dtype


def _check_positive(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")
    return int(value)


# --------------------------------------------------------------------------------------------------
# The engine: one batch


def _run_batch(model: Model, prompts: list[np.ndarray], budgets: np.ndarray, keys: list[int], stop_ids: list[int],
               sampler: _Sampler, device: torch.device, cache_dtype, group_size: int | None):
    """Continues ``prompts``: row r has budget ``budgets[r]`` and random key ``keys[r]``. With
    ``group_size`` G the rows are G per prompt (prompt-major) sharing the prompt's cache. Returns
    [(tokens int32, stopped)] per row."""
    g = group_size or 1
    n_rows = len(prompts) * g
    lengths = [len(p) for p in prompts]
    max_budget = int(budgets.max())
    if group_size is None:
        cache = KVCache(model.config, n_rows, int(max(l + b for l, b in zip(lengths, budgets))),
                        device=device, dtype=cache_dtype)
    else:
        cache = KVCache(model.config, n_rows, max_budget, device=device, dtype=cache_dtype,
                        group_size=group_size, prefix_len=max(lengths))
    tokens = torch.from_numpy(np.concatenate(prompts)).to(device)
    cu_seqlens = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32, device=device)
    logits = model.prefill(tokens, cu_seqlens, cache)
    if g > 1:
        logits = logits.repeat_interleave(g, dim=0)

    draws = _Draws(torch.tensor(keys, dtype=torch.int64, device=device))
    budgets_t = torch.from_numpy(budgets).to(device)
    stops_t = torch.tensor(stop_ids, dtype=torch.int64, device=device)
    out = torch.zeros((n_rows, max_budget), dtype=torch.int64, device=device)
    rows = torch.arange(n_rows, device=device)  # the batch row of each cache row (rows get dropped)
    tok = sampler(logits.float(), draws, 0)
    out[:, 0] = tok
    done = torch.isin(tok, stops_t) | (budgets_t <= 1)
    # On CUDA, a host sync per step would stall the launch queue; a few wasted steps cost less.
    check_every = 1 if device.type == "cpu" else 8
    for step in range(1, max_budget):
        if step % check_every == 0 or step == 1:
            running = ~done
            if g == 1:
                n_running = int(running.sum())
                if n_running == 0:
                    break
                if n_running <= cache.batch // 2:
                    keep = running.nonzero().squeeze(1)
                    cache.keep(keep)
                    rows, tok, done, budgets_t = (t[keep] for t in (rows, tok, done, budgets_t))
                    draws.keep(keep)
            else:
                group_running = running.view(-1, g).any(dim=1)
                n_running = int(group_running.sum())
                if n_running == 0:
                    break
                if n_running <= group_running.shape[0] // 2:
                    keep_groups = group_running.nonzero().squeeze(1)
                    cache.keep(keep_groups)
                    keep = (keep_groups[:, None] * g + torch.arange(g, device=device)[None, :]).reshape(-1)
                    rows, tok, done, budgets_t = (t[keep] for t in (rows, tok, done, budgets_t))
                    draws.keep(keep)
        logits = model.decode(tok, cache, advance=~done)
        tok = sampler(logits.float(), draws, step)
        out[rows, step] = tok
        done = done | torch.isin(tok, stops_t) | (budgets_t <= step + 1)

    out = out.cpu().numpy()
    stop_set = np.asarray(stop_ids, dtype=np.int64)
    results = []
    for r in range(n_rows):
        seq = out[r, :budgets[r]]
        hits = np.flatnonzero(np.isin(seq, stop_set))
        if hits.size:
            results.append((seq[:hits[0] + 1].astype(np.int32), True))
        else:
            results.append((seq.astype(np.int32), False))
    return results


def _generate_rows(model, prompts: list[np.ndarray], budgets: np.ndarray, keys: list[int], stop_ids, sampling,
                   batch_size: int, device, progress: bool, group_size: int | None, unit: str):
    """Rows of prompts (``group_size`` None) or groups of G rows per prompt; batches of ``batch_size``
    prompts sorted by length. ``budgets`` and ``keys`` are per row. Returns [(tokens, stopped)] per row."""
    g = group_size or 1
    vocab = model.config.vocab_size
    n_rows = len(prompts) * g
    results: list = [None] * n_rows
    empty = (np.zeros(0, dtype=np.int32), False)
    # A prompt whose rows all have no budget needs no work.
    work = [i for i in range(len(prompts)) if budgets[i * g:(i + 1) * g].max(initial=0) > 0]
    for i in set(range(len(prompts))) - set(work):
        results[i * g:(i + 1) * g] = [empty] * g
    # Longest first: similar lengths share a batch, and the largest cache is allocated first.
    work.sort(key=lambda i: -len(prompts[i]))
    sampler = _Sampler(sampling, vocab, device)
    autocast, cache_dtype = _precision(model, device)
    bar = Progress(n_rows, unit=unit, enabled=progress)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for start in range(0, len(work), batch_size):
                chunk = work[start:start + batch_size]
                row_ids = [i * g + j for i in chunk for j in range(g)]
                got = _run_batch(model, [prompts[i] for i in chunk], budgets[row_ids], [keys[r] for r in row_ids],
                                 stop_ids, sampler, device, cache_dtype, group_size)
                for r, res in zip(row_ids, got):
                    results[r] = res
                bar.update(len(row_ids))
    finally:
        model.train(was_training)
        bar.close()
    return results


def _pack(results, prompt_lengths) -> Generation:
    return Generation(tokens=[t for t, _ in results], stopped=np.array([s for _, s in results], dtype=bool),
                      prompt_lengths=np.asarray(prompt_lengths, dtype=np.int64))


# --------------------------------------------------------------------------------------------------
# Public entry points


def generate(model: Model, prompts: Sequence[PromptLike], max_new_tokens: int | Sequence[int], *,
             stop_ids: Sequence[int] = STOP_IDS, sampling: Sampling = Sampling(), batch_size: int = 64,
             device=None, progress: bool = False) -> Generation:
    """Continues every prompt (token ids, <|bos|> first as in training) until a token of ``stop_ids``
    (kept in the output) or its budget ``max_new_tokens`` (one integer, or one per prompt; capped so that
    prompt + continuation <= model.config.max_seq_len). ``batch_size`` prompts run together (sorted by
    length); the result is in input order and does not depend on ``batch_size``. Row i samples with
    :func:`row_key` (seed, i, 0). ``device``: where the model is (checked; default: there)."""
    config = model.config
    prompts = _check_prompts(prompts, config.vocab_size, config.max_seq_len)
    budgets = _check_budgets(max_new_tokens, len(prompts), "prompt")
    stop_ids = _check_stop_ids(stop_ids, config.vocab_size)
    batch_size = _check_positive("batch_size", batch_size)
    if not isinstance(sampling, Sampling):
        raise ValueError(f"sampling must be a Sampling; got {type(sampling).__name__}")
    device = _resolve_device(model, device)
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    budgets = np.minimum(budgets, config.max_seq_len - lengths)
    keys = [row_key(sampling.seed, i, 0) for i in range(len(prompts))]
    results = _generate_rows(model, prompts, budgets, keys, stop_ids, sampling, batch_size, device, progress,
                             None, "sequences")
    return _pack(results, lengths)


def generate_groups(model: Model, prompts: Sequence[PromptLike], group_size: int,
                    max_new_tokens: int | Sequence[int], *, stop_ids: Sequence[int] = STOP_IDS,
                    sampling: Sampling = Sampling(), batch_groups: int = 8, device=None, progress: bool = False,
                    share_prefix: bool = True) -> Generation:
    """``group_size`` samples of every prompt; rows are prompt-major (prompt i's samples at
    i·G .. i·G+G-1) and sample j of prompt i uses :func:`row_key` (seed, i, j), so with G = 1 this is
    :func:`generate`. Each prompt is prefilled once and its keys/values are shared by its G rows
    (``share_prefix=False`` runs the G rows as independent prompts instead, with the same result: for
    comparison). ``max_new_tokens``: one integer, or one per prompt. ``batch_groups`` prompts (so
    batch_groups·G rows) run together. Greedy sampling gives G identical samples."""
    config = model.config
    group_size = _check_positive("group_size", group_size)
    batch_groups = _check_positive("batch_groups", batch_groups)
    prompts = _check_prompts(prompts, config.vocab_size, config.max_seq_len)
    budgets = _check_budgets(max_new_tokens, len(prompts), "prompt")
    stop_ids = _check_stop_ids(stop_ids, config.vocab_size)
    if not isinstance(sampling, Sampling):
        raise ValueError(f"sampling must be a Sampling; got {type(sampling).__name__}")
    device = _resolve_device(model, device)
    g = group_size
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    budgets = np.repeat(np.minimum(budgets, config.max_seq_len - lengths), g)
    keys = [row_key(sampling.seed, i, j) for i in range(len(prompts)) for j in range(g)]
    if share_prefix:
        results = _generate_rows(model, prompts, budgets, keys, stop_ids, sampling, batch_groups, device, progress,
                                 g, "samples")
    else:
        rows = [p for p in prompts for _ in range(g)]
        results = _generate_rows(model, rows, budgets, keys, stop_ids, sampling, batch_groups * g, device, progress,
                                 None, "samples")
    return _pack(results, np.repeat(lengths, g))


# --------------------------------------------------------------------------------------------------
# Loading a trained model


def load_model(run_or_checkpoint, device=None, which: str = "best", dtype: torch.dtype = torch.float32):
    """Loads a trained model for generation: ``(model, meta)``.

    ``run_or_checkpoint``: a training run directory (its ``which`` checkpoint, see
    :func:`reasonless.checkpoint.resolve_checkpoint`) or one checkpoint directory. ``device`` defaults to CUDA
    when available.
    The model is in eval mode, in ``dtype`` (float32 by default: on CUDA :func:`generate` then runs it
    under bf16 autocast, as training did), with ``attn_backend`` from
    :func:`reasonless.model.default_attn_backend` (``REASONLESS_ATTN`` overrides it). ``meta``: checkpoint
    path, how it was selected, step, validation losses, grid (rows, cols) when recorded, model config,
    trainer state."""
    ckpt, how = ckpt_io.resolve_checkpoint(run_or_checkpoint, which)
    config = ckpt_io.read_config(ckpt, ModelConfig.from_dict)
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    model = Model(config)
    state = ckpt_io.load_checkpoint(ckpt, model)
    model = model.to(device=device, dtype=dtype).eval()
    model.attn_backend = default_attn_backend(device, decode=True, head_dim=model.config.head_dim)
    trainer = state["trainer"]
    grid = (trainer.get("data") or {}).get("grid")
    meta = {"checkpoint": str(ckpt), "selected_by": how, "step": trainer.get("step"),
            "val_loss": trainer.get("val_loss"), "best_val_loss": trainer.get("best_val_loss"),
            "grid": tuple(grid) if isinstance(grid, list) and len(grid) == 2 else None,
            "config": config.to_dict(), "trainer": trainer}
    return model, meta
