"""Generation throughput of ``reasonless.sample.generate``: new tokens per second, greedy, random weights.

The model has random weights and the prompts are random ids, and nothing stops a row (no stop ids), so every
row generates its whole budget and the work is fixed: prefill of the prompts plus ``new_tokens`` decode steps.
tokens/s counts new tokens only (rows × new_tokens / wall time of the ``generate`` call, prefill included).

    python benchmarks/bench_sample.py                                   # CPU: tiny, 16 prompts of ~200, 300 new
    python benchmarks/bench_sample.py --device cuda --preset paper --batch 64 --new-tokens 5000 --hf
    python -m pytest benchmarks/bench_sample.py -q -s                   # CPU figure (+ CUDA ones on a GPU)
    python benchmarks/bench_sample.py --hf --pairs 5                    # 5 alternating pairs: ratios, median

``--hf`` also times Hugging Face ``generate`` on the same weights (exported with ``reasonless.export_hf``,
loaded as ``Qwen2ForCausalLM`` in bf16 on CUDA and float32 on CPU, with its default cache, left-padded prompts of the same lengths), where
transformers and ``reasonless.export_hf`` are available.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonless.model import Model, default_attn_backend, preset
from reasonless.sample import Sampling, generate
from reasonless.vocab import Vocab

VOCAB = 944  # 30×30 mazes


def make_model(preset_name: str, device: str, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    model = Model(preset(preset_name, VOCAB)).to(device).eval()
    model.attn_backend = default_attn_backend(device, decode=True)
    return model


def make_prompts(batch: int, length: int, spread: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length - spread, length + spread + 1, batch) if spread else np.full(batch, length)
    return [rng.integers(0, VOCAB, int(n)) for n in lengths]


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ours(model: Model, prompts, new_tokens: int, device: str, warmup: bool = True) -> dict:
    if warmup:  # allocator, kernel compilation and autotuning are not the steady state
        generate(model, prompts[:2], 4, stop_ids=())
    sync(device)
    t0 = time.perf_counter()
    out = generate(model, prompts, new_tokens, stop_ids=(), sampling=Sampling(), batch_size=len(prompts))
    sync(device)
    dt = time.perf_counter() - t0
    n = sum(len(t) for t in out.tokens)
    assert n == len(prompts) * new_tokens
    return {"impl": f"reasonless ({model.attn_backend})", "seconds": dt, "tokens": n, "tokens_per_s": n / dt,
            "out": out}


def hf_twin(model: Model, vocab, device) -> tuple | None:
    """``model``'s weights as a transformers model on `device`, in the precision ours runs in: bf16 on CUDA (ours
    runs under bf16 autocast there), float32 on CPU; with its dtype name. None where transformers or export_hf
    is missing."""
    try:
        import transformers
        from reasonless.export_hf import export_model
    except ImportError as exc:
        print(f"(Hugging Face comparison skipped: {exc})", file=sys.stderr)
        return None
    dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, vocab, Path(tmp) / "hf", dtype=dtype)
        hf = transformers.AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=getattr(torch, dtype))
    return hf.to(device).eval(), dtype


def time_hf_generate(hf, prompts, new_tokens: int, device, **options) -> tuple[float, torch.Tensor]:
    """Seconds of one ``hf.generate`` call on the left-padded `prompts` making exactly `new_tokens` per row
    (``min_new_tokens`` too), after a 4-token warm-up, and the new tokens it made ((rows, new_tokens))."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as decoder-only generation needs
        ids[i, width - len(p):] = torch.from_numpy(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)

    def run(n):
        with torch.inference_mode():
            return hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, pad_token_id=0,
                               **options)

    run(4)
    sync(device)
    t0 = time.perf_counter()
    seqs = run(new_tokens)
    sync(device)
    return time.perf_counter() - t0, seqs[:, width:]


def time_hf(twin: tuple, prompts, new_tokens: int, device: str) -> dict:
    """Hugging Face generate of ``twin`` (:func:`hf_twin`) greedy on the same work as :func:`time_ours`. With
    transformers' default (dynamic) cache: its static cache compiles the model for each cache length, which would
    be timed here or need a second full-length run to warm up."""
    seconds, seqs = time_hf_generate(twin[0], prompts, new_tokens, device, do_sample=False)
    n = seqs.numel()
    return {"impl": f"transformers generate ({twin[1]})", "seconds": seconds, "tokens": n,
            "tokens_per_s": n / seconds, "seqs": seqs.cpu().numpy()}


