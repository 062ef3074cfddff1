"""A study's results (docs/design.md §9): tables across seeds, learning curves, a paragraph, ``results.json``.

Reads what `reasonless study run` wrote (``OUT/evals``, the checkpoints' examples and tokens seen, the stage wall
times) and writes ``OUT/report/``: ``report.md`` (and the same as ``index.html``), ``results.json``, one
learning-curve PNG per suite and, in ``final/``, the per-suite details of :mod:`reasonless.report` for the last
evaluation point (with its gallery of rendered failures).

Intervals. A single run's rate has a 95 % Wilson interval over its evaluated problems. With several seeds, a cell
shows the mean over seeds with a 95 % Student-t interval across seeds (mean ± t₀.₉₇₅,ₖ₋₁ · sd/√k; the spread of
training outcomes, which is what a claim about an arm must beat), and the per-run Wilson intervals are listed
separately. Seeds that happen to agree would give a zero-width t interval, so the interval a cell shows (and that
comparisons use) is never narrower than the Wilson interval of the seeds' pooled problems. With one seed it is that
run's Wilson interval. The paragraph calls an arm ahead of another only when their intervals do not overlap.

The trace-free arm (``none``) has no trace: its trace-validity cells are "n/a", never 0.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .atomic import atomic_file
from .evaluate import summary_path
from .html_report import write_index
from .metrics import format_rate, rate
from .progress import clock
from .report import build_report, md_table, slug

TRACE_FREE_ARMS = ("none",)
# (key in a point's suite record, label, needs a trace)
METRICS = [("plan_valid", "plan valid", False), ("plan_optimal", "plan optimal", False),
           ("trace_valid_paper", "trace valid (paper)", True), ("trace_valid_strict", "trace valid (strict)", True),
           ("trace_valid_among_valid_plans_paper", "trace valid among valid plans (paper)", True),
           ("trace_valid_among_valid_plans_strict", "trace valid among valid plans (strict)", True)]
CURVE_METRICS = [("plan_valid", "plan valid"), ("trace_valid_paper", "trace valid (paper)"),
                 ("trace_valid_strict", "trace valid (strict)")]
# Two-sided 95 % quantiles of Student's t by degrees of freedom; beyond 30 the normal quantile is within 2 %.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"df={df}: need at least one degree of freedom (two seeds)")
    return T975[df - 1] if df <= len(T975) else 1.959963984540054


def has_trace(arm: str) -> bool:
    return arm not in TRACE_FREE_ARMS


def across_seeds(runs: list[dict | None]) -> dict | None:
    """Aggregates one rate (``{"k", "n", "pct", "ci95"}`` per seed) over seeds: ``{"mean", "ci95", "pooled",
    "interval", "per_seed", ...}`` where ``ci95`` is the Student-t interval across seeds (None with one seed),
    ``pooled`` the Wilson interval of all seeds' problems together, and ``interval`` — what tables show and
    comparisons use — the hull of the two (the single run's Wilson interval with one seed). None when no seed has a
    defined rate."""
    rates = [r for r in runs if r is not None and r.get("pct") is not None]
    if not rates:
        return None
    values = [float(r["pct"]) for r in rates]
    k = len(values)
    mean = sum(values) / k
    ci = None
    if k >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
        half = t975(k - 1) * sd / math.sqrt(k)
        ci = [max(0.0, mean - half), min(100.0, mean + half)]
    pooled = rate(sum(int(r["k"]) for r in rates), sum(int(r["n"]) for r in rates))["ci95"]
    interval = pooled if ci is None else [min(ci[0], pooled[0]), max(ci[1], pooled[1])]
    return {"mean": mean, "ci95": ci, "pooled": pooled, "interval": interval, "per_seed": values, "seeds": k,
            "wilson": [r.get("ci95") for r in rates]}


def _fmt(agg: dict | None, digits: int = 1) -> str:
    if agg is None:
        return "—"
    text = f"{agg['mean']:.{digits}f}"
    if agg["interval"] is not None:
        lo, hi = agg["interval"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


# ---------------------------------------------------------------------------------------------------- collect
def point_record(summary: dict, arm: str) -> dict:
    """The per-suite rates of one evaluation summary, trace metrics None for a trace-free arm."""
    out = {}
    trace = has_trace(arm)
    for name, s in summary["suites"].items():
        paper, strict = s["modes"]["paper"], s["modes"]["strict"]
        tl = s["trace_length"]
        out[name] = {
            "n": s["n"], "plan_valid": paper["plan_valid"], "plan_optimal": paper["plan_optimal"],
            "trace_valid_paper": paper["trace_valid"] if trace else None,
            "trace_valid_strict": strict["trace_valid"] if trace else None,
            "trace_valid_among_valid_plans_paper": paper["trace_valid_among_valid_plans"] if trace else None,
            "trace_valid_among_valid_plans_strict": strict["trace_valid_among_valid_plans"] if trace else None,
            "hit_budget": s["hit_budget"],
            "mean_generated_ops": tl["mean_generated"] if trace else None,
            "mean_reference_ops": tl["mean_reference"], "pearson_r": tl["pearson_r"] if trace else None,
            "first_errors_paper": paper["first_errors"][:3] if trace else [],
            "first_errors_strict": strict["first_errors"][:3] if trace else []}
    return out


def collect(out: str | os.PathLike) -> dict:
    """Every evaluated point of a study run directory: ``{"spec", "points": [...], "stages"}``."""
    from .runner import eval_path, plan, read_status, run_dir
    from .study import load_study

    out = Path(out)
    spec = load_study(out / "study.toml")
    status = read_status(out)
    points = []
    for stage in plan(spec):
        if stage.kind not in ("eval", "eval_grpo"):
            continue
        path = eval_path(out, stage.arm, stage.seed, stage.examples)
        if not summary_path(path).is_file():
            continue
        summary = json.loads(summary_path(path).read_text())
        step = summary["meta"].get("step")
        trainer = {}
        ckpt = run_dir(out, stage.arm, stage.seed) / "checkpoints" / f"step-{int(step):06d}" / "trainer.json"
        if stage.kind == "eval" and ckpt.is_file():
            trainer = json.loads(ckpt.read_text())
        if stage.kind == "eval_grpo":
            points.append({"arm": stage.arm, "seed": stage.seed, "examples_target": None, "step": step,
                           "grpo": True, "final": False, "eval": str(path.relative_to(out)),
                           "suites": point_record(summary, stage.arm)})
            continue
        points.append({"arm": stage.arm, "seed": stage.seed, "examples_target": stage.examples, "step": step,
                       "examples_seen": trainer.get("examples_seen"), "tokens_seen": trainer.get("tokens_seen"),
                       "final": stage.final, "eval": str(path.relative_to(out)),
                       "suites": point_record(summary, stage.arm)})
    return {"spec": spec, "points": points, "stages": status["stages"]}


def aggregate(points: list[dict], arms: list[str], suites: list[str], final: bool = True,
              examples_target: int | None = None) -> dict:
    """``{arm: {suite: {metric: across_seeds(...)}}}`` over the points of the final evaluation (or of one
    evaluation point)."""
    table: dict = {}
    for arm in arms:
        mine = [p for p in points if p["arm"] == arm
                and (p["final"] if examples_target is None and final else p["examples_target"] == examples_target)]
        table[arm] = {}
        for suite in suites:
            table[arm][suite] = {key: across_seeds([p["suites"].get(suite, {}).get(key) for p in mine])
                                 for key, _, _ in METRICS}
    return table


def curves(points: list[dict], arms: list[str], suites: list[str]) -> dict:
    """Learning-curve data: ``{suite: {arm: [{"examples_target", "examples_seen", "tokens_seen", metric: agg}]}}``
    with examples and tokens seen averaged over seeds, points in training order."""
    out: dict = {s: {} for s in suites}
    points = [p for p in points if not p.get("grpo")]
    for arm in arms:
        targets = sorted({p["examples_target"] for p in points if p["arm"] == arm})
        for suite in suites:
            series = []
            for t in targets:
                at = [p for p in points if p["arm"] == arm and p["examples_target"] == t and suite in p["suites"]]
                if not at:
                    continue
                seen = [p["examples_seen"] for p in at if p["examples_seen"] is not None]
                toks = [p["tokens_seen"] for p in at if p["tokens_seen"] is not None]
                entry = {"examples_target": t, "examples_seen": sum(seen) / len(seen) if seen else float(t),
                         "tokens_seen": sum(toks) / len(toks) if toks else None, "seeds": len(at)}
                for key, _ in CURVE_METRICS:
                    entry[key] = across_seeds([p["suites"][suite].get(key) for p in at])
                series.append(entry)
            out[suite][arm] = series
    return out


# ---------------------------------------------------------------------------------------------------- paragraph
def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def compare_sentence(what: str, suite: str, cells: dict[str, dict | None]) -> str | None:
    """One sentence on which arm leads on `what` in `suite`: an arm is called ahead of another only when their
    intervals do not overlap; otherwise they are called indistinguishable."""
    have = {a: c for a, c in cells.items() if c is not None and c["interval"] is not None}
    if len(have) < 2:
        return None
    order = sorted(have, key=lambda a: -have[a]["mean"])
    leader = order[0]
    lead_iv = have[leader]["interval"]
    ahead = [a for a in order[1:] if not _overlap(lead_iv, have[a]["interval"])]
    tied = [a for a in order[1:] if a not in ahead]
    desc = lambda a: f"`{a}` {_fmt(have[a])}"  # noqa: E731
    if not ahead:
        return (f"On `{suite}`, {what}: no arm is distinguishable from the others (every interval overlaps "
                f"the leader's): " + ", ".join(desc(a) for a in order) + ".")
    text = f"On `{suite}`, {what}: {desc(leader)} is ahead of " + ", ".join(desc(a) for a in ahead)
    text += " (intervals do not overlap)"
    if tied:
        text += "; it is not distinguishable from " + ", ".join(desc(a) for a in tied) + " (intervals overlap)"
    return text + "."


def paragraph(final: dict, arms: list[str], suites: list[str]) -> str:
    """What the final table shows, suite by suite, claiming no lead that the intervals do not support."""
    sentences = []
    for suite in suites:
        plan = compare_sentence("valid plans (%)", suite, {a: final[a][suite]["plan_valid"] for a in arms})
        trace_arms = [a for a in arms if has_trace(a)]
        trace = compare_sentence("strictly valid traces (%)", suite,
                                 {a: final[a][suite]["trace_valid_strict"] for a in trace_arms})
        sentences += [s for s in (plan, trace) if s]
        if len(trace_arms) == 1:
            agg = final[trace_arms[0]][suite]["trace_valid_strict"]
            if agg is not None:
                sentences.append(f"On `{suite}`, the only trace arm `{trace_arms[0]}` has {_fmt(agg)} % strictly "
                                 f"valid traces.")
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------------- writing



def write_study_report(out: str | os.PathLike, plots: bool = True) -> dict:
    """Writes ``OUT/report/`` from a study run directory and returns the results dict (also results.json)."""
    out = Path(out)
    data = collect(out)
    spec, points = data["spec"], data["points"]
    if not points:
        raise ValueError(f"{out}: no evaluation has finished yet; nothing to report")
    arms = [a for a in spec["arms"]["names"] if any(p["arm"] == a for p in points)]
    suites = []
    for p in points:
        suites += [s for s in p["suites"] if s not in suites]
    final = aggregate(points, arms, suites)
    curve = curves(points, arms, suites)
    text = paragraph(final, arms, suites)
    dest = out / "report"
    dest.mkdir(parents=True, exist_ok=True)
    plot_files, note = [], None
    if plots:
        try:
            import matplotlib
            matplotlib.use("Agg")
        except ImportError:
            note = "plots skipped: matplotlib is not installed"
        else:
            plot_files = [_curve_plot(curve[s], s, dest) for s in suites]
    seeds = spec["run"]["seeds"]
    finals = [out / p["eval"] for p in points if p["final"]]
    details = None
    if finals:
        details = build_report(finals, dest / "final", mode=spec.get("eval", {}).get("mode", "paper"), plots=plots)

    L = [f"# Study `{spec['name']}`", "",
         f"{spec['rows']}×{spec['cols']} grid; training corpus {spec['train']['count']:,} "
         f"{spec['train']['generator']} mazes; arms {', '.join(f'`{a}`' for a in arms)}; seeds {seeds}; "
         f"budget {spec['run']['examples']:,} examples seen per run; model `{spec['run']['preset']}`"
         + (f" with {spec['run']['model']}" if spec["run"]["model"] else "") + ".", ""]
    missing = [s.name for s in _planned(spec) if data["stages"].get(s.name, {}).get("state") != "done"
               and s.kind != "report"]
    if missing:
        L += [f"**Incomplete:** {len(missing)} stages not done ({', '.join(missing[:6])}"
              + (", …" if len(missing) > 6 else "") + "). The tables show what exists.", ""]
    L += ["## What the table shows", "", text or "Too few arms with results to compare.", ""]
    interval = ("mean over seeds [95 % Student-t interval across seeds, widened to at least the Wilson interval of "
                "the pooled problems]" if len(seeds) > 1
                else "one seed: rate [95 % Wilson interval over the evaluated problems]")
    L += ["## Final checkpoint", "", f"Cells: {interval}; percent. n/a: the arm has no trace.", ""]
    for key, label, needs_trace in METRICS:
        L += [f"### {label.capitalize()}", ""]
        rows = [[f"`{a}`"] + [("n/a" if needs_trace and not has_trace(a) else _fmt(final[a][s][key]))
                              for s in suites] for a in arms]
        L += md_table(["arm"] + [f"`{s}`" for s in suites], rows) + [""]
    if len(seeds) > 1:
        L += ["### Per run (95 % Wilson intervals)", ""]
        rows = []
        for p in points:
            if p["final"]:
                rows.append([f"`{p['arm']}`", str(p["seed"])]
                            + [format_rate(p["suites"][s]["plan_valid"]) if s in p["suites"] else "—"
                               for s in suites])
        L += ["Plan valid (%):", ""] + md_table(["arm", "seed"] + [f"`{s}`" for s in suites], rows) + [""]

    grpo_points = [p for p in points if p.get("grpo")]
    if grpo_points:
        after = {a: {s: {key: across_seeds([p["suites"].get(s, {}).get(key) for p in grpo_points if p["arm"] == a])
                         for key, _, _ in METRICS} for s in suites} for a in arms
                 if any(p["arm"] == a for p in grpo_points)}
        cfg = spec["grpo"]["config"]
        L += ["## GRPO: before and after", "",
              f"GRPO from each run's last checkpoint: {cfg['steps']} rollout steps of {cfg['prompts']} prompts × "
              f"{cfg['group']} samples, reward {cfg['reward']}, loss {cfg['loss']}, lr {cfg['lr']}; then the same "
              "evaluation as the final checkpoint's.", ""]
        for key, label in (("plan_valid", "plan valid"), ("trace_valid_strict", "trace valid (strict)"),
                           ("trace_valid_paper", "trace valid (paper)")):
            rows = []
            for a in after:
                rows.append([f"`{a}`"] + [_fmt(final[a][s][key]) for s in suites])
                rows.append([f"`{a}` + GRPO"] + [_fmt(after[a][s][key]) for s in suites])
            L += [f"{label.capitalize()}:", ""] + md_table(["arm"] + [f"`{s}`" for s in suites], rows) + [""]
        results_grpo = after
    else:
        results_grpo = None

    L += ["## Learning curves", "",
          "Plan validity and trace validity (both verifier modes) at each evaluation point, against examples seen "
          "and against tokens seen (example tokens, padding excluded: the arms' sequences differ in length, so "
          "equal examples are not equal tokens). Earlier points evaluate fewer problems per suite "
          f"(n_curve = {spec.get('eval', {}).get('n_curve')}) than the last (n = {spec.get('eval', {}).get('n')}).",
          ""]
    for s in suites:
        L += [f"### `{s}`", ""]
        rows = []
        for a in arms:
            for e in curve[s].get(a, []):
                rows.append([f"`{a}`", f"{e['examples_seen']:,.0f}",
                             "—" if e["tokens_seen"] is None else f"{e['tokens_seen']:,.0f}",
                             _fmt(e["plan_valid"]),
                             "n/a" if not has_trace(a) else _fmt(e["trace_valid_paper"]),
                             "n/a" if not has_trace(a) else _fmt(e["trace_valid_strict"])])
        L += md_table(["arm", "examples seen", "tokens seen", "plan valid", "trace valid (paper)",
                        "trace valid (strict)"], rows) + [""]
        for f in plot_files:
            if f.name == f"curves_{slug(s)}.png":
                L += [f"![learning curves {s}]({f.name})", ""]

    L += ["## Trace length: generated vs reference", "",
          "Mean A* operations of the generated traces and of the reference traces at the final checkpoint, and "
          "r = Pearson's correlation between the two over the suite's problems (does a model search longer where "
          "A* does?). Scatter plots per suite in [final/report.md](final/report.md).", ""]
    rows = []
    for a in arms:
        if not has_trace(a):
            continue
        mine = [p for p in points if p["arm"] == a and p["final"]]
        for s in suites:
            vals = [p["suites"][s] for p in mine if s in p["suites"]]
            if not vals:
                continue
            gen = [v["mean_generated_ops"] for v in vals if v["mean_generated_ops"] is not None]
            ref = [v["mean_reference_ops"] for v in vals if v["mean_reference_ops"] is not None]
            rs = [v["pearson_r"] for v in vals if v["pearson_r"] is not None]
            rows.append([f"`{a}`", f"`{s}`", f"{sum(gen) / len(gen):.1f}" if gen else "—",
                         f"{sum(ref) / len(ref):.1f}" if ref else "—",
                         f"{sum(rs) / len(rs):.3f}" if rs else "—"])
    L += md_table(["arm", "suite", "generated ops", "reference ops", "r"], rows) + [""]

    L += ["## First errors (final checkpoint, first seed)", "",
          "The two verifier modes can name different first errors for one response: strict checks more rules "
          "(exact g and h, exactly the neighbours A* creates, nothing after the goal), so its first error can come "
          "earlier in the trace than the first rule the paper's validator checks is broken.", ""]
    rows = []
    for p in points:
        if p["final"] and p["seed"] == seeds[0] and has_trace(p["arm"]):
            for s in suites:
                rec = p["suites"].get(s)
                if rec:
                    rows.append([f"`{p['arm']}`", f"`{s}`",
                                 ", ".join(f"{e} {k}" for e, k in rec["first_errors_paper"]) or "none",
                                 ", ".join(f"{e} {k}" for e, k in rec["first_errors_strict"]) or "none"])
    L += md_table(["arm", "suite", "paper", "strict"], rows) + [""]

    L += ["## Stages", ""]
    rows = [[s.name, data["stages"].get(s.name, {}).get("state", "missing"),
             clock(data["stages"][s.name]["wall_s"]) if "wall_s" in data["stages"].get(s.name, {}) else "—"]
            for s in _planned(spec) if s.kind != "report"]
    L += md_table(["stage", "state", "wall time"], rows) + [""]
    if note:
        L += [f"_{note}._", ""]
    with atomic_file(dest / "report.md", "w") as f:
        f.write("\n".join(L).rstrip("\n") + "\n")
    write_index(dest, "\n".join(L))  # the gallery of failures is in final/index.html
    results = {"study": {k: v for k, v in spec.items() if k != "source"}, "arms": arms, "suites": suites,
               "final": final, "after_grpo": results_grpo, "curves": curve, "points": points, "paragraph": text,
               "stages": data["stages"], "details": str(details["report"].relative_to(dest)) if details else None}
    with atomic_file(dest / "results.json", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    return results


def _planned(spec: dict):
    from .runner import plan
    return plan(spec)





def _curve_plot(series_by_arm: dict, suite: str, dest: Path) -> Path:
    """Plan and trace validity against examples seen (top) and tokens seen (bottom), with interval bars."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(CURVE_METRICS), figsize=(5 * len(CURVE_METRICS), 8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, xkey, xlabel in ((0, "examples_seen", "examples seen"), (1, "tokens_seen", "tokens seen")):
        for col, (key, label) in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            for k, (arm, series) in enumerate(series_by_arm.items()):
                pts = [e for e in series if e[key] is not None and e[xkey] is not None]
                if not pts:
                    continue
                x = [e[xkey] for e in pts]
                y = [e[key]["mean"] for e in pts]
                lo = [e[key]["mean"] - (e[key]["interval"] or [e[key]["mean"]] * 2)[0] for e in pts]
                hi = [(e[key]["interval"] or [e[key]["mean"]] * 2)[1] - e[key]["mean"] for e in pts]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, color=colors[k % len(colors)], label=arm)
            ax.set_ylim(-2, 102)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{label}, %")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{suite}: {label}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = dest / f"curves_{slug(suite)}.png"
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path
