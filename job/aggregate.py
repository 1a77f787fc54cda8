"""Join the runs of a sweep into one report: plots and a ranked summary.

    python -m job aggregate --out runs --sweep demo --configs hidden50,hidden100

Reads every run folder under <out>/sweeps/<sweep>/ (and every run the --configs specs name, so a run
that never started is reported as missing) and writes <out>/sweeps/<sweep>/report/ (steps.REPORT_FILES):
  train_loss.png, validation_loss.png, balanced_accuracy.png   per epoch, one line per run
  comparison.png                                               test balanced accuracy per run
  summary.csv, summary.md, summary.json                        one row per run, ranked, best marked
  per_class.csv, recall_by_class_size.png                      the best run's test split, per category
  search.png                                                   sampled values against validation balanced accuracy
With search flags (job/search.py), each run's row says its round, the last rung it reached and that
rung's epochs, and summary.md and summary.json add the search (job/search_report.py).
A failed, unfinished or missing run keeps its row, with its status and reason. Runs are ranked, and
the best chosen, by validation balanced accuracy; test figures are shown beside, never used to
choose. The best run's model and summary are copied to <sweep>/best/, ready for `predict`.
summary.json is written last. With MLFLOW_TRACKING_URI set, the report files are also logged to the
sweep's MLflow run (job/tracking.py). The step succeeds whenever the report could be written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from job import plots, runfiles, search, search_report, steps, storage, tracking
from job.errors import UserError

log = logging.getLogger("job.aggregate")

COLUMNS = ["rank", "config", "status", "family", "round", "rung", "budget", "epochs", "best_epoch", "validation_balanced_accuracy", "test_loss",
           "test_balanced_accuracy", "train_seconds", "samples_per_second", "reason", "spec"]
REPORT = "report"
BEST = "best"  # <sweep>/best/: the best run's files, for predict
BEST_FILES = (runfiles.MODEL, runfiles.SUMMARY, runfiles.HISTORY)  # the summary is copied after the model: a complete copy
CHOSEN_BY = ("Runs are ranked, and the best (★) chosen, by validation balanced accuracy (each run at its best "
             "validation epoch); test figures are shown beside, never used to choose.")
WEAKEST = 10  # categories listed as the weakest, and confused pairs listed, in summary.md


def read_run(sweep: str, name: str) -> tuple[dict, list[dict]]:
    """(summary row, epoch history) of one run folder, whatever state it was left in."""
    folder = storage.join(sweep, name)
    history = runfiles.read_history(folder)
    row = runfiles.read_summary(folder)
    if row is not None:
        row.setdefault("status", "unknown")
    elif history:
        row = {"config": name, "status": "incomplete", "epochs": len(history),
               "reason": f"no summary.json: stopped after epoch {history[-1].get('epoch')} (still running, or killed)"}
    else:
        row = {"config": name, "status": "missing", "epochs": 0, "reason": "no output: the run never started or failed before its first epoch"}
    row["config"] = name
    return row, history


def rank(rows: list[dict]) -> list[dict]:
    """Finished runs by validation balanced accuracy, best first (the test split never chooses)."""
    ok = sorted((r for r in rows if r.get("status") == "ok"),
                key=lambda r: (-float(r.get("validation_balanced_accuracy", 0)), r["config"]))
    rest = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: r["config"])
    for i, r in enumerate(ok, 1):
        r["rank"] = i
        r["best"] = i == 1
    for r in rest:
        r["rank"] = ""
        r["best"] = False
    return ok + rest


def per_class(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each category on the test split."""
    from sklearn.metrics import precision_recall_fscore_support

    ids = np.arange(len(names))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    return [{"category": names[i], "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
             "f1": round(float(f1[i]), 4), "support": int(support[i])} for i in ids]


