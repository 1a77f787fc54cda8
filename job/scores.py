"""How a run is scored: balanced accuracy, and the score that chooses its best epoch.

Shared by both trainers (job/train.py, job/baseline.py), search's promotions (job/search.py) and the
benches, so an epoch is chosen the same way everywhere. Imports no torch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predictions of classes absent from this split are fine
        return float(balanced_accuracy_score(labels, preds))


def selection_score(select_by: str, val_loss: float, val_bacc: float) -> float:
    """Higher is better. An epoch whose validation loss is not finite is never chosen: its weights diverged."""
    if not math.isfinite(val_loss):
        return -math.inf
    return val_bacc if select_by == "balanced_accuracy" else -val_loss
