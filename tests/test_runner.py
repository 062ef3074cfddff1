"""`reasonless study run` / `study status` and the study results (seed aggregation, curves, paragraph)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasonless.cli import main
from reasonless.results import across_seeds, compare_sentence, curves, paragraph, t975
from reasonless.runner import plan, read_status
from reasonless.study import load_study

MICRO = """
[study]
name = "micro"
rows = 6
cols = 6

[train]
generator = "wilson"
count = 400
seed = 1

[[test]]
generator = "wilson"
count = 60
seed = 1001

[arms]
names = ["correct", "none"]
seed = 7

[run]
seeds = [0]
examples = {examples}
eval_every = {every}
seq_len = 512
rows = 2
lr = 3e-3
warmup = 5

[eval]
n = 6
n_curve = 3
"""


def rate(k, n):
    from reasonless.metrics import rate as r
    return r(k, n)


# ---------------------------------------------------------------------------------------------------- aggregation
def test_across_seeds_matches_hand_computed_t_interval():
    agg = across_seeds([rate(40, 100), rate(50, 100), rate(60, 100)])
    assert agg["mean"] == pytest.approx(50.0)
    # sd = 10, t(0.975, 2) = 4.303: half-width 4.303 * 10 / sqrt(3) = 24.844
    assert agg["ci95"] == pytest.approx([25.156, 74.844], abs=1e-3)
    assert agg["interval"] == pytest.approx(agg["ci95"])  # wider than the pooled Wilson interval of 150/300
    assert agg["per_seed"] == [40.0, 50.0, 60.0] and agg["seeds"] == 3


def test_agreeing_seeds_keep_the_pooled_wilson_width():
    agg = across_seeds([rate(50, 100), rate(50, 100)])
    assert agg["ci95"] == pytest.approx([50.0, 50.0])
    assert agg["interval"] == pytest.approx(rate(100, 200)["ci95"])
    assert agg["interval"][0] < 45 and agg["interval"][1] > 55


def test_one_seed_uses_its_wilson_interval_and_missing_rates_are_none():
    agg = across_seeds([rate(3, 10)])
    assert agg["ci95"] is None and agg["interval"] == pytest.approx(rate(3, 10)["ci95"])
    assert across_seeds([None, rate(0, 0)]) is None


def test_t_quantiles():
    assert t975(1) == pytest.approx(12.706) and t975(4) == pytest.approx(2.776)
    assert t975(100) == pytest.approx(1.96, abs=1e-2)
    with pytest.raises(ValueError):
        t975(0)


# ---------------------------------------------------------------------------------------------------- paragraph
def cell(mean, lo, hi):
    return {"mean": mean, "interval": [lo, hi]}


def test_paragraph_never_claims_a_lead_the_intervals_do_not_support():
    text = compare_sentence("valid plans (%)", "wilson", {"correct": cell(30, 20, 40), "swapped": cell(25, 15, 35)})
    assert "ahead" not in text and "no arm is distinguishable" in text
    text = compare_sentence("valid plans (%)", "wilson", {"correct": cell(30, 25, 35), "swapped": cell(10, 5, 15),
                                                          "none": cell(33, 28, 38)})
    # `none` leads; it is ahead of swapped only; correct overlaps it
    assert text.startswith("On `wilson`, valid plans (%): `none` 33.0 [28.0, 38.0] is ahead of `swapped`")
    assert "not distinguishable from `correct`" in text
    assert compare_sentence("x", "s", {"correct": cell(1, 0, 2)}) is None


def test_paragraph_skips_trace_claims_for_the_trace_free_arm():
    agg = lambda m, lo, hi: {"mean": m, "interval": [lo, hi]}  # noqa: E731
    final = {"correct": {"s": {"plan_valid": agg(50, 45, 55), "trace_valid_strict": agg(40, 35, 45)}},
             "none": {"s": {"plan_valid": agg(20, 15, 25), "trace_valid_strict": None}}}
    text = paragraph(final, ["correct", "none"], ["s"])
    assert "`correct` 50.0 [45.0, 55.0] is ahead of `none` 20.0 [15.0, 25.0]" in text
    assert "only trace arm `correct` has 40.0 [35.0, 45.0] % strictly valid traces" in text
    assert "`none` 20.0" not in text.split("strictly")[1]


# ---------------------------------------------------------------------------------------------------- curves
def test_learning_curve_data_averages_seeds_in_training_order():
    def point(arm, seed, target, seen, tokens, k):
        return {"arm": arm, "seed": seed, "examples_target": target, "examples_seen": seen, "tokens_seen": tokens,
                "final": target == 200,
                "suites": {"w": {"plan_valid": rate(k, 10), "trace_valid_paper": None if arm == "none" else rate(k, 10),
                                 "trace_valid_strict": None}}}
    pts = [point("correct", 1, 200, 202, 2000, 6), point("correct", 0, 100, 98, 1000, 2),
           point("correct", 0, 200, 198, 1900, 4), point("none", 0, 100, 101, 300, 5)]
    c = curves(pts, ["correct", "none"], ["w"])
    series = c["w"]["correct"]
    assert [e["examples_target"] for e in series] == [100, 200]
    assert series[1]["examples_seen"] == 200 and series[1]["tokens_seen"] == 1950 and series[1]["seeds"] == 2
    assert series[1]["plan_valid"]["mean"] == pytest.approx(50.0)
    assert series[0]["trace_valid_strict"] is None
    assert c["w"]["none"][0]["trace_valid_paper"] is None and c["w"]["none"][0]["plan_valid"]["mean"] == 50.0


# ---------------------------------------------------------------------------------------------------- study file
def test_study_file_run_section_is_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(MICRO.format(examples=200, every=100))
    spec = load_study(path)
    assert spec["run"]["points"] == [100, 200] and spec["eval"]["n_curve"] == 3
    names = [s.name for s in plan(spec)]
    assert names[0] == "build" and names[-1] == "report"
    assert names[1:4] == ["train correct seed 0", "eval correct seed 0 @ 100", "eval correct seed 0 @ 200"]
    path.write_text(MICRO.format(examples=200, every=300))
    with pytest.raises(ValueError, match=r"\[run\] eval_every"):
        load_study(path)
    path.write_text(MICRO.format(examples=200, every=100).replace("seeds = [0]", "seeds = [0, 0]"))
    with pytest.raises(ValueError, match=r"\[run\] seeds"):
        load_study(path)
    path.write_text(MICRO.format(examples=200, every=100) + "\n[grpo]\nsteps = 3\nbogus = 1\n")
    with pytest.raises(ValueError, match=r"\[grpo\] bogus: unknown key"):
        load_study(path)


def test_shipped_studies_load():
    root = Path(__file__).parent.parent / "studies"
    for name in ("tiny", "cpu", "gpu-10min", "paper"):
        spec = load_study(root / f"{name}.toml")
        assert spec["run"]["examples"] > 0 and plan(spec)[-1].name == "report"


# ---------------------------------------------------------------------------------------------------- end to end
def _run(study, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "reasonless", "study", "run", str(study), "--out", str(out),
                             "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _final_table(out):
    results = json.loads((out / "report" / "results.json").read_text())
    return results["final"], [(p["arm"], p["examples_target"], p["step"], p["examples_seen"]) for p in results["points"]]


@pytest.fixture(scope="module")
def micro_study(tmp_path_factory):
    """An uninterrupted micro study (the reference for the kill test)."""
    tmp = tmp_path_factory.mktemp("study")
    (tmp / "s.toml").write_text(MICRO.format(examples=1200, every=400))
    proc = _run(tmp / "s.toml", tmp / "ref")
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    return tmp


def test_study_run_writes_report_and_rerun_is_a_noop(micro_study, capsys):
    out = micro_study / "ref"
    report = (out / "report" / "report.md").read_text()
    for section in ("## What the table shows", "### Plan valid", "## Learning curves", "## Trace length",
                    "## Stages"):
        assert section in report
    assert "| `none` | n/a |" in report  # no trace, no trace-validity number
    assert (out / "report" / "curves_wilson.png").stat().st_size > 1000
    results = json.loads((out / "report" / "results.json").read_text())
    assert {p["arm"] for p in results["points"]} == {"correct", "none"}
    assert [p["examples_target"] for p in results["points"] if p["arm"] == "correct"] == [400, 800, 1200]
    seen = [p["examples_seen"] for p in results["points"] if p["arm"] == "none"]
    assert seen == sorted(seen) and abs(seen[-1] - 1200) < 60
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["study", "run", str(micro_study / "s.toml"), "--out", str(out), "--quiet"]) == 0
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = [p for p in after if before.get(p) != after[p]]
    assert changed == [], changed
    assert main(["study", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train correct seed 0" in text and "done 10" in text


def test_killed_study_resumes_to_the_same_results(micro_study):
    out = micro_study / "killed"
    proc = _run(micro_study / "s.toml", out)
    metrics = out / "runs" / "correct" / "seed0" / "metrics.jsonl"
    deadline = time.time() + 600
    # Kill once training is past its first kept checkpoint, in the middle of a stage.
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(metrics.read_text().splitlines()) > 100:
                break
        except OSError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = read_status(out)
    assert status["stages"]["train correct seed 0"]["state"] == "running"
    proc = _run(micro_study / "s.toml", out, "--stop-after", "build")
    proc.communicate(timeout=60)  # a rerun may stop early; the interrupted stage is still to do
    assert read_status(out)["stages"]["train correct seed 0"]["state"] == "running"
    proc = _run(micro_study / "s.toml", out)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert _final_table(out) == _final_table(micro_study / "ref")


def test_a_different_study_is_refused_in_the_same_directory(micro_study, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(MICRO.format(examples=600, every=200))
    assert main(["study", "run", str(other), "--out", str(micro_study / "ref"), "--quiet"]) == 2
    assert "different study" in capsys.readouterr().err


def test_study_names_must_be_strings(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(MICRO.format(examples=200, every=100).replace('name = "micro"', "name = 5"))
    with pytest.raises(ValueError, match=r"\[study\] name: must be a string"):
        load_study(path)
    path.write_text(MICRO.format(examples=200, every=100).replace('generator = "wilson"\ncount = 60',
                                                                   'name = 7\ngenerator = "wilson"\ncount = 60'))
    with pytest.raises(ValueError, match=r"\[\[test\]\] #1 name: must be a string"):
        load_study(path)


def test_grpo_stage_runs_after_training_and_reports_before_and_after(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(MICRO.format(examples=300, every=300).replace('names = ["correct", "none"]', 'names = ["correct"]')
                     + '\n[grpo]\narms = ["correct"]\nsteps = 2\nprompts = 4\ngroup = 2\nbudget = 64\n'
                       'reward = { plan_valid = 1.0, trace_valid_strict = 0.5 }\n')
    spec = load_study(study)
    assert [s.name for s in plan(spec)][1:5] == ["train correct seed 0", "eval correct seed 0 @ 300",
                                                 "grpo correct seed 0", "eval grpo correct seed 0"]
    assert main(["study", "run", str(study), "--out", str(tmp_path / "o"), "--quiet", "--threads", "1"]) == 0
    metrics = [json.loads(l) for l in (tmp_path / "o" / "grpo" / "correct" / "seed0" / "metrics.jsonl").open()]
    assert [m["rollout_step"] for m in metrics] == [1, 2]
    report = (tmp_path / "o" / "report" / "report.md").read_text()
    assert "## GRPO: before and after" in report and "| `correct` + GRPO |" in report
    results = json.loads((tmp_path / "o" / "report" / "results.json").read_text())
    assert results["after_grpo"]["correct"]["wilson"]["plan_valid"]["seeds"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text(MICRO.format(examples=300, every=300) + '\n[grpo]\narms = ["none"]\n')
    with pytest.raises(ValueError, match=r"\[grpo\] arms"):
        load_study(bad)
    bad.write_text(MICRO.format(examples=300, every=300) + '\n[grpo]\nloss = "ppo"\n')
    with pytest.raises(ValueError, match=r"\[grpo\].*loss"):
        load_study(bad)
