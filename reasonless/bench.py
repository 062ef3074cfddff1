"""`reasonless bench`: this machine's throughput at every stage, in one table.

Whole-process figures wherever a user would run a command (`generate`, `export`, `verify`: a fresh
``python -m reasonless`` each time, start-up included), in-process figures for the parts behind them (tokens to
memory, arms, the verifier on token streams, training, sampling), each the median of several runs. On CUDA, the
Triton attention kernels against ``torch.nn.functional.scaled_dot_product_attention`` and decode.

The pytest-benchmark suites in ``benchmarks/`` time the same functions (see ``benchmarks/bench_generate.py``).
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GENERATORS = ("wilson", "kruskal", "dfs", "drunkards_walk", "searchformer", "cellular_automata")


@dataclass
class Figure:
    """One measured figure: the median of ``runs`` (all kept, for the JSON)."""

    stage: str
    what: str
    value: float
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""


def machine() -> dict:
    """What ran the figures: CPU model and cores, memory, GPU, versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from . import __version__

    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "reasonless": __version__, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime())}


def run_process(argv: list[str]) -> tuple[float, int]:
    """Runs ``python -m reasonless ARGV`` to completion: (wall seconds, peak resident bytes of the child)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "reasonless", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"reasonless {' '.join(argv)} failed: {err.strip().splitlines()[-1] if err else status}")
    return wall, usage.ru_maxrss * 1024


def _median(stage: str, what: str, unit: str, runs: list[float], note: str = "") -> Figure:
    return Figure(stage, what, statistics.median(runs), unit, [round(r, 1) for r in runs], note)


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


# ---------------------------------------------------------------------------------------------- the stages
def bench_generate(tmp: Path, count: int, repeat: int, generators=GENERATORS, size: int = 30) -> list[Figure]:
    """`reasonless generate` per generator, whole process (Numba's cache warm: one untimed run first)."""
    figures = []
    for gen in generators:
        folders = (tmp / f"{gen}-{k}" for k in itertools.count(1))

        def once():
            return run_process(["generate", "--generator", gen, "--count", str(count), "--rows", str(size),
                                "--cols", str(size), "--out", str(next(folders)), "--quiet"])[0]

        once()
        figures.append(_median("generate", f"{gen} {size}x{size}", "examples/s",
                               [count / once() for _ in range(repeat)], "whole process"))
    return figures


def bench_export(tmp: Path, corpus_dir: Path, repeat: int) -> list[Figure]:
    """Token export: whole process to disk (the corpus just written, so in the page cache), and in memory."""
    from .corpus import Corpus

    corpus = Corpus(corpus_dir)
    n = len(corpus)
    disk = [n / run_process(["export", str(corpus_dir), "--format", "tokens", "--out", str(tmp / f"tok-{k}"),
                             "--quiet"])[0] for k in range(repeat)]

    def to_memory():
        for batch in corpus.batches():
            batch.tokens("correct")

    memory = [n / t for t in _timed(to_memory, repeat)]
    return [_median("export", "tokens to disk", "examples/s", disk,
                    "whole process; corpus in the page cache (just written); a cold cache reads the disk"),
            _median("export", "tokens to memory", "examples/s", memory, "in process")]


def bench_arms(corpus_dir: Path, repeat: int) -> list[Figure]:
    """Each arm's token streams built in memory (the swapped arm gathers other examples' traces)."""
    from .arms import arm_tokens
    from .corpus import Corpus

    corpus = Corpus(corpus_dir)
    figures = []
    for arm in ("correct", "none", "swapped", "correct_no_costs"):
        def build():
            for batch in corpus.batches():
                arm_tokens(corpus, batch, arm, 7)
        figures.append(_median("arms", arm, "examples/s", [len(corpus) / t for t in _timed(build, repeat)],
                               "in process"))
    return figures


def bench_verify(corpus_dir: Path, repeat: int) -> list[Figure]:
    """The verifier alone on token streams (tokenized beforehand, untimed) and `reasonless verify CORPUS`."""
    from . import _core
    from .corpus import Corpus

    corpus = Corpus(corpus_dir)
    batches = []
    for batch in corpus.batches():
        tokens, offsets, prompts = batch.tokens("correct")
        batches.append((batch, tokens, offsets[:-1] + prompts, offsets[1:]))

    def verify_tokens():
        for b, tokens, begins, ends in batches:
            _core.verify_batch(b.walls, b.rows, b.cols, b.start, b.goal, tokens, begins, ends, "strict", 0)

    alone = [len(corpus) / t for t in _timed(verify_tokens, repeat)]
    whole = [len(corpus) / run_process(["verify", str(corpus_dir)])[0] for _ in range(repeat)]
    return [_median("verify", "verifier on token streams (strict)", "traces/s", alone, "in process"),
            _median("verify", "verify CORPUS (strict)", "traces/s", whole,
                    "whole process: checksums, tokenizing and verifying")]


def bench_train_and_sample(tmp: Path, corpus_dir: Path, steps: int, size: int) -> list[Figure]:
    """Training tokens/s (padding included and not) and MFU (CUDA) of the tiny preset, then sampling new tokens/s
    from the model it trained (greedy, KV cache)."""
    import torch

    from .corpus import Corpus
    from .interchange import export_tokens
    from .sample import generate, load_model
    from .train import train

    tokens_dir = tmp / "train-tokens"
    export_tokens(Corpus(corpus_dir), tokens_dir, "correct")
    run = tmp / "run"
    seq_len = 8192 if size >= 20 else 2048
    train(tokens_dir, run, preset="tiny", steps=steps, seq_len=seq_len, rows=1, lr=1e-3, warmup=2,
          val_fraction=0.01, progress=False, save_minutes=0)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timed = records[min(2, len(records) - 1):]
    cuda = torch.cuda.is_available()
    where = "CUDA" if cuda else f"CPU, {torch.get_num_threads()} threads"
    figures = [_median("train", "tiny preset, all slots", "tokens/s", [r["tokens_per_s"] for r in timed],
                       f"{where}; padding included, {seq_len} tokens per row"),
               _median("train", "tiny preset, example tokens", "tokens/s",
                       [r["example_tokens_per_s"] for r in timed], "padding left out")]
    if all("mfu" in r for r in timed):
        figures.append(_median("train", "tiny preset MFU", "%", [100 * r["mfu"] for r in timed], where))

    model, _meta = load_model(run, which="latest")
    corpus = Corpus(corpus_dir)
    batch = next(corpus.batches(64))
    tokens, offsets, prompts = batch.tokens("correct")
    prompt_ids = [tokens[offsets[i]:offsets[i] + prompts[i]] for i in range(len(batch))]

    def sample_once():
        out = generate(model, prompt_ids, 256, batch_size=64)
        sample_once.new = sum(len(t) for t in out.tokens)

    times = _timed(sample_once, 2)
    figures.append(_median("sample", f"greedy, {len(prompt_ids)} prompts, KV cache", "new tokens/s",
                           [sample_once.new / t for t in times], where))
    return figures


def bench_cuda() -> list[Figure]:
    """Triton attention (forward + backward) against scaled_dot_product_attention on one packed batch, and decode
    against SDPA over the same cache. Empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    import torch.nn.functional as F

    from .kernels import decode_attn, varlen_attention

    dev, dtype = torch.device("cuda"), torch.bfloat16
    lengths = [2048] * 8
    hq, hkv, d = 14, 2, 64
    total = sum(lengths)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=dev)
    q = torch.randn(total, hq, d, device=dev, dtype=dtype, requires_grad=True)
    k = torch.randn(total, hkv, d, device=dev, dtype=dtype, requires_grad=True)
    v = torch.randn(total, hkv, d, device=dev, dtype=dtype, requires_grad=True)

    def cuda_times(fn, repeat=10):
        fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - started)
        return out

    def triton_step():
        varlen_attention(q, k, v, cu, max(lengths)).sum().backward()

    def sdpa_step():
        b = len(lengths)
        qs = q.view(b, lengths[0], hq, d).transpose(1, 2)
        ks = k.view(b, lengths[0], hkv, d).transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
        vs = v.view(b, lengths[0], hkv, d).transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
        F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).sum().backward()

    figures = [_median("cuda", f"attention fwd+bwd, triton ({len(lengths)}x{lengths[0]}, {hq}/{hkv} heads, d {d})",
                       "tokens/s", [total / t for t in cuda_times(triton_step)]),
               _median("cuda", "attention fwd+bwd, SDPA (same)", "tokens/s",
                       [total / t for t in cuda_times(sdpa_step)])]
    batch, cache = 64, 4096
    qd = torch.randn(batch, hq, d, device=dev, dtype=dtype)
    kc = torch.randn(batch, cache, hkv, d, device=dev, dtype=dtype)
    vc = torch.randn(batch, cache, hkv, d, device=dev, dtype=dtype)
    lens = torch.full((batch,), cache, dtype=torch.int32, device=dev)
    kt = kc.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vt = vc.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    figures += [_median("cuda", f"decode, triton ({batch} rows x {cache} cached)", "rows/s",
                        [batch / t for t in cuda_times(lambda: decode_attn(qd, kc, vc, lens))]),
                _median("cuda", "decode, SDPA (same)", "rows/s",
                        [batch / t for t in cuda_times(
                            lambda: F.scaled_dot_product_attention(qd.unsqueeze(2), kt, vt))])]
    return figures


# ---------------------------------------------------------------------------------------------- the run
def run(quick: bool = False, progress: bool = True, count: int | None = None, size: int = 30) -> dict:
    """Every stage on ``count`` examples of size×size mazes; ``quick`` sizes it to about a minute on 2 cores (20,000
    examples, two runs per figure, Wilson only)."""
    count = count or (20_000 if quick else 200_000)
    repeat = 2 if quick else 3
    figures: list[Figure] = []

    def say(text: str) -> None:
        if progress:
            print(f"bench: {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="reasonless-bench-") as tmp:
        tmp = Path(tmp)
        say(f"generation ({count:,} examples, {size}x{size}, whole process)")
        figures += bench_generate(tmp, count, repeat, ("wilson",) if quick else GENERATORS, size)
        corpus_dir = tmp / "wilson-1"
        say("token export")
        figures += bench_export(tmp, corpus_dir, repeat)
        say("arms")
        figures += bench_arms(corpus_dir, repeat)
        say("verification")
        figures += bench_verify(corpus_dir, repeat)
        say("training and sampling")
        figures += bench_train_and_sample(tmp, corpus_dir, 6 if quick else 12, size)
        say("CUDA kernels")
        figures += bench_cuda()
    return {"machine": machine(), "quick": quick, "examples": count, "size": size,
            "figures": [asdict(f) for f in figures]}


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['memory']}" + (f", {m['gpu']}" if m["gpu"] else
                                                                          ", no GPU"),
             f"python {m['python']}, torch {m['torch']}, reasonless {m['reasonless']}, {m['date']}"
             + (" (--quick)" if result["quick"] else ""), "",
             "| stage | what | median | unit | runs | note |", "|---|---|---:|---|---|---|"]
    for f in result["figures"]:
        value = f"{f['value']:,.1f}" if f["unit"] == "%" else f"{f['value']:,.0f}"
        runs = ", ".join(f"{r:,.0f}" if f["unit"] != "%" else f"{r:.1f}" for r in f["runs"])
        lines.append(f"| {f['stage']} | {f['what']} | {value} | {f['unit']} | {runs} | {f['note']} |")
    if not m["gpu"]:
        lines.append("| cuda | attention, decode | n/a | | | no CUDA device here |")
    return "\n".join(lines)
