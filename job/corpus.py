"""Prepare's first phase: the input read, cleaned and tokenized by workers, each on its own piece, into a spool.

    corpus = tokenize_input(path, name, "spanish", workers, staging)   # Corpus: counts, words, per-title arrays

A .gz input is decompressed once into staging, and this process cuts the file into byte ranges of
whole records (job.tables). Each worker reads, parses, cleans and tokenizes its own range and
writes its own piece file; only counts come back. This process takes the pieces in input order
(map keeps it), numbers their words and categories in order of first appearance, and appends their
token ids (int32, into the list of every distinct word) to a spool file, and each title's length,
category and split to files beside it: the result is the same for any number of workers, and
memory holds a few bytes per title and the distinct words, never the titles' text or tokens.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from job import tables, text

MAX_TITLE_CHARS = 2000  # longer "titles" are pasted descriptions or garbage: dropped and counted (real ones are < 200)
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test"}
SPOOL_BLOCK_ROWS = 200_000  # titles read back from the spool at once: what bounds the later phases' scratch memory
OVER_LONG = f"title over {MAX_TITLE_CHARS} characters"
_SPLIT_CODE = {alias: SPLITS.index(name) for alias, name in SPLIT_ALIASES.items()}


# --- in a worker: one piece read, cleaned and tokenized ---------------------------------


@dataclass
class Counts:
    """What a worker sends back for its piece; the tokens themselves are in its piece file."""

    rows: int  # rows read
    columns: tuple  # the columns (fields) the piece's rows had
    dropped: dict  # rows dropped before tokenizing, by reason
    no_tokens: int  # titles left with no tokens after cleaning
    first_no_tokens: int  # row (in the piece) of the first of those, or -1
    first_bad_split: int  # row (in the piece) of the first tokenized title with no known split, or -1


def _stripped(factorized: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """The distinct values of a factorized column (codes, values) as stripped text, then "" for a missing one (code -1)."""
    import pandas as pd

    return pd.Series(factorized[1], dtype=object).astype(str).str.strip().tolist() + [""]


def tokenize_piece(task: tuple) -> Counts:
    """Read, parse, clean, filter and tokenize one piece: (a tables.Piece, the stopwords' language, the piece file).

    The piece file is six .npy arrays one after the other (no pickles): the piece's distinct words in order of
    first appearance (UTF-8, joined by "\\n": a token is letters only), each title's tokens as indices into them,
    per title its length; the categories (UTF-8 JSON), and per title its category and split."""
    import pandas as pd

    piece, language, out = task
    frame, columns = tables.parse(piece)
    titles, categories = frame["title"], pd.factorize(frame["category"])
    splits = pd.factorize(frame["split"]) if "split" in columns else None
    del frame
    # A JSON record without the field (null, or absent) has an empty one, and is dropped and counted as such.
    titles = titles.fillna("").astype(str).str.strip()
    cats = np.asarray(_stripped(categories), dtype=object)[categories[0]]  # code -1 picks the "" at the end
    too_long = (titles.str.len() > MAX_TITLE_CHARS).to_numpy()
    empty_title, empty_cat = (titles == "").to_numpy(), cats == ""
    dropped = {"empty title": int(empty_title.sum()), "empty category": int((~empty_title & empty_cat).sum()),
               OVER_LONG: int((too_long & ~empty_cat).sum())}
    keep = ~empty_title & ~empty_cat & ~too_long
    split_of = None if splits is None else np.asarray([_SPLIT_CODE.get(v.lower(), -1) for v in _stripped(splits)])[splits[0]]
    stop = text.stopwords(language)
    title_list = titles.tolist()
    tokens_all: list[str] = []
    lengths, kept_rows, split = [], [], []
    no_tokens, first_no_tokens, first_bad_split = 0, -1, -1
    for i in np.flatnonzero(keep).tolist():
        tokens = text.tokenize(title_list[i], stop)
        if not tokens:
            first_no_tokens = i if no_tokens == 0 else first_no_tokens
            no_tokens += 1
            continue
        s = int(split_of[i]) if split_of is not None else -1
        if s < 0 and first_bad_split < 0:
            first_bad_split = i
        tokens_all += tokens
        lengths.append(len(tokens))
        kept_rows.append(i)
        split.append(s)
    # ids in order of first appearance, hashed in C: a dict per token in Python cost as much as tokenizing
    ids, words = pd.factorize(np.asarray(tokens_all, dtype=object))
    category, names = pd.factorize(cats[kept_rows])
    with open(out, "wb") as f:
        for array in (_utf8("\n".join(words.tolist())), ids.astype(np.int32), np.asarray(lengths, dtype=np.int32),
                      _utf8(json.dumps(names.tolist())), category.astype(np.int32), np.asarray(split, dtype=np.int8)):
            np.save(f, array, allow_pickle=False)
    return Counts(len(titles), columns, dropped, no_tokens, first_no_tokens, first_bad_split)


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


# --- in this process: the pieces merged in input order --------------------------------


@dataclass
class Corpus:
    """The tokenized input: per title with tokens its length, category and split; its token ids in the spool."""

    spool: Path  # int32 ids into `words` of every tokenized title's tokens, in input order
    words: dict = field(default_factory=dict)  # word -> provisional id, in order of first appearance
    categories: dict = field(default_factory=dict)  # category -> provisional id, in order of first appearance
    rows_read: int = 0
    dropped: dict = field(default_factory=lambda: {"empty title": 0, "empty category": 0, OVER_LONG: 0})
    no_tokens: int = 0
    first_no_tokens: int = -1  # input row of the first title left with no tokens, or -1
    first_bad_split: int = -1  # input row of the first tokenized title with no known split, or -1
    splits_given: bool = False  # the input has a split column (field)
    columns: set = field(default_factory=set)  # every column (field) the input's rows had
    lengths: np.ndarray | None = None  # int32 per tokenized title
    category: np.ndarray | None = None  # int32 per tokenized title: provisional category id
    split: np.ndarray | None = None  # int8 per tokenized title: index into SPLITS, -1 unknown

    PER_TITLE = {"lengths": np.int32, "category": np.int32, "split": np.int8}  # spooled beside the ids while reading

    def side_file(self, name: str) -> Path:
        return self.spool.with_name(f"{self.spool.stem}.{name}")

    def add(self, counts: Counts, piece_file: Path, files: dict) -> None:
        """Append one piece: its words and categories get provisional ids; its ids, and its per-title arrays,
        go to the spool files (read back once, whole, by finish: nothing per piece is held meanwhile)."""
        for reason, n in counts.dropped.items():
            self.dropped[reason] += n
        if counts.no_tokens and self.first_no_tokens < 0:
            self.first_no_tokens = self.rows_read + counts.first_no_tokens
        if counts.first_bad_split >= 0 and self.first_bad_split < 0:
            self.first_bad_split = self.rows_read + counts.first_bad_split
        self.no_tokens += counts.no_tokens
        self.rows_read += counts.rows
        self.columns.update(counts.columns)
        self.splits_given |= "split" in counts.columns
        with open(piece_file, "rb") as f:
            words, ids, lengths, categories, category, split = [np.load(f, allow_pickle=False) for _ in range(6)]
        piece_file.unlink()
        words, categories = words.tobytes().decode(), json.loads(categories.tobytes())
        word_ids = _number(self.words, words.split("\n") if words else [])
        word_ids[ids].tofile(files["ids"])
        lengths.tofile(files["lengths"])
        _number(self.categories, categories)[category].tofile(files["category"])
        split.tofile(files["split"])

    def finish(self) -> None:
        for name, dtype in self.PER_TITLE.items():
            setattr(self, name, np.fromfile(self.side_file(name), dtype=dtype))
            self.side_file(name).unlink()

    def release(self, keep_titles: bool) -> None:
        """Drop what the phases after encoding do not need: all of it, unless the titles are read again (to train
        vectors: the lengths and the words)."""
        self.category = self.split = None
        if not keep_titles:
            self.lengths = None
            self.words = {}

    def blocks(self, rows: int = SPOOL_BLOCK_ROWS) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first title, end title, their token ids) over the spool, in input order."""
        with open(self.spool, "rb") as f:
            for start in range(0, len(self.lengths), rows):
                stop = min(start + rows, len(self.lengths))
                yield start, stop, np.fromfile(f, dtype=np.int32, count=int(self.lengths[start:stop].sum()))

    def titles(self, mask: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, lengths) of the titles where mask is true, a block at a time."""
        for start, stop, ids in self.blocks():
            m = mask[start:stop]
            yield ids[np.repeat(m, self.lengths[start:stop])], self.lengths[start:stop][m]


def _number(ids: dict, names: list) -> np.ndarray:
    """The ids of distinct names, new ones numbered on from len(ids). Looked up in C first: after the first chunks
    most words are known, and this runs in the one process that every chunk passes through."""
    found = list(map(ids.get, names))
    for j in [j for j, i in enumerate(found) if i is None]:
        found[j] = ids[names[j]] = len(ids)
    return np.asarray(found, dtype=np.int32)


def _tokenized(tasks: Iterator[tuple], workers: int) -> Iterator[Counts]:
    """tokenize_piece over the tasks on `workers` processes, the counts in input order: here for one worker;
    else a pool forked from this process (its workers share the modules it imported)."""
    if workers == 1:
        yield from map(tokenize_piece, tasks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(tokenize_piece, tasks)  # a piece's error is raised in its turn, after those before it


def tokenize_input(path: Path, name: str, language: str, workers: int, staging: Path) -> Corpus:
    """The input cut into pieces, each read and tokenized by a worker, merged here in input order."""
    plain = tables.staged(path, name, staging)
    corpus = Corpus(staging / "spool.i32")
    tasks = ((piece, language, staging / f"piece-{i}.npys") for i, piece in enumerate(tables.pieces(plain, name)))
    with contextlib.ExitStack() as files:
        spooled = {"ids": files.enter_context(open(corpus.spool, "wb"))}
        spooled |= {name: files.enter_context(open(corpus.side_file(name), "wb")) for name in Corpus.PER_TITLE}
        for i, counts in enumerate(_tokenized(tasks, workers)):
            corpus.add(counts, staging / f"piece-{i}.npys", spooled)
    if plain != path:
        plain.unlink()  # the decompressed input: its disk is the spool's now
    tables.check_whole(name, corpus.columns, corpus.rows_read)
    corpus.finish()
    return corpus


def reasons(dropped: dict) -> str:
    """Rows dropped, by reason, for a message."""
    return ", ".join(f"{v} {k}" for k, v in dropped.items() if v) or "none"
