"""Fixtures shared by the test modules."""
import pytest

from reasonless.corpus import generate
from reasonless.interchange import export_tokens


@pytest.fixture(scope="session")
def make_token_dir():
    """make_token_dir(tmp, count, rows=8, cols=8, generator="kruskal", seed=1): a small corpus at tmp/c and its
    correct-arm token streams at tmp/tok, which it returns."""
    def make(tmp, count, rows=8, cols=8, generator="kruskal", seed=1):
        corpus = generate(tmp / "c", generator, count, rows=rows, cols=cols, seed=seed)
        export_tokens(corpus, tmp / "tok", arm="correct")
        return tmp / "tok"

    return make