def confused_pairs(labels: np.ndarray, preds: np.ndarray, names: list[str], top: int) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted) category pairs among the errors."""
    wrong = labels != preds
    pairs, counts = np.unique(np.stack([labels[wrong], preds[wrong]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:top] if len(counts) else []
    return [(names[pairs[i, 0]], names[pairs[i, 1]], int(counts[i])) for i in order]


def best_run_view(sweep: str, best: dict | None) -> dict:
    """The best run's per-class table, weakest categories and confused pairs (empty without a best run)."""
    if best is None:
        return {}
    folder = storage.join(sweep, best["config"])
    predictions = runfiles.read_predictions(folder)
    if predictions is None:
        log.warning("%s: missing, so the report has no per-class view", storage.join(folder, runfiles.PREDICTIONS))
        return {}
    labels, preds = predictions
    names = label_names(best)
    classes = per_class(labels, preds, names)
    weakest = sorted((c for c in classes if c["support"]), key=lambda c: (c["f1"], c["category"]))[:WEAKEST]
    return {"run": best["config"], "classes": classes, "weakest": weakest,
            "confused": confused_pairs(labels, preds, names, WEAKEST)}


def label_names(best: dict) -> list[str]:
    """The category names (class id -> name) of the data the best run trained on: prepare's labels.json, which the
    run's model.pt copies. Read as JSON: the aggregate step's image has no torch (images/Dockerfile.cpu)."""
    return json.loads(storage.read_text(storage.join(best["prepared"], "labels.json")))


def copy_best(sweep: str, best: dict | None) -> None:
    """<sweep>/best/ holds the best run's model, so `predict --run <sweep>/best` needs no run name."""
    if best is None:
        return
    for name in BEST_FILES:
        source = storage.join(sweep, best["config"], name)
        if storage.exists(source):
            storage.write_bytes(storage.join(sweep, BEST, name), storage.read_bytes(source))


def to_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(sweep: str, rows: list[dict], view: dict, search_lines: list[str] | None = None) -> str:
    """search_lines: the search's section; with it, each row shows its round, rung and budget too."""
    def cell(r, key, fmt="{}"):
        value = r.get(key)
        return "" if value in (None, "") else fmt.format(value)

    searched = bool(search_lines)
    lines = [f"# Sweep report: {sweep.rstrip('/').rsplit('/', 1)[-1]}", "",
             f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} runs finished. {CHOSEN_BY}", "",
             "| rank | config | status | " + ("round | rung | budget | " if searched else "") + "epochs | best epoch "
             "| validation balanced accuracy | test balanced accuracy | test loss | train s | samples/s | reason |",
             "|---|---|---|" + ("---|---|---|" if searched else "") + "---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["rank"]), ("★ " if r.get("best") else "") + r["config"], r["status"]]
            + ([cell(r, "round"), cell(r, "rung"), cell(r, "budget")] if searched else []) + [cell(r, "epochs"),
            cell(r, "best_epoch"), cell(r, "validation_balanced_accuracy", "{:.4f}"),
            cell(r, "test_balanced_accuracy", "{:.4f}"), cell(r, "test_loss", "{:.4f}"),
            cell(r, "train_seconds", "{:.1f}"), cell(r, "samples_per_second", "{:,.0f}"),
            str(r.get("reason", "")).replace("|", "/")]) + " |")
    lines += ["", "Plots: train_loss.png, validation_loss.png, balanced_accuracy.png, comparison.png", ""]
    lines += search_lines or []
    if view:
        lines += [f"## The best run on the test split: {view['run']}", "",
                  "Per category: per_class.csv; recall against category size: recall_by_class_size.png.", "",
                  f"The {len(view['weakest'])} weakest categories (by F1):", "",
                  "| category | precision | recall | F1 | test rows |", "|---|---|---|---|---|"]
        lines += [f"| {c['category']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
                  for c in view["weakest"]]
        lines += ["", f"The {len(view['confused'])} most confused pairs:", "",
                  "| true category | predicted as | test rows |", "|---|---|---|"]
        lines += [f"| {t} | {p} | {n} |" for t, p, n in view["confused"]] + [""]
    return "\n".join(lines)


