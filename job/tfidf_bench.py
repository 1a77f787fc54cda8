"""The tfidf baseline's fit at scale: time and peak memory of each phase on N synthetic training rows.

    python -m job bench --tfidf [--rows 1000000] [--classes 60]
    make bench-tfidf

Synthetic titles (job.synth, with --classes categories) are tokenized as prepare tokenizes them,
then the baseline's own functions (job/baseline.py) run as `train` runs them, with the `tfidf`
named config: the n-grams' fit, the features of the training rows, the SVM's fit. Each phase
prints its seconds and the process's peak resident memory since the phase began; validation
balanced accuracy (on a quarter as many rows again) shows that the fit learned. Then the
extrapolation to the course's 4.9 M training rows and 632 categories: time linear in rows and in
classes (the SVM fits one class against the rest, each pass over every row), memory linear in rows
(the features and the solver's copy of them) plus the coefficients, and time from the CPU seconds
each phase got (the SVM's spread over its threads), which other work on the machine moves less
than wall time. Both are estimates; the printed phase figures are the measured ones.
"""

from __future__ import annotations

import os
import time

import torch

from job import baseline, configs, synth, text
from job.bench import PeakMemory
from job.scores import balanced_accuracy

DEFAULT_ROWS = 1_000_000  # training rows measured
DEFAULT_CLASSES = 60  # the demo's categories: 632 would take hours here (the extrapolation scales to them)
COURSE_ROWS = 4_900_000  # the course's training rows
COURSE_CLASSES = 632  # the course's categories
VALIDATION_SHARE = 0.25  # validation rows per training row


def _phase(name: str, fn, cpu: torch.device, figures: dict):
    with PeakMemory(cpu) as memory:
        started, cpu_started = time.time(), time.process_time()
        result = fn()
        seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    figures[name] = (seconds, memory.peak, cpu_seconds)
    print(f"  {name:<22} {seconds:8.1f} s (CPU {cpu_seconds:8.1f} s)   peak resident {memory.peak / 2**30:6.2f} GiB",
          flush=True)
    return result


def main(args) -> int:
    rows = args.rows or DEFAULT_ROWS
    classes = args.classes or DEFAULT_CLASSES
    cfg = configs.NAMED[configs.BASELINE]
    valid = max(50, int(rows * VALIDATION_SHARE))
    cpu, figures = torch.device("cpu"), {}
    print(f"bench tfidf: {rows:,} training and {valid:,} validation synthetic rows, {classes} categories, "
          f"config {configs.BASELINE} ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f})", flush=True)
    frame = _phase("synthesize", lambda: synth.generate(rows + valid, classes, seed=0), cpu, figures)
    stop = text.stopwords("spanish")
    titles = _phase("tokenize", lambda: [" ".join(text.tokenize(t, stop)[:cfg.max_len]) for t in frame["title"]],
                    cpu, figures)
    labels = frame["category"].astype("category").cat.codes.to_numpy()
    del frame
    before = PeakMemory._cpu_peak()  # the titles and the interpreter, which a train pod holds differently
    vocabulary = _phase("fit n-grams", lambda: baseline.fit_terms(titles[:rows], cfg), cpu, figures)
    x = _phase("features", lambda: baseline.features(titles[:rows], vocabulary, cfg), cpu, figures)
    threads = args.threads or baseline.SVM_THREADS
    state, converged = _phase("fit SVM", lambda: baseline.fit_svm(x, labels[:rows], classes, cfg, threads), cpu, figures)
    x_valid = baseline.features(titles[rows:], vocabulary, cfg)
    bacc = balanced_accuracy(labels[rows:], baseline.logits(state, x_valid).argmax(axis=1))
    fit_seconds = sum(figures[k][0] for k in ("fit n-grams", "features", "fit SVM"))
    peak = max(figures[k][1] for k in ("fit n-grams", "features", "fit SVM"))
    print(f"\n{x.shape[1]:,} n-gram features, {x.nnz / rows:.1f} per row; validation balanced accuracy {bacc:.4f}; "
          f"SVM {'converged' if converged else 'stopped before its tolerance for some class'}, {threads} thread(s)")
    print(f"fit (n-grams, features, SVM): {fit_seconds:,.0f} s, peak resident {peak / 2**30:.2f} GiB "
          f"({(peak - before) / 2**30:.2f} GiB above the titles in memory)")
    scale = COURSE_ROWS / rows
    # from CPU seconds, shared by the threads: wall time on a busy machine says more about the other work
    svm = figures["fit SVM"][2] / threads * scale * COURSE_CLASSES / classes
    coef = COURSE_CLASSES * x.shape[1] * 4 / 2**30  # float32 coefficients of 632 classes, at these features
    print(f"extrapolated to {COURSE_ROWS:,} rows and {COURSE_CLASSES} categories, {threads} thread(s): n-grams and "
          f"features {(figures['fit n-grams'][2] + figures['features'][2]) * scale:,.0f} s, SVM {svm:,.0f} s "
          f"({svm / 3600:.1f} h); memory above the titles about {(peak - before) * scale / 2**30 + coef:.1f} GiB")
    return 0
