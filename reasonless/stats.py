"""Length statistics of a corpus, to choose a context length: tokens of prompt, trace, plan and the whole sequence."""
from __future__ import annotations

import numpy as np

from .corpus import STATS_COLUMNS, Corpus

QUANTITIES = ("prompt_tokens", "trace_tokens", "plan_tokens", "total_tokens", "operations", "plan_cells", "walls")


def sequence_lengths(stats: np.ndarray, layout: str = "correct") -> dict[str, np.ndarray]:
    """Token counts per example from the stored per-example statistics (walls, operations, plan cells).

    A sequence is <|bos|> query start X Y goal X Y (wall X Y)* reasoning (op X Y cG cH)* solution (plan X Y)* end
    <|eos|>; `layout` is the arm's token layout (:func:`reasonless.arms.token_layout`): ``correct`` (5 tokens per
    operation), ``no_costs`` (3) or ``none`` (no trace).
    """
    col = {name: stats[:, i].astype(np.int64) for i, name in enumerate(STATS_COLUMNS)}
    prompt = 8 + 3 * col["walls"]
    trace = {"correct": 5, "no_costs": 3, "none": 0}[layout] * col["ops"]
    plan = 3 * col["plan"]
    return {"prompt_tokens": prompt, "trace_tokens": trace, "plan_tokens": plan,
            "total_tokens": prompt + 1 + trace + 1 + plan + 2, "operations": col["ops"], "plan_cells": col["plan"], "walls": col["walls"]}


def describe(corpus: Corpus, arm: str = "correct", seed: int = 0, threads: int = 0) -> dict:
    """mean, median, p95, max (and min) of every quantity in QUANTITIES under `arm`. For arms whose trace is not
    the example's own A* trace, also how often that trace happens to be a valid A* trace for the problem
    (``trace_valid_pct`` per verifier mode)."""
    from .arms import arm_batches, check_arm, token_layout

    check_arm(arm)
    stats = corpus.column("stats")
    out = {"examples": len(corpus), "arm": arm, "rows": corpus.rows, "cols": corpus.cols}
    if arm not in ("correct", "none", "correct_no_costs"):
        from . import _core
        from .verifier import MODES

        valid = dict.fromkeys(MODES, 0)
        for batch in arm_batches(corpus, arm, seed, threads=threads):
            stats[batch.first:batch.first + len(batch), 1] = np.diff(batch.ops_offsets)
            tokens, offsets, prompts = batch.tokens("correct", threads)
            for mode in MODES:
                verdicts = _core.verify_batch(batch.walls, corpus.rows, corpus.cols, batch.start, batch.goal,
                                              tokens, offsets[:-1] + prompts, offsets[1:], mode, threads)
                valid[mode] += int(verdicts["trace_valid"].sum())
        out["arm_seed"] = seed
        out["trace_valid_pct"] = {mode: 100.0 * k / len(corpus) for mode, k in valid.items()}
    if "paper" in corpus.manifest:  # a --rng paper corpus: the JS tool's defects it carries
        out["paper_defects"] = corpus.manifest["paper"]["defects"]
    lengths = sequence_lengths(stats, token_layout(arm))
    for name in QUANTITIES:
        v = lengths[name]
        out[name] = {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
                     "max": int(v.max()), "min": int(v.min())}
    return out


def format_table(summary: dict) -> str:
    head = f"{summary['examples']:,} examples, {summary['rows']}x{summary['cols']}, arm {summary['arm']}"
    lines = [head, f"{'':<15}{'mean':>10}{'median':>10}{'p95':>10}{'max':>10}{'min':>10}"]
    for name in QUANTITIES:
        s = summary[name]
        lines.append(f"{name:<15}{s['mean']:>10.1f}{s['median']:>10.1f}{s['p95']:>10.1f}{s['max']:>10}{s['min']:>10}")
    if "trace_valid_pct" in summary:
        lines.append("trace valid for its problem: " + ", ".join(
            f"{mode} {pct:.2f}%" for mode, pct in summary["trace_valid_pct"].items()))
    if "paper_defects" in summary:
        from .paper_mazes import warning_line

        lines.append(warning_line({"paper": {"defects": summary["paper_defects"]}}))
    return "\n".join(lines)
