"""Training configs: one dataclass of defaults, the named configs, and the spec language.

A spec names a config and optionally overrides keys:

    hidden100                      the named config as it is
    hidden100:lr=3e-4,epochs=5     with two keys overridden
    hidden100:lr=1e-3|3e-4         a grid: one run per value (per combination)
    hidden100:lr=loguniform(1e-4,1e-2)   a search space (job/space.py): --trials N samples N runs (job/search.py)

In a comma-separated list of specs, an item that holds `=` belongs to the spec
before it, so `hidden100:lr=3e-4,epochs=5,hidden50` is two runs. Every run gets
a unique readable name such as `hidden100_lr=3e-4_epochs=5`, which names its
output folder and its Argo node.

This module imports no torch, and nothing of job/ but its errors: the workflow tooling validates specs with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from dataclasses import dataclass, field

from job.errors import UserError

FAMILIES = ("mlp", "cnn", "lstm", "tfidf")  # tfidf: the classic baseline (job/baseline.py), on a CPU
CPU_FAMILIES = ("tfidf",)  # families that train on a CPU: on a cluster their pods request no GPU
SELECT_BY = ("balanced_accuracy", "loss")


@dataclass(frozen=True)
class TrainConfig:
    family: str = "lstm"  # model family: mlp | cnn | lstm
    hidden: int = 100  # LSTM hidden units (the seed used 50 and 100)
    layers: int = 1  # stacked LSTM layers
    bidirectional: bool = False  # LSTM reads the title both ways; the classifier sees both final states
    mlp_hidden: int = 256  # MLP first layer width; the second layer is half of it (the course's 256 -> 128)
    filters: int = 100  # CNN filters per width (widths 2, 3 and 4, as in the course)
    fc: int = 128  # CNN fully connected width after max-pooling
    dropout: float = 0.3  # dropout after the embedding (LSTM) or between hidden layers (MLP, CNN)
    freeze_embeddings: bool = True  # keep the word vectors fixed; False fine-tunes them (the best peer's 0.946)
    epochs: int = 10  # passes over the training split (tfidf fits once, to convergence, and ignores it)
    batch_size: int = 1024  # titles per optimizer step (the seed's choice)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2 penalty (the course MLP used 1e-5)
    patience: int = 0  # early stopping: stop after this many epochs without a better `select_by` score; 0 = never
    select_by: str = "balanced_accuracy"  # validation metric that picks the best epoch and drives early stopping:
    #   balanced_accuracy (the metric the sweep reports) or loss
    max_len: int = 30  # tokens kept per title; longer titles are cut
    max_train_rows: int = 0  # train on at most this many rows (a quick look at a big dataset); 0 = all
    seed: int = 0  # seeds init, shuffling and dropout; the same seed gives the same run
    word_ngrams: int = 2  # word n-grams from 1 up to this many words: tfidf's, and the MLP's when ngram_buckets > 0
    ngram_buckets: int = 0  # MLP: hashed buckets of its word 2..word_ngrams-grams, averaged with the words
    #   (fastText-style, mlp_ngrams); 0 = the words alone
    char_ngrams: int = 4  # tfidf: character n-grams (within words) from 2 up to this many characters; < 2 = none
    tfidf_features: int = 500_000  # tfidf: the most frequent n-grams kept per kind (words, characters), a memory cap
    tfidf_c: float = 1.0  # tfidf: C of the class-balanced linear SVM (inverse L2 strength; scikit-learn's default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


# The named configs: reviewed here, listed in docs/configs.md. The first six follow the seed and the course.
NAMED: dict[str, TrainConfig] = {
    # The seed's LSTM (MeLiRNNClassifier) with 50 and 100 hidden units, frozen word vectors.
    "hidden50": TrainConfig(family="lstm", hidden=50),
    "hidden100": TrainConfig(family="lstm", hidden=100),
    # The course MLP baseline (mean of word vectors -> 256 -> 128), logits instead of the seed's sigmoid.
    "mlp256": TrainConfig(family="mlp", mlp_hidden=256, batch_size=128, weight_decay=1e-5),
    "mlp512": TrainConfig(family="mlp", mlp_hidden=512, batch_size=128, weight_decay=1e-5),
    # The course CNN: widths 2, 3, 4 x 100 filters, max-pool, fc 128; and a wider one.
    "cnn100": TrainConfig(family="cnn", filters=100, fc=128),
    "cnn200": TrainConfig(family="cnn", filters=200, fc=256),
    # Aimed at the best known result (0.946, an LSTM on fine-tuned embeddings): wider, two-way,
    # unfrozen vectors, stops when validation balanced accuracy stalls.
    "finetune256": TrainConfig(family="lstm", hidden=256, bidirectional=True, freeze_embeddings=False, patience=2),
    # Tuned for the CNN and the MLP: vectors tuned with the model, learning rate and epochs set for it.
    "cnn_tuned": TrainConfig(family="cnn", filters=200, fc=256, dropout=0.5, freeze_embeddings=False, epochs=15,
                             patience=3),
    "mlp_tuned": TrainConfig(family="mlp", mlp_hidden=256, batch_size=128, weight_decay=1e-5, freeze_embeddings=False,
                             epochs=8),
    # The MLP that sees word order, fastText-style: mlp_tuned's MLP over the mean of the words' and their
    # hashed word bigrams' vectors, stopped when validation stalls (its n-gram table fits the training titles fast).
    "mlp_ngrams": TrainConfig(family="mlp", mlp_hidden=256, batch_size=128, weight_decay=1e-5, freeze_embeddings=False,
                              epochs=8, patience=2, ngram_buckets=200_000),
    # The classic baseline every sweep adds (BASELINE), the standard recipe: TF-IDF of word 1-2-grams and
    # character 2-4-grams, a class-balanced linear SVM (scikit-learn's LinearSVC) fitted to convergence, on at
    # most 500,000 training rows: its time grows with rows x classes (docs/configs.md, the baseline at scale).
    "tfidf": TrainConfig(family="tfidf", epochs=1, max_train_rows=500_000),
}
BASELINE = "tfidf"  # the named config a sweep adds unless told not to


def validate(config: TrainConfig) -> TrainConfig:
    """Range checks that a type check alone would let through."""
    problems = []
    if config.family not in FAMILIES:
        problems.append(f"family={config.family!r} (choose from {', '.join(FAMILIES)})")
    for key in ("hidden", "layers", "mlp_hidden", "filters", "fc", "epochs", "batch_size", "max_len", "word_ngrams",
                "tfidf_features"):
        if getattr(config, key) < 1:
            problems.append(f"{key}={getattr(config, key)} (must be >= 1)")
    for key in ("patience", "max_train_rows", "seed", "weight_decay", "ngram_buckets"):
        if getattr(config, key) < 0:
            problems.append(f"{key}={getattr(config, key)} (must be >= 0)")
    if not 0.0 <= config.dropout < 1.0:
        problems.append(f"dropout={config.dropout} (must be in [0, 1))")
    if config.select_by not in SELECT_BY:
        problems.append(f"select_by={config.select_by!r} (choose from {', '.join(SELECT_BY)})")
    if not config.lr > 0:
        problems.append(f"lr={config.lr} (must be > 0)")
    if not config.tfidf_c > 0:
        problems.append(f"tfidf_c={config.tfidf_c} (must be > 0)")
    if problems:
        raise UserError("config: bad value " + "; ".join(problems))
    return config


@dataclass(frozen=True)
class Run:
    """One expanded run of a sweep: its unique name, its canonical spec and its config."""

    name: str  # names the output folder and the Argo node
    spec: str  # canonical spec, e.g. "hidden100:lr=3e-4"; `python -m job train --config` takes it
    config: TrainConfig = field(compare=False)


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,119}$")  # a run name: a safe folder name
_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def parse_value(key: str, text: str, spec: str):
    """One value as written, parsed to the key's type; a bad one is refused naming the spec."""
    kind = type(getattr(TrainConfig(), key))
    if not _VALUE.match(text):
        raise UserError(f"config {spec!r}: {key}={text!r} is not a plain value")
    try:
        if kind is bool:
            low = text.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise UserError(f"config {spec!r}: {key}={text!r} is not a valid {kind.__name__}") from None


