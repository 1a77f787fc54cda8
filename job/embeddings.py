"""Word vectors for the vocabulary: read from a file, or trained on the training titles.

Files: text (`.txt`, `.vec`, optionally `.gz`), one word and its floats per line, with or
without a `count dim` header line (SBW-vectors-300-min5.txt.gz has one, glove.6B.50d.txt.gz
does not); or word2vec binary (`.bin`, optionally `.gz`). The file is streamed once and only
the vocabulary's words are kept, so a 1 M-word file never sits in memory whole. It is read and
decoded in blocks of 8 MiB; a line whose word is not in the vocabulary is counted and its values
counted (a wrong number is a bad line), but never split or parsed.

Bad lines (wrong number of floats, unparsable or non-finite numbers) are counted and reported; a file
whose dimension disagrees with its header, or with most of its lines, is refused.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from job.errors import UserError

log = logging.getLogger("job.embeddings")

MAX_BAD_SHARE = 0.01  # refuse a file where more than this share of lines is malformed (beyond BAD_FLOOR lines)
BAD_FLOOR = 10  # malformed lines a big file may have before MAX_BAD_SHARE applies
MIN_COVERAGE = 0.10  # refuse vectors covering less of the vocabulary than this: a wrong language or a wrong file
FILL_BLOCK_ROWS = 4096  # vocabulary rows at a time while filling the missing vectors (a few MB of scratch)
READ_BLOCK = 8 << 20  # bytes read and decoded at once (8 MiB): one C call each instead of one per line


@dataclass
class Vectors:
    matrix: np.ndarray  # float32 [vocab, dim], rows in vocabulary order
    found: int  # vocabulary words that had a vector
    stats: dict = field(default_factory=dict)  # lines read, bad lines, duplicates: for the report


def _text_lines(path: Path, name: str) -> Iterator[str]:
    """The file's lines, without their "\\n": read and decoded READ_BLOCK bytes at a time, not a line at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # a character cut by a block's end waits for the next block
    with open(path, "rb") as raw, (gzip.open(raw) if name.endswith(".gz") else contextlib.nullcontext(raw)) as f:
        carry, before = "", 0  # the unfinished last line, and the lines yielded so far
        while True:
            block = f.read(READ_BLOCK)
            pending = decoder.getstate()[0]
            try:
                text = carry + decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:  # refused at once, not after reading on to the next newline
                data = pending + block
                newlines = data.count(b"\n", 0, e.start)
                column = e.start - data.rfind(b"\n", 0, e.start) + (0 if newlines else len(carry.encode()))
                raise UserError(f"{name}: not UTF-8 text (line {before + newlines + 1}, byte {column}); "
                                f"a binary word2vec file must end in .bin") from None
            lines = text.split("\n")
            carry = lines.pop()
            yield from lines
            before += len(lines)
            if not block:
                if carry:
                    yield carry
                return


def _blocks(rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + FILL_BLOCK_ROWS, rows)) for a in range(0, rows, FILL_BLOCK_ROWS)]


def _found_scale(matrix: np.ndarray, found_mask: np.ndarray) -> float:
    """The standard deviation of the found vectors' values, in float64, a block of rows at a time: a copy
    of every found row (and the temporaries of .std() over it) would be up to three times the matrix."""
    n = int(found_mask.sum()) * matrix.shape[1]
    if n == 0:
        return 0.1

    def found_rows():
        for a, b in _blocks(len(matrix)):
            yield matrix[a:b][found_mask[a:b]].astype(np.float64)

    mean = sum(float(rows.sum()) for rows in found_rows()) / n
    return (sum(float(np.square(rows - mean).sum()) for rows in found_rows()) / n) ** 0.5


def _fill_missing(matrix: np.ndarray, found_mask: np.ndarray, seed: int) -> None:
    """Words with no vector get small random ones at the scale of the found ones; [PAD] stays zero."""
    rng = np.random.default_rng(seed)
    scale = _found_scale(matrix, found_mask) or 0.1
    missing = ~found_mask
    missing[0] = False
    for a, b in _blocks(len(matrix)):  # the generator's stream is the same drawn in blocks as at once
        rows = np.flatnonzero(missing[a:b]) + a
        matrix[rows] = rng.normal(0.0, scale, size=(len(rows), matrix.shape[1])).astype(np.float32)
    matrix[0] = 0.0


