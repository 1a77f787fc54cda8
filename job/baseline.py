"""The classic baseline every sweep is measured against: TF-IDF over word and character n-grams,
then a class-balanced linear model (scikit-learn), trained on the same prepared splits.

    python -m job train --config tfidf --prepared runs/prepared/<hash> --out runs/sweeps/demo/tfidf --sweep demo

It runs as the `tfidf` family of `train`, on a CPU, and writes what a neural run writes:
metrics.jsonl (one line per pass over the data), model.pt, test_predictions.npz and summary.json
(last). The text it reads is the prepared token ids turned back into their words, so it sees
exactly what the neural configs see; words outside the vocabulary ([UNK]) carry no n-grams.

The model is stored without pickle, as plain lists and tensors in model.pt: the n-gram terms and
their idf weights, and the linear model's coefficients, so `predict` rebuilds it exactly.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np
import torch
from scipy import sparse

from job import configs, storage

log = logging.getLogger("job.baseline")

ANALYZERS = ("word", "char_wb")  # word n-grams; character n-grams inside word boundaries


def texts(ids: np.ndarray, offsets: np.ndarray, vocab: list[str], max_len: int) -> list[str]:
    """Prepared token ids -> space-joined words, cut at max_len as the neural configs cut them; [UNK] dropped."""
    words = np.asarray(vocab, dtype=object)
    out = []
    for start, end in zip(offsets[:-1], offsets[1:]):
        row = ids[start:min(end, start + max_len)]
        out.append(" ".join(words[row[row > 1]]))
    return out


def _analysis(analyzer: str, cfg: configs.TrainConfig) -> dict:
    """CountVectorizer's settings for one analyzer: the texts are already lowercased, cleaned words."""
    if analyzer == "word":
        return {"analyzer": "word", "ngram_range": (1, cfg.word_ngrams), "lowercase": False, "token_pattern": r"\S+"}
    return {"analyzer": "char_wb", "ngram_range": (2, cfg.char_ngrams), "lowercase": False}


def fit_terms(train_texts: list[str], cfg: configs.TrainConfig) -> dict:
    """Per analyzer: the kept n-grams (seen in 2+ titles, the most frequent tfidf_features) and their idf."""
    from sklearn.feature_extraction.text import CountVectorizer

    vocabulary = {}
    for analyzer in ANALYZERS:
        if analyzer == "char_wb" and cfg.char_ngrams < 2:
            continue
        counter = CountVectorizer(min_df=2, max_features=cfg.tfidf_features, **_analysis(analyzer, cfg))
        counts = counter.fit_transform(train_texts)
        terms = sorted(counter.vocabulary_, key=counter.vocabulary_.get)
        df = np.bincount(counts.indices, minlength=len(terms))
        idf = np.log((1 + counts.shape[0]) / (1 + df)) + 1.0  # scikit-learn's smoothed idf
        vocabulary[analyzer] = {"terms": terms, "idf": torch.from_numpy(idf.astype(np.float32))}
    return vocabulary


