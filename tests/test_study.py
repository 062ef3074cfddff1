import json
from pathlib import Path

import numpy as np
import pytest

from reasonless.cli import main
from reasonless.corpus import Corpus
from reasonless.interchange import load_tokens
from reasonless.study import build_study, load_study

STUDIES = Path(__file__).parent.parent / "studies"

SMALL = """
[study]
name = "t"
rows = 5
cols = 5

[train]
generator = "kruskal"
count = 400
seed = 1

[[test]]
generator = "kruskal"
count = 150
seed = 2

[[test]]
name = "caves"
generator = "drunkards_walk"
count = 60
seed = 3
params = { coverage = 0.6 }

[arms]
names = ["correct", "none", "swapped"]
seed = 4
"""


def test_build_keeps_test_mazes_out_of_training(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SMALL)
    assert main(["dataset", "build", str(tmp_path / "s.toml"), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert "test kruskal" in capsys.readouterr().out
    m = json.loads((tmp_path / "d" / "study.json").read_text())
    train = Corpus(tmp_path / "d" / "train")
    train_hashes = set(train.column("maze_hash").tolist())
    for name in ("kruskal", "caves"):
        test = Corpus(tmp_path / "d" / "test" / name)
        hashes = test.column("maze_hash")
        assert not train_hashes & set(hashes.tolist())
        assert len(set(hashes.tolist())) == len(hashes)
        t = m["test_corpora"][name]
        assert t["kept"] == len(test) and t["kept"] + t["removed_in_train"] + t["removed_duplicates"] == t["requested"]
    # On a 5×5 grid kruskal has only a handful of layouts: most of the test suite repeats the training set.
    assert m["test_corpora"]["kruskal"]["removed_in_train"] > 100
    assert m["train"]["seed"] == 1 and m["test"][1]["params"]["coverage"] == 0.6
    for arm in ("correct", "none", "swapped"):
        tokens, offsets, prompts, meta = load_tokens(tmp_path / "d" / "arms" / arm)
        assert meta["arm"] == arm and meta["arm_seed"] == 4 and len(offsets) == 401
    # Re-running resumes without remaking anything.
    again = build_study(tmp_path / "s.toml", tmp_path / "d")
    assert again["test_corpora"] == m["test_corpora"]


@pytest.mark.parametrize("edit,message", [
    (("count = 400", "count = -3"), r"\[train\] count: must be at least 1"),
    (("seed = 2", "seed = 2\nsize = 9"), r"\[\[test\]\] #1 size: unknown key"),
    (('names = ["correct", "none", "swapped"]', 'names = ["correct", "backwards"]'),
     r"\[arms\] names: unknown arm 'backwards'"),
    (('generator = "kruskal"\ncount = 150', 'generator = "prim"\ncount = 150'), r"\[\[test\]\] #1 generator"),
    (("coverage = 0.6", "coverage = 7"), r"\[\[test\]\] #2 generator/params: .*coverage"),
    (("rows = 5", "rows = 3"), r"\[study\] rows/cols"),
    (("[arms]", "[extras]\nx = 1\n[arms]"), r"\[extras\]: unknown section"),
])
def test_bad_study_files_name_the_key(tmp_path, edit, message):
    assert edit[0] in SMALL
    (tmp_path / "s.toml").write_text(SMALL.replace(edit[0], edit[1], 1))
    with pytest.raises(ValueError, match=message):
        load_study(tmp_path / "s.toml")
    assert main(["dataset", "build", str(tmp_path / "s.toml"), "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    spec = load_study(path)
    assert spec["train"]["count"] >= 1 and spec["test"]


def test_tiny_study_is_small():
    spec = load_study(STUDIES / "tiny.toml")
    assert spec["rows"] * spec["cols"] <= 100 and spec["train"]["count"] <= 10_000
