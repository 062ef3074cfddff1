"""Corpus generation and token export speed, whole process, as a researcher runs them.

    python -m pytest benchmarks/bench_generate.py --benchmark-columns=mean,rounds -s
    REASONLESS_BENCH_COUNT=1000000 python -m pytest benchmarks/bench_generate.py -s   # longer, steadier

Each case runs `reasonless generate` (or `export --format tokens`) in a fresh process with default threads at 30×30,
so Numba start-up and disk writes are included. Targets (issue 2, on the 2-core development machine) are printed
beside the measured rate; they are not asserted, since the rate depends on the machine.
"""
from __future__ import annotations

import os
import shutil

import pytest

from reasonless.bench import run_process

COUNT = int(os.environ.get("REASONLESS_BENCH_COUNT", "200000"))
TARGETS = {"wilson": 50_000, "kruskal": 100_000, "dfs": 100_000, "drunkards_walk": 100_000, "searchformer": 20_000,
           "cellular_automata": None}
EXPORT_TARGET = 200_000


def run_measured(argv: list[str]) -> int:
    """Runs `python -m reasonless ARGV` (as `reasonless bench` does); returns the child's peak resident bytes."""
    return run_process(argv)[1]


def report(benchmark, what: str, n: int, target, rss: int) -> None:
    rate = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(examples_per_s=round(rate), target=target, peak_rss_mb=round(rss / 2**20))
    goal = f" (target ≥ {target:,}/s)" if target else ""
    print(f"\n{what}: {rate:,.0f} examples/s{goal}, peak RSS {rss / 2**20:,.0f} MB, {n:,} examples")


@pytest.mark.parametrize("generator", list(TARGETS))
def test_generate(benchmark, tmp_path, generator):
    out = tmp_path / "corpus"
    rss = []

    def generate():
        rss.append(run_measured(["generate", "--generator", generator, "--count", str(COUNT), "--out", str(out),
                                 "--quiet"]))

    benchmark.pedantic(generate, setup=lambda: shutil.rmtree(out, ignore_errors=True), rounds=1)
    report(benchmark, f"generate {generator} 30x30", COUNT, TARGETS[generator], max(rss))


@pytest.fixture(scope="module")
def wilson_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "wilson"
    run_measured(["generate", "--generator", "wilson", "--count", str(COUNT), "--out", str(out), "--quiet"])
    return out


def test_export_tokens(benchmark, wilson_corpus, tmp_path):
    out = tmp_path / "tokens"
    rss = []

    def export():
        rss.append(run_measured(["export", str(wilson_corpus), "--format", "tokens", "--out", str(out), "--quiet"]))

    benchmark.pedantic(export, setup=lambda: shutil.rmtree(out, ignore_errors=True), rounds=1)
    report(benchmark, "export --format tokens (correct arm, wilson 30x30)", COUNT, EXPORT_TARGET, max(rss))
