"""Triton kernels of reasonless, installed as ``reasonless.kernels``: attention for training and sampling.

- :func:`flash_attn_varlen` / :func:`varlen_attention` (``flash_attn.py``): causal flash attention over packed
  examples (``cu_seqlens``), forward and backward, grouped-query heads. ``reasonless.model.attention`` uses it on
  CUDA.
- :func:`decode_attn` / :func:`decode_attn_prefix_shared` (``decode.py``): one new token per sequence
  against a KV cache, split over the cache; the prefix-shared form reads a GRPO group's prompt once.

Names resolve lazily, so ``import reasonless.kernels`` costs nothing and Triton is imported only by the first
use of a kernel. Without CUDA the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1``, set before
the first use), which is what the CPU tests do.
"""
import importlib

_HOME = {
    "flash_attn_varlen": "flash_attn",
    "varlen_attention": "flash_attn",
    "decode_attn": "decode",
    "decode_attn_prefix_shared": "decode",
}

__all__ = sorted(_HOME)


def __getattr__(name):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
