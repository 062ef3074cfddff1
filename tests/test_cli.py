import json
import subprocess
import sys

import numpy as np
import pytest

from reasonless.cli import main
from reasonless.corpus import Corpus


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_stats_export_import_merge(tmp_path, capsys):
    c = tmp_path / "c"
    code, out, err = run(capsys, "generate", "--generator", "searchformer", "--count", 120, "--rows", 12, "--cols",
                         17, "--seed", 4, "--out", c, "--param", "min_plan=15", "--shard-size", 50)
    assert code == 0, err
    assert "120 examples" in out and "examples/s" not in out and "/s" in err  # progress bar on stderr
    corpus = Corpus(c)
    assert corpus.manifest["params"]["min_plan"] == 15
    assert corpus.manifest["command"].startswith("reasonless generate --generator searchformer")
    assert all(len(corpus[i].plan) >= 15 for i in range(0, 120, 17))

    code, out, _ = run(capsys, "stats", c)
    assert code == 0 and "total_tokens" in out and "120 examples" in out
    code, out, _ = run(capsys, "stats", c, "--json", "--arm", "none")
    summary = json.loads(out)
    assert summary["trace_tokens"]["max"] == 0 and summary["examples"] == 120

    code, out, _ = run(capsys, "export", c, "--format", "jsonl", "--out", tmp_path / "c.jsonl", "--quiet")
    assert code == 0 and len((tmp_path / "c.jsonl").read_text().splitlines()) == 120
    code, out, _ = run(capsys, "export", c, "--format", "tokens", "--arm", "none", "--out", tmp_path / "tok")
    assert code == 0 and np.load(tmp_path / "tok" / "offsets.npy").shape == (121,)

    code, out, _ = run(capsys, "import", tmp_path / "c.jsonl", "--out", tmp_path / "back", "--rows", 12, "--cols",
                       17, "--quiet")
    assert code == 0 and "identical to ours (fifo): 120/120" in out

    for k in range(2):
        code, _, err = run(capsys, "generate", "--generator", "searchformer", "--count", 120, "--rows", 12, "--cols",
                           17, "--seed", 4, "--out", tmp_path / f"p{k}", "--param", "min_plan=15", "--shard-size",
                           50, "--shard", f"{k}/2")
        assert code == 0 and "merge" in err
    code, out, _ = run(capsys, "merge", tmp_path / "p0", tmp_path / "p1", "--out", tmp_path / "m")
    assert code == 0 and "3 shards" in out
    assert Corpus(tmp_path / "m")[119].text() == corpus[119].text()


@pytest.mark.parametrize("argv,message", [
    (["generate", "--generator", "maze", "--count", "5", "--out", "{d}/x"], "maze"),
    (["generate", "--generator", "drunkards_walk", "--count", "5", "--out", "{d}/x", "--param", "coverage=2"],
     "coverage"),
    (["generate", "--generator", "wilson", "--count", "5", "--out", "{d}/x", "--param", "coverage"], "KEY=VALUE"),
    (["generate", "--generator", "wilson", "--count", "0", "--out", "{d}/x"], "count"),
    (["generate", "--generator", "wilson", "--count", "5", "--rows", "65", "--out", "{d}/x"], "rows"),
    (["generate", "--generator", "wilson", "--count", "5", "--out", "{d}/x", "--shard", "1-2"], "K/N"),
    (["stats", "{d}/nothing"], "no manifest.json"),
    (["import", "{d}/missing.jsonl", "--out", "{d}/y"], "missing.jsonl"),
])
def test_errors_are_clear_and_exit_2(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *[a.format(d=tmp_path) for a in argv])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_help_explains_generators():
    out = subprocess.run([sys.executable, "-m", "reasonless", "generate", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("wilson", "kruskal", "dfs", "drunkards_walk", "searchformer", "cellular_automata", "--shard K/N",
                 "coverage=0.5", "--tie-break"):
        assert name in out


def test_a_full_disk_is_reported_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    from reasonless import corpus

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(corpus, "save_npy", full)
    code, _, err = run(capsys, "generate", "--generator", "dfs", "--count", 10, "--rows", 6, "--cols", 6,
                       "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert not any((tmp_path / "c").iterdir())


def test_stats_of_a_corrupted_arm_reports_trace_validity(tmp_path, capsys):
    assert run(capsys, "generate", "--generator", "kruskal", "--count", 200, "--rows", 10, "--cols", 10, "--out",
               tmp_path / "c", "--quiet")[0] == 0
    code, out, _ = run(capsys, "stats", tmp_path / "c", "--arm", "swapped", "--arm-seed", 2, "--json")
    swapped = json.loads(out)
    assert code == 0 and swapped["trace_valid_pct"]["strict"] < 5 and swapped["arm_seed"] == 2
    code, out, _ = run(capsys, "stats", tmp_path / "c", "--arm", "other_algorithm:bfs")
    assert code == 0 and "trace valid for its problem" in out
    correct = json.loads(run(capsys, "stats", tmp_path / "c", "--json")[1])
    assert "trace_valid_pct" not in correct
    assert swapped["plan_cells"] == correct["plan_cells"] and swapped["prompt_tokens"] == correct["prompt_tokens"]
    with pytest.raises(SystemExit) as exit_:  # argparse rejects it, listing the arms
        main(["export", str(tmp_path / "c"), "--format", "jsonl", "--arm", "backwards", "--out", "x.jsonl"])
    assert exit_.value.code == 2 and "invalid choice: 'backwards'" in capsys.readouterr().err


def test_an_interrupted_generate_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from reasonless import corpus

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "write_shard", interrupted)
    code, _, err = run(capsys, "generate", "--generator", "kruskal", "--count", 10, "--rows", 6, "--cols", 6,
                       "--out", tmp_path / "c", "--quiet")
    assert code == 130 and "re-run the same command to resume" in err
    assert not list((tmp_path / "c").iterdir())


def test_generate_prepares_kernels_before_timing(tmp_path, capsys):
    assert main(["generate", "--generator", "dfs", "--count", "50", "--rows", "6", "--cols", "6",
                 "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    # the kernels are made ready (compiled or loaded from the cache) before the progress bar starts its clock
    assert err.index("kernels ready in") < err.index("50/50 examples")
