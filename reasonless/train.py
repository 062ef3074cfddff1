"""Training from scratch on an arm's token streams (docs/design.md §7).

:func:`train` runs AdamW with linear warm-up and cosine decay, gradient clipping and accumulation,
bf16 autocast on CUDA (fp32 on CPU), validation on the held-out split, metrics as JSONL and atomic
checkpoints; ``resume=True`` continues from the latest checkpoint bit-for-bit on CPU. Under ``torchrun``
(RANK/WORLD_SIZE/LOCAL_RANK in the environment) it runs DDP (gloo on CPU, NCCL on CUDA) with the loader
sharded by rank; only rank 0 writes.

The loss of a step is the mean cross-entropy over every loss token (targets != -100) of the *global*
batch (all micro-batches of all ranks), so the result does not depend on how the batch is split over
accumulation steps and processes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt_io
from .data import IGNORE_INDEX, PackedLoader, check_token_dir
from .model import PRESETS, Model, default_attn_backend, num_params, preset as make_preset, train_flops
from .progress import clock

# Dense bf16 peak FLOP/s per GPU, for MFU (None elsewhere).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def lr_at(step: int, total: int, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup`` steps, then a
    cosine from ``lr`` down to ``lr·min_lr_ratio`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    low = lr * min_lr_ratio
    return low + 0.5 * (lr - low) * (1.0 + math.cos(math.pi * progress))


def example_lengths(batch) -> np.ndarray:
    """Lengths of the real examples packed in a batch (its padding segments left out), from its cu_seqlens."""
    segments = np.diff(batch.cu_seqlens.cpu().numpy().astype(np.int64))
    return segments[batch.segment_example >= 0]


def resolve_data_dir(data_dir, arm: str | None, progress: bool = False) -> Path:
    """The token dir: ``data_dir`` itself, or its ``arms/<arm>/`` (a study) or ``<arm>/``. Given a corpus, the arm's
    token streams in ``CORPUS/arms/<arm>/``, exported there first if missing (arm seed 0; seconds per million
    examples), saying so."""
    data_dir = Path(data_dir)
    if (data_dir / "manifest.json").is_file() and not (data_dir / "meta.json").is_file():
        return _corpus_arm(data_dir, arm or "correct", progress)
    if arm is None:
        return data_dir
    for cand in (data_dir / "arms" / arm, data_dir / arm):
        if (cand / "meta.json").is_file():
            return cand
    if (data_dir / "meta.json").is_file():
        meta_arm = json.loads((data_dir / "meta.json").read_text()).get("arm")
        if meta_arm is not None and meta_arm != arm:
            raise ValueError(f"{data_dir}: holds arm {meta_arm!r}, not {arm!r}")
        return data_dir
    raise ValueError(f"{data_dir}: no token dir for arm {arm!r} (looked for arms/{arm}/ and {arm}/)")


def _corpus_arm(corpus_dir: Path, arm: str, progress: bool) -> Path:
    from .corpus import Corpus
    from .interchange import export_tokens

    out = corpus_dir / "arms" / arm
    if not (out / "meta.json").is_file():
        started = time.perf_counter()
        out.parent.mkdir(exist_ok=True)
        meta = export_tokens(Corpus(corpus_dir), out, arm, progress=progress)
        print(f"{corpus_dir} is a corpus: wrote arm {arm!r} (arm seed 0) to {out}: {meta['examples']:,} sequences, "
              f"{meta['tokens']:,} tokens in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return out


def _check_out_dir(out_dir: Path) -> None:
    """A run folder must not be a corpus, one of its shards or a token export: checkpoints written there would
    mix with (and a later `generate` resume could delete) the data."""
    for folder in (out_dir, *out_dir.parents[:2]):
        for name, what in (("manifest.json", "a corpus"), ("shard.json", "a corpus shard"),
                           ("meta.json", "a token export")):
            if (folder / name).is_file():
                where = "is" if folder == out_dir else f"is inside {folder}, which is"
                raise ValueError(f"--out {out_dir} {where} {what}; give the run a folder of its own")


def steps_for_examples(loader: PackedLoader, examples: int, grad_accum: int = 1) -> int:
    """Optimizer steps that show about ``examples`` examples: packing puts a different number of examples in a
    row for each arm (a trace-free example is ~3x shorter), so budgets stated in examples are what keeps arms
    comparable. Uses the mean over an epoch of the loader's packing."""
    per_step = len(loader.indices) / len(loader) * grad_accum
    return max(1, math.ceil(examples / per_step))


def other_runnable() -> int | None:
    """Processes other than this one that are running or ready to run right now (Linux /proc/loadavg), or
    None where that is not known. Not the load average: it remembers a training that has just ended."""
    try:
        with open("/proc/loadavg") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return None





