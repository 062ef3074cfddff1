"""GRPO rollout throughput and the time split of a step: ``reasonless.grpo.run_grpo`` on maze prompts.

A model with random weights (the preset's shape) is saved as the initial checkpoint, a corpus of Wilson mazes gives
the prompts, and a few GRPO steps run with the verifier as the reward. Random weights rarely stop, so most rows
use their whole token budget: the work per step is close to P × G × budget new tokens. The table reports, per
step, the rollout tokens/s (new tokens / sampling time) and the split sample / verify / log-prob / update with
each part's share of the step; ``--hf`` also compares the sampler alone with Hugging Face ``generate`` on the same weights and the same
fixed work: P prompts × G samples at temperature 1, every row exactly ``budget`` new tokens (no stop token for ours,
``min_new_tokens`` for theirs, ``num_return_sequences=G``; float32 on CPU, bf16 on CUDA). The GRPO steps' own
tokens/s are lower than that fixed-work figure: rows stop at different lengths, and the last rows of a batch
decode alone.

    python benchmarks/bench_grpo.py                                   # CPU: tiny, 8x8 mazes, 16 prompts x 8
    python benchmarks/bench_grpo.py --device cuda --preset paper --grid 30 --prompts 64 --group 8 --budget 1000 --hf
    python -m pytest benchmarks/bench_grpo.py -q -s                   # the CPU figure
    python benchmarks/bench_grpo.py --hf --pairs 5                    # 5 alternating sampler pairs, median ratio
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reasonless import checkpoint as ckpt_io
from reasonless.corpus import Corpus, generate
from reasonless.grpo import GRPOConfig, MazeTask, run_grpo
from reasonless.model import Model, preset
from reasonless.sample import Sampling, generate_groups, load_model

from bench_sample import hf_twin, report_pairs, sync, time_hf_generate  # benchmarks/ is on sys.path: run as a script or by pytest

PARTS = ("sample", "verify", "logprob", "update")


def run(preset_name: str, grid: int, prompts: int, group: int, budget: int | None, steps: int, device: str,
        hf: bool = False, work: Path | None = None, pairs: int = 1) -> dict:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        corpus = generate(tmp / "corpus", "wilson", max(prompts * (steps + 1), 64), rows=grid, cols=grid, seed=3)
        torch.manual_seed(0)
        model = Model(preset(preset_name, len(corpus.vocab)))
        ckpt_io.save_checkpoint(tmp / "init", 0, model, model.config.to_dict(), None, {})
        cfg = GRPOConfig(steps=steps, prompts=prompts, group=group, budget=budget, lr=1e-6, gen_batch=prompts)
        task = MazeTask(Corpus(tmp / "corpus"), "correct")
        summary = run_grpo(task, tmp / "run", cfg, init=tmp / "init", device=device, progress=False)
        result = {"preset": preset_name, "grid": grid, "prompts": prompts, "group": group,
                  "budget": summary["budget"], "device": device, "threads": torch.get_num_threads(),
                  "steps": summary["metrics"]}
        if hf:
            result["fixed"] = compare_samplers(tmp / "init", task, prompts, group, summary["budget"], device, pairs)
    return result


def compare_samplers(init: Path, task: MazeTask, prompts: int, group: int, budget: int, device: str,
                     pairs: int = 1) -> list[dict]:
    """Ours (``generate_groups``) and Hugging Face generate on the initial weights, P prompts × G samples at
    temperature 1, ``budget`` new tokens each, timed in ``pairs`` alternating pairs (ours, then theirs) so that
    each ratio compares runs made moments apart; theirs is None without transformers."""
    from reasonless.vocab import Vocab

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    batch = task.problems(np.arange(prompts)).prompts
    model, _ = load_model(ckpt_io.resolve_checkpoint(init, "latest")[0], device=dev)
    twin = hf_twin(model.cpu(), Vocab(task.corpus.rows, task.corpus.cols), dev)  # exported from the CPU copy
    model.to(dev)
    sampling = Sampling(temperature=1.0, seed=1)
    generate_groups(model, batch[:2], 2, 4, stop_ids=(), sampling=sampling)  # warm-up
    runs = []
    for _ in range(pairs):
        sync(dev)
        t0 = time.perf_counter()
        out = generate_groups(model, batch, group, budget, stop_ids=(), sampling=sampling, batch_groups=prompts)
        sync(dev)
        seconds = time.perf_counter() - t0
        tokens = sum(len(t) for t in out.tokens)
        ours = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
        runs.append({"ours": ours, "hf": None if twin is None else time_hf(twin[0], batch, group, budget, dev)})
    return runs


def time_hf(hf, batch: list, group: int, budget: int, dev: torch.device) -> dict:
    """Hugging Face generate: the prompts × G samples at temperature 1, ``budget`` new tokens each (every row does
    the full work)."""
    seconds, seqs = time_hf_generate(hf, batch, budget, dev, do_sample=True, temperature=1.0, top_k=0,
                                     top_p=1.0, num_return_sequences=group)
    return {"seconds": seconds, "tokens": seqs.numel(), "tokens_per_s": seqs.numel() / seconds}


def report(result: dict) -> None:
    print(f"GRPO, {result['preset']} preset, {result['grid']}x{result['grid']} mazes, {result['prompts']} prompts x "
          f"{result['group']} samples, budget {result['budget']} tokens, device {result['device']}, "
          f"torch threads {result['threads']}")
    print("| rollout step | new tokens | rollout tokens/s | step (s) | " +
          " | ".join(f"{p} (s, share)" for p in PARTS) + " |")
    print("|---:|---:|---:|---:|" + "---:|" * len(PARTS))
    for m in result["steps"]:
        step = m["time_step_s"]
        tokens = round(m["response_len_mean"] * m["samples"])
        parts = " | ".join(f"{m[f'time_{p}_s']:.2f} ({m[f'time_{p}_s'] / step:.1%})" for p in PARTS)
        print(f"| {m['rollout_step']} | {tokens:,} | {m['tokens_per_s']:,.0f} | {step:.2f} | {parts} |")
    if result.get("fixed"):
        print(f"\nSampling alone, {result['prompts']} x {result['group']} rows of exactly {result['budget']} new tokens")
        report_pairs(result["fixed"], "reasonless generate_groups")


# --------------------------------------------------------------------------------------------------
# pytest-benchmark


def test_grpo_tiny_cpu(benchmark, tmp_path):
    result = benchmark.pedantic(lambda: run("tiny", 8, 16, 8, None, 2, "cpu", work=tmp_path), rounds=1,
                                iterations=1)
    last = result["steps"][-1]
    benchmark.extra_info.update({"tokens_per_s": last["tokens_per_s"],
                                 **{f"time_{p}_s": last[f"time_{p}_s"] for p in PARTS}})
    report(result)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--grid", type=int, default=8, help="maze rows = cols")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--budget", type=int, default=None, help="new tokens per row (default: the task's)")
    ap.add_argument("--steps", type=int, default=2, help="rollout steps (the first includes warm-up)")
    ap.add_argument("--hf", action="store_true",
                    help="also compare the sampler alone with Hugging Face generate (same rows, fixed length)")
    ap.add_argument("--pairs", type=int, default=1,
                    help="with --hf: alternating (ours, theirs) timings, each pair's ratio and their median")
    args = ap.parse_args(argv)
    report(run(args.preset, args.grid, args.prompts, args.group, args.budget, args.steps, args.device, args.hf,
               pairs=args.pairs))


if __name__ == "__main__":
    main()
