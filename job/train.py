"""Train one config on prepared data: the step every GPU pod runs.

    python -m job train --config hidden100 --prepared runs/prepared/<hash> --out runs/sweeps/demo/hidden100 --sweep demo

Writes into --out (local or s3://), through job/runfiles.py, which describes each file:
metrics.jsonl after every epoch, checkpoint.pt (config, epoch, model, optimizer, RNG state and
history: a plain dict) after every epoch, model.pt (the best-validation weights with everything
needed to use them), test_predictions.npz, and summary.json last.
A rerun with the same --out resumes from checkpoint.pt; a finished run is left as it is. `--epochs E` trains
to epoch E instead of the config's epochs: the budget is not part of the run's identity, so a run trained to
3 and then given 9 continues from its checkpoint and ends where a run trained to 9 at once ends (successive
halving promotes runs this way, job/search.py).
The tfidf family trains here too, through job/baseline.py: `main` is the one place the two part.
The device and precision come from job/device.py. `python -m job bench` measures this training path
against a seed-style loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch.nn import functional as F

from job import baseline, configs, runfiles, storage, tracking
from job.data import Split, epoch_order, make_split
from job.device import autocast, pick_device
from job.errors import TrainingFailed, UserError
from job.models import build_model, builder_kwargs
from job.optim import DenseAndSparseAdam, build_optimizer
from job.prepare import open_prepared
from job.scores import balanced_accuracy, selection_score
from job.steps import write_result

log = logging.getLogger("job.train")

EVAL_BATCH = 8192  # titles per evaluation batch: no gradients, so large batches are cheap
LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal (kubectl logs)
BAR_EVERY = 0.5  # seconds between progress bar redraws on a terminal
CPU_PIECE_ROWS = 128  # on a CPU a batch is cut by length into pieces of at least this many rows, at most
CPU_MAX_PIECES = 8  # this many: each is padded only to its own longest title, which at batch 1024 halves
# an LSTM step; a GPU at these batch sizes pays per kernel launch, not per padded token: one piece


# --- small named helpers ------------------------------------------------------------


def batch_pieces(device: torch.device, batch_size: int) -> int:
    """How many length pieces `epoch_order` cuts a training batch into on this device."""
    return 1 if device.type == "cuda" else max(1, min(CPU_MAX_PIECES, batch_size // CPU_PIECE_ROWS))


class StepRunner:
    """How a run takes its training steps eagerly, kept from epoch to epoch with the epoch's loss sum: zero
    the gradients, forward and backward each piece of the batch, one optimizer step."""

    graphs_on = False  # the log says whether a run's steps are CUDA graphs (job/graphs.py: GraphedSteps)

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, split: Split, device: torch.device):
        self.model, self.optimizer, self.split, self.device = model, optimizer, split, device
        self.loss_sum = torch.zeros((), device=device)  # the epoch's summed loss, on the device: read once an epoch

    def stream(self):
        """The context the steps run in: eager steps need none (CUDA graphs run on a side stream)."""
        return contextlib.nullcontext()

    def take(self, order_t: torch.Tensor, batch: list[tuple[int, int, int]]) -> None:
        """One optimizer step over the batch's pieces of the order."""
        rows = batch[-1][1] - batch[0][0]
        self.optimizer.zero_grad(set_to_none=True)
        for start, end, width in batch:
            self.forward_backward(order_t[start:end], width, rows)
        self.optimizer.step()

    def forward_backward(self, index: torch.Tensor, width: int, rows: int) -> None:
        """A piece's loss, summed over its rows, into loss_sum; its gradient, as a share of the batch's, into .grad."""
        with autocast(self.device, self.model):
            logits = self.model(self.split.tokens[index, :width], self.split.lengths[index])
        loss = F.cross_entropy(logits.float(), self.split.labels[index], reduction="sum")
        (loss / rows).backward()
        self.loss_sum += loss.detach()  # on the device: reading the loss every step would stall the GPU


