"""Training throughput: a seed-style loop against this project's training path, side by side, repeated.

    python -m job bench [--rows N] [--epochs E] [--repeats R] [--seeds S] [--device cpu|cuda]
                        [--family lstm|cnn|mlp|all] [--classes C] [--[no-]big-batch] [--[no-]graphs]
                        [--threads T] [--profile]
    make bench DEVICE=cuda BENCH_ARGS="--family all"

In one process, on the same synthetic data, from the same initial weights, for the same epochs:

  seed-style   as the seed and the course trained: a python list of token ids per title, a
               DataLoader with a padding collate, the course's models (packed LSTM; CNN max-pooled
               over every position, padding included; MLP mean of a [batch, length, dim] tensor,
               nn.Dropout), fp32, `.item()` after every step, evaluation at the training batch size
               with a host copy per batch.
  ours         job.train's own path (`train_epoch`, `evaluate`) and job.models: padded int32 tensors
               on the device, batches cut into length pieces on a CPU, an unpacked LSTM, the CNN as
               one GEMM, bf16 autocast (CUDA; CPUs with native bf16), fused Adam, the loss summed on
               the device, large evaluation batches.
  ours, batch  the same path at 4x the batch with the learning rate x4 (linear scaling): a larger
               batch is a fair lever only if the accuracy holds, so it is shown beside. (Why linear
               and not square-root scaling: docs/performance.md, "The larger batch's learning rate".)
  ours, CUDA   (CUDA only) ours with each batch shape's whole step captured as a CUDA graph and
    graphs     replayed (job/graphs.py), as `train --cuda-graphs true` takes its steps; `ours` and the
               larger batch take eager steps, train's default.
  ours,        (MLP only) the named config mlp_ngrams on ours' path, from its own initial weights:
    mlp_ngrams the MLP over words and hashed word bigrams, beside mlp256 to show its speed class
               (it tunes its vectors and its n-gram table; not judged against the seed-style loop).

One run of a loop is noise: the accuracy difference moves by about the tolerance from seed to seed,
and other load on the machine moves the speed-up by several times. So the loops run in rounds,
interleaved (seed-style, ours, [ours at 4x,] [ours with graphs,] then again), max(repeats, seeds)
rounds; round k starts every loop from seed k mod seeds (initial weights, dropout, batch order; the
data stay the same). A CPU run leaves out the 4x and graphs rows and uses one thread unless told
otherwise (see DEFAULTS).

Each run prints a line as it ends, with the CPU time the process got beside its wall time. Then, per
family: samples/s as the median over the rounds with its min..max, the speed-up as the ratio of the
medians with the per-round ratios' min..max, the 10-epoch time at the median rate extrapolated to
6.1 M rows (the course's train + validation), peak memory, and validation balanced accuracy as the
mean over the seeds with its min..max and the per-seed differences' min..max. Verdicts: speed-up
>= 10x on a GPU (>= 2x on a CPU), accuracy not lower by more than 0.005; each needs at least 3 runs
(seeds), or it reads "not judged". On a GPU it also reads meli_train_gpu_memory_bytes as train
pushes it. --profile adds, per family, the profiler's table of a few of ours' training steps: where
a step goes when the target is missed.

The data: token ids drawn directly in the shape of the course's data (vocab 50,000, titles of
Poisson(6)+1 tokens capped at 30, 632 classes with Zipf-like sizes), from a class-conditional
distribution built like job.synth's: each class has its own words, classes sit in departments of
four that share words and borrow each other's, the rest is background words, and 5% of labels are
a sibling's. So accuracy is learnable and comparable, and the bench needs neither gensim nor the
tokenizer, which would take minutes at 2 M rows. The word vectors are random and frozen (300-d).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from job import configs, optim, train
from job.data import epoch_order, make_split
from job.device import pick_device, uses_bf16
from job.errors import UserError
from job.bench_seed import (
    CLASSES, EMBED_DIM, MAX_LENGTH, MEAN_LENGTH, VOCAB, SeedCNN, SeedDataset, SeedMLP, SeedRNN, make_rows,
    seed_collate, seed_evaluate, seed_train_epoch, word_vectors,
)
from job.models import build_model, builder_kwargs

FULL_ROWS = 6_119_100  # the course's train + validation rows, for the extrapolated 10-epoch time
FULL_EPOCHS = 10  # the seed's epochs
BIG_BATCH = 4  # the larger-batch row: this many times the config's batch and learning rate
VALIDATION_SHARE = 0.25  # validation rows per training row: large, so balanced accuracy is measured closely
FAMILY_CONFIG = {"lstm": "hidden100", "cnn": "cnn100", "mlp": "mlp256"}  # the named config each family runs
ALSO = {"mlp": "mlp_ngrams"}  # a named config run beside the family's in every round: its samples/s and accuracy, not judged
TARGET_SPEEDUP = {"cuda": 10.0, "cpu": 2.0}  # the targets: ratio of median samples/s, ours over seed-style
ACCURACY_TOLERANCE = 0.005  # ours' mean balanced accuracy may be lower than the seed-style loop's by at most this
MIN_SAMPLES = 3  # a verdict needs at least this many timed runs (speed) or seeds (accuracy); with fewer it is not judged


@dataclass(frozen=True)
class Sizes:
    """What one bench trains; each field can be set on the command line."""

    rows: int  # training rows; validation adds VALIDATION_SHARE of them
    epochs: int  # epochs of every run, both loops
    classes: int  # classes of the synthetic data
    repeats: int = 3  # timed runs of each loop, interleaved with the other loops' runs
    seeds: int = 3  # seeds whose mean validation balanced accuracy is judged
    big_batch: bool = True  # also run ours at BIG_BATCH times the batch in each round
    graphs: bool = False  # also run ours with CUDA graphs in each round (CUDA only)
    threads: int | None = None  # torch's CPU threads for both loops; None keeps torch's default (one per core)

    @property
    def rounds(self) -> int:
        return max(self.repeats, self.seeds)

    @property
    def loops(self) -> tuple[str, ...]:
        return LOOPS[:2] + LOOPS[2:3] * self.big_batch + LOOPS[3:] * self.graphs


# When not given (docs/performance.md has what they measured). A CPU run trains 60 classes (the demo's), so
# that its hundred steps learn enough to compare accuracy, on one thread: with two on a 2-core machine that
# other work shares, every parallel region waits for a descheduled thread, which slowed runs several-fold.
# It leaves out the larger batch, whose 25 steps here learn little. A GPU run trains the course's classes,
# sized so that 3 rounds of all three families fit in a few minutes: there the seed-style loop is bound by
# its collate on one CPU core (docs/performance.md, "The GPU bench's default size", has the timings).
DEFAULTS = {"cpu": Sizes(rows=20_000, epochs=5, classes=60, big_batch=False, threads=1),
            "cuda": Sizes(rows=300_000, epochs=3, classes=CLASSES, graphs=True)}
LOOPS = ("seed-style", "ours", f"ours, batch x{BIG_BATCH}", "ours, CUDA graphs")  # the order of the runs within a round
PROFILE_STEPS = 10  # --profile: ours' training steps under the profiler, after as many unprofiled ones (warm-up)
PROFILE_ROWS = 15  # --profile: the ops listed, by their own time on the device (CUDA) or the CPU


# --- measuring ----------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one phase: CUDA tensors on a GPU; on a CPU, the process's peak resident memory.

    On Linux the CPU peak is reset for each phase (/proc/self/clear_refs) and read back (VmHWM): no
    sampling thread, which would steal the interpreter from the loop it measures. Elsewhere it is the
    process's lifetime peak (getrusage), so later phases show at least the earlier ones' figure.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def _reset_cpu_peak() -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    @staticmethod
    def _cpu_peak() -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._reset_cpu_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.peak = self._cpu_peak()


@dataclass
class Run:
    """One training of one loop from one seed."""

    path: str  # which loop (one of LOOPS)
    seed: int
    batch: int
    lr: float
    precision: str
    samples: int  # training samples over all epochs
    seconds: float  # wall time of the training epochs (evaluation excluded)
    eval_seconds: float  # wall time of one evaluation over the validation split
    peak_bytes: int
    balanced_accuracy: float  # on the validation split, after the epochs
    cpu_seconds: float = 0.0  # CPU time the process got in those epochs; well below `seconds` when other work had the cores
    gpu_metric: str | None = None  # ours on CUDA: the meli_train_gpu_memory_bytes line a push would carry after training

    @property
    def rate(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_seed(family: str, cfg: configs.TrainConfig, init: dict, datasets: dict, vectors: torch.Tensor, classes: int,
             device: torch.device) -> Run:
    torch.manual_seed(cfg.seed)  # dropout and the DataLoader's shuffle
    if family == "lstm":
        model = SeedRNN(vectors, cfg.hidden, classes, cfg.dropout, cfg.freeze_embeddings)
    elif family == "cnn":
        model = SeedCNN(vectors, cfg.filters, (2, 3, 4), cfg.fc, cfg.dropout, classes, cfg.freeze_embeddings)
    else:
        model = SeedMLP(vectors, cfg.mlp_hidden, cfg.dropout, classes, cfg.freeze_embeddings)
    model.load_state_dict(init)
    model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    valid_loader = torch.utils.data.DataLoader(datasets["validation"], batch_size=cfg.batch_size, shuffle=False,
                                               collate_fn=seed_collate)
    loader = torch.utils.data.DataLoader(datasets["train"], batch_size=cfg.batch_size, shuffle=True, collate_fn=seed_collate)
    samples = 0
    with PeakMemory(device) as memory:
        _sync(device)
        started, cpu_started = time.time(), time.process_time()
        for _ in range(cfg.epochs):
            samples += seed_train_epoch(model, optimizer, loader, device)[1]
        _sync(device)
        seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    started = time.time()
    bacc = seed_evaluate(model, valid_loader, device)
    return Run(LOOPS[0], cfg.seed, cfg.batch_size, cfg.lr, "fp32", samples, seconds, time.time() - started, memory.peak, bacc,
               cpu_seconds)


def run_ours(family: str, cfg: configs.TrainConfig, init: dict, splits: dict, vectors: torch.Tensor, classes: int,
             device: torch.device, path: str, graphs: bool = False) -> Run:
    torch.manual_seed(cfg.seed)  # dropout
    model = build_model(family, VOCAB, EMBED_DIM, classes, vectors=vectors, **builder_kwargs(cfg))
    model.load_state_dict(init)
    model.to(device)
    optimizer = optim.build_optimizer(model, cfg.lr, cfg.weight_decay)
    split = splits["train"]
    steps = train.make_steps(model, optimizer, split, device, graphs)  # the seam train takes its steps through
    samples = 0
    with PeakMemory(device) as memory:
        _sync(device)
        started, cpu_started = time.time(), time.process_time()
        for epoch in range(1, cfg.epochs + 1):
            rng = np.random.default_rng([cfg.seed, epoch])  # the batch order, as train draws it
            order, batches = epoch_order(split.lengths_host, cfg.batch_size, rng, train.batch_pieces(device, cfg.batch_size))
            samples += train.train_epoch(model, optimizer, split, order, batches, device, steps=steps)[1]
        _sync(device)
        seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    gpu_metric = None
    if device.type == "cuda":  # weights, optimizer state and data resident, as when train pushes between steps
        from job import pushgateway  # only here: a CPU bench needs no Pushgateway client

        gpu_metric = pushgateway.gpu_memory_sample()
    started = time.time()
    bacc = train.evaluate(model, splits["validation"], device)[1]
    precision = ("bf16" if uses_bf16(device, model) else "fp32") + (f", {len(steps.graphs)} graphs" if steps.graphs_on else "")
    return Run(path, cfg.seed, cfg.batch_size, cfg.lr, precision, samples, seconds, time.time() - started, memory.peak, bacc,
               cpu_seconds, gpu_metric)


# --- summarising --------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def _spread(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}..{max(values):{fmt}}"


def _per_seed(runs: list[Run], seeds: int) -> list[Run]:
    """The first run of each seed: accuracy is judged once per seed, however many rounds repeat it."""
    return runs[:seeds]


def _table(rows: list[tuple[str, ...]]) -> str:
    """First row the header; the first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def speed_table(loops: dict[str, list[Run]]) -> str:
    base = loops[LOOPS[0]]
    base_median = float(np.median([r.rate for r in base]))
    rows = [("path", "batch", "lr", "prec", "samples/s median", "min..max", "speed-up", "per round", "10 ep x 6.1M",
             "peak mem", "eval time")]
    for path, runs in loops.items():
        rates = [r.rate for r in runs]
        median = float(np.median(rates))
        per_round = [r.rate / b.rate for r, b in zip(runs, base)]
        rows.append((path, str(runs[0].batch), f"{runs[0].lr:g}", runs[0].precision, f"{median:,.0f}", _spread(rates, ",.0f"),
                     f"{median / base_median:.2f}x", "" if runs is base else _spread(per_round, ".2f") + "x",
                     f"{FULL_EPOCHS * FULL_ROWS / median:,.0f} s", _mb(max(r.peak_bytes for r in runs)),
                     f"{np.median([r.eval_seconds for r in runs]):.1f} s"))
    return _table(rows)


