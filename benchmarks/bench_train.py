"""Training throughput: tokens/s (and MFU on a GPU) of `reasonless train` on real maze token streams.

What is timed is the real path: a Wilson corpus is generated, exported as correct-arm token streams, and
``reasonless.train.train`` runs on it (packing loader, forward, backward, AdamW, metrics). Each step's tokens/s
comes from the run's ``metrics.jsonl``; the figure is the median over the steps after ``--warmup-steps`` (the
first steps pay for allocation, autotuning and compilation).

MFU follows train.py: ``train_flops`` of each step's real examples / step time / the card's dense bf16 peak, i.e.
6·(matmul parameters) per example token plus PaLM's 12·layers·heads·head_dim·ℓ² for attention per example of ℓ
tokens (packed examples attend only within themselves; padding counts nowhere). tokens/s counts every slot of the
packed rows, padding included; the metrics' example_tokens_per_s counts the examples' tokens only.

    python benchmarks/bench_train.py                       # CPU: tiny preset, 30×30 mazes
    python benchmarks/bench_train.py --preset paper --seq-len 8192 --rows 4 --backends torch,triton
    python -m pytest benchmarks/bench_train.py -q          # the CPU figure as a pytest-benchmark test
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pytest

from reasonless.corpus import generate
from reasonless.interchange import export_tokens
from reasonless.train import train


def make_tokens(root: Path, count: int, size: int, seed: int = 11) -> Path:
    corpus = generate(root / "corpus", "wilson", count, rows=size, cols=size, seed=seed, progress=False)
    export_tokens(corpus, root / "tokens", arm="correct")
    return root / "tokens"


def run(tokens: Path, out: Path, *, preset: str, seq_len: int, rows: int, steps: int, backend: str,
        device: str, warmup_steps: int) -> dict:
    """Trains ``steps`` steps and returns the median tokens/s (and MFU where known) after the warm-up."""
    train(tokens, out, preset=preset, steps=steps, seq_len=seq_len, rows=rows, lr=3e-4, warmup=2,
          val_fraction=0.01, device=device, attn_backend=backend, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = records[warmup_steps:] or records
    result = {"backend": backend, "steps": len(timed),
              "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
              "example_tokens_per_s": statistics.median(r["example_tokens_per_s"] for r in timed)}
    if all("mfu" in r for r in timed):
        result["mfu"] = statistics.median(r["mfu"] for r in timed)
    return result


def test_train_tiny_cpu(benchmark, tmp_path):
    tokens = make_tokens(tmp_path, 200, 30)
    counter = iter(range(10 ** 6))
    result = benchmark.pedantic(
        lambda: run(tokens, tmp_path / f"run{next(counter)}", preset="tiny", seq_len=8192, rows=1, steps=6,
                    backend="torch", device="cpu", warmup_steps=1),
        rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["tokens_per_s"] > 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", type=int, default=30, help="maze rows = cols (default 30)")
    p.add_argument("--count", type=int, default=1000, help="mazes in the corpus (default 1000)")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--rows", type=int, default=1, help="rows per step")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--backends", default="torch", help="comma-separated attention backends (torch,triton)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = make_tokens(tmp, args.count, args.size)
        print(f"| preset | backend | seq_len × rows | steps timed | tokens/s (padding included) | example tokens/s | MFU |")
        print(f"|---|---|---|---|---|---|---|")
        for backend in args.backends.split(","):
            try:
                r = run(tokens, tmp / f"run-{backend}", preset=args.preset, seq_len=args.seq_len, rows=args.rows,
                        steps=args.steps, backend=backend, device=args.device, warmup_steps=args.warmup_steps)
            except Exception as exc:  # one failing backend must not hide the others' figures
                print(f"| {args.preset} | {backend} | {args.seq_len} × {args.rows} | - | failed: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]} | - | - |", flush=True)
                continue
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
            print(f"| {args.preset} | {backend} | {args.seq_len} × {args.rows} | {r['steps']} | "
                  f"{r['tokens_per_s']:,.0f} | {r['example_tokens_per_s']:,.0f} | {mfu} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
