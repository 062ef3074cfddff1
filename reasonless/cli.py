"""The `reasonless` command line."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from .arms import ARM_DEFINITIONS, ARMS
from .corpus import DEFAULT_SHARD_SIZE, TIE_BREAKS

ARM_HELP = "the training arm (default correct): " + "; ".join(f"{k}: {v}" for k, v in ARM_DEFINITIONS.items())

DESCRIPTION = """\
Maze path-finding problems with A* reasoning traces: generate corpora, import and export the paper's JSONL
format, inspect lengths, verify traces.

typical use:
  reasonless generate --generator wilson --count 100000 --out data/wilson30
  reasonless stats data/wilson30
  reasonless export data/wilson30 --format tokens --out data/wilson30-correct
"""

GENERATE_EPILOG = """\
generators (parameters with defaults):
  wilson              perfect maze, uniform spanning tree (loop-erased random walks)
  kruskal             perfect maze, randomized Kruskal
  dfs                 perfect maze, recursive backtracking (long corridors)
  drunkards_walk      open cave carved by a random walk          coverage=0.5
  searchformer        random walls, long plans                   wall_min=0.3 wall_max=0.5 min_plan=max(rows,cols)
  cellular_automata   caves by birth/survival rules              fill=0.45 survive=4 birth=5 iterations=3

Every instance is a pure function of (generator, parameters, grid, seed, instance index): the output is the same
whatever --threads and however the range is split with --shard. Re-running an interrupted command resumes at the
first missing shard. To spread one corpus over machines, run part K of N on each (--shard K/N, K from 0, same
--out or separate ones) and then `reasonless merge`; on a Ray cluster, --engine ray runs one task per shard
(the same bytes) into an --out that every node sees, and writes the manifest itself.

--rng paper --split train|test --seed S: the examples of the paper's JavaScript tool (cli.js -g G -s astar
--mode train|test --seed S) byte for byte, defects included (counted in the manifest; see docs/design.md,
"Paper-exact datasets"). Its one LCG stream makes maze generation sequential; the train and test streams of
the tool overlap. Parameters: drunkards_walk coverage, cellular_automata fill/survive/birth/iterations.
"""

TRAIN_EPILOG = """\
The data is a token dir: `reasonless export CORPUS --format tokens --arm ARM --out DIR`, or a study's
directory with --arm ARM (reads STUDY/arms/ARM/). A share of the examples (--val-fraction) is held out for
the validation loss. Examples longer than --seq-len are skipped with a warning.

The run directory gets metrics.jsonl (one JSON line per step: loss, lr, grad_norm, tokens_per_s, mfu on
GPU, val_loss when evaluated), run.json, and checkpoints/step-NNNNNN/ (safetensors weights + JSON config,
optimizer, data position and RNG state), keeping the newest --keep-last and the best by validation loss.
After a crash, the same command with --resume continues from the newest checkpoint (bit-for-bit on CPU).

Several processes: torchrun --nproc_per_node N -m reasonless train ... (DDP; gloo on CPU, NCCL on CUDA).
The global batch is rows x seq_len x grad_accum x N tokens.

example:
  reasonless train --data study/arms/correct --preset tiny --out runs/tiny --steps 2000 --seq-len 2048 \\
      --batch-tokens 16384 --lr 1e-3 --eval-every 200 --save-every 500
"""

STUDY_EPILOG = """\
The study file is the one `dataset build` reads plus a [run] section (seeds, examples, eval_every, preset and
the training settings) and an optional [eval] section (n, n_curve, suites, mode); see studies/tiny.toml and the
docstring of reasonless/study.py.

layout of OUT: data/ (the datasets), runs/ARM/seedS/ (training runs), evals/ARM/seedS/exE.jsonl (evaluations at
E examples seen), report/ (report.md, results.json, PNG plots), status.json (stages and wall times).

example:
  reasonless study run studies/tiny.toml --out studies-out/tiny
  reasonless study status studies-out/tiny
"""

EXPORT_HF_EPILOG = """\
use:
  reasonless export-hf runs/tiny --out hf/tiny
  python -c "from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; \\
      m = M.from_pretrained('hf/tiny'); t = T.from_pretrained('hf/tiny')"
  vllm serve hf/tiny        # prompts: the text before `reasoning`; <|bos|> is added by the tokenizer
