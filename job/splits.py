"""Prepare's second phase: each tokenized title's split and class id.

    rows = assign_splits(corpus, seed, data)   # Rows: split and label per title, class names, what was dropped

The input's splits are kept; otherwise train/validation/test are drawn SPLIT_SHARES per category,
seeded. Titles equal after cleaning go to one split (their first copy's), so no title is both
trained on and tested. Class ids follow the order in which categories first appear in a kept row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.corpus import SPOOL_BLOCK_ROWS, Corpus, reasons
from job.errors import UserError

SPLIT_SHARES = (0.8, 0.1, 0.1)  # used when the input has no splits of its own
KEY_BUCKETS = 64  # duplicates are grouped a bucket of keys at a time: a sort's scratch memory is 1/64 of the titles'


@dataclass
class Rows:
    """Per tokenized title: its split and class id (-1: dropped); the class names and what was dropped."""

    split: np.ndarray  # int8: index into SPLITS, -1 when the title is dropped (unknown split)
    label: np.ndarray  # int32: class id, -1 when dropped (unknown split, or a category not in the training split)
    label_names: list
    dropped: dict  # reason -> rows, in the order each reason first happened in the input
    small_classes: int  # classes with too few rows to split (all kept in train)
    duplicates: dict  # titles equal after cleaning: how many, and how their splits were kept together


def stratified_split(category: np.ndarray, names: list[str], seed: int) -> tuple[np.ndarray, int]:
    """80/10/10 per category (category: index into names, per row), seeded; classes with under 3 rows stay in train."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(category), dtype=np.int8)
    counts = np.bincount(category, minlength=len(names))
    by_class = np.argsort(category, kind="stable")  # the rows grouped by class, each class's in input order
    starts = np.cumsum(counts) - counts
    small = 0
    for c in sorted(range(len(names)), key=names.__getitem__):  # classes in the order of their names
        if counts[c] == 0:
            continue
        rows = by_class[starts[c]:starts[c] + counts[c]]
        if len(rows) < 3:
            small += 1
            continue
        rows = rows[rng.permutation(len(rows))]
        n_val = max(1, round(SPLIT_SHARES[1] * len(rows)))
        n_test = max(1, round(SPLIT_SHARES[2] * len(rows)))
        split[rows[:n_val]] = 1
        split[rows[n_val:n_val + n_test]] = 2
    return split, small


def title_keys(corpus: Corpus) -> np.ndarray:
    """A key per tokenized title from its cleaned tokens: titles equal after cleaning share it.

    Python's hash of the ids' bytes: equal titles get equal keys within this run, which is all the
    grouping needs (each group takes its first title's split, whatever the keys' values)."""
    keys = np.empty(len(corpus.lengths), dtype=np.int64)
    for start, stop, ids in corpus.blocks():
        data = memoryview(ids.tobytes())
        begin = 0
        for i, end in enumerate((np.cumsum(corpus.lengths[start:stop], dtype=np.int64) * 4).tolist()):  # int32: 4 bytes
            keys[start + i] = hash(data[begin:end].tobytes())
            begin = end
    return keys


