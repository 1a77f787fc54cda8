"""A run folder's files: the one place that writes them, and the one place that reads them back.

    OUT/sweeps/<sweep>/<run>/      run_uri
      metrics.jsonl          the history: one JSON line per finished epoch (history_row, write_history, read_history)
      checkpoint.pt          model.pt's dict plus what resuming needs (job/train.py writes it through save_torch)
      model.pt               the kept weights with everything needed to use them (model_file, save_model, load_model)
      test_predictions.npz   the test split's true and predicted class ids, for the report's per-class view
                             (write_predictions, read_predictions)
      summary.json           written last: ok, failed, or running again (ok_summary, failed_summary, finished)

Both trainers write through here: the neural loop (job/train.py) and the tfidf baseline (job/baseline.py);
predict, search, aggregate and tracking read through here. Nothing here imports torch at import time:
the aggregate step's image and the workflow tooling read run folders without it.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np

from job import configs, storage
from job.errors import UserError

log = logging.getLogger("job.runfiles")

MODEL_FORMAT = 2  # bump when the dict of model.pt (and checkpoint.pt, which extends it) changes shape
HISTORY, MODEL, PREDICTIONS, SUMMARY = "metrics.jsonl", "model.pt", "test_predictions.npz", "summary.json"


def sweep_uri(out: str, sweep: str) -> str:
    return f"{out.rstrip('/')}/sweeps/{sweep}"


def run_uri(out: str, sweep: str, run: str) -> str:
    """A run's folder."""
    return f"{sweep_uri(out, sweep)}/{run}"


# --- the history ---------------------------------------------------------------------


def history_row(epoch: int, train_loss: float, validation_loss: float, validation_bacc: float, seconds: float,
                samples: int) -> dict:
    """One epoch of metrics.jsonl: its losses, validation balanced accuracy and speed."""
    return {"epoch": epoch, "train_loss": round(train_loss, 6), "validation_loss": round(validation_loss, 6),
            "validation_balanced_accuracy": round(validation_bacc, 6), "seconds": round(seconds, 3),
            "samples_per_second": round(samples / max(seconds, 1e-9), 1)}