def features(batch: list[str], vocabulary: dict, cfg: configs.TrainConfig) -> sparse.csr_matrix:
    """Titles -> sublinear tf * idf per analyzer, each block L2-normalised, side by side."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    blocks = []
    for analyzer, v in vocabulary.items():
        counter = CountVectorizer(vocabulary={t: i for i, t in enumerate(v["terms"])}, **_analysis(analyzer, cfg))
        x = counter.transform(batch).astype(np.float32)
        x.data = 1.0 + np.log(x.data)
        blocks.append(normalize(x @ sparse.diags(v["idf"].numpy()), copy=False))
    return sparse.hstack(blocks, format="csr")


def linear_model(cfg: configs.TrainConfig):
    from sklearn.linear_model import SGDClassifier

    # Logistic loss, so predict can give probabilities; L2 of weight_decay; one pass per partial_fit.
    return SGDClassifier(loss="log_loss", alpha=cfg.weight_decay, learning_rate="optimal", random_state=cfg.seed,
                         n_jobs=-1)


def logits(model_state: dict, x: sparse.csr_matrix) -> np.ndarray:
    return np.asarray(x @ model_state["coef"].numpy().T) + model_state["intercept"].numpy()


def log_loss_and_bacc(model_state: dict, x, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    from job.train import balanced_accuracy

    z = torch.from_numpy(logits(model_state, x))
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(labels.astype(np.int64))).item()
    preds = z.argmax(dim=1).numpy()
    return loss, balanced_accuracy(labels, preds), preds


def state_of(clf, classes: int) -> dict:
    """The fitted linear model as tensors (one row per class, even for a class never seen in training)."""
    coef = np.zeros((classes, clf.coef_.shape[1]), dtype=np.float32)
    intercept = np.full(classes, -1e4, dtype=np.float32)  # a class absent from training is never predicted
    coef[clf.classes_] = clf.coef_
    intercept[clf.classes_] = clf.intercept_
    return {"coef": torch.from_numpy(coef), "intercept": torch.from_numpy(intercept)}


def train(run: configs.Run, out: str, prepared, pusher) -> dict:
    """Fit on train, one pass per epoch; keep the pass with the best validation score; test it; summary last."""
    from sklearn.utils.class_weight import compute_sample_weight

    from job import train as neural

    cfg, a = run.config, prepared.arrays
    split_texts = {s: texts(np.asarray(a[f"tokens_{s}"]), np.asarray(a[f"offsets_{s}"]), prepared.vocab, cfg.max_len)
                   for s in ("train", "validation", "test")}
    labels = {s: np.asarray(a[f"labels_{s}"]) for s in split_texts}
    started = time.time()
    vocabulary = fit_terms(split_texts["train"], cfg)
    x = {s: features(t, vocabulary, cfg) for s, t in split_texts.items()}
    log.info("%s: %d n-gram features (%s), %d/%d/%d rows", run.name, x["train"].shape[1],
             ", ".join(f"{k} {len(v['terms'])}" for k, v in vocabulary.items()), *(len(labels[s]) for s in split_texts))
    clf, weights = linear_model(cfg), compute_sample_weight("balanced", labels["train"])  # class-balanced
    history, best = [], {"epoch": 0, "score": -math.inf}
    pusher.start(cfg.epochs, len(weights))
    for epoch in range(1, cfg.epochs + 1):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(weights))
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's convergence notes for a single pass
            clf.partial_fit(x["train"][order], labels["train"][order], classes=np.arange(prepared.classes),
                            sample_weight=weights[order])
        seconds = time.time() - t0
        state = state_of(clf, prepared.classes)
        train_loss, _, _ = log_loss_and_bacc(state, x["train"], labels["train"])
        val_loss, val_bacc, _ = log_loss_and_bacc(state, x["validation"], labels["validation"])
        history.append({"epoch": epoch, "train_loss": round(train_loss, 6), "validation_loss": round(val_loss, 6),
                        "validation_balanced_accuracy": round(val_bacc, 6), "seconds": round(seconds, 3),
                        "samples_per_second": round(len(weights) / max(seconds, 1e-9), 1)})
        log.info("%s epoch %d/%d: train loss %.4f, validation loss %.4f, balanced accuracy %.4f", run.name, epoch,
                 cfg.epochs, train_loss, val_loss, val_bacc)
        pusher.epoch_end(epoch, train_loss, val_loss, val_bacc, epoch * len(weights),
                         samples_per_second=len(weights) / max(seconds, 1e-9))
        score = neural.selection_score(cfg.select_by, val_loss, val_bacc)
        if score > best["score"]:
            best = {"epoch": epoch, "score": score}
            saved = {"format": neural.CHECKPOINT_FORMAT, "config": cfg.to_dict(), "spec": run.spec, "epoch": epoch,
                     "tfidf": vocabulary, **state, "prepared": prepared.uri, "classes": prepared.classes,
                     "vocab_size": prepared.vocab_size,
                     "label_names": prepared.label_names, "vocab": prepared.vocab, "language": prepared.language,
                     "max_len": cfg.max_len}
            neural.save_torch(storage.join(out, "model.pt"), saved)
        neural.write_history(out, history)
    best_state = neural.load_torch(storage.join(out, "model.pt"))
    test_loss, test_bacc, preds = log_loss_and_bacc(best_state, x["test"], labels["test"])
    neural.write_predictions(storage.join(out, "test_predictions.npz"), labels["test"], preds)
    train_seconds = time.time() - started
    best_row = history[best["epoch"] - 1]
    summary = {
        "config": run.name, "spec": run.spec, "status": "ok", "family": cfg.family, "epochs": len(history),
        "best_epoch": best["epoch"], "selected_by": f"validation {cfg.select_by}",
        "validation_balanced_accuracy": best_row["validation_balanced_accuracy"],
        "test_loss": round(test_loss, 6), "test_balanced_accuracy": round(test_bacc, 6),
        "train_seconds": round(train_seconds, 2),
        "samples_per_second": round(len(weights) * len(history) / max(train_seconds, 1e-9), 1),
        "stopped_early": False, "device": "cpu", "parameters": int(best_state["coef"].numel() + best_state["intercept"].numel()),
        "prepared": prepared.uri, "config_values": cfg.to_dict(),
    }
    storage.write_json(storage.join(out, "summary.json"), summary)
    log.info("%s done: test balanced accuracy %.4f (best pass %d)", run.name, test_bacc, best["epoch"])
    return summary
