"""The classic baseline every sweep is measured against, the standard recipe: TF-IDF over word 1-2-grams
and character 2-4-grams, then a class-balanced linear SVM (scikit-learn's LinearSVC) fitted to
convergence, on the same prepared splits.

    python -m job train --config tfidf --prepared runs/prepared/<hash> --out runs/sweeps/demo/tfidf --sweep demo

It runs as the `tfidf` family of `train`, on a CPU, and writes what a neural run writes, through
job/runfiles.py: metrics.jsonl (one line: the fit), model.pt, test_predictions.npz and summary.json (last). Its
losses are the cross-entropy of the softmax of the SVM's margins: comparable from run to run of the
baseline, not with the neural runs' losses. The text it reads is the prepared token ids turned back into their words, so it sees
exactly what the neural configs see; words outside the vocabulary ([UNK]) carry no n-grams.

The model is stored without pickle, as plain lists and tensors in model.pt: the n-gram terms and
their idf weights, and the linear model's coefficients, so `predict` rebuilds it exactly.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning

from job import configs, runfiles
from job.errors import UserError
from job.scores import balanced_accuracy

log = logging.getLogger("job.baseline")

ANALYZERS = ("word", "char_wb")  # word n-grams; character n-grams inside word boundaries
LINEAR_MAX_ITER = 5000  # the SVM solver's passes at most; it stops at its tolerance long before on our data
SVM_THREADS = 4  # classes fitted at once: the train pod's CPU request (workflows/dag.py, train_cpu)


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
        return {"analyzer": "word", "ngram_range": (1, cfg.word_ngrams), "lowercase": False}  # words of 2+ characters
    return {"analyzer": "char_wb", "ngram_range": (2, cfg.char_ngrams), "lowercase": False}


def fit_terms(train_texts: list[str], cfg: configs.TrainConfig) -> dict:
    """Per analyzer: the kept n-grams (the most frequent tfidf_features) and their idf, as TfidfVectorizer's defaults."""
    from sklearn.feature_extraction.text import CountVectorizer

    vocabulary = {}
    for analyzer in ANALYZERS:
        if analyzer == "char_wb" and cfg.char_ngrams < 2:
            continue
        counter = CountVectorizer(max_features=cfg.tfidf_features, **_analysis(analyzer, cfg))
        counts = counter.fit_transform(train_texts)
        terms = sorted(counter.vocabulary_, key=counter.vocabulary_.get)
        df = np.bincount(counts.indices, minlength=len(terms))
        idf = np.log((1 + counts.shape[0]) / (1 + df)) + 1.0  # scikit-learn's smoothed idf
        vocabulary[analyzer] = {"terms": terms, "idf": torch.from_numpy(idf.astype(np.float32))}
    return vocabulary