def accuracy_table(loops: dict[str, list[Run]], seeds: int) -> str:
    base = _per_seed(loops[LOOPS[0]], seeds)
    base_mean = float(np.mean([r.balanced_accuracy for r in base]))
    rows = [("path", f"val bal acc, mean of {len(base)}", "min..max", "vs seed", "per seed")]
    for path, runs in loops.items():
        accs = [r.balanced_accuracy for r in _per_seed(runs, seeds)]
        diffs = [a - b.balanced_accuracy for a, b in zip(accs, base)]
        rows.append((path, f"{np.mean(accs):.4f}", _spread(accs, ".4f"),
                     "" if path == LOOPS[0] else f"{np.mean(accs) - base_mean:+.4f}",
                     "" if path == LOOPS[0] else _spread(diffs, "+.4f")))
    return _table(rows)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _judge(passed: bool, samples: int, what: str) -> str:
    return ("PASS" if passed else "FAIL") if samples >= MIN_SAMPLES else f"not judged (needs >= {MIN_SAMPLES} {what})"


def verdicts(loops: dict[str, list[Run]], seeds: int, device: torch.device) -> list[str]:
    """One line per loop of ours: the speed-up (ratio of medians) and the accuracy (difference of means), each judged."""
    base, target = loops[LOOPS[0]], TARGET_SPEEDUP[device.type]
    base_accs = [r.balanced_accuracy for r in _per_seed(base, seeds)]
    out = []
    for path, runs in list(loops.items())[1:]:
        if path not in LOOPS:  # a named config beside (ALSO): shown in the tables, not a rewrite of the seed's loop
            continue
        speedup = float(np.median([r.rate for r in runs]) / np.median([r.rate for r in base]))
        per_round = [r.rate / b.rate for r, b in zip(runs, base)]
        accs = [r.balanced_accuracy for r in _per_seed(runs, seeds)]
        delta = float(np.mean(accs) - np.mean(base_accs))
        diffs = [a - b for a, b in zip(accs, base_accs)]
        fast = _judge(speedup >= target, len(runs), "runs")
        accurate = _judge(delta >= -ACCURACY_TOLERANCE, len(accs), "seeds")
        overall = "FAIL" if "FAIL" in (fast, accurate) else "PASS" if fast == accurate == "PASS" else "not judged"
        speed = (f"speed-up {speedup:.2f}x (ratio of medians, {_count(len(runs), 'run')}; "
                 f"per round {_spread(per_round, '.2f')}x; target >= {target:g}x on {device.type}) {fast}")
        accuracy = (f"accuracy {delta:+.4f} (difference of means, {_count(len(accs), 'seed')}; "
                    f"per seed {_spread(diffs, '+.4f')}; target >= -{ACCURACY_TOLERANCE}) {accurate}")
        out.append(f"{path}: {speed}; {accuracy}; overall {overall}")
    return out


