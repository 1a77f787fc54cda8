"""The vocabulary counted with numpy is gensim's Dictionary + filter_extremes, word for word and in order."""

import inspect

import numpy as np
import pytest
from gensim.corpora import Dictionary

from job import vocab


def corpus(seed: int, titles: int, distinct: int):
    """Random titles over `distinct` words (Zipf-like, so ties in document frequency are common), as (words, ids, lengths)."""
    rng = np.random.default_rng(seed)
    words = [f"{'zyxw'[i % 4]}{rng.integers(0, 10**6)}_{i}" for i in range(distinct)]  # id order is not string order
    lengths = rng.integers(1, 9, titles)
    p = 1 / np.arange(1, distinct + 1) ** 1.1
    ids = rng.choice(distinct, size=int(lengths.sum()), p=p / p.sum()).astype(np.int32)
    return words, ids, lengths


def chunked(ids, lengths, size):
    """A fresh pass of (ids, lengths) chunks of `size` titles."""
    def chunks():
        ends = np.concatenate([[0], np.cumsum(lengths)])
        for start in range(0, len(lengths), size):
            stop = min(start + size, len(lengths))
            yield ids[ends[start]:ends[stop]], lengths[start:stop]
    return chunks


def gensim_vocab(docs, prune_at=vocab.PRUNE_AT, **limits) -> list[str]:
    dictionary = Dictionary(docs, prune_at=prune_at)
    dictionary.filter_extremes(**{"no_below": vocab.NO_BELOW, "no_above": vocab.NO_ABOVE, "keep_n": vocab.KEEP_N, **limits})
    return [w for w, _ in sorted(dictionary.token2id.items(), key=lambda kv: kv[1])]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("limits", [{}, {"keep_n": 40}, {"keep_n": 3}, {"no_below": 1, "no_above": 0.05, "keep_n": None},
                                    {"no_below": 0, "no_above": 1.0, "keep_n": 100}])
def test_numpy_counts_give_gensims_vocabulary(seed, limits):
    rng = np.random.default_rng(100 + seed)
    words, ids, lengths = corpus(seed, int(rng.integers(1, 2000)), int(rng.integers(2, 1500)))
    chunks = chunked(ids, lengths, int(rng.integers(1, 300)))
    docs = list(vocab.documents(chunks(), words))
    dfs, first, titles = vocab.document_frequencies(chunks(), len(words))
    ours = [words[i] for i in vocab.select(words, dfs, first, titles, **{
        "no_below": limits.get("no_below", vocab.NO_BELOW), "no_above": limits.get("no_above", vocab.NO_ABOVE),
        "keep_n": limits.get("keep_n", vocab.KEEP_N)})]
    assert ours == gensim_vocab(docs, **limits)
    if not limits:
        assert vocab.build(chunks, words) == ours


def test_past_gensims_prune_threshold_gensim_counts(caplog):
    """gensim prunes while counting once it holds prune_at words; then build counts with gensim itself."""
    words, ids, lengths = corpus(1, 30_000, 5_000)
    chunks = chunked(ids, lengths, 1000)
    docs = list(vocab.documents(chunks(), words))
    with caplog.at_level("INFO", logger="job.vocab"):
        assert vocab.build(chunks, words, prune_at=300) == gensim_vocab(docs, prune_at=300, keep_n=vocab.KEEP_N)
    assert "counting with gensim" in caplog.text
    assert gensim_vocab(docs, prune_at=300) != gensim_vocab(docs)  # the pruning does change the result here


def test_prune_at_is_gensims_default():
    assert inspect.signature(Dictionary.add_documents).parameters["prune_at"].default == vocab.PRUNE_AT
    assert inspect.signature(Dictionary.__init__).parameters["prune_at"].default == vocab.PRUNE_AT


def test_documents_gives_the_titles_back():
    words = ["casa", "perro", "gato"]
    ids, lengths = np.array([0, 1, 2, 2, 1], dtype=np.int32), np.array([2, 1, 0, 2], dtype=np.int32)
    assert list(vocab.documents([(ids, lengths)], words)) == [["casa", "perro"], ["gato"], [], ["gato", "perro"]]