def main(args) -> int:
    storage.check_uri(args.out, "--out")
    storage.join(args.out, args.sweep)  # refuses a sweep id that is not a plain name
    sweep = runfiles.sweep_uri(args.out, args.sweep)
    if args.baseline not in ("true", "false"):
        raise UserError(f"--baseline {args.baseline!r}: expected true or false")
    schedule, runs = None, {}
    if args.configs.strip():  # the runs next listed, round by round and rung by rung, from the same run folders
        schedule = search.Schedule(search.parse(args.configs, args.baseline == "true", search.from_args(args)),
                                   args.out, args.sweep)
        runs = search_report.describe(schedule)
    expected = search_report.expected(runs, schedule.sweep) if schedule else []
    found = [n for n in storage.list_dirs(sweep) if n not in (REPORT, BEST)]
    names = list(dict.fromkeys(expected + found))
    if not names:
        raise UserError(f"{sweep}: no runs found and no --configs given")
    rows, histories = [], {}
    for name in names:
        row, history = read_run(sweep, name)
        rows.append(row)
        histories[name] = history
    search_report.columns(rows, runs)
    rows = rank(rows)
    best = next((r for r in rows if r.get("best")), None)
    view = best_run_view(sweep, best)
    searched = schedule is not None and (schedule.sweep.spaces or schedule.shape.rungs > 1)
    record, search_lines = None, None
    if searched:
        record = search_report.settings_record(schedule)
        spent, full = search_report.epochs_spent(runs, histories)
        importances = search_report.importance(schedule, runs) if schedule.sweep.spaces else {}
        record.update(epochs_spent=spent, epochs_full=full, importance=importances)
        search_lines = search_report.markdown(record, spent, full, importances)

    files = {
        "train_loss.png": plots.plot_lines(histories, "train_loss", "train loss", "Train loss"),
        "validation_loss.png": plots.plot_lines(histories, "validation_loss", "validation loss", "Validation loss"),
        "balanced_accuracy.png": plots.plot_lines(histories, "validation_balanced_accuracy", "balanced accuracy", "Validation balanced accuracy"),
        "comparison.png": plots.plot_comparison(rows),
        "summary.csv": to_csv(rows).encode(),
        "summary.md": to_markdown(sweep, rows, view, search_lines).encode(),
        "per_class.csv": to_csv(view.get("classes", []), ["category", "precision", "recall", "f1", "support"]).encode(),
        "recall_by_class_size.png": plots.plot_recall_by_size(view.get("classes", []), view.get("run", "no finished run")),
        "search.png": search_report.plot_parallel(schedule, runs, {r["config"]: r for r in rows}),
    }
    table = {"sweep": sweep, "runs": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
             "best": best["config"] if best else None, "chosen_by": "validation_balanced_accuracy", "rows": rows,
             "search": record}
    files["summary.json"] = (json.dumps(table, indent=2, sort_keys=True) + "\n").encode()  # last: marks the report complete
    copy_best(sweep, best)
    report = storage.join(sweep, REPORT)
    for fname in steps.REPORT_FILES:
        blob = files[fname]
        storage.write_bytes(storage.join(report, fname), blob)
        if getattr(args, "report_dir", None):
            Path(args.report_dir).mkdir(parents=True, exist_ok=True)
            Path(args.report_dir, fname).write_bytes(blob)

    tracking.log_report(args.sweep, files, table["best"])  # no-op unless MLFLOW_TRACKING_URI is set
    if os.environ.get("PUSHGATEWAY_URL"):
        from job import pushgateway

        pushgateway.delete_sweep(args.sweep, names)
    for r in rows:
        if r["status"] != "ok":
            log.warning("%s: %s (%s)", r["config"], r["status"], r.get("reason", ""))
    log.info("report: %s (%d of %d runs ok, best: %s)", report, table["ok"], table["runs"], table["best"])
    print(storage.join(report, "summary.md"))
    return 0