def load_text(path: Path, name: str, vocab: dict[str, int], seed: int = 0) -> Vectors:
    dim = header_dim = None
    matrix = None
    found_mask = np.zeros(len(vocab), dtype=bool)
    lines = bad = duplicates = 0
    try:
        for lineno, line in enumerate(_text_lines(path, name), 1):
            line = line.rstrip("\r ")
            space = line.find(" ")  # the word ends here; its numbers are split only if the word is wanted
            if lineno == 1 and line.count(" ") == 1 and all(p.isdigit() for p in line.split(" ")):
                header_dim = int(line[space + 1:])
                if header_dim < 1:
                    raise UserError(f"{name}: header says dimension {header_dim}")
                continue
            if space <= 0:  # no numbers, or no word
                if line.strip():
                    lines += 1
                    bad += 1
                continue
            lines += 1  # every non-empty line but the header; `bad` of them are malformed
            values = line.count(" ")
            if dim is None:
                dim = header_dim or values
                if header_dim and values != header_dim:
                    raise UserError(f"{name}: embedding dimension mismatch: header says {header_dim}, line {lineno} has {values} values")
                matrix = np.zeros((len(vocab), dim), dtype=np.float32)
            if values != dim:
                bad += 1
                continue
            idx = vocab.get(line[:space])
            if idx is None:  # most lines of a 1 M-word file: skipped before any number is read
                continue
            if found_mask[idx]:
                duplicates += 1  # keep the first vector of a word, as gensim does
                continue
            try:
                row = np.asarray(line[space + 1:].split(" "), dtype=np.float32)
            except ValueError:
                bad += 1
                continue
            if not np.isfinite(row).all():  # nan/inf (or an overflow) would make every loss NaN
                bad += 1
                continue
            matrix[idx] = row
            found_mask[idx] = True
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise UserError(f"{name}: cannot read word vectors ({type(e).__name__}: {e})") from None
    if matrix is None:
        raise UserError(f"{name}: no word vectors found (empty file or no 'word v1 v2 ...' lines)")
    # More malformed lines than good ones is never a vector file, however small it is.
    if bad > lines - bad or bad > max(BAD_FLOOR, MAX_BAD_SHARE * lines):
        raise UserError(f"{name}: {bad} of {lines} lines are malformed (expected a word and {dim} numbers); "
                        f"is the dimension right?")
    _fill_missing(matrix, found_mask, seed)
    return Vectors(matrix, int(found_mask[2:].sum()), {"lines": lines, "bad_lines": bad, "duplicate_words": duplicates, "dim": dim})


def load_binary(path: Path, name: str, vocab: dict[str, int], seed: int = 0) -> Vectors:
    from gensim.models import KeyedVectors

    try:
        kv = KeyedVectors.load_word2vec_format(str(path), binary=True, unicode_errors="ignore")
    except Exception as e:  # gensim raises bare ValueError/EOFError on a broken file
        raise UserError(f"{name}: not a word2vec binary file ({type(e).__name__}: {e})") from None
    matrix = np.zeros((len(vocab), kv.vector_size), dtype=np.float32)
    found_mask = np.zeros(len(vocab), dtype=bool)
    for word, idx in vocab.items():
        if word in kv.key_to_index:
            matrix[idx] = kv[word]
            found_mask[idx] = True
    _fill_missing(matrix, found_mask, seed)
    return Vectors(matrix, int(found_mask[2:].sum()), {"lines": len(kv), "bad_lines": 0, "duplicate_words": 0, "dim": kv.vector_size})


def load(path: Path, name: str, vocab: dict[str, int], seed: int = 0) -> Vectors:
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".bin"):
        return load_binary(path, name, vocab, seed)
    if not (base.endswith(".txt") or base.endswith(".vec")):
        raise UserError(f"{name}: unknown word-vector format (expected .txt, .vec or .bin, optionally .gz)")
    return load_text(path, name, vocab, seed)


def stable_hash(text: str) -> int:
    """The same number for the same string in every process (Python's hash() of a str is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def check_coverage(vectors: Vectors, vocab_words: int, name: str, allow_low: bool) -> float:
    """The share of the vocabulary the file had vectors for, logged; under MIN_COVERAGE it is refused."""
    coverage = vectors.found / max(1, vocab_words)
    log.info("%s: vectors for %d of %d vocabulary words (coverage %.1f%%)", name, vectors.found, vocab_words, 100 * coverage)
    if coverage < MIN_COVERAGE and not allow_low:
        raise UserError(f"{name}: vectors for only {vectors.found} of {vocab_words} vocabulary words ({100 * coverage:.1f}%, "
                        f"under {100 * MIN_COVERAGE:.0f}%): the wrong language or the wrong file? "
                        f"--allow-low-coverage uses it anyway")
    return coverage


def train(sentences: list[list[str]], vocab: dict[str, int], dim: int, seed: int = 0) -> Vectors:
    """Word2Vec on the training titles, for when no pretrained vectors are given.

    Skip-gram with 10 epochs: on short titles CBOW's vectors for sibling categories' words come out
    nearly alike, and a frozen-embedding model can then not tell the siblings apart.
    """
    from gensim.models import Word2Vec

    if dim < 1:
        raise UserError(f"--embedding-dim {dim}: must be >= 1")
    # One worker and a hash that does not change with PYTHONHASHSEED (gensim seeds each word's initial
    # vector from hashfxn) keep the vectors, and so the prepared folder, a pure function of its hash. Several
    # workers would race over the shared weights; one costs seconds at demo size, minutes on 4.9 M titles.
    workers = 1
    model = Word2Vec(sentences=sentences, vector_size=dim, window=5, min_count=1, workers=workers, seed=seed, epochs=10,
                     sg=1, hashfxn=stable_hash)
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    found_mask = np.zeros(len(vocab), dtype=bool)
    for word, idx in vocab.items():
        if word in model.wv.key_to_index:
            matrix[idx] = model.wv[word]
            found_mask[idx] = True
    _fill_missing(matrix, found_mask, seed)
    return Vectors(matrix, int(found_mask[2:].sum()), {"trained": "word2vec", "dim": dim, "workers": workers})
