"""Train several runs in one GPU pod, as one process each sharing the GPU: the step of a sweep with runs_per_gpu > 1.

    python -m job train-group --runs '[{"name": ..., "spec": ..., "epochs": ..., "round": 1, "rung": 0}, ...]' \
        --prepared runs/prepared/<hash> --out runs --sweep demo

Each run is the same `python -m job train` command a pod of its own would run (job/steps.py: train), so it writes
its own folder, metrics, pushes and summary exactly as a solo run does, and resumes or skips exactly as one does:
a retried pod starts every run again, and each goes on from its checkpoint or finds its summary. The runs start
together and the step waits for all of them; it exits with the first failed run's exit code, 0 when every run finished.
Their output lines are tagged with the run's name. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from job import steps
from job.errors import UserError

log = logging.getLogger("job.train_group")

ITEM_KEYS = ("name", "spec", "epochs", "round", "rung")  # what each run of --runs carries (a plan or next item)


def parse_runs(text: str) -> list[dict]:
    """--runs: the JSON list of a pod's runs, as plan and next write them; refused in one line when malformed."""
    try:
        runs = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--runs: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UserError("--runs: expected a non-empty JSON list of runs, each {name, spec, epochs, round, rung}")
    for run in runs:
        missing = [k for k in ITEM_KEYS if k not in run]
        if missing:
            raise UserError(f"--runs: run {run.get('name', '?')!r} lacks {', '.join(missing)}")
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"--runs: a run is listed twice ({', '.join(sorted(n for n in set(names) if names.count(n) > 1))})")
    return runs


def _command(args: list[str]) -> list[str]:
    """This interpreter for the step's generic `python`."""
    return [sys.executable] + args[1:] if args[0] == "python" else args


def _relay(name: str, stream) -> None:
    for line in stream:
        sys.stderr.write(f"[{name}] {line}")


def main(args) -> int:
    runs = parse_runs(args.runs)
    if args.cuda_graphs not in ("true", "false"):
        raise UserError(f"--cuda-graphs {args.cuda_graphs!r}: expected true or false")
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        # K trainings each using every core of the pod would fight over them; share the cores out instead
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // len(runs)))
    log.info("training %d runs at once on one device: %s", len(runs), ", ".join(r["name"] for r in runs))
    from job.prepare import open_prepared  # here: numpy and prepare's imports only when the step runs

    open_prepared(args.prepared)  # fetched into the pod's cache once, not by every run at once (disk, S3 traffic)
    with tempfile.TemporaryDirectory(prefix="train-group-") as tmp:
        procs, relays = [], []
        for i, run in enumerate(runs):
            cmd = steps.train(run["spec"], args.prepared, args.out, args.sweep, run["name"], result_file=f"{tmp}/{i}",
                              epochs=run["epochs"], round_=run["round"], rung=run["rung"], cuda_graphs=args.cuda_graphs)
            proc = subprocess.Popen(_command(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    env=env)
            procs.append(proc)
            relays.append(threading.Thread(target=_relay, args=(run["name"], proc.stdout), daemon=True))
            relays[-1].start()

        def stop(signum, frame):  # the pod is going away (preemption, deadline): the runs go with it
            for proc in procs:
                proc.send_signal(signum)
            for proc in procs:
                proc.wait()
            sys.exit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        codes = [proc.wait() for proc in procs]
        for relay in relays:
            relay.join()
        results = {}
        for i, (run, code) in enumerate(zip(runs, codes)):
            result = Path(tmp, str(i))
            results[run["name"]] = result.read_text() if code == 0 and result.exists() else "nan"
            if code != 0:
                log.warning("run %s failed (exit %d); the others went on", run["name"], code)
    steps.write_result(args.result_file, json.dumps(results, sort_keys=True))
    failed = [r["name"] for r, c in zip(runs, codes) if c != 0]
    log.info("%d of %d runs finished%s", len(runs) - len(failed), len(runs), f"; failed: {', '.join(failed)}" if failed else "")
    # a run killed by a signal shows as -signal: reported as the shell does, 128 + signal
    return next((code if code > 0 else 128 - code for code in codes if code != 0), 0)
