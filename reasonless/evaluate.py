"""`reasonless eval`: a trained model answers the test suites, the verifier judges every answer (docs/design.md §1, §5).

For each suite (a corpus; a study's ``DIR/test/<name>``) the first N problems are turned into prompts exactly as in
training — ``<|bos|> query start X Y goal X Y wall X Y …``, everything before ``reasoning`` (the prompt span of the
token export, whose loss mask starts at ``reasoning``) — and the model writes the response from ``reasoning`` on
until ``end`` or ``<|eos|>`` or its token budget. Each response is verified in both verifier modes; the per-example
results go to a JSONL file and the per-suite metrics (:mod:`reasonless.metrics`) to ``FILE.summary.json``.

Token budget: by default twice the longest reference response of the suite (the correct arm's ``reasoning … end``:
the A* trace and the plan), so that a model which searches somewhat longer than A* is not cut off, while one that
never stops costs a bounded time; always capped by the model's context (max_seq_len − prompt length). The budget is
taken over the whole suite, not over the first N, so results for the first N do not depend on N.

Each finished suite is kept in ``FILE.parts/`` until the whole evaluation is written: rerunning the same command
after a crash generates only the suites still missing (a kept suite is reused only if the checkpoint, weights,
device, suite, N, sampling and budget are the same).

Per-example JSONL fields: ``suite``, ``index`` (corpus index), ``response`` (the generated words), ``hit_budget``
(the budget ran out before a stop token), ``generated_tokens``, ``budget``, ``generated_ops`` (well-formed
operations of the response), ``reference_ops`` (operations of the example's A* trace), ``plan_len`` (plan steps of
the response), ``optimal_plan_len`` (cells of the A* plan, a shortest path), and one object per verifier mode
(``paper``, ``strict``) with ``plan_valid``, ``plan_optimal``, ``trace_valid``, ``first_error`` (name or null) and
``first_error_at`` (operation index or null).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import __version__
from . import checkpoint as ckpt_io
from .atomic import atomic_file
from .corpus import Corpus
from .metrics import format_rate, suite_metrics
from .verifier import MODES, verify
from .vocab import END, EOS, UNK, vocab_for

FORMAT = "reasonless-eval"
FORMAT_VERSION = 1
# reasoning + solution + end around the trace (5 tokens per operation) and the plan (3 per cell)
RESPONSE_FRAME = 3


@dataclass
class Suite:
    name: str
    corpus: Corpus


def summary_path(jsonl: str | os.PathLike) -> Path:
    """Where the summary of an eval JSONL lives: ``FILE.summary.json`` beside it."""
    jsonl = Path(jsonl)
    return jsonl.with_name(jsonl.name + ".summary.json")


# ---------------------------------------------------------------------------------------------------- suites
def _is_corpus(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def find_suites(path: str | os.PathLike, names: Sequence[str] | None = None) -> list[Suite]:
    """The suites under `path`: a corpus itself; a study directory (its ``test/<name>`` corpora); or a directory
    of corpora. `names` picks suites by name (in that order). Errors list what is there."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such suite directory")
    if _is_corpus(path):
        available = {path.name: path}
    else:
        root = path / "test" if (path / "test").is_dir() else path
        available = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                     and _is_corpus(p)}
        if not available:
            raise ValueError(f"{path}: neither a corpus, nor a study directory with test suites (DIR/test/<name>), "
                             f"nor a directory of corpora")
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(f"{path}: no test suite {', '.join(map(repr, missing))}; available: "
                             f"{', '.join(available)}")
        chosen = list(dict.fromkeys(names))
    else:
        chosen = list(available)
    return [Suite(name, Corpus(available[name])) for name in chosen]


def reference_response_lengths(corpus: Corpus) -> np.ndarray:
    """Tokens of each example's correct-arm response, ``reasoning`` … ``end`` (the stop token included, the
    trailing <|eos|> not: generation stops at ``end``)."""
    stats = corpus.column("stats").astype(np.int64)
    return RESPONSE_FRAME + 5 * stats[:, 1] + 3 * stats[:, 2]


