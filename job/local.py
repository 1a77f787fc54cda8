"""A whole sweep on one machine: prepare, then for each round and rung `next` and train its runs, then aggregate.

    python -m job sweep --configs hidden50,hidden100 --data runs/data/synthetic.csv.gz --out runs
    python -m job sweep --configs 'mlp256:lr=loguniform(1e-4,1e-1)' --trials 27 --halving 3 ... (docs/search.md)

Each step runs as the same `python -m job <step>` command that an Argo pod runs (job/steps.py
defines them once). A run that fails does not stop the others; the report lists it, and the
sweep exits 1 after writing the report. Rerunning the same sweep id resumes: prepare finds its
manifest, finished runs are kept, interrupted ones go on from their checkpoints, and `next` lists
the same runs again for the rounds and rungs already done (train skips those already there).
Without search flags a sweep is one round of one rung: every listed run, trained once.
"""

from __future__ import annotations

import json
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

from job import search, steps, storage
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


def next_runs(args, sweep: str, settings: search.Search, round_: int, rung: int, tmp: str) -> list[dict]:
    """The `next` step for a round and rung: what to train there, read from its result files: the runs, each
    trained on its own, then the pods of several runs ({label, runs, ...}) when --runs-per-gpu is above 1."""
    result, groups = os.path.join(tmp, f"next-{round_}-{rung}.json"), os.path.join(tmp, f"groups-{round_}-{rung}.json")
    cmd = _command(steps.next_runs(args.out, sweep, args.configs, "true" if args.baseline else "false", round_, rung,
                                   settings, result_file=result, cpu_result_file=os.path.join(tmp, "cpu-runs.json"),
                                   runs_per_gpu=args.runs_per_gpu, group_result_file=groups))
    if subprocess.call(cmd, stdout=subprocess.DEVNULL) != 0:  # the list goes to the result file; errors to stderr
        raise UserError(f"next failed at round {round_}, rung {rung} (see the line above)")
    cpu = json.loads(Path(tmp, "cpu-runs.json").read_text())
    return json.loads(Path(result).read_text()) + cpu + json.loads(Path(groups).read_text())


def main(args) -> int:
    settings = search.from_args(args)
    plan = search.parse(args.configs, args.baseline, settings)  # every spec and search flag checked before any work
    shape = search.shape(plan)
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
    log.info("sweep %s: %d round(s) of %d rung(s) (epochs %s)", sweep, shape.rounds, shape.rungs,
             ", ".join(map(str, shape.budgets)))

    with tempfile.TemporaryDirectory(prefix="meli-sweep-") as tmp:
        result = os.path.join(tmp, "prepared")
        if run_step(steps.prepare(args.data, args.embeddings, args.out, result_file=result), "prepare", False) != 0:
            raise UserError("prepare failed (see the line above); no run was started")
        prepared = Path(result).read_text().strip()

        codes: dict[str, int] = {}  # each run's exit code in the last rung that trained it
        lock = threading.Lock()
        train_env = None
        if args.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
            # N trainings each using every core fight over them; share the cores out instead.
            train_env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.parallel))}

        def train(item: dict) -> None:
            if "runs" in item:  # a pod of several runs: train-group, as on Argo; each run's outcome from its result
                result = os.path.join(tmp, f"group-{item['label']}.json")
                code = run_step(steps.train_group(item["runs"], prepared, args.out, sweep, result_file=result,
                                                  cuda_graphs=args.cuda_graphs), item["label"], False, train_env)
                done = json.loads(Path(result).read_text()) if os.path.exists(result) else {}
                outcome = {run["name"]: 0 if done.get(run["name"], "nan") != "nan" else code or 1
                           for run in json.loads(item["runs"])}
            else:
                outcome = {item["name"]: run_step(steps.train(item["spec"], prepared, args.out, sweep, item["name"],
                                                              epochs=item["epochs"], round_=item["round"], rung=item["rung"],
                                                              cuda_graphs=args.cuda_graphs),
                                                  item["name"], args.parallel > 1, train_env)}
            with lock:
                codes.update(outcome)
            for name, code in outcome.items():
                if code != 0:
                    log.warning("run %s failed (exit %d); the others go on", name, code)

        # The same sequence as the Argo DAG (job/steps.py): next, then train each listed run, per round and rung.
        for round_ in range(1, shape.rounds + 1):
            for rung in range(shape.rungs):
                items = next_runs(args, sweep, settings, round_, rung, tmp)
                runs = [run for i in items for run in (json.loads(i["runs"]) if "runs" in i else [i])]
                log.info("round %d, rung %d: %d run(s)%s%s", round_, rung, len(runs),
                         "" if not runs else f" to {', '.join(sorted({str(i['epochs']) for i in runs}, key=int))} epochs",
                         f", in pods of up to {args.runs_per_gpu}" if args.runs_per_gpu > 1 else "")
                with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                    list(pool.map(train, items))

    baseline = "true" if args.baseline else "false"
    if run_step(steps.aggregate(args.out, sweep, args.configs, search_settings=settings, baseline=baseline),
                "aggregate", False) != 0:
        raise UserError("aggregate failed (see the line above)")
    failed = sorted(n for n, c in codes.items() if c != 0)
    report = steps.report_uri(args.out, sweep)
    print(f"\nsweep {sweep}: {len(codes) - len(failed)} of {len(codes)} runs finished in {time.time() - started:.0f}s")
    if failed:
        print(f"failed: {', '.join(failed)} (reasons in the report)")
    print(f"report: {report}/summary.md")
    if not storage.is_s3(report):
        print(f"plots:  {report}/comparison.png, {report}/balanced_accuracy.png")
    return 1 if failed else 0
