"""Training loop, checkpoints (safetensors, atomic, no pickle), resume and the `reasonless train` CLI."""
import json
import math
import pickle
import struct
import warnings
from pathlib import Path

import pytest
import torch

from reasonless import checkpoint as ck
from reasonless.cli import main
from reasonless.data import split_indices
from reasonless.train import lr_at, train

# A model small enough that a step takes milliseconds on 2 cores.
SMALL = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128)


@pytest.fixture(scope="module")
def tokens64(tmp_path_factory, make_token_dir):
    return make_token_dir(tmp_path_factory.mktemp("train"), 64)


@pytest.fixture(scope="module")
def tokens10x10(tmp_path_factory, make_token_dir):
    return make_token_dir(tmp_path_factory.mktemp("train10"), 16, rows=10, cols=10)


def _run(data, out, **kw):
    args = dict(preset="tiny", model_overrides=SMALL, seq_len=512, rows=2, lr=3e-3, warmup=2, weight_decay=0.1,
                eval_batches=2, val_fraction=0.1, progress=False)
    args.update(kw)
    return train(data, out, **args)


# ------------------------------------------------------------------------------------------------ schedule


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # cosine never rises
    assert lrs[-1] == pytest.approx(0.1)
    assert lr_at(54, 100, 1.0, 10, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 44 / 89)))


# ------------------------------------------------------------------------------------------------ safetensors


def test_safetensors_round_trip_every_dtype(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f64": torch.randn(3, 4, generator=g, dtype=torch.float64),
        "f32": torch.randn(5, generator=g),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(7, 2, generator=g).bfloat16(),
        "i64": torch.tensor([[-(2 ** 62), 5]], dtype=torch.int64),
        "i32": torch.tensor([-7, 2 ** 30], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.get_rng_state(),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # non-contiguous input
    }
    path = tmp_path / "t.safetensors"
    ck.save_safetensors(tensors, path, {"format": "pt"})
    back, meta = ck.load_safetensors(path, with_metadata=True)
    assert meta == {"format": "pt"} and set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(back[name], t), name
    # the layout is the published format: u64 header length, JSON header, 8-byte aligned data
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0 and header["bf16"]["dtype"] == "BF16" and header["bf16"]["shape"] == [7, 2]
    lo, hi = header["i32"]["data_offsets"]
    assert raw[8 + n + lo:8 + n + hi] == struct.pack("<ii", -7, 2 ** 30)


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    new = json.dumps(edit(header)).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_safetensors_rejects_malformed_files(tmp_path):
    path = tmp_path / "t.safetensors"
    ck.save_safetensors({"a": torch.ones(4), "b": torch.zeros(2, dtype=torch.int64)}, path)
    good = path.read_bytes()

    def check(data: bytes, match: str):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            ck.load_safetensors(path)
        path.write_bytes(good)

    check(good[:5], "shorter than the 8-byte header")
    check(struct.pack("<Q", 10 ** 9) + good[8:], "header length")
    check(good[:8] + b"{not json" + good[17:], "not JSON")
    check(good[:-3], "outside the|trailing|bytes for shape")
    check(good + b"\0" * 8, "trailing bytes")
    _rewrite_header(path, lambda h: {**h, "a": {**h["a"], "dtype": "F8_E4M3"}})
    with pytest.raises(ValueError, match="unknown dtype 'F8_E4M3'"):
        ck.load_safetensors(path)
    path.write_bytes(good)
    _rewrite_header(path, lambda h: {**h, "a": {**h["a"], "shape": [3]}})
    with pytest.raises(ValueError, match="bytes for shape"):
        ck.load_safetensors(path)
    path.write_bytes(good)
    _rewrite_header(path, lambda h: {**h, "a": {"dtype": "F32", "shape": [4]}})
    with pytest.raises(ValueError, match="exactly dtype, shape and data_offsets"):
        ck.load_safetensors(path)


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def tokens4x4(tmp_path_factory, make_token_dir):
    return make_token_dir(tmp_path_factory.mktemp("train4x4"), 66, rows=4, cols=4, seed=3)


@pytest.mark.slow
def test_tiny_model_overfits_64_examples(tokens4x4, tmp_path):
    # 64 training examples (66 less a validation split of 2), 4x4 mazes so that one step of 12 rows x 512 tokens
    # holds them all: about 50 s on 2 cores. The response loss falls from ~ln(vocab) to near zero; measured
    # 0.004 at the last step (plateaus of 0.5-1 nats last about 100 steps before memorisation takes over).
    res = _run(tokens4x4, tmp_path / "run", steps=200, seq_len=512, rows=12, lr=3e-3, warmup=10, weight_decay=0.0,
               min_lr_ratio=0.1, val_fraction=0.03, model_overrides=dict(n_layer=2, d_model=128, n_head=4,
                                                                           n_kv_head=2, d_ff=256))
    assert len(split_indices(66, val_fraction=0.03)[0]) == 64 and res["skipped_examples"] == 0
    losses = res["losses"]
    assert losses[0] > 3.0
    assert max(losses[-5:]) < 0.05, losses[::10]


def test_metrics_checkpoints_keep_last_and_best(tokens64, tmp_path):
    run = tmp_path / "run"
    res = _run(tokens64, run, steps=8, eval_every=2, save_every=2, keep_last=2, grad_accum=2)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, 9))
    for ln in lines:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "example_tokens_per_s", "loss_tokens"} <= set(ln)
        # padding counts in tokens_per_s only
        assert ln["example_tokens_per_s"] <= ln["tokens_per_s"]
        assert math.isfinite(ln["loss"]) and ln["loss_tokens"] > 0
    assert [ln["step"] for ln in lines if "val_loss" in ln] == [2, 4, 6, 8]
    assert res["losses"] == [ln["loss"] for ln in lines]
    vals = {ln["step"]: ln["val_loss"] for ln in lines if "val_loss" in ln}
    best = min(vals, key=vals.get)
    kept = [p.name for p in ck.list_checkpoints(run)]
    assert set(kept) == {f"step-{s:06d}" for s in {6, 8, best}}
    assert ck.best_checkpoint(run).name == f"step-{best:06d}"
    files = {p.name for p in (run / "checkpoints" / "step-000008").iterdir()}
    assert files == {"model.safetensors", "config.json", "optimizer.safetensors", "optimizer.json", "trainer.json",
                     "checksums.json"}
    assert not [p for p in (run / "checkpoints").iterdir() if ck.TMP_MARK in p.name]


