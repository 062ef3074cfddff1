"""Export a trained model as a Hugging Face ``Qwen2ForCausalLM`` directory (transformers, vLLM).

The model of :mod:`reasonless.model` is Qwen2 with tied embeddings and its module names already follow
``Qwen2ForCausalLM``, so the weights only gain a ``model.`` prefix. The export directory holds

* ``config.json`` — a ``qwen2`` config. RoPE θ is written twice, as ``rope_theta`` (read by transformers
  before v5 and by older vLLM) and as ``rope_parameters`` (transformers v5); ``dtype`` and ``torch_dtype``
  likewise name the stored dtype for both generations;
* ``model.safetensors`` — written by :func:`reasonless.checkpoint.save_safetensors` with
  ``{"format": "pt"}`` metadata; the head is tied, so there is no ``lm_head.weight`` (as in Qwen2.5-0.5B);
* ``tokenizer.json`` — a word-level tokenizer over the grid's vocabulary (whitespace split, one id per
  word, decoding joins words with single spaces) that adds ``<|bos|>`` in front of every encoded text,
  as training did; pass ``add_special_tokens=False`` to get the bare ids. ``<|eos|>`` is not added, so a
  prompt (text up to, not including, ``reasoning``) encodes exactly as the model saw prompts;
  ``tokenizer_config.json``, ``special_tokens_map.json`` and ``tokenization_reasonless.py`` beside it
  (a two-line subclass that keeps transformers v5 from swapping in Qwen2's byte-level tokenizer; see
  :data:`TOKENIZER_CODE`);
* ``generation_config.json`` — generation stops at ``end`` or ``<|eos|>``, as our sampler does;
* ``reasonless.json`` — where the weights came from (run, checkpoint, step, validation loss), the grid,
  the vocabulary layout and our model config; ``README.md`` says how to load it.

The directory is built under a temporary name and renamed into place.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import __version__
from . import checkpoint as ckpt_io
from .atomic import atomic_dir
from .model import Model, ModelConfig
from .vocab import BOS, END, EOS, KEYWORDS, PAD, SPECIALS, UNK, Vocab

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREFIX = "model."


def _dtype(dtype) -> tuple[str, torch.dtype]:
    if isinstance(dtype, torch.dtype):
        for name, value in DTYPES.items():
            if value == dtype:
                return name, value
    elif dtype in DTYPES:
        return dtype, DTYPES[dtype]
    raise ValueError(f"dtype {dtype!r}: export supports {', '.join(DTYPES)}")


# --------------------------------------------------------------------------------------------------
# The files


def hf_config(config: ModelConfig, vocab: Vocab, dtype: str = "float32") -> dict:
    """``config.json`` of a ``Qwen2ForCausalLM`` equal to ``Model(config)``."""
    name, _ = _dtype(dtype)
    if config.vocab_size != len(vocab):
        raise ValueError(f"the model has {config.vocab_size} token embeddings but the {vocab.rows}x{vocab.cols} "
                         f"vocabulary has {len(vocab)} tokens")
    out = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        # As Qwen2.5's own configs: a window as long as the context, switched off by use_sliding_window.
        "sliding_window": config.max_seq_len,
        "max_window_layers": config.n_layer,
        "attention_dropout": 0.0,
        "use_cache": True,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "dtype": name,
        "torch_dtype": name,
    }
    if config.head_dim * config.n_head != config.d_model:
        # Recent transformers' Qwen2 reads head_dim when present (checked: 4.57, 5.24); transformers 4.45 and
        # vLLM's Qwen2 derive it as hidden_size // heads, so such an export loads only in the former.
        out["head_dim"] = config.head_dim
        warnings.warn(f"head_dim={config.head_dim} differs from d_model/n_head={config.d_model}/{config.n_head}: "
                      f"recent transformers load this export, but vLLM's Qwen2ForCausalLM and transformers 4.45 "
                      f"ignore head_dim and will refuse the weights", stacklevel=2)
    return out


def hf_state_dict(state_dict: dict[str, torch.Tensor], dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Our state_dict (tied embedding once) renamed to Hugging Face names and cast to ``dtype``."""
    _, torch_dtype = _dtype(dtype)
    return {PREFIX + k: v.detach().to("cpu", torch_dtype).contiguous() for k, v in state_dict.items()}


def tokenizer_json(vocab: Vocab) -> dict:
    """``tokenizer.json`` for the ``tokenizers`` library: WordLevel over ``vocab.words``."""
    added = [{"id": i, "content": w, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, w in enumerate(SPECIALS)]
    bos = SPECIALS[BOS]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        # Training sequences start with <|bos|>: encoding a prompt with the default add_special_tokens=True
        # gives the ids the model was trained on. The same template transformers v5 builds from add_bos_token.
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [BOS], "tokens": [bos]}},
        },
        # No decoder: the tokenizers library then joins tokens with single spaces, which is our text format.
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(vocab.words)},
                  "unk_token": SPECIALS[UNK]},
    }


