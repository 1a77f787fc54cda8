"""Prepare a dataset once: tokenize, build the vocabulary, split, encode, and filter the word vectors.

    python -m job prepare --data runs/data/synthetic.csv.gz --embeddings none --out runs

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
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job import embeddings as emb
from job import storage, text
from job.errors import UserError

log = logging.getLogger("job.prepare")

PREPARE_VERSION = 2  # bump when the output format or the preprocessing changes: it enters the hash
MAX_TOKENS = 64  # tokens stored per title; configs cut further with max_len
MAX_TITLE_CHARS = 2000  # longer "titles" are pasted descriptions or garbage: dropped and counted (real ones are < 200)
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)  # used when the input has no splits of its own
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test"}
VOCAB_NO_BELOW = 2  # gensim filter_extremes, as the course did
VOCAB_NO_ABOVE = 1.0
VOCAB_KEEP_N = 50000
SPECIALS = ("[PAD]", "[UNK]")  # ids 0 and 1


# --- reading ------------------------------------------------------------------


def _read_header(path: Path, name: str) -> list[str]:
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            first = f.readline(1 << 20)
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{name}: cannot read ({type(e).__name__}: {e})") from None
    if not first.strip():
        raise UserError(f"{name}: empty file (no header line)")
    try:
        line = first.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text in the header line (binary file?)") from None
    return [c.strip() for c in line.split(",")]


def read_table(path: Path, name: str):
    """The input as a DataFrame of strings with at least title and category."""
    import pandas as pd

    base = name[:-3] if name.endswith(".gz") else name
    try:
        if base.endswith(".jsonl") or base.endswith(".json"):
            frame = pd.read_json(path, lines=True, dtype=False, compression="gzip" if name.endswith(".gz") else None)
        elif base.endswith(".csv"):
            header = _read_header(path, name)
            dupes = sorted({c for c in header if header.count(c) > 1})
            if dupes:
                raise UserError(f"{name}: duplicate column(s) {', '.join(dupes)}")
            missing = [c for c in ("title", "category") if c not in header]
            if missing:
                hint = " (the file looks ';' or tab separated; expected commas)" if len(header) == 1 and (";" in header[0] or "\t" in header[0]) else ""
                raise UserError(f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(header)[:200]}{hint}")
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
                                compression="gzip" if name.endswith(".gz") else None)
        else:
            raise UserError(f"{name}: unknown data format (expected .csv, .csv.gz, .jsonl or .jsonl.gz)")
    except UserError:
        raise
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text (invalid byte at position {e.start})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{name}: empty file") from None
    except pd.errors.ParserError as e:
        raise UserError(f"{name}: malformed CSV: {str(e).strip().splitlines()[-1]}") from None
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{name}: cannot read, truncated or corrupt ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise UserError(f"{name}: malformed JSON lines ({str(e).splitlines()[0][:200]})") from None
    missing = [c for c in ("title", "category") if c not in frame.columns]
    if missing:
        raise UserError(f"{name}: missing field(s) {', '.join(missing)}")
    if len(frame) == 0:
        raise UserError(f"{name}: no data rows (header only)")
    return frame


# --- splitting and the vocabulary ------------------------------------------------


def stratified_split(categories: list[str], seed: int) -> tuple[np.ndarray, int]:
    """80/10/10 per category, seeded; classes with under 3 rows stay in train (counted)."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(categories), dtype=np.int8)
    by_class: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        by_class.setdefault(c, []).append(i)
    small = 0
    for c in sorted(by_class):
        rows = np.asarray(by_class[c])
        if len(rows) < 3:
            small += 1
            continue
        rows = rows[rng.permutation(len(rows))]
        n_val = max(1, round(SPLIT_SHARES[1] * len(rows)))
        n_test = max(1, round(SPLIT_SHARES[2] * len(rows)))
        split[rows[:n_val]] = 1
        split[rows[n_val:n_val + n_test]] = 2
    return split, small