def _weights(ckpt: Path) -> dict:
    return ck.load_safetensors(ckpt / "model.safetensors")


def test_resume_equals_uninterrupted(tokens64, tmp_path, monkeypatch):
    kw = dict(steps=8, save_every=2, eval_every=4, grad_accum=2, rows=1)
    straight = _run(tokens64, tmp_path / "a", **kw)["losses"]
    first = _run(tokens64, tmp_path / "b", stop_at=4, **kw)
    assert first["losses"] == straight[:4]
    # resuming reads only safetensors and JSON: any unpickling would fail here
    def no_pickle(*a, **k):
        raise AssertionError("checkpoint loading must not unpickle")
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    second = _run(tokens64, tmp_path / "b", resume=True, **kw)
    assert second["start_step"] == 4
    assert second["losses"] == straight[4:]  # exact on CPU
    wa, wb = _weights(tmp_path / "a/checkpoints/step-000008"), _weights(tmp_path / "b/checkpoints/step-000008")
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    la = (tmp_path / "a/metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if not k.endswith("_per_s")}  # noqa: E731
    assert [strip(x) for x in la] == [strip(x) for x in lb]


def test_save_failure_leaves_previous_checkpoint_intact(tokens64, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _run(tokens64, run, steps=2, save_every=1, keep_last=5)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints" / "step-000002").iterdir()}
    real = ck.save_safetensors

    def failing(tensors, path, metadata=None):
        if Path(path).name == "optimizer.safetensors":
            real(tensors, path, metadata)
            raise OSError("disk full (simulated)")
        real(tensors, path, metadata)

    monkeypatch.setattr(ck, "save_safetensors", failing)
    with pytest.raises(OSError, match="simulated"):
        _run(tokens64, run, steps=4, save_every=1, keep_last=5, resume=True)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-000001", "step-000002"]  # no step-000003, no temporary directory
    assert {p.name: p.read_bytes() for p in (run / "checkpoints" / "step-000002").iterdir()} == before
    monkeypatch.setattr(ck, "save_safetensors", real)
    res = _run(tokens64, run, steps=4, save_every=1, keep_last=5, resume=True)
    assert res["start_step"] == 2 and len(res["losses"]) == 2


def test_load_checkpoint_refuses_wrong_model(tokens64, tmp_path):
    run = tmp_path / "run"
    _run(tokens64, run, steps=1)
    from reasonless.model import Model, preset
    other = Model(preset("tiny", 86, **{**SMALL, "d_model": 32}))
    with pytest.raises(ValueError, match="shape"):
        ck.load_checkpoint(ck.latest_checkpoint(run), other)


# ------------------------------------------------------------------------------------------------ bad input


def test_refuses_existing_run_without_resume(tokens64, tmp_path):
    _run(tokens64, tmp_path / "run", steps=1)
    with pytest.raises(ValueError, match="--resume"):
        _run(tokens64, tmp_path / "run", steps=2)
    with pytest.raises(ValueError, match="no checkpoint"):
        _run(tokens64, tmp_path / "other", steps=2, resume=True)


def test_study_dir_with_arm(tokens64, tmp_path):
    import shutil
    shutil.copytree(tokens64, tmp_path / "study" / "arms" / "correct")
    res = _run(tmp_path / "study", tmp_path / "run", steps=1, arm="correct")
    assert len(res["losses"]) == 1
    with pytest.raises(ValueError, match="no token dir for arm 'swap'"):
        _run(tmp_path / "study", tmp_path / "run2", steps=1, arm="swap")


def test_resume_with_data_of_another_grid(tokens64, tokens10x10, tmp_path):
    _run(tokens64, tmp_path / "run", steps=1)
    with pytest.raises(ValueError, match="10x10 grid data.*8x8"):
        _run(tokens10x10, tmp_path / "run", steps=2, resume=True)


def _cli(*args):
    return main(["train", "--preset", "tiny", *[str(a) for a in args]])


def test_cli_trains_and_reports_errors(tokens64, tokens10x10, tmp_path, capsys):
    small = [x for k, v in SMALL.items() for x in ("--model-param", f"{k}={v}")]
    assert _cli("--data", tokens64, "--out", tmp_path / "ok", "--steps", 2, "--seq-len", 512, "--quiet",
                *small) == 0
    assert len((tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["train", "--data", str(tokens64), "--preset", "huge", "--out", str(tmp_path / "x"),
                 "--steps", "1"]) == 2
    assert "unknown model preset 'huge'" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _cli("--data", tokens64, "--out", tmp_path / "x", "--steps", 1, "--seq-len", 64) == 2
    assert "shorter than every example" in capsys.readouterr().err
    assert _cli("--data", tokens10x10, "--out", tmp_path / "x", "--steps", 1, "--grid", "8x8") == 2
    assert "grid 10x10, expected 8x8" in capsys.readouterr().err
    assert _cli("--data", tmp_path / "nothing", "--out", tmp_path / "x", "--steps", 1) == 2
    assert "meta.json: missing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        _cli("--data", tokens64, "--out", tmp_path / "x")  # neither --steps nor --epochs


def test_two_process_ddp_matches_one_process(tokens64, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    kw = dict(steps=4, grad_accum=2, eval_every=2, warmup=1)
    one = _run(tokens64, tmp_path / "one", rows=2, **kw)
    small = [x for k, v in SMALL.items() for x in ("--model-param", f"{k}={v}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "reasonless", "train", "--data", str(tokens64),
           "--preset", "tiny", *small, "--out", str(tmp_path / "two"), "--seq-len", "512", "--rows", "1",
           "--steps", "4", "--grad-accum", "2", "--eval-every", "2", "--eval-batches", "2", "--warmup", "1",
           "--lr", "3e-3", "--val-fraction", "0.1", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]  # rank 0 alone writes
    assert [ln["loss"] for ln in lines] == pytest.approx(one["losses"], rel=1e-5)
    assert lines[-1]["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    assert sum(ln["loss_tokens"] for ln in lines) > 0
    wa = _weights(tmp_path / "one/checkpoints/step-000004")
    wb = _weights(tmp_path / "two/checkpoints/step-000004")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
