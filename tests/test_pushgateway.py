"""Training metrics against a real Prometheus and Pushgateway (Debian's, on loopback; see promservers.py).

- A short real training pushes; after a scrape, every PromQL query of the Grafana dashboard, with its
  variables filled in, returns series of that sweep and config. The Argo panels query the
  workflow-controller, which does not run here: their metric names are checked against Argo's docs.
- An unreachable Pushgateway: training completes and logs one warning, without the URL's password.
- After aggregate, the sweep's groups are gone from the Pushgateway; Prometheus keeps the history.
- Pushes are throttled, and a gateway that hangs never holds up the training loop.

    make test PYTEST_ARGS="-m prometheus"
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from promservers import label_values, prom, push_time, pushgateway_groups, pushgateway_pushes, query, wait_for  # noqa: F401

from conftest import ROOT, free_port
from job import pushgateway

DASHBOARD = ROOT / "helm" / "meli-sweep" / "dashboards" / "meli-sweep.json"
SPEC = "hidden50:epochs=2"  # a real LSTM, two epochs: about 5 s on 2 CPU cores
CONFIG = "hidden50_epochs=2"  # the run name train derives from SPEC: the `config` label

# Argo's controller metrics, as named in "Default Controller Metrics" of
# https://argo-workflows.readthedocs.io/en/latest/metrics/ (v3.6 and later, hence v4):
# each is emitted with the prefix `argo_workflows_`; counters keep the names below.
ARGO_CONTROLLER_METRICS = {
    "cronworkflows_concurrencypolicy_triggered", "cronworkflows_triggered_total", "deprecated_feature",
    "error_count", "gauge", "is_leader", "k8s_request_duration", "k8s_request_total", "log_messages",
    "operation_duration_seconds", "pod_missing", "pod_pending_count", "pods_gauge", "pods_total_count",
    "queue_adds_count", "queue_depth_gauge", "queue_duration", "queue_latency", "queue_longest_running",
    "queue_retries", "queue_unfinished_work", "total_count", "version", "workers_busy_count",
    "workflow_condition", "workflowtemplate_runtime", "workflowtemplate_triggered_total",
}
# Labels those panels group by, from the same page: `phase` on gauge, pods_gauge and total_count.
ARGO_LABELS = {"phase", "namespace", "cause", "queue_name", "status", "type", "worker_type", "le"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "min", "avg", "without", "on", "histogram_quantile"}


def _job(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "job", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    """Synthetic data, prepared once for every training here (about 2 s)."""
    work = tmp_path_factory.mktemp("metrics-data")
    r = _job("synth", "--rows", "3000", "--categories", "8", "--out", str(work / "titles.csv"))
    assert r.returncode == 0, r.stderr
    r = _job("prepare", "--data", str(work / "titles.csv"), "--embeddings", "none", "--out", str(work))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _train(prepared: str, out: Path, sweep: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {"PUSHGATEWAY_URL": "", **env}  # a developer's own PUSHGATEWAY_URL must not leak in
    return _job("train", "--config", SPEC, "--prepared", prepared, "--out", str(out / "sweeps" / sweep / CONFIG), "--sweep", sweep,
                "--device", "cpu", env=env)


def _fill(expr: str, sweep: str, config_regex: str) -> str:
    """Grafana's variables, as Grafana would fill them for one sweep and a config selection."""
    for name, value in (("${sweep}", sweep), ("$sweep", sweep), ("${config}", config_regex), ("$config", config_regex),
                        ("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "1h")):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unfilled variable in {expr!r}"
    return expr


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["expr"]))
    return found


def _is_argo(expr: str) -> bool:
    return "argo_workflows_" in expr


def test_dashboard_shape():
    """The panels the issue asks for, the two variables, and a Prometheus data source variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Train loss", "Validation balanced accuracy", "Validation loss", "Samples per second", "Epoch progress",
            "GPU memory", "Final balanced accuracy per config"} <= titles
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["config"]["multi"] and variables["config"]["includeAll"]
    assert next(p for p in dashboard["panels"] if p["title"] == "Final balanced accuracy per config")["type"] == "table"
    assert sum(_is_argo(e) for _, e in _dashboard_queries()) >= 3
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def _sweep_custom_metrics() -> dict[str, set[str]]:
    """The sweep's own custom metrics, name -> label keys, from the rendered workflow (what the controller emits)."""
    import yaml

    doc = yaml.safe_load((ROOT / "workflows" / "sweep.yaml").read_text())
    found = {}
    for template in doc["spec"]["templates"]:
        for metric in template.get("metrics", {}).get("prometheus", []):
            found[metric["name"]] = {label["key"] for label in metric.get("labels", [])}
    return found


