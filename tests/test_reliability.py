"""Faults survived: runs killed at named points resume to the same result, S3 faults are retried
then fail in one line, and a failing config (NaN loss, out of memory) never hides the others.

Kill points (tests/faults.py, installed through the storage and training-loop seams) are hit in a
real forked process with SIGKILL, locally and on S3 behind a fault-injecting proxy
(tests/faultproxy.py) in front of the moto server. Interrupted writes happen inside the product's own
writer: a local write is stopped between its write and its rename (the local backend's `replace`),
an S3 PUT is stalled halfway by the proxy; the process is killed there, and the old file or object
is still whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import traceback
from pathlib import Path

import boto3
import pytest

import forked
from conftest import ROOT, run_job
from faultproxy import Fault, FaultProxy

# 8 batches of 50 rows per epoch, so mid-epoch is after 4 of them; the MLP's dropout draws from the RNG.
CONFIG = "mlp256:epochs=4,max_train_rows=400,batch_size=50"
RUN = "mlp256_epochs=4_max_train_rows=400_batch_size=50"
EPOCHS = 4
TIMING = ("seconds", "samples_per_second")  # the only fields a resumed run may change
SUMMARY_KEYS = ("status", "epochs", "best_epoch", "validation_balanced_accuracy", "test_loss", "test_balanced_accuracy")


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import torch and the job package once; every forked run then starts at once."""
    import sklearn.metrics  # noqa: F401  (balanced accuracy)
    import torch._dynamo  # noqa: F401  (the optimizers import it on first use: seconds)

    import job.train  # noqa: F401


def train_args(prepared: str, out: str, config: str = CONFIG) -> list[str]:
    return ["train", "--config", config, "--prepared", prepared, "--out", out, "--sweep", "reliability", "--device", "cpu"]


def epochs_of(metrics_text: str) -> list[int]:
    return [json.loads(line)["epoch"] for line in metrics_text.splitlines() if line.strip()]


def without_timing(history_text: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in history_text.splitlines() if line.strip()]


def weights_digest(blob: bytes) -> str:
    """sha256 over the model's tensors, by their bytes (no torch arithmetic in the test process)."""
    import torch

    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def checkpoint_epoch(blob: bytes) -> int:
    import torch

    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)["epoch"]


@pytest.fixture(scope="module")
def baseline(tiny_prepared, tmp_path_factory):
    """One uninterrupted run: its metrics without timings, summary numbers and best weights."""
    out = tmp_path_factory.mktemp("baseline") / "sweeps" / "base" / RUN
    log = out.parent / "train.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert forked.run(train_args(tiny_prepared, str(out)), log=log) == 0, log.read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return {"history": without_timing((out / "metrics.jsonl").read_text()),
            "summary": {k: summary[k] for k in SUMMARY_KEYS},
            "weights": weights_digest((out / "model.pt").read_bytes())}


def assert_same_as_baseline(baseline: dict, metrics: str, summary: dict, model: bytes) -> None:
    assert epochs_of(metrics) == list(range(1, EPOCHS + 1))  # each epoch exactly once
    assert without_timing(metrics) == baseline["history"]
    assert {k: summary[k] for k in SUMMARY_KEYS} == baseline["summary"]
    assert weights_digest(model) == baseline["weights"]


# --- 1. preemption and crashes -------------------------------------------------------------

# (fault, epochs in the checkpoint after the kill): each line kills the rerun of the line before.
LOCAL_KILLS = [
    ("kill:mid-epoch:epoch-2", 1),  # half of epoch 2's batches done
    ("kill:mid-write:checkpoint.pt", 1),  # the resumed run's first checkpoint (epoch 2) written, not yet renamed
    ("kill:before-write:checkpoint.pt", 1),  # epoch 2's model.pt written, its checkpoint not
    ("kill:after-write:checkpoint.pt", 2),  # epoch 2 checkpointed, metrics.jsonl not yet rewritten
    ("kill:before-write:summary.json", 4),  # every epoch done, the summary not written
]


