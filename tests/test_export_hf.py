"""`reasonless export-hf`: the export loads in transformers as Qwen2ForCausalLM and computes our logits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

from reasonless import checkpoint as ck  # noqa: E402
from reasonless.cli import main  # noqa: E402
from reasonless.checkpoint import resolve_checkpoint  # noqa: E402
from reasonless.export_hf import export_checkpoint, export_model  # noqa: E402
from reasonless.interchange import load_tokens  # noqa: E402
from reasonless.model import Model, ModelConfig  # noqa: E402
from reasonless.train import train  # noqa: E402
from reasonless.vocab import BOS, END, EOS, PAD, Vocab  # noqa: E402

SMALL = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, make_token_dir):
    """Real sequences of a rectangular 10×12 grid (coordinates and costs with two digits)."""
    return make_token_dir(tmp_path_factory.mktemp("hf10x12"), 6, rows=10, cols=12)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_token_dir):
    """A real run: 2 training steps with a validation loss, so `best` exists."""
    data = make_token_dir(tmp_path_factory.mktemp("hfrun"), 24)
    out = tmp_path_factory.mktemp("run") / "run"
    train(data, out, preset="tiny", model_overrides=SMALL, steps=2, seq_len=512, rows=2, warmup=1,
          eval_batches=1, val_fraction=0.2, save_every=1, keep_last=2, progress=False)
    return out


def random_model(vocab: Vocab, **overrides) -> Model:
    """Every weight random, biases and norm gains included, so a misplaced tensor shows in the logits."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), **{**SMALL, "rope_theta": 5e5, "max_seq_len": 4096, **overrides})
    model = Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 0.08) + (1.0 if p.dim() == 1 else 0.0))
    return model.eval()