def write_history(out: str, history: list[dict]) -> None:
    """metrics.jsonl is rewritten whole from the checkpoint's history, so each epoch appears exactly once."""
    storage.write_text(storage.join(out, HISTORY), "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def read_history(out: str) -> list[dict]:
    """The epochs of a run folder's metrics.jsonl (empty when it has none); a torn line ends it, the epochs before stand."""
    uri = storage.join(out, HISTORY)
    if not storage.exists(uri):
        return []
    history = []
    for line in storage.read_text(uri).splitlines():
        if not line.strip():
            continue
        try:
            history.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: a malformed line after epoch %d; the epochs after it are not read", uri, len(history))
            break
    return history


# --- the model file --------------------------------------------------------------------


def save_torch(uri: str, obj: dict) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def load_torch(uri: str) -> dict | None:
    import torch

    if not storage.exists(uri):
        return None
    try:
        return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: say which one, never unpickle arbitrary objects
        raise UserError(f"{uri}: cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def save_model(out: str, saved: dict) -> None:
    """model.pt of a run folder (model_file's dict)."""
    save_torch(storage.join(out, MODEL), saved)


def model_meta(prepared, max_len: int) -> dict:
    """What model.pt needs beside the weights to be used on its own by `predict`: the vocabulary and stopword
    language tokenize a title exactly as prepare did, and the label names turn class ids back into categories."""
    return {"vocab_size": prepared.vocab_size, "classes": prepared.classes, "label_names": prepared.label_names,
            "vocab": prepared.vocab, "language": prepared.language, "max_len": max_len}


def model_file(run: configs.Run, epoch: int, prepared_uri: str, meta: dict, weights: dict) -> dict:
    """What model.pt holds (a plain dict): the config, the epoch, the data it came from, model_meta and the
    weights (a neural run's {"model": state_dict}; the baseline's n-gram terms and linear coefficients)."""
    return {"format": MODEL_FORMAT, "config": run.config.to_dict(), "spec": run.spec, "epoch": epoch,
            "prepared": prepared_uri, **meta, **weights}


def load_model(folder: str) -> dict:
    """model.pt of a finished run (its summary says ok), in this version's format."""
    summary = read_summary(folder)
    status = summary.get("status") if summary else None
    model_uri = storage.join(folder, MODEL)
    saved = load_torch(model_uri) if status == "ok" else None
    if saved is None:
        why = f"the run ended {status}" if status else f"no {SUMMARY}"
        raise UserError(f"{folder}: not a finished run ({why}); predict needs a run whose training finished")
    if saved.get("format") != MODEL_FORMAT or "vocab" not in saved:
        raise UserError(f"{model_uri}: model format {saved.get('format')} carries no vocabulary; retrain with this version")
    return saved


# --- predictions and the summary --------------------------------------------------------


def write_predictions(out: str, labels: np.ndarray, preds: np.ndarray) -> None:
    """The test split's true and predicted class ids: the report's per-class view reads them."""
    buf = io.BytesIO()
    np.savez_compressed(buf, labels=labels.astype(np.int32), predictions=preds.astype(np.int32))
    storage.write_bytes(storage.join(out, PREDICTIONS), buf.getvalue())


def read_predictions(out: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(true, predicted) class ids of the test split, None when the run left none."""
    uri = storage.join(out, PREDICTIONS)
    if not storage.exists(uri):
        return None
    with np.load(io.BytesIO(storage.read_bytes(uri))) as z:
        return z["labels"], z["predictions"]


def ok_summary(out: str, run: configs.Run, history: list[dict], best_epoch: int, test_loss: float, test_bacc: float,
               train_seconds: float, samples: int, budget: int, device: str, parameters: int, prepared_uri: str) -> dict:
    """summary.json of a finished run, written last: the best epoch's validation and test figures, timings.
    samples: training rows seen over every epoch; budget: the epoch it was to reach (it stopped early before)."""
    best = next(h for h in history if h["epoch"] == best_epoch)
    summary = {
        "config": run.name, "spec": run.spec, "status": "ok", "family": run.config.family,
        "epochs": len(history), "best_epoch": best_epoch, "selected_by": f"validation {run.config.select_by}",
        "validation_balanced_accuracy": best["validation_balanced_accuracy"],
        "test_loss": round(test_loss, 6), "test_balanced_accuracy": round(test_bacc, 6),
        "train_seconds": round(train_seconds, 2), "samples_per_second": round(samples / max(train_seconds, 1e-9), 1),
        "budget": budget, "stopped_early": len(history) < budget, "device": device, "parameters": parameters,
        "prepared": prepared_uri, "config_values": run.config.to_dict(),
    }
    storage.write_json(storage.join(out, SUMMARY), summary)
    return summary


def failed_summary(out: str, run: configs.Run, reason: str, history: list[dict], budget: int) -> None:
    """budget: the epoch the run was to reach; the epochs before it that history holds still stand."""
    storage.write_json(storage.join(out, SUMMARY), {
        "config": run.name, "spec": run.spec, "status": "failed", "reason": reason, "epochs": len(history),
        "budget": budget,
    })


def mark_continuing(out: str, run: configs.Run, epochs: int, budget: int) -> None:
    """A finished run given a larger budget: its summary.json no longer describes model.pt once training goes
    on, so it is replaced at once by one that says the run is running (the finished summary comes last)."""
    summary = read_summary(out)
    if summary and summary.get("status") == "ok":
        storage.write_json(storage.join(out, SUMMARY), {"config": run.name, "spec": run.spec, "status": "running",
                                                        "epochs": epochs, "reason": f"going on from epoch {epochs} to {budget}"})


def read_summary(out: str) -> dict | None:
    """summary.json of a run folder, None when it has none."""
    uri = storage.join(out, SUMMARY)
    return storage.read_json(uri) if storage.exists(uri) else None


def same_run(config_values: dict | None, config: configs.TrainConfig) -> bool:
    """Whether saved config values are this config's, the epochs aside: the budget is not the run's identity."""
    return isinstance(config_values, dict) and {**config_values, "epochs": None} == {**config.to_dict(), "epochs": None}


def finished(out: str, run: configs.Run, budget: int) -> dict | None:
    """The summary of an earlier attempt that finished this same run to `budget` epochs or more (or stopped
    early, as it would again), if there is one."""
    done = read_summary(out)
    # the config's values, not only its name: a named config may have changed since
    if done and done.get("status") == "ok" and done.get("spec") == run.spec and same_run(done.get("config_values"), run.config):
        trained_to = done.get("budget", done["config_values"]["epochs"])  # a summary from before budgets
        if trained_to >= budget or done.get("stopped_early"):
            return done
    return None