@dataclass
class Problems:
    """The first n problems of a suite, with their prompts and reference lengths."""

    index: np.ndarray            # int64 (n,) corpus indices
    prompts: list[np.ndarray]    # int64 token ids, <|bos|> … up to (excluding) `reasoning`
    walls: np.ndarray            # uint8 (n, R*C)
    start: np.ndarray            # int32 (n, 2)
    goal: np.ndarray
    reference_ops: np.ndarray    # int64 (n,)
    optimal_plan_len: np.ndarray  # int64 (n,) cells of the A* plan
    reference_tokens: np.ndarray  # int64 (n,) reference response tokens (reasoning … end)


def load_problems(corpus: Corpus, n: int | None = None) -> Problems:
    """Prompts of the first n examples (all when None), tokenized as for training (the correct arm's stream,
    whose prompt span does not depend on the arm)."""
    total = len(corpus) if n is None else min(int(n), len(corpus))
    if total < 1:
        raise ValueError(f"{corpus.path}: no examples to evaluate (n={n})")
    parts: dict[str, list] = {k: [] for k in ("walls", "start", "goal", "ops", "plan", "resp")}
    prompts: list[np.ndarray] = []
    for batch in corpus.batches(min(total, 20_000)):
        take = min(len(batch), total - batch.first)
        if take <= 0:
            break
        if take < len(batch):
            batch = batch.select(np.arange(take))
        tokens, offsets, prompt_lengths = batch.tokens("correct")
        for i in range(take):
            lo = int(offsets[i])
            prompts.append(tokens[lo:lo + int(prompt_lengths[i])].astype(np.int64))
        parts["walls"].append(batch.walls)
        parts["start"].append(batch.start)
        parts["goal"].append(batch.goal)
        parts["ops"].append(np.diff(batch.ops_offsets))
        parts["plan"].append(np.diff(batch.plan_offsets))
        # the response runs from `reasoning` to <|eos|>; without the <|eos|>
        parts["resp"].append(np.diff(offsets) - prompt_lengths - 1)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Problems(np.arange(total, dtype=np.int64), prompts, cat["walls"], cat["start"], cat["goal"],
                    cat["ops"].astype(np.int64), cat["plan"].astype(np.int64), cat["resp"].astype(np.int64))


# ---------------------------------------------------------------------------------------------------- model
def run_info(ckpt: Path, trainer: dict) -> dict:
    """What is known of the run a checkpoint (with its trainer state) belongs to: run directory, name, arm, step,
    grid, training data."""
    data = trainer.get("data", {}) if isinstance(trainer.get("data"), dict) else {}
    run_dir = ckpt.parent.parent if ckpt.parent.name == ckpt_io.CHECKPOINT_DIR else ckpt
    run_json = {}
    try:
        run_json = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        pass
    arm = run_json.get("arm") or data.get("arm")
    return {"run": str(run_dir), "run_name": run_dir.resolve().name, "checkpoint": str(ckpt),
            "step": trainer.get("step"), "val_loss": trainer.get("val_loss"), "arm": arm,
            "grid": data.get("grid"), "train_data": data.get("dir")}


def check_model_fits(model, suite: Suite, grid=None) -> None:
    """Refuses a model whose vocabulary (or training grid, when recorded) is not the suite's."""
    rows, cols = suite.corpus.rows, suite.corpus.cols
    need = len(vocab_for(rows, cols))
    have = int(model.config.vocab_size)
    if grid is not None and list(grid) != [rows, cols]:
        raise ValueError(f"suite {suite.name} ({suite.corpus.path}) is a {rows}x{cols} grid, the model was trained "
                         f"on {grid[0]}x{grid[1]}")
    if have != need:
        raise ValueError(f"suite {suite.name} ({suite.corpus.path}): a {rows}x{cols} grid needs a {need}-token "
                         f"vocabulary, the model has {have}")


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(obj)


def _decode(vocab, tokens: np.ndarray) -> str:
    ids = np.asarray(tokens, dtype=np.int64)
    bad = (ids < 0) | (ids >= len(vocab))
    if bad.any():  # a foreign generator's stray id: shown as <|unk|>, as the verifier reads it
        ids = np.where(bad, UNK, ids)
    return vocab.decode(ids)