def tokenizer_config(vocab: Vocab, max_len: int) -> dict:
    names = dict(pad_token=SPECIALS[PAD], unk_token=SPECIALS[UNK], bos_token=SPECIALS[BOS], eos_token=SPECIALS[EOS])
    decoder = {str(i): {"content": w, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, w in enumerate(SPECIALS)}
    return {"tokenizer_class": "PreTrainedTokenizerFast", **names, "add_bos_token": True, "add_eos_token": False,
            "added_tokens_decoder": decoder, "clean_up_tokenization_spaces": False, "model_max_length": max_len,
            "padding_side": "right", "model_input_names": ["input_ids", "attention_mask"],
            "auto_map": {"AutoTokenizer": [None, f"{TOKENIZER_MODULE}.ReasonlessTokenizer"]}}


# transformers v5 makes AutoTokenizer build the tokenizer class registered for the config's model_type, and
# for qwen2 that is Qwen2Tokenizer, a byte-level BPE that rebuilds its pipeline in code and cannot express a
# word-level vocabulary (it silently drops our words). An ``auto_map`` entry is the one way a directory can
# name its own tokenizer class: without trust_remote_code, v5 ignores it for qwen2 and falls back to
# tokenizer_class (PreTrainedTokenizerFast, i.e. tokenizer.json as written) and v4 prefers tokenizer_class
# anyway; with trust_remote_code, both import this module, a plain subclass that loads tokenizer.json as is.
TOKENIZER_MODULE = "tokenization_reasonless"
TOKENIZER_CODE = '''"""Tokenizer of a reasonless export: tokenizer.json as written (word level, <|bos|> added).

Exists only so that AutoTokenizer loads tokenizer.json unchanged under every transformers version; see
reasonless.json in this directory."""
from transformers import PreTrainedTokenizerFast


class ReasonlessTokenizer(PreTrainedTokenizerFast):
    pass
'''


def special_tokens_map() -> dict:
    return dict(pad_token=SPECIALS[PAD], unk_token=SPECIALS[UNK], bos_token=SPECIALS[BOS], eos_token=SPECIALS[EOS])


def generation_config() -> dict:
    # Our sampler stops at `end` (the last word of a paper-format answer) or <|eos|> (which follows it in
    # training); list both so transformers and vLLM stop where we do.
    return {"bos_token_id": BOS, "eos_token_id": [END, EOS], "pad_token_id": PAD}


README = """\
# reasonless model ({rows}x{cols} mazes)

A Qwen2-architecture decoder trained from scratch by `reasonless` on maze A* traces. Exported from
`{source}` (step {step}), {dtype}. Details: reasonless.json.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(DIR)
model = AutoModelForCausalLM.from_pretrained(DIR)
ids = tok("query start 0 0 goal 3 3 wall 1 1", return_tensors="pt")   # <|bos|> is added
out = model.generate(**ids, max_new_tokens=512, do_sample=False)          # stops at `end` or <|eos|>
print(tok.decode(out[0], skip_special_tokens=True))
```

vLLM: `vllm serve DIR` or `LLM(model=DIR)`; prompts are the text before `reasoning`.
`AutoTokenizer` gives the word-level tokenizer of tokenizer.json with or without `trust_remote_code`
(tokenization_reasonless.py only exists because transformers v5 would otherwise build Qwen2's
byte-level tokenizer for a qwen2 model); `PreTrainedTokenizerFast.from_pretrained(DIR)` works too.
The vocabulary is word-level: words separated by single spaces, coordinates `0`..`{last_coord}`,
costs `c0`..`c{last_cost}`, keywords {keywords}.
"""


# --------------------------------------------------------------------------------------------------
# Writing


def _check_out(out_dir: Path, force: bool, protect: list[Path]) -> None:
    out = out_dir.resolve()
    for p in protect:
        p = p.resolve()
        if out == p or out in p.parents:
            raise ValueError(f"--out {out_dir} would replace the source {p}; choose another directory")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not force:
            raise ValueError(f"--out {out_dir} is not empty; pass --force to replace it")


def export_model(model: Model, vocab: Vocab, out_dir, *, dtype="float32", force: bool = False,
                 source: dict | None = None) -> Path:
    """Writes ``model`` (any device) with the tokenizer of ``vocab`` as a Hugging Face directory ``out_dir``.

    ``dtype``: "float32", "bfloat16" or "float16" (or the torch dtype). ``force``: replace a non-empty
    ``out_dir``. ``source``: provenance recorded in reasonless.json. Returns the directory."""
    return _export(model.config, model.state_dict(), vocab, Path(out_dir), dtype, force, source or {}, [])


def _export(config: ModelConfig, state: dict, vocab: Vocab, out_dir: Path, dtype, force: bool, source: dict,
            protect: list[Path]) -> Path:
    name, _ = _dtype(dtype)
    cfg = hf_config(config, vocab, name)  # checks the vocabulary size before anything is written
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Model(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(f"the weights do not fit the model config (missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"wrong shapes {wrong[:5]})")
    _check_out(out_dir, force, protect)
    step = source.get("step")
    info = {
        "format": "reasonless-hf-export",
        "format_version": 1,
        "reasonless_version": __version__,
        "source": source,
        "step": step,
        "grid": {"rows": vocab.rows, "cols": vocab.cols},
        "vocab": {**vocab.to_json(), "specials": list(SPECIALS), "keywords": list(KEYWORDS),
                  "first_coord": 4 + len(KEYWORDS), "first_cost": vocab.first_cost},
        "model_config": config.to_dict(),
        "dtype": name,
        "tokenizer": {"adds_bos": True, "adds_eos": False, "decode": "words joined by single spaces"},
        "generation": {"stop_token_ids": [END, EOS],
                       "prompt": "<|bos|> then the text up to, not including, `reasoning`"},
    }
    readme = README.format(rows=vocab.rows, cols=vocab.cols, source=source.get("checkpoint", "an in-memory model"),
                           step=step if step is not None else "unknown", dtype=name, last_coord=vocab.n_coords - 1,
                           last_cost=vocab.n_costs - 1, keywords=", ".join(KEYWORDS))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        ckpt_io.save_safetensors(hf_state_dict(state, name), tmp / "model.safetensors", {"format": "pt"})
        ckpt_io.write_json(tmp / "config.json", cfg, indent=2)
        ckpt_io.write_json(tmp / "generation_config.json", generation_config(), indent=2)
        ckpt_io.write_json(tmp / "tokenizer.json", tokenizer_json(vocab), indent=2)
        ckpt_io.write_json(tmp / "tokenizer_config.json", tokenizer_config(vocab, config.max_seq_len), indent=2)
        ckpt_io.write_json(tmp / "special_tokens_map.json", special_tokens_map(), indent=2)
        (tmp / f"{TOKENIZER_MODULE}.py").write_text(TOKENIZER_CODE)
        ckpt_io.write_json(tmp / "reasonless.json", info, indent=2)
        (tmp / "README.md").write_text(readme)
    return out_dir


def export_checkpoint(path, out_dir, *, checkpoint: str = "best", dtype="float32", force: bool = False,
                      vocab: Vocab | None = None) -> Path:
    """Exports a checkpoint directory, or a run directory's checkpoint chosen by ``checkpoint`` (see
    :func:`reasonless.checkpoint.resolve_checkpoint`).

    The grid, hence the vocabulary, comes from the checkpoint's trainer.json (``data.grid``); pass
    ``vocab`` for checkpoints that do not record it."""
    path = Path(path)
    ckpt, how = ckpt_io.resolve_checkpoint(path, checkpoint)
    config = ckpt_io.read_config(ckpt, ModelConfig.from_dict)
    trainer = ckpt_io.read_trainer_state(ckpt) if (ckpt / "trainer.json").is_file() else {}
    data = trainer.get("data") or {}
    grid = data.get("grid")
    if vocab is None:
        if not (isinstance(grid, list) and len(grid) == 2):
            raise ValueError(f"{ckpt}: trainer.json records no grid size (data.grid); pass the vocabulary "
                             f"(export_checkpoint(..., vocab=Vocab(rows, cols)))")
        vocab = Vocab(int(grid[0]), int(grid[1]))
    elif isinstance(grid, list) and list(grid) != [vocab.rows, vocab.cols]:
        raise ValueError(f"{ckpt}: trained on {grid[0]}x{grid[1]} mazes, not {vocab.rows}x{vocab.cols}")
    ckpt_io.check_checkpoint(ckpt)
    state = ckpt_io.load_safetensors(ckpt / "model.safetensors")
    run_dir = ckpt.parent.parent if ckpt.parent.name == ckpt_io.CHECKPOINT_DIR else None
    source = {"run": str(run_dir.resolve()) if run_dir else None, "checkpoint": str(ckpt.resolve()),
              "selected_by": how, "step": trainer.get("step"), "val_loss": trainer.get("val_loss"),
              "best_val_loss": trainer.get("best_val_loss"), "data": data.get("dir"), "arm": data.get("arm"),
              "hparams": trainer.get("hparams")}
    protect = [ckpt] + ([run_dir] if run_dir else []) + ([path] if path != ckpt else [])
    return _export(config, state, vocab, Path(out_dir), dtype, force, source, protect)
