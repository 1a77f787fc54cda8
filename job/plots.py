"""The report's figures, drawn with matplotlib's file backend and returned as PNG bytes.

aggregate draws the per-epoch lines, the comparison and recall by category size from here;
search_report draws search.png with `pyplot` and `png`.
"""

from __future__ import annotations

import io


def pyplot():
    """matplotlib's pyplot on the Agg backend: a pod has no display."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def png(fig) -> bytes:
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def plot_lines(histories: dict[str, list[dict]], key: str, ylabel: str, title: str) -> bytes:
    plt = pyplot()
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
    return png(fig)


def plot_comparison(rows: list[dict]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * len(rows) + 1.5)))
    names = [r["config"] for r in rows][::-1]
    values = [float(r.get("test_balanced_accuracy") or 0) if r.get("status") == "ok" else 0.0 for r in rows][::-1]
    colors = ["tab:green" if r.get("best") else ("tab:blue" if r.get("status") == "ok" else "tab:red") for r in rows][::-1]
    bars = ax.barh(names, values, color=colors)
    for bar, r in zip(bars, rows[::-1]):
        label = f"{float(r['test_balanced_accuracy']):.3f}" if r.get("status") == "ok" else r.get("status", "")
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize="small")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("test balanced accuracy (best validation epoch); ranked by validation")
    ax.set_title("Sweep comparison")
    return png(fig)


def plot_recall_by_size(classes: list[dict], run: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    seen = [c for c in classes if c["support"]]
    ax.scatter([c["support"] for c in seen], [c["recall"] for c in seen], s=12, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("test rows of the category (log scale)")
    ax.set_ylabel("recall")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Recall by category size: {run}")
    ax.grid(alpha=0.3)
    return png(fig)
