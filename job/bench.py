"""Training throughput: a seed-style loop against this project's training path, side by side.

    python -m job bench [--rows N] [--epochs E] [--device cpu|cuda] [--family lstm|cnn|mlp|all]
    make bench DEVICE=cuda

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
  ours, batch  the same path at 4x the batch with the learning rate x2 (square-root scaling for Adam):
               a larger batch is a fair lever only if the accuracy holds, so it is shown beside.

Printed per family: samples/s, seconds to finish the epochs, speed-up over the seed-style loop,
the 10-epoch time extrapolated to 6.1 M rows (the course's train + validation), peak memory, the
validation balanced accuracy after those epochs and its difference from the seed-style loop's,
and a verdict against the targets: >= 10x on a GPU (>= 2x on a CPU), accuracy not lower by more
than 0.005. Timings are wall clock on whatever else the machine is doing; repeat to see the noise.

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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from job import configs, train
from job.data import epoch_order, make_split
from job.errors import UserError
from job.models import build_model, builder_kwargs

VOCAB = 50_000  # words, with [PAD]=0 and [UNK]=1 (the course's keep_n)
EMBED_DIM = 300  # the course's SBW word2vec vectors
CLASSES = 632  # the course's Spanish subset
MEAN_LENGTH = 6  # titles hold Poisson(6)+1 tokens ...
MAX_LENGTH = 30  # ... capped at 30
LABEL_NOISE = 0.05  # share of labels swapped for a sibling's, so accuracy has a ceiling below 1
FULL_ROWS = 6_119_100  # the course's train + validation rows, for the extrapolated 10-epoch time
FULL_EPOCHS = 10  # the seed's epochs
BIG_BATCH = 4  # the larger-batch row: this many times the config's batch, learning rate x sqrt of it
DEFAULTS = {"cpu": (40_000, 5, 60), "cuda": (2_000_000, 3, CLASSES)}  # (training rows, epochs, classes) when not given;
# the CPU run uses 60 classes (the demo's) so that its few hundred steps learn enough to compare accuracy
VALIDATION_SHARE = 0.25  # validation rows per training row: large, so balanced accuracy is measured closely
FAMILY_CONFIG = {"lstm": "hidden100", "cnn": "cnn100", "mlp": "mlp256"}  # the named config each family runs
TARGET_SPEEDUP = {"cuda": 10.0, "cpu": 2.0}  # the targets
ACCURACY_TOLERANCE = 0.005  # ours may be lower than the seed-style loop by at most this much
SEED = 0


# --- data -------------------------------------------------------------------------------


def _zipf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def make_rows(rows: int, vocab: int = VOCAB, classes: int = CLASSES, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concatenated token ids int32, offsets int64 [rows+1], labels int64): prepare's array format."""
    own_words, dept_words, dept_size = 24, 40, 4
    rng = np.random.default_rng(seed)
    n_depts = (classes + dept_size - 1) // dept_size
    if vocab - 2 < classes * own_words + n_depts * dept_words:
        raise UserError(f"bench: vocab {vocab} is too small for {classes} classes")
    words = rng.permutation(np.arange(2, vocab))
    own = words[:classes * own_words].reshape(classes, own_words)
    dept = words[classes * own_words:classes * own_words + n_depts * dept_words].reshape(n_depts, dept_words)
    labels = rng.choice(classes, size=rows, p=_zipf(classes, 0.5)[rng.permutation(classes)])
    lengths = np.minimum(rng.poisson(MEAN_LENGTH, rows) + 1, MAX_LENGTH)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    c = np.repeat(labels, lengths)  # the class of each token's title
    u = rng.random(len(c))  # what each token is: own word (45%), a sibling's (10%), department (15%), background (30%)
    sibling = np.minimum((c // dept_size) * dept_size + rng.integers(0, dept_size, len(c)), classes - 1)
    source = np.where(u < 0.10, sibling, c)
    ids = own[source, rng.choice(own_words, size=len(c), p=_zipf(own_words, 1.0))]
    ids = np.where((u >= 0.55) & (u < 0.70), dept[c // dept_size, rng.choice(dept_words, size=len(c), p=_zipf(dept_words, 0.7))], ids)
    background = np.searchsorted(np.cumsum(_zipf(vocab - 2, 1.1)), rng.random(len(c)) * (1 - 1e-12)) + 2
    ids = np.where(u >= 0.70, background, ids).astype(np.int32)
    noisy = rng.random(rows) < LABEL_NOISE
    swapped = np.minimum((labels // dept_size) * dept_size + rng.integers(0, dept_size, rows), classes - 1)
    return ids, offsets, np.where(noisy, swapped, labels).astype(np.int64)


def word_vectors(vocab: int = VOCAB, dim: int = EMBED_DIM, seed: int = SEED) -> torch.Tensor:
    vectors = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((vocab, dim), dtype=np.float32) * 0.4)
    vectors[0] = 0  # [PAD]
    return vectors


# --- the seed-style loop ----------------------------------------------------------------


class SeedDataset(torch.utils.data.Dataset):
    """The seed's data: one dict per title, its token ids as a python list (as read from the jsonl)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        self.items = [{"data": ids[offsets[i]:offsets[i + 1]].tolist(), "target": int(labels[i])} for i in range(len(labels))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def seed_collate(items: list[dict]) -> dict:
    """Pad a batch to its longest title (at least 4 tokens, the CNN's widest filter), as the course's PadSequences."""
    data = [torch.LongTensor(item["data"][:MAX_LENGTH]) for item in items]
    lengths = torch.LongTensor([len(d) for d in data])
    padded = pad_sequence(data, batch_first=True, padding_value=0)
    if padded.shape[1] < 4:
        padded = F.pad(padded, (0, 4 - padded.shape[1]))
    return {"data": padded, "lengths": lengths, "target": torch.LongTensor([item["target"] for item in items])}


class SeedRNN(nn.Module):
    """The seed's MeLiRNNClassifier: frozen embedding -> dropout -> packed LSTM -> linear on the last hidden state.

    Its parameter names match job.models' LSTM, so both loops start from the same weights.
    """

    def __init__(self, vectors: torch.Tensor, hidden: int, num_classes: int, dropout: float, freeze: bool = True):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(vectors, freeze=freeze, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(vectors.shape[1], hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, data: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(data))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(h[-1])


class SeedCNN(nn.Module):
    """The course's CNN: convolutions of widths 2, 3, 4 -> ReLU -> max over every position, padding included.

    Its parameter names match job.models' CNN, so both loops start from the same weights.
    """

    def __init__(self, vectors: torch.Tensor, filters: int, widths: tuple[int, ...], fc: int, dropout: float, num_classes: int,
                 freeze: bool = True):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(vectors, freeze=freeze, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(vectors.shape[1], filters, w) for w in widths)
        self.fc = nn.Sequential(nn.Linear(filters * len(widths), fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, num_classes))

    def forward(self, data: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(data).transpose(1, 2)  # seed_collate pads to at least the widest filter
        return self.fc(torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1))


class SeedMLP(nn.Module):
    """The course's MLP: mean of the title's word vectors -> 256 -> 128 -> logits, ReLU and nn.Dropout between.

    Logits, not the seed's sigmoid (which capped it at 0.44), so its accuracy compares with ours.
    Its parameter names match job.models' MLP, so both loops start from the same weights.
    """

    def __init__(self, vectors: torch.Tensor, hidden: int, dropout: float, num_classes: int, freeze: bool = True):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(vectors, freeze=freeze, padding_idx=0)
        self.net = nn.Sequential(
            nn.Linear(vectors.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, data: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # [PAD]'s vector is zero, so a padded row's sum over its length is the mean of the title's words
        return self.net(self.embedding(data).sum(dim=1) / lengths.unsqueeze(1))


def seed_train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader, device: torch.device) -> tuple[float, int]:
    model.train()
    losses, seen = [], 0
    for batch in loader:
        data, target = batch["data"].to(device), batch["target"].to(device)
        optimizer.zero_grad()
        output = model(data, batch["lengths"])
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # the seed's running loss: a host sync every step
        seen += len(target)
    return float(np.mean(losses)), seen


@torch.no_grad()
def seed_evaluate(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    preds, targets = [], []
    for batch in loader:
        output = model(batch["data"].to(device), batch["lengths"])
        preds.append(output.argmax(dim=1).cpu().numpy())
        targets.append(batch["target"].numpy())
    model.train()
    return train.balanced_accuracy(np.concatenate(targets), np.concatenate(preds))


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
class Result:
    path: str  # what ran
    batch: int
    lr: float
    precision: str
    samples: int  # training samples over all epochs
    seconds: float  # wall time of the training epochs (evaluation excluded)
    eval_seconds: float  # wall time of one evaluation over the validation split
    peak_bytes: int
    balanced_accuracy: float
    train_loss: float  # the last epoch's mean

    @property
    def rate(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_seed(family: str, cfg: configs.TrainConfig, init: dict, data: dict, vectors: torch.Tensor, epochs: int,
             classes: int, device: torch.device) -> Result:
    torch.manual_seed(SEED)
    if family == "lstm":
        model = SeedRNN(vectors, cfg.hidden, classes, cfg.dropout, cfg.freeze_embeddings)
    elif family == "cnn":
        model = SeedCNN(vectors, cfg.filters, (2, 3, 4), cfg.fc, cfg.dropout, classes, cfg.freeze_embeddings)
    else:
        model = SeedMLP(vectors, cfg.mlp_hidden, cfg.dropout, classes, cfg.freeze_embeddings)
    model.load_state_dict(init)
    model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_set = SeedDataset(*data["train"])
    valid_loader = torch.utils.data.DataLoader(SeedDataset(*data["validation"]), batch_size=cfg.batch_size,
                                               shuffle=False, collate_fn=seed_collate)
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=seed_collate)
    samples, loss = 0, float("nan")
    with PeakMemory(device) as memory:
        _sync(device)
        started = time.time()
        for _ in range(epochs):
            loss, seen = seed_train_epoch(model, optimizer, loader, device)
            samples += seen
        _sync(device)
        seconds = time.time() - started
    started = time.time()
    bacc = seed_evaluate(model, valid_loader, device)
    eval_seconds = time.time() - started
    return Result("seed-style", cfg.batch_size, cfg.lr, "fp32", samples, seconds, eval_seconds, memory.peak, bacc, loss)


def run_ours(family: str, cfg: configs.TrainConfig, init: dict, splits: dict, vectors: torch.Tensor, epochs: int,
             classes: int, device: torch.device, label: str = "ours") -> Result:
    torch.manual_seed(SEED)
    model = build_model(family, VOCAB, EMBED_DIM, classes, vectors=vectors, **builder_kwargs(cfg))
    model.load_state_dict(init)
    model.to(device)
    optimizer = train.build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    split = splits["train"]
    samples, loss = 0, float("nan")
    with PeakMemory(device) as memory:
        _sync(device)
        started = time.time()
        for epoch in range(1, epochs + 1):
            rng = np.random.default_rng([cfg.seed, epoch])
            order, batches = epoch_order(split.lengths_host, cfg.batch_size, rng, train.batch_pieces(device, cfg.batch_size))
            loss, seen = train.train_epoch(model, optimizer, split, order, batches, device)
            samples += seen
        _sync(device)
        seconds = time.time() - started
    started = time.time()
    _, bacc = train.evaluate(model, splits["validation"], device)
    eval_seconds = time.time() - started
    precision = "bf16" if train.uses_bf16(device, model) else "fp32"
    return Result(label, cfg.batch_size, cfg.lr, precision, samples, seconds, eval_seconds, memory.peak, bacc, loss)


# --- the step ------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _clock(seconds: float) -> str:
    return f"{seconds:,.0f} s"


def table(results: list[Result]) -> str:
    seed = results[0]
    header = ("path", "batch", "lr", "prec", "samples/s", "train time", "speed-up", "10 ep x 6.1M", "peak mem",
              "eval time", "val bal acc", "vs seed")
    rows = [header]
    for r in results:
        rows.append((r.path, str(r.batch), f"{r.lr:g}", r.precision, f"{r.rate:,.0f}", f"{r.seconds:.1f} s",
                     f"{seed.seconds / max(r.seconds, 1e-9):.2f}x", _clock(FULL_EPOCHS * FULL_ROWS / r.rate),
                     _mb(r.peak_bytes), f"{r.eval_seconds:.1f} s", f"{r.balanced_accuracy:.4f}",
                     "" if r is seed else f"{r.balanced_accuracy - seed.balanced_accuracy:+.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(results: list[Result], device: torch.device) -> list[str]:
    seed, target = results[0], TARGET_SPEEDUP[device.type]
    out = []
    for r in results[1:]:
        speedup = seed.seconds / max(r.seconds, 1e-9)
        delta = r.balanced_accuracy - seed.balanced_accuracy
        fast, accurate = speedup >= target, delta >= -ACCURACY_TOLERANCE
        out.append(f"{r.path}: speed-up {speedup:.2f}x (target >= {target:g}x on {device.type}) {'PASS' if fast else 'FAIL'}; "
                   f"accuracy {delta:+.4f} (target >= -{ACCURACY_TOLERANCE}) {'PASS' if accurate else 'FAIL'}; "
                   f"overall {'PASS' if fast and accurate else 'FAIL'}")
    return out


def bench_family(family: str, data: dict, vectors: torch.Tensor, epochs: int, classes: int, device: torch.device) -> list[Result]:
    cfg = dataclasses.replace(configs.NAMED[FAMILY_CONFIG[family]], epochs=epochs, seed=SEED)
    torch.manual_seed(SEED)
    init = build_model(family, VOCAB, EMBED_DIM, classes, vectors=vectors, **builder_kwargs(cfg)).state_dict()
    splits = {name: make_split(*arrays, cfg.max_len, device) for name, arrays in data.items()}
    results = [run_seed(family, cfg, init, data, vectors, epochs, classes, device),
               run_ours(family, cfg, init, splits, vectors, epochs, classes, device, "ours")]
    big = dataclasses.replace(cfg, batch_size=cfg.batch_size * BIG_BATCH, lr=cfg.lr * BIG_BATCH ** 0.5)
    results.append(run_ours(family, big, init, splits, vectors, epochs, classes, device, f"ours, batch x{BIG_BATCH}"))
    del splits
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def main(args) -> None:
    device = train.pick_device(args.device)
    default_rows, default_epochs, default_classes = DEFAULTS[device.type]
    rows = args.rows if args.rows is not None else default_rows
    epochs = args.epochs if args.epochs is not None else default_epochs
    classes = getattr(args, "classes", None) or default_classes
    if rows < 100:
        raise UserError(f"--rows {rows}: use at least 100")
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: use at least 1")
    families = list(FAMILY_CONFIG) if args.family == "all" else [args.family]
    valid_rows = max(50, int(rows * VALIDATION_SHARE))

    started = time.time()
    if not 2 <= classes <= CLASSES:
        raise UserError(f"--classes {classes}: use 2 to {CLASSES}")
    ids, offsets, labels = make_rows(rows + valid_rows, classes=classes)
    data = {"train": (ids[:offsets[rows]], offsets[:rows + 1], labels[:rows]),
            "validation": (ids[offsets[rows]:], offsets[rows:] - offsets[rows], labels[rows:])}
    vectors = word_vectors()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads"
    if hasattr(os, "getloadavg"):  # other work on the machine slows the many small ops of the seed-style loop most
        where += f", load average {os.getloadavg()[0]:.1f}"
    print(f"bench: {rows:,} training and {valid_rows:,} validation rows (vocab {VOCAB:,}, dim {EMBED_DIM}, {classes} classes, "
          f"Poisson({MEAN_LENGTH})+1 tokens capped at {MAX_LENGTH}, {np.diff(offsets).mean():.2f} on average), "
          f"{epochs} epoch(s), {device.type} ({where}), torch {torch.__version__}; data made in {time.time() - started:.1f} s",
          flush=True)
    for family in families:
        cfg_name = FAMILY_CONFIG[family]
        print(f"\n{family} ({cfg_name}): training the seed-style loop, then ours ...", flush=True)
        results = bench_family(family, data, vectors, epochs, classes, device)
        print(table(results))
        for line in verdicts(results, device):
            print(line)
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}", end="; ")
    print(f"process peak RSS {_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}; total {time.time() - started:.0f} s")