def gpu_memory_lines(loops: dict[str, list[Run]]) -> list[str]:
    """meli_train_gpu_memory_bytes as ours' last run read it, beside torch's peak (CUDA only)."""
    out = []
    for path, runs in loops.items():
        last = runs[-1]
        if last.gpu_metric is not None:
            value = float(last.gpu_metric.split()[-1])
            out.append(f"{path}: {last.gpu_metric} ({_mb(value)} after training; torch's peak {_mb(last.peak_bytes)})")
    return out


# --- the step ------------------------------------------------------------------------------


def one_round(family: str, cfg: configs.TrainConfig, init: dict, datasets: dict, splits: dict, vectors: torch.Tensor,
              classes: int, device: torch.device, big_batch: bool, graphs: bool = False) -> Iterator[Run]:
    """Each loop once from cfg.seed and the same initial weights, in the order of LOOPS, yielded as it ends."""
    yield run_seed(family, cfg, init, datasets, vectors, classes, device)
    yield run_ours(family, cfg, init, splits, vectors, classes, device, LOOPS[1])
    if big_batch:
        big = dataclasses.replace(cfg, batch_size=cfg.batch_size * BIG_BATCH, lr=cfg.lr * BIG_BATCH)
        yield run_ours(family, big, init, splits, vectors, classes, device, LOOPS[2])
    if graphs:
        yield run_ours(family, cfg, init, splits, vectors, classes, device, LOOPS[3], graphs=True)
    if family in ALSO:
        also = dataclasses.replace(configs.NAMED[ALSO[family]], epochs=cfg.epochs, seed=cfg.seed, patience=0)
        torch.manual_seed(cfg.seed)
        also_init = build_model(family, VOCAB, EMBED_DIM, classes, vectors=vectors, **builder_kwargs(also)).state_dict()
        yield run_ours(family, also, also_init, splits, vectors, classes, device, f"ours, {ALSO[family]}")


