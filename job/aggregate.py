"""Join the runs of a sweep into one report: plots and a ranked summary.

    python -m job aggregate --out runs --sweep demo --configs hidden50,hidden100

Reads every run folder under <out>/sweeps/<sweep>/ (and every run the --configs specs name, so a run
that never started is reported as missing) and writes <out>/sweeps/<sweep>/report/ (steps.REPORT_FILES):
  train_loss.png, validation_loss.png, balanced_accuracy.png   per epoch, one line per run
  comparison.png                                               test balanced accuracy per run
  summary.csv, summary.md, summary.json                        one row per run, ranked, best marked
A failed, unfinished or missing run keeps its row, with its status and reason. summary.json is
written last. The step succeeds whenever the report could be written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from job import configs, steps, storage
from job.errors import UserError

log = logging.getLogger("job.aggregate")

COLUMNS = ["rank", "config", "status", "epochs", "best_epoch", "validation_balanced_accuracy", "test_loss",
           "test_balanced_accuracy", "train_seconds", "samples_per_second", "reason", "spec"]
REPORT = "report"


def read_run(sweep: str, name: str) -> tuple[dict, list[dict]]:
    """(summary row, epoch history) of one run folder, whatever state it was left in."""
    folder = storage.join(sweep, name)
    history: list[dict] = []
    metrics_uri = storage.join(folder, "metrics.jsonl")
    if storage.exists(metrics_uri):
        for line in storage.read_text(metrics_uri).splitlines():
            if line.strip():
                try:
                    history.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s: skipped a malformed line", metrics_uri)
    summary_uri = storage.join(folder, "summary.json")
    if storage.exists(summary_uri):
        row = storage.read_json(summary_uri)
        row.setdefault("status", "unknown")
    elif history:
        row = {"config": name, "status": "incomplete", "epochs": len(history),
               "reason": f"no summary.json: stopped after epoch {history[-1].get('epoch')} (still running, or killed)"}
    else:
        row = {"config": name, "status": "missing", "epochs": 0, "reason": "no output: the run never started or failed before its first epoch"}
    row["config"] = name
    return row, history


def rank(rows: list[dict]) -> list[dict]:
    ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: -float(r.get("test_balanced_accuracy", 0)))
    rest = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: r["config"])
    for i, r in enumerate(ok, 1):
        r["rank"] = i
        r["best"] = i == 1
    for r in rest:
        r["rank"] = ""
        r["best"] = False
    return ok + rest


def plot_lines(histories: dict[str, list[dict]], key: str, ylabel: str, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, history in sorted(histories.items()):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no finished epochs", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def plot_comparison(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * len(rows) + 1.5)))
    names = [r["config"] for r in rows][::-1]
    values = [float(r.get("test_balanced_accuracy") or 0) if r.get("status") == "ok" else 0.0 for r in rows][::-1]
    colors = ["tab:green" if r.get("best") else ("tab:blue" if r.get("status") == "ok" else "tab:red") for r in rows][::-1]
    bars = ax.barh(names, values, color=colors)
    for bar, r in zip(bars, rows[::-1]):
        label = f"{float(r['test_balanced_accuracy']):.3f}" if r.get("status") == "ok" else r.get("status", "")
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize="small")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("test balanced accuracy (best validation epoch)")
    ax.set_title("Sweep comparison")
    return _png(fig)


def _png(fig) -> bytes:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(sweep: str, rows: list[dict]) -> str:
    def cell(r, key, fmt="{}"):
        value = r.get(key)
        return "" if value in (None, "") else fmt.format(value)

    lines = [f"# Sweep report: {sweep.rstrip('/').rsplit('/', 1)[-1]}", "",
             f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} runs finished. Best is marked ★.", "",
             "| rank | config | status | epochs | best epoch | test loss | test balanced accuracy | train s | samples/s | reason |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["rank"]), ("★ " if r.get("best") else "") + r["config"], r["status"], cell(r, "epochs"),
            cell(r, "best_epoch"), cell(r, "test_loss", "{:.4f}"), cell(r, "test_balanced_accuracy", "{:.4f}"),
            cell(r, "train_seconds", "{:.1f}"), cell(r, "samples_per_second", "{:,.0f}"),
            str(r.get("reason", "")).replace("|", "/")]) + " |")
    lines += ["", "Plots: train_loss.png, validation_loss.png, balanced_accuracy.png, comparison.png", ""]
    return "\n".join(lines)


def main(args) -> int:
    storage.check_uri(args.out, "--out")
    storage.join(args.out, args.sweep)  # refuses a sweep id that is not a plain name
    sweep = steps.sweep_uri(args.out, args.sweep)
    expected = [run.name for run in configs.expand(args.configs)] if args.configs.strip() else []
    found = [n for n in storage.list_dirs(sweep) if n != REPORT]
    names = list(dict.fromkeys(expected + found))
    if not names:
        raise UserError(f"{sweep}: no runs found and no --configs given")
    rows, histories = [], {}
    for name in names:
        row, history = read_run(sweep, name)
        rows.append(row)
        histories[name] = history
    rows = rank(rows)

    files = {
        "train_loss.png": plot_lines(histories, "train_loss", "train loss", "Train loss"),
        "validation_loss.png": plot_lines(histories, "validation_loss", "validation loss", "Validation loss"),
        "balanced_accuracy.png": plot_lines(histories, "validation_balanced_accuracy", "balanced accuracy", "Validation balanced accuracy"),
        "comparison.png": plot_comparison(rows),
        "summary.csv": to_csv(rows).encode(),
        "summary.md": to_markdown(sweep, rows).encode(),
    }
    table = {"sweep": sweep, "runs": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
             "best": next((r["config"] for r in rows if r.get("best")), None), "rows": rows}
    files["summary.json"] = (json.dumps(table, indent=2, sort_keys=True) + "\n").encode()  # last: marks the report complete
    report = storage.join(sweep, REPORT)
    for fname in steps.REPORT_FILES:
        blob = files[fname]
        storage.write_bytes(storage.join(report, fname), blob)
        if getattr(args, "report_dir", None):
            Path(args.report_dir).mkdir(parents=True, exist_ok=True)
            Path(args.report_dir, fname).write_bytes(blob)

    if os.environ.get("PUSHGATEWAY_URL"):
        from job import metrics

        metrics.delete_sweep(args.sweep, names)
    for r in rows:
        if r["status"] != "ok":
            log.warning("%s: %s (%s)", r["config"], r["status"], r.get("reason", ""))
    log.info("report: %s (%d of %d runs ok, best: %s)", report, table["ok"], table["runs"], table["best"])
    print(storage.join(report, "summary.md"))
    return 0
