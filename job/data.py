"""Prepared splits as padded tensors on the training device, and length-bucketed batches.

Why it is fast: titles are tokenized once by prepare, so an epoch is index arithmetic on one
[rows, max_len] tensor that lives on the GPU. Batches are bucketed by length (sort within large
random chunks, then shuffle the batches), so a batch is cut to its own longest title and the
LSTM runs without packing. Batch indices are built on the host once per epoch and copied in
one transfer; the loop itself never waits on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BUCKET_CHUNK = 64  # batches per sorted chunk: large enough to bucket well, small enough to stay random


@dataclass
class Split:
    tokens: torch.Tensor  # int32 [rows, max_len] on the device, right-padded with 0
    lengths: torch.Tensor  # int64 [rows] on the device
    labels: torch.Tensor  # int64 [rows] on the device
    lengths_host: np.ndarray  # the same lengths on the host, to plan batches without a device sync
    labels_host: np.ndarray  # class ids on the host, for sklearn's metrics

    def __len__(self) -> int:
        return len(self.labels_host)


def padded(ids: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ids + offsets -> ([rows, width] int32 right-padded, lengths), cut at max_len."""
    lengths = np.minimum(np.diff(offsets), max_len).astype(np.int64)
    width = max(int(lengths.max(initial=1)), 1)
    out = np.zeros((len(lengths), width), dtype=np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(offsets[:-1], lengths)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = ids[starts + cols]
    return out, np.maximum(lengths, 1)


def make_split(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray, max_len: int, device: torch.device,
               limit: int = 0, seed: int = 0) -> Split:
    if limit and limit < len(labels):
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), size=limit, replace=False))
        starts, ends = offsets[keep], offsets[keep + 1]
        lens = ends - starts
        new_offsets = np.zeros(len(keep) + 1, dtype=np.int64)
        np.cumsum(lens, out=new_offsets[1:])
        ids = np.concatenate([ids[s:e] for s, e in zip(starts, ends)]) if len(keep) else ids[:0]
        offsets, labels = new_offsets, np.asarray(labels)[keep]
    tokens, lengths = padded(np.asarray(ids), np.asarray(offsets), max_len)
    labels = np.asarray(labels, dtype=np.int64)
    return Split(
        tokens=torch.from_numpy(tokens).to(device),
        lengths=torch.from_numpy(lengths).to(device),
        labels=torch.from_numpy(labels).to(device),
        lengths_host=lengths,
        labels_host=labels,
    )


def epoch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A row order and its batches (start, end, width).

    Training (rng given): shuffle, sort by length within chunks of BUCKET_CHUNK batches, then
    shuffle the batches. Evaluation (rng None): sort everything by length.
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(n)
        chunk = batch_size * BUCKET_CHUNK
        for start in range(0, n, chunk):
            part = order[start:start + chunk]
            order[start:start + chunk] = part[np.argsort(lengths[part], kind="stable")]
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if rng is not None:
        bounds = [bounds[i] for i in rng.permutation(len(bounds))]
    sorted_lengths = lengths[order]
    batches = [(s, e, int(sorted_lengths[s:e].max())) for s, e in bounds]
    return order, batches