def keep_duplicates_together(split: np.ndarray, keys: np.ndarray, splits_given: bool) -> tuple[np.ndarray, dict]:
    """Drawn splits: every copy of a title goes to its first copy's split, so no title is both trained on
    and tested. Given splits are kept as they are; copies across them are counted."""
    together = split.copy()
    bucket = np.empty(len(keys), dtype=np.uint8)
    for start in range(0, len(keys), SPOOL_BLOCK_ROWS):  # the low bits of the keys, without a copy of them all
        bucket[start:start + SPOOL_BLOCK_ROWS] = keys[start:start + SPOOL_BLOCK_ROWS] & (KEY_BUCKETS - 1)
    stats = {"titles": int(len(keys)), "distinct": 0, "extra_copies": 0, "repeated_titles": 0, "moved_groups": 0}
    for b in range(KEY_BUCKETS):
        rows = np.flatnonzero(bucket == b)  # input order, so a group's first index is its first copy
        _, first, inverse, counts = np.unique(keys[rows], return_index=True, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        first_split = split[rows[first]][inverse]
        spread = np.zeros(len(first), dtype=bool)
        np.logical_or.at(spread, inverse, first_split != split[rows])  # groups whose copies sat in 2+ splits
        together[rows] = first_split
        stats["distinct"] += int(len(first))
        stats["repeated_titles"] += int((counts > 1).sum())
        stats["moved_groups"] += int(spread.sum())
    stats["extra_copies"] = stats["titles"] - stats["distinct"]
    stats["across_given_splits" if splits_given else "kept_together"] = stats.pop("moved_groups")
    return (split if splits_given else together), stats


def _dropped_before_labels(corpus: Corpus, unknown_split: int) -> dict:
    """Rows dropped so far by reason; the later reasons in the order they first happened in the input."""
    dropped = dict(corpus.dropped)
    later = []
    if corpus.no_tokens:
        later.append((corpus.first_no_tokens, "no tokens after cleaning", corpus.no_tokens))
    if unknown_split:
        later.append((corpus.first_bad_split, "unknown split value", unknown_split))
    for _, reason, n in sorted(later):
        dropped[reason] = n
    return dropped


def assign_splits(corpus: Corpus, seed: int, data: str) -> Rows:
    """Each tokenized title's split and class id; class ids follow the categories' first appearance.

    Arrays over all titles are only the results (1 byte a title for the split, 4 for the class id) and the
    keys of the duplicate search (8, dropped at its end); the rest is computed a block of titles at a time."""
    n, names = len(corpus.lengths), list(corpus.categories)
    blocks = [(start, min(start + SPOOL_BLOCK_ROWS, n)) for start in range(0, n, SPOOL_BLOCK_ROWS)]
    unknown = sum(int((corpus.split[a:b] < 0).sum()) for a, b in blocks) if corpus.splits_given else 0
    dropped = _dropped_before_labels(corpus, unknown)
    if unknown == n:
        raise UserError(f"{data}: no usable rows ({corpus.rows_read} read; dropped: {reasons(dropped)})")
    small = 0
    if corpus.splits_given:
        split = corpus.split.copy()  # -1: unknown, dropped
    else:
        split, small = stratified_split(corpus.category, names, seed)
    keys = title_keys(corpus)
    split, duplicates = keep_duplicates_together(split, keys, corpus.splits_given)
    del keys  # 8 bytes a title: gone before the vocabulary phase
    in_train = np.zeros(len(names), dtype=bool)
    first = np.full(len(names), n, dtype=np.int64)  # each category's first kept row
    for a, b in blocks:
        kept = split[a:b] >= 0 if corpus.splits_given else slice(None)
        category = corpus.category[a:b][kept]
        in_train[category[split[a:b][kept] == 0]] = True
        seen, at = np.unique(category, return_index=True)
        first[seen] = np.minimum(first[seen], np.arange(a, b)[kept][at])
    order = np.argsort(first, kind="stable")[:int((first < n).sum())]  # by first kept row (the course's rule)
    label_order = order[in_train[order]]
    if len(label_order) < 2:
        raise UserError(f"{data}: needs at least 2 categories in the training split, found {len(label_order)}")
    label_of = np.full(len(names) + 1, -1, dtype=np.int32)  # the last: a dropped row's
    label_of[label_order] = np.arange(len(label_order), dtype=np.int32)
    label = np.empty(n, dtype=np.int32)
    for a, b in blocks:
        label[a:b] = label_of[np.where(split[a:b] >= 0, corpus.category[a:b], len(names))]
    dropped["category not in training split"] = int(((split >= 0) & (label < 0)).sum())
    return Rows(split, label, [names[c] for c in label_order], dropped, small, duplicates)