"""


def _threads(text: str) -> int:
    """--threads: a count of threads, 0 for the default (every core, or the file's setting)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} threads: use a positive count, or 0 for the default")
    return n


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        params[key] = value
    return params


def cmd_generate(args) -> None:
    from .corpus import generate

    t0 = time.perf_counter()
    if args.split is not None and args.rng != "paper":
        raise ValueError("--split is only for --rng paper (the JS tool's --mode train|test); our own generators "
                         "make splits with `reasonless dataset build`")
    if args.rng == "paper" and args.split is None:
        raise ValueError("--rng paper needs --split train or --split test (the JS tool's --mode)")
    engine = None
    if args.engine == "ray" and args.rng == "paper":
        raise ValueError("--engine ray needs shards that are independent; the paper's stream (--rng paper) is one "
                         "sequence that every task would replay from the start: generate it in one process")
    if args.engine == "ray":
        from .engine_ray import shard_engine

        engine = shard_engine(args.address, args.tasks, threads=args.threads or 1, max_retries=args.max_retries,
                              progress=not args.quiet)
    corpus = generate(args.out, args.generator, args.count, rows=args.rows, cols=args.cols, seed=args.seed,
                      params=_params(args.param), tie_break=args.tie_break, threads=args.threads,
                      shard=args.shard, shard_size=args.shard_size, progress=not args.quiet, command=args.command_line,
                      engine=engine, rng=args.rng, split=args.split)
    if corpus is not None:
        dt = time.perf_counter() - t0
        print(f"{args.out}: {len(corpus):,} examples ({args.generator} {args.rows}x{args.cols}, seed {args.seed}) "
              f"in {dt:.1f}s")
        if args.rng == "paper":
            from .paper_mazes import warning_line
            print(warning_line(corpus.manifest), file=sys.stderr)


def cmd_merge(args) -> None:
    from .corpus import merge

    corpus = merge(args.inputs, args.out, command=args.command_line)
    print(f"{args.out}: merged {len(corpus.shards)} shards, {len(corpus):,} examples")


def cmd_export(args) -> None:
    from pathlib import Path

    from .corpus import Corpus
    from .interchange import export_jsonl, export_tokens

    parent = Path(args.out).parent
    if not parent.is_dir():  # a typo in --out must not leave a new folder tree behind
        raise FileNotFoundError(f"--out {args.out}: the folder {parent} does not exist; create it first")
    corpus = Corpus(args.corpus)
    if args.engine == "ray":
        from . import engine_ray

        meta = engine_ray.export(corpus, args.out, args.format, args.arm, args.arm_seed, args.threads or 1,
                                 split=args.split, address=args.address, tasks=args.tasks,
                                 max_retries=args.max_retries, progress=not args.quiet)
        print(f"{args.out}: {meta['examples']:,} examples ({args.format}, {args.arm} arm, one Ray task per shard)")
        return
    if args.format == "jsonl":
        n = export_jsonl(corpus, args.out, args.arm, args.arm_seed, args.threads, progress=not args.quiet)
        print(f"{args.out}: {n:,} lines ({args.arm} arm)")
    elif args.format == "parquet":
        from .parquet import export_parquet

        meta = export_parquet(corpus, args.out, args.arm, args.arm_seed, args.threads, split=args.split,
                              progress=not args.quiet)
        print(f"{args.out}: {meta['examples']:,} rows in row groups of {meta['row_group']:,} ({args.arm} arm)")
    else:
        meta = export_tokens(corpus, args.out, args.arm, args.arm_seed, args.threads, progress=not args.quiet)
        print(f"{args.out}: {meta['examples']:,} sequences, {meta['tokens']:,} tokens ({args.arm} arm)")


def cmd_import(args) -> None:
    from .interchange import import_jsonl

    report = import_jsonl(args.file, args.out, rows=args.rows, cols=args.cols, tie_break=args.tie_break,
                          skip_invalid=args.skip_invalid, threads=args.threads, progress=not args.quiet,
                          command=args.command_line)
    print(report.summary())


def cmd_stats(args) -> None:
    from .corpus import Corpus
    from .stats import describe, format_table

    summary = describe(Corpus(args.corpus), args.arm, args.arm_seed)
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))


def cmd_verify(args) -> int:
    from pathlib import Path

    from . import verifier

    source = Path(args.input)
    if args.engine == "ray" and not source.is_dir():
        raise ValueError(f"{source}: --engine ray verifies a corpus directory (one task per shard), not a file")
    if source.is_dir() and args.engine == "ray":
        from .corpus import Corpus
        from .engine_ray import verify_corpus

        verdicts = verify_corpus(Corpus(source), mode=args.mode, threads=args.threads or 1,
                                 per_example=args.per_example, address=args.address, tasks=args.tasks,
                                 max_retries=args.max_retries)
    elif source.is_dir():
        from .corpus import Corpus

        verdicts = verifier.verify_corpus(Corpus(source), mode=args.mode, threads=args.threads,
                                        per_example=args.per_example)
    elif source.is_file():
        verdicts = verifier.verify_jsonl(source, mode=args.mode, rows=args.rows, cols=args.cols,
                                       per_example=args.per_example, threads=args.threads)
    else:
        raise FileNotFoundError(f"{source}: no such file or corpus directory")
    summary = verdicts.summary()
    print(json.dumps(summary, indent=1) if args.json else verifier.format_summary(summary))
    failed = len(verdicts) - int((verdicts.plan_valid.astype(bool) & verdicts.trace_valid.astype(bool)).sum())
    # A corpus's own traces are A*'s: any failure means damaged data or a bug, so it is an error. Model outputs
    # fail routinely; there it is one only when asked for.
    if failed and (source.is_dir() or args.fail_on_invalid):
        print(f"reasonless verify: {failed:,} of {len(verdicts):,} examples failed ({args.mode} mode)",
              file=sys.stderr)
        return 1
    return 0


def cmd_dataset_build(args) -> None:
    from .study import build_study

    m = build_study(args.study, args.out, threads=args.threads, progress=not args.quiet, command=args.command_line)
    print(f"{args.out}: study {m['name']}: train {m['train']['count']:,} {m['train']['generator']} "
          f"({m['rows']}x{m['cols']}), arms {', '.join(m['arms']['names'])}")
    for name, t in m["test_corpora"].items():
        print(f"  test {name}: {t['kept']:,} of {t['requested']:,} kept ({t['removed_in_train']} share a layout "
              f"with train, {t['removed_duplicates']} duplicates)")


