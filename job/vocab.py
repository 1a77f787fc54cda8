"""The course's vocabulary (a gensim Dictionary, then filter_extremes), counted with numpy over token ids.

    words = vocab.build(chunks, provisional_words)   # the words kept, in gensim's order, without specials

gensim's Dictionary counts one Python list of strings at a time, slowly (docs/data.md has the
figure). Here the titles arrive as chunks of (ids, lengths): ids index a list of every distinct
word seen, in any order. The result is gensim's, word for word and in the same order, because:
  - gensim numbers a word by the first title that holds it; the new words of one title are
    numbered in sorted order;
  - filter_extremes keeps the words in at least no_below and at most int(no_above * titles)
    titles, then the keep_n in most titles (a stable sort by that count over the numbering), and
    numbers those again in their old order.
One thing numpy does not copy: while counting, gensim prunes its dictionary to the PRUNE_AT most
frequent words once it holds more. A corpus with more distinct training words than that is counted
by gensim itself, from the same chunks, so the result is gensim's in every case.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("job.vocab")

NO_BELOW = 2  # filter_extremes as the course called it: words in at least 2 titles ...
NO_ABOVE = 1.0  # ... and in at most this share of them (1.0: no upper cut) ...
KEEP_N = 50000  # ... and of those, the 50,000 in most titles
PRUNE_AT = 2_000_000  # gensim Dictionary's default prune_at: distinct words it holds before pruning while counting

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # a fresh pass of (ids int32, lengths) per call


def document_frequencies(chunks: Iterable[tuple[np.ndarray, np.ndarray]], n_words: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(titles holding each word, first title holding it or -1, titles) over chunks of (ids, lengths)."""
    never = np.iinfo(np.int64).max
    dfs = np.zeros(n_words, dtype=np.int64)
    first = np.full(n_words, never, dtype=np.int64)
    titles = 0
    for ids, lengths in chunks:
        title = np.repeat(np.arange(titles, titles + len(lengths), dtype=np.int64), lengths)
        pairs = np.sort(title * n_words + ids)  # sorted, not np.unique: numpy 2.4 hashes those, 50x slower here
        once = np.ones(len(pairs), dtype=bool)
        once[1:] = pairs[1:] != pairs[:-1]  # each (title, word) once
        words = pairs[once] % n_words
        dfs += np.bincount(words, minlength=n_words)
        np.minimum.at(first, words, pairs[once] // n_words)
        titles += len(lengths)
    first[first == never] = -1
    return dfs, first, titles


def select(words: list[str], dfs: np.ndarray, first: np.ndarray, titles: int,
           no_below: int = NO_BELOW, no_above: float = NO_ABOVE, keep_n: int | None = KEEP_N) -> np.ndarray:
    """Indices into `words` of the words filter_extremes keeps, in the Dictionary's final order."""
    candidates = np.flatnonzero((first >= 0) & (dfs >= no_below) & (dfs <= int(no_above * titles)))
    rank = np.empty(len(candidates), dtype=np.int64)
    rank[sorted(range(len(candidates)), key=lambda j: words[candidates[j]])] = np.arange(len(candidates))
    numbered = candidates[np.lexsort((rank, first[candidates]))]  # gensim's numbering
    kept = np.argsort(-dfs[numbered], kind="stable")
    if keep_n is not None:
        kept = kept[:keep_n]
    return numbered[np.sort(kept)]


def documents(chunks: Iterable[tuple[np.ndarray, np.ndarray]], words: list[str]) -> Iterator[list[str]]:
    """The titles of the chunks as lists of words again."""
    table = np.asarray(words, dtype=object)
    for ids, lengths in chunks:
        tokens = table[ids].tolist()
        ends = np.cumsum(lengths).tolist()
        start = 0
        for end in ends:
            yield tokens[start:end]
            start = end


def with_gensim(docs: Iterable[list[str]], prune_at: int = PRUNE_AT, no_below: int = NO_BELOW,
                no_above: float = NO_ABOVE, keep_n: int | None = KEEP_N) -> list[str]:
    """The course's own code: gensim's Dictionary over the titles, then filter_extremes."""
    from gensim.corpora import Dictionary

    dictionary = Dictionary(docs, prune_at=prune_at)
    dictionary.filter_extremes(no_below=no_below, no_above=no_above, keep_n=keep_n)
    return [w for w, _ in sorted(dictionary.token2id.items(), key=lambda kv: kv[1])]


def build(chunks: Chunks, words: list[str], prune_at: int = PRUNE_AT) -> list[str]:
    """The vocabulary gensim would build from the titles `chunks` yields, without the special tokens."""
    dfs, first, titles = document_frequencies(chunks(), len(words))
    distinct = int((first >= 0).sum())
    if distinct > prune_at:
        log.info("%d distinct training words, over gensim's prune_at (%d): counting with gensim", distinct, prune_at)
        return with_gensim(documents(chunks(), words), prune_at)
    return [words[i] for i in select(words, dfs, first, titles)]
