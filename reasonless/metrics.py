"""The study's metrics (docs/design.md §1) as pure functions of per-example verdict arrays.

Everything here takes NumPy-convertible arrays (one entry per evaluated example) and returns plain JSON-able
values, so `reasonless eval` (which computes them from fresh verdicts) and `reasonless report` (which recomputes them
from the per-example JSONL) give the same numbers by construction.

Rates are percentages with a 95 % Wilson score interval: unlike the normal approximation it stays inside [0, 100]
and is not degenerate at 0 % or 100 %, which small suites and models that always (or never) succeed both hit.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion k/n, as fractions; None when n == 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 % and 100 % one bound is exact; rounding would leave it a hair off.
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def rate(k: int, n: int) -> dict:
    """``{"k", "n", "pct", "ci95": [lo, hi]}`` in percent; pct and ci95 are None when n == 0."""
    k, n = int(k), int(n)
    ci = wilson_interval(k, n)
    return {"k": k, "n": n, "pct": 100.0 * k / n if n else None,
            "ci95": None if ci is None else [100.0 * ci[0], 100.0 * ci[1]]}


def _bools(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(bool)


def confusion(plan_valid, trace_valid) -> dict:
    """The plan × trace 2×2 matrix of counts."""
    pv, tv = _bools(plan_valid, "plan_valid"), _bools(trace_valid, "trace_valid")
    if len(pv) != len(tv):
        raise ValueError(f"plan_valid has {len(pv)} entries, trace_valid {len(tv)}")
    return {"plan_valid": {"trace_valid": int((pv & tv).sum()), "trace_invalid": int((pv & ~tv).sum())},
            "plan_invalid": {"trace_valid": int((~pv & tv).sum()), "trace_invalid": int((~pv & ~tv).sum())}}


def top_errors(first_errors: Iterable[str | None], top: int = 10) -> list[list]:
    """The most frequent first errors as ``[name, count]``, by count then name (None = no error, not counted)."""
    counts = Counter(e for e in first_errors if e is not None)
    return [[name, k] for name, k in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:top]]


def pearson(x, y) -> float | None:
    """Pearson's correlation coefficient; None with fewer than two points or when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two vectors of one length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return None
    return float(np.clip(float(dx @ dy) / math.sqrt(sxx * syy), -1.0, 1.0))


def mode_metrics(plan_valid, plan_optimal, trace_valid, first_errors: Sequence[str | None], top: int = 10) -> dict:
    """The verdict metrics of one verifier mode: plan valid, plan optimal, trace valid, trace valid among valid
    plans (rates with CIs), the confusion matrix and the top first errors."""
    pv, po, tv = (_bools(plan_valid, "plan_valid"), _bools(plan_optimal, "plan_optimal"),
                  _bools(trace_valid, "trace_valid"))
    n = len(pv)
    if len(po) != n or len(tv) != n or len(first_errors) != n:
        raise ValueError("plan_valid, plan_optimal, trace_valid and first_errors must have one length")
    return {"plan_valid": rate(pv.sum(), n), "plan_optimal": rate(po.sum(), n), "trace_valid": rate(tv.sum(), n),
            "trace_valid_among_valid_plans": rate((pv & tv).sum(), pv.sum()),
            "confusion": confusion(pv, tv), "first_errors": top_errors(first_errors, top)}


def length_metrics(generated, reference) -> dict:
    """Means of generated and reference trace lengths (operations) and their Pearson correlation."""
    g, r = np.asarray(generated, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if g.shape != r.shape:
        raise ValueError(f"generated has shape {g.shape}, reference {r.shape}")
    return {"mean_generated": float(g.mean()) if len(g) else None,
            "mean_reference": float(r.mean()) if len(r) else None,
            "pearson_r": pearson(g, r)}


def length_bins(reference, n_bins: int = 5) -> np.ndarray:
    """Edges of at most n_bins bins of reference lengths, [edges[i], edges[i+1]), starting at the sorted values
    at ranks 0, n/n_bins, 2n/n_bins, … so each bin holds about as many examples; the last edge is past the maximum.
    Tied values never straddle an edge, so ties can merge bins."""
    r = np.sort(np.asarray(reference, dtype=np.int64))
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: must be at least 1")
    if len(r) == 0:
        return np.array([0, 1], dtype=np.int64)
    edges = np.unique(r[(np.arange(n_bins) * len(r)) // n_bins])
    return np.append(edges, r[-1] + 1)


def validity_by_bin(reference, valid, edges) -> list[dict]:
    """Rate of `valid` per bin [edges[i], edges[i+1]) of the reference length: ``{"lo", "hi", **rate}``."""
    r, v = np.asarray(reference, dtype=np.int64), _bools(valid, "valid")
    if len(r) != len(v):
        raise ValueError(f"reference has {len(r)} entries, valid {len(v)}")
    out = []
    for lo, hi in zip(np.asarray(edges)[:-1].tolist(), np.asarray(edges)[1:].tolist()):
        inside = (r >= lo) & (r < hi)
        out.append({"lo": int(lo), "hi": int(hi), **rate((v & inside).sum(), inside.sum())})
    return out


def suite_metrics(verdicts: dict[str, dict], hit_budget, generated_ops, reference_ops, top: int = 10) -> dict:
    """All metrics of one suite. `verdicts` maps a verifier mode to arrays ``plan_valid``, ``plan_optimal``,
    ``trace_valid`` and the list ``first_error`` (names or None); the lengths are operations per example."""
    hb = _bools(hit_budget, "hit_budget")
    out = {"n": int(len(hb)), "hit_budget": rate(hb.sum(), len(hb)),
           "trace_length": length_metrics(generated_ops, reference_ops), "modes": {}}
    for mode, v in verdicts.items():
        out["modes"][mode] = mode_metrics(v["plan_valid"], v["plan_optimal"], v["trace_valid"], v["first_error"],
                                          top)
    return out


def format_rate(r: dict | None, digits: int = 1, ci: bool = True) -> str:
    """``87.3 [84.1, 90.0]`` (or ``—`` when undefined)."""
    if r is None or r.get("pct") is None:
        return "—"
    text = f"{r['pct']:.{digits}f}"
    if ci and r.get("ci95") is not None:
        lo, hi = r["ci95"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text
