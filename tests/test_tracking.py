"""MLflow tracking against a real `mlflow server` (sqlite store) on loopback: a local sweep's runs, a run
killed and resumed, and a server that is down or hangs.

    make test PYTEST_ARGS=tests/test_tracking.py
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import time

import pytest
from mlflowservers import client, history, mlflow_server, runs_of  # noqa: F401  (mlflow_server: a fixture)

import forked
from conftest import free_port, run_job
from job import configs, steps, tracking

# Two neural configs of 2 epochs on the tiny dataset, plus the tfidf baseline every sweep adds.
CONFIGS = "hidden50:epochs=2,batch_size=64,max_train_rows=600,mlp256:epochs=2,batch_size=64,max_train_rows=600"
# A run killed and resumed: 8 batches of 50 rows per epoch, 4 epochs.
RESUMED = "mlp256:epochs=4,max_train_rows=400,batch_size=50"
EPOCHS = 4


def tracking_env(url: str, **more: str) -> dict:
    """The environment of a job process that tracks to url (a developer's own MLflow settings kept out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PUSHGATEWAY_"))}
    return {**env, "MLFLOW_TRACKING_URI": url, **more}


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@pytest.mark.slow
@pytest.mark.mlflow
def test_a_local_sweep_logs_one_mlflow_run_per_run_and_the_report(mlflow_server, tiny_csv, tmp_path):
    sweep = "tracked"
    # credentials in the URI (this server checks none) must reach no output
    with_credentials = mlflow_server.replace("http://", "http://meli:s3cret-pw@")
    proc = run_job("sweep", "--configs", CONFIGS, "--data", str(tiny_csv), "--out", str(tmp_path), "--sweep", sweep,
                   env=tracking_env(with_credentials))
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    runs = runs_of(mlflow_server, sweep)
    experiment = client(mlflow_server).get_experiment_by_name(sweep).experiment_id
    for run in runs.values():  # each run's link, on the server without its credentials
        assert f"{mlflow_server}/#/experiments/{experiment}/runs/{run.info.run_id}" in proc.stderr, run.info.run_name
    expected = configs.with_baseline(configs.expand(CONFIGS), True)
    assert set(runs) == {r.name for r in expected} | {tracking.REPORT_RUN}, set(runs)
    for run in expected:
        folder = tmp_path / "sweeps" / sweep / run.name
        got = runs[run.name]
        summary = json.loads((folder / "summary.json").read_text())
        epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert got.info.status == "FINISHED"
        assert got.data.tags[tracking.TAG_SWEEP] == sweep and got.data.tags[tracking.TAG_RUN] == run.name
        # params: every config value, the spec, the sweep and the prepared data's hash
        params = got.data.params
        assert {k: params[k] for k in run.config.to_dict()} == {k: tracking._text(v) for k, v in run.config.to_dict().items()}
        assert params["spec"] == run.spec and params["sweep"] == sweep
        assert params["prepared"] == summary["prepared"]
        assert params["prepared_hash"] == summary["prepared"].rsplit("/", 1)[-1] and len(params["prepared_hash"]) >= 8
        # metrics: each epoch once, step = epoch, the values of metrics.jsonl; the test figures of summary.json
        for key in tracking.EPOCH_METRICS:
            assert history(mlflow_server, got.info.run_id, key) == [(e["epoch"], pytest.approx(e[key])) for e in epochs], key
        assert [e["epoch"] for e in epochs] == list(range(1, run.config.epochs + 1))
        for key in tracking.TEST_METRICS:
            assert history(mlflow_server, got.info.run_id, key) == [(0, pytest.approx(summary[key]))], key
        # artifact: its model.pt, byte for byte
        local = client(mlflow_server).download_artifacts(got.info.run_id, "model.pt", str(tmp_path / "dl" / run.name))
        assert sha256(open(local, "rb").read()) == sha256((folder / "model.pt").read_bytes())
    report = runs[tracking.REPORT_RUN]
    report_dir = tmp_path / "sweeps" / sweep / "report"
    assert report.info.status == "FINISHED"
    assert report.data.tags["meli.best"] == json.loads((report_dir / "summary.json").read_text())["best"]
    logged = {f.path.rsplit("/", 1)[-1] for f in client(mlflow_server).list_artifacts(report.info.run_id, "report")}
    assert logged == set(steps.REPORT_FILES)


@pytest.mark.slow
@pytest.mark.mlflow
def test_a_run_killed_and_resumed_continues_its_mlflow_run_and_logs_each_epoch_once(mlflow_server, tiny_prepared,
                                                                                      tmp_path):
    sweep, name = "resumed", configs.parse_one(RESUMED).name
    out = tmp_path / "sweeps" / sweep / name
    log = tmp_path / "train.log"
    argv = ["train", "--config", RESUMED, "--prepared", tiny_prepared, "--out", str(out), "--sweep", sweep, "--device", "cpu"]
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MELI_RUNG": "1", "PUSHGATEWAY_URL": None}

    def logged(key: str = "train_loss") -> list[int]:
        runs = runs_of(mlflow_server, sweep) if client(mlflow_server).get_experiment_by_name(sweep) else {}
        return [step for step, _ in history(mlflow_server, runs[name].info.run_id, key)] if name in runs else []

    # 1. halfway through epoch 3 the run stops; once the server holds epochs 1 and 2, it is killed from outside.
    pid = forked.start(argv, env=env, log=log, fault="hang:mid-epoch:epoch-3")
    try:
        deadline = time.monotonic() + 120
        while logged() != [1, 2] and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert forked.wait(pid) == -signal.SIGKILL
    assert logged() == [1, 2], log.read_text()[-3000:]
    first = runs_of(mlflow_server, sweep)[name]
    assert first.info.status == "RUNNING" and first.data.tags["meli.rung"] == "1"

    # 2. the rerun resumes after epoch 2 and is killed just after epoch 3's checkpoint, before it could log it.
    code = forked.run(argv, env=env, log=log, fault="kill:after-write:checkpoint.pt")
    assert code == -signal.SIGKILL, log.read_text()[-3000:]

    # 3. the next rerun trains epochs 3 and 4 and is killed just after its summary.json, before its MLflow
    #    run could get the test figures and model.pt.
    code = forked.run(argv, env={**env, "MELI_RUNG": "2"}, log=log, fault="kill:after-write:summary.json")
    assert code == -signal.SIGKILL, log.read_text()[-3000:]
    assert log.read_text().count("resumed from") == 2
    killed = runs_of(mlflow_server, sweep)[name]
    assert killed.info.status == "RUNNING" and "test_balanced_accuracy" not in killed.data.metrics

    # 4. run again, the finished run completes its MLflow run: the epochs not logged yet (3 was checkpointed
    #    by a process killed before it could log it), each once, the test figures, model.pt, FINISHED.
    assert forked.run(argv, env={**env, "MELI_RUNG": "2"}, log=log) == 0, log.read_text()[-3000:]
    assert "already finished" in log.read_text()
    runs = runs_of(mlflow_server, sweep)
    assert list(runs) == [name]  # one MLflow run over four attempts
    got = runs[name]
    assert got.info.run_id == first.info.run_id and got.info.status == "FINISHED"
    # the tag follows the latest attempt (checked once it finished: a killed attempt's tags are sent from a
    # background thread, which may not have run before the kill)
    assert got.data.tags["meli.rung"] == "2"
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    for key in tracking.EPOCH_METRICS:
        assert history(mlflow_server, got.info.run_id, key) == [(e["epoch"], pytest.approx(e[key])) for e in epochs], key
    summary = json.loads((out / "summary.json").read_text())
    for key in tracking.TEST_METRICS:
        assert history(mlflow_server, got.info.run_id, key) == [(0, pytest.approx(summary[key]))], key
    assert [f.path for f in client(mlflow_server).list_artifacts(got.info.run_id)] == ["model.pt"]

    # 5. run once more, it logs nothing more, starts no new MLflow run, and leaves its end time.
    assert forked.run(argv, env=env, log=log) == 0, log.read_text()[-3000:]
    again = runs_of(mlflow_server, sweep)
    assert list(again) == [name] and again[name].info.end_time == got.info.end_time
    assert [s for s, _ in history(mlflow_server, got.info.run_id, "train_loss")] == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_with_the_server_down_the_sweep_succeeds_with_one_warning_per_step(tiny_csv, tmp_path):
    port = free_port()  # nothing listens there
    proc = run_job("sweep", "--configs", CONFIGS, "--data", str(tiny_csv), "--out", str(tmp_path), "--sweep", "down",
                   env=tracking_env(f"http://127.0.0.1:{port}", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                                    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0"))  # whole seconds, as MLflow reads it
    report = json.loads((tmp_path / "sweeps" / "down" / "report" / "summary.json").read_text())
    assert report["ok"] == report["runs"] == 3
    warnings = [line for line in proc.stderr.splitlines() if "WARNING job.tracking" in line]
    # one per train step (each retried at every epoch, logged once), and aggregate's
    assert len([w for w in warnings if "training goes on" in w]) == 3, warnings
    assert len([w for w in warnings if "could not log the report" in w]) == 1, warnings
    failures = [w for w in warnings if "training goes on" in w or "could not log the report" in w]
    assert all("Max retries exceeded" in w for w in failures), failures  # the server is down, not the client broken


@pytest.mark.slow
def test_a_hung_server_never_holds_up_training(tmp_path, monkeypatch, caplog):
    """A server that accepts connections but never answers: epochs return at once, the end waits its bound."""
    caplog.set_level(logging.WARNING, logger="job.tracking")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:s3cret@127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # longer than the end's wait: the end must give up
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv(tracking.FINISH_WAIT_ENV, "2")
        tracker = tracking.Tracker.from_env("hung", configs.parse_one("mlp256"), str(tmp_path), "runs/prepared/abc123")
        started = time.monotonic()
        for epoch in range(1, 101):
            tracker.epochs([{"epoch": e, "train_loss": 1.0, "validation_loss": 1.0,
                             "validation_balanced_accuracy": 0.5} for e in range(1, epoch + 1)])
        assert time.monotonic() - started < 0.5  # 100 epochs handed over without waiting on the server
        tracker.finish(None)
        assert time.monotonic() - started < 2 + 2  # the end waited its bound, not the server
        tracker._thread.join(60)  # each request gives up after its timeout, then the thread ends
        assert not tracker._thread.is_alive()
    messages = [r.getMessage() for r in caplog.records if r.name == "job.tracking"]
    assert messages and all("s3cret" not in m for m in messages), messages
    assert any("did not finish within 2 s" in m for m in messages), messages
    assert any("training goes on" in m and "ReadTimeoutError" in m for m in messages), messages  # MLflow's own timeout


def test_tracking_is_off_without_a_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = tracking.Tracker.from_env("off", configs.parse_one("mlp256"), str(tmp_path), "runs/prepared/abc123")
    assert not tracker.enabled
    tracker.epochs([{"epoch": 1, "train_loss": 1.0}])
    tracker.finish(None)  # no thread, no server, nothing to wait for


def test_rung_and_round_tags_come_from_the_arguments_or_the_environment(monkeypatch):
    class Args:
        rung = 2

    monkeypatch.setenv("MELI_ROUND", "3")
    monkeypatch.delenv("MELI_RUNG", raising=False)
    assert tracking.run_tags(Args()) == {"rung": "2", "round": "3"}
    monkeypatch.delenv("MELI_ROUND")
    assert tracking.run_tags(object()) == {}


def test_a_bad_finish_wait_is_one_clear_error(monkeypatch, tmp_path):
    from job.errors import UserError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv(tracking.FINISH_WAIT_ENV, "soon")
    with pytest.raises(UserError, match="MELI_MLFLOW_FINISH_WAIT='soon': expected seconds"):
        tracking.Tracker.from_env("bad", configs.parse_one("mlp256"), str(tmp_path), "runs/prepared/abc123")


# Stands for a sweep: makes the sweep's experiment on the server it was given, as train does, and exits 7.
_MAKE_EXPERIMENT = """
import json, os, urllib.request
url = os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/create"
body = json.dumps({"name": "ui-test"}).encode()
urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})).read()
raise SystemExit(7)
"""


@pytest.mark.slow
@pytest.mark.mlflow
def test_mlflowui_runs_the_command_against_its_server_prints_the_experiments_link_and_stops(tmp_path):
    """What `make mlflow` runs, with a stand-in for the sweep."""
    import re
    import subprocess
    import sys
    import urllib.request

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "workflows.mlflowui", "--dir", str(tmp_path), "--port", "0", "--sweep",
                        "ui-test", "--", sys.executable, "-c", _MAKE_EXPERIMENT], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 7, r.stdout + r.stderr  # the command's own exit status
    link = re.search(r"^MLflow UI, sweep ui-test: (http://127\.0\.0\.1:\d+)/#/experiments/(\d+)$", r.stdout, re.M)
    assert link and link.group(2) != "0", r.stdout  # the sweep's experiment, not the Default one
    with pytest.raises(OSError):  # stopped afterwards
        urllib.request.urlopen(link.group(1) + "/health", timeout=5)
    assert (tmp_path / "mlflow.db").exists()  # the store stays, for the next `make mlflow`


def test_make_mlflow_runs_one_sweep_id_for_the_sweep_and_the_link():
    import subprocess

    from conftest import ROOT

    r = subprocess.run(["make", "-n", "mlflow", "MLFLOW_SWEEP=s1", "MLFLOW_PORT=15999"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [line] = [x for x in r.stdout.replace("\\\n", " ").splitlines() if "workflows.mlflowui" in x]
    assert "--port 15999" in line and "--hold" in line and "--sweep s1 " in line
    assert line.split(" -- ", 1)[1].split()[1:4] == ["-m", "job", "sweep"] and "--sweep s1" in line.split(" -- ", 1)[1]