def build_vocab(train_tokens: list[list[str]]) -> list[str]:
    from gensim.corpora import Dictionary

    dictionary = Dictionary(train_tokens)
    dictionary.filter_extremes(no_below=VOCAB_NO_BELOW, no_above=VOCAB_NO_ABOVE, keep_n=VOCAB_KEEP_N)
    words = [w for w, _ in sorted(dictionary.token2id.items(), key=lambda kv: kv[1])]
    return list(SPECIALS) + words


def encode(rows: list[list[str]], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Token lists -> (concatenated ids, offsets, tokens total, unknown tokens)."""
    lengths = np.fromiter((min(len(r), MAX_TOKENS) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((vocab.get(w, 1) for r in rows for w in r[:MAX_TOKENS]), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets, int(offsets[-1]), int((ids == 1).sum())


# --- the step ----------------------------------------------------------------------


def input_hash(data: str, embeddings: str, args) -> tuple[str, dict]:
    inputs = {
        "version": PREPARE_VERSION,
        "data": storage.fingerprint(data),
        "embeddings": "none" if embeddings == "none" else storage.fingerprint(embeddings),
        "embedding_dim": args.embedding_dim if embeddings == "none" else None,
        "language": args.language,
        "seed": args.seed,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return digest, inputs


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def main(args) -> str:
    storage.check_uri(args.data, "--data")
    storage.check_uri(args.out, "--out")
    if args.embeddings != "none":
        storage.check_uri(args.embeddings, "--embeddings")
    started = time.time()
    digest, inputs = input_hash(args.data, args.embeddings, args)
    out = storage.join(args.out, "prepared", digest)
    if storage.exists(storage.join(out, "manifest.json")):
        log.info("already prepared: %s (same inputs, manifest found)", out)
        _emit(out, args.result_file)
        return out

    name = args.data.rsplit("/", 1)[-1]
    frame = read_table(storage.local_copy(args.data), name)
    rows_read = len(frame)
    log.info("read %d rows from %s", rows_read, args.data)
    dropped: Counter = Counter()

    titles = frame["title"].astype(str).str.strip()
    cats = frame["category"].astype(str).str.strip()
    too_long = titles.str.len() > MAX_TITLE_CHARS
    keep = (titles != "") & (cats != "") & ~too_long
    dropped["empty title"] = int((titles == "").sum())
    dropped["empty category"] = int(((titles != "") & (cats == "")).sum())
    dropped[f"title over {MAX_TITLE_CHARS} characters"] = int((too_long & (cats != "")).sum())
    splits_given = "split" in frame.columns
    split_col = frame["split"].astype(str).str.strip().str.lower() if splits_given else None

    stop = text.stopwords(args.language)
    tokens, categories, split_names = [], [], []
    for i in np.flatnonzero(keep.to_numpy()):
        toks = text.tokenize(titles.iat[i], stop)
        if not toks:
            dropped["no tokens after cleaning"] += 1
            continue
        if splits_given:
            s = SPLIT_ALIASES.get(split_col.iat[i])
            if s is None:
                dropped["unknown split value"] += 1
                continue
            split_names.append(s)
        tokens.append(toks)
        categories.append(cats.iat[i])
    if not tokens:
        raise UserError(f"{args.data}: no usable rows ({rows_read} read; dropped: {_reasons(dropped)})")

    small_classes = 0
    if splits_given:
        split = np.asarray([SPLITS.index(s) for s in split_names], dtype=np.int8)
    else:
        split, small_classes = stratified_split(categories, args.seed)
    train_cats = {c for c, s in zip(categories, split) if s == 0}
    # Class ids follow the order in which categories first appear (the course's rule).
    label_names = list(dict.fromkeys(c for c in categories if c in train_cats))
    if len(label_names) < 2:
        raise UserError(f"{args.data}: needs at least 2 categories in the training split, found {len(label_names)}")
    label_id = {c: i for i, c in enumerate(label_names)}
    unseen = sum(1 for c in categories if c not in label_id)
    dropped["category not in training split"] = unseen

    train_tokens = [t for t, s in zip(tokens, split) if s == 0]
    vocab = build_vocab(train_tokens)
    word_id = {w: i for i, w in enumerate(vocab)}
    log.info("vocabulary: %d words (+2 specials) from %d training titles", len(vocab) - 2, len(train_tokens))

    files: dict[str, bytes] = {}
    split_rows, oov = {}, {}
    for k, split_name in enumerate(SPLITS):
        idx = [i for i in range(len(tokens)) if split[i] == k and categories[i] in label_id]
        ids, offsets, total, unknown = encode([tokens[i] for i in idx], word_id)
        labels = np.asarray([label_id[categories[i]] for i in idx], dtype=np.int32)
        files[f"tokens_{split_name}.npy"] = _npy(ids)
        files[f"offsets_{split_name}.npy"] = _npy(offsets)
        files[f"labels_{split_name}.npy"] = _npy(labels)
        split_rows[split_name] = len(idx)
        oov[split_name] = round(unknown / total, 4) if total else 0.0
    for split_name in ("validation", "test"):
        if split_rows[split_name] == 0:
            raise UserError(f"{args.data}: the {split_name} split is empty after cleaning; need more rows per category")

    if args.embeddings == "none":
        vectors = emb.train(train_tokens, word_id, args.embedding_dim, args.seed)
    else:
        ename = args.embeddings.rsplit("/", 1)[-1]
        vectors = emb.load(storage.local_copy(args.embeddings), ename, word_id, args.seed)
    files["embeddings.npy"] = _npy(vectors.matrix)
    files["vocab.json"] = json.dumps(vocab, ensure_ascii=False).encode()
    files["labels.json"] = json.dumps(label_names, ensure_ascii=False).encode()

    report = {
        "data": args.data,
        "embeddings": args.embeddings,
        "rows_read": rows_read,
        "rows_kept": sum(split_rows.values()),
        "rows_dropped": {k: v for k, v in dropped.items() if v},
        "splits": split_rows,
        "splits_from_input": splits_given,
        "classes": len(label_names),
        "classes_too_small_to_split": small_classes,
        "vocab_size": len(vocab),
        "oov_rate": oov,
        "embedding_dim": int(vectors.matrix.shape[1]),
        "embedding_coverage": round(vectors.found / max(1, len(vocab) - 2), 4),
        "embedding_file": vectors.stats,
    }  # no timings: the prepared folder is a pure function of its hash, so concurrent prepares write identical bytes
    files["report.json"] = json.dumps(report, indent=2, ensure_ascii=False).encode()
    for fname, blob in files.items():
        storage.write_bytes(storage.join(out, fname), blob)
    manifest = {
        "version": PREPARE_VERSION,
        "inputs": inputs,
        "files": {f: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for f, b in files.items()},
        "classes": len(label_names),
        "vocab_size": len(vocab),
        "embedding_dim": int(vectors.matrix.shape[1]),
        "splits": split_rows,
    }
    storage.write_json(storage.join(out, "manifest.json"), manifest)  # last: marks the folder complete
    log.info("prepared %s in %.1fs: %s rows, %d classes, vocab %d, OOV %s, coverage %.1f%%, dropped: %s", out,
             time.time() - started, split_rows, len(label_names), len(vocab), oov, 100 * report["embedding_coverage"],
             _reasons(dropped))
    _emit(out, args.result_file)
    return out


def _reasons(dropped: Counter) -> str:
    return ", ".join(f"{v} {k}" for k, v in dropped.items() if v) or "none"


def _emit(out: str, result_file: str | None) -> None:
    if result_file:
        Path(result_file).write_text(out)
    print(out)


# --- reading it back ---------------------------------------------------------------


@dataclass
class Prepared:
    uri: str
    manifest: dict
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
    return Prepared(uri, manifest, arrays, manifest["vocab_size"], manifest["classes"], labels, vocab,
                    manifest["inputs"]["language"])