def sequences(token_dir, n=3):
    toks, offsets, _, _ = load_tokens(token_dir)
    seqs = [np.asarray(toks[offsets[i]:offsets[i + 1]], dtype=np.int64) for i in range(len(offsets) - 1)]
    seqs.sort(key=len)
    picked = [seqs[0], seqs[len(seqs) // 2], seqs[-1]][:n]
    assert len({len(s) for s in picked}) == len(picked), "need sequences of different lengths"
    return picked


def ours_logits(model: Model, seqs) -> list[torch.Tensor]:
    """One packed forward over all sequences, split back per sequence."""
    flat = torch.from_numpy(np.concatenate(seqs))
    cu = torch.tensor(np.concatenate([[0], np.cumsum([len(s) for s in seqs])]), dtype=torch.int32)
    with torch.no_grad():
        out = model(flat, cu)
    return [out[cu[i]:cu[i + 1]] for i in range(len(seqs))]


def hf_logits(hf, seqs) -> list[torch.Tensor]:
    """One right-padded batch with an attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.int64)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.from_numpy(s)
        mask[i, :len(s)] = 1
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask).logits
    return [out[i, :len(s)] for i, s in enumerate(seqs)]


def load_hf(path, **kw):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kw).eval()


# ------------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("overrides", [{}, {"head_dim": 24}], ids=["default-head-dim", "head-dim-24"])
def test_logits_match_transformers(tmp_path, tokens, overrides):
    vocab = Vocab(10, 12)
    model = random_model(vocab, **overrides)
    if overrides:
        with pytest.warns(UserWarning, match="vLLM"):
            out = export_model(model, vocab, tmp_path / "hf")
    else:
        out = export_model(model, vocab, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    assert cfg["vocab_size"] == len(vocab) == 14 + 12 + 120 and cfg["tie_word_embeddings"] is True
    assert ("head_dim" in cfg) == bool(overrides)
    hf = load_hf(out, dtype=torch.float32)
    assert type(hf).__name__ == "Qwen2ForCausalLM" and hf.dtype == torch.float32
    seqs = sequences(tokens)
    for ours, theirs, s in zip(ours_logits(model, seqs), hf_logits(hf, seqs), seqs):
        assert ours.shape == theirs.shape == (len(s), len(vocab))
        assert (ours - theirs).abs().max().item() < 1e-4
    # The tied head: transformers' output projection is the input embedding itself.
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_weights_file_names_and_metadata(tmp_path):
    vocab = Vocab(8, 8)
    model = random_model(vocab)
    out = export_model(model, vocab, tmp_path / "hf")
    weights, meta = ck.load_safetensors(out / "model.safetensors", with_metadata=True)
    assert meta == {"format": "pt"}
    assert set(weights) == {"model." + k for k in model.state_dict()}
    assert "lm_head.weight" not in weights and "model.layers.1.self_attn.q_proj.bias" in weights
    assert torch.equal(weights["model.norm.weight"], model.norm.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # the temporary directory was renamed


def test_generation_stops_where_ours_does(tmp_path, tokens):
    vocab = Vocab(10, 12)
    model = random_model(vocab)
    out = export_model(model, vocab, tmp_path / "hf")
    gen = GenerationConfig.from_pretrained(out)
    assert sorted(gen.eos_token_id) == sorted([END, EOS]) and gen.bos_token_id == BOS
    hf = load_hf(out, dtype=torch.float32)
    toks, offsets, prompt_lengths, _ = load_tokens(tokens)
    prompt = np.asarray(toks[offsets[0]:offsets[0] + prompt_lengths[0]], dtype=np.int64)
    # Greedy decoding with our model, stopping at `end` / <|eos|> as our sampler does.
    seq = list(prompt)
    for _ in range(12):
        nxt = int(ours_logits(model, [np.array(seq)])[0][-1].argmax())
        seq.append(nxt)
        if nxt in (END, EOS):
            break
    with torch.no_grad():
        got = hf.generate(torch.from_numpy(prompt)[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.int64),
                          max_new_tokens=12, do_sample=False)
    assert got[0].tolist() == seq


# ------------------------------------------------------------------------------------------------ tokenizer


def test_auto_tokenizer_round_trips_paper_text(tmp_path, tokens):
    vocab = Vocab(10, 12)
    out = export_model(random_model(vocab), vocab, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    for s in sequences(tokens):
        assert s[0] == BOS and s[-1] == EOS
        body = s[1:-1]
        text = vocab.decode(body)
        assert any(w.startswith("c") and len(w) > 2 for w in text.split())  # multi-digit words are covered
        # <|bos|> is added, as training sequences start with it; <|eos|> is not.
        assert tok(text)["input_ids"] == [BOS] + body.tolist()
        assert tok(text, add_special_tokens=False)["input_ids"] == body.tolist()
        assert tok.decode(body.tolist()) == text
        assert tok.decode(s.tolist(), skip_special_tokens=True) == text
        assert tok.decode(s.tolist()) == f"<|bos|> {text} <|eos|>"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (BOS, EOS, PAD, 1)
    assert tok("query nonsense end", add_special_tokens=False)["input_ids"] == [4, 1, 13]
    batch = tok(["query start 0 0", "query"], padding=True)
    assert batch["input_ids"][1] == [BOS, 4, PAD, PAD, PAD] and batch["attention_mask"][1] == [1, 1, 0, 0, 0]


def test_auto_tokenizer_with_trust_remote_code(tmp_path):
    # With trust_remote_code, transformers imports the directory's tokenizer module; it must load
    # tokenizer.json unchanged (a fresh process, so the module cache goes to tmp_path).
    vocab = Vocab(8, 8)
    out = export_model(random_model(vocab), vocab, tmp_path / "hf")
    code = ("import sys; from transformers import AutoTokenizer; "
            "t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True); "
            "print(type(t).__name__, t('query start 7 0 goal 1 2')['input_ids'])")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "ReasonlessTokenizer"
    assert res.stdout.strip().endswith(str([BOS, 4, 5, 21, 14, 6, 15, 16]))


# ------------------------------------------------------------------------------------------------ runs, CLI


def test_export_run_checkpoints_and_cli(tmp_path, run_dir, capsys):
    ckpts = ck.list_checkpoints(run_dir)
    assert [c.name for c in ckpts] == ["step-000001", "step-000002"]
    best = ck.best_checkpoint(run_dir)
    assert resolve_checkpoint(run_dir, "best") == (best, "best validation loss")
    assert resolve_checkpoint(run_dir, "latest") == (ckpts[-1], "latest")
    assert resolve_checkpoint(run_dir, "step-000001") == (ckpts[0], "path")
    assert resolve_checkpoint(ckpts[0], "best") == (ckpts[0], "path")

    out = tmp_path / "hf"
    code = main(["export-hf", str(run_dir), "--out", str(out), "--checkpoint", "latest"])
    assert code == 0, capsys.readouterr().err
    assert "step 2" in capsys.readouterr().out
    info = json.loads((out / "reasonless.json").read_text())
    assert info["grid"] == {"rows": 8, "cols": 8} and info["vocab"]["size"] == len(Vocab(8, 8))
    assert info["step"] == 2 and info["source"]["checkpoint"] == str(ckpts[-1].resolve())
    assert info["source"]["run"] == str(run_dir.resolve()) and info["dtype"] == "float32"

    # The trained weights compute the same logits in transformers.
    model = Model(ModelConfig.from_dict(json.loads((ckpts[-1] / "config.json").read_text())))
    ck.load_checkpoint(ckpts[-1], model)
    model.eval()
    hf = load_hf(out, dtype=torch.float32)
    toks, offsets, _, _ = load_tokens(Path(info["source"]["data"]))
    seqs = [np.asarray(toks[offsets[i]:offsets[i + 1]], dtype=np.int64) for i in (0, 1)]
    for ours, theirs in zip(ours_logits(model, seqs), hf_logits(hf, seqs)):
        assert (ours - theirs).abs().max().item() < 1e-4

    # A second export into the same place is refused without --force and leaves the first intact.
    before = (out / "model.safetensors").read_bytes()
    code = main(["export-hf", str(run_dir), "--out", str(out), "--checkpoint", "step-000001"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    code = main(["export-hf", str(run_dir), "--out", str(out), "--checkpoint", "step-000001", "--force"])
    assert code == 0
    assert json.loads((out / "reasonless.json").read_text())["step"] == 1
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary directories left


def test_bfloat16_export_loads_in_bfloat16(tmp_path, run_dir):
    out = export_checkpoint(run_dir, tmp_path / "bf16", checkpoint="latest", dtype="bfloat16")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    weights = ck.load_safetensors(out / "model.safetensors")
    source = ck.load_safetensors(ck.latest_checkpoint(run_dir) / "model.safetensors")
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    assert torch.equal(weights["model.embed_tokens.weight"], source["embed_tokens.weight"].bfloat16())
    hf = load_hf(out, dtype="auto")
    assert hf.dtype == torch.bfloat16
    with torch.no_grad():
        logits = hf(torch.tensor([[BOS, 4, 5, 14, 14]])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_refusals_and_missing_checkpoints(tmp_path, run_dir):
    vocab = Vocab(8, 8)
    model = random_model(vocab)
    # An existing empty directory is fine; a non-empty one needs force.
    (tmp_path / "empty").mkdir()
    export_model(model, vocab, tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty; pass --force"):
        export_model(model, vocab, tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    export_model(model, vocab, tmp_path / "full", force=True)
    assert not (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "full" / "config.json").is_file()

    with pytest.raises(ValueError, match="9x9 vocabulary has 104 tokens"):
        export_model(model, Vocab(9, 9), tmp_path / "wrong-vocab")
    assert not (tmp_path / "wrong-vocab").exists()
    with pytest.raises(ValueError, match="dtype"):
        export_model(model, vocab, tmp_path / "x", dtype="int8")

    empty_run = tmp_path / "run-without-checkpoints"
    empty_run.mkdir()
    (empty_run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no checkpoints"):
        export_checkpoint(empty_run, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such run"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        export_checkpoint(run_dir, tmp_path / "out", checkpoint="step-000099")
    with pytest.raises(ValueError, match="would replace the source"):
        export_checkpoint(run_dir, run_dir, force=True)
    with pytest.raises(ValueError, match="would replace the source"):
        export_checkpoint(run_dir, run_dir.parent, force=True)
    assert ck.list_checkpoints(run_dir) and not (tmp_path / "out").exists()