def split_top(text: str) -> list[str]:
    """Split on the commas outside parentheses, so `lr=uniform(1e-4,1e-2),dropout=0.1` is two items."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def split_specs(text: str) -> list[str]:
    """Split a --configs list; an item holding `=` (and no `:`) continues the spec before it."""
    specs: list[str] = []
    for item in split_top(str(text)):
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not specs:
                raise UserError(f"configs: {item!r} overrides a key but no config name comes before it")
            specs[-1] += "," + item
        else:
            specs.append(item)
    if not specs:
        raise UserError(f"configs: no config named (valid names: {', '.join(NAMED)})")
    return specs


def expand_spec(spec: str) -> list[Run]:
    """One spec -> one Run per combination of its value lists."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in NAMED:
        raise UserError(f"config {spec!r}: unknown config {name!r}; valid names: {', '.join(NAMED)}")
    keys, choices = [], []
    for assignment in split_top(rest):
        key, eq, values = assignment.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"config {spec!r}: {assignment!r} is not key=value")
        if key not in KEYS:
            raise UserError(f"config {spec!r}: unknown key {key!r}; valid keys: {', '.join(KEYS)}")
        if key in keys:
            raise UserError(f"config {spec!r}: key {key!r} given twice")
        if "(" in values:
            raise UserError(f"config {spec!r}: {key}={values.strip()} is a search space; sample it with --trials N")
        texts = [v.strip() for v in values.split("|")]
        if not all(texts):
            raise UserError(f"config {spec!r}: {key} has an empty value")
        keys.append(key)
        choices.append([(t, parse_value(key, t, spec)) for t in texts])
    runs = []
    for combo in itertools.product(*choices):
        overrides = {k: v for k, (_, v) in zip(keys, combo)}
        config = validate(dataclasses.replace(NAMED[name], **overrides))
        run_name = "_".join([name] + [f"{k}={t}" for k, (t, _) in zip(keys, combo)])
        canonical = name + (":" + ",".join(f"{k}={t}" for k, (t, _) in zip(keys, combo)) if keys else "")
        if not NAME.match(run_name) or ".." in run_name:
            raise UserError(f"config {spec!r}: run name {run_name!r} is not a safe folder name")
        runs.append(Run(run_name, canonical, config))
    return runs


