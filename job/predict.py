"""Classify new titles with a trained run: the sweep's best run, or any run folder.

    python -m job predict --run runs/sweeps/demo/best --input titles.csv --out predictions.csv --top-k 3
    make predict SWEEP=demo INPUT=titles.csv

--run is a run folder, local or s3://, holding a finished model.pt: the weights with the vocabulary,
the stopword language and the category names (train writes them all into it, so the folder needs
nothing else). Titles are tokenized exactly as prepare tokenized the training data.

--input is CSV or JSON lines (.gz allowed) with a `title` column. Output CSV:
  title,category,probability[,category_2,probability_2,...]   for titles
  id,category                                                 when the input has an `id` column, as the
                                                              challenge's test file does: a submission
A title that is empty, or whose words are all outside the vocabulary, has nothing to classify it
by. A real batch (a challenge test file, a day's new listings) always has some, so by default they
are predicted from no words (the model's prior) and every input row gets its output row: a
submission stays complete. predict says how many there were and on which lines of the input (a
CSV's header is line 1; a JSON lines file has none). --strict refuses the file instead, in one line
naming those lines.
"""

from __future__ import annotations

import io
import logging
import zlib

import numpy as np
import torch

from job import baseline, configs, runfiles, storage, text
from job.device import pick_device
from job.errors import UserError
from job.prepare import MAX_TOKENS  # prepare keeps at most this many tokens of a title; the config cuts at max_len

log = logging.getLogger("job.predict")

BATCH = 8192  # titles per forward pass
SHOWN_LINES = 20  # lines of titles with no known word named in the warning or the --strict error


def load_run(run: str) -> dict:
    """model.pt of a finished run, checked to be usable on its own."""
    saved = runfiles.load_model(run)
    rows = _vocabulary_rows(saved)
    if rows != len(saved["vocab"]):
        raise UserError(f"{storage.join(run, runfiles.MODEL)}: vocabulary mismatch: {len(saved['vocab'])} words, "
                        f"but the model has {rows} rows")
    return saved


def _vocabulary_rows(saved: dict) -> int:
    """How many words the model can look up: its embedding's rows, or the tfidf model's vocab size."""
    if saved["config"]["family"] == "tfidf":
        return saved["vocab_size"]
    return next(t.shape[0] for name, t in saved["model"].items() if name.endswith("weight") and "embed" in name)


def read_titles(uri: str):
    """The input's rows as a DataFrame with a string `title` (and `id` when present)."""
    import pandas as pd

    name = uri.rsplit("/", 1)[-1]
    base = name[:-3] if name.endswith(".gz") else name
    path = storage.local_copy(uri)
    compression = "gzip" if name.endswith(".gz") else None
    try:
        if base.endswith((".jsonl", ".json")):
            frame = pd.read_json(path, lines=True, dtype=False, compression=compression)
        elif base.endswith(".csv"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, compression=compression)
        else:
            raise UserError(f"{name}: unknown input format (expected .csv, .jsonl, optionally .gz)")
    except UserError:
        raise
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text (invalid byte at position {e.start})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{name}: empty file") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise UserError(f"{name}: malformed input ({str(e).strip().splitlines()[-1][:200]})") from None
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{name}: cannot read, truncated or corrupt ({type(e).__name__})") from None
    if "title" not in frame.columns:
        raise UserError(f"{name}: no title column (found: {', '.join(map(str, frame.columns))[:200]})")
    if len(frame) == 0:
        raise UserError(f"{name}: no rows")
    frame["title"] = frame["title"].fillna("").astype(str)
    return frame


def encode(titles, saved: dict) -> tuple[list[np.ndarray], list[int]]:
    """Token ids of each title as prepare made them, and the rows with nothing known to classify by."""
    stop = text.stopwords(saved["language"])
    word_id = {w: i for i, w in enumerate(saved["vocab"])}
    encoded, unknown = [], []
    for row, title in enumerate(titles):
        ids = np.array([word_id.get(w, 1) for w in text.tokenize(title, stop)[:MAX_TOKENS]], dtype=np.int32)
        if not (ids > 1).any():
            unknown.append(row)
        encoded.append(ids[:saved["max_len"]])
    return encoded, unknown