def test_argo_panels_use_documented_controller_metrics():
    """Documented controller metrics, or the sweep's own custom ones under the controller's prefix.

    Since v3.6 the controller prefixes every metric it exports, custom ones included, with `argo_workflows_`
    (util/telemetry/exporter_prometheus.go: the exporter's namespace), so `meli_sweep_train_duration_seconds`
    is scraped as `argo_workflows_meli_sweep_train_duration_seconds`.
    """
    custom = _sweep_custom_metrics()
    assert custom, "the rendered workflow declares no custom metric"
    seen_custom = set()
    for title, expr in _dashboard_queries():
        if not _is_argo(expr):
            continue
        names = set(re.findall(r"argo_workflows_(\w+)", expr))
        labels = set(ARGO_LABELS)
        for name in names & set(custom):
            labels |= custom[name]
            seen_custom.add(name)
            selected = set(re.findall(r"(\w+)\s*=~?\s*\"", expr))
            assert selected <= custom[name], f"{title}: selects on {selected - custom[name]}, not a label of {name}"
        unknown = names - ARGO_CONTROLLER_METRICS - set(custom)
        assert names and not unknown, f"{title}: {unknown} is neither in Argo's docs nor a custom metric of the sweep"
        grouped = {label for group in re.findall(r"by \(([^)]*)\)", expr) for label in re.split(r"\s*,\s*", group)}
        assert grouped <= labels, f"{title}: groups by {grouped - labels}, not a label of the metric"
    assert seen_custom, "no panel shows the sweep's own controller metrics"
    text = DASHBOARD.read_text()
    for name in custom:  # never the bare name, which no Prometheus ever holds
        assert not re.search(rf"(?<!argo_workflows_){name}", text), f"{name} without the argo_workflows_ prefix"


@pytest.mark.prometheus
@pytest.mark.slow
def test_dashboard_queries_return_the_runs_series(prom, prepared, tmp_path):
    sweep = "observed"
    started = time.time()
    r = _train(prepared, tmp_path, sweep, {"PUSHGATEWAY_URL": prom.pushgateway_url, "PUSHGATEWAY_INTERVAL": "0.5"})
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "sweeps" / sweep / CONFIG / "summary.json").read_text())
    # The final push carries the success time; once Prometheus has scraped it, every series is there.
    assert wait_for(prom.prometheus_url, f'meli_train_last_success_timestamp_seconds{{sweep="{sweep}"}}')

    # The variables' queries, as Grafana runs label_values(): the sweep and the config are offered.
    dashboard = json.loads(DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["definition"])
        assert m, var["definition"]
        offered = label_values(prom.prometheus_url, m.group(2), _fill(m.group(1), sweep, ".*"))
        assert {"sweep": sweep, "config": CONFIG}[var["name"]] in offered

    # Every training query, for this config alone and for "All" configs, returns this run's series.
    checked = 0
    for title, expr in _dashboard_queries():
        for config_regex in (re.escape(CONFIG), ".*"):
            result = query(prom.prometheus_url, _fill(expr, sweep, config_regex))
            if _is_argo(expr):
                continue  # valid PromQL (query() checks that); no controller here to give it series
            assert result, f"{title}: no series for {expr!r}"
            for series in result:
                assert series["metric"].get("sweep") == sweep and series["metric"].get("config") == CONFIG, (title, series)
            checked += 1
    assert checked >= 2 * 10

    # The values are this run's: two epochs over the training split, the summary's test score.
    train_rows = json.loads((Path(prepared) / "manifest.json").read_text())["splits"]["train"]
    def value(name: str) -> float:
        [series] = query(prom.prometheus_url, f'{name}{{sweep="{sweep}", config="{CONFIG}"}}')
        return float(series["value"][1])

    assert value("meli_train_epochs_planned") == 2
    assert value("meli_train_epoch") == 2
    assert value("meli_train_samples_per_epoch") == train_rows
    assert value("meli_train_samples_total") == 2 * train_rows
    assert value("meli_train_samples_per_second") > 0
    assert value("meli_train_gpu_memory_bytes") == 0  # trained on CPU
    assert value("meli_train_test_balanced_accuracy") == pytest.approx(summary["test_balanced_accuracy"], abs=1e-6)
    assert 0 <= value("meli_train_validation_balanced_accuracy") <= 1
    assert value("meli_train_loss") > 0 and value("meli_train_validation_loss") > 0
    assert started <= value("meli_train_last_success_timestamp_seconds") <= time.time()  # this run's success
    # Only this run's metrics are pushed: no process or Python metrics of the default registry.
    pushed = {s["metric"]["__name__"] for s in query(prom.prometheus_url, f'{{job="meli_train", sweep="{sweep}"}}')}
    assert pushed == set(pushgateway.METRICS) | {"push_time_seconds", "push_failure_time_seconds"}


