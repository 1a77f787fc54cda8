"""Prepare a dataset once: tokenize, build the vocabulary, split, encode, and filter the word vectors.

    python -m job prepare --data runs/data/synthetic.csv.gz --embeddings none --out runs [--workers N]

Input: the challenge CSV (`title,label_quality,language,category`, `.csv` or `.csv.gz`) or the
course's `.jsonl.gz` (its `split` field is used). A CSV with a `split` column keeps its splits;
otherwise train/validation/test are drawn 80/10/10, stratified by category and seeded.

Output, under <out>/prepared/<hash>/ where <hash> covers the inputs' content and the settings:
  tokens_<split>.npy, offsets_<split>.npy, labels_<split>.npy   token ids (int32), row offsets, class ids
  vocab.json, labels.json, embeddings.npy                        words, category names, float32 [vocab, dim]
  report.json                                                    rows read and dropped (and why), OOV, coverage
  manifest.json                                                  written last: its presence means complete
A second run with the same inputs finds the manifest and does nothing. Trainers memory-map the
arrays, so parallel runs on one machine share one copy in the page cache.

Memory grows with the titles only by a few bytes each (length, category and split) and with the
distinct words, never with the titles' text or tokens. In phases, each logged as it ends:
  1. read and tokenize: a .gz input is decompressed once into staging; this process cuts the file
     into byte ranges of whole records (job.tables), and `--workers` processes (default: the usable
     cores) each read, parse, clean and tokenize a range and write its own piece file, sending back
     only counts. This process takes the pieces in input order (map keeps it), numbers their words
     and appends their token ids to a spool file, so the output is the same for any number of workers.
  2. split: the input's splits, or the stratified draw, and the class ids.
  3. vocabulary: the course's gensim vocabulary over the training titles, counted from the spool (job.vocab).
  4. encode: one more pass over the spool writes the .npy files to staging.
  5. embeddings: the word vectors of the vocabulary, read from a file or trained.
  6. write: the staged files are moved (or uploaded) into place, then the manifest.
Staging is a hidden folder beside the output (a local --out) or in the temp folder (S3); it holds the
decompressed input, the spool (4 bytes a token) and the arrays. `make bench-prepare` measures the
phases from outside the process (docs/data.md); the prepared folder never holds timings.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from job import embeddings as emb
from job import steps, storage, tables, text, vocab
from job.errors import UserError

log = logging.getLogger("job.prepare")

PREPARE_VERSION = 3  # bump when the output format or the preprocessing changes: it enters the hash
MAX_TOKENS = 64  # tokens stored per title; configs cut further with max_len
MAX_TITLE_CHARS = 2000  # longer "titles" are pasted descriptions or garbage: dropped and counted (real ones are < 200)
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)  # used when the input has no splits of its own
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test"}
SPECIALS = ("[PAD]", "[UNK]")  # ids 0 and 1
SPOOL_BLOCK_ROWS = 200_000  # titles read back from the spool at once: what bounds the later phases' scratch memory
PHASES = ("read and tokenize", "split", "vocabulary", "encode", "embeddings", "write")  # each logs "<phase>: done"

OVER_LONG = f"title over {MAX_TITLE_CHARS} characters"
_SPLIT_CODE = {alias: SPLITS.index(name) for alias, name in SPLIT_ALIASES.items()}


# --- phase 1, in a worker: one piece read, cleaned and tokenized ---------------------------------


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

    The piece file holds the piece's distinct words in order of first appearance (joined by "\\n": a token is
    letters only), each title's tokens as indices into them, and per title its length, category and split."""
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
        pickle.dump(("\n".join(words.tolist()), ids.astype(np.int32), np.asarray(lengths, dtype=np.int32), names.tolist(),
                     category.astype(np.int32), np.asarray(split, dtype=np.int8)), f, protocol=pickle.HIGHEST_PROTOCOL)
    return Counts(len(titles), columns, dropped, no_tokens, first_no_tokens, first_bad_split)


# --- phase 1, in this process: the pieces merged in input order --------------------------------


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
            words, ids, lengths, categories, category, split = pickle.load(f)
        piece_file.unlink()
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


# --- choosing the workers ---------------------------------------------------------