def make_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, split: Split, device: torch.device,
               graphs: bool = False):
    """The seam between the loop and how steps are taken: eager StepRunner, or with `graphs` on CUDA, those steps
    captured as CUDA graphs (job/graphs.py). Both offer loss_sum, stream() and take(), so train_epoch reads
    the same either way. Never graphs on a CPU, nor with sparse-gradient tables (their rows vary per step)."""
    eager = StepRunner(model, optimizer, split, device)
    if graphs and device.type == "cuda" and not isinstance(optimizer, DenseAndSparseAdam):
        from job.graphs import GraphedSteps

        return GraphedSteps(eager)
    return eager


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, split: Split, order: np.ndarray,
                batches: Iterable[list[tuple[int, int, int]]], device: torch.device,
                report: Callable[[int, float, float], None] | None = None, every: float = LOG_EVERY,
                on_batch: Callable[[int, int], None] | None = None, steps: StepRunner | None = None) -> tuple[float, int]:
    """One pass over a split in the batches of `epoch_order`: (mean training loss, samples seen).

    A batch's pieces add their gradients (each loss is its sum over the batch's rows), then the
    optimizer takes one step: the step of the whole batch (`steps.take`; `steps`, from make_steps, carries
    CUDA graphs from epoch to epoch; a new eager one when not given). Nothing in the loop waits on the device:
    the loss is summed there and read once at the end, and every `every` seconds for
    `report(samples seen, running loss, seconds so far)` when one is given. `on_batch(batches done,
    batches in all)` runs after each step, when given.
    """
    steps = steps or StepRunner(model, optimizer, split, device)
    seen = 0
    started = last = time.time()
    model.train()
    batches = list(batches)
    with steps.stream():
        order_t = torch.from_numpy(order).to(device, non_blocking=True)
        steps.loss_sum.zero_()
        for number, batch in enumerate(batches, 1):
            steps.take(order_t, batch)
            seen += batch[-1][1] - batch[0][0]
            if report is not None and time.time() - last >= every:
                last = time.time()
                report(seen, steps.loss_sum.item() / seen, last - started)
            if on_batch is not None:
                on_batch(number, len(batches))
    return steps.loss_sum.item() / max(1, seen), seen  # this .item() waits for the last step: the epoch is done


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, device: torch.device, predictions: bool = False):
    """(mean loss, balanced accuracy[, predicted class ids]) over a split, with one host sync at the end."""
    model.eval()
    order, batches = epoch_order(split.lengths_host, EVAL_BATCH, None)
    order_t = torch.from_numpy(order).to(device)
    loss_sum = torch.zeros((), device=device)
    preds = torch.empty(len(split), dtype=torch.int64, device=device)
    for (start, end, width), in batches:
        idx = order_t[start:end]
        with autocast(device, model):
            logits = model(split.tokens[idx, :width], split.lengths[idx])
        loss_sum += F.cross_entropy(logits.float(), split.labels[idx], reduction="sum")
        preds[idx] = logits.argmax(dim=1)
    model.train()
    preds_host = preds.cpu().numpy()
    result = (loss_sum.item() / max(1, len(split)), balanced_accuracy(split.labels_host, preds_host))
    return (*result, preds_host) if predictions else result


