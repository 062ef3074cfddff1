"""Materializing training arms (arm trace + tokenization) at 30×30, examples/s per arm, over a Wilson corpus.
Project target (issue 4): 1,000,000 examples of any arm in under 20 s on the 2-core machine (≥ 50,000 examples/s).

    PYTHONPATH=. python -m pytest benchmarks/bench_arms.py -q
    PYTHONPATH=. python benchmarks/bench_arms.py [N]     # plain table; N examples (default 100,000)

The corpus (reasonless.generate, Wilson 30×30, seed 0) is made once into $REASONLESS_BENCH_DIR (default: a temporary
directory) and reused. A pass reads the corpus in 20,000-example batches (as export does), builds the arm's trace
(reasonless.arms.arm_batch) and tokenizes it into fresh arrays (Batch.tokens), so page faults of new outputs count;
the time of the trace step alone is shown beside it.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reasonless import arms
from reasonless.corpus import Corpus, generate

ROWS = COLS = 30
N_DEFAULT = 100_000
BATCH = 20_000


def corpus_of(n: int) -> Corpus:
    root = Path(os.environ.get("REASONLESS_BENCH_DIR") or Path(tempfile.gettempdir()) / "reasonless-bench-arms")
    path = root / f"wilson-{ROWS}x{COLS}-{n}"
    if (path / "manifest.json").is_file():
        return Corpus(path)
    return generate(path, "wilson", n, rows=ROWS, cols=COLS, seed=0)


def materialize(corpus: Corpus, arm: str, seed: int = 0, threads: int = 0) -> tuple[int, int, float]:
    """One pass: (examples, tokens, seconds spent in the arm-trace step)."""
    n = tokens = 0
    trace_s = 0.0
    for batch in corpus.batches(BATCH):
        t0 = time.perf_counter()
        b = arms.arm_batch(corpus, batch, arm, seed, threads)
        trace_s += time.perf_counter() - t0
        out, _, _ = b.tokens("none" if arm == "none" else "correct", threads)
        n += len(b)
        tokens += len(out)
    return n, tokens, trace_s


@pytest.fixture(scope="module")
def corpus():
    return corpus_of(int(os.environ.get("REASONLESS_BENCH_COUNT", N_DEFAULT)))


@pytest.mark.parametrize("arm", arms.ARMS)
def test_materialize(benchmark, corpus, arm):
    n, _, _ = benchmark.pedantic(materialize, args=(corpus, arm), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["examples_per_s"] = n / benchmark.stats.stats.mean


def main(n: int) -> None:
    corpus = corpus_of(n)
    materialize(corpus, "correct")  # warm the page cache
    print(f"{n:,} Wilson {ROWS}x{COLS} examples, batches of {BATCH:,}, all cores")
    print(f"{'arm':<26} {'examples/s':>12} {'s per 1M':>9} {'trace step':>11} {'tokens/example':>15}")
    for arm in arms.ARMS:
        t0 = time.perf_counter()
        count, tokens, trace_s = materialize(corpus, arm)
        dt = time.perf_counter() - t0
        print(f"{arm:<26} {count / dt:>12,.0f} {dt * 1e6 / count:>9.1f} {trace_s / dt:>10.0%} {tokens / count:>15,.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else N_DEFAULT)