def test_local_run_killed_at_five_points_resumes_to_the_uninterrupted_result(tiny_prepared, tmp_path, baseline):
    out = tmp_path / "sweeps" / "killed" / RUN
    log = tmp_path / "train.log"
    for fault, epochs in LOCAL_KILLS:
        code = forked.run(train_args(tiny_prepared, str(out)), log=log, fault=fault)
        assert code == -signal.SIGKILL, f"{fault}: exit {code}\n{log.read_text()[-3000:]}"
        assert not (out / "summary.json").exists()
        assert checkpoint_epoch((out / "checkpoint.pt").read_bytes()) == epochs, fault
        shown = epochs_of((out / "metrics.jsonl").read_text()) if (out / "metrics.jsonl").exists() else []
        assert shown == list(range(1, len(shown) + 1)) and len(shown) in (epochs - 1, epochs), (fault, shown)
        if fault.startswith("kill:mid-write"):
            # the real writer, killed before its rename: epoch 2's checkpoint whole under its temp name, epoch 1's in place
            [torn] = out.glob(".checkpoint.pt.*.tmp")
            assert checkpoint_epoch(torn.read_bytes()) == 2
    assert forked.run(train_args(tiny_prepared, str(out)), log=log) == 0, log.read_text()[-3000:]
    assert_same_as_baseline(baseline, (out / "metrics.jsonl").read_text(), json.loads((out / "summary.json").read_text()),
                            (out / "model.pt").read_bytes())
    assert log.read_text().count("resumed from") == len(LOCAL_KILLS)  # every rerun found a checkpoint


@pytest.fixture
def s3(s3_server):
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def upload_prepared(s3, bucket: str, prepared: str, key: str) -> str:
    for f in Path(prepared).iterdir():
        if f.name != "manifest.json":
            s3.upload_file(str(f), bucket, f"{key}/{f.name}")
    s3.upload_file(str(Path(prepared) / "manifest.json"), bucket, f"{key}/manifest.json")  # last, as prepare does
    return f"s3://{bucket}/{key}"