# ---------------------------------------------------------------------------------------------------- eval
def budgets_for(problems: Problems, suite_budget: int, max_seq_len: int, suite: str) -> np.ndarray:
    """Per-example token budgets: the suite's, capped by the context left after each prompt."""
    lengths = np.array([len(p) for p in problems.prompts], dtype=np.int64)
    room = int(max_seq_len) - lengths
    if room.min() < 1:
        i = int(np.argmin(room))
        raise ValueError(f"suite {suite}: example {int(problems.index[i])} has a {int(lengths[i])}-token prompt, "
                         f"the model's context is {max_seq_len} tokens")
    return np.minimum(int(suite_budget), room)


def evaluate_suite(model, suite: Suite, *, n: int | None, generate_fn: Callable, sampling=None,
                   budget: int | None = None, batch_size: int = 64, device=None, progress: bool = False,
                   threads: int = 0, costs: bool = True) -> tuple[list[dict], dict]:
    """Generates, verifies and scores one suite: (per-example rows, suite summary without the metadata).
    costs=False: the model writes traces without cost tokens (arm ``correct_no_costs``; see
    :func:`reasonless.verifier.restore_costs`)."""
    corpus = suite.corpus
    problems = load_problems(corpus, n)
    rule = "fixed"
    if budget is None:
        rule = "2x the longest reference response of the suite"
        budget = 2 * int(reference_response_lengths(corpus).max())
    if budget < 1:
        raise ValueError(f"budget={budget}: must be at least 1 token")
    budgets = budgets_for(problems, budget, model.config.max_seq_len, suite.name)
    kwargs = dict(stop_ids=(END, EOS), batch_size=batch_size, device=device, progress=progress)
    if sampling is not None:
        kwargs["sampling"] = sampling
    gen = generate_fn(model, problems.prompts, budgets.tolist(), **kwargs)
    if len(gen.tokens) != len(problems.prompts):
        raise ValueError(f"the generator returned {len(gen.tokens)} responses for {len(problems.prompts)} prompts")
    responses = [np.asarray(t, dtype=np.int64) for t in gen.tokens]
    stopped = np.asarray(gen.stopped, dtype=bool)
    verdicts = {mode: verify(problems.walls, problems.start, problems.goal, responses, rows=corpus.rows,
                             cols=corpus.cols, mode=mode, threads=threads, costs=costs) for mode in MODES}
    vocab = vocab_for(corpus.rows, corpus.cols)
    first = verdicts[MODES[0]]
    rows = []
    for i, resp in enumerate(responses):
        row = {"suite": suite.name, "index": int(problems.index[i]), "response": _decode(vocab, resp),
               "hit_budget": bool(not stopped[i]), "generated_tokens": len(resp), "budget": int(budgets[i]),
               "generated_ops": int(first.n_ops[i]), "reference_ops": int(problems.reference_ops[i]),
               "plan_len": int(first.plan_len[i]), "optimal_plan_len": int(problems.optimal_plan_len[i])}
        for mode, v in verdicts.items():
            row[mode] = {"plan_valid": bool(v.plan_valid[i]), "plan_optimal": bool(v.plan_optimal[i]),
                         "trace_valid": bool(v.trace_valid[i]), "first_error": v.first_error_name(i),
                         "first_error_at": None if v.first_error[i] < 0 else int(v.first_error_at[i])}
        rows.append(row)
    metrics = metrics_of_rows(rows)
    info = {"path": str(corpus.path), "generator": corpus.manifest.get("generator"),
            "grid": [corpus.rows, corpus.cols], "examples_in_suite": len(corpus),
            "budget": {"rule": rule, "tokens": int(budget), "max_after_context_cap": int(budgets.max()),
                       "min_after_context_cap": int(budgets.min())}}
    return rows, {**info, **metrics}


