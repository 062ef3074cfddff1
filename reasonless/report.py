"""`reasonless report`: compare evaluations (arms × suites) in a Markdown file with PNG plots.

Every number is recomputed from the per-example eval JSONL with :mod:`reasonless.metrics` (the same functions
`reasonless eval` used), so a report cannot disagree with the rows it summarises; the ``.summary.json`` beside each
JSONL only supplies the labels (arm, run, checkpoint, sampling) and the primary verifier mode. The output is
deterministic: inputs keep their command-line order, suites their order of first appearance, the Markdown holds no
time stamps and the PNG files no software version.

Plots (when matplotlib imports; it is optional): per suite, generated against reference trace length (operations)
with Pearson's r per arm, and trace validity by bins of the reference length (quantile bins over the suite's
examples, shared by every arm).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_file
from .evaluate import metrics_of_rows, summary_path
from .metrics import format_rate, length_bins, validity_by_bin
from .verifier import MODES, jsonl_objects

N_BINS = 5


@dataclass
class Evaluation:
    path: Path
    meta: dict
    rows: list[dict]
    label: str = ""
    suites: dict[str, list[dict]] = field(default_factory=dict)


def read_eval(path: str | os.PathLike) -> Evaluation:
    """An eval JSONL and the metadata of its summary file (empty when the summary is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such eval file")
    rows = []
    for lineno, row in jsonl_objects(path):
        missing = [k for k in ("suite", "hit_budget", "generated_ops", "reference_ops", *MODES)
                   if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}:{lineno}: not an eval row (missing {', '.join(missing)}); eval files are "
                             f"written by `reasonless eval`")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    meta = {}
    sp = summary_path(path)
    if sp.is_file():
        try:
            meta = json.loads(sp.read_text()).get("meta", {})
        except ValueError as err:
            raise ValueError(f"{sp}: not valid JSON ({err})") from None
    ev = Evaluation(path, meta, rows)
    for row in rows:
        ev.suites.setdefault(row["suite"], []).append(row)
    return ev


def _labels(evals: Sequence[Evaluation]) -> None:
    """Arm names, made unique with the run's name and then the file's stem where they collide."""
    base = [e.meta.get("arm") or e.meta.get("run_name") or e.path.stem for e in evals]
    labels = list(base)
    for make in (lambda e, b: f"{b} · {e.meta.get('run_name', e.path.stem)}", lambda e, b: f"{b} · {e.path.name}",
                 lambda e, b: f"{b} · #{evals.index(e) + 1}"):
        dupes = {l for l in labels if labels.count(l) > 1}
        if not dupes:
            break
        labels = [make(e, l) if l in dupes else l for e, l in zip(evals, labels)]
    for e, l in zip(evals, labels):
        e.label = l