def bench_family(family: str, data: dict, datasets: dict, vectors: torch.Tensor, sizes: Sizes,
                 device: torch.device) -> dict[str, list[Run]]:
    """max(repeats, seeds) rounds, the loops interleaved so that other load on the machine falls on each alike."""
    cfg = dataclasses.replace(configs.NAMED[FAMILY_CONFIG[family]], epochs=sizes.epochs)
    splits = {name: make_split(*arrays, cfg.max_len, device) for name, arrays in data.items()}
    paths = sizes.loops + ((f"ours, {ALSO[family]}",) if family in ALSO else ())
    loops: dict[str, list[Run]] = {path: [] for path in paths}
    width = max(map(len, paths))
    for k in range(sizes.rounds):
        seed = k % sizes.seeds
        torch.manual_seed(seed)
        init = build_model(family, VOCAB, EMBED_DIM, sizes.classes, vectors=vectors, **builder_kwargs(cfg)).state_dict()
        for r in one_round(family, dataclasses.replace(cfg, seed=seed), init, datasets, splits, vectors, sizes.classes, device,
                           sizes.big_batch, sizes.graphs):
            loops[r.path].append(r)
            print(f"  round {k + 1}/{sizes.rounds}, seed {seed}: {r.path:<{width}}  {r.rate:>11,.0f} samples/s "
                  f"in {r.seconds:6.1f} s (CPU {r.cpu_seconds:6.1f} s), val bal acc {r.balanced_accuracy:.4f}", flush=True)
    del splits
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return loops