def metrics_of_rows(rows: Sequence[dict], modes: Sequence[str] = MODES) -> dict:
    """:func:`reasonless.metrics.suite_metrics` of per-example rows (as written to the eval JSONL)."""
    verdicts = {}
    for mode in modes:
        verdicts[mode] = {
            "plan_valid": np.array([r[mode]["plan_valid"] for r in rows], dtype=bool),
            "plan_optimal": np.array([r[mode]["plan_optimal"] for r in rows], dtype=bool),
            "trace_valid": np.array([r[mode]["trace_valid"] for r in rows], dtype=bool),
            "first_error": [r[mode]["first_error"] for r in rows]}
    return suite_metrics(verdicts, np.array([r["hit_budget"] for r in rows], dtype=bool),
                         np.array([r["generated_ops"] for r in rows], dtype=np.int64),
                         np.array([r["reference_ops"] for r in rows], dtype=np.int64))


def evaluate_model(model, suites: Sequence[Suite], out: str | os.PathLike, *, meta: dict | None = None,
                   n: int | None = None, mode: str = "paper", sampling=None, budget: int | None = None,
                   batch_size: int = 64, device=None, grid=None, generate_fn: Callable | None = None,
                   progress: bool = False, threads: int = 0) -> dict:
    """Evaluates `model` on `suites`; writes `out` (per-example JSONL) and ``out.summary.json`` atomically and
    returns the summary. `generate_fn` defaults to :func:`reasonless.sample.generate` (same signature)."""
    if mode not in MODES:
        raise ValueError(f"unknown verifier mode {mode!r}; choose 'paper' or 'strict'")
    if n is not None and n < 1:
        raise ValueError(f"n={n}: must be at least 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    if not suites:
        raise ValueError("no test suite to evaluate")
    for suite in suites:  # before any generation: a mismatch is found in seconds, not after hours
        check_model_fits(model, suite, grid)
    if generate_fn is None:
        from .sample import generate as generate_fn
    out = Path(out)
    parts = parts_dir(out)
    all_rows: list[dict] = []
    per_suite: dict[str, dict] = {}
    run_key = _run_key(model, meta, n, sampling, budget, device)
    for suite in suites:
        key = {**run_key, "suite": suite.name, "corpus": str(Path(suite.corpus.path).resolve()),
               "examples": len(suite.corpus)}
        done = _read_part(parts, suite.name, key)
        if done is not None:
            rows, summary = done
            if progress:
                print(f"{suite.name}: {len(rows)} results kept from an interrupted run ({parts})", file=sys.stderr,
                      flush=True)
        else:
            if progress:
                print(f"{suite.name}: generating ({suite.corpus.path})", file=sys.stderr, flush=True)
            rows, summary = evaluate_suite(model, suite, n=n, generate_fn=generate_fn, sampling=sampling,
                                           budget=budget, batch_size=batch_size, device=device, progress=progress,
                                           threads=threads, costs=(meta or {}).get("arm") != "correct_no_costs")
            _write_part(parts, suite.name, key, rows, summary)
        all_rows.extend(rows)
        per_suite[suite.name] = summary
    config = model.config
    n_params = None
    if hasattr(model, "parameters"):
        n_params = int(sum(p.numel() for p in model.parameters()))
    full_meta = {**(meta or {}), "mode": mode, "modes": list(MODES), "n": n, "sampling": _as_dict(sampling),
                 "batch_size": batch_size, "budget": budget,
                 "model": {"vocab_size": int(config.vocab_size), "max_seq_len": int(config.max_seq_len),
                           "n_params": n_params},
                 "jsonl": out.name, "reasonless_version": __version__}
    summary = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": full_meta, "suites": per_suite}
    with atomic_file(out, "w") as f:
        for row in all_rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    with atomic_file(summary_path(out), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    shutil.rmtree(parts, ignore_errors=True)
    return summary


# ---------------------------------------------------------------------------------------------------- resume
# Generating a suite can take hours on a GPU; each finished suite is kept in OUT.parts/<suite>.json until the whole
# evaluation is written, so a rerun of the same command after a crash generates only the suites still missing.


def parts_dir(jsonl: str | os.PathLike) -> Path:
    """Where finished suites of an unfinished evaluation wait: ``FILE.parts/`` beside the JSONL."""
    jsonl = Path(jsonl)
    return jsonl.with_name(jsonl.name + ".parts")


def _run_key(model, meta: dict | None, n, sampling, budget, device) -> dict:
    """What every suite's results depend on besides the suite itself: a kept part is reused only when all of it
    (and the suite) is equal. The batch size is not part of it (generation does not depend on it); the weights
    enter through a checksum, the device because a GPU computes in bf16."""
    weights = None
    if hasattr(model, "parameters"):
        weights = float(sum(float(p.detach().double().abs().sum()) for p in model.parameters()))
    return {"checkpoint": (meta or {}).get("checkpoint"), "step": (meta or {}).get("step"), "weights": weights,
            "n": n, "sampling": _as_dict(sampling), "budget": budget, "device": None if device is None else str(device),
            "format_version": FORMAT_VERSION}


def _part_path(parts: Path, suite: str) -> Path:
    return parts / f"{suite}.json"


def _read_part(parts: Path, suite: str, key: dict):
    try:
        kept = json.loads(_part_path(parts, suite).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != json.loads(json.dumps(key)):
        return None
    return kept["rows"], kept["summary"]


def _write_part(parts: Path, suite: str, key: dict, rows: list[dict], summary: dict) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_file(_part_path(parts, suite), "w") as f:
        json.dump({"key": key, "rows": rows, "summary": summary}, f, separators=(",", ":"))


def evaluate(run: str | os.PathLike, suites_dir: str | os.PathLike, out: str | os.PathLike, *,
             suites: Sequence[str] | None = None, checkpoint: str = "best", device=None, command: str | None = None,
             **kwargs) -> dict:
    """`reasonless eval`: loads the run's checkpoint and calls :func:`evaluate_model` on the suites of
    `suites_dir` (see :func:`find_suites`); `kwargs` go to :func:`evaluate_model`."""
    from .sample import load_model  # torch only when a model is needed (report imports this module)

    chosen = find_suites(suites_dir, suites)
    model, loaded = load_model(run, device=device, which=checkpoint)
    info = run_info(Path(loaded["checkpoint"]), loaded["trainer"])
    meta = {**info, "checkpoint_choice": loaded["selected_by"], "suites_dir": str(suites_dir), "command": command}
    return evaluate_model(model, chosen, out, meta=meta, device=device, grid=info.get("grid"), **kwargs)


# ---------------------------------------------------------------------------------------------------- printing
def format_summary(summary: dict) -> str:
    """One line per suite: n, plan valid, optimal, trace valid (primary mode, then the other), trace valid among
    valid plans, share that hit the budget, mean generated/reference operations and their correlation."""
    meta = summary["meta"]
    mode = meta["mode"]
    other = [m for m in meta.get("modes", MODES) if m != mode]
    head = [f"run {meta.get('run_name', '?')} (arm {meta.get('arm') or '?'}, step {meta.get('step', '?')}), "
            f"verifier mode {mode}; 95 % Wilson intervals"]
    cols = ["suite", "n", "plan valid", "optimal", f"trace valid ({mode})"]
    cols += [f"trace valid ({m})" for m in other]
    cols += ["trace | valid plan", "hit budget", "ops gen/ref", "r"]
    table = [cols]
    for name, s in summary["suites"].items():
        pm = s["modes"][mode]
        tl = s["trace_length"]
        r = tl["pearson_r"]
        table.append([name, str(s["n"]), format_rate(pm["plan_valid"]), format_rate(pm["plan_optimal"]),
                      format_rate(pm["trace_valid"])]
                     + [format_rate(s["modes"][m]["trace_valid"]) for m in other]
                     + [format_rate(pm["trace_valid_among_valid_plans"]), format_rate(s["hit_budget"], ci=False),
                        f"{tl['mean_generated']:.1f}/{tl['mean_reference']:.1f}", "—" if r is None else f"{r:.3f}"])
    widths = [max(len(row[k]) for row in table) for k in range(len(cols))]
    lines = head + ["  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths)))
                    for row in table]
    for name, s in summary["suites"].items():
        errs = s["modes"][mode]["first_errors"][:3]
        if errs:
            lines.append(f"  {name}: top first errors ({mode}): " + ", ".join(f"{e} {k}" for e, k in errs))
    return "\n".join(lines)
