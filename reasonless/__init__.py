"""reasonless: maze A* reasoning traces, generated, verified and learned.

The main entry points are imported on first use, so ``import reasonless`` stays light:
``reasonless.generate`` (make a corpus), ``reasonless.Corpus`` (read one), ``reasonless.merge``,
``reasonless.import_jsonl``, ``reasonless.export_jsonl``, ``reasonless.export_tokens``, ``reasonless.Vocab``,
``reasonless.verify`` (check traces and plans; the rest of the verifier API is in ``reasonless.verifier``),
``reasonless.ARMS`` / ``reasonless.arm_tokens`` (training arms), ``reasonless.build_study``.
"""
__version__ = "0.1.0"

_LAZY = {
    "generate": "corpus", "Corpus": "corpus", "merge": "corpus",
    "import_jsonl": "interchange", "export_jsonl": "interchange", "export_tokens": "interchange",
    "load_tokens": "interchange", "Vocab": "vocab", "describe": "stats",
    "verify": "verifier", "verify_jsonl": "verifier", "verify_corpus": "verifier",
    "ARMS": "arms", "arm_batch": "arms", "arm_tokens": "arms", "build_study": "study", "load_study": "study",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'reasonless' has no attribute {name!r}")