def cmd_study_run(args) -> None:
    from .runner import format_status, run_study

    run_study(args.study, args.out, progress=not args.quiet, threads=args.threads, command=args.command_line,
              device=args.device, stop_after=args.stop_after)
    print(format_status(args.out))
    print(f"report: {args.out}/report/report.md")


def cmd_study_status(args) -> None:
    from .runner import format_status

    print(format_status(args.dir))


def cmd_train(args) -> None:
    from .train import train

    overrides = {}
    for key, value in _params(args.model_param).items():
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            raise ValueError(f"--model-param {key}={value!r}: value must be a number") from None
    grid = None
    if args.grid:
        try:
            r, c = (int(v) for v in args.grid.lower().split("x"))
        except ValueError:
            raise ValueError(f"--grid {args.grid!r}: expected ROWSxCOLS, e.g. 30x30") from None
        grid = (r, c)
    result = train(args.data, args.out, arm=args.arm, preset=args.preset, model_overrides=overrides or None,
                   steps=args.steps, epochs=args.epochs, examples=args.examples, seq_len=args.seq_len, batch_tokens=args.batch_tokens,
                   rows=args.rows, lr=args.lr, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
                   weight_decay=args.weight_decay, grad_clip=args.grad_clip, grad_accum=args.grad_accum,
                   seed=args.seed, eval_every=args.eval_every, eval_batches=args.eval_batches,
                   val_fraction=args.val_fraction, save_every=args.save_every, save_minutes=args.save_minutes,
                   keep_last=args.keep_last, threads=args.threads, compile=args.compile, resume=args.resume, device=args.device, attn_backend=args.attn_backend,
                   expect_grid=grid, progress=not args.quiet)
    if not args.quiet and result["losses"]:
        val = result["val_loss"]
        final = result["losses"][-1]
        print(f"trained steps {result['start_step']}..{result['steps']}: final loss {final:.4f}"
              + (f", val loss {val:.4f}" if val is not None else "")
              + f"; checkpoint {result['checkpoint']}", file=sys.stderr)


def cmd_eval(args) -> None:
    from .evaluate import evaluate, format_summary, summary_path
    from .sample import Sampling

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    engine = {}
    if args.engine == "ray":
        from . import engine_ray

        evaluate = engine_ray.evaluate  # one Ray task per suite
        engine = dict(address=args.address, tasks=args.tasks, max_retries=args.max_retries)
    summary = evaluate(args.run, args.suites, args.out, suites=args.suite, checkpoint=args.checkpoint,
                       device=None if args.device == "auto" else args.device, command=args.command_line, n=args.n,
                       mode=args.mode, sampling=sampling, budget=args.budget, batch_size=args.batch_size,
                       progress=not args.quiet, **engine)
    print(format_summary(summary))
    print(f"{args.out}: {sum(s['n'] for s in summary['suites'].values()):,} examples; summary "
          f"{summary_path(args.out)}")


def cmd_report(args) -> None:
    from .report import build_report

    result = build_report(args.evals, args.out, mode=args.mode, plots=not args.no_plots, gallery=args.gallery)
    if result["plot_note"] and not args.no_plots:
        print(f"reasonless report: {result['plot_note']}", file=sys.stderr)
    print(f"{result['report']}" + (f" and {len(result['plots'])} plots" if result["plots"] else "")
          + f"; {result['index']}")


