"""The bench's reference: the seed-style training loop and the synthetic data both loops train on.

`job.bench` times these against job.train's own path. Nothing here runs in a pod: it is what the
seed and the course did, kept as the baseline the speed-up is measured from (see job/bench.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from job import scores
from job.errors import UserError
from job.synth import zipf

VOCAB = 50_000  # words, with [PAD]=0 and [UNK]=1 (the course's keep_n)
EMBED_DIM = 300  # the course's SBW word2vec vectors
CLASSES = 632  # the course's Spanish subset
MEAN_LENGTH = 6  # titles hold Poisson(6)+1 tokens ...
MAX_LENGTH = 30  # ... capped at 30
LABEL_NOISE = 0.05  # share of labels swapped for a sibling's, so accuracy has a ceiling below 1
DATA_SEED = 0  # the synthetic data and word vectors; training seeds are 0 .. seeds-1


# --- data -------------------------------------------------------------------------------


def make_rows(rows: int, vocab: int = VOCAB, classes: int = CLASSES, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concatenated token ids int32, offsets int64 [rows+1], labels int64): prepare's array format."""
    own_words, dept_words, dept_size = 24, 40, 4
    rng = np.random.default_rng(seed)
    n_depts = (classes + dept_size - 1) // dept_size
    if vocab - 2 < classes * own_words + n_depts * dept_words:
        raise UserError(f"bench: vocab {vocab} is too small for {classes} classes")
    words = rng.permutation(np.arange(2, vocab))
    own = words[:classes * own_words].reshape(classes, own_words)
    dept = words[classes * own_words:classes * own_words + n_depts * dept_words].reshape(n_depts, dept_words)
    labels = rng.choice(classes, size=rows, p=zipf(classes, 0.5)[rng.permutation(classes)])
    lengths = np.minimum(rng.poisson(MEAN_LENGTH, rows) + 1, MAX_LENGTH)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    c = np.repeat(labels, lengths)  # the class of each token's title
    u = rng.random(len(c))  # what each token is: own word (45%), a sibling's (10%), department (15%), background (30%)
    sibling = np.minimum((c // dept_size) * dept_size + rng.integers(0, dept_size, len(c)), classes - 1)
    source = np.where(u < 0.10, sibling, c)
    ids = own[source, rng.choice(own_words, size=len(c), p=zipf(own_words, 1.0))]
    ids = np.where((u >= 0.55) & (u < 0.70), dept[c // dept_size, rng.choice(dept_words, size=len(c), p=zipf(dept_words, 0.7))], ids)
    background = np.searchsorted(np.cumsum(zipf(vocab - 2, 1.1)), rng.random(len(c)) * (1 - 1e-12)) + 2
    ids = np.where(u >= 0.70, background, ids).astype(np.int32)
    noisy = rng.random(rows) < LABEL_NOISE
    swapped = np.minimum((labels // dept_size) * dept_size + rng.integers(0, dept_size, rows), classes - 1)
    return ids, offsets, np.where(noisy, swapped, labels).astype(np.int64)


def word_vectors(vocab: int = VOCAB, dim: int = EMBED_DIM, seed: int = DATA_SEED) -> torch.Tensor:
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
        return self.net(self.embedding(data).sum(dim=1) / lengths.to(data.device).unsqueeze(1))  # the loader's are on the host


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
    return scores.balanced_accuracy(np.concatenate(targets), np.concatenate(preds))
