"""Successive halving against the full search: the same random trials of one space, on synthetic data.

    python -m job bench --search             (make bench-search)

Runs a search twice on this machine's CPU with the same trials (same space, seed and --trials): once with
halving (ETA 3, rungs of 3, 9 and 27 epochs), once training every trial fully. Then it prints the epochs each spent
and their ratio, the best validation balanced accuracy of each and the difference, and the full search's
spread (best - worst), which shows that the space matters: choosing well is the test. The target: halving
spends at most 40% of the full search's epochs, and its best is at most 0.005 below the full search's.
Each search is the sequence a sweep runs (job/local.py: next, then train each listed run, per round and rung),
with `next` and `train` called in this one process, so that the time is the training's, not 66 interpreter
start-ups'. Epochs are counted from each run's metrics.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from job import runfiles, search, search_report
from job.errors import TrainingFailed

# The space: the learning rate matters most (too low and the MLP learns little, too high and it overshoots),
# tuning the word vectors next, the width least. Rungs of 3, 9 and 27 epochs (MIN_EPOCHS * ETA^k): from 1
# epoch, a slow starter with a low learning rate that ends best is cut before it shows (docs/search.md).
SPACE = "mlp256:lr=loguniform(1e-4,1e-1),mlp_hidden=choice(32,64,128),freeze_embeddings=choice(true,false),batch_size=512,epochs=27"
TRIALS = 27  # the count: 27 -> 9 -> 3 with ETA 3
ETA = 3
MIN_EPOCHS = 3  # the first rung's epochs
SEED = 0  # --search-seed of both sweeps: the same trials
ROWS = 16_000  # synthetic rows (the demo's generator)
CATEGORIES = 20  # synthetic categories
TARGET_RATIO = 0.40  # halving spends at most this share of the full search's epochs
TARGET_GAP = 0.005  # and its best validation balanced accuracy is at most this much below the full search's
TARGET_SPREAD = 0.05  # the full search's best - worst, at least: the space matters


def _job(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "job", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench-search: {args[0]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def sweep(out: Path, prepared: str, sweep_id: str, settings: search.Search) -> dict:
    """One search sweep, the sequence of job/local.py in this process: next, then train each listed run, per
    round and rung. Its epochs spent (from each run's metrics.jsonl) and its runs' best validation scores."""
    from job import train

    started = time.time()
    plan = search.parse(SPACE, False, settings)
    shape = search.shape(plan)
    for round_ in range(1, shape.rounds + 1):
        for rung in range(shape.rungs):
            for item in search.next_items(SPACE, False, settings, round_, rung, str(out), sweep_id):
                args = argparse.Namespace(config=item["spec"], prepared=prepared, out=runfiles.run_uri(str(out), sweep_id, item["name"]),
                                          sweep=sweep_id, device="cpu", result_file=None, epochs=item["epochs"])
                try:
                    train.main(args)
                except TrainingFailed as e:  # a diverged trial is a result too: it is not promoted
                    print(f"  {item['name']}: failed ({e})")
    seconds = time.time() - started
    names = list(search_report.describe(search.Schedule(plan, str(out), sweep_id)))
    results = {name: search.read_result(str(out), sweep_id, name) for name in names}
    scores = {name: r.summary["validation_balanced_accuracy"] for name, r in results.items()
              if r.summary and r.summary.get("status") == "ok"}
    best = max(scores, key=lambda n: (scores[n], n))
    return {"seconds": seconds, "epochs": sum(len(r.history) for r in results.values()), "best": scores[best],
            "best_run": best, "worst": min(scores.values()), "failed": len(names) - len(scores), "runs": len(names)}


def main(args) -> int:
    import torch

    started = time.time()
    rows = args.rows or ROWS
    trials = args.trials or TRIALS
    torch.set_num_threads(args.threads or 1)
    logging.getLogger("job").setLevel(logging.WARNING)  # a line per epoch of 300 epochs says nothing here
    with tempfile.TemporaryDirectory(prefix="meli-bench-search-") as tmp:
        out = Path(tmp)
        data = out / "data.csv.gz"
        print(f"bench-search: {trials} random trials of {SPACE}", flush=True)
        print(f"  synthetic data: {rows:,} rows, {CATEGORIES} categories; one run at a time, torch threads "
              f"{torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
        _job("synth", "--rows", str(rows), "--categories", str(CATEGORIES), "--seed", "0", "--out", str(data))
        prepared = _job("prepare", "--data", str(data), "--embeddings", "none", "--out", str(out)).strip().splitlines()[-1]
        halving = sweep(out, prepared, "halving", search.Search(trials=trials, search_seed=SEED, halving=ETA, min_epochs=MIN_EPOCHS))
        full = sweep(out, prepared, "full", search.Search(trials=trials, search_seed=SEED))

    ratio = halving["epochs"] / full["epochs"]
    gap = full["best"] - halving["best"]
    spread = full["best"] - full["worst"]
    print(f"\n  {'':<34}{'runs':>5}{'epochs':>8}{'best val. bal. acc.':>21}{'seconds':>9}   best run")
    rungs = ", ".join(map(str, search.rung_budgets(ETA, MIN_EPOCHS, search.parse(SPACE, False, search.Search(trials=1)).max_epochs())))
    for name, r in ((f"halving (ETA {ETA}, rungs {rungs})", halving), ("full (every trial to the end)", full)):
        print(f"  {name:<34}{r['runs']:>5}{r['epochs']:>8}{r['best']:>21.4f}{r['seconds']:>9.0f}   {r['best_run']}")
    print(f"\n  epochs, halving / full:      {ratio:.3f}   (target <= {TARGET_RATIO:.2f})")
    print(f"  best, full - halving:        {gap:+.4f}   (target <= {TARGET_GAP})")
    print(f"  spread of the full search:   {spread:.4f}   (best {full['best']:.4f} - worst {full['worst']:.4f}; "
          f"target >= {TARGET_SPREAD})")
    print(f"  failed runs: halving {halving['failed']}, full {full['failed']}; load average now {os.getloadavg()[0]:.1f}")
    met = ratio <= TARGET_RATIO and gap <= TARGET_GAP and spread >= TARGET_SPREAD
    print(f"\n  target {'met' if met else 'NOT met'}; {time.time() - started:.0f} s in all (synthetic data and prepare included)")
    return 0 if met else 1