def usable_cores() -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU limit (a pod's limits.cpu), rounded down."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, int(limit))) if limit else cores


def _cgroup_cpu_limit() -> float | None:
    """cgroup v2 cpu.max ("<quota> <period>", or "max <period>"), else v1's cfs quota; None when there is none."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    return None


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
    """Phase 1: the input cut into pieces, each read and tokenized by a worker, merged here in input order."""
    plain = tables.staged(path, name, staging)
    corpus = Corpus(staging / "spool.i32")
    tasks = ((piece, language, staging / f"piece-{i}.pkl") for i, piece in enumerate(tables.pieces(plain, name)))
    with contextlib.ExitStack() as files:
        spooled = {"ids": files.enter_context(open(corpus.spool, "wb"))}
        spooled |= {name: files.enter_context(open(corpus.side_file(name), "wb")) for name in Corpus.PER_TITLE}
        for i, counts in enumerate(_tokenized(tasks, workers)):
            corpus.add(counts, staging / f"piece-{i}.pkl", spooled)
    if plain != path:
        plain.unlink()  # the decompressed input: its disk is the spool's now
    tables.check_whole(name, corpus.columns, corpus.rows_read)
    corpus.finish()
    return corpus


# --- phase 2: splits and class ids -----------------------------------------------------------


@dataclass
class Rows:
    """Per tokenized title: its split and class id (-1: dropped); the class names and what was dropped."""

    split: np.ndarray  # int8: index into SPLITS, -1 when the title is dropped (unknown split)
    label: np.ndarray  # int32: class id, -1 when dropped (unknown split, or a category not in the training split)
    label_names: list
    dropped: dict  # reason -> rows, in the order each reason first happened in the input
    small_classes: int  # classes with too few rows to split (all kept in train)
    duplicates: dict  # titles equal after cleaning: how many, and how their splits were kept together


def stratified_split(category: np.ndarray, names: list[str], seed: int) -> tuple[np.ndarray, int]:
    """80/10/10 per category (category: index into names, per row), seeded; classes with under 3 rows stay in train."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(category), dtype=np.int8)
    counts = np.bincount(category, minlength=len(names))
    by_class = np.argsort(category, kind="stable")  # the rows grouped by class, each class's in input order
    starts = np.cumsum(counts) - counts
    small = 0
    for c in sorted(range(len(names)), key=names.__getitem__):  # classes in the order of their names
        if counts[c] == 0:
            continue
        rows = by_class[starts[c]:starts[c] + counts[c]]
        if len(rows) < 3:
            small += 1
            continue
        rows = rows[rng.permutation(len(rows))]
        n_val = max(1, round(SPLIT_SHARES[1] * len(rows)))
        n_test = max(1, round(SPLIT_SHARES[2] * len(rows)))
        split[rows[:n_val]] = 1
        split[rows[n_val:n_val + n_test]] = 2
    return split, small


def title_keys(corpus: Corpus) -> np.ndarray:
    """A key per tokenized title from its cleaned tokens: titles equal after cleaning share it.

    Python's hash of the ids' bytes: equal titles get equal keys within this run, which is all the
    grouping needs (each group takes its first title's split, whatever the keys' values)."""
    keys = np.empty(len(corpus.lengths), dtype=np.int64)
    for start, stop, ids in corpus.blocks():
        data = memoryview(ids.tobytes())
        begin = 0
        for i, end in enumerate((np.cumsum(corpus.lengths[start:stop], dtype=np.int64) * 4).tolist()):  # int32: 4 bytes
            keys[start + i] = hash(data[begin:end].tobytes())
            begin = end
    return keys


KEY_BUCKETS = 64  # duplicates are grouped a bucket of keys at a time: a sort's scratch memory is 1/64 of the titles'


def keep_duplicates_together(split: np.ndarray, keys: np.ndarray, splits_given: bool) -> tuple[np.ndarray, dict]:
    """Drawn splits: every copy of a title goes to its first copy's split, so no title is both trained on
    and tested. Given splits are kept as they are; copies across them are counted."""
    together = split.copy()
    bucket = np.empty(len(keys), dtype=np.uint8)
    for start in range(0, len(keys), SPOOL_BLOCK_ROWS):  # the low bits of the keys, without a copy of them all
        bucket[start:start + SPOOL_BLOCK_ROWS] = keys[start:start + SPOOL_BLOCK_ROWS] & (KEY_BUCKETS - 1)
    stats = {"titles": int(len(keys)), "distinct": 0, "extra_copies": 0, "repeated_titles": 0, "moved_groups": 0}
    for b in range(KEY_BUCKETS):
        rows = np.flatnonzero(bucket == b)  # input order, so a group's first index is its first copy
        _, first, inverse, counts = np.unique(keys[rows], return_index=True, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        first_split = split[rows[first]][inverse]
        spread = np.zeros(len(first), dtype=bool)
        np.logical_or.at(spread, inverse, first_split != split[rows])  # groups whose copies sat in 2+ splits
        together[rows] = first_split
        stats["distinct"] += int(len(first))
        stats["repeated_titles"] += int((counts > 1).sum())
        stats["moved_groups"] += int(spread.sum())
    stats["extra_copies"] = stats["titles"] - stats["distinct"]
    stats["across_given_splits" if splits_given else "kept_together"] = stats.pop("moved_groups")
    return (split if splits_given else together), stats


def _dropped_before_labels(corpus: Corpus, unknown_split: int) -> dict:
    """Rows dropped so far by reason; the later reasons in the order they first happened in the input."""
    dropped = dict(corpus.dropped)
    later = []
    if corpus.no_tokens:
        later.append((corpus.first_no_tokens, "no tokens after cleaning", corpus.no_tokens))
    if unknown_split:
        later.append((corpus.first_bad_split, "unknown split value", unknown_split))
    for _, reason, n in sorted(later):
        dropped[reason] = n
    return dropped


def assign_splits(corpus: Corpus, seed: int, data: str) -> Rows:
    """Phase 2: each tokenized title's split and class id; class ids follow the categories' first appearance.

    Arrays over all titles are only the results (1 byte a title for the split, 4 for the class id) and the
    keys of the duplicate search (8, dropped at its end); the rest is computed a block of titles at a time."""
    n, names = len(corpus.lengths), list(corpus.categories)
    blocks = [(start, min(start + SPOOL_BLOCK_ROWS, n)) for start in range(0, n, SPOOL_BLOCK_ROWS)]
    unknown = sum(int((corpus.split[a:b] < 0).sum()) for a, b in blocks) if corpus.splits_given else 0
    dropped = _dropped_before_labels(corpus, unknown)
    if unknown == n:
        raise UserError(f"{data}: no usable rows ({corpus.rows_read} read; dropped: {_reasons(dropped)})")
    small = 0
    if corpus.splits_given:
        split = corpus.split.copy()  # -1: unknown, dropped
    else:
        split, small = stratified_split(corpus.category, names, seed)
    keys = title_keys(corpus)
    split, duplicates = keep_duplicates_together(split, keys, corpus.splits_given)
    del keys  # 8 bytes a title: gone before the vocabulary phase
    in_train = np.zeros(len(names), dtype=bool)
    first = np.full(len(names), n, dtype=np.int64)  # each category's first kept row
    for a, b in blocks:
        kept = split[a:b] >= 0 if corpus.splits_given else slice(None)
        category = corpus.category[a:b][kept]
        in_train[category[split[a:b][kept] == 0]] = True
        seen, at = np.unique(category, return_index=True)
        first[seen] = np.minimum(first[seen], np.arange(a, b)[kept][at])
    order = np.argsort(first, kind="stable")[:int((first < n).sum())]  # by first kept row (the course's rule)
    label_order = order[in_train[order]]
    if len(label_order) < 2:
        raise UserError(f"{data}: needs at least 2 categories in the training split, found {len(label_order)}")
    label_of = np.full(len(names) + 1, -1, dtype=np.int32)  # the last: a dropped row's
    label_of[label_order] = np.arange(len(label_order), dtype=np.int32)
    label = np.empty(n, dtype=np.int32)
    for a, b in blocks:
        label[a:b] = label_of[np.where(split[a:b] >= 0, corpus.category[a:b], len(names))]
    dropped["category not in training split"] = int(((split >= 0) & (label < 0)).sum())
    return Rows(split, label, [names[c] for c in label_order], dropped, small, duplicates)


# --- phases 3 and 4: the vocabulary, and the arrays --------------------------------------------


def build_vocabulary(corpus: Corpus, rows: Rows) -> list[str]:
    """Phase 3: the course's vocabulary (specials first) over the training titles, their words in full."""
    words = list(corpus.words)
    train = rows.split == 0
    return list(SPECIALS) + vocab.build(lambda: corpus.titles(train), words)


class NpyWriter:
    """A 1-d .npy file written in pieces: its header (final length) first, as np.save writes it, hashed as it goes."""

    def __init__(self, path: Path, dtype, length: int):
        self.path, self.dtype, self.length, self.written = path, np.dtype(dtype), length, 0
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (length,)})
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self._put(header.getvalue())

    def _put(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)

    def write(self, values: np.ndarray) -> None:
        self._put(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.written += len(values)

    def close(self) -> dict:
        self.file.close()
        assert self.written == self.length, f"{self.path.name}: wrote {self.written} of {self.length} values"
        return {"path": self.path, "bytes": self.path.stat().st_size, "sha256": self.sha256.hexdigest()}


def _split_writers(corpus: Corpus, rows: Rows, staging: Path) -> dict:
    cut = np.minimum(corpus.lengths, MAX_TOKENS)
    writers = {}
    for k, name in enumerate(SPLITS):
        sel = (rows.label >= 0) & (rows.split == k)
        n_rows = int(sel.sum())
        writers[name] = (NpyWriter(staging / f"tokens_{name}.npy", np.int32, int(cut[sel].sum())),
                         NpyWriter(staging / f"offsets_{name}.npy", np.int64, n_rows + 1),
                         NpyWriter(staging / f"labels_{name}.npy", np.int32, n_rows))
        writers[name][1].write(np.zeros(1, dtype=np.int64))
    return writers


def encode(corpus: Corpus, rows: Rows, words: list[str], staging: Path) -> tuple[dict, dict, dict]:
    """Phase 4: tokens, offsets and labels of each split into staging; (files, rows per split, OOV rate per split)."""
    remap = np.ones(len(corpus.words), dtype=np.int32)  # provisional id -> vocabulary id; [UNK] = 1
    remap[[corpus.words[w] for w in words[len(SPECIALS):]]] = np.arange(len(SPECIALS), len(words), dtype=np.int32)
    writers = _split_writers(corpus, rows, staging)
    ends = dict.fromkeys(SPLITS, 0)
    unknown = dict.fromkeys(SPLITS, 0)
    for start, stop, ids in corpus.blocks():
        lengths = corpus.lengths[start:stop]
        first = np.cumsum(lengths) - lengths  # each title's first token in ids
        cut = np.minimum(lengths, MAX_TOKENS)
        for k, name in enumerate(SPLITS):
            sel = np.flatnonzero((rows.label[start:stop] >= 0) & (rows.split[start:stop] == k))
            n = cut[sel]
            within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            tokens = remap[ids[np.repeat(first[sel], n) + within]]
            tok_file, off_file, lab_file = writers[name]
            tok_file.write(tokens)
            off_file.write(ends[name] + np.cumsum(n, dtype=np.int64))
            lab_file.write(rows.label[start:stop][sel])
            ends[name] += int(n.sum())
            unknown[name] += int((tokens == 1).sum())
    files = {}
    for name in SPLITS:
        for writer in writers[name]:
            files[writer.path.name] = writer.close()
    split_rows = {name: writers[name][2].length for name in SPLITS}
    oov = {name: round(unknown[name] / ends[name], 4) if ends[name] else 0.0 for name in SPLITS}
    return files, split_rows, oov


class _Sentences:
    """The training titles as lists of words, read again from the spool on each of gensim's passes."""

    def __init__(self, corpus: Corpus, train: np.ndarray):
        self.corpus, self.train, self.count = corpus, train, int(train.sum())

    def __iter__(self):
        return vocab.documents(self.corpus.titles(self.train), list(self.corpus.words))

    def __len__(self) -> int:
        return self.count


# --- the step ----------------------------------------------------------------------


def input_hash(data: str, embeddings: str, args) -> tuple[str, dict]:
    inputs = {
        "version": PREPARE_VERSION,
        "data": storage.fingerprint(data),
        "embeddings": "none" if embeddings == "none" else storage.fingerprint(embeddings),
        "embedding_dim": args.embedding_dim if embeddings == "none" else None,
        "language": args.language,
        "seed": args.seed,
    }  # no worker count: the output is the same for any
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return digest, inputs


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _staging_dir(out: str, digest: str) -> Path:
    """A fresh folder for the spool and the staged arrays: beside a local output (so a rename publishes), else in temp."""
    if storage.is_s3(out):
        return Path(tempfile.mkdtemp(prefix=f"meli-prepare-{digest}-"))
    parent = Path(out).parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{digest}.staging-", dir=parent))


def _vectors(args, vocabulary: list[str], sentences: _Sentences | None) -> emb.Vectors:
    word_id = {w: i for i, w in enumerate(vocabulary)}
    if args.embeddings == "none":
        return emb.train(sentences, word_id, args.embedding_dim, args.seed)
    name = args.embeddings.rsplit("/", 1)[-1]
    vectors = emb.load(storage.local_copy(args.embeddings), name, word_id, args.seed)
    emb.check_coverage(vectors, len(vocabulary) - 2, name, getattr(args, "allow_low_coverage", False))
    return vectors


def _report(args, corpus: Corpus, rows: Rows, split_rows: dict, oov: dict, vocabulary: list, vectors: emb.Vectors) -> dict:
    return {
        "data": args.data,
        "embeddings": args.embeddings,
        "rows_read": corpus.rows_read,
        "rows_kept": sum(split_rows.values()),
        "rows_dropped": {k: v for k, v in rows.dropped.items() if v},
        "splits": split_rows,
        "splits_from_input": corpus.splits_given,
        "classes": len(rows.label_names),
        "classes_too_small_to_split": rows.small_classes,
        "duplicates": rows.duplicates,  # titles equal after cleaning (kept_together: groups moved to one split)
        "vocab_size": len(vocabulary),
        "oov_rate": oov,
        "embedding_dim": int(vectors.matrix.shape[1]),
        "embedding_coverage": round(vectors.found / max(1, len(vocabulary) - 2), 4),
        "embedding_file": vectors.stats,
    }  # no timings: the prepared folder is a pure function of its hash, so concurrent prepares write identical bytes


def _publish(out: str, files: dict) -> dict:
    """Write every file (staged arrays are moved, the rest written), in order; returns the manifest's file list."""
    listed = {}
    for fname, item in files.items():
        uri = storage.join(out, fname)
        if isinstance(item, dict):
            storage.put_file(item["path"], uri)
            listed[fname] = {"bytes": item["bytes"], "sha256": item["sha256"]}
        else:
            storage.write_bytes(uri, item)
            listed[fname] = {"bytes": len(item), "sha256": hashlib.sha256(item).hexdigest()}
    return listed


def _done(phase: str, started: float) -> float:
    """Log a phase's end (the bench splits its clock at these lines); returns the next phase's start."""
    now = time.perf_counter()
    log.info("%s: done in %.1f s", phase, now - started)
    return now


def _prepare(args, workers: int, staging: Path) -> dict:
    """Phases 1 to 5: the output files in write order, staged arrays or bytes (report.json among them)."""
    name = args.data.rsplit("/", 1)[-1]
    started = time.perf_counter()
    corpus = tokenize_input(storage.local_copy(args.data), name, args.language, workers, staging)
    log.info("read %d rows from %s (%d workers)", corpus.rows_read, args.data, workers)
    started = _done("read and tokenize", started)
    rows = assign_splits(corpus, args.seed, args.data)
    corpus.category = corpus.split = None  # the input's: the splits and class ids replace them
    started = _done("split", started)
    train = rows.split == 0
    vocabulary = build_vocabulary(corpus, rows)
    log.info("vocabulary: %d words (+2 specials) from %d training titles", len(vocabulary) - 2, int(train.sum()))
    started = _done("vocabulary", started)
    files, split_rows, oov = encode(corpus, rows, vocabulary, staging)
    for split_name in ("validation", "test"):
        if split_rows[split_name] == 0:
            raise UserError(f"{args.data}: the {split_name} split is empty after cleaning; need more rows per category")
    started = _done("encode", started)
    # Only trained vectors read the titles again: the per-title arrays go before the embeddings phase.
    sentences = _Sentences(corpus, train) if args.embeddings == "none" else None
    corpus.release(keep_titles=sentences is not None)
    rows.split = rows.label = train = None
    vectors = _vectors(args, vocabulary, sentences)
    _done("embeddings", started)
    files["embeddings.npy"] = _npy(vectors.matrix)
    files["vocab.json"] = json.dumps(vocabulary, ensure_ascii=False).encode()
    files["labels.json"] = json.dumps(rows.label_names, ensure_ascii=False).encode()
    report = _report(args, corpus, rows, split_rows, oov, vocabulary, vectors)
    files["report.json"] = json.dumps(report, indent=2, ensure_ascii=False).encode()
    return files


def main(args) -> int:
    """Prepare once per dataset: prints the prepared URI and writes it to --result-file (Argo's output)."""
    storage.check_uri(args.data, "--data")
    storage.check_uri(args.out, "--out")
    if args.embeddings != "none":
        storage.check_uri(args.embeddings, "--embeddings")
    workers = usable_cores() if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1")
    digest, inputs = input_hash(args.data, args.embeddings, args)
    out = storage.join(args.out, "prepared", digest)
    if storage.exists(storage.join(out, "manifest.json")):
        log.info("already prepared: %s (same inputs, manifest found)", out)
        return _emit(out, args.result_file)

    import pandas  # noqa: F401 - imported before the pool forks, so its workers share it
    started = time.perf_counter()
    staging = _staging_dir(out, digest)
    try:
        files = _prepare(args, workers, staging)
        write_started = time.perf_counter()
        listed = _publish(out, files)
        report = json.loads(files["report.json"])
        manifest = {"version": PREPARE_VERSION, "inputs": inputs, "files": listed, "classes": report["classes"],
                    "vocab_size": report["vocab_size"], "embedding_dim": report["embedding_dim"], "splits": report["splits"]}
        storage.write_json(storage.join(out, "manifest.json"), manifest)  # last: marks the folder complete
        _done("write", write_started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared %s in %.1fs: %s rows, %d classes, vocab %d, OOV %s, coverage %.1f%%, dropped: %s", out,
             time.perf_counter() - started, report["splits"], report["classes"], report["vocab_size"], report["oov_rate"],
             100 * report["embedding_coverage"], _reasons(report["rows_dropped"]))
    return _emit(out, args.result_file)


def _reasons(dropped: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in dropped.items() if v) or "none"


def _emit(out: str, result_file: str | None) -> int:
    steps.write_result(result_file, out)
    print(out)
    return 0


# --- reading it back ---------------------------------------------------------------


@dataclass
class Prepared:
    uri: str
    arrays: dict  # name -> numpy array (memory-mapped)
    vocab_size: int
    classes: int
    label_names: list
    vocab: list  # the word of each token id ([PAD], [UNK] first)
    language: str  # the stopword list the titles were tokenized with


def open_prepared(uri: str, cache_dir: str | Path | None = None) -> Prepared:
    """Memory-map a prepared folder; an S3 one is fetched once into the local cache and checked."""
    manifest_uri = storage.join(uri, "manifest.json")
    if not storage.exists(manifest_uri):
        raise UserError(f"{uri}: not a prepared dataset (no manifest.json; run prepare first)")
    manifest = storage.read_json(manifest_uri)
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        local = Path(cache_dir or storage.default_cache_dir()) / "prepared" / bucket / key
        for fname, meta in manifest["files"].items():
            target = local / fname
            if not (target.exists() and target.stat().st_size == meta["bytes"]):
                storage.download_file(storage.join(uri, fname), target)
                if hashlib.sha256(target.read_bytes()).hexdigest() != meta["sha256"]:
                    target.unlink()
                    raise UserError(f"{storage.join(uri, fname)}: content does not match the manifest (corrupt upload?)")
    else:
        local = Path(uri)
    arrays = {}
    for fname in manifest["files"]:
        if fname.endswith(".npy"):
            arrays[fname[:-4]] = np.load(local / fname, mmap_mode="r", allow_pickle=False)
    labels = json.loads((local / "labels.json").read_text(encoding="utf-8"))
    vocab = json.loads((local / "vocab.json").read_text(encoding="utf-8"))
    return Prepared(uri, arrays, manifest["vocab_size"], manifest["classes"], labels, vocab,
                    manifest["inputs"]["language"])