def keys(s3, bucket: str, prefix: str) -> set[str]:
    return {o["Key"].rsplit("/", 1)[-1] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


@pytest.mark.slow
@pytest.mark.s3
def test_s3_run_killed_at_five_points_resumes_to_the_uninterrupted_result(tiny_prepared, s3_env, s3, s3_server, tmp_path, baseline):
    env, bucket = s3_env
    prepared = upload_prepared(s3, bucket, tiny_prepared, "meli/prepared/tiny")
    prefix = f"meli/sweeps/killed/{RUN}"
    out = f"s3://{bucket}/{prefix}"
    log = tmp_path / "train.log"

    def get(name: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()

    with FaultProxy(s3_server) as proxy:
        child_env = {"AWS_ENDPOINT_URL": proxy.url, "MELI_CACHE": str(tmp_path / "cache"), "S3_MAX_ATTEMPTS": "4"}

        # 1. mid-epoch, before anything was saved: the run leaves nothing behind.
        code = forked.run(train_args(prepared, out), env=child_env, log=log, fault="kill:mid-epoch:epoch-1")
        assert code == -signal.SIGKILL and keys(s3, bucket, prefix) == set()

        # 2. the first model.pt upload cut off halfway: the proxy holds half of it, the process is killed.
        stall = proxy.add(Fault("stall", method="PUT", path="/model.pt"))
        pid = forked.start(train_args(prepared, out), env=child_env, log=log)
        try:
            assert proxy.stalled.wait(60), log.read_text()[-3000:]
        finally:
            os.kill(pid, signal.SIGKILL)
        assert forked.wait(pid) == -signal.SIGKILL and stall.times == 0
        assert keys(s3, bucket, prefix) == set()  # no partial object, no checkpoint

        # 3. after the first checkpoint, before metrics.jsonl.
        code = forked.run(train_args(prepared, out), env=child_env, log=log, fault="kill:after-write:checkpoint.pt")
        assert code == -signal.SIGKILL and checkpoint_epoch(get("checkpoint.pt")) == 1
        assert "metrics.jsonl" not in keys(s3, bucket, prefix) and "summary.json" not in keys(s3, bucket, prefix)

        # 4. epoch 2's metrics.jsonl PUT (its second: the first is the resume's rewrite) stalled halfway, the
        #    process killed there: S3 still holds the old object, whole.
        proxy.clear()
        proxy.add(Fault("stall", method="PUT", path="/metrics.jsonl", skip=1))
        pid = forked.start(train_args(prepared, out), env=child_env, log=log)
        try:
            assert proxy.stalled.wait(60), log.read_text()[-3000:]
        finally:
            os.kill(pid, signal.SIGKILL)
        assert forked.wait(pid) == -signal.SIGKILL and checkpoint_epoch(get("checkpoint.pt")) == 2
        assert epochs_of(get("metrics.jsonl").decode()) == [1]

        # 5. every epoch done, before the summary.
        code = forked.run(train_args(prepared, out), env=child_env, log=log, fault="kill:before-write:summary.json")
        assert code == -signal.SIGKILL and checkpoint_epoch(get("checkpoint.pt")) == EPOCHS
        assert "summary.json" not in keys(s3, bucket, prefix)

        # The last rerun also meets two 503s and a dropped connection, and rides them out.
        proxy.clear()
        proxy.add(Fault("status", status=503, times=2))
        proxy.add(Fault("drop", method="PUT", times=1))
        assert forked.run(train_args(prepared, out), env=child_env, log=log) == 0, log.read_text()[-3000:]
        assert proxy.count("status 503") == 2 and proxy.count("drop") == 1
    assert_same_as_baseline(baseline, get("metrics.jsonl").decode(), json.loads(get("summary.json")), get("model.pt"))


# --- 2. the product's own writer, killed mid-write -----------------------------------------------

OLD, NEW = b"old " * 1000, b"new " * 5000  # the object before, and what the killed write was writing


def fork(work) -> int:
    """Run work() in a forked child of the test process; its exit status is 0 when work returns. Returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        work()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def test_local_writer_killed_between_its_write_and_its_rename_leaves_the_old_file(tmp_path):
    """storage.write_bytes in a real process, stopped on the backend's rename and killed there."""
    from job import storage

    target = tmp_path / "run" / "summary.json"
    storage.write_bytes(str(target), OLD)
    stopped, tell = os.pipe()

    def stop_before_rename(tmp, dest) -> None:
        os.write(tell, b"x")  # here the new file is written and synced under its temp name
        while True:
            signal.pause()  # until the test kills this process

    def write() -> None:
        storage.BACKENDS["local"] = storage.LocalBackend(replace=stop_before_rename)
        storage.write_bytes(str(target), NEW)

    pid = fork(write)
    os.close(tell)
    try:
        ready, _, _ = select.select([stopped], [], [], 60)
        # EOF instead: the child ended, and its write never went through a rename
        assert ready and os.read(stopped, 1) == b"x", "the write finished without a rename: it wrote in place"
        [temp] = target.parent.glob(".summary.json.*.tmp")
        assert temp.read_bytes() == NEW and storage.read_bytes(str(target)) == OLD  # a reader sees the old file
    finally:
        os.kill(pid, signal.SIGKILL)
        os.close(stopped)
    assert forked.wait(pid) == -signal.SIGKILL
    assert target.read_bytes() == OLD
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["summary.json"]


@pytest.mark.slow
@pytest.mark.s3
def test_s3_writer_killed_with_its_put_stalled_leaves_the_old_object(s3_env, s3_server, s3):
    """storage.write_bytes in a real process, its one PUT held halfway by the proxy, killed there."""
    env, bucket = s3_env
    from job import storage

    key = "run/summary.json"
    s3.put_object(Bucket=bucket, Key=key, Body=OLD)
    with FaultProxy(s3_server) as proxy:
        proxy.add(Fault("stall", method="PUT", path=f"/{key}"))

        def write() -> None:
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            storage.s3_client.cache_clear()
            storage.write_bytes(f"s3://{bucket}/{key}", NEW)

        pid = fork(write)
        try:
            assert proxy.stalled.wait(60), "the PUT never reached the proxy"
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == OLD  # half of NEW is on its way
        finally:
            os.kill(pid, signal.SIGKILL)
        assert forked.wait(pid) == -signal.SIGKILL
        assert proxy.count("stall", method="PUT") == 1 and proxy.count("forward", method="PUT") == 0
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == OLD


# --- 3. S3 faults: retried with backoff, then one clear line, nothing partial marked complete --------

@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("fault", [dict(kind="status", status=503, times=2), dict(kind="status", status=500, times=2),
                                   dict(kind="drop", times=2), dict(kind="hang", times=1)],
                         ids=["503", "500", "dropped", "slow"])
def test_transient_s3_faults_are_retried(s3_env, s3_server, fault, monkeypatch):
    env, bucket = s3_env
    from job import storage

    with FaultProxy(s3_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("S3_MAX_ATTEMPTS", "4")
        if fault["kind"] == "hang":
            monkeypatch.setenv("S3_READ_TIMEOUT", "2")  # seconds: the store never answers the first PUT; the client gives up
        storage.s3_client.cache_clear()
        proxy.add(Fault(**fault))
        uri = f"s3://{bucket}/x/manifest.json"
        storage.write_json(uri, {"ok": True})
        assert storage.read_json(uri) == {"ok": True}
        # each fault cost one try (the proxy answered it as told), then the write went through
        what = {"status": f"status {fault.get('status')}", "drop": "drop", "hang": "hang"}[fault["kind"]]
        assert proxy.count(what, method="PUT", path="/manifest.json") == fault["times"]
        forwarded = proxy.count("forward", method="PUT", path="/manifest.json")
        # With the default 60 s read timeout nothing else is retried, so that is all; with the short one a slow
        # answer under load is retried as well, which is right too.
        assert forwarded == 1 if fault["kind"] != "hang" else forwarded >= 1
    storage.s3_client.cache_clear()


@pytest.mark.slow
@pytest.mark.s3
def test_permanent_s3_faults_fail_in_one_line_and_mark_nothing_complete(tiny_csv, tiny_prepared, s3_env, s3_server, s3, tmp_path):
    env, bucket = s3_env
    s3.upload_file(str(tiny_csv), bucket, "in/tiny.csv.gz")
    prepared = upload_prepared(s3, bucket, tiny_prepared, "meli/prepared/tiny")
    log = tmp_path / "job.log"
    with FaultProxy(s3_server) as proxy:
        child = {"AWS_ENDPOINT_URL": proxy.url, "S3_MAX_ATTEMPTS": "3", "MELI_CACHE": str(tmp_path / "cache")}

        # prepare: every PUT of the manifest answers 503; the data files land, the manifest never does.
        proxy.add(Fault("status", status=503, method="PUT", path="/manifest.json", times=None))
        log.write_text("")
        code = forked.run(["prepare", "--data", f"s3://{bucket}/in/tiny.csv.gz", "--out", f"s3://{bucket}/p",
                           "--embedding-dim", "16"], env=child, log=log)
        errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in log.read_text()
        assert "manifest.json: S3 error SlowDown (HTTP 503) after 3 attempt(s)" in errors[0]
        assert proxy.count("status 503") == 3  # S3_MAX_ATTEMPTS tries in all
        written = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="p/").get("Contents", [])}
        assert any(k.endswith("/tokens_train.npy") for k in written) and not any(k.endswith("manifest.json") for k in written)

        # train: every connection carrying a checkpoint is dropped; no summary says the run is done.
        proxy.clear()
        proxy.add(Fault("drop", method="PUT", path="/checkpoint.pt", times=None))
        log.write_text("")
        out = f"s3://{bucket}/meli/sweeps/faulty/{RUN}"
        code = forked.run(train_args(prepared, out), env=child, log=log)
        errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in log.read_text(), log.read_text()[-2000:]
        assert "checkpoint.pt: cannot reach S3 after 3 attempt(s) (ConnectionClosedError)" in errors[0]
        assert proxy.count("drop") == 3
        assert keys(s3, bucket, f"meli/sweeps/faulty/{RUN}") == {"model.pt"}  # no checkpoint, metrics or summary

        # everything down (the proxy closes every connection): one line too.
        proxy.clear()
        proxy.add(Fault("drop", times=None))
        log.write_text("")
        code = forked.run(["aggregate", "--out", f"s3://{bucket}/meli", "--sweep", "faulty"], env=child, log=log)
        errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "cannot reach S3" in errors[0] and "Traceback" not in log.read_text()


# --- 4. one failing config never hides the others ---------------------------------------------

def test_nan_loss_stops_the_config_at_once_with_its_reason(tiny_prepared, tmp_path):
    out = tmp_path / "sweeps" / "nan" / "run"
    log = tmp_path / "train.log"
    code = forked.run(train_args(tiny_prepared, str(out), "mlp256:lr=1e30,epochs=5,max_train_rows=600,batch_size=100"), log=log)
    summary = json.loads((out / "summary.json").read_text())
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert code == 3 and len(errors) == 1 and "Traceback" not in log.read_text()
    assert summary["status"] == "failed" and "loss is" in summary["reason"] and "at epoch 1" in summary["reason"]
    assert summary["epochs"] == 0 and not (out / "checkpoint.pt").exists()  # no epoch with a NaN loss is kept


def test_out_of_memory_stops_the_config_and_keeps_its_finished_epochs(tiny_prepared, tmp_path):
    out = tmp_path / "sweeps" / "oom" / RUN
    log = tmp_path / "train.log"
    code = forked.run(train_args(tiny_prepared, str(out)), log=log, fault="oom:mid-epoch:epoch-2")
    summary = json.loads((out / "summary.json").read_text())
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert code == 3 and len(errors) == 1 and "Traceback" not in log.read_text()
    assert summary["status"] == "failed" and summary["reason"].startswith("out of memory at epoch 2")
    assert "batch_size" in summary["reason"]  # says what to change
    assert epochs_of((out / "metrics.jsonl").read_text()) == [1] and checkpoint_epoch((out / "checkpoint.pt").read_bytes()) == 1


@pytest.mark.slow
def test_sweep_with_failing_configs_finishes_the_others_and_reports_every_reason(tiny_csv, tmp_path):
    ok = "mlp256_epochs=2_max_train_rows=600_seed=0"
    oom = "mlp256_epochs=2_max_train_rows=600_seed=1"
    nan = "mlp512_lr=1e30_epochs=2_max_train_rows=600"
    configs = "mlp256:epochs=2,max_train_rows=600,seed=0|1,mlp512:lr=1e30,epochs=2,max_train_rows=600"
    # Each train process of the sweep gets the fault (tests/faultinject); only that run's path matches.
    env = {**os.environ, "MELI_FAULT": f"oom:mid-epoch:{oom}/epoch-2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests" / "faultinject"), os.environ.get("PYTHONPATH")]))}
    proc = run_job("sweep", "--configs", configs, "--data", str(tiny_csv), "--out", str(tmp_path), "--sweep", "failing",
                   "--parallel", "2", "--no-baseline", env=env, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"failed: {', '.join(sorted([nan, oom]))}" in proc.stdout and "Traceback" not in proc.stderr
    report = tmp_path / "sweeps" / "failing" / "report"
    rows = {r["config"]: r for r in json.loads((report / "summary.json").read_text())["rows"]}
    assert rows[ok]["status"] == "ok" and rows[ok]["epochs"] == 2 and rows[ok]["best"] is True
    assert rows[oom]["status"] == "failed" and rows[oom]["reason"].startswith("out of memory at epoch 2")
    assert rows[nan]["status"] == "failed" and "loss is" in rows[nan]["reason"]
    md = (report / "summary.md").read_text()
    assert "out of memory at epoch 2" in md and "loss is" in md
    assert all((report / f).exists() for f in ("comparison.png", "summary.csv", "train_loss.png"))

