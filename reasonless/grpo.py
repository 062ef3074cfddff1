"""GRPO post-training with verifier rewards (docs/design.md §8, issue 12).

Each rollout step draws P training problems, samples G responses per prompt with the prefix-shared sampler
(:func:`reasonless.sample.generate_groups`), scores them with the C++ verifier in batch, turns the scores into
group-relative advantages and takes one or more clipped policy-gradient steps.

Rewards (:class:`MazeTask`): ``plan_valid`` (the paper's reward and the default), ``plan_optimal``,
``trace_valid_paper`` and ``trace_valid_strict``, each 0 or 1 per response and logged separately; the reward is
their weighted sum (``--reward plan_valid=1,trace_valid_strict=0.5``). A response that used its whole token
budget scores 0 in every component; with ``truncated="mask"`` it also leaves the loss and the group statistics
(it was cut off, not judged). Any other task plugs in through :class:`PromptTask` (a reward function of the
problem indices and the responses).

Advantages: r − mean(group), divided by the group's standard deviation (``group``), the batch's (``batch``) or
nothing (``none``), plus ``EPS``; the standard deviation is the sample one (n − 1), as in TRL.

Loss, per response token t of row i with ratio ρ = π(t) / π_old(t)::

    ℓ = max(−A·ρ, −A·clip(ρ, 1 − ε_low, 1 + ε_high)) + β·k3,   k3 = e^(ref − logπ) − (ref − logπ) − 1

aggregated over a mini-batch as ``grpo`` (mean over each response, then over responses), ``dr_grpo`` (sum over
all tokens divided by rows × token budget, a constant) or ``dapo`` (mean over all tokens). The reference model
(the frozen initial weights) is loaded only when β > 0. π is softmax(logits / temperature): the distribution
the responses were sampled from, so that the first update's ratios are exactly 1.

One code path for log-probabilities: :func:`response_logprobs` is the packed training forward of
:class:`reasonless.model.Model` (the same as in pre-training), used for the rollout-time ("old") log-probs in
no_grad right after sampling and for the updates; the tests hold it equal to the sampler's decode-path
distribution in float64.

Determinism: nothing here draws from a stateful generator. The prompt order is a seeded permutation per epoch
over the problems, indexed by a cursor saved in the checkpoint; the sampling noise of rollout step s, attempt a
is keyed by (seed, s, a); the mini-batch order of update u by (seed, s, u). A resumed run on CPU therefore
reproduces the uninterrupted one exactly.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt_io
from .sample import Sampling, generate_groups, load_model, row_key
from .vocab import END, EOS, REASONING

EPS = 1e-4  # added to the standard deviation: a group with a tiny spread must not blow up its advantages
LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
TRUNCATED = ("zero", "mask")
MAZE_COMPONENTS = ("plan_valid", "plan_optimal", "trace_valid_paper", "trace_valid_strict")
# Changing these on --resume would make the resumed run a different run; the others (length, schedules, batch
# sizes of the computation) may change.
TRAJECTORY_KEYS = ("prompts", "group", "temperature", "budget", "reward", "truncated", "scale_rewards", "loss",
                   "clip_low", "clip_high", "beta", "updates", "minibatch", "lr", "weight_decay", "grad_clip",
                   "filter_zero_std", "max_resample", "seed")


# --------------------------------------------------------------------------------------------------
# Configuration


def parse_reward(spec: str) -> dict[str, float]:
    """``"plan_valid=1,trace_valid_strict=0.5"`` → {"plan_valid": 1.0, "trace_valid_strict": 0.5}."""
    weights: dict[str, float] = {}
    for part in str(spec).split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--reward {spec!r}: expected NAME=WEIGHT[,NAME=WEIGHT...], e.g. plan_valid=1")
        if not sep:
            value = "1"
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"--reward {spec!r}: weight {value!r} of {name} is not a number") from None
        if not math.isfinite(w):
            raise ValueError(f"--reward {spec!r}: weight of {name} must be finite")
        if name in weights:
            raise ValueError(f"--reward {spec!r}: {name} given twice")
        weights[name] = w
    return weights


@dataclass
class GRPOConfig:
    """The hyperparameters of a GRPO run (the CLI flags of ``reasonless grpo`` without the dashes).

    ``minibatch``: responses per gradient step (None: the whole rollout batch, one step per update).
    ``gen_batch``: prompts generated together. ``forward_tokens``: tokens per training forward pass (gradients
    are accumulated over passes; the loss does not depend on it). ``budget`` None: the task's default."""
    steps: int = 100
    prompts: int = 64
    group: int = 8
    temperature: float = 1.0
    budget: int | None = None
    reward: dict = field(default_factory=lambda: {"plan_valid": 1.0})
    truncated: str = "zero"
    scale_rewards: str = "group"
    loss: str = "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.2
    beta: float = 0.0
    updates: int = 1
    minibatch: int | None = None
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    filter_zero_std: bool = False
    max_resample: int = 4
    seed: int = 0
    gen_batch: int = 64
    forward_tokens: int = 32768

    def validate(self, components: Sequence[str]) -> None:
        def integer(name, low, value=None):
            value = getattr(self, name) if value is None else value
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: must be an integer >= {low}")

        for name in ("steps", "prompts", "updates", "gen_batch", "forward_tokens"):
            integer(name, 1)
        integer("group", 2)  # one sample has nothing to be compared with
        integer("max_resample", 0)
        integer("seed", 0)
        for name in ("budget", "minibatch"):
            if getattr(self, name) is not None:
                integer(name, 1)
        if not isinstance(self.temperature, (int, float)) or not (0 < self.temperature < math.inf):
            raise ValueError(f"--temperature {self.temperature!r}: must be > 0 (greedy samples of a group are "
                             f"identical, so their advantages are all 0)")
        choices = (("truncated", TRUNCATED), ("scale_rewards", SCALES), ("loss", LOSS_TYPES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of "
                                 f"{', '.join(allowed)}")
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"--clip-low {self.clip_low!r}: must be in [0, 1)")
        if not 0.0 <= self.clip_high < math.inf:
            raise ValueError(f"--clip-high {self.clip_high!r}: must be >= 0")
        for name in ("beta", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: must be a finite number >= 0")
        if not isinstance(self.lr, (int, float)) or not 0.0 < self.lr < math.inf:
            raise ValueError(f"--lr {self.lr!r}: must be > 0")
        if not isinstance(self.reward, dict) or not self.reward:
            raise ValueError(f"--reward {self.reward!r}: give at least one NAME=WEIGHT")
        unknown = [k for k in self.reward if k not in components]
        if unknown:
            raise ValueError(f"--reward: unknown component {', '.join(map(repr, unknown))}; this task's components "
                             f"are {', '.join(components)}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Tasks: where prompts come from and how responses are scored


class PromptTask:
    """A task given by its prompts and a reward function.

    ``reward_fn(problems, responses)``: ``problems`` int64 (n,) the problem index of each response,
    ``responses`` n int arrays (the stop token included when one was produced) → {component: (n,) float}, or
    one array when there is a single component. ``primary``: the component whose spread decides whether a group
    carries signal (dynamic sampling); default the first."""

    def __init__(self, prompts: Sequence, reward_fn: Callable, components: Sequence[str], *, budget: int,
                 primary: str | None = None, stop_ids: Sequence[int] = (END, EOS), data_info: dict | None = None):
        self._prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
        if not self._prompts:
            raise ValueError("PromptTask: no prompts")
        self.components = tuple(components)
        if not self.components:
            raise ValueError("PromptTask: no reward components")
        self.primary = self.components[0] if primary is None else primary
        if self.primary not in self.components:
            raise ValueError(f"PromptTask: primary={self.primary!r} is not one of {self.components}")
        self.reward_fn = reward_fn
        self.size = len(self._prompts)
        self.default_budget = int(budget)
        self.stop_ids = tuple(stop_ids)
        self.data_info = dict(data_info or {})

    def problems(self, indices: np.ndarray) -> "Problems":
        return Problems([self._prompts[i] for i in indices.tolist()], np.asarray(indices, dtype=np.int64))

    def rewards(self, batch: "Problems", rows: np.ndarray, responses: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = self.reward_fn(batch.indices[rows], responses)
        if not isinstance(out, dict):
            out = {self.components[0]: out}
        return out

    def check_model(self, model, meta: dict) -> None:
        pass


@dataclass
class Problems:
    """What a task's ``problems(indices)`` returns: at least the prompts, in order."""
    prompts: list[np.ndarray]
    indices: np.ndarray


@dataclass
class MazeProblems:
    prompts: list[np.ndarray]
    walls: np.ndarray
    start: np.ndarray
    goal: np.ndarray


def maze_rewards(walls, start, goal, responses, *, rows: int, cols: int, costs: bool = True,
                 threads: int = 0) -> dict[str, np.ndarray]:
    """The verifier's verdicts as reward components (float64 0/1): plan validity and optimality (paper mode,
    the paper's validator), trace validity in both modes."""
    from .verifier import verify

    paper = verify(walls, start, goal, responses, rows=rows, cols=cols, mode="paper", costs=costs, threads=threads)
    strict = verify(walls, start, goal, responses, rows=rows, cols=cols, mode="strict", costs=costs, threads=threads)
    return {"plan_valid": paper.plan_valid.astype(np.float64), "plan_optimal": paper.plan_optimal.astype(np.float64),
            "trace_valid_paper": paper.trace_valid.astype(np.float64),
            "trace_valid_strict": strict.trace_valid.astype(np.float64)}


class MazeTask:
    """The training problems of a corpus, scored by the C++ verifier. ``arm`` only decides whether responses
    carry cost tokens (``correct_no_costs`` does not): the prompt format is the same for every arm."""

    components = MAZE_COMPONENTS
    primary = "plan_valid"
    stop_ids = (END, EOS)

    def __init__(self, corpus, arm: str, threads: int = 0):
        from .arms import ARMS
        from .evaluate import reference_response_lengths

        if arm not in ARMS:
            raise ValueError(f"--arm {arm!r}: unknown arm; arms are {', '.join(ARMS)}")
        self.corpus, self.arm, self.threads = corpus, arm, threads
        self.costs = arm != "correct_no_costs"
        self.size = len(corpus)
        if self.size < 1:
            raise ValueError(f"{corpus.path}: an empty corpus has no training problems")
        # As `reasonless eval`: room for a search somewhat longer than A*'s, a bounded cost for one that never ends.
        self.default_budget = 2 * int(reference_response_lengths(corpus).max())
        self.data_info = {"dir": str(corpus.path), "grid": [corpus.rows, corpus.cols],
                          "vocab_size": len(corpus.vocab), "arm": arm}

    def problems(self, indices: np.ndarray) -> MazeProblems:
        prompts, walls, start, goal = [], [], [], []
        for i in indices.tolist():
            ex = self.corpus[i]
            tokens = ex.tokens().astype(np.int64)
            prompts.append(tokens[:int(np.flatnonzero(tokens == REASONING)[0])])
            walls.append(ex.walls.reshape(-1))
            start.append(ex.start)
            goal.append(ex.goal)
        return MazeProblems(prompts, np.stack(walls).astype(np.uint8), np.array(start, dtype=np.int32),
                            np.array(goal, dtype=np.int32))

    def rewards(self, batch: MazeProblems, rows: np.ndarray, responses) -> dict[str, np.ndarray]:
        return maze_rewards(batch.walls[rows], batch.start[rows], batch.goal[rows], responses,
                            rows=self.corpus.rows, cols=self.corpus.cols, costs=self.costs, threads=self.threads)

    def check_model(self, model, meta: dict) -> None:
        need = len(self.corpus.vocab)
        rows, cols = self.corpus.rows, self.corpus.cols
        grid = meta.get("grid")
        if grid is not None and list(grid) != [rows, cols]:
            raise ValueError(f"--init {meta['checkpoint']}: trained on {grid[0]}x{grid[1]} mazes, the prompts of "
                             f"{self.corpus.path} are {rows}x{cols}")
        if model.config.vocab_size != need:
            raise ValueError(f"--init {meta['checkpoint']}: a {model.config.vocab_size}-token vocabulary, "
                             f"{rows}x{cols} mazes need {need}")
        trained_arm = ((meta.get("trainer") or {}).get("data") or {}).get("arm")
        if trained_arm is not None and trained_arm != self.arm:
            raise ValueError(f"--arm {self.arm}: the model in {meta['checkpoint']} was trained on arm {trained_arm!r}; "
                             f"its responses are scored as that arm's (--arm {trained_arm})")


def prompt_corpus(data) -> "object":
    """The corpus whose problems are the prompts: ``data`` itself, or a study directory's ``train`` corpus."""
    from .corpus import Corpus

    data = Path(data)
    if (data / "manifest.json").is_file():
        return Corpus(data)
    if (data / "train" / "manifest.json").is_file():
        return Corpus(data / "train")
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such directory")
    hint = ""
    if (data / "meta.json").is_file():
        hint = " (it is a token dir: prompts need the problems' walls, start and goal, which live in the corpus"
        corpus = json.loads((data / "meta.json").read_text()).get("corpus")
        hint += f" {corpus})" if corpus else ")"
    raise ValueError(f"--data {data}: neither a corpus nor a study directory with a train/ corpus{hint}")


# --------------------------------------------------------------------------------------------------
# Advantages and losses


def shape_rewards(raw: dict, stopped, weights: dict, truncated: str = "zero"):
    """Components, weighted reward and loss mask of responses from the task's raw scores: a response that did
    not stop (it used its whole budget) scores 0 in every component, and with ``truncated="mask"`` it is also
    left out of the loss (valid False). Returns (components {name: float64 (n,)}, reward (n,), valid bool (n,))."""
    if truncated not in TRUNCATED:
        raise ValueError(f"truncated={truncated!r}: choose one of {', '.join(TRUNCATED)}")
    cut = ~np.asarray(stopped, dtype=bool)
    comp = {c: np.where(cut, 0.0, np.asarray(v, dtype=np.float64)) for c, v in raw.items()}
    unknown = [c for c in weights if c not in comp]
    if unknown:
        raise ValueError(f"reward weights name {', '.join(map(repr, unknown))}, not among {', '.join(comp)}")
    reward = np.zeros(cut.shape, dtype=np.float64)
    for c, w in weights.items():
        reward += w * comp[c]
    valid = ~cut if truncated == "mask" else np.ones(cut.shape, dtype=bool)
    return comp, reward, valid


def group_advantages(rewards, scale: str = "group", valid=None, eps: float = EPS) -> np.ndarray:
    """Advantages of rewards (P, G): r − mean of the group, divided by the group's sample standard deviation
    (``group``), the whole batch's (``batch``) or nothing (``none``), plus ``eps``. ``valid`` (bool (P, G)):
    rows that count; the others get advantage 0 and take no part in the means and deviations."""
    if scale not in SCALES:
        raise ValueError(f"scale_rewards={scale!r}: choose one of {', '.join(SCALES)}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be (prompts, group); got shape {r.shape}")
    v = np.ones(r.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    n = v.sum(axis=1)
    mean = np.where(n > 0, (r * v).sum(axis=1) / np.maximum(n, 1), 0.0)
    centered = np.where(v, r - mean[:, None], 0.0)
    if scale == "none":
        return centered
    if scale == "group":
        var = (centered ** 2).sum(axis=1) / np.maximum(n - 1, 1)
        std = np.where(n >= 2, np.sqrt(var), 0.0)[:, None]
    else:
        flat = r[v]
        std = float(flat.std(ddof=1)) if flat.size >= 2 else 0.0
    return centered / (std + eps)


def groups_with_signal(rewards, valid=None) -> np.ndarray:
    """bool (P,): groups whose rewards (over the valid rows, at least two) are not all equal."""
    r = np.asarray(rewards, dtype=np.float64)
    v = np.ones(r.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    hi = np.where(v, r, -np.inf).max(axis=1)
    lo = np.where(v, r, np.inf).min(axis=1)
    return (v.sum(axis=1) >= 2) & (hi > lo)


def token_losses(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float,
                 beta: float = 0.0, ref_logp: torch.Tensor | None = None):
    """Per-token clipped policy-gradient loss (same shapes; ``adv`` broadcast) plus β·k3 KL to the reference.
    Returns (loss, {"clipped_low", "clipped_high": bool tensors where the clip is active, "kl": k3 or None})."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    info = {"clipped_low": (ratio < 1.0 - clip_low) & (adv < 0), "clipped_high": (ratio > 1.0 + clip_high) & (adv > 0),
            "kl": None}
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference model's log-probs (ref_logp)")
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        loss = loss + beta * kl
        info["kl"] = kl
    return loss, info


def row_weights(lengths, loss_type: str, budget: int | None = None) -> np.ndarray:
    """Per-row weights w with loss = Σ_rows w_i Σ_t ℓ_it over a mini-batch of responses of ``lengths`` tokens."""
    n = np.asarray(lengths, dtype=np.float64)
    if loss_type == "grpo":
        active = n > 0
        return np.where(active, 1.0 / np.maximum(n, 1.0) / max(int(active.sum()), 1), 0.0)
    if loss_type == "dr_grpo":
        if budget is None or budget < 1:
            raise ValueError(f"loss dr_grpo needs the token budget (a positive integer); got {budget!r}")
        return np.full(n.shape, 1.0 / (len(n) * budget))
    if loss_type == "dapo":
        return np.full(n.shape, 1.0 / max(float(n.sum()), 1.0))
    raise ValueError(f"loss={loss_type!r}: choose one of {', '.join(LOSS_TYPES)}")


def policy_loss(logp, old_logp, advantages, mask, loss_type: str = "grpo", *, clip_low: float = 0.2,
                clip_high: float = 0.2, beta: float = 0.0, ref_logp=None, budget: int | None = None):
    """The mini-batch loss of padded (rows, L) per-token log-probs with ``mask`` (1 on response tokens) and one
    advantage per row. Returns (loss, stats) with stats clip_frac_low/high (over tokens) and kl (token mean)."""
    mask = mask.to(logp.dtype)
    per_token, info = token_losses(logp, old_logp, advantages[:, None], clip_low, clip_high, beta, ref_logp)
    lengths = mask.sum(dim=1).detach().cpu().numpy()
    w = torch.as_tensor(row_weights(lengths, loss_type, budget), dtype=logp.dtype, device=logp.device)
    loss = (per_token * mask * w[:, None]).sum()
    n_tok = mask.sum().clamp_min(1.0)
    stats = {"clip_frac_low": float((info["clipped_low"] * mask).sum() / n_tok),
             "clip_frac_high": float((info["clipped_high"] * mask).sum() / n_tok),
             "kl": None if info["kl"] is None else float((info["kl"].detach() * mask).sum() / n_tok)}
    return loss, stats


# --------------------------------------------------------------------------------------------------
# Log-probabilities: the training forward


def _work_dtype(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def response_logprobs(model, prompts: Sequence, responses: Sequence, *, temperature: float = 1.0,
                      entropy: bool = False, autocast=None):
    """Log-probabilities under softmax(logits / temperature) of every response token, computed by the packed
    training forward of ``model`` (each prompt + response one example), concatenated in row order; rows with an
    empty response contribute nothing. In float32 (float64 for a float64 model) whatever the autocast. Returns
    (logp, entropy per token or None). Gradients flow when the caller has them enabled."""
    device = next(model.parameters()).device
    seqs, select, targets = [], [], []
    offset = 0
    for p, r in zip(prompts, responses):
        r = np.asarray(r, dtype=np.int64)
        if r.size == 0:
            continue
        p = np.asarray(p, dtype=np.int64)
        # The last response token is only ever a target.
        seqs.append(np.concatenate([p, r[:-1]]))
        select.append(offset + len(p) - 1 + np.arange(len(r)))
        targets.append(r)
        offset += len(seqs[-1])
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    if not seqs:
        empty = torch.zeros(0, dtype=dtype, device=device)
        return empty, (empty if entropy else None)
    lengths = [len(s) for s in seqs]
    tokens = torch.from_numpy(np.concatenate(seqs)).to(device)
    cu = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32, device=device)
    sel = torch.from_numpy(np.concatenate(select)).to(device)
    tgt = torch.from_numpy(np.concatenate(targets)).to(device)
    with autocast if autocast is not None else nullcontext():
        logits = model(tokens, cu, None, max(lengths), rows=sel)
    logp_all = torch.log_softmax(_work_dtype(logits) / temperature, dim=-1)
    logp = logp_all.gather(1, tgt[:, None]).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(dim=-1) if entropy else None
    return logp, ent


def _chunks(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Consecutive positions of ``lengths`` cut into runs of at most ``max_tokens`` (at least one each)."""
    out, cur, total = [], [], 0
    for i, n in enumerate(lengths.tolist()):
        if cur and total + n > max_tokens:
            out.append(np.array(cur, dtype=np.int64))
            cur, total = [], 0
        cur.append(i)
        total += n
    if cur:
        out.append(np.array(cur, dtype=np.int64))
    return out


@dataclass
class RolloutBatch:
    """The rows a rollout step trains on: prompt and response per row, the row's advantage, and per-token
    rollout-time (old) and reference log-probs, flat with ``offsets`` (rows + 1)."""
    prompts: list
    responses: list
    advantages: np.ndarray
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    offsets: np.ndarray | None = None

    def __post_init__(self):
        if self.offsets is None:
            self.offsets = np.concatenate([[0], np.cumsum([len(r) for r in self.responses])]).astype(np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def token_index(self, rows: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in rows.tolist()] or
                              [np.zeros(0, dtype=np.int64)])


@torch.no_grad()
def score_rollout(model, batch: RolloutBatch, *, temperature: float, forward_tokens: int, autocast=None,
                  ref_model=None) -> None:
    """Fills the batch's old log-probs and entropies (and reference log-probs with ``ref_model``)."""
    seq_lengths = np.array([len(p) + len(r) for p, r in zip(batch.prompts, batch.responses)])
    parts: dict[str, list] = {"old": [], "ent": [], "ref": []}
    for chunk in _chunks(seq_lengths, forward_tokens):
        prompts = [batch.prompts[i] for i in chunk.tolist()]
        responses = [batch.responses[i] for i in chunk.tolist()]
        logp, ent = response_logprobs(model, prompts, responses, temperature=temperature, entropy=True,
                                      autocast=autocast)
        parts["old"].append(logp)
        parts["ent"].append(ent)
        if ref_model is not None:
            parts["ref"].append(response_logprobs(ref_model, prompts, responses, temperature=temperature,
                                                  autocast=autocast)[0])
    device = next(model.parameters()).device
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, device=device)  # noqa: E731
    batch.old_logp, batch.entropy = cat(parts["old"]), cat(parts["ent"])
    batch.ref_logp = cat(parts["ref"]) if ref_model is not None else None


def minibatch_backward(model, batch: RolloutBatch, rows: np.ndarray, cfg: GRPOConfig, budget: int,
                       autocast=None) -> dict:
    """Accumulates into the parameters' .grad the gradient of the mini-batch loss over ``rows`` of ``batch``
    (forward passes of at most cfg.forward_tokens tokens; the loss is the same however it is cut). Returns the
    loss value and token counts of the clip and KL statistics."""
    device = next(model.parameters()).device
    w_rows = row_weights(batch.lengths[rows], cfg.loss, budget)
    seq_lengths = np.array([len(batch.prompts[i]) + len(batch.responses[i]) for i in rows.tolist()])
    stats = {"loss": 0.0, "tokens": 0, "clipped_low": 0, "clipped_high": 0, "kl_sum": 0.0}
    for chunk in _chunks(seq_lengths, cfg.forward_tokens):
        chunk_rows = rows[chunk]
        logp, _ = response_logprobs(model, [batch.prompts[i] for i in chunk_rows.tolist()],
                                    [batch.responses[i] for i in chunk_rows.tolist()], temperature=cfg.temperature,
                                    autocast=autocast)
        if logp.numel() == 0:
            continue
        idx = torch.from_numpy(batch.token_index(chunk_rows)).to(device)
        per_row_tokens = batch.lengths[chunk_rows]
        adv = torch.as_tensor(np.repeat(batch.advantages[chunk_rows], per_row_tokens), dtype=logp.dtype, device=device)
        w = torch.as_tensor(np.repeat(w_rows[chunk], per_row_tokens), dtype=logp.dtype, device=device)
        ref = batch.ref_logp[idx] if batch.ref_logp is not None else None
        per_token, info = token_losses(logp, batch.old_logp[idx].to(logp.dtype), adv, cfg.clip_low, cfg.clip_high,
                                       cfg.beta, ref)
        loss = (per_token * w).sum()
        loss.backward()
        stats["loss"] += float(loss.detach())
        stats["tokens"] += int(logp.numel())
        stats["clipped_low"] += int(info["clipped_low"].sum())
        stats["clipped_high"] += int(info["clipped_high"].sum())
        if info["kl"] is not None:
            stats["kl_sum"] += float(info["kl"].detach().sum())
    return stats


# --------------------------------------------------------------------------------------------------
# The prompt order


class PromptOrder:
    """Problem indices in a seeded random order, a fresh permutation per pass over the problems; position k of
    the stream is a pure function of (seed, k), so a saved cursor is all resume needs."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = int(size), int(seed)
        self._epoch, self._perm = -1, None

    def take(self, cursor: int, count: int) -> np.ndarray:
        out = []
        while count > 0:
            epoch, pos = divmod(cursor, self.size)
            if epoch != self._epoch:
                self._epoch = epoch
                self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.size)
            k = min(count, self.size - pos)
            out.append(self._perm[pos:pos + k])
            cursor += k
            count -= k
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# The loop


def _mean(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else None


def _std(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std()) if x.size else None


def reference_model(model):
    """The frozen copy of the initial policy that the KL term measures against."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available")
    return dev





def _collect_groups(task, model, cfg: GRPOConfig, order: PromptOrder, cursor: int, step: int, budget: int, dev,
                    times: dict):
    """The groups rollout step ``step`` trains on: P prompts from ``cursor`` on, G samples each, scored; with
    dynamic sampling, groups without signal are dropped and more prompts drawn (at most cfg.max_resample
    times). Returns (kept groups, everything sampled for the metrics, groups sampled, groups without signal,
    attempts, the new cursor); adds the sampling and scoring times to ``times``."""
    seen = {"comp": {c: [] for c in task.components}, "raw": {c: [] for c in task.components},
            "reward": [], "length": [], "truncated": []}
    kept: list[dict] = []  # groups of the training batch
    attempts = sampled_groups = zero_std_groups = 0
    while True:
        need = cfg.prompts - len(kept)
        # After a first full batch, ask for as many prompts as the observed share with signal suggests.
        n_req = cfg.prompts if attempts == 0 or len(kept) == 0 else \
            min(cfg.prompts, math.ceil(need * sampled_groups / len(kept)))
        indices = order.take(cursor, n_req)
        cursor += n_req
        batch = task.problems(indices)
        prompts = batch.prompts
        t0 = time.perf_counter()
        sampling = Sampling(temperature=cfg.temperature, seed=row_key(cfg.seed, step, attempts))
        gen = generate_groups(model, prompts, cfg.group, budget, stop_ids=task.stop_ids, sampling=sampling,
                              batch_groups=cfg.gen_batch, device=dev)
        t1 = time.perf_counter()
        times["sample"] += t1 - t0
        rows = np.repeat(np.arange(n_req), cfg.group)
        raw = task.rewards(batch, rows, gen.tokens)
        missing = [c for c in task.components if c not in raw]
        if missing:
            raise ValueError(f"the task's reward function returned no {', '.join(missing)}")
        raw = {c: np.asarray(raw[c], dtype=np.float64) for c in task.components}
        truncated = ~np.asarray(gen.stopped, dtype=bool)
        comp, reward, valid = shape_rewards(raw, gen.stopped, cfg.reward, cfg.truncated)
        valid &= np.array([len(t) > 0 for t in gen.tokens])
        signal = groups_with_signal(comp[task.primary].reshape(n_req, cfg.group),
                                    valid.reshape(n_req, cfg.group))
        times["verify"] += time.perf_counter() - t1
        for c in task.components:
            seen["comp"][c].append(comp[c])
            seen["raw"][c].append(raw[c])
        seen["reward"].append(reward)
        seen["length"].append(np.array([len(t) for t in gen.tokens]))
        seen["truncated"].append(truncated)
        sampled_groups += n_req
        zero_std_groups += int((~signal).sum())
        for g in range(n_req):
            if len(kept) < cfg.prompts and (signal[g] or not cfg.filter_zero_std):
                sl = slice(g * cfg.group, (g + 1) * cfg.group)
                kept.append({"prompt": prompts[g], "responses": gen.tokens[sl], "reward": reward[sl],
                             "valid": valid[sl]})
        attempts += 1
        if not cfg.filter_zero_std or len(kept) >= cfg.prompts or attempts > cfg.max_resample:
            break
    return kept, seen, sampled_groups, zero_std_groups, attempts, cursor


def run_grpo(task, out_dir, cfg: GRPOConfig, *, init, resume: bool = False, device="auto", threads: int = 0,
             save_every: int = 0, keep_last: int = 2, eval_every: int = 0, eval_fn: Callable | None = None,
             progress: bool = True) -> dict:
    """GRPO on ``task`` from the checkpoint ``init`` (a run directory: its best checkpoint, or a checkpoint
    directory) into ``out_dir``: metrics.jsonl (one line per rollout step), run.json and checkpoints/ in the
    layout of `reasonless train` (so `eval` and `export-hf` take a GRPO run). ``resume``: continue from the newest
    checkpoint of ``out_dir``. ``eval_fn(model, step) -> dict`` runs every ``eval_every`` rollout steps and at
    the end; its numbers go into that step's metrics line. Returns a summary (metrics per step, the last
    checkpoint)."""
    cfg.validate(task.components)
    for name, value, low in (("save_every", save_every, 0), ("keep_last", keep_last, 1),
                             ("eval_every", eval_every, 0), ("threads", threads, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value!r}: must be an integer >= {low}")
    if eval_every and eval_fn is None:
        raise ValueError("--eval-every needs an evaluation (test suites to evaluate on)")
    budget = int(cfg.budget if cfg.budget is not None else task.default_budget)
    hparams = {**cfg.to_dict(), "budget": budget}
    out_dir = Path(out_dir)
    latest = ckpt_io.latest_checkpoint(out_dir)
    if resume and latest is None:
        raise ValueError(f"--resume: {out_dir} has no checkpoint to resume from")
    if not resume and latest is not None:
        raise ValueError(f"{out_dir} already holds checkpoints (newest {latest.name}); pass --resume to continue "
                         f"it or choose another --out")
    if threads > 0:
        torch.set_num_threads(threads)
    dev = _resolve_device(device)
    init_ckpt, _ = ckpt_io.resolve_checkpoint(init, "best")
    init_ckpt = init_ckpt.resolve()  # recorded, and compared on resume from wherever it is run
    model, meta = load_model(init_ckpt, device=dev)
    task.check_model(model, meta)
    ref_model = reference_model(model) if cfg.beta > 0 else None  # never built when the KL term is off
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    start_step, grad_steps, cursor = 0, 0, 0
    metrics_path = out_dir / "metrics.jsonl"
    if latest is not None:
        saved = ckpt_io.load_checkpoint(latest)
        state = saved["trainer"].get("grpo")
        if not isinstance(state, dict):
            raise ValueError(f"{latest}: not a GRPO checkpoint (no grpo state in trainer.json)")
        if saved["config"] != model.config.to_dict():
            raise ValueError(f"{latest / 'config.json'}: the run's model differs from --init {init_ckpt}")
        if Path(state["init"]).resolve() != init_ckpt.resolve():
            raise ValueError(f"--init {init}: the run in {out_dir} started from {state['init']}; resume with it")
        old = saved["trainer"].get("hparams", {})
        as_json = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples and lists compare equal)
        changed = [k for k in TRAJECTORY_KEYS if as_json(old.get(k)) != as_json(hparams[k])]
        if changed:
            raise ValueError(f"--resume: {', '.join(f'{k} {old.get(k)!r} -> {hparams[k]!r}' for k in changed)} "
                             f"differ from the run in {out_dir}; resume with the same settings")
        ckpt_io.load_checkpoint(latest, model, optimizer, restore_rng=True)
        start_step, grad_steps, cursor = int(state["rollout_step"]), int(state["grad_steps"]), int(state["cursor"])
    # Lines of steps after the checkpoint (or of a start that crashed before its first one) are redone.
    ckpt_io.truncate_metrics(metrics_path, "rollout_step", start_step)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").write_text(json.dumps(
        {"kind": "grpo", "init": str(init_ckpt), "data": task.data_info.get("dir"), "arm": task.data_info.get("arm"),
         **hparams, "n_params": int(sum(p.numel() for p in model.parameters()))}, indent=1) + "\n")

    order = PromptOrder(task.size, cfg.seed)
    records, last_ckpt = [], latest
    model.train()
    sink = open(metrics_path, "a")
    try:
        for step in range(start_step, cfg.steps):
            t_step = time.perf_counter()
            times = {"sample": 0.0, "verify": 0.0, "logprob": 0.0, "update": 0.0, "eval": 0.0}
            kept, seen, sampled_groups, zero_std_groups, attempts, cursor = _collect_groups(
                task, model, cfg, order, cursor, step, budget, dev, times)

            rollout = None
            if kept:
                adv = group_advantages(np.stack([k["reward"] for k in kept]), cfg.scale_rewards,
                                       np.stack([k["valid"] for k in kept])).reshape(-1)
                valid_rows = np.concatenate([k["valid"] for k in kept])
                prompts_rows = [k["prompt"] for k in kept for _ in range(cfg.group)]
                responses_rows = [r for k in kept for r in k["responses"]]
                train_rows = np.flatnonzero(valid_rows)
                if train_rows.size:
                    rollout = RolloutBatch([prompts_rows[i] for i in train_rows],
                                           [np.asarray(responses_rows[i], dtype=np.int64) for i in train_rows],
                                           adv[train_rows])
            t0 = time.perf_counter()
            if rollout is not None:
                score_rollout(model, rollout, temperature=cfg.temperature, forward_tokens=cfg.forward_tokens,
                              autocast=autocast, ref_model=ref_model)
            times["logprob"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            upd = {"loss": [], "grad_norm": [], "tokens": 0, "clipped_low": 0, "clipped_high": 0, "kl_sum": 0.0}
            if rollout is not None:
                n_rows = len(rollout.responses)
                mb = n_rows if cfg.minibatch is None else min(cfg.minibatch, n_rows)
                for u in range(cfg.updates):
                    perm = np.arange(n_rows) if mb >= n_rows else \
                        np.random.default_rng([cfg.seed, 1, step, u]).permutation(n_rows)
                    for lo in range(0, n_rows, mb):
                        optimizer.zero_grad(set_to_none=True)
                        s = minibatch_backward(model, rollout, perm[lo:lo + mb], cfg, budget, autocast)
                        norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                              cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                        optimizer.step()
                        grad_steps += 1
                        upd["loss"].append(s["loss"])
                        upd["grad_norm"].append(float(norm))
                        for k in ("tokens", "clipped_low", "clipped_high", "kl_sum"):
                            upd[k] += s[k]
                optimizer.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times["update"] = time.perf_counter() - t0

            done = step + 1
            cat = {k: np.concatenate(v) for k, v in seen.items() if k in ("reward", "length", "truncated")}
            new_tokens = int(cat["length"].sum())
            n_tok = max(upd["tokens"], 1)
            record = {"rollout_step": done, "grad_steps": grad_steps, "lr": cfg.lr,
                      "prompts": len(kept), "samples": int(cat["length"].size), "attempts": attempts,
                      "frac_reward_zero_std": zero_std_groups / max(sampled_groups, 1),
                      "reward_mean": _mean(cat["reward"]), "reward_std": _std(cat["reward"])}
            for c in task.components:
                values = np.concatenate(seen["comp"][c])
                record[f"reward_{c}_mean"] = _mean(values)
                record[f"reward_{c}_std"] = _std(values)
            for c in task.components:  # the verdicts themselves, truncated responses included
                record[f"rate_{c}"] = _mean(np.concatenate(seen["raw"][c]))
            record.update({
                "response_len_mean": _mean(cat["length"]), "response_len_max": int(cat["length"].max()),
                "frac_truncated": _mean(cat["truncated"]),
                "entropy": None if rollout is None or rollout.entropy.numel() == 0 else float(rollout.entropy.mean()),
                "kl": upd["kl_sum"] / n_tok if cfg.beta > 0 and upd["tokens"] else None,
                "clip_frac": (upd["clipped_low"] + upd["clipped_high"]) / n_tok if upd["tokens"] else None,
                "clip_frac_low": upd["clipped_low"] / n_tok if upd["tokens"] else None,
                "clip_frac_high": upd["clipped_high"] / n_tok if upd["tokens"] else None,
                "loss": _mean(upd["loss"]), "grad_norm": _mean(upd["grad_norm"]),
                "grad_norm_max": max(upd["grad_norm"]) if upd["grad_norm"] else None,
                "train_tokens": upd["tokens"]})
            if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == cfg.steps):
                t0 = time.perf_counter()
                record.update(eval_fn(model, done) or {})
                model.train()
                times["eval"] = time.perf_counter() - t0
            for k, v in times.items():
                record[f"time_{k}_s"] = v
            record["time_step_s"] = time.perf_counter() - t_step
            record["tokens_per_s"] = new_tokens / times["sample"] if times["sample"] > 0 else None
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            records.append(record)
            if progress:
                kl = f" kl {record['kl']:.4f}" if record["kl"] is not None else ""
                print(f"grpo step {done}/{cfg.steps} reward {record['reward_mean']:.3f} ({task.primary} "
                      f"{record[f'reward_{task.primary}_mean']:.3f}) len {record['response_len_mean']:.0f} "
                      f"trunc {record['frac_truncated']:.0%} zero-std {record['frac_reward_zero_std']:.0%}{kl} "
                      f"{record['tokens_per_s'] or 0:,.0f} tok/s step {record['time_step_s']:.1f}s",
                      file=sys.stderr, flush=True)
            if (save_every and done % save_every == 0) or done == cfg.steps:
                trainer_state = {"data": task.data_info, "val_loss": None,
                                 "best_val_loss": None, "hparams": hparams,
                                 "grpo": {"init": str(init_ckpt), "rollout_step": done, "grad_steps": grad_steps,
                                          "cursor": cursor}}
                last_ckpt = ckpt_io.save_checkpoint(out_dir, done, model, model.config.to_dict(), optimizer,
                                                    trainer_state)
                ckpt_io.prune_checkpoints(out_dir, keep_last)
    finally:
        sink.close()
    return {"metrics": records, "start_step": start_step, "steps": cfg.steps, "grad_steps": grad_steps,
            "checkpoint": str(last_ckpt) if last_ckpt else None, "budget": budget}



# --------------------------------------------------------------------------------------------------
# `reasonless grpo`


def _eval_metrics(summary: dict) -> dict:
    """The headline rates (percent) of an eval summary, one key per suite and rate."""
    out = {}
    for suite, s in summary["suites"].items():
        for key in ("plan_valid", "plan_optimal", "trace_valid"):
            out[f"eval_{suite}_{key}"] = s["modes"]["paper"][key]["pct"]
        out[f"eval_{suite}_trace_valid_strict"] = s["modes"]["strict"]["trace_valid"]["pct"]
        out[f"eval_{suite}_hit_budget"] = s["hit_budget"]["pct"]
    return out


def grpo(init, data, out, *, arm: str, config: GRPOConfig | None = None, eval_every: int = 0, eval_n: int | None = None,
         eval_suites=None, resume: bool = False, device="auto", threads: int = 0, save_every: int = 0,
         keep_last: int = 2, progress: bool = True) -> dict:
    """`reasonless grpo`: GRPO from the trained run ``init`` on the training problems of ``data`` (a study
    directory, whose ``train`` corpus holds them, or a corpus), scored as arm ``arm``, into ``out``. With
    ``eval_every``, the model answers the first ``eval_n`` problems of each test suite (``eval_suites``, default
    the study's ``data/test``) greedily at those steps and at the end, as `reasonless eval` does; the results go
    to ``out/evals/step-NNNNNN.jsonl`` and their rates into the metrics."""
    cfg = config or GRPOConfig()
    task = MazeTask(prompt_corpus(data), arm, threads=threads)
    eval_fn = None
    if eval_every:
        from .evaluate import evaluate_model, find_suites

        if eval_n is not None and eval_n < 1:
            raise ValueError(f"--eval-n {eval_n}: must be at least 1")
        suites_dir = Path(eval_suites) if eval_suites is not None else Path(data)
        if eval_suites is None and not (suites_dir / "test").is_dir():
            raise ValueError(f"--eval-every: {data} has no test suites (test/<name>); pass --eval-suites")
        suites = find_suites(suites_dir)
        out_dir = Path(out)

        def eval_fn(model, step):
            path = out_dir / "evals" / f"step-{step:06d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {"run": str(out_dir), "run_name": out_dir.resolve().name, "step": step, "arm": arm,
                    "checkpoint": None, "suites_dir": str(suites_dir), "grid": task.data_info["grid"]}
            summary = evaluate_model(model, suites, path, meta=meta, n=eval_n, device=next(model.parameters()).device,
                                     grid=task.data_info["grid"], threads=threads)
            return _eval_metrics(summary)

    return run_grpo(task, out, cfg, init=init, resume=resume, device=device, threads=threads, save_every=save_every,
                    keep_last=keep_last, eval_every=eval_every, eval_fn=eval_fn, progress=progress)