def probabilities(saved: dict, encoded: list[np.ndarray], device: torch.device) -> np.ndarray:
    """Class probabilities [titles, classes]."""
    if saved["config"]["family"] == "tfidf":
        cfg = configs.TrainConfig(**saved["config"])
        words = np.asarray(saved["vocab"], dtype=object)
        texts = [" ".join(words[ids[ids > 1]]) for ids in encoded]
        z = torch.from_numpy(baseline.logits(saved, baseline.features(texts, saved["tfidf"], cfg)))
        return torch.softmax(z.float(), dim=1).numpy()
    return _neural_probabilities(saved, encoded, device)


@torch.no_grad()
def _neural_probabilities(saved: dict, encoded: list[np.ndarray], device: torch.device) -> np.ndarray:
    from job.data import padded
    from job.models import build_model, builder_kwargs

    cfg = configs.TrainConfig(**saved["config"])
    model = build_model(cfg.family, saved["vocab_size"], saved["embed_dim"], saved["classes"],
                        vectors=torch.zeros(saved["vocab_size"], saved["embed_dim"]), **builder_kwargs(cfg))
    model.load_state_dict(saved["model"])
    model.to(device).eval()
    out = []
    for start in range(0, len(encoded), BATCH):
        chunk = encoded[start:start + BATCH]
        lengths = np.array([len(ids) for ids in chunk], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.concatenate(chunk) if offsets[-1] else np.zeros(0, dtype=np.int32)
        tokens, lens = padded(ids, offsets, saved["max_len"])  # an empty title is one [PAD]
        logits = model(torch.from_numpy(tokens).to(device), torch.from_numpy(lens).to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def table(frame, probs: np.ndarray, label_names: list[str], top_k: int):
    """The output rows: id,category for a submission; title,category,probability (+ top-k) otherwise."""
    import pandas as pd

    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    names = np.asarray(label_names, dtype=object)
    if "id" in frame.columns:
        return pd.DataFrame({"id": frame["id"], "category": names[order[:, 0]]})
    out = pd.DataFrame({"title": frame["title"]})
    for k in range(top_k):
        suffix = "" if k == 0 else f"_{k + 1}"
        out[f"category{suffix}"] = names[order[:, k]]
        out[f"probability{suffix}"] = np.round(np.take_along_axis(probs, order[:, k:k + 1], axis=1)[:, 0], 6)
    return out


def main(args) -> int:
    storage.check_uri(args.run, "--run")
    storage.check_uri(args.input, "--input")
    storage.check_uri(args.out, "--out")
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be >= 1")
    saved = load_run(args.run)
    frame = read_titles(args.input)
    encoded, unknown = encode(frame["title"], saved)
    if unknown:
        # a CSV's first data row is line 2 (after the header); JSON lines have no header
        first = 2 if args.input.removesuffix(".gz").endswith(".csv") else 1
        shown = ", ".join(str(r + first) for r in unknown[:SHOWN_LINES]) + (", ..." if len(unknown) > SHOWN_LINES else "")
        what = f"title(s) empty or with only words outside the run's vocabulary (line {shown})"
        if args.strict:
            raise UserError(f"{args.input}: {len(unknown)} {what}; fix them, or drop --strict to predict them from no words")
        log.warning("%s: %d of %d %s: predicted from no words (the model's prior)", args.input, len(unknown),
                    len(frame), what)
    probs = probabilities(saved, encoded, pick_device(args.device))
    out = table(frame, probs, saved["label_names"], min(args.top_k, len(saved["label_names"])))
    buf = io.StringIO()
    out.to_csv(buf, index=False)
    storage.write_text(args.out, buf.getvalue())
    log.info("%d titles classified with %s (%s); %d with no known word", len(out), args.run,
             saved["spec"], len(unknown))
    print(args.out)
    return 0