def profile_steps(family: str, data: dict, vectors: torch.Tensor, sizes: Sizes, device: torch.device) -> str:
    """Where ours' training step goes: the profiler's table of its ops over PROFILE_STEPS steps at the config's batch."""
    from torch.profiler import ProfilerActivity, profile

    cfg = dataclasses.replace(configs.NAMED[FAMILY_CONFIG[family]], epochs=1)
    split = make_split(*data["train"], cfg.max_len, device)
    torch.manual_seed(cfg.seed)
    model = build_model(family, VOCAB, EMBED_DIM, sizes.classes, vectors=vectors, **builder_kwargs(cfg)).to(device)
    optimizer = optim.build_optimizer(model, cfg.lr, cfg.weight_decay)
    order, batches = epoch_order(split.lengths_host, cfg.batch_size, np.random.default_rng(cfg.seed),
                                 train.batch_pieces(device, cfg.batch_size))
    warm = min(PROFILE_STEPS, len(batches) // 2)
    steps = train.make_steps(model, optimizer, split, device, sizes.graphs)  # graphed when the bench runs graphs
    train.train_epoch(model, optimizer, split, order, batches[:warm], device, steps=steps)  # kernels chosen, caches warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiled = batches[warm:warm + PROFILE_STEPS]
    with profile(activities=activities) as prof:
        started = time.time()
        train.train_epoch(model, optimizer, split, order, profiled, device, steps=steps)  # ends with .item(): the device is done
        seconds = time.time() - started
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return (f"profile of ours, {len(profiled)} steps of batch {cfg.batch_size} after {warm} unprofiled"
            f"{' (CUDA graphs)' if steps.graphs_on else ''}: {seconds / max(1, len(profiled)) * 1e3:.2f} ms a step under the profiler\n"
            + prof.key_averages().table(sort_by=key, row_limit=PROFILE_ROWS))


def _sizes(args, device: torch.device) -> Sizes:
    """The device's defaults with the command line's values over them, checked."""
    given = {key: getattr(args, key, None)
             for key in ("rows", "epochs", "classes", "repeats", "seeds", "big_batch", "graphs", "threads")}
    sizes = dataclasses.replace(DEFAULTS[device.type], **{k: v for k, v in given.items() if v is not None})
    for key, least in (("rows", 100), ("epochs", 1), ("repeats", 1), ("seeds", 1), ("threads", 1)):
        if getattr(sizes, key) is not None and getattr(sizes, key) < least:
            raise UserError(f"--{key} {getattr(sizes, key)}: use at least {least}")
    if not 2 <= sizes.classes <= CLASSES:
        raise UserError(f"--classes {sizes.classes}: use 2 to {CLASSES}")
    if sizes.graphs and device.type != "cuda":
        raise UserError(f"--graphs: CUDA graphs need --device cuda (this run is on {device.type})")
    return sizes


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        where = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, "
                 f"cuDNN {torch.backends.cudnn.version()}")
    else:
        where = f"{os.cpu_count()} CPU cores, {_count(torch.get_num_threads(), 'thread')}"
    if hasattr(os, "getloadavg"):  # other work on the machine slows the many small ops of the seed-style loop most
        where += f", load average {os.getloadavg()[0]:.1f}"
    return where


