"""Several runs on one device: K training processes at once, for each K, in one table.

    python -m job bench --share 1,2,4,8 [--device cpu|cuda] [--family lstm] [--rows N] [--epochs E]
    make bench-share DEVICE=cuda

This is what `runs_per_gpu` (RUNS_PER_GPU=K, job/train_group.py) does on a GPU pod: K processes,
one run each, share the one device. The models are small (hidden100 trains about 90 k parameters),
so one run leaves most of a GPU idle and several can fill it.

For each K, K processes start together. Each builds the bench's synthetic data (job/bench_seed.py)
on the device, builds the family's named config from its own seed, takes WARM_BATCHES steps (kernels
chosen, caches warm), waits at a barrier for the others, then trains `epochs` epochs on job.train's
own path, timed. Printed per K: the aggregate samples/s (every process's samples over the span from
the first start to the last end), each process's samples/s (median and min..max), the aggregate
against K=1's, and the peak memory of one process while it trained (job.bench's PeakMemory: torch's
CUDA peak on a GPU, the resident peak on a CPU). The target (a GPU's): K=4 makes at least 3x the samples/s of one run. A CPU run uses one
thread a process, so there K beyond the cores only shares them.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from job import configs, optim, train
from job.bench import FAMILY_CONFIG, PeakMemory
from job.bench_seed import CLASSES, EMBED_DIM, VOCAB, make_rows, word_vectors
from job.data import epoch_order, make_split
from job.device import pick_device
from job.errors import UserError
from job.models import build_model, builder_kwargs

SHARE_TARGET = (4, 3.0)  # the target on a GPU: K=4 processes make at least 3x one run's samples/s
WARM_BATCHES = 20  # untimed steps before the barrier
BARRIER_TIMEOUT_S = 900  # a process that never reaches the barrier (it failed) must not hang the others


@dataclass(frozen=True)
class ShareSizes:
    rows: int  # training rows of each process
    epochs: int  # timed epochs of each process
    classes: int


DEFAULTS = {"cpu": ShareSizes(rows=20_000, epochs=2, classes=60),
            "cuda": ShareSizes(rows=300_000, epochs=2, classes=CLASSES)}


@dataclass
class Share:
    """One process's timed training."""

    index: int
    started: float  # time.time() at its first timed step, comparable across processes
    ended: float
    samples: int
    peak_bytes: int

    @property
    def rate(self) -> float:
        return self.samples / max(self.ended - self.started, 1e-9)