def report(rows: list[dict], title: str) -> None:
    print(title)
    print("| generation | new tokens | seconds | new tokens/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['tokens']:,} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} |")


def report_pairs(runs: list[dict], ours_name: str) -> None:
    """Alternating timings, each a dict with "ours" and "hf" (None without transformers): one row per pair with its
    ratio, and the median ratio when there are several pairs."""
    print(f"| pair | new tokens | {ours_name} (s) | new tokens/s | transformers generate (s) | new tokens/s | "
          f"ours / transformers |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for i, run in enumerate(runs, 1):
        ours, hf = run["ours"], run["hf"]
        theirs = f"{hf['seconds']:.2f} | {hf['tokens_per_s']:,.0f}" if hf else "– | –"
        ratio = ""
        if hf:
            ratios.append(ours["tokens_per_s"] / hf["tokens_per_s"])
            ratio = f"{ratios[-1]:.2f}x"
        print(f"| {i} | {ours['tokens']:,} | {ours['seconds']:.2f} | {ours['tokens_per_s']:,.0f} | {theirs} | {ratio} |")
    if len(ratios) > 1:
        print(f"| median of {len(ratios)} | | | | | | {float(np.median(ratios)):.2f}x "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |")


def agreement(ours, theirs, k: int = 32) -> float:
    """Fraction of rows whose first k greedy tokens agree (bf16 rounding makes long runs drift apart)."""
    return float(np.mean([np.array_equal(a[:k], b[:k]) for a, b in zip(ours.tokens, theirs)]))


# --------------------------------------------------------------------------------------------------
# pytest-benchmark


def test_sample_tiny_cpu(benchmark):
    model = make_model("tiny", "cpu")
    prompts = make_prompts(16, 200, 10)
    generate(model, prompts[:2], 4, stop_ids=())
    result = benchmark.pedantic(lambda: time_ours(model, prompts, 300, "cpu", warmup=False), rounds=2, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "out"})
    report([result], "tiny preset, CPU, 16 prompts of ~200 tokens, 300 new tokens, greedy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_paper_cuda(benchmark):
    model = make_model("paper", "cuda")
    prompts = make_prompts(64, 200, 0)
    result = benchmark.pedantic(lambda: time_ours(model, prompts, 5000, "cuda"), rounds=1, iterations=1)
    rows = [result]
    twin = hf_twin(model, Vocab(30, 30), "cuda")
    if twin is not None:
        hf = time_hf(twin, prompts, 5000, "cuda")
        rows.append(hf)
        benchmark.extra_info["hf_tokens_per_s"] = hf["tokens_per_s"]
        benchmark.extra_info["agreement_first_32"] = agreement(result["out"], hf["seqs"])
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "out"})
    report(rows, "paper preset, CUDA, 64 prompts of 200 tokens, 5000 new tokens, greedy")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=200)
    ap.add_argument("--spread", type=int, default=10, help="prompt lengths vary by ± this much")
    ap.add_argument("--new-tokens", type=int, default=300)
    ap.add_argument("--hf", action="store_true", help="also time Hugging Face generate on the same weights")
    ap.add_argument("--pairs", type=int, default=1,
                    help="with --hf: alternating (ours, theirs) timings, each pair's ratio and their median")
    args = ap.parse_args(argv)
    model = make_model(args.preset, args.device)
    prompts = make_prompts(args.batch, args.prompt_len, args.spread)
    title = (f"{args.preset} preset, {args.device}, {args.batch} prompts of ~{args.prompt_len} tokens, "
             f"{args.new_tokens} new tokens, greedy, torch threads {torch.get_num_threads()}")
    if not args.hf:
        report([time_ours(model, prompts, args.new_tokens, args.device)], title)
        return
    twin = hf_twin(model, Vocab(30, 30), args.device)
    runs = []
    for i in range(args.pairs):
        ours = time_ours(model, prompts, args.new_tokens, args.device, warmup=i == 0)
        runs.append({"ours": ours, "hf": None if twin is None else time_hf(twin, prompts, args.new_tokens, args.device)})
    print(title)
    report_pairs(runs, f"reasonless ({model.attn_backend})")
    if twin is not None:
        print(f"| rows whose first 32 greedy tokens agree | {agreement(runs[0]['ours']['out'], runs[0]['hf']['seqs']):.0%} "
              f"| | | | | |")


if __name__ == "__main__":
    main()
