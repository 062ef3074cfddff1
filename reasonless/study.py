"""Study datasets (docs/design.md §1, §6): one training corpus, test suites from several generators, and the arms.

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

    [run]                        # `reasonless study run` only: training, the same for every arm
    seeds = [0, 1]               # every arm is trained once per seed (initialization and data order)
    examples = 64000             # budget in examples seen, equal across arms (tokens seen differ and are reported)
    eval_every = 16000           # examples between evaluated checkpoints (the learning curves); default: the end
    preset = "tiny"              # model preset, with optional overrides in `model = { n_layer = 6 }`
    seq_len = 1024               # packed row length; rows per step, lr, warmup, min_lr_ratio, weight_decay,
    rows = 4                     # grad_clip, val_fraction and threads as for `reasonless train`
    lr = 3e-3

    [eval]                       # optional
    n = 300                      # problems per suite at the last checkpoint (default: all)
    n_curve = 100                # problems per suite at the earlier checkpoints (default: n)
    suites = ["wilson", "dfs"]   # default: every [[test]] suite
    mode = "paper"               # primary verifier mode of the tables; both are always computed

    [grpo]                       # optional: GRPO on each arm's final model, then the same evaluation again
    arms = ["correct", "swapped"]  # default: every arm with a trace
    steps = 50                   # and any other `reasonless grpo` setting without dashes (prompts, group, lr,
    reward = { plan_valid = 1 }  # loss, beta, filter_zero_std, ...; see reasonless/grpo.py GRPOConfig)

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
    "run": {"seeds", "examples", "eval_every", "preset", "model", "seq_len", "rows", "lr", "warmup", "min_lr_ratio",
            "weight_decay", "grad_clip", "val_fraction", "threads"},
    "eval": {"n", "n_curve", "suites", "batch_size", "mode"},
    "grpo": None,  # any key: validated by the GRPO stage
}
RUN_DEFAULTS = {"seeds": [0], "preset": "tiny", "model": {}, "seq_len": 1024, "rows": 4, "lr": 1e-3, "warmup": 100,
                "min_lr_ratio": 0.1, "weight_decay": 0.1, "grad_clip": 1.0, "val_fraction": 0.02, "threads": 0}
EVAL_DEFAULTS = {"n": None, "n_curve": None, "suites": None, "batch_size": 64, "mode": "paper"}
REQUIRED = {"train": {"generator", "count", "seed"}, "test": {"generator", "count", "seed"}, "arms": {"names"}}


def load_study(path: str | os.PathLike) -> dict:
    """Reads and validates a study file; every error names the file and the key."""
    from . import mazes

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") \
            from None

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
    tables += [(k, f"[{k}]", raw[k]) for k in ("run", "eval", "grpo") if k in raw]
    tables += [("test", f"[[test]] #{i + 1}", t) for i, t in enumerate(tests)]
    for kind, where, table in tables:
        if not isinstance(table, dict):
            fail(where, "must be a table")
        for key in table:
            if ALLOWED[kind] is not None and key not in ALLOWED[kind]:
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
        if "name" in table and not isinstance(table["name"], str):
            fail(f"{where} name", f"must be a string, got {table['name']!r}")
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
    for key in ("name",):
        if key in study and not isinstance(study[key], str):
            fail(f"[study] {key}", f"must be a string, got {study[key]!r}")
    spec = {"name": str(study.get("name", path.stem)), "rows": rows, "cols": cols, "tie_break": tie_break,
            "train": train, "test": suites, "arms": {"names": list(arm_names), "seed": arm_seed},
            "source": str(path)}
    if "run" in raw:
        spec["run"] = _run_spec(raw["run"], fail)
    if "eval" in raw:
        spec["eval"] = _eval_spec(raw["eval"], names, fail)
    if "grpo" in raw:
        spec["grpo"] = _grpo_spec(raw["grpo"], spec["arms"]["names"], fail)
    spec["warnings"] = layout_warnings(train, rows, cols)
    return spec


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _run_spec(table: dict, fail) -> dict:
    from .model import PRESETS

    run = {**RUN_DEFAULTS, **table}
    if "examples" not in table:
        fail("[run] examples", "missing: the training budget in examples seen (the same for every arm)")
    seeds = run["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_is_int(x) and x >= 0 for x in seeds) \
            or len(set(seeds)) != len(seeds):
        fail("[run] seeds", f"must be a non-empty list of distinct integers ≥ 0, got {seeds!r}")
    for key in ("examples", "seq_len", "rows"):
        if not _is_int(run[key]) or run[key] < 1:
            fail(f"[run] {key}", f"must be a positive integer, got {run[key]!r}")
    run.setdefault("eval_every", run["examples"])
    if not _is_int(run["eval_every"]) or not 1 <= run["eval_every"] <= run["examples"]:
        fail("[run] eval_every", f"must be an integer from 1 to examples={run['examples']}, got {run['eval_every']!r}")
    for key in ("warmup", "threads"):
        if not _is_int(run[key]) or run[key] < 0:
            fail(f"[run] {key}", f"must be an integer ≥ 0, got {run[key]!r}")
    for key in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction"):
        if isinstance(run[key], bool) or not isinstance(run[key], (int, float)) or run[key] < 0:
            fail(f"[run] {key}", f"must be a number ≥ 0, got {run[key]!r}")
    if not run["lr"] > 0:
        fail("[run] lr", "must be positive")
    if run["preset"] not in PRESETS:
        fail("[run] preset", f"{run['preset']!r} is not one of {', '.join(PRESETS)}")
    if not isinstance(run["model"], dict):
        fail("[run] model", "must be a table of preset overrides, e.g. { n_layer = 6 }")
    run["points"] = eval_points(run["examples"], run["eval_every"])
    return run


def _grpo_spec(table: dict, arm_names: list[str], fail) -> dict:
    from dataclasses import fields

    from .grpo import MAZE_COMPONENTS, GRPOConfig

    table = dict(table)
    arms = table.pop("arms", [a for a in arm_names if a != "none"])
    if not isinstance(arms, list) or not arms or any(a not in arm_names for a in arms):
        fail("[grpo] arms", f"must be a non-empty list of the study's arms ({', '.join(arm_names)}), got {arms!r}")
    if "none" in arms:
        fail("[grpo] arms", "the solution-only arm `none` writes no trace; GRPO on it is not part of the study's "
                            "comparison (remove it)")
    known = {f.name for f in fields(GRPOConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        fail(f"[grpo] {unknown[0]}", f"unknown key; allowed: arms, {', '.join(sorted(known))}")
    try:
        config = GRPOConfig(**table)
        config.validate(MAZE_COMPONENTS)
    except (TypeError, ValueError) as err:
        fail("[grpo]", str(err))
    return {"arms": arms, "config": config.to_dict()}


def eval_points(examples: int, eval_every: int) -> list[int]:
    """Examples seen at which checkpoints are evaluated: every `eval_every`, and always at the end."""
    points = list(range(eval_every, examples, eval_every))
    return points + [examples]


def _eval_spec(table: dict, suite_names: list[str], fail) -> dict:
    from .verifier import MODES

    ev = {**EVAL_DEFAULTS, **table}
    for key in ("n", "n_curve"):
        if ev[key] is not None and (not _is_int(ev[key]) or ev[key] < 1):
            fail(f"[eval] {key}", f"must be a positive integer, got {ev[key]!r}")
    if not _is_int(ev["batch_size"]) or ev["batch_size"] < 1:
        fail("[eval] batch_size", f"must be a positive integer, got {ev['batch_size']!r}")
    if ev["mode"] not in MODES:
        fail("[eval] mode", f"{ev['mode']!r} is not one of {', '.join(MODES)}")
    if ev["suites"] is not None:
        if not isinstance(ev["suites"], list) or not ev["suites"]:
            fail("[eval] suites", "must be a non-empty list of test suite names")
        unknown = [x for x in ev["suites"] if x not in suite_names]
        if unknown:
            fail("[eval] suites", f"no [[test]] suite named {', '.join(map(repr, unknown))}; declared: "
                                  f"{', '.join(suite_names)}")
    if ev["n_curve"] is None:
        ev["n_curve"] = ev["n"]
    return ev


def layout_warnings(train: dict, rows: int, cols: int) -> list[str]:
    """Warnings about a training corpus whose grid leaves few distinct wall layouts (docs/design.md §2)."""
    out = []
    if train["generator"] in ("wilson", "kruskal", "dfs") and (rows % 2 or cols % 2):
        out.append(f"{rows}x{cols} is odd: the two parity lattices of the perfect-maze generators differ in size "
                   f"(7x7: one offset has only 192 layouts); prefer even grids")
    if train["generator"] in ("wilson", "kruskal", "dfs") and rows * cols <= 64:
        out.append(f"{rows}x{cols} {train['generator']} mazes have few distinct layouts (8x8 Wilson: ~2x10^5, "
                   f"smaller grids far fewer): {train['count']:,} training mazes may repeat layouts, and the builder "
                   f"drops every test maze whose layout was trained on; request more test mazes than you evaluate")
    return out


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