def parse_counts(raw: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; one clear line for anything else."""
    try:
        counts = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--share {raw!r}: expected process counts separated by commas, e.g. 1,2,4,8") from None
    if not counts or min(counts) < 1 or max(counts) > 64:
        raise UserError(f"--share {raw!r}: each count must be 1 to 64")
    return sorted(set(counts))


def _process(index: int, family: str, sizes: ShareSizes, device_name: str, barrier, results) -> None:
    """One of the K processes (spawned: CUDA cannot be forked); puts its Share, or its error, on results."""
    try:
        if device_name == "cpu":
            torch.set_num_threads(1)  # one core a process: K processes share the cores as K runs would
        device = torch.device(device_name)
        cfg = dataclasses.replace(configs.NAMED[FAMILY_CONFIG[family]], epochs=sizes.epochs, seed=index)
        ids, offsets, labels = make_rows(sizes.rows, classes=sizes.classes)
        split = make_split(ids, offsets, labels, cfg.max_len, device)
        torch.manual_seed(index)
        model = build_model(family, VOCAB, EMBED_DIM, sizes.classes, vectors=word_vectors(), **builder_kwargs(cfg)).to(device)
        optimizer = optim.build_optimizer(model, cfg.lr, cfg.weight_decay)
        steps = train.make_steps(model, optimizer, split, device, False)
        pieces = train.batch_pieces(device, cfg.batch_size)
        order, batches = epoch_order(split.lengths_host, cfg.batch_size, np.random.default_rng([index, 0]), pieces)
        train.train_epoch(model, optimizer, split, order, batches[:WARM_BATCHES], device, steps=steps)
        barrier.wait(BARRIER_TIMEOUT_S)
        started, samples = time.time(), 0
        with PeakMemory(device) as memory:
            for epoch in range(1, cfg.epochs + 1):
                order, batches = epoch_order(split.lengths_host, cfg.batch_size, np.random.default_rng([index, epoch]), pieces)
                samples += train.train_epoch(model, optimizer, split, order, batches, device, steps=steps)[1]  # ends synced
        results.put(Share(index, started, time.time(), samples, memory.peak))
    except BaseException as e:  # the parent names it; the barrier lets the others go
        barrier.abort()
        results.put(f"process {index}: {type(e).__name__}: {e}")


def run_k(k: int, family: str, sizes: ShareSizes, device_name: str) -> list[Share]:
    """K processes at once; their Shares, or a UserError naming the first that failed."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(k), context.Queue()
    processes = [context.Process(target=_process, args=(i, family, sizes, device_name, barrier, results), daemon=True)
                 for i in range(k)]
    for p in processes:
        p.start()
    try:
        got = [results.get(timeout=BARRIER_TIMEOUT_S * 2) for _ in processes]
    except queue.Empty:
        for p in processes:
            p.kill()
        raise UserError(f"bench --share: K={k}: a process sent no result within {BARRIER_TIMEOUT_S * 2} s") from None
    for p in processes:
        p.join()
    errors = [g for g in got if isinstance(g, str)]
    if errors:
        raise UserError(f"bench --share: K={k}: {errors[0]}")
    return sorted(got, key=lambda s: s.index)


def span(shares: list[Share]) -> float:
    """Seconds from the first start to the last end."""
    return max(s.ended for s in shares) - min(s.started for s in shares)


def aggregate(shares: list[Share]) -> float:
    """Every process's samples over their span."""
    return sum(s.samples for s in shares) / max(span(shares), 1e-9)


def table(measured: dict[int, list[Share]]) -> str:
    """One row per K: aggregate samples/s, per process (median, min..max), against K=1 (or the smallest K), peak memory."""
    base = aggregate(measured[min(measured)])
    rows = [("K", "aggregate/s", "vs K=%d" % min(measured), "per process/s", "min..max", "span s", "peak MB a process")]
    for k, shares in sorted(measured.items()):
        rates, total = [s.rate for s in shares], aggregate(shares)
        rows.append((str(k), f"{total:,.0f}", f"{total / base:.2f}x", f"{statistics.median(rates):,.0f}",
                     f"{min(rates):,.0f}..{max(rates):,.0f}", f"{span(shares):.2f}", f"{max(s.peak_bytes for s in shares) / 2**20:,.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def verdict(measured: dict[int, list[Share]], device_type: str) -> str:
    k, target = SHARE_TARGET
    if k not in measured or 1 not in measured:
        return f"K={k} against K=1: not judged (measure both, e.g. --share 1,{k})"
    ratio = aggregate(measured[k]) / aggregate(measured[1])
    judged = "PASS" if ratio >= target else "FAIL"
    if device_type != "cuda":
        judged = "not judged (the target is a GPU's; a CPU process has a core, not a share of one device)"
    return f"K={k}: aggregate {ratio:.2f}x one run's samples/s (target >= {target:g}x on cuda) {judged}"


def main(args) -> int:
    counts = parse_counts(args.share)
    family = "lstm" if args.family == "all" else args.family
    device = pick_device(args.device)
    sizes = dataclasses.replace(DEFAULTS[device.type], **{key: getattr(args, key) for key in ("rows", "epochs", "classes")
                                                         if getattr(args, key, None) is not None})
    if sizes.rows < 100 or sizes.epochs < 1:
        raise UserError(f"bench --share: --rows {sizes.rows} and --epochs {sizes.epochs}: use at least 100 rows and 1 epoch")
    if not 2 <= sizes.classes <= CLASSES:
        raise UserError(f"bench --share: --classes {sizes.classes}: use 2 to {CLASSES}")
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"bench --share: {FAMILY_CONFIG[family]} on {device}, K = {', '.join(map(str, counts))} processes at once; each "
          f"{sizes.rows:,} rows, {sizes.classes} classes, {WARM_BATCHES} warm-up steps, then {sizes.epochs} epoch(s) timed"
          f"{load}", flush=True)
    started, measured = time.time(), {}
    for k in counts:
        measured[k] = run_k(k, family, sizes, str(device))
        print(f"  K={k}: aggregate {aggregate(measured[k]):,.0f} samples/s, "
              f"{time.time() - started:.0f} s so far", flush=True)
    print()
    print(table(measured))
    print(verdict(measured, device.type))
    print(f"bench --share: {time.time() - started:.0f} s in all")
    return 0