@pytest.mark.prometheus
@pytest.mark.slow
def test_unreachable_pushgateway_warns_once_and_training_completes(prepared, tmp_path):
    port = free_port()  # a loopback port with nobody listening: every push is refused
    sweep = "unreachable"
    r = _train(prepared, tmp_path, sweep, {"PUSHGATEWAY_URL": f"http://meli:s3cret@127.0.0.1:{port}",
                                           "PUSHGATEWAY_INTERVAL": "0"})
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "sweeps" / sweep / CONFIG / "summary.json").read_text())["status"] == "ok"
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, r.stderr
    assert "job.pushgateway" in warnings[0] and f"127.0.0.1:{port}" in warnings[0]
    assert "s3cret" not in r.stderr  # the URL's password is never logged


@pytest.mark.prometheus
@pytest.mark.slow
def test_aggregate_deletes_the_sweeps_groups(prom, prepared, tmp_path):
    sweep, other = "cleaned", "other-sweep"
    env = {"PUSHGATEWAY_URL": prom.pushgateway_url}
    r = _train(prepared, tmp_path, sweep, env)
    assert r.returncode == 0, r.stderr
    # A second group of the same sweep that aggregate is not told about, and a group of another sweep.
    for s, c in ((sweep, "crashed_config"), (other, CONFIG)):
        m = pushgateway.TrainingMetrics(s, c, prom.pushgateway_url)
        m.start(epochs_total=1, samples_per_epoch=10)
        m.finish(None, ok=False)
    _pushes_done()
    groups = pushgateway_groups(prom.pushgateway_url)
    assert {"sweep": sweep, "config": CONFIG} in [{k: g.get(k) for k in ("sweep", "config")} for g in groups]

    # Prometheus has scraped the run's final push: waited for as an event, so that the history check below
    # never races a late scrape. Then aggregate waits until the pushes are 3 scrape intervals old, and deletes.
    assert wait_for(prom.prometheus_url, f'meli_train_last_success_timestamp_seconds{{sweep="{sweep}", config="{CONFIG}"}}')
    r = _job("aggregate", "--out", str(tmp_path), "--sweep", sweep, "--configs", SPEC,
             env={**env, "PUSHGATEWAY_DELETE_AFTER": "3"})
    assert r.returncode == 0, r.stderr

    _wait_until(lambda: not _groups_of_sweep(prom, sweep), "the gateway applied the deletes")
    left = [(g.get("sweep"), g.get("config")) for g in pushgateway_groups(prom.pushgateway_url)]
    assert (other, CONFIG) in left  # other sweeps keep their groups
    # The history stays in Prometheus, final values included: they were scraped before the delete.
    for name in ("meli_train_test_balanced_accuracy", "meli_train_last_success_timestamp_seconds"):
        history = query(prom.prometheus_url, f'{name}{{sweep="{sweep}", config="{CONFIG}"}}[10m]')
        assert history and history[0]["values"], name
    # and is no longer current once a scrape has seen the groups gone
    _wait_until(lambda: not query(prom.prometheus_url, f'meli_train_epoch{{sweep="{sweep}"}}'), "the deleted series went stale")


def _pushes_done() -> None:
    """Wait until every push thread has ended. A run's start and final requests may be two pushes, and the
    first can already carry the final values: a second one still on its way would recreate a deleted group."""
    for thread in [t for t in threading.enumerate() if t.name == "metrics-push"]:
        thread.join(30)
        assert not thread.is_alive(), "a push thread ended within 30 s"


def _groups_of_sweep(prom, sweep: str) -> list[dict[str, str]]:
    # The gateway answers a DELETE with 202 Accepted and applies it later from its write queue
    # (prometheus/pushgateway handler/delete.go, Delete): a check right after the delete can still see the group.
    return [g for g in pushgateway_groups(prom.pushgateway_url) if g.get("sweep") == sweep]