def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def _dist_setup(device_arg: str):
    """(rank, world_size, local_rank, device) — initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda requested but CUDA is not available")
        if world > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, local_rank, device


def _all_reduce_sum(values: list[float], world: int, device) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _loss_sum(model, batch, device, autocast):
    with autocast:
        logits = model(batch.tokens.reshape(-1), batch.cu_seqlens, batch.positions.reshape(-1), batch.max_seqlen)
    return F.cross_entropy(logits.float(), batch.targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


@torch.no_grad()
def evaluate(model, loader: PackedLoader, batches: int, device, autocast, world: int) -> float:
    """Mean cross-entropy over the loss tokens of the first ``batches`` batches of ``loader`` (all ranks)."""
    was_training = model.training
    model.eval()
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "step": 0})
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        batch = batch.to(device)
        total += float(_loss_sum(model, batch, device, autocast))
        count += batch.n_loss_tokens
    total, count = _all_reduce_sum([total, float(count)], world, device)
    model.train(was_training)
    return total / count if count else float("nan")


def train(data_dir, out_dir, *, arm: str | None = None, preset: str = "tiny", model_overrides: dict | None = None,
          steps: int | None = None, epochs: float | None = None, examples: int | None = None, seq_len: int = 1024,
          batch_tokens: int | None = None, rows: int | None = None, lr: float = 1e-3, warmup: int = 100,
          min_lr_ratio: float = 0.1, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
          grad_clip: float = 1.0, grad_accum: int = 1, seed: int = 0, eval_every: int = 0, eval_batches: int = 8,
          val_fraction: float = 0.02, save_every: int = 0, save_minutes: float = 5.0, keep_last: int = 2,
          keep_steps=(), compile: bool = False, resume: bool = False, device: str = "auto",
          attn_backend: str = "auto", threads: int = 0, expect_grid: tuple[int, int] | None = None,
          stop_at: int | None = None, progress: bool = True) -> dict:
    """Trains a model of ``preset`` on the token dir ``data_dir`` (or its arm ``arm``) into ``out_dir``.

    Batch: ``rows`` rows of ``seq_len`` tokens per micro-batch and rank (or ``batch_tokens`` // seq_len);
    an optimizer step uses ``grad_accum`` micro-batches on every rank. Length: ``steps`` optimizer steps,
    ``epochs`` passes over the training split, or ``examples`` examples seen (:func:`steps_for_examples`: the
    way to give arms whose sequences differ in length the same data). Writes ``out_dir/metrics.jsonl`` (one line
    per step with the examples and tokens seen so far, plus ``val_loss``) and checkpoints every ``save_every``
    steps, every ``save_minutes`` of wall time (so a kill loses little; resume is exact wherever it happens) and
    at the end, keeping the newest ``keep_last``, the best by validation loss and those at ``keep_steps``.
    ``threads`` > 0 sets torch's CPU threads. Returns a summary dict (losses per step, final val loss, tokens/s,
    the last checkpoint). ``stop_at``: end this invocation after that optimizer step with a checkpoint, the
    schedule still spanning ``steps`` (time-limited jobs; resume later)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; presets are: {', '.join(PRESETS)}")
    if sum(x is not None for x in (steps, epochs, examples)) != 1:
        raise ValueError("give exactly one of steps, epochs and examples")
    if steps is not None and steps < 1 or epochs is not None and not epochs > 0 \
            or examples is not None and examples < 1:
        raise ValueError(f"steps={steps}, epochs={epochs}, examples={examples}: must be positive")
    if threads < 0 or save_minutes < 0:
        raise ValueError(f"threads={threads}, save_minutes={save_minutes}: must be ≥ 0")
    if rows is None and batch_tokens is None:
        rows = 1
    for name, value in (("grad_accum", grad_accum), ("eval_batches", eval_batches)):
        if value < 1:
            raise ValueError(f"{name}={value}: must be at least 1")
    if warmup < 0 or not 0.0 <= min_lr_ratio <= 1.0 or not lr > 0 or grad_clip < 0 or weight_decay < 0:
        raise ValueError("need lr > 0, warmup ≥ 0, 0 ≤ min_lr_ratio ≤ 1, grad_clip ≥ 0, weight_decay ≥ 0")
    data_dir = resolve_data_dir(data_dir, arm, progress)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    _, _, _, meta = check_token_dir(data_dir, expect_grid=expect_grid)
    vocab_size = int(meta["vocab"]["size"])
    grid = [int(meta["rows"]), int(meta["cols"])]
    config = make_preset(preset, vocab_size, **(model_overrides or {}))
    if seq_len > config.max_seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the {preset} preset's max_seq_len={config.max_seq_len}")

    latest = ckpt_io.latest_checkpoint(out_dir)
    if resume and latest is None:
        raise ValueError(f"--resume: {out_dir} has no checkpoint to resume from")
    if not resume and latest is not None:
        raise ValueError(f"{out_dir} already holds checkpoints (newest {latest.name}); pass --resume to continue "
                         f"it or choose another --out")
    if latest is not None:
        saved = ckpt_io.load_checkpoint(latest)
        saved_grid = saved["trainer"].get("data", {}).get("grid")
        if saved_grid is not None and saved_grid != grid:
            raise ValueError(f"{data_dir}: {grid[0]}x{grid[1]} grid data, but the run in {out_dir} was trained on "
                             f"{saved_grid[0]}x{saved_grid[1]} (vocabulary {vocab_size} vs "
                             f"{saved['config'].get('vocab_size')}); resume with the same data")
        if saved["config"] != config.to_dict():
            raise ValueError(f"{latest / 'config.json'}: the run's model config differs from preset {preset!r} "
                             f"with these overrides; resume with the same model")

    if threads > 0:
        torch.set_num_threads(threads)
    rank, world, _local_rank, dev = _dist_setup(device)
    is_main = rank == 0
    busy = other_runnable() if dev.type == "cpu" and world == 1 else None
    if is_main and busy:
        print(f"warning: {busy} other process(es) are running on this machine's {os.cpu_count()} cores; torch's "
              f"{torch.get_num_threads()} threads slow down many times over when they share cores (measured "
              f"16,600 -> ~150 tokens/s): stop the other job or pass --threads 1", file=sys.stderr)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    if attn_backend == "auto":
        # triton on CUDA when the kernels import and take the head dim; REASONLESS_ATTN overrides
        attn_backend = default_attn_backend(dev, head_dim=config.head_dim)

    loader = PackedLoader(data_dir, seq_len, rows, batch_tokens=batch_tokens if rows is None else None,
                          seed=seed, rank=rank, world_size=world, split="train", val_fraction=val_fraction,
                          drop_last=False)
    val_loader = None
    try:
        val_loader = PackedLoader(data_dir, seq_len, loader.rows_per_batch, seed=seed, rank=rank,
                                  world_size=world, split="val", val_fraction=val_fraction, shuffle=False)
    except ValueError as err:
        if "split is empty" not in str(err) and "shorter than every example" not in str(err):
            raise
    if epochs is not None:
        steps = max(1, math.ceil(epochs * len(loader) / grad_accum))
    if examples is not None:
        steps = steps_for_examples(loader, examples, grad_accum)

    torch.manual_seed(seed)
    model = Model(config, attn_backend=attn_backend).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
    start_step, best_val = 0, None
    seen = {"examples": 0, "tokens": 0}
    metrics_path = out_dir / "metrics.jsonl"
    if latest is not None:
        state = ckpt_io.load_checkpoint(latest, model, optimizer, restore_rng=True)["trainer"]
        start_step = int(state["step"])
        loader.load_state_dict(state["data"]["loader"])
        seen = {"examples": int(state.get("examples_seen", 0)), "tokens": int(state.get("tokens_seen", 0))}
        best_val = state.get("best_val_loss")
        if is_main:
            ckpt_io.truncate_metrics(metrics_path, "step", start_step)
    if start_step >= steps and is_main:
        print(f"{out_dir}: already at step {start_step} of {steps}", file=sys.stderr)

    raw_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if compile:
        model = torch.compile(model)

    hparams = dict(preset=preset, model_overrides=model_overrides or {}, steps=steps, seq_len=seq_len,
                   rows=loader.rows_per_batch, world_size=world, grad_accum=grad_accum, lr=lr, warmup=warmup,
                   min_lr_ratio=min_lr_ratio, weight_decay=weight_decay, betas=list(betas), grad_clip=grad_clip,
                   seed=seed, val_fraction=val_fraction)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "run.json").write_text(json.dumps({"data": str(data_dir), "arm": meta.get("arm"), **hparams,
                                                      "n_params": num_params(config)}, indent=1) + "\n")
    peak = _peak_flops(dev)
    tokens_per_step = loader.rows_per_batch * seq_len * grad_accum * world
    batches = loader.forever()
    losses, last_val, last_ckpt = [], None, latest
    tok_s = float("nan")
    metrics = open(metrics_path, "a") if is_main else None

    def save(step: int, val_loss):
        nonlocal last_ckpt
        if not is_main:
            return
        trainer_state = {"data": {"loader": loader.state_dict(), "dir": str(data_dir), "grid": grid,
                                  "vocab_size": vocab_size, "arm": meta.get("arm")},
                         "val_loss": val_loss, "best_val_loss": best_val, "hparams": hparams,
                         "examples_seen": seen["examples"], "tokens_seen": seen["tokens"]}
        last_ckpt = ckpt_io.save_checkpoint(out_dir, step, raw_model, config.to_dict(), optimizer, trainer_state)
        ckpt_io.prune_checkpoints(out_dir, keep_last, keep_steps)

    model.train()
    t_start = time.perf_counter()
    last_save, last_line = t_start, 0.0
    keep_steps = {int(k) for k in keep_steps}
    try:
        end = steps if stop_at is None else max(start_step, min(steps, stop_at))
        for step in range(start_step, end):
            t0 = time.perf_counter()
            cur_lr = lr_at(step, steps, lr, warmup, min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = cur_lr
            micro = [next(batches) for _ in range(grad_accum)]
            n_local = sum(b.n_loss_tokens for b in micro)
            ex_local = sum(int((b.segment_example >= 0).sum()) for b in micro)
            lengths = [example_lengths(b) for b in micro]
            tok_local = sum(int(x.sum()) for x in lengths)
            sq_local = sum(int((x * x).sum()) for x in lengths)
            n_global, ex_global, tok_global, sq_global = _all_reduce_sum(
                [float(n_local), float(ex_local), float(tok_local), float(sq_local)], world, dev)
            seen["examples"] += int(ex_global)
            seen["tokens"] += int(tok_global)
            # DDP averages gradients over ranks; scaling by world makes the result the global token mean.
            scale = world / max(n_global, 1.0)
            loss_sum = 0.0
            for i, batch in enumerate(micro):
                batch = batch.to(dev, non_blocking=True)
                sync = world == 1 or i == grad_accum - 1
                ctx = model.no_sync() if not sync and hasattr(model, "no_sync") else nullcontext()
                with ctx:
                    s = _loss_sum(model, batch, dev, autocast)
                    (s * scale).backward()
                loss_sum += float(s.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(),
                                                       grad_clip if grad_clip > 0 else float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            (loss_global,) = _all_reduce_sum([loss_sum], world, dev)
            loss = loss_global / max(n_global, 1.0)
            losses.append(loss)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
            tok_s = tokens_per_step / dt
            done = step + 1
            # tokens_per_s counts every slot of the packed rows, padding included; example_tokens_per_s only
            # the examples' own tokens, which is also what MFU counts.
            record = {"step": done, "loss": loss, "lr": cur_lr, "grad_norm": float(grad_norm),
                      "tokens_per_s": tok_s, "example_tokens_per_s": tok_global / dt, "loss_tokens": int(n_global),
                      "epoch": loader.epoch, "examples_seen": seen["examples"], "tokens_seen": seen["tokens"]}
            if peak is not None:
                record["mfu"] = train_flops(config, int(tok_global), int(sq_global)) / dt / (peak * world)
            eval_now = val_loader is not None and ((eval_every > 0 and done % eval_every == 0) or done == steps)
            if eval_now:
                last_val = evaluate(model, val_loader, eval_batches, dev, autocast, world)
                record["val_loss"] = last_val
                if best_val is None or last_val < best_val:
                    best_val = last_val
            if metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            now = time.perf_counter()
            # One line every 10 s (and at validations and the end) rather than per step: thousands of steps.
            if progress and is_main and (now - last_line >= 10.0 or eval_now or done == end):
                last_line = now
                extra = f" val {last_val:.4f}" if eval_now else ""
                mfu = f" mfu {record['mfu']:.1%}" if "mfu" in record else ""
                rate = (done - start_step) / max(now - t_start, 1e-9)
                eta = (end - done) / rate if rate > 0 else float("inf")
                print(f"step {done}/{steps} ({done / steps:.0%}) loss {loss:.4f} lr {cur_lr:.2e} "
                      f"{tok_s:,.0f} tok/s{mfu} examples {seen['examples']:,}{extra} "
                      f"elapsed {clock(now - t_start)} eta {clock(eta)}", file=sys.stderr, flush=True)
            timed_save = save_minutes > 0 and now - last_save >= 60.0 * save_minutes
            if (save_every > 0 and done % save_every == 0) or done == end or done in keep_steps or timed_save:
                save(done, last_val if eval_now else None)
                last_save = time.perf_counter()
        if world > 1:
            # Tearing gloo down while rank 0 still writes its checkpoint aborts the other ranks' processes.
            import torch.distributed as dist
            dist.barrier()
    finally:
        if metrics is not None:
            metrics.close()
        if world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    return {"losses": losses, "start_step": start_step, "steps": steps, "val_loss": last_val,
            "best_val_loss": best_val, "tokens_per_s": tok_s, "checkpoint": str(last_ckpt) if last_ckpt else None,
            "n_params": num_params(config), "elapsed_s": time.perf_counter() - t_start, "device": str(dev),
            "world_size": world, "skipped_examples": int(len(loader.skipped)),
            "examples_seen": seen["examples"], "tokens_seen": seen["tokens"]}
