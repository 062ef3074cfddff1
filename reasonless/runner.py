"""`reasonless study run`: a whole study in one command (docs/design.md §9).

Stages, in this order, each recorded in ``OUT/status.json`` and skipped once done:

``build``
    the study's datasets (:func:`reasonless.study.build_study`) in ``OUT/data``.
``train ARM seed S``
    one run per arm and seed in ``OUT/runs/ARM/seedS`` with the study's ``[run]`` settings; the length is the
    budget in *examples seen* (equal across arms); checkpoints are kept at every evaluation point.
``eval ARM seed S @ E``
    the checkpoint nearest to E examples seen, on the test suites (``OUT/evals/ARM/seedS/exE.jsonl``); the last
    point uses ``[eval] n`` problems per suite, earlier ones ``n_curve``.
``grpo ARM seed S`` and ``eval grpo ARM seed S`` (with a ``[grpo]`` section)
    GRPO (:mod:`reasonless.grpo`) from the run's last checkpoint into ``OUT/grpo/ARM/seedS``, then the last
    point's evaluation of the result (``OUT/evals/ARM/seedS/grpo.jsonl``): before/after tables in the report.
``report``
    ``OUT/report/`` (:mod:`reasonless.results`): tables, learning curves, results.json.

Resuming: every stage is resumable on its own (generation by shard, training from its newest checkpoint —
exactly, on CPU — and evaluation suite by suite), so after ``kill -9`` at any moment the same command finishes
with the results an uninterrupted run would have had. A rerun after the end does nothing. The study file is
copied to ``OUT/study.toml``; running a different study into the same OUT is refused.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_file, pid_alive
from .progress import clock
from .study import build_study, load_study

STATUS = "status.json"


@dataclass
class Stage:
    name: str
    kind: str          # build | train | eval | grpo | eval_grpo | report
    arm: str | None = None
    seed: int | None = None
    examples: int | None = None  # eval: the point (examples seen)
    final: bool = False           # eval: the last point of its run


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm.replace(":", "_") / f"seed{seed}"


def eval_path(out: Path, arm: str, seed: int, examples: int | None) -> Path:
    """Where the evaluation at `examples` seen is written; None: the evaluation after GRPO."""
    name = "grpo.jsonl" if examples is None else f"ex{examples:09d}.jsonl"
    return out / "evals" / arm.replace(":", "_") / f"seed{seed}" / name


def grpo_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "grpo" / arm.replace(":", "_") / f"seed{seed}"


def plan(spec: dict) -> list[Stage]:
    """Every stage of a study, in execution order: each run is evaluated right after it is trained, so the
    first arms' results exist while the later ones train."""
    if "run" not in spec:
        raise ValueError(f"{spec['source']}: [run] missing: `study run` needs the training settings (seeds, "
                         f"examples, ...; see `reasonless study run --help`)")
    stages = [Stage("build", "build")]
    points = spec["run"]["points"]
    for arm in spec["arms"]["names"]:
        for seed in spec["run"]["seeds"]:
            stages.append(Stage(f"train {arm} seed {seed}", "train", arm, seed))
            for i, e in enumerate(points):
                stages.append(Stage(f"eval {arm} seed {seed} @ {e:,}", "eval", arm, seed, e, i == len(points) - 1))
            if arm in spec.get("grpo", {}).get("arms", ()):
                stages.append(Stage(f"grpo {arm} seed {seed}", "grpo", arm, seed))
                stages.append(Stage(f"eval grpo {arm} seed {seed}", "eval_grpo", arm, seed))
    stages.append(Stage("report", "report"))
    return stages


# ---------------------------------------------------------------------------------------------------- status
def read_status(out: Path) -> dict:
    path = out / STATUS
    if not path.is_file():
        return {"stages": {}}
    try:
        status = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to recompute which stages are done") from None
    if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
        raise ValueError(f"{path}: not a study status file")
    return status


def _write_status(out: Path, status: dict) -> None:
    with atomic_file(out / STATUS, "w") as f:
        json.dump(status, f, indent=1)
        f.write("\n")





def stage_state(entry: dict | None) -> str:
    """done, running (its process is alive on this host), interrupted (it was started and its process is gone)
    or missing."""
    if not entry:
        return "missing"
    if entry.get("state") == "done":
        return "done"
    if entry.get("host") == socket.gethostname() and isinstance(entry.get("pid"), int) and pid_alive(entry["pid"]):
        return "running"
    return "interrupted"


