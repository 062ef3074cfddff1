"""`reasonless report`: numbers of the Markdown tables from two small eval files, plots, determinism, CLI."""
import json

import pytest

from reasonless.cli import main
from reasonless.evaluate import summary_path
from reasonless.report import build_report


def _row(suite, index, plan, trace_paper, trace_strict, ref_ops, gen_ops, hit=False, error="goal_not_reached"):
    def mode(trace):
        return {"plan_valid": plan, "plan_optimal": plan, "trace_valid": trace,
                "first_error": None if trace else error, "first_error_at": None if trace else 0}
    return {"suite": suite, "index": index, "response": "reasoning end", "hit_budget": hit, "generated_tokens": 2,
            "budget": 100, "generated_ops": gen_ops, "reference_ops": ref_ops, "plan_len": 3, "optimal_plan_len": 3,
            "paper": mode(trace_paper), "strict": mode(trace_strict)}


def _write(path, rows, meta):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary_path(path).write_text(json.dumps({"format": "reasonless-eval", "meta": meta, "suites": {}}))


@pytest.fixture()
def evals(tmp_path):
    # arm "correct", suite s1: 10 examples, plans valid 0-7, paper traces valid 0-5, strict 0-4; suite s2: 4
    # examples, plans valid 0-1, paper trace valid 0 only.
    a = [_row("s1", i, i < 8, i < 6, i < 5, ref_ops=10 + i, gen_ops=10 + i, hit=i == 9) for i in range(10)]
    a += [_row("s2", i, i < 2, i < 1, i < 1, ref_ops=5 + i, gen_ops=5) for i in range(4)]
    # arm "none", suite s1 only: plans valid 0-4, no valid trace.
    b = [_row("s1", i, i < 5, False, False, ref_ops=10 + i, gen_ops=0) for i in range(10)]
    _write(tmp_path / "a.jsonl", a, {"arm": "correct", "run_name": "run-a", "step": 100, "mode": "paper",
                                     "sampling": {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}})
    _write(tmp_path / "b.jsonl", b, {"arm": "none", "run_name": "run-b", "step": 100, "mode": "paper"})
    return tmp_path / "a.jsonl", tmp_path / "b.jsonl"


def test_markdown_numbers(evals, tmp_path):
    result = build_report(evals, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    lines = md.splitlines()

    def table_after(title):
        at = lines.index(title)
        return lines[at + 2:at + 6]

    # Wilson 95 %: 8/10 → [49.0, 94.3], 2/4 → [15.0, 85.0], 5/10 → [23.7, 76.3]
    assert table_after("## Plan valid (%)") == [
        "| arm | s1 | s2 |", "|---|---:|---:|",
        "| correct | 80.0 [49.0, 94.3] | 50.0 [15.0, 85.0] |",
        "| none | 50.0 [23.7, 76.3] | — |"]
    # 6/10 → [31.3, 83.2], 1/4 → [4.6, 69.9]; the solution-only arm has no trace: n/a, not 0 %
    assert table_after("## Trace valid (%, paper)")[2:] == [
        "| correct | 60.0 [31.3, 83.2] | 25.0 [4.6, 69.9] |", "| none | n/a | — |"]
    # among valid plans: 6/8 → [40.9, 92.9], 1/2 → [9.5, 90.5]
    assert table_after("## Trace valid among valid plans (%, paper)")[2:] == [
        "| correct | 75.0 [40.9, 92.9] | 50.0 [9.5, 90.5] |", "| none | n/a | — |"]
    assert "n/a: none has no trace (the solution-only arm)." in md
    # strict: 5/10 → [23.7, 76.3]
    assert table_after("## Trace valid (%, strict)")[2] == "| correct | 50.0 [23.7, 76.3] | 25.0 [4.6, 69.9] |"
    # suite detail: n, hit budget 1/10, mean lengths 14.5 / 14.5 and r = 1 for correct; r undefined for none
    detail = [ln for ln in lines if ln.startswith("| correct | 10 |")][0].split(" | ")
    assert detail[-4:] == ["10.0 [1.8, 40.4]", "14.5", "14.5", "1.000 |"]
    assert [ln for ln in lines if ln.startswith("| none | 10 |")][0].endswith("| n/a | 14.5 | n/a |")
    # validity by length: quantile bins of s1's reference lengths 10..19 → 10–11, 12–13, 14–15, 16–17, 18–19
    at = lines.index("Trace valid (paper, %) by reference trace length (operations):")
    assert lines[at + 2] == "| arm | 10–11 | 12–13 | 14–15 | 16–17 | 18–19 |"
    assert lines[at + 4] == "| correct | 100.0 (n=2) | 100.0 (n=2) | 100.0 (n=2) | 0.0 (n=2) | 0.0 (n=2) |"
    assert "First errors (paper): correct: goal_not_reached 4; none: goal_not_reached 10" in md
    assert result["metrics"]["correct"]["s1"]["modes"]["paper"]["plan_valid"]["k"] == 8

    strict = build_report(evals, tmp_path / "rep2", mode="strict", plots=False)
    md2 = (tmp_path / "rep2" / "report.md").read_text()
    assert "## Trace valid (%, strict)" in md2 and "## Trace valid (%, paper)" in md2
    assert strict["mode"] == "strict" and strict["plots"] == []


def test_plots_are_png_and_output_is_deterministic(evals, tmp_path):
    import matplotlib.image

    first = build_report(evals, tmp_path / "one")
    second = build_report(evals, tmp_path / "two")
    names = sorted(p.name for p in first["plots"])
    assert names == ["lengths_s1.png", "lengths_s2.png", "validity_s1.png", "validity_s2.png"]
    for p in first["plots"]:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(p).ndim == 3
        assert (tmp_path / "two" / p.name).read_bytes() == data
    assert (tmp_path / "one" / "report.md").read_text() == (tmp_path / "two" / "report.md").read_text()
    assert "![lengths_s1](lengths_s1.png)" in (tmp_path / "one" / "report.md").read_text()
    assert second["plot_note"] is None


def test_without_matplotlib(evals, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = build_report(evals, tmp_path / "r")
    assert result["plots"] == [] and "matplotlib is not installed" in result["plot_note"]
    assert "matplotlib is not installed" in (tmp_path / "r" / "report.md").read_text()


def test_labels_stay_unique(evals, tmp_path):
    a, _ = evals
    b = tmp_path / "a2.jsonl"
    b.write_text(a.read_text())
    meta = json.loads(summary_path(a).read_text())
    meta["meta"]["run_name"] = "run-c"
    summary_path(b).write_text(json.dumps(meta))
    result = build_report([a, b], tmp_path / "r", plots=False)
    assert sorted(result["metrics"]) == ["correct · run-a", "correct · run-c"]


def test_cli_report(evals, tmp_path, capsys):
    code = main(["report", *map(str, evals), "--out", str(tmp_path / "cli")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "report.md" in out and "4 plots" in out
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    assert exit_.value.code == 0 and "EVAL.jsonl" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "query"}\n')
    for argv, message in [([str(tmp_path / "missing.jsonl")], "no such eval file"),
                          ([str(bad)], "bad.jsonl:1: not an eval row")]:
        code = main(["report", *argv, "--out", str(tmp_path / "x")])
        assert code == 2 and message in capsys.readouterr().err
