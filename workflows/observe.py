"""Run Prometheus and a Pushgateway on loopback, for the tests and for watching a local sweep.

Both servers are Debian's packages (`prometheus`, `prometheus-pushgateway`), started as child
processes on 127.0.0.1 with their data in one folder. Prometheus scrapes the Pushgateway with
`honor_labels: true`, so the pushed `sweep` and `config` labels stay as the training set them.

    python -m workflows.observe --dir runs/observe -- make demo        # servers up, demo runs, servers down
    python -m workflows.observe --dir runs/observe --hold -- true      # just keep them up until Ctrl-C
    python -m workflows.observe --hold --sweep observe-1 --dashboard helm/meli-sweep/dashboards/meli-sweep.json \
        -- python -m job sweep --sweep observe-1 ...             # what `make observe` runs: links to each panel

The command runs with PUSHGATEWAY_URL set to the Pushgateway, which is how train finds it.
The tests use `serve()` directly, on free ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from job.errors import UserError

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "prometheus")  # Debian package `prometheus`
PUSHGATEWAY = os.environ.get("PUSHGATEWAY_BIN", "prometheus-pushgateway")  # Debian package `prometheus-pushgateway`
INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus prometheus-pushgateway"
READY_TIMEOUT_S = 30.0  # Prometheus replays its write-ahead log before it is ready; a fresh one takes ~1 s


@dataclass(frozen=True)
class Servers:
    prometheus_url: str  # e.g. http://127.0.0.1:9090
    pushgateway_url: str  # e.g. http://127.0.0.1:9091; what PUSHGATEWAY_URL is set to
    scrape_interval_s: float  # how often Prometheus reads the Pushgateway


def binaries() -> tuple[str, str]:
    """Paths of the two server binaries, or a UserError that says what to install."""
    found = [shutil.which(PROMETHEUS), shutil.which(PUSHGATEWAY)]
    if not all(found):
        missing = [n for n, p in zip((PROMETHEUS, PUSHGATEWAY), found) if not p]
        raise UserError(f"observe: {', '.join(missing)} not found; install them with: {INSTALL_HINT}")
    return found[0], found[1]  # type: ignore[return-value]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_free(port: int) -> int:
    """Fail early on a taken port, with a message that names it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(f"port 127.0.0.1:{port} is in use; pick another one") from None
    return port


def prometheus_config(pushgateway_port: int, scrape_interval_s: float) -> str:
    """prometheus.yml: one job that scrapes the Pushgateway and keeps the pushed labels."""
    interval = f"{scrape_interval_s:g}s"
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: pushgateway\n"
        "    honor_labels: true  # keep job, sweep and config as pushed (Pushgateway practice)\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{pushgateway_port}']\n"
    )


