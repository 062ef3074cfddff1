"""`reasonless bench`: every stage runs for real (at a tiny size here) and lands in the table and the JSON."""
import json

import pytest

from reasonless import bench
from reasonless.cli import main


def test_every_stage_measures_something_real(tmp_path, monkeypatch):
    result = bench.run(quick=True, progress=False, count=600, size=8)
    stages = [(f["stage"], f["what"]) for f in result["figures"]]
    assert stages[:1] == [("generate", "wilson 8x8")]
    assert {s for s, _ in stages} == {"generate", "export", "arms", "verify", "train", "sample"}
    assert {w for s, w in stages if s == "arms"} == {"correct", "none", "swapped", "correct_no_costs"}
    for f in result["figures"]:
        assert len(f["runs"]) >= 2 and f["value"] > 0, f
        assert min(f["runs"]) <= f["value"] <= max(f["runs"]), f  # the median of its runs
    table = bench.format_table(result)
    assert table.splitlines()[0].startswith("machine: ") and "| verify | verify CORPUS (strict) |" in table
    assert "no CUDA device here" in table or result["machine"]["gpu"]
    # the CLI writes the same structure as JSON (the run itself stubbed: it was just exercised above)
    monkeypatch.setattr(bench, "run", lambda quick, progress: result)
    assert main(["bench", "--quick", "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["figures"] == result["figures"]


def test_a_failing_command_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="reasonless verify .* failed: .*no manifest.json"):
        bench.run_process(["verify", str(tmp_path)])