def main(args) -> int:
    device = pick_device(args.device)
    sizes = _sizes(args, device)
    if sizes.threads is not None:
        torch.set_num_threads(sizes.threads)
    families = list(FAMILY_CONFIG) if args.family == "all" else [args.family]
    valid_rows = max(50, int(sizes.rows * VALIDATION_SHARE))

    started = time.time()
    ids, offsets, labels = make_rows(sizes.rows + valid_rows, classes=sizes.classes)
    rows = sizes.rows
    data = {"train": (ids[:offsets[rows]], offsets[:rows + 1], labels[:rows]),
            "validation": (ids[offsets[rows]:], offsets[rows:] - offsets[rows], labels[rows:])}
    datasets = {name: SeedDataset(*arrays) for name, arrays in data.items()}  # the seed-style loop's, built once
    vectors = word_vectors()
    print(f"bench: {rows:,} training and {valid_rows:,} validation rows (vocab {VOCAB:,}, dim {EMBED_DIM}, {sizes.classes} classes, "
          f"Poisson({MEAN_LENGTH})+1 tokens capped at {MAX_LENGTH}, {np.diff(offsets).mean():.2f} on average), "
          f"{sizes.epochs} epoch(s) a run, {sizes.rounds} round(s) of {' then '.join(sizes.loops)} (seeds 0..{sizes.seeds - 1}); "
          f"{device.type} ({_machine(device)}), torch {torch.__version__}; data made in {time.time() - started:.1f} s",
          flush=True)
    for family in families:
        print(f"\n{family} ({FAMILY_CONFIG[family]}):", flush=True)
        loops = bench_family(family, data, datasets, vectors, sizes, device)
        print()
        print(speed_table(loops))
        print()
        print(accuracy_table(loops, sizes.seeds))
        for line in verdicts(loops, sizes.seeds, device) + gpu_memory_lines(loops):
            print(line)
        if getattr(args, "profile", False):
            print("\n" + profile_steps(family, data, vectors, sizes, device), flush=True)
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}", end="; ")
    print(f"process peak RSS {_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}; total {time.time() - started:.0f} s")
    return 0
