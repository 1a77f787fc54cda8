"""Run an MLflow tracking server and its UI on loopback, for the tests and for watching a local sweep.

The server is `mlflow server` from the package's `tracking` extra (the full `mlflow`, not the
skinny client), started as a child process on 127.0.0.1 with a sqlite store and its artifacts in
one folder; it serves the artifacts itself, so a client needs only its URL.

    python -m workflows.mlflowui --dir runs/mlflow --hold -- python -m job sweep ...   # what `make mlflow` runs
    python -m workflows.mlflowui --dir runs/mlflow --hold                             # just the UI, until Ctrl-C

The command runs with MLFLOW_TRACKING_URI set to the server, which is how train and aggregate find it.
The tests use `serve()` directly, on a free port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from workflows.observe import _check_free, free_port

READY_TIMEOUT_S = 120.0  # `mlflow server` imports for seconds, then migrates a fresh sqlite store: 10+ s on 2 busy cores


def _server_args(port: int, work: Path) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "artifacts")]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll /health until it answers OK; fail at once if the server exits, and after timeout_s at the latest."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"mlflow server exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:g} s; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers: they run in a process group of their own."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def serve(workdir: str | Path, port: int = 0, timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Start `mlflow server` on 127.0.0.1, wait until it answers, stop it on exit; yields its URL.

    Port 0 picks a free one (another try on a fresh port if something takes it first). The store and
    the artifacts stay in workdir, so a later run on the same folder still shows earlier sweeps.
    """
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "mlflow.log"
    for attempt in range(1 if port else 3):
        chosen = _check_free(port) if port else free_port()
        with open(log, "ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches only us, and we stop its workers with it.
            proc = subprocess.Popen(_server_args(chosen, work), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={"MLFLOW_DISABLE_TELEMETRY": "true", **os.environ})
        url = f"http://127.0.0.1:{chosen}"
        try:
            _wait_ready(url, proc, log, timeout_s)
        except RuntimeError as e:
            _stop(proc)
            if port or attempt == 2 or "address already in use" not in str(e).lower():
                raise
            continue
        try:
            yield url
        finally:
            _stop(proc)
        return


def experiment_link(url: str, sweep: str) -> str:
    """The UI page of the sweep's experiment (one per sweep, named after it); the UI's start page if there is none."""
    query = urllib.parse.urlencode({"experiment_name": sweep})
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as r:
            return f"{url}/#/experiments/{json.load(r)['experiment']['experiment_id']}"
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.mlflowui", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="runs/mlflow", help="store, artifacts and log of the server (default: runs/mlflow)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1; 0 = any free one (default: 5000)")
    p.add_argument("--hold", action="store_true", help="after the command, keep the server up until Ctrl-C")
    p.add_argument("--sweep", help="the sweep id the command runs: the printed link opens its experiment")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run with MLFLOW_TRACKING_URI set")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill unwinds like Ctrl-C: the server stops too
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.hold:
        p.error("give a command after --, or --hold")
    try:
        with serve(args.dir, args.port) as url:
            print(f"MLflow UI: {url}", flush=True)
            rc = 0
            if command:
                rc = subprocess.call(command, env=dict(os.environ, MLFLOW_TRACKING_URI=url))
            if args.sweep:
                print(f"MLflow UI, sweep {args.sweep}: {experiment_link(url, args.sweep)}", flush=True)
            if args.hold:
                print("Server up; Ctrl-C stops it.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
            print("Stopping the MLflow server.", flush=True)
            return rc
    except RuntimeError as e:  # a server that would not start, e.g. its port is taken
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
