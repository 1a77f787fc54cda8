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
  1. read and tokenize (job.corpus): a .gz input is decompressed once into staging; this process
     cuts the file into byte ranges of whole records (job.tables); `--workers` processes (default:
     the usable cores) each read, parse, clean and tokenize a range into a piece file; the pieces
     are merged in input order into a spool, so the output is the same for any number of workers.
  2. split (job.splits): the input's splits, or the stratified draw, and the class ids.
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
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job import embeddings as emb
from job import steps, storage, vocab
from job.corpus import SPLITS, Corpus, reasons, tokenize_input
from job.errors import UserError
from job.splits import Rows, assign_splits

log = logging.getLogger("job.prepare")

PREPARE_VERSION = 4  # bump when the output format or the preprocessing changes: it enters the hash
MAX_TOKENS = 64  # tokens stored per title; configs cut further with max_len
SPECIALS = ("[PAD]", "[UNK]")  # ids 0 and 1
PHASES = ("read and tokenize", "split", "vocabulary", "encode", "embeddings", "write")  # each logs "<phase>: done in"


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


# --- phases 3 and 4: the vocabulary, and the arrays --------------------------------------------


def build_vocabulary(corpus: Corpus, rows: Rows) -> list[str]:
    """Phase 3: the course's vocabulary (specials first) over the training titles, their words in full."""
    words = list(corpus.words)
    train = rows.split == 0
    return list(SPECIALS) + vocab.build(lambda: corpus.titles(train), words)


class NpyWriter:
    """A .npy file written in pieces of rows: its header (final shape) first, as np.save writes it, hashed as it goes.

    length: the rows; row: the shape of each row, () for a 1-d array."""

    def __init__(self, path: Path, dtype, length: int, row: tuple = ()):
        self.path, self.dtype, self.length, self.written = path, np.dtype(dtype), length, 0
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (length, *row)})
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


def _staged_matrix(matrix: np.ndarray, path: Path, rows: int = 4096) -> dict:
    """A 2-d array into a staged .npy file, a block of rows at a time: no whole copy of it in memory."""
    writer = NpyWriter(path, matrix.dtype, len(matrix), matrix.shape[1:])
    for start in range(0, len(matrix), rows):
        writer.write(matrix[start:start + rows])
    return writer.close()


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
    log.info("%s: done in %.3f s", phase, now - started)
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
    files["embeddings.npy"] = _staged_matrix(vectors.matrix, staging / "embeddings.npy")
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
             100 * report["embedding_coverage"], reasons(report["rows_dropped"]))
    return _emit(out, args.result_file)


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