class Progress:
    """A bar on a terminal; log lines with samples/s and ETA otherwise (what kubectl logs shows)."""

    def __init__(self, name: str, epochs: int, rows: int):
        self.name, self.epochs, self.rows = name, epochs, rows
        self.tty = sys.stderr.isatty()
        self.every = BAR_EVERY if self.tty else LOG_EVERY
        self.last = time.time()

    def show(self, epoch: int, done: int, loss: float, rate: float, eta: float) -> None:
        self.last = time.time()
        share = done / max(1, self.rows)
        if self.tty:
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\r{self.name} epoch {epoch}/{self.epochs} [{bar:<30}] {100 * share:5.1f}% "
                             f"loss {loss:.4f} {rate:,.0f} samples/s ETA {_clock(eta)}  ")
            sys.stderr.flush()
        else:
            log.info("%s epoch %d/%d %5.1f%% loss %.4f %.0f samples/s ETA %s", self.name, epoch, self.epochs,
                     100 * share, loss, rate, _clock(eta))

    def end_line(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


OnBatch = Callable[[int, int, int], None]  # (epoch, batches done, batches in the epoch), after each batch


# --- the state a run carries from epoch to epoch ---------------------------------------


@dataclass
class Training:
    """Everything one training run works with; built once by `setup`, then read top to bottom."""

    run: configs.Run
    out: str  # the run's folder
    prepared_uri: str
    device: torch.device
    meta: dict  # what model.pt needs beside the weights to be used on its own
    train: Split
    valid: Split
    test: Split
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch
    best: dict = field(default_factory=lambda: {"epoch": 0, "score": -math.inf})  # score: higher is better
    train_seconds: float = 0.0  # seconds spent in training passes, over every attempt
    steps: StepRunner | None = None  # how steps are taken (CUDA graphs kept between epochs); made after `resume`
    budget: int = 0  # train to this epoch (--epochs; the config's epochs by default)

    @property
    def cfg(self) -> configs.TrainConfig:
        return self.run.config

    def uri(self, name: str) -> str:
        return storage.join(self.out, name)


def setup(run: configs.Run, out: str, prepared_uri: str, device: torch.device) -> Training:
    """Load the prepared data onto the device and build the model and its optimizer."""
    cfg = run.config
    prepared = open_prepared(prepared_uri)
    a = prepared.arrays
    torch.manual_seed(cfg.seed)
    train = make_split(a["tokens_train"], a["offsets_train"], a["labels_train"], cfg.max_len, device, cfg.max_train_rows, cfg.seed)
    valid = make_split(a["tokens_validation"], a["offsets_validation"], a["labels_validation"], cfg.max_len, device)
    test = make_split(a["tokens_test"], a["offsets_test"], a["labels_test"], cfg.max_len, device)
    vectors = torch.from_numpy(np.array(a["embeddings"]))  # a writable copy: the model owns (and may tune) it
    model = build_model(cfg.family, prepared.vocab_size, vectors.shape[1], prepared.classes, vectors=vectors,
                        **builder_kwargs(cfg)).to(device)
    meta = {**runfiles.model_meta(prepared, cfg.max_len), "embed_dim": int(vectors.shape[1])}
    return Training(run, out, prepared_uri, device, meta, train, valid, test, model,
               build_optimizer(model, cfg.lr, cfg.weight_decay))


def resume(r: Training) -> None:
    """Go on from checkpoint.pt when an earlier attempt left one: weights, optimizer, RNG and history."""
    ckpt = runfiles.load_torch(r.uri("checkpoint.pt"))
    if ckpt is None:
        return
    if ckpt.get("format") != runfiles.MODEL_FORMAT:
        raise UserError(f"{r.uri('checkpoint.pt')}: checkpoint format {ckpt.get('format')}, this version reads "
                        f"{runfiles.MODEL_FORMAT}; use a new --out")
    if not runfiles.same_run(ckpt.get("config"), r.cfg):  # the budget may differ: a promoted run goes on to more epochs
        raise UserError(f"{r.uri('checkpoint.pt')}: holds a checkpoint of another config ({ckpt.get('spec')}); use a new --out")
    r.model.load_state_dict(ckpt["model"])
    r.optimizer.load_state_dict(ckpt["optimizer"])
    for group in r.optimizer.param_groups:
        group["capturable"] = False  # as built: a checkpoint from CUDA graphs says True, which a CPU run must not keep
    torch.set_rng_state(ckpt["rng"]["torch"])
    if r.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"])  # dropout on the GPU draws from this one
    r.history, r.best, r.train_seconds = ckpt["history"], ckpt["best"], ckpt["train_seconds"]
    runfiles.write_history(r.out, r.history)
    log.info("%s resumed from %s after epoch %d", r.run.name, r.uri("checkpoint.pt"), ckpt["epoch"])


def saved_state(r: Training, epoch: int) -> dict:
    """What model.pt holds (runfiles.model_file): the weights with everything needed to use them."""
    return runfiles.model_file(r.run, epoch, r.prepared_uri, r.meta, {"model": r.model.state_dict()})


def save_checkpoint(r: Training, epoch: int) -> None:
    """model.pt when the epoch is the best so far, then checkpoint.pt, which points past it: a kill in
    between replays one epoch. checkpoint.pt is model.pt's dict plus what resuming needs."""
    if r.best["epoch"] == epoch:
        runfiles.save_model(r.out, saved_state(r, epoch))
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if r.device.type == "cuda" else None}
    runfiles.save_torch(r.uri("checkpoint.pt"), {**saved_state(r, epoch), "optimizer": r.optimizer.state_dict(), "rng": rng,
                                        "history": r.history, "best": r.best, "train_seconds": r.train_seconds})
    runfiles.write_history(r.out, r.history)