def format_status(out: str | os.PathLike) -> str:
    """`reasonless study status`: one line per stage with its state and wall time."""
    out = Path(out)
    copy = out / "study.toml"
    if not copy.is_file():
        raise ValueError(f"{out}: not a study run directory (no study.toml; made by `reasonless study run`)")
    spec = load_study(copy)
    status = read_status(out)
    stages = plan(spec)
    lines = [f"study {spec['name']} in {out}"]
    counts: dict[str, int] = {}
    width = max(len(s.name) for s in stages)
    for s in stages:
        entry = status["stages"].get(s.name)
        state = stage_state(entry)
        counts[state] = counts.get(state, 0) + 1
        wall = ""
        if state == "done":
            wall = clock(entry.get("wall_s", 0.0))
        elif state in ("running", "interrupted"):
            wall = f"started {entry.get('started', '?')}"
            if state == "running" and s.kind == "train":
                wall += _train_position(out, s)
        lines.append(f"  {s.name:<{width}}  {state:<11}  {wall}")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def _train_position(out: Path, s: Stage) -> str:
    metrics = run_dir(out, s.arm, s.seed) / "metrics.jsonl"
    try:
        last = json.loads(metrics.read_text().splitlines()[-1])
        return f", step {last['step']:,}, {last.get('examples_seen', 0):,} examples seen"
    except (OSError, ValueError, IndexError, KeyError):
        return ""





def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------------------------------- running
def _claim(study_path: Path, out: Path) -> None:
    """Copies the study file into OUT, or checks that OUT was made by the same study."""
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "study.toml"
    new = study_path.read_bytes()
    if copy.is_file():
        old_spec, new_spec = load_study(copy), load_study(study_path)
        for spec in (old_spec, new_spec):
            spec.pop("source"), spec.pop("name")
        if old_spec != new_spec:
            raise ValueError(f"{out}: holds a run of a different study (its copy {copy} differs from "
                             f"{study_path}); choose another --out")
        return
    with atomic_file(copy, "wb") as f:
        f.write(new)


def run_study(study_path: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True,
              threads: int | None = None, command: str | None = None, device: str = "auto",
              stop_after: str | None = None) -> dict:
    """Runs (or resumes) every stage of a study; returns the status. ``stop_after``: the name of a stage after
    which to stop (tests, and splitting a long study over sessions)."""
    study_path, out = Path(study_path), Path(out)
    spec = load_study(study_path)
    stages = plan(spec)
    _claim(study_path, out)
    for w in spec.get("warnings", []):
        print(f"warning: {study_path}: {w}", file=sys.stderr)
    status = read_status(out)
    for s in stages:
        entry = status["stages"].get(s.name)
        state = stage_state(entry)
        if state == "running":
            raise ValueError(f"{out}: stage {s.name!r} is being run by process {entry['pid']}; one runner per "
                             f"study directory")
    for k, s in enumerate(stages, 1):
        head = f"[{k}/{len(stages)}] {s.name}"
        if stage_state(status["stages"].get(s.name)) == "done":
            if progress:
                print(f"{head}: done", file=sys.stderr, flush=True)
            if s.name == stop_after:
                break
            continue
        prior = status["stages"].get(s.name)
        if progress:
            print(f"{head}: {'resuming' if prior else 'starting'}", file=sys.stderr, flush=True)
        entry = {"state": "running", "started": _now(), "pid": os.getpid(), "host": socket.gethostname(),
                 "earlier_wall_s": (prior or {}).get("wall_s", 0.0) + (prior or {}).get("earlier_wall_s", 0.0)}
        status["stages"][s.name] = entry
        _write_status(out, status)
        t0 = time.perf_counter()
        info = _run_stage(s, spec, study_path, out, progress=progress, threads=threads, command=command,
                          device=device)
        wall = time.perf_counter() - t0
        entry.update(state="done", finished=_now(), wall_s=wall + entry.pop("earlier_wall_s"), **(info or {}))
        _write_status(out, status)
        if progress:
            print(f"{head}: done in {clock(wall)}", file=sys.stderr, flush=True)
        if s.name == stop_after:
            break
    return status


def _run_stage(s: Stage, spec: dict, study_path: Path, out: Path, *, progress: bool, threads, command,
               device) -> dict | None:
    data = out / "data"
    if s.kind == "build":
        build_study(study_path, data, progress=progress, command=command)
        return None
    if s.kind == "train":
        return _train(s, spec, data, out, progress=progress, threads=threads, device=device)
    if s.kind == "eval":
        return _eval(s, spec, data, out, progress=progress, device=device)
    if s.kind == "grpo":
        return _grpo(s, spec, data, out, progress=progress, threads=threads, device=device)
    if s.kind == "eval_grpo":
        return _eval_grpo(s, spec, data, out, progress=progress, device=device)
    from .results import write_study_report
    write_study_report(out)
    return None


