"""Fixtures shared by the test modules."""
import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. The switch is read when a kernel is
# decorated, so it must be set before any test module imports reasonless.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from reasonless.corpus import generate
from reasonless.interchange import export_tokens

# `python -m pytest` puts the repository root on sys.path, where our kernels/ folder (installed as
# reasonless.kernels) would shadow Hugging Face's `kernels` package, which transformers (>= 5.25, its dependency)
# imports: keep the root off the path once reasonless itself is imported (a developer build's PYTHONPATH=. included).
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]
sys.modules.pop("kernels", None)


@pytest.fixture(scope="session")
def make_token_dir():
    """make_token_dir(tmp, count, rows=8, cols=8, generator="kruskal", seed=1): a small corpus at tmp/c and its
    correct-arm token streams at tmp/tok, which it returns."""
    def make(tmp, count, rows=8, cols=8, generator="kruskal", seed=1):
        corpus = generate(tmp / "c", generator, count, rows=rows, cols=cols, seed=seed)
        export_tokens(corpus, tmp / "tok", arm="correct")
        return tmp / "tok"

    return make