def run_epoch(r: Training, epoch: int, progress: Progress, pusher, on_batch: OnBatch | None) -> None:
    """Train one pass, validate, record the epoch, keep the best weights and checkpoint."""
    cfg, samples_before = r.cfg, len(r.history) * len(r.train)
    rng = np.random.default_rng([cfg.seed, epoch])  # per-epoch order: a resumed run sees the same batches
    order, batches = epoch_order(r.train.lengths_host, cfg.batch_size, rng, batch_pieces(r.device, cfg.batch_size))

    def report(seen: int, running: float, seconds: float) -> None:
        if not math.isfinite(running):
            raise TrainingFailed(f"loss is {running} at epoch {epoch} after {seen} samples")
        rate = seen / seconds
        eta = (len(r.train) - seen + (r.budget - epoch) * len(r.train)) / rate
        progress.show(epoch, seen, running, rate, eta)
        pusher.progress(epoch, samples_before + seen, running, rate)

    batch_done = None if on_batch is None else (lambda done, total: on_batch(epoch, done, total))
    started = time.time()
    train_loss, seen = train_epoch(r.model, r.optimizer, r.train, order, batches, r.device, report, progress.every,
                                   batch_done, r.steps)
    seconds = time.time() - started
    if not math.isfinite(train_loss):
        raise TrainingFailed(f"loss is {train_loss} at epoch {epoch}")
    val_loss, val_bacc = evaluate(r.model, r.valid, r.device)
    progress.end_line()
    r.train_seconds += seconds
    r.history.append(runfiles.history_row(epoch, train_loss, val_loss, val_bacc, seconds, seen))
    log.info("%s epoch %d/%d: train loss %.4f, validation loss %.4f, balanced accuracy %.4f, %.0f samples/s, %.1fs",
             r.run.name, epoch, r.budget, train_loss, val_loss, val_bacc, seen / seconds, seconds)
    score = selection_score(cfg.select_by, val_loss, val_bacc)
    if score > r.best["score"]:
        r.best = {"epoch": epoch, "score": score}
    save_checkpoint(r, epoch)
    pusher.epoch_end(epoch, train_loss, val_loss, val_bacc, samples_before + seen, samples_per_second=seen / seconds)


def stop_early(r: Training, epoch: int) -> bool:
    patience = r.cfg.patience
    if patience and r.best["epoch"] and epoch - r.best["epoch"] > patience:
        log.info("%s: early stop, no better validation %s for %d epochs", r.run.name, r.cfg.select_by, patience)
        return True
    return False


def finish(r: Training) -> dict:
    """Test the best epoch's weights; keep its test predictions for the report; write summary.json last."""
    if r.best["epoch"] == 0:
        losses = ", ".join(str(h["validation_loss"]) for h in r.history)
        raise TrainingFailed(f"validation loss was not finite on any epoch ({losses}): no epoch to keep")
    r.model.load_state_dict(runfiles.load_torch(r.uri(runfiles.MODEL))["model"])
    test_loss, test_bacc, preds = evaluate(r.model, r.test, r.device, predictions=True)
    runfiles.write_predictions(r.out, r.test.labels_host, preds)
    summary = runfiles.ok_summary(r.out, r.run, r.history, r.best["epoch"], test_loss, test_bacc, r.train_seconds,
                                  len(r.history) * len(r.train), r.budget, str(r.device),
                                  sum(p.numel() for p in r.model.parameters()), r.prepared_uri)
    log.info("%s done: test loss %.4f, test balanced accuracy %.4f (best epoch %d)",
             r.run.name, test_loss, test_bacc, r.best["epoch"])
    return summary


