"""`python -m workflows.observe` (what `make observe` runs): real servers up, the command sees them, then they stop.

    make test PYTEST_ARGS=tests/test_observe.py
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.parse

import pytest
from promservers import wait_for

from conftest import ROOT, free_port
from workflows import observe

DASHBOARD = ROOT / "helm" / "meli-sweep" / "dashboards" / "meli-sweep.json"


def _listening(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.slow
@pytest.mark.prometheus
def test_observe_runs_the_command_against_both_servers_and_stops_them(tmp_path):
    child = ("import os, urllib.request; url = os.environ['PUSHGATEWAY_URL']; "
             "assert urllib.request.urlopen(url + '/-/ready').status == 200; raise SystemExit(7)")
    r = subprocess.run([sys.executable, "-m", "workflows.observe", "--dir", str(tmp_path), "--prometheus-port", "0",
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
    port = free_port()
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


# Stands for a sweep's train step: pushes one series of the sweep the way train does (job="meli_train").
_PUSH_ONE = """
import os, urllib.request
body = b"meli_train_loss 0.5\\nmeli_train_epochs_planned 2\\n"
url = os.environ["PUSHGATEWAY_URL"] + "/metrics/job/meli_train/sweep/observe-test/config/hidden50"
urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT")).read()
"""


@pytest.mark.slow
@pytest.mark.prometheus
def test_hold_keeps_both_servers_up_with_links_that_show_the_sweep(tmp_path):
    """What `make observe` does: a fresh sweep id, links to the dashboard's queries, servers up until Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "workflows.observe", "--dir", str(tmp_path), "--prometheus-port", "0",
                             "--pushgateway-port", "0", "--scrape-interval", "1", "--hold", "--sweep", "observe-test",
                             "--dashboard", str(DASHBOARD), "--", sys.executable, "-c", _PUSH_ONE],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # read until the servers are held: the command has ended by then
            lines.append(line)
            if line.startswith("Servers up"):
                break
        text = "".join(lines)
        assert proc.poll() is None, text  # still up after the command
        links = dict(re.findall(r"^  (Train loss|Epoch): (http://\S+)$", text, re.M))
        assert set(links) == {"Train loss", "Epoch"}, text
        assert "argo_workflows_" not in text  # no controller runs beside a local sweep
        expr = urllib.parse.parse_qs(urllib.parse.urlparse(links["Train loss"]).query)["g0.expr"][0]
        assert 'sweep="observe-test"' in expr and "$" not in expr
        prometheus = links["Train loss"].split("/graph?")[0]
        result = wait_for(prometheus, expr, timeout_s=30)  # the pushed series shows once Prometheus has scraped it
        assert [r["metric"]["config"] for r in result] == ["hidden50"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, rest
    assert not _listening(prometheus)


def test_make_observe_runs_a_fresh_sweep_not_the_demo():
    """`make observe` after `make demo` must not reuse the finished sweep `demo`: it would push nothing."""
    r = subprocess.run(["make", "-n", "observe"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ids = re.findall(r"--sweep (\S+)", r.stdout)
    assert len(ids) == 2 and ids[0] == ids[1], r.stdout  # the links show the sweep that runs
    assert re.fullmatch(r"observe-\d{8}-\d{6}", ids[0]) and "--hold" in r.stdout