def train_settings(spec: dict, data: Path, arm: str, seed: int, threads: int | None) -> dict:
    """The keyword arguments of :func:`reasonless.train.train` for one run of the study, and the optimizer step
    of each evaluation point (``"point_steps"``)."""
    from .data import PackedLoader
    from .train import resolve_data_dir, steps_for_examples

    run = spec["run"]
    tokens = resolve_data_dir(data, arm)
    loader = PackedLoader(tokens, run["seq_len"], run["rows"], seed=seed, val_fraction=run["val_fraction"])
    point_steps = {e: steps_for_examples(loader, e) for e in run["points"]}
    return {"kwargs": dict(arm=arm, preset=run["preset"], model_overrides=run["model"] or None,
                           steps=point_steps[run["examples"]], seq_len=run["seq_len"], rows=run["rows"],
                           lr=run["lr"], warmup=run["warmup"], min_lr_ratio=run["min_lr_ratio"],
                           weight_decay=run["weight_decay"], grad_clip=run["grad_clip"], seed=seed,
                           val_fraction=run["val_fraction"], keep_steps=sorted(point_steps.values()),
                           threads=run["threads"] if threads is None else threads),
            "point_steps": point_steps}


def _train(s: Stage, spec: dict, data: Path, out: Path, *, progress: bool, threads, device) -> dict:
    from . import checkpoint as ckpt_io
    from .train import train

    settings = train_settings(spec, data, s.arm, s.seed, threads)
    where = run_dir(out, s.arm, s.seed)
    resume = ckpt_io.latest_checkpoint(where) is not None
    result = train(data, where, resume=resume, device=device, progress=progress, **settings["kwargs"])
    return {"steps": result["steps"], "examples_seen": result["examples_seen"], "tokens_seen": result["tokens_seen"],
            "point_steps": {str(k): v for k, v in settings["point_steps"].items()}}


def _point_checkpoint(spec: dict, data: Path, out: Path, arm: str, seed: int, examples: int) -> tuple[Path, int]:
    from . import checkpoint as ckpt_io

    settings = train_settings(spec, data, arm, seed, None)
    step = settings["point_steps"][examples]
    ckpt = run_dir(out, arm, seed) / ckpt_io.CHECKPOINT_DIR / f"step-{step:06d}"
    if not (ckpt / "trainer.json").is_file():
        raise ValueError(f"{ckpt}: missing; the run was expected to keep its checkpoint at step {step:,} "
                         f"({examples:,} examples): delete {run_dir(out, arm, seed)} and rerun to retrain")
    return ckpt, step


def _grpo(s: Stage, spec: dict, data: Path, out: Path, *, progress: bool, threads, device) -> dict:
    from . import checkpoint as ckpt_io
    from .grpo import GRPOConfig, grpo

    init, _ = _point_checkpoint(spec, data, out, s.arm, s.seed, spec["run"]["examples"])
    config = GRPOConfig(**spec["grpo"]["config"])
    where = grpo_dir(out, s.arm, s.seed)
    # Checkpoints every tenth of the run: a kill costs at most that much.
    result = grpo(init, data, where, arm=s.arm, config=config, resume=ckpt_io.latest_checkpoint(where) is not None,
                  device=device, threads=spec["run"]["threads"] if threads is None else threads,
                  save_every=max(1, config.steps // 10), progress=progress)
    return {"init": str(init.relative_to(out)), "steps": config.steps,
            "checkpoint": str(Path(result["checkpoint"]).relative_to(out)) if result.get("checkpoint") else None}


def _eval_grpo(s: Stage, spec: dict, data: Path, out: Path, *, progress: bool, device) -> dict:
    from . import checkpoint as ckpt_io
    from .evaluate import evaluate

    ckpt = ckpt_io.latest_checkpoint(grpo_dir(out, s.arm, s.seed))
    if ckpt is None:
        raise ValueError(f"{grpo_dir(out, s.arm, s.seed)}: no GRPO checkpoint to evaluate")
    ev = spec.get("eval", {})
    dest = eval_path(out, s.arm, s.seed, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    evaluate(ckpt, data, dest, suites=ev.get("suites"), checkpoint=str(ckpt), n=ev.get("n"),
             mode=ev.get("mode", "paper"), batch_size=ev.get("batch_size", 64),
             device=None if device == "auto" else device, progress=progress)
    return {"checkpoint": str(ckpt.relative_to(out))}


def _eval(s: Stage, spec: dict, data: Path, out: Path, *, progress: bool, device) -> dict:
    from .evaluate import evaluate

    ckpt, step = _point_checkpoint(spec, data, out, s.arm, s.seed, s.examples)
    ev = spec.get("eval", {})
    n = ev.get("n") if s.final else ev.get("n_curve")
    dest = eval_path(out, s.arm, s.seed, s.examples)
    dest.parent.mkdir(parents=True, exist_ok=True)
    evaluate(ckpt, data, dest, suites=ev.get("suites"), checkpoint=str(ckpt), n=n, mode=ev.get("mode", "paper"),
             batch_size=ev.get("batch_size", 64), device=None if device == "auto" else device, progress=progress)
    return {"step": step}
