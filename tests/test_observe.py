"""`python -m job.observe` (what `make observe` runs): real servers up, the command sees them, then they stop.

    make test PYTEST_ARGS=tests/test_observe.py
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from job import observe

ROOT = Path(__file__).resolve().parent.parent


def _listening(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.prometheus
def test_observe_runs_the_command_against_both_servers_and_stops_them(tmp_path):
    child = ("import os, urllib.request; url = os.environ['PUSHGATEWAY_URL']; "
             "assert urllib.request.urlopen(url + '/-/ready').status == 200; raise SystemExit(7)")
    r = subprocess.run([sys.executable, "-m", "job.observe", "--dir", str(tmp_path), "--prometheus-port", "0",
                        "--pushgateway-port", "0", "--scrape-interval", "1", "--", sys.executable, "-c", child],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 7, r.stderr  # the command's own exit status
    urls = dict(re.findall(r"^(Prometheus|Pushgateway):\s+(http://127\.0\.0\.1:\d+)", r.stdout, re.M))
    assert set(urls) == {"Prometheus", "Pushgateway"}, r.stdout
    assert not any(_listening(u) for u in urls.values())  # both stopped afterwards
    assert "honor_labels: true" in (tmp_path / "prometheus.yml").read_text()


@pytest.mark.prometheus
def test_a_server_already_on_the_port_is_not_taken_for_ours(tmp_path):
    """Parallel test sessions can race for a free port; the one answering must prove it is ours."""
    port = observe.free_port()
    theirs = subprocess.Popen([observe.binaries()[1], f"--web.listen-address=127.0.0.1:{port}",
                               f"--persistence.file={tmp_path / 'theirs.state'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # stands for ours, still starting
    try:
        with pytest.raises(observe._PortTaken):
            observe._wait_ready(f"http://127.0.0.1:{port}", ours, tmp_path / "log", 10.0,
                                "/api/v1/status", "persistence.file", str(tmp_path / "ours.state"))
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} is in use"):
            with observe.serve(tmp_path, pushgateway_port=port):
                pass
