"""Study datasets (DESIGN §1, §6): one training corpus, test suites from several generators, and the arms.

A study is declared in TOML::

    [study]                      # optional
    name = "paper"
    rows = 30                    # grid of every corpus of the study
    cols = 30
    tie_break = "fifo"

    [train]
    generator = "wilson"
    count = 50000
    seed = 1
    params = {}                  # optional generator parameters

    [[test]]                     # one table per test suite
    name = "drunkards_walk"      # optional, defaults to the generator
    generator = "drunkards_walk"
    count = 1000
    seed = 1004
    params = { coverage = 0.5 }

    [arms]
    names = ["correct", "swapped", "none"]
    seed = 7

`reasonless dataset build STUDY.toml --out DIR` writes ``DIR/train`` (a corpus), ``DIR/test/<name>`` (corpora
whose mazes never share a wall layout with the training corpus nor with each other within a suite, checked by maze
hash), ``DIR/arms/<arm>`` (the training token streams of each arm) and ``DIR/study.json`` recording every seed,
count and removal.
"""
from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np

from .arms import ARMS
from .atomic import atomic_file
from .corpus import TIE_BREAKS, Corpus, generate, subset
from .vocab import check_grid_size

ALLOWED = {
    "study": {"name", "rows", "cols", "tie_break"},
    "train": {"generator", "count", "seed", "params"},
    "test": {"name", "generator", "count", "seed", "params"},
    "arms": {"names", "seed"},
}
REQUIRED = {"train": {"generator", "count", "seed"}, "test": {"generator", "count", "seed"}, "arms": {"names"}}


def load_study(path: str | os.PathLike) -> dict:
    """Reads and validates a study file; every error names the file and the key."""
    from . import mazes

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None

    def fail(where: str, message: str):
        raise ValueError(f"{path}: {where}: {message}")

    for section in raw:
        if section not in ALLOWED:
            fail(f"[{section}]", f"unknown section; allowed: {', '.join(sorted(ALLOWED))}")
    for section in ("train", "test", "arms"):
        if section not in raw:
            fail(f"[{section}]", "missing")
    study = raw.get("study", {})
    tests = raw["test"]
    if not isinstance(tests, list) or not tests:
        fail("[[test]]", "declare at least one test suite as [[test]] tables")
    tables = [("study", "[study]", study), ("train", "[train]", raw["train"]), ("arms", "[arms]", raw["arms"])]
    tables += [("test", f"[[test]] #{i + 1}", t) for i, t in enumerate(tests)]
    for kind, where, table in tables:
        if not isinstance(table, dict):
            fail(where, "must be a table")
        for key in table:
            if key not in ALLOWED[kind]:
                fail(f"{where} {key}", f"unknown key; allowed: {', '.join(sorted(ALLOWED[kind]))}")
        for key in sorted(REQUIRED.get(kind, ())):
            if key not in table:
                fail(f"{where} {key}", "missing")

    rows, cols = study.get("rows", 30), study.get("cols", 30)
    try:
        check_grid_size(rows, cols)
    except ValueError as err:
        fail("[study] rows/cols", str(err))
    tie_break = study.get("tie_break", "fifo")
    if tie_break not in TIE_BREAKS:
        fail("[study] tie_break", f"{tie_break!r} is not one of {', '.join(TIE_BREAKS)}")

    def corpus_spec(where: str, table: dict, default_name: str | None = None) -> dict:
        for key in ("count", "seed"):
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int):
                fail(f"{where} {key}", f"must be an integer, got {value!r}")
        if table["count"] < 1:
            fail(f"{where} count", f"must be at least 1, got {table['count']}")
        if table["seed"] < 0:
            fail(f"{where} seed", f"must be ≥ 0, got {table['seed']}")
        params = table.get("params", {})
        if not isinstance(params, dict):
            fail(f"{where} params", "must be a table")
        try:
            params = mazes.resolve_params(table["generator"], rows, cols, params)
        except ValueError as err:
            fail(f"{where} generator/params", str(err))
        spec = {"generator": table["generator"], "count": table["count"], "seed": table["seed"], "params": params}
        if default_name is not None:
            spec["name"] = str(table.get("name", default_name))
        return spec

    train = corpus_spec("[train]", raw["train"])
    suites = [corpus_spec(f"[[test]] #{i + 1}", t, t.get("generator")) for i, t in enumerate(tests)]
    names = [s["name"] for s in suites]
    if len(set(names)) != len(names):
        fail("[[test]] name", f"test suite names must be unique, got {names}")
    arms = raw["arms"]
    arm_names = arms["names"]
    if not isinstance(arm_names, list) or not arm_names or not all(isinstance(a, str) for a in arm_names):
        fail("[arms] names", "must be a non-empty list of arm names")
    for arm in arm_names:
        if arm not in ARMS:
            fail("[arms] names", f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    arm_seed = arms.get("seed", 0)
    if isinstance(arm_seed, bool) or not isinstance(arm_seed, int) or arm_seed < 0:
        fail("[arms] seed", f"must be an integer ≥ 0, got {arm_seed!r}")
    return {"name": str(study.get("name", path.stem)), "rows": rows, "cols": cols, "tie_break": tie_break,
            "train": train, "test": suites, "arms": {"names": list(arm_names), "seed": arm_seed},
            "source": str(path)}


def build_study(path: str | os.PathLike, out: str | os.PathLike, threads: int = 0, progress: bool = False,
                command: str | None = None) -> dict:
    """Builds every corpus and arm of a study into `out` and returns the study manifest (also DIR/study.json).

    Re-running resumes: finished corpora are kept (their generation resumes shard by shard too).
    """
    from .interchange import export_tokens

    spec = load_study(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, cols, tie_break = spec["rows"], spec["cols"], spec["tie_break"]

    def make(where: Path, s: dict) -> Corpus:
        return generate(where, s["generator"], s["count"], rows=rows, cols=cols, seed=s["seed"], params=s["params"],
                        tie_break=tie_break, threads=threads, progress=progress, command=command)

    train = make(out / "train", spec["train"])
    train_hashes = np.unique(train.column("maze_hash"))
    manifest = {**spec, "command": command, "train_corpus": "train",
                "train_duplicate_layouts": int(len(train) - len(train_hashes)), "test_corpora": {}, "arm_data": {}}

    for suite in spec["test"]:
        final = out / "test" / suite["name"]
        raw_dir = out / "test" / f".raw-{suite['name']}"
        if not (final / "manifest.json").exists():
            raw = make(raw_dir, suite)
            hashes = raw.column("maze_hash")
            in_train = np.isin(hashes, train_hashes)
            first_seen = np.zeros(len(hashes), dtype=bool)
            first_seen[np.unique(hashes, return_index=True)[1]] = True
            keep = ~in_train & first_seen
            subset(raw, keep, final, {"removed_in_train": int(in_train.sum()),
                                      "removed_duplicates": int((~first_seen & ~in_train).sum())})
            shutil.rmtree(raw_dir)
        test = Corpus(final)
        manifest["test_corpora"][suite["name"]] = {
            "path": f"test/{suite['name']}", "generator": suite["generator"], "seed": suite["seed"],
            "requested": suite["count"], "kept": len(test), "removed_in_train": test.manifest["removed_in_train"],
            "removed_duplicates": test.manifest["removed_duplicates"]}

    for arm in spec["arms"]["names"]:
        where = out / "arms" / arm
        if not (where / "meta.json").exists():
            export_tokens(train, where, arm=arm, seed=spec["arms"]["seed"], threads=threads, progress=progress)
        manifest["arm_data"][arm] = f"arms/{arm}"

    with atomic_file(out / "study.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest
