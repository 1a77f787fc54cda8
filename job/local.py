"""A whole sweep on one machine: plan, prepare, train every run, aggregate.

    python -m job sweep --configs hidden50,hidden100 --data runs/data/synthetic.csv.gz --out runs

Each step runs as the same `python -m job <step>` command that an Argo pod runs (job/steps.py
defines them once). A run that fails does not stop the others; the report lists it, and the
sweep exits 1 after writing the report. Rerunning the same sweep id resumes: prepare finds its
manifest, finished runs are kept, interrupted ones go on from their checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from job import configs, steps, storage
from job.errors import UserError

log = logging.getLogger("job.local")

_SWEEP_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")  # a valid Kubernetes name, like an Argo workflow's


def _command(args: list[str]) -> list[str]:
    """Swap the generic `python` of a step for this interpreter."""
    return [sys.executable] + args[1:] if args[0] == "python" else args


def run_step(args: list[str], label: str, prefix_output: bool, env: dict | None = None) -> int:
    """Run one step; with prefix_output, its lines are tagged with the run name (parallel runs)."""
    cmd = _command(args)
    if not prefix_output:
        return subprocess.call(cmd, env=env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    for line in proc.stdout:
        sys.stderr.write(f"[{label}] {line}")
    return proc.wait()


def main(args) -> int:
    runs = configs.with_baseline(configs.expand(args.configs), args.baseline)  # every spec checked before any work
    storage.check_uri(args.data, "--data")
    storage.check_uri(args.out, "--out")
    if args.embeddings != "none":
        storage.check_uri(args.embeddings, "--embeddings")
    sweep = args.sweep or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not _SWEEP_ID.match(sweep):
        raise UserError(f"--sweep {sweep!r}: use lowercase letters, digits, '.' and '-' (a Kubernetes name)")
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: must be >= 1")
    started = time.time()
    log.info("sweep %s: %d run(s): %s", sweep, len(runs), ", ".join(r.name for r in runs))

    with tempfile.TemporaryDirectory(prefix="meli-sweep-") as tmp:
        result = os.path.join(tmp, "prepared")
        if run_step(steps.prepare(args.data, args.embeddings, args.out, result_file=result), "prepare", False) != 0:
            raise UserError("prepare failed (see the line above); no run was started")
        prepared = Path(result).read_text().strip()

    codes: dict[str, int] = {}
    lock = threading.Lock()
    train_env = None
    if args.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        # N trainings each using every core fight over them; share the cores out instead.
        train_env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.parallel))}

    def train(run: configs.Run) -> None:
        code = run_step(steps.train(run.spec, prepared, args.out, sweep, run.name), run.name, args.parallel > 1, train_env)
        with lock:
            codes[run.name] = code
        if code != 0:
            log.warning("run %s failed (exit %d); the others go on", run.name, code)

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(train, runs))

    if run_step(steps.aggregate(args.out, sweep, ",".join(run.spec for run in runs)), "aggregate", False) != 0:
        raise UserError("aggregate failed (see the line above)")
    failed = sorted(n for n, c in codes.items() if c != 0)
    report = steps.report_uri(args.out, sweep)
    print(f"\nsweep {sweep}: {len(runs) - len(failed)} of {len(runs)} runs finished in {time.time() - started:.0f}s")
    if failed:
        print(f"failed: {', '.join(failed)} (reasons in the report)")
    print(f"report: {report}/summary.md")
    if not storage.is_s3(report):
        print(f"plots:  {report}/comparison.png, {report}/balanced_accuracy.png")
    return 1 if failed else 0
