"""A tiny end-to-end sweep, on local paths and on S3 (a real moto server), plus resume and S3 errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_job
from job import steps

# Small batches so a few hundred rows make enough optimizer steps; tuned vectors learn fast.
CONFIGS = "hidden50:epochs=3,batch_size=64,lr=3e-3,freeze_embeddings=false,mlp256:epochs=3,batch_size=64,lr=3e-3,freeze_embeddings=false"
RUNS = ["hidden50_epochs=3_batch_size=64_lr=3e-3_freeze_embeddings=false",
        "mlp256_epochs=3_batch_size=64_lr=3e-3_freeze_embeddings=false"]
REPORT_FILES = set(steps.REPORT_FILES)
CHANCE = 1 / 8  # tiny_csv has 8 categories


def check_report(summary: dict, history: dict):
    assert summary["runs"] == 2 and summary["ok"] == 2
    assert sorted(r["config"] for r in summary["rows"]) == sorted(RUNS)
    for row in summary["rows"]:
        assert row["status"] == "ok" and row["epochs"] == 3
        assert row["test_balanced_accuracy"] > 4 * CHANCE, row  # clearly beats chance
        assert row["samples_per_second"] > 0 and row["train_seconds"] > 0
    assert [r["rank"] for r in summary["rows"]] == [1, 2] and summary["rows"][0]["best"]
    for name, lines in history.items():
        losses = [h["train_loss"] for h in lines]
        assert [h["epoch"] for h in lines] == [1, 2, 3]
        assert losses[-1] < losses[0], name  # losses fall


@pytest.mark.slow
def test_local_sweep(tiny_csv, tmp_path):
    proc = run_job("sweep", "--configs", CONFIGS, "--data", str(tiny_csv), "--out", str(tmp_path), "--sweep", "t1",
                   "--no-baseline")  # the neural runs only (tests/test_results.py covers the baseline row)
    report = tmp_path / "sweeps" / "t1" / "report"
    assert f"report: {report}/summary.md" in proc.stdout
    assert {p.name for p in report.iterdir()} == REPORT_FILES
    for png in REPORT_FILES:
        if png.endswith(".png"):
            assert (report / png).read_bytes()[:4] == b"\x89PNG"
    history = {n: [json.loads(x) for x in (tmp_path / "sweeps" / "t1" / n / "metrics.jsonl").read_text().splitlines()]
               for n in RUNS}
    check_report(json.loads((report / "summary.json").read_text()), history)
    md = (report / "summary.md").read_text()
    assert "★" in md and all(n in md for n in RUNS)
    csv_header = (report / "summary.csv").read_text().splitlines()[0].split(",")
    for col in ("config", "status", "epochs", "best_epoch", "test_loss", "test_balanced_accuracy", "train_seconds", "samples_per_second"):
        assert col in csv_header
    for n in RUNS:
        assert {"metrics.jsonl", "summary.json", "checkpoint.pt", "model.pt"} <= {p.name for p in (tmp_path / "sweeps" / "t1" / n).iterdir()}


@pytest.mark.slow
@pytest.mark.s3
def test_s3_sweep(tiny_csv, s3_env):
    import boto3

    env, bucket = s3_env
    s3 = boto3.client("s3")
    s3.upload_file(str(tiny_csv), bucket, "meli/tiny.csv.gz")
    out = f"s3://{bucket}/meli-sweep"
    run_job("sweep", "--configs", CONFIGS, "--data", f"s3://{bucket}/meli/tiny.csv.gz", "--out", out, "--sweep", "s3t",
            "--no-baseline", env=env)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="meli-sweep/")["Contents"]}
    report = {k.rsplit("/", 1)[-1] for k in keys if k.startswith("meli-sweep/sweeps/s3t/report/")}
    assert report == REPORT_FILES
    assert any(k.startswith("meli-sweep/prepared/") and k.endswith("/manifest.json") for k in keys)
    summary = json.loads(s3.get_object(Bucket=bucket, Key="meli-sweep/sweeps/s3t/report/summary.json")["Body"].read())
    history = {n: [json.loads(x) for x in s3.get_object(Bucket=bucket, Key=f"meli-sweep/sweeps/s3t/{n}/metrics.jsonl")["Body"].read().decode().splitlines()]
               for n in RUNS}
    check_report(summary, history)


@pytest.mark.slow
def test_interrupted_run_resumes(tiny_prepared, tmp_path):
    spec = "hidden50:epochs=4,batch_size=64,lr=3e-3"
    whole = tmp_path / "sweeps" / "s" / "whole"
    run_job("train", "--config", spec, "--prepared", tiny_prepared, "--out", str(whole), "--sweep", "s")
    cut = tmp_path / "sweeps" / "s" / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "job", "train", "--config", spec, "--prepared", tiny_prepared, "--out", str(cut), "--sweep", "s"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "metrics.jsonl").exists() or not (cut / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists()
    resumed = run_job("train", "--config", spec, "--prepared", tiny_prepared, "--out", str(cut), "--sweep", "s")
    assert "resumed from" in resumed.stderr
    lines = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2, 3, 4]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, cut))
    assert a["test_balanced_accuracy"] == b["test_balanced_accuracy"] and a["test_loss"] == b["test_loss"]
    # a finished run is left as it is
    again = run_job("train", "--config", spec, "--prepared", tiny_prepared, "--out", str(cut), "--sweep", "s")
    assert "already finished" in again.stderr


@pytest.mark.slow
def test_aggregate_lists_missing_and_failed_runs(tmp_path):
    sweep = tmp_path / "sweeps" / "x"
    (sweep / "hidden50").mkdir(parents=True)
    (sweep / "hidden50" / "summary.json").write_text(json.dumps(
        {"config": "hidden50", "status": "failed", "reason": "loss is nan at epoch 2", "epochs": 1}))
    (sweep / "mlp256").mkdir()
    (sweep / "mlp256" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "validation_loss": 1.0,
                                                                 "validation_balanced_accuracy": 0.5}) + "\n")
    run_job("aggregate", "--out", str(sweep.parent.parent), "--sweep", sweep.name, "--configs", "hidden50,mlp256,cnn100")
    rows = {r["config"]: r for r in json.loads((sweep / "report" / "summary.json").read_text())["rows"]}
    assert rows["hidden50"]["status"] == "failed" and "nan" in rows["hidden50"]["reason"]
    assert rows["mlp256"]["status"] == "incomplete" and "after epoch 1" in rows["mlp256"]["reason"]
    assert rows["cnn100"]["status"] == "missing"
    assert "failed" in (sweep / "report" / "summary.md").read_text()


@pytest.mark.s3
@pytest.mark.parametrize("case", ["no bucket", "no key"])
def test_s3_errors_are_one_line(tmp_path, s3_env, case):
    env, bucket = s3_env
    data = {"no bucket": "s3://no-such-bucket-x/d.csv", "no key": f"s3://{bucket}/nothing/here.csv"}[case]
    proc = run_job("prepare", "--data", data, "--out", str(tmp_path), env=env, check=False)
    expected = {"no bucket": "S3 bucket does not exist", "no key": "no such S3 object"}[case]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: {data}: {expected}\n"


@pytest.mark.s3
def test_bad_credentials_are_one_line(tmp_path, s3_server_with_auth):
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server_with_auth, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG",
           "AWS_SECRET_ACCESS_KEY": "wrong-secret", "AWS_DEFAULT_REGION": "us-east-1", "S3_MAX_ATTEMPTS": "1"}
    proc = run_job("prepare", "--data", "s3://any-bucket/d.csv", "--out", str(tmp_path), env=env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: s3://any-bucket/d.csv: S3 refused the credentials")
    assert proc.stderr.count("\n") == 1 and "wrong-secret" not in proc.stderr