def cmd_bench(args) -> None:
    from pathlib import Path

    from .atomic import atomic_file
    from .bench import format_table, run

    if args.json not in (None, "-") and not Path(args.json).parent.is_dir():
        raise FileNotFoundError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    result = run(quick=args.quick, progress=not args.quiet)
    if args.json == "-":
        print(json.dumps(result, indent=1))
        return
    print(format_table(result))
    if args.json is not None:
        with atomic_file(Path(args.json), "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"{args.json}: the figures as JSON")


def cmd_render(args) -> None:
    from .render import load_scene, write

    scene = load_scene(args.src, args.index, compare=args.compare, mode=args.mode, suite=args.suite,
                       rows=args.rows, cols=args.cols)
    out = args.out or f"render-{args.src.rstrip('/').split('/')[-1]}-{args.index}.svg"
    print(write(scene, out))


def cmd_export_hf(args) -> None:
    from .export_hf import export_checkpoint

    out = export_checkpoint(args.run, args.out, checkpoint=args.checkpoint, dtype=args.dtype, force=args.force)
    info = json.loads((out / "reasonless.json").read_text())
    src = info["source"]
    print(f"{out}: Qwen2ForCausalLM ({args.dtype}, {info['grid']['rows']}x{info['grid']['cols']} vocabulary of "
          f"{info['vocab']['size']}) from {src['checkpoint']} (step {src['step']}, {src['selected_by']})")


def cmd_grpo(args) -> None:
    from .grpo import GRPOConfig, grpo, parse_reward

    config = GRPOConfig(steps=args.steps, prompts=args.prompts, group=args.group, temperature=args.temperature,
                        budget=args.budget, reward=parse_reward(args.reward), truncated=args.truncated,
                        scale_rewards=args.scale_rewards, loss=args.loss, clip_low=args.clip_low,
                        clip_high=args.clip_high, beta=args.beta, updates=args.updates, minibatch=args.minibatch,
                        lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                        filter_zero_std=args.filter_zero_std, max_resample=args.max_resample, seed=args.seed,
                        gen_batch=args.gen_batch, forward_tokens=args.forward_tokens)
    result = grpo(args.init, args.data, args.out, arm=args.arm, config=config, eval_every=args.eval_every,
                  eval_n=args.eval_n, eval_suites=args.eval_suites, resume=args.resume,
                  device=args.device, threads=args.threads, save_every=args.save_every, keep_last=args.keep_last,
                  progress=not args.quiet)
    last = result["metrics"][-1] if result["metrics"] else None
    summary = (f"{args.out}: rollout steps {result['start_step']}..{result['steps']}, {result['grad_steps']} "
               f"gradient steps")
    if last is not None:
        summary += f", last reward {last['reward_mean']:.3f} (plan valid {last['rate_plan_valid']:.3f})"
    print(summary + f"; checkpoint {result['checkpoint']}")


def _engine_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help=f"local: this process (default); ray: {what} on a Ray cluster (pip install "
                        f"'reasonless[ray]'); outputs go to a path every node sees (a shared filesystem)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join, e.g. auto or HOST:6379 (default: start a local Ray instance)")
    p.add_argument("--tasks", type=int, default=None,
                   help="Ray tasks in flight at most (default: twice the cluster's CPUs)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="Ray retries of a task whose worker died or that raised OSError (default 3)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="reasonless", description=DESCRIPTION, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate mazes, solve them with A*, write a corpus",
                       description="Generate maze problems, solve them with A* and write a sharded corpus.",
                       epilog=GENERATE_EPILOG, formatter_class=fmt)
    g.add_argument("--generator", required=True, help="maze generator (see below)")
    g.add_argument("--count", type=int, required=True, help="number of problems")
    g.add_argument("--rows", type=int, default=30, help="grid rows, 4..64 (default 30)")
    g.add_argument("--cols", type=int, default=30, help="grid columns, 4..64 (default 30)")
    g.add_argument("--seed", type=int, default=0, help="seed of the corpus (default 0)")
    g.add_argument("--out", required=True, help="corpus directory to write (or resume)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="generator parameter, repeatable (e.g. --param coverage=0.6)")
    g.add_argument("--tie-break", default="fifo", choices=TIE_BREAKS,
                   help="A* order among equal f (default fifo, which reproduces the paper's datasets)")
    g.add_argument("--threads", type=_threads, default=0,
                   help="worker threads (default: all cores; with --engine ray: per task, default 1)")
    g.add_argument("--shard", metavar="K/N", help="make only part K of N of the shards (K from 0)")
    g.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"examples per shard directory (default {DEFAULT_SHARD_SIZE})")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--rng", choices=["counter", "paper"], default="counter",
                   help="counter: our generators (default); paper: the JS tool's LCG stream and generators, byte for "
                        "byte (see below)")
    g.add_argument("--split", choices=["train", "test"], help="with --rng paper: the tool's --mode")
    _engine_arguments(g, "one Ray task per shard")
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("merge", help="merge the parts of a sharded run into one corpus",
                       description="Merge directories holding the shards of one corpus (made with --shard K/N) "
                                   "into a new complete corpus. Checksums are verified.")
    m.add_argument("inputs", nargs="+", help="directories holding shards")
    m.add_argument("--out", required=True, help="new corpus directory")
    m.set_defaults(func=cmd_merge)

    e = sub.add_parser("export", help="write a corpus as paper-format JSONL or as training token streams",
                       description="jsonl: one {\"text\": …} line per example, the paper's format. tokens: a "
                                   "directory with tokens.npy (uint16), offsets.npy (int64), prompt_lengths.npy "
                                   "(int32) and meta.json; each sequence is <|bos|> text <|eos|>. parquet: one "
                                   "row per example for RL trainers (verl, TRL): prompt (verl's chat list), "
                                   "prompt_text, response, text, reward_model, extra_info, data_source, ability, "
                                   "rows, cols, generator, seed, index, maze_hash (needs pyarrow: "
                                   "pip install 'reasonless[parquet]').")
    e.add_argument("corpus", help="corpus directory")
    e.add_argument("--format", required=True, choices=["jsonl", "tokens", "parquet"])
    e.add_argument("--out", required=True, help="output file (jsonl, parquet) or directory (tokens)")
    e.add_argument("--split", default="train", help="parquet: the extra_info split name (default train)")
    e.add_argument("--arm", default="correct", choices=ARMS, metavar="ARM", help=ARM_HELP)
    e.add_argument("--arm-seed", type=int, default=0, help="seed of the arm's randomness (default 0)")
    e.add_argument("--threads", type=_threads, default=0)
    e.add_argument("--quiet", action="store_true")
    _engine_arguments(e, "one Ray task per shard (parquet: --out becomes a directory of part files)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="import paper-format JSONL or Parquet, re-solve with our A*, compare traces",
                       description="Read paper-format JSONL (as written by the public JavaScript and Rust "
                                   "generators) or Parquet (the layout `export --format parquet` writes: its "
                                   "text, rows and cols columns), store the problems as a corpus with our A* traces, and report how "
                                   "many stored traces equal ours. A line's rows/cols fields win over the flags.")
    i.add_argument("file", help="JSONL or Parquet file")
    i.add_argument("--out", required=True, help="new corpus directory")
    i.add_argument("--rows", type=int, default=30, help="grid rows when a line has no rows field (default 30)")
    i.add_argument("--cols", type=int, default=30, help="grid columns when a line has no cols field (default 30)")
    i.add_argument("--tie-break", default="fifo", choices=TIE_BREAKS)
    i.add_argument("--skip-invalid", action="store_true",
                   help="skip malformed or unsolvable lines (reported) instead of stopping at the first")
    i.add_argument("--threads", type=_threads, default=0)
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=cmd_import)

    s = sub.add_parser("stats", help="token-length and search-effort distributions of a corpus",
                       description="mean, median, p95, max and min of prompt, trace, plan and total tokens, "
                                   "operations and plan lengths: what you need to pick a context length.")
    s.add_argument("corpus", help="corpus directory")
    s.add_argument("--arm", default="correct", choices=ARMS, metavar="ARM", help=ARM_HELP)
    s.add_argument("--arm-seed", type=int, default=0, help="seed of the arm's randomness (default 0)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_stats)

    v = sub.add_parser("verify", help="check traces and plans against A* semantics (paper or strict rules)",
                       description="Verify A* traces and plans. INPUT is a corpus directory (its own traces, which "
                                   "must all pass strict), a paper-format JSONL ({\"text\": …} per line; each "
                                   "line's own trace and plan are checked) or a predictions JSONL "
                                   "({\"prompt\": …, \"response\": …} per line). Prints plan valid, plan optimal, "
                                   "trace valid and trace valid among valid plans, the plan × trace confusion "
                                   "matrix and the most frequent first errors.",
                       epilog="modes: paper = the rules of the paper authors' validator (numbers comparable with "
                              "the paper); strict = paper plus exact g and h, exactly the neighbours A* creates, "
                              "nothing after the goal, the plan equal to the trace's path.")
    v.add_argument("input", help="corpus directory or JSONL file")
    v.add_argument("--mode", default="strict", choices=["paper", "strict"])
    v.add_argument("--rows", type=int, default=30, help="grid rows for lines without a rows field (default 30)")
    v.add_argument("--cols", type=int, default=30, help="grid columns for lines without a cols field (default 30)")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.add_argument("--per-example", metavar="FILE",
                   help="also write one JSON object per example, in input order (plan_valid, plan_optimal, "
                        "trace_valid, first_error, first_error_at, …)")
    v.add_argument("--threads", type=_threads, default=0)
    v.add_argument("--fail-on-invalid", action="store_true",
                   help="exit 1 when some example's plan or trace is invalid (always so for a corpus, whose own A* "
                        "traces must all pass; for JSONL input the default exit status is 0)")
    _engine_arguments(v, "one Ray task per shard of a corpus")
    v.set_defaults(func=cmd_verify)

    d = sub.add_parser("dataset", help="build the datasets of a study (train corpus, test suites, arms)",
                       description="Study datasets declared in a TOML file (see studies/*.toml).")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = dsub.add_parser("build", help="build every corpus and arm of a study",
                        description="Build DIR/train, DIR/test/<suite> (mazes sharing a wall layout with the "
                                    "training corpus, or repeated within the suite, are removed and counted), "
                                    "DIR/arms/<arm> (training token streams) and DIR/study.json (every seed, count "
                                    "and removal). Re-running resumes.")
    b.add_argument("study", help="study TOML file, e.g. studies/tiny.toml")
    b.add_argument("--out", required=True, help="study directory")
    b.add_argument("--threads", type=_threads, default=0)
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_dataset_build)
    st = sub.add_parser("study", help="run a whole study: datasets, training per arm and seed, evaluation, report",
                        description="A study end to end from one TOML file (studies/*.toml).")
    stsub = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    sr = stsub.add_parser("run", help="run or resume every stage of a study",
                          description="Build the datasets, train every arm x seed for the same number of examples "
                                      "seen, evaluate the checkpoints at every evaluation point on the test suites, "
                                      "and write OUT/report/ (report.md, results.json, learning curves). Each stage "
                                      "is recorded in OUT/status.json and skipped once done; an interrupted stage "
                                      "continues where it stopped (kill -9 included), so rerunning the same command "
                                      "always finishes the study with the same results.",
                          epilog=STUDY_EPILOG, formatter_class=fmt)
    sr.add_argument("study", help="study TOML file with a [run] section, e.g. studies/tiny.toml")
    sr.add_argument("--out", required=True, help="study run directory")
    sr.add_argument("--threads", type=_threads, default=None, help="torch CPU threads (default: the file's [run] threads)")
    sr.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    sr.add_argument("--stop-after", default=None, metavar="STAGE",
                    help="stop after this stage, e.g. 'train correct seed 0' (see `study status` for names)")
    sr.add_argument("--quiet", action="store_true")
    sr.set_defaults(func=cmd_study_run)
    ss = stsub.add_parser("status", help="which stages of a study run are done, running, interrupted or missing",
                          description="One line per stage with its state and wall time.")
    ss.add_argument("dir", help="study run directory (the --out of `study run`)")
    ss.set_defaults(func=cmd_study_status)

    t = sub.add_parser("train", help="train a model from scratch on an arm's token streams",
                       description="Train a Qwen2-style decoder from scratch on packed token streams.",
                       epilog=TRAIN_EPILOG, formatter_class=fmt)
    t.add_argument("--data", required=True, help="token dir, or a study directory together with --arm")
    t.add_argument("--arm", default=None, help="arm to read from a study directory (DATA/arms/ARM)")
    t.add_argument("--preset", required=True, help="model preset: tiny, small or paper")
    t.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the preset, e.g. n_layer=2 (repeatable)")
    t.add_argument("--out", required=True, help="run directory (metrics, checkpoints)")
    length = t.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=float, help="passes over the training split")
    length.add_argument("--examples", type=int,
                        help="examples seen (steps from the packing's mean examples per step): equal data for arms "
                             "whose sequences differ in length")
    t.add_argument("--seq-len", type=int, default=1024, help="tokens per packed row (default 1024)")
    size = t.add_mutually_exclusive_group()
    size.add_argument("--batch-tokens", type=int, help="tokens per micro-batch and process (rows = T // seq-len)")
    size.add_argument("--rows", type=int, help="rows per micro-batch and process (default 1)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default 100)")
    t.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr / peak lr of the cosine (default 0.1)")
    t.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay of matrices (default 0.1)")
    t.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off (default 1.0)")
    t.add_argument("--seed", type=int, default=0, help="initialization and shuffling seed (default 0)")
    t.add_argument("--eval-every", type=int, default=0, help="validation every N steps (default: only at the end)")
    t.add_argument("--eval-batches", type=int, default=8, help="validation batches (default 8)")
    t.add_argument("--val-fraction", type=float, default=0.02, help="share held out for validation (default 0.02)")
    t.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (default 0: off)")
    t.add_argument("--save-minutes", type=float, default=5.0,
                   help="checkpoint every M minutes of wall time, so a kill loses at most that (default 5; 0: off)")
    t.add_argument("--threads", type=_threads, default=0,
                   help="torch CPU threads (default: torch's choice, one per core); warns when other processes "
                        "share the cores")
    t.add_argument("--keep-last", type=int, default=2, help="checkpoints kept besides the best (default 2)")
    t.add_argument("--grid", default=None, metavar="RxC", help="refuse data of another grid size, e.g. 30x30")
    t.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    t.add_argument("--attn-backend", default="auto", choices=["auto", "torch", "triton"],
                   help="attention implementation (auto: triton on CUDA when available, else torch)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="generate answers to test suites with a trained model and verify them",
                        description="For each suite, the first N prompts (as in training: <|bos|> query … up to "
                                    "`reasoning`) are answered by the model until `end`, <|eos|> or the token "
                                    "budget; every response is verified in both verifier modes. Writes one JSON "
                                    "line per example to --out and the per-suite metrics (rates with 95 % Wilson "
                                    "intervals, plan x trace confusion, top first errors, budget hits, generated vs "
                                    "reference trace length) to OUT.summary.json, and prints a table. Finished suites are kept "
                                    "in OUT.parts/ until the end, so rerunning the same command after a crash "
                                    "generates only the missing suites.",
                        epilog="budget: by default 2x the longest reference response of the suite (the A* trace "
                               "and plan), capped by the model's context (max_seq_len - prompt length).\n"
                               "example:\n  reasonless eval runs/correct --suites study --n 200 --out "
                               "evals/correct.jsonl", formatter_class=fmt)
    ev.add_argument("run", help="run directory (its checkpoints/) or a checkpoint directory")
    ev.add_argument("--suites", required=True,
                    help="a study directory (its test/<name> suites), a directory of corpora, or one corpus")
    ev.add_argument("--suite", action="append", default=None, metavar="NAME",
                    help="evaluate only this suite (repeatable; default: all)")
    ev.add_argument("--n", type=int, default=None, help="first N examples of each suite (default: all)")
    ev.add_argument("--mode", default="paper", choices=["paper", "strict"],
                    help="primary verifier mode of the printed table and of reports (default paper, the rules "
                         "of the paper's validator; both modes are always stored)")
    ev.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ev.add_argument("--top-k", type=int, default=0, help="sample among the K likeliest tokens, 0 = all (default)")
    ev.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ev.add_argument("--budget", type=int, default=None,
                    help="max new tokens per response (default: 2x the suite's longest reference response)")
    ev.add_argument("--batch-size", type=int, default=64, help="prompts generated together (default 64)")
    ev.add_argument("--checkpoint", default="best",
                    help="best (lowest validation loss, else newest), latest, or a checkpoint path")
    ev.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ev.add_argument("--out", required=True, help="per-example JSONL to write (summary: OUT.summary.json)")
    ev.add_argument("--quiet", action="store_true", help="no progress output")
    _engine_arguments(ev, "one Ray task per suite (num_gpus=1 when the cluster has GPUs)")
    ev.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="compare evaluations: Markdown tables, PNG plots, an HTML page",
                        description="Read eval JSONL files (written by `reasonless eval`, with their .summary.json) "
                                    "and write DIR/report.md: plan valid, trace valid and trace valid among valid "
                                    "plans per arm and suite with 95 % Wilson intervals, per-suite details and "
                                    "trace validity by reference-length bin; plus PNG plots (generated vs "
                                    "reference trace length with the correlation; validity by length) when "
                                    "matplotlib is installed; and DIR/index.html, the same tables and plots with "
                                    "a gallery of rendered failures, one folder that opens from disk.")
    rp.add_argument("evals", nargs="+", metavar="EVAL.jsonl", help="eval files, one per arm/run")
    rp.add_argument("--out", required=True, help="output directory")
    rp.add_argument("--mode", default=None, choices=["paper", "strict"],
                    help="verifier mode of the tables (default: the first eval's primary mode)")
    rp.add_argument("--no-plots", action="store_true", help="no PNG plots")
    rp.add_argument("--gallery", type=int, default=6, metavar="N",
                    help="index.html shows the first N invalid plans and N valid plans with invalid traces per "
                         "suite and evaluation, rendered (default 6; 0: no gallery)")
    rp.set_defaults(func=cmd_report)

    bn = sub.add_parser("bench", help="this machine's throughput at every stage, in one table",
                        description="Measures generation per generator, token export (to disk and to memory), arms, "
                                    "verification (the verifier on token streams and `verify CORPUS`), training "
                                    "tokens/s (and MFU on CUDA), sampling new tokens/s and, on CUDA, the Triton "
                                    "attention and decode kernels against scaled_dot_product_attention. Commands a "
                                    "user runs are timed as whole processes; every figure is the median of several "
                                    "runs, listed beside it. Default: 200,000 Wilson 30x30 examples, every "
                                    "generator, a few minutes on 2 cores; --quick: about a minute.")
    bn.add_argument("--quick", action="store_true", help="20,000 examples, Wilson only, 2 runs each (~1 min)")
    bn.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                    help="also write the figures and the machine as JSON to FILE (alone: print JSON instead of the "
                         "table), for tracking over time")
    bn.add_argument("--quiet", action="store_true", help="no progress lines")
    bn.set_defaults(func=cmd_bench)

    rd = sub.add_parser("render", help="draw a maze with its A* trace, or a model's response beside it (SVG/PNG)",
                        description="Draw example I of SRC: walls, start (S), goal (G), each closed cell coloured by "
                                    "its close order, cells created but never closed outlined, the plan as a path. "
                                    "A response (an arm's trace, a prediction, a model's answer) is judged by the "
                                    "verifier, replayed up to its first error, which is marked and named; invalid "
                                    "operations are outlined dashed; the A* reference is drawn beside it at the "
                                    "same scale. SRC: a corpus directory (--compare EVAL.jsonl adds the model's "
                                    "response to that example), an arm's token directory, a paper-format or "
                                    "predictions JSONL, or an eval JSONL (its suite corpus is found through the "
                                    ".summary.json). Same input, same bytes.")
    rd.add_argument("src", help="corpus directory, token directory, or JSONL file")
    rd.add_argument("--index", type=int, required=True,
                    help="example index (corpus, token dir) or record number from 0 (JSONL; with --suite: the "
                         "corpus index of an eval record of that suite)")
    rd.add_argument("--out", default=None, help="F.svg or F.png (PNG needs matplotlib; default render-SRC-I.svg)")
    rd.add_argument("--compare", default=None, metavar="EVAL.jsonl",
                    help="with a corpus SRC: draw the evaluated model's response to example I beside its A* trace")
    rd.add_argument("--suite", default=None, help="the eval suite to pick the record from (eval JSONL, --compare)")
    rd.add_argument("--mode", default=None, choices=["paper", "strict"],
                    help="verifier mode that names the first error (default: the eval's primary mode, else strict)")
    rd.add_argument("--rows", type=int, default=30, help="grid rows for JSONL lines without a rows field")
    rd.add_argument("--cols", type=int, default=30, help="grid columns for JSONL lines without a cols field")
    rd.set_defaults(func=cmd_render)

    x = sub.add_parser("export-hf", help="export a trained run as a Hugging Face Qwen2 model (transformers, vLLM)",
                       description="Write a directory that transformers (AutoModelForCausalLM, AutoTokenizer) and "
                                   "vLLM load as\nQwen2ForCausalLM: config.json, model.safetensors (tied head), a "
                                   "word-level tokenizer.json that\nadds <|bos|> like training did, "
                                   "generation_config.json (stops at `end` or <|eos|>) and\nreasonless.json (the "
                                   "source checkpoint, step, grid and vocabulary). Written under a temporary\n"
                                   "name and renamed, so an interrupted export leaves nothing behind.",
                       epilog=EXPORT_HF_EPILOG, formatter_class=fmt)
    x.add_argument("run", help="run directory (from `reasonless train`) or a checkpoint directory")
    x.add_argument("--out", required=True, help="directory to write (must be empty or absent unless --force)")
    x.add_argument("--checkpoint", default="best", metavar="best|latest|PATH",
                   help="which checkpoint of the run: best (lowest validation loss; the newest if none was "
                        "evaluated), latest, or a checkpoint path (default best)")
    x.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the exported weights (default float32)")
    x.add_argument("--force", action="store_true", help="replace a non-empty --out")
    x.set_defaults(func=cmd_export_hf)

    g = sub.add_parser("grpo", help="GRPO post-training of a trained run with verifier rewards",
                       description="Start from a trained run and, each rollout step, sample --group responses to "
                                   "--prompts training problems\n(prompt prefilled once per group), score them with "
                                   "the verifier (components plan_valid, plan_optimal,\ntrace_valid_paper, "
                                   "trace_valid_strict, each logged; the reward is their --reward weighted sum),\n"
                                   "compute group-relative advantages and take clipped policy-gradient steps.\n\n"
                                   "Writes OUT/metrics.jsonl (one line per rollout step: rollout_step and grad_steps, "
                                   "rewards,\nvalidity, lengths, truncation, entropy, KL, clip fraction, grad norm, "
                                   "time split and tokens/s)\nand checkpoints in the layout of `reasonless train`, so "
                                   "`reasonless eval OUT` and\n`reasonless export-hf OUT` work on it. --resume "
                                   "continues exactly (sampling noise is keyed by step).",
                       epilog="example:\n  reasonless grpo --init runs/correct --data study --arm correct --out "
                              "runs/correct-grpo --steps 200 --prompts 64 --group 8 --lr 1e-5 --eval-every 50 "
                              "--eval-n 200", formatter_class=fmt)
    g.add_argument("--init", required=True, help="the trained run (its best checkpoint) or a checkpoint directory")
    g.add_argument("--data", required=True, help="study directory (prompts from its train/ corpus) or a corpus")
    g.add_argument("--arm", required=True, choices=ARMS, metavar="ARM",
                   help="the arm the model was trained on; it only decides how responses are verified "
                        "(correct_no_costs: without cost tokens)")
    g.add_argument("--out", required=True, help="run directory to write (metrics, checkpoints)")
    g.add_argument("--steps", type=int, default=100, help="rollout steps (default 100)")
    g.add_argument("--prompts", type=int, default=64, help="prompts per rollout step (default 64)")
    g.add_argument("--group", type=int, default=8, help="samples per prompt (default 8)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    g.add_argument("--budget", type=int, default=None,
                   help="max new tokens per response (default: 2x the longest reference response of the corpus)")
    g.add_argument("--reward", default="plan_valid=1", metavar="NAME=W[,NAME=W]",
                   help="reward weights over plan_valid, plan_optimal, trace_valid_paper, trace_valid_strict "
                        "(default plan_valid=1, the paper's)")
    g.add_argument("--truncated", default="zero", choices=["zero", "mask"],
                   help="a response that hit the budget scores 0 (zero, default) or also leaves the loss (mask)")
    g.add_argument("--scale-rewards", default="group", choices=["group", "batch", "none"],
                   help="divide r - mean(group) by the group's std, the batch's, or nothing (default group)")
    g.add_argument("--loss", default="grpo", choices=["grpo", "dr_grpo", "dapo"],
                   help="grpo: mean per response then over responses; dr_grpo: token sum / (rows x budget); "
                        "dapo: mean over all tokens (default grpo)")
    g.add_argument("--clip-low", type=float, default=0.2, help="PPO clip below 1 (default 0.2)")
    g.add_argument("--clip-high", type=float, default=0.2, help="PPO clip above 1 (default 0.2)")
    g.add_argument("--beta", type=float, default=0.0,
                   help="weight of the k3 KL to the initial model (default 0: the reference is not loaded)")
    g.add_argument("--updates", type=int, default=1, help="passes over each rollout batch (default 1)")
    g.add_argument("--minibatch", type=int, default=None,
                   help="responses per gradient step (default: the whole rollout batch)")
    g.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate, constant (default 1e-5)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off (default 1.0)")
    g.add_argument("--filter-zero-std", action="store_true",
                   help="drop groups whose plan_valid rewards are all equal and sample more prompts to fill the batch")
    g.add_argument("--max-resample", type=int, default=4,
                   help="extra sampling rounds per step with --filter-zero-std (default 4)")
    g.add_argument("--seed", type=int, default=0, help="prompt order and sampling seed (default 0)")
    g.add_argument("--gen-batch", type=int, default=64, help="prompts generated together (default 64)")
    g.add_argument("--forward-tokens", type=int, default=32768,
                   help="tokens per training forward pass; gradients accumulate over passes (default 32768)")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N rollout steps (default: the end)")
    g.add_argument("--keep-last", type=int, default=2, help="checkpoints kept (default 2)")
    g.add_argument("--eval-every", type=int, default=0,
                   help="evaluate on the test suites every N rollout steps and at the end (default 0: never)")
    g.add_argument("--eval-n", type=int, default=None, help="first N problems of each suite (default: all)")
    g.add_argument("--eval-suites", default=None,
                   help="suites to evaluate on (default: the --data study's test/ suites)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    g.set_defaults(func=cmd_grpo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = "reasonless " + " ".join(shlex.quote(a) for a in argv)  # recorded in manifests
    try:
        rc = args.func(args)
    except (ValueError, OSError) as err:  # OSError: missing files, a full disk, permissions
        print(f"reasonless {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nreasonless {args.command}: interrupted; nothing half-written was left in place "
              f"(re-run the same command to resume)", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