def md_table(header: list[str], body: list[list[str]], numeric: bool = True) -> list[str]:
    """A Markdown table; numeric tables right-align every column but the first."""
    esc = [[c.replace("|", "\\|") for c in row] for row in [header] + body]
    lines = ["| " + " | ".join(esc[0]) + " |",
             "|" + "|".join("---" if k == 0 or not numeric else "---:" for k in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return lines


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "suite"


def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike, mode: str | None = None,
                 plots: bool = True, gallery: int = 6) -> dict:
    """Writes ``out/report.md`` (and PNG plots when matplotlib imports and `plots`) and ``out/index.html`` (the same
    tables and plots, and a gallery of up to `gallery` rendered failures per kind, suite and evaluation; see
    :mod:`reasonless.html_report`). Returns ``{"report": path, "index": path, "plots": [paths], "plot_note": reason
    plots are missing or None, "metrics": {label: {suite: metrics}}}``."""
    if not paths:
        raise ValueError("no eval file given")
    evals = [read_eval(p) for p in paths]
    _labels(evals)
    if mode is None:
        mode = evals[0].meta.get("mode", "paper")
    if mode not in MODES:
        raise ValueError(f"unknown verifier mode {mode!r}; choose 'paper' or 'strict'")
    other = [m for m in MODES if m != mode]
    suites: list[str] = []
    for e in evals:
        suites += [s for s in e.suites if s not in suites]
    metrics = {e.label: {s: metrics_of_rows(rows) for s, rows in e.suites.items()} for e in evals}
    # The solution-only arm writes no trace: its trace columns are not applicable, not 0 %.
    traceless = {e.label for e in evals if e.meta.get("arm") == "none"}

    # Reference lengths per suite example, pooled over the evaluations (they share the suite's examples).
    refs: dict[str, dict] = {s: {} for s in suites}
    for e in evals:
        for s, rows in e.suites.items():
            for r in rows:
                refs[s].setdefault(r.get("index", len(refs[s])), r["reference_ops"])
    edges = {s: length_bins(np.array(sorted(refs[s].values())), N_BINS) for s in suites}
    binned = {e.label: {s: validity_by_bin([r["reference_ops"] for r in rows],
                                           [r[mode]["trace_valid"] for r in rows], edges[s])
                        for s, rows in e.suites.items()} for e in evals}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_files: dict[str, list[Path]] = {}
    note = None
    if plots:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # noqa: F401
        except ImportError:
            note = "plots skipped: matplotlib is not installed (pip install matplotlib)"
        else:
            plot_files = _plots([e for e in evals if e.label not in traceless], suites, metrics, binned, edges, mode,
                                out)
    else:
        note = "plots not requested"

    L = ["# Evaluation report", "",
         f"Verifier mode **{mode}**" + (f" (also shown: {', '.join(other)})" if other else "") + ". Rates in percent "
         "with 95 % Wilson score intervals [low, high]; n = evaluated examples of the suite.", ""]
    L += ["## Evaluations", ""]
    body = []
    for e in evals:
        m = e.meta
        sampling = m.get("sampling") or {}
        samp = ", ".join(f"{k}={v}" for k, v in sampling.items()) if sampling else "—"
        body.append([e.label, str(m.get("arm") or "—"), str(m.get("run_name") or "—"), str(m.get("step") or "—"),
                     samp, e.path.name])
    L += md_table(["label", "arm", "run", "step", "sampling", "file"], body, numeric=False) + [""]

    def pivot(title: str, pick, trace: bool = True) -> None:
        L.extend([f"## {title}", ""])
        rows = [[e.label] + [("n/a" if trace and e.label in traceless else format_rate(pick(metrics[e.label][s])))
                             if s in metrics[e.label] else "—" for s in suites] for e in evals]
        L.extend(md_table(["arm"] + suites, rows) + [""])

    pivot("Plan valid (%)", lambda s: s["modes"][mode]["plan_valid"], trace=False)
    pivot(f"Trace valid (%, {mode})", lambda s: s["modes"][mode]["trace_valid"])
    pivot(f"Trace valid among valid plans (%, {mode})", lambda s: s["modes"][mode]["trace_valid_among_valid_plans"])
    for m in other:
        pivot(f"Trace valid (%, {m})", lambda s, m=m: s["modes"][m]["trace_valid"])
    if traceless:
        L += [f"n/a: {', '.join(sorted(traceless))} has no trace (the solution-only arm).", ""]

    for s in suites:
        L += [f"## Suite `{s}`", ""]
        header = ["arm", "n", "plan valid", "plan optimal", f"trace valid ({mode})"]
        header += [f"trace valid ({m})" for m in other]
        header += ["trace valid among valid plans", "hit budget", "mean ops generated", "mean ops reference",
                   "r (ops)"]
        body = []
        for e in evals:
            sm = metrics[e.label].get(s)
            if sm is None:
                continue
            pm, tl = sm["modes"][mode], sm["trace_length"]
            r = tl["pearson_r"]
            na = e.label in traceless
            trace_cell = lambda rate_: "n/a" if na else format_rate(rate_)  # noqa: E731
            body.append([e.label, str(sm["n"]), format_rate(pm["plan_valid"]), format_rate(pm["plan_optimal"]),
                         trace_cell(pm["trace_valid"])]
                        + [trace_cell(sm["modes"][m]["trace_valid"]) for m in other]
                        + [trace_cell(pm["trace_valid_among_valid_plans"]), format_rate(sm["hit_budget"]),
                           "n/a" if na else f"{tl['mean_generated']:.1f}", f"{tl['mean_reference']:.1f}",
                           "n/a" if na else "—" if r is None else f"{r:.3f}"])
        L += md_table(header, body) + [""]
        L += [f"Trace valid ({mode}, %) by reference trace length (operations):", ""]
        bins = [f"{lo}–{hi - 1}" for lo, hi in zip(edges[s][:-1].tolist(), edges[s][1:].tolist())]
        body = [[e.label] + [f"{format_rate(b, ci=False)} (n={b['n']})" for b in binned[e.label][s]]
                for e in evals if s in binned[e.label] and e.label not in traceless]
        L += md_table(["arm"] + bins, body) + [""]
        L += ["First errors (" + mode + "): " + "; ".join(
            f"{e.label}: " + (", ".join(f"{name} {k}" for name, k in metrics[e.label][s]["modes"][mode]
                                        ["first_errors"][:3]) or "none")
            for e in evals if s in metrics[e.label]), ""]
        for p in plot_files.get(s, []):
            L += [f"![{p.stem}]({p.name})", ""]
    if note:
        L += [f"_{note}._", ""]
    report = out / "report.md"
    with atomic_file(report, "w") as f:
        f.write("\n".join(L).rstrip("\n") + "\n")
    from .html_report import gallery as failure_gallery, write_index

    index = write_index(out, "\n".join(L), failure_gallery(evals, suites, mode, out, gallery, traceless)
                        if gallery > 0 else "")
    return {"report": report, "index": index, "plots": [p for s in suites for p in plot_files.get(s, [])],
            "plot_note": note, "metrics": metrics, "mode": mode}


def _plots(evals, suites, metrics, binned, edges, mode, out: Path) -> dict[str, list[Path]]:
    import matplotlib.pyplot as plt

    files: dict[str, list[Path]] = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    save = dict(dpi=100, metadata={"Software": None})  # no version string: the same inputs give the same bytes
    for s in suites:
        fig, ax = plt.subplots(figsize=(6, 5))
        hi = 1
        for k, e in enumerate(evals):
            rows = e.suites.get(s)
            if not rows:
                continue
            ref = np.array([r["reference_ops"] for r in rows])
            gen = np.array([r["generated_ops"] for r in rows])
            hi = max(hi, int(ref.max()), int(gen.max()))
            r = metrics[e.label][s]["trace_length"]["pearson_r"]
            ax.scatter(ref, gen, s=10, alpha=0.6, color=colors[k % len(colors)],
                       label=f"{e.label} (r = {'—' if r is None else f'{r:.3f}'})")
        ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="generated = reference")
        ax.set_xlabel("reference trace length (A* operations)")
        ax.set_ylabel("generated trace length (operations)")
        ax.set_title(f"{s}: generated vs reference trace length")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"lengths_{slug(s)}.png"
        fig.savefig(path, **save)
        plt.close(fig)
        files[s] = [path]

        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{lo}–{hi - 1}" for lo, hi in zip(edges[s][:-1].tolist(), edges[s][1:].tolist())]
        x = np.arange(len(labels))
        for k, e in enumerate(evals):
            bins = binned[e.label].get(s)
            if not bins:
                continue
            have = [i for i, b in enumerate(bins) if b["pct"] is not None]
            y = np.array([bins[i]["pct"] for i in have])
            err = np.array([[bins[i]["pct"] - bins[i]["ci95"][0], bins[i]["ci95"][1] - bins[i]["pct"]]
                            for i in have]).T.reshape(2, -1)
            ax.errorbar(x[have] + 0.05 * (k - (len(evals) - 1) / 2), y, yerr=err, marker="o", capsize=3,
                        color=colors[k % len(colors)], label=e.label)
        ax.set_xticks(x, labels)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("reference trace length (A* operations)")
        ax.set_ylabel(f"trace valid ({mode}), %")
        ax.set_title(f"{s}: trace validity by reference length (95 % CI)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"validity_{slug(s)}.png"
        fig.savefig(path, **save)
        plt.close(fig)
        files[s].append(path)
    return files