class _PortTaken(RuntimeError):
    """Another process holds the port: a parallel test session can take a free port between pick and bind."""


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float,
                status_path: str, flag: str, expected: str) -> None:
    """Wait for /-/ready, then make sure the server answering is ours: its flag `flag` is `expected`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if "address already in use" in tail:
                raise _PortTaken(url)
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                ready = r.status == 200
            if ready:
                with urllib.request.urlopen(f"{url}{status_path}", timeout=1) as r:
                    data = json.load(r)["data"]
                if data.get("flags", data).get(flag) != expected:
                    raise _PortTaken(url)
                return
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s:g} s; see {log}")


def _wait_scraping(prom_url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Ready is not scraping: Prometheus hands targets to the scraper ~5 s after start. Wait for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{prom_url}/api/v1/targets?state=active", timeout=1) as r:
                targets = json.load(r)["data"]["activeTargets"]
            if targets and all(t["health"] == "up" for t in targets):
                return
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{prom_url} has not scraped the Pushgateway after {timeout_s:g} s; see {log}")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        # A session of their own: a Ctrl-C in the terminal reaches only us, and we stop them in order.
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _launch(args_for: Callable[[int], list[str]], port: int, log: Path,
            status_path: str, flag: str, expected: str) -> tuple[subprocess.Popen, int]:
    """Start a server on `port` (0: a free one, with up to 3 tries if another process grabs it first)."""
    for _ in range(1 if port else 3):
        chosen = _check_free(port) if port else free_port()
        proc = _start(args_for(chosen), log)
        try:
            _wait_ready(f"http://127.0.0.1:{chosen}", proc, log, READY_TIMEOUT_S, status_path, flag, expected)
            return proc, chosen
        except BaseException as e:
            _stop(proc)
            if not isinstance(e, _PortTaken):
                raise
    raise RuntimeError(f"{args_for(0)[0]}: {'port ' + str(port) if port else 'every free port tried'} "
                       "was taken by another process; pick another one")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve(workdir: str | Path, prometheus_port: int = 0, pushgateway_port: int = 0,
          scrape_interval_s: float = 1.0) -> Iterator[Servers]:
    """Start the Pushgateway and Prometheus on 127.0.0.1, wait until both are ready, stop them on exit.

    Port 0 picks a free port. Prometheus keeps its data under workdir/prometheus, so a later
    run on the same folder still shows earlier sweeps; logs go to workdir/*.log. Each server is
    checked to be ours (its data path), not another one that took the port first.
    """
    prometheus, pushgateway = binaries()
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state, tsdb, config = work / "pushgateway.state", work / "prometheus", work / "prometheus.yml"

    procs: list[subprocess.Popen] = []
    try:
        proc, pg_port = _launch(
            lambda port: [pushgateway, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={state}"],
            pushgateway_port, work / "pushgateway.log", "/api/v1/status", "persistence.file", str(state))
        procs.append(proc)
        config.write_text(prometheus_config(pg_port, scrape_interval_s))
        proc, prom_port = _launch(
            lambda port: [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                          f"--web.listen-address=127.0.0.1:{port}"],
            prometheus_port, work / "prometheus.log", "/api/v1/status/flags", "storage.tsdb.path", str(tsdb))
        procs.append(proc)
        prom_url = f"http://127.0.0.1:{prom_port}"
        _wait_scraping(prom_url, proc, work / "prometheus.log", READY_TIMEOUT_S)
        yield Servers(prometheus_url=prom_url, pushgateway_url=f"http://127.0.0.1:{pg_port}",
                      scrape_interval_s=scrape_interval_s)
    finally:
        for proc in reversed(procs):
            _stop(proc)


# Grafana's own variables, as a Prometheus graph page can take them.
_GRAFANA_VARS = {"$__range": "1h", "$__rate_interval": "1m", "$__interval": "15s"}


def panel_queries(dashboard: Path, sweep: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) for each query of the dashboard about training, with the sweep filled in.

    The Argo panels are left out: no workflow controller runs beside a local sweep.
    """
    panels = json.loads(Path(dashboard).read_text())["panels"]
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if not expr or "argo_workflows_" in expr:
                continue
            expr = expr.replace("$sweep", sweep).replace("$config", ".*")
            for var, value in _GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            queries.append((panel["title"], expr))
    return queries


def graph_link(prometheus_url: str, expr: str, range_input: str = "30m") -> str:
    """A Prometheus graph page that plots one query."""
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_input})
    return f"{prometheus_url}/graph?{query}"


def _print_links(s: Servers, dashboard: str | None, sweep: str | None) -> None:
    print(f"Prometheus:  {s.prometheus_url}", flush=True)
    print(f"Pushgateway: {s.pushgateway_url}", flush=True)
    if not (dashboard and sweep):
        print(f"  train loss: {graph_link(s.prometheus_url, 'meli_train_loss')}", flush=True)
        return
    print(f"The dashboard's queries for sweep {sweep}:", flush=True)
    for title, expr in panel_queries(Path(dashboard), sweep):
        print(f"  {title}: {graph_link(s.prometheus_url, expr)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.observe", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="runs/observe", help="data and logs of both servers (default: runs/observe)")
    p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port on 127.0.0.1; 0 = any free one (default: 9090)")
    p.add_argument("--pushgateway-port", type=int, default=9091, help="Pushgateway port on 127.0.0.1; 0 = any free one (default: 9091)")
    p.add_argument("--scrape-interval", type=float, default=5.0, help="seconds between scrapes (default: 5)")
    p.add_argument("--hold", action="store_true", help="after the command, keep the servers up until Ctrl-C")
    p.add_argument("--sweep", help="the sweep id the command runs: the printed links show its series")
    p.add_argument("--dashboard", help="Grafana dashboard JSON whose queries get a link each (with --sweep)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run with PUSHGATEWAY_URL set")
    args = p.parse_args(argv)
    # A plain kill (make interrupted, CI timeout) unwinds like Ctrl-C, so the servers stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.hold:
        p.error("give a command after --, or --hold")

    try:
        with serve(args.dir, args.prometheus_port, args.pushgateway_port, args.scrape_interval) as s:
            _print_links(s, args.dashboard, args.sweep)
            rc = 0
            if command:
                env = dict(os.environ, PUSHGATEWAY_URL=s.pushgateway_url)
                # aggregate deletes the sweep's groups once Prometheus had two scrapes to read their last values
                env.setdefault("PUSHGATEWAY_DELETE_AFTER", f"{2 * s.scrape_interval_s:g}")
                rc = subprocess.call(command, env=env)
            if args.hold:
                if args.dashboard and args.sweep:
                    _print_links(s, args.dashboard, args.sweep)  # again, below the command's own output
                print("Servers up; Ctrl-C stops them.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
            print("Stopping Prometheus and the Pushgateway.", flush=True)
            return rc
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RuntimeError as e:  # a server that would not start, e.g. its port is taken
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