def _wait_until(condition, what: str, timeout_s: float = 30.0):
    """Poll until condition() returns something true, and return it; fail after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.05)
    return result


@pytest.mark.slow
@pytest.mark.prometheus
def test_delete_waits_until_the_last_push_is_old_enough_to_be_scraped(prom, monkeypatch):
    delete_after_s = 2.5  # 2.5 scrape intervals
    monkeypatch.setenv("PUSHGATEWAY_URL", prom.pushgateway_url)
    monkeypatch.setenv("PUSHGATEWAY_DELETE_AFTER", str(delete_after_s))
    m = pushgateway.TrainingMetrics("late", CONFIG, prom.pushgateway_url)
    m.start(epochs_total=1, samples_per_epoch=10)
    m.finish(0.75, ok=True)

    def final_push_time():  # the gateway's own time of the final push, once it holds the final value
        text = urllib.request.urlopen(prom.pushgateway_url + "/metrics", timeout=5).read().decode()
        final = any(line.startswith("meli_train_test_balanced_accuracy{") and 'sweep="late"' in line for line in text.splitlines())
        return final and push_time(prom.pushgateway_url, job=pushgateway.JOB, sweep="late", config=CONFIG)

    # finish() waits for its push only so long; on a loaded machine let every requested push land before the delete
    _pushes_done()
    pushed_at = _wait_until(final_push_time, "the final push reached the Pushgateway")
    deleted_at, scraped = [], []
    real_delete = pushgateway.delete_from_gateway

    def delete(*args, **kwargs):
        deleted_at.append(time.time())
        # The wait gives Prometheus time to scrape; that it did is its business, so wait for that event here
        # rather than bet on a scrape within the 2.5 s: the history check below then never races a late scrape.
        scraped.append(wait_for(prom.prometheus_url, 'meli_train_test_balanced_accuracy{sweep="late"} == 0.75'))
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(pushgateway, "delete_from_gateway", delete)
    called_at = time.time()
    pushgateway.delete_sweep("late", [CONFIG])
    assert deleted_at and scraped[0], (deleted_at, scraped)
    # Deleted only once the final push was 2.5 s old by the gateway's clock (on this machine, the same clock),
    # which is a wait whenever delete_sweep was called sooner than that ...
    assert min(deleted_at) >= pushed_at + delete_after_s, (deleted_at, pushed_at)
    # ... and a wait of the setting, not of the default (60 s)
    assert min(deleted_at) - called_at < pushgateway.DEFAULT_DELETE_AFTER_S / 2, (deleted_at, called_at)
    _wait_until(lambda: not _groups_of_sweep(prom, "late"), "the gateway applied the delete")
    [series] = query(prom.prometheus_url, 'meli_train_test_balanced_accuracy{sweep="late"}[1m]')
    assert float(series["values"][-1][1]) == 0.75  # the history outlives the delete


@pytest.mark.slow
@pytest.mark.prometheus
def test_pushes_are_throttled(prom, monkeypatch):
    """Whether to push is decided at once in the calling thread; the push itself runs on the background thread."""
    clock = [1000.0]
    requested = []
    real_request = pushgateway._Pusher.request

    def request(self):
        requested.append(clock[0])
        real_request(self)

    monkeypatch.setattr(pushgateway._Pusher, "request", request)
    m = pushgateway.TrainingMetrics("throttle", CONFIG, prom.pushgateway_url, interval_s=5.0, clock=lambda: clock[0])
    base = pushgateway_pushes(prom.pushgateway_url)

    def pushed(expected: int) -> None:
        """Exactly `expected` pushes were asked for, and each reached the gateway (none can be on its way unasked)."""
        assert len(requested) == expected, requested
        _wait_until(lambda: pushgateway_pushes(prom.pushgateway_url) - base >= expected, f"{expected} push(es) arrived")
        assert pushgateway_pushes(prom.pushgateway_url) - base == expected

    m.start(epochs_total=2, samples_per_epoch=1000)  # the first push, at once
    pushed(1)
    for step in range(1, 50):  # 4.9 s of progress calls every 0.1 s: within the interval, no push
        clock[0] += 0.1
        m.progress(1, step * 10, 2.0, 100.0)
    pushed(1)
    clock[0] += 0.1  # 5 s after the last push
    m.progress(1, 500, 1.9, 100.0)
    pushed(2)
    m.progress(1, 510, 1.9, 100.0)
    clock[0] += 1
    m.epoch_end(1, 1.8, 1.7, 0.5, 1000)  # epoch ends always push
    pushed(3)
    m.finish(0.5, ok=True)  # and so does the end
    pushed(4)


def test_hung_pushgateway_never_holds_up_training(caplog, monkeypatch):
    """A gateway that accepts connections but answers only when the test lets it: the loop goes on at full speed,
    and the end waits for its push only as long as the push timeout."""
    caplog.set_level(logging.WARNING, logger="job.pushgateway")
    real_push = pushgateway.pushadd_to_gateway
    # A push gives up only after 60 s here, so the gateway's silence lasts exactly as long as the test decides:
    # no push can time out (and warn) while the loop runs, however slow the machine.
    monkeypatch.setattr(pushgateway, "pushadd_to_gateway", lambda *a, **k: real_push(*a, **{**k, "timeout": 60}))

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "job.pushgateway" and r.levelno == logging.WARNING]

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel completes the handshakes; nobody reads or answers until the test closes
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    m = pushgateway.TrainingMetrics("hung", CONFIG, url, interval_s=0.0, timeout_s=0.5)
    pusher = m._pusher
    m.start(epochs_total=1, samples_per_epoch=1000)
    server.settimeout(30)
    first, _ = server.accept()  # the first push is on its way: no answer comes while the test holds it
    for step in range(1000):
        m.progress(1, step, 2.0, 100.0)
    m.epoch_end(1, 1.8, 1.7, 0.5, 1000)
    # The whole loop ran while the first push still waited for its answer: it never waited for a push.
    assert warnings() == [] and pusher._thread.is_alive()
    m.finish(0.5, ok=True)
    # The end waited for its push at most its 0.5 s: it returned while the first push still hangs.
    assert pusher._thread.is_alive() and warnings() == []
    first.close()  # the gateway goes away: the hanging push fails, the pending one is refused, the thread ends
    server.close()
    pusher._thread.join(timeout=60)
    assert not pusher._thread.is_alive()
    assert len(warnings()) == 1, warnings()


def test_disabled_without_pushgateway_url(monkeypatch):
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    m = pushgateway.TrainingMetrics.from_env("s", "c")
    assert not m.enabled
    m.start(1, 1)
    m.progress(1, 1, 1.0, 1.0)
    m.epoch_end(1, 1.0, 1.0, 0.5, 1)
    m.finish(0.5, ok=True)
    pushgateway.delete_sweep("s", ["c"])  # nothing to reach, nothing raised


def test_url_credentials_are_split_off():
    assert pushgateway._split_url("http://user:p%40ss@gw.example:9091/") == ("http://gw.example:9091", "user", "p@ss")
    assert pushgateway._split_url("gw:9091") == ("http://gw:9091", None, None)
    assert pushgateway._split_url("https://[::1]:9091") == ("https://[::1]:9091", None, None)


def test_gpu_memory_reads_cuda_only_when_torch_already_uses_it(monkeypatch):
    class Cuda:
        initialized = True

        @staticmethod
        def is_available():
            return True

        @classmethod
        def is_initialized(cls):
            return cls.initialized

        @staticmethod
        def memory_allocated():
            return 123456789

    class Torch:
        cuda = Cuda

    monkeypatch.setitem(sys.modules, "torch", Torch)
    assert pushgateway._gpu_memory_bytes() == 123456789
    Cuda.initialized = False  # CPU training in a CUDA build: no context is created for a metric
    assert pushgateway._gpu_memory_bytes() == 0
    monkeypatch.delitem(sys.modules, "torch")
    assert pushgateway._gpu_memory_bytes() == 0 and "torch" not in sys.modules


def test_gpu_memory_sample_is_the_line_a_push_carries(monkeypatch):
    """The GPU bench prints this line: the gauge read through the same collector and text format as a push."""
    class Cuda:
        is_available = is_initialized = staticmethod(lambda: True)
        memory_allocated = staticmethod(lambda: 123456789)

    monkeypatch.setitem(sys.modules, "torch", type("Torch", (), {"cuda": Cuda}))
    assert pushgateway.gpu_memory_sample() == "meli_train_gpu_memory_bytes 1.23456789e+08"
    monkeypatch.delitem(sys.modules, "torch")
    assert pushgateway.gpu_memory_sample() == "meli_train_gpu_memory_bytes 0.0"