def expand(text: str) -> list[Run]:
    """A --configs list -> the runs of the sweep, in order; duplicate names are refused."""
    runs: list[Run] = []
    for spec in split_specs(text):
        runs += expand_spec(spec)
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise UserError(f"configs: run {run.name!r} is listed twice")
        seen.add(run.name)
    return runs


def parse_one(spec: str) -> Run:
    """The spec of a single run (what `train --config` takes); a grid is refused here."""
    runs = expand(spec)
    if len(runs) != 1:
        raise UserError(f"config {spec!r}: expands to {len(runs)} runs; train takes one (use sweep for grids)")
    return runs[0]


# What Argo v3.7+ accepts as a node's display name, after substitution: workflow/controller/operator.go,
# executeTemplate, `displayNameRegex`; a name that fails it marks the node Error before its pod starts.
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-.]{0,61}[a-zA-Z0-9]$")


def display_labels(names: list[str]) -> list[str]:
    """Run names -> labels the Argo UI can show (DISPLAY_NAME), unique and as readable as the names.

    `hidden100_lr=3e-4` shows as `hidden100-lr-3e-4`. A label that would be too long, or that two
    runs would share (`lr=1e-3` and `lr=1e+3`), ends in a hash of its run name instead.
    """
    plain = [re.sub(r"[^a-zA-Z0-9.]+", "-", n).strip("-.") or "run" for n in names]
    labels = []
    for name, label in zip(names, plain):
        if len(label) > 63 or plain.count(label) > 1:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            label = f"{label[:54].rstrip('-.')}-{digest}"
        labels.append(label)
    return labels


def with_baseline(runs: list[Run], baseline: bool) -> list[Run]:
    """The sweep's runs, plus the classic baseline (BASELINE) unless told not to or already listed."""
    if not baseline or any(run.name == BASELINE for run in runs):
        return runs
    return runs + expand(BASELINE)