def train_neural(run: configs.Run, out: str, prepared_uri: str, device: torch.device, graphs: bool, budget: int,
                 pusher, tracker: tracking.Tracker, on_batch: OnBatch | None) -> dict:
    """Setup, resume, epochs, finish: the summary. A failed run writes its failed summary, then raises TrainingFailed."""
    r = setup(run, out, prepared_uri, device)
    r.budget = budget
    resume(r)
    r.budget = max(r.budget, len(r.history))  # a run already past the budget is not cut back: it is finished there
    runfiles.mark_continuing(out, run, len(r.history), r.budget)
    # after resume: graphs hold the optimizer's state tensors
    r.steps = make_steps(r.model, r.optimizer, r.train, device, graphs)
    log.info("%s: %s on %s%s, %d parameters (%d trained), %d/%d/%d rows, %d epochs of batch %d",
             run.name, r.cfg.family, device, " with CUDA graphs" if r.steps.graphs_on else "",
             sum(p.numel() for p in r.model.parameters()),
             sum(p.numel() for p in r.model.parameters() if p.requires_grad),
             len(r.train), len(r.valid), len(r.test), r.budget, r.cfg.batch_size)
    pusher.start(r.budget, len(r.train))
    progress = Progress(run.name, r.budget, len(r.train))
    try:
        for epoch in range(len(r.history) + 1, r.budget + 1):
            if stop_early(r, epoch):
                break
            run_epoch(r, epoch, progress, pusher, on_batch)
            tracker.epochs(r.history)  # after the checkpoint: an epoch is logged once it is kept
        return finish(r)
    except TrainingFailed as e:
        runfiles.failed_summary(out, run, str(e), r.history, r.budget)
        raise
    except torch.OutOfMemoryError:
        reason = f"out of memory at epoch {len(r.history) + 1} (batch_size={r.cfg.batch_size}); try a smaller batch_size"
        runfiles.failed_summary(out, run, reason, r.history, r.budget)
        raise TrainingFailed(reason) from None


# --- the step ------------------------------------------------------------------------


def main(args, on_batch: OnBatch | None = None) -> int:
    """Check, skip a finished run, train (tfidf or neural), and write the test balanced accuracy to
    --result-file (Argo's output). Returns 0; a failed run raises TrainingFailed (exit 3) after writing
    its failed summary.
    """
    run = configs.parse_one(args.config)
    budget = run.config.epochs if args.epochs is None else args.epochs
    if budget < 1:
        raise UserError(f"--epochs {args.epochs}: must be >= 1")
    neural = run.config.family != "tfidf"  # the one place tfidf and neural training part
    if not neural and budget != run.config.epochs:
        raise UserError(f"--epochs {budget}: tfidf trains in one go to its epochs ({run.config.epochs}); it cannot stop or go on")
    out = storage.check_uri(args.out, "--out")
    storage.check_uri(args.prepared, "--prepared")
    device = pick_device(args.device)
    if args.cuda_graphs not in ("true", "false"):
        raise UserError(f"--cuda-graphs {args.cuda_graphs!r}: expected true or false")
    graphs = args.cuda_graphs == "true"
    done = runfiles.finished(out, run, budget)
    tracker = tracking.Tracker.from_env(args.sweep, run, out, args.prepared, tracking.run_tags(args), trained=done is not None)
    if done is not None:
        log.info("%s already finished (summary.json found): test balanced accuracy %.4f", run.name, done["test_balanced_accuracy"])
        tracker.finish(done)  # completes the MLflow run of an attempt killed after its summary
        write_result(args.result_file, f"{done['test_balanced_accuracy']:.6f}")
        return 0

    from job import pushgateway  # here, not at the top: `bench` imports this module without the Pushgateway client

    pusher = pushgateway.TrainingMetrics.from_env(args.sweep, run.name)
    summary = None
    try:
        if neural:
            summary = train_neural(run, out, args.prepared, device, graphs, budget, pusher, tracker, on_batch)
        else:
            summary = baseline.train(run, out, open_prepared(args.prepared), pusher)
    finally:
        pusher.finish(summary["test_balanced_accuracy"] if summary else None, ok=summary is not None)
        tracker.finish(summary)
    write_result(args.result_file, f"{summary['test_balanced_accuracy']:.6f}")
    return 0