def features(batch: list[str], vocabulary: dict, cfg: configs.TrainConfig) -> sparse.csr_matrix:
    """Titles -> tf * idf per analyzer, each block L2-normalised, side by side (the recipe's FeatureUnion)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    blocks = []
    for analyzer, v in vocabulary.items():
        counter = CountVectorizer(vocabulary={t: i for i, t in enumerate(v["terms"])}, **_analysis(analyzer, cfg))
        x = counter.transform(batch).astype(np.float32)
        blocks.append(normalize(x @ sparse.diags(v["idf"].numpy()), copy=False))
    return sparse.hstack(blocks, format="csr")


def linear_model(cfg: configs.TrainConfig, positive_weight: float = 1.0):
    """One class against the rest: a linear SVM whose positive rows weigh positive_weight times C.

    Solved in the dual (coordinate descent), which suits text's many more features than a row has;
    scikit-learn's dual="auto" picks the primal when rows outnumber features, which took several
    times longer on the synthetic data. Fitted to its default tolerance: to convergence.
    """
    from sklearn.svm import LinearSVC

    return LinearSVC(C=cfg.tfidf_c, class_weight={1: positive_weight}, dual=True, max_iter=LINEAR_MAX_ITER,
                     random_state=cfg.seed)


def fit_svm(x: sparse.csr_matrix, labels: np.ndarray, classes: int, cfg: configs.TrainConfig,
            threads: int = SVM_THREADS) -> tuple[dict, bool]:
    """The recipe's LinearSVC(class_weight="balanced"), its classes fitted side by side: (its coef and
    intercept as tensors, one row per class, and whether every class converged).

    LinearSVC fits one class against the rest in turn, on one core, a class's positive rows weighing
    its balanced weight times C and the rest C (liblinear's train(), which scikit-learn calls). Here
    the same binary fits run on `threads` threads (liblinear releases the GIL), so a pod's cores share
    the classes. Each fit holds its own copy of the features in liblinear's format (16 bytes a
    non-zero), so memory grows with the threads. A class absent from training is never predicted.
    """
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.utils.class_weight import compute_class_weight

    x = x.astype(np.float64)  # liblinear's type, converted once rather than once per class
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    coef = np.zeros((classes, x.shape[1]), dtype=np.float32)
    intercept = np.full(classes, -1e4, dtype=np.float32)

    def fit_one(k: int) -> bool:
        svm = linear_model(cfg, float(weights[k])).fit(x, (labels == present[k]).astype(np.int8))
        coef[present[k]], intercept[present[k]] = svm.coef_[0], svm.intercept_[0]
        return int(svm.n_iter_) < LINEAR_MAX_ITER  # stopped at its tolerance

    with warnings.catch_warnings():  # not per thread, so convergence is read from n_iter_ instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            converged = all(list(pool.map(fit_one, range(len(present)))))
    return {"coef": torch.from_numpy(coef), "intercept": torch.from_numpy(intercept)}, converged


def logits(model_state: dict, x: sparse.csr_matrix) -> np.ndarray:
    return np.asarray(x @ model_state["coef"].numpy().T) + model_state["intercept"].numpy()


def log_loss_and_bacc(model_state: dict, x, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    z = torch.from_numpy(logits(model_state, x))
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(labels.astype(np.int64))).item()
    preds = z.argmax(dim=1).numpy()
    return loss, balanced_accuracy(labels, preds), preds


def training_rows(labels: np.ndarray, cfg: configs.TrainConfig) -> np.ndarray:
    """The training rows used: all, or max_train_rows of them drawn with the seed (as the neural runs draw them)."""
    if cfg.max_train_rows and cfg.max_train_rows < len(labels):
        return np.sort(np.random.default_rng(cfg.seed).choice(len(labels), size=cfg.max_train_rows, replace=False))
    return np.arange(len(labels))


def train(run: configs.Run, out: str, prepared, pusher) -> dict:
    """Fit the n-grams and the SVM on train, once, to convergence; validate; test; summary last.

    The fit is one row of metrics.jsonl (epoch 1), as a neural run writes one per epoch.
    """
    cfg, a = run.config, prepared.arrays
    if not cfg.tfidf_c > 0:
        raise UserError(f"config {run.spec!r}: tfidf_c={cfg.tfidf_c} (must be > 0)")
    split_texts = {s: texts(np.asarray(a[f"tokens_{s}"]), np.asarray(a[f"offsets_{s}"]), prepared.vocab, cfg.max_len)
                   for s in ("train", "validation", "test")}
    labels = {s: np.asarray(a[f"labels_{s}"]) for s in split_texts}
    keep = training_rows(labels["train"], cfg)
    split_texts["train"], labels["train"] = [split_texts["train"][i] for i in keep], labels["train"][keep]
    started = time.time()
    pusher.start(1, len(keep))
    vocabulary = fit_terms(split_texts["train"], cfg)
    x = {s: features(t, vocabulary, cfg) for s, t in split_texts.items()}
    log.info("%s: %d n-gram features (%s), %d/%d/%d rows", run.name, x["train"].shape[1],
             ", ".join(f"{k} {len(v['terms'])}" for k, v in vocabulary.items()), *(len(labels[s]) for s in split_texts))
    state, converged = fit_svm(x["train"], labels["train"], prepared.classes, cfg)
    if not converged:  # "to convergence": say so when it is not
        log.warning("%s: the SVM stopped at %d passes before its tolerance for some class", run.name, LINEAR_MAX_ITER)
    seconds = time.time() - started
    train_loss, _, _ = log_loss_and_bacc(state, x["train"], labels["train"])
    val_loss, val_bacc, _ = log_loss_and_bacc(state, x["validation"], labels["validation"])
    history = [runfiles.history_row(1, train_loss, val_loss, val_bacc, seconds, len(keep))]
    log.info("%s fitted in %.1fs: train loss %.4f, validation loss %.4f, balanced accuracy %.4f", run.name, seconds,
             train_loss, val_loss, val_bacc)
    pusher.epoch_end(1, train_loss, val_loss, val_bacc, len(keep), samples_per_second=len(keep) / max(seconds, 1e-9))
    meta = runfiles.model_meta(prepared, cfg.max_len)
    saved = runfiles.model_file(run, 1, prepared.uri, meta, {"tfidf": vocabulary, **state})
    runfiles.save_model(out, saved)
    runfiles.write_history(out, history)
    test_loss, test_bacc, preds = log_loss_and_bacc(state, x["test"], labels["test"])
    runfiles.write_predictions(out, labels["test"], preds)
    # one fit: the only epoch to choose, on the CPU
    summary = runfiles.ok_summary(out, run, history, 1, test_loss, test_bacc, time.time() - started, len(keep),
                                  cfg.epochs, "cpu", int(state["coef"].numel() + state["intercept"].numel()), prepared.uri)
    log.info("%s done: test balanced accuracy %.4f", run.name, test_bacc)
    return summary
