"""Several runs per GPU pod (runs_per_gpu): plan's and next's pods, the train-group step, and sweeps of them run
as the Argo v4 controller would run them (tests/argo/) on the moto S3 server.

    .venv/bin/python -m pytest tests/test_runs_per_gpu.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

import argo
from conftest import ROOT, run_job
from job import configs, fanout, steps
from job.train_group import parse_runs
from job.errors import UserError
from test_argo_controller import (  # noqa: F401  (fixtures)
    NAMESPACE, artifact_repository_configmap, assert_report_in_repository, bucket, helm, helm_template, image_env,
    moto_chart_values, repository_of, run, s3, secrets,
)
from test_search_argo import RUNGS, SEARCH, SPACE, render_search, trained

# Five tiny LSTMs (one epoch of 400 rows) in a grid: at two runs a GPU pod, three pods.
FIVE = "hidden50:epochs=1,max_train_rows=400,lr=1e-3|3e-3|1e-2|3e-2|1e-1"


def item(name: str, label: str | None = None, round_: int = 1, rung: int = 0) -> dict:
    return {"name": name, "spec": name, "label": label or name, "epochs": 1, "round": round_, "rung": rung}


# --- pods: how plan and next group the GPU runs ------------------------------------------------------------


def test_gpu_runs_go_in_pods_of_up_to_k_whose_label_shows_their_runs():
    items = [item(n) for n in ("a", "b", "c", "d", "e")]
    pods = fanout.gpu_pods(items, 2)
    assert [p["label"] for p in pods] == ["a.b", "c.d", "e"]
    assert [[i["name"] for i in json.loads(p["runs"])] for p in pods] == [["a", "b"], ["c", "d"], ["e"]]
    assert json.loads(pods[0]["runs"])[0] == items[0]  # each run as plan listed it: train-group trains exactly that
    # a stage's prefix once; too long a label hashed, still a valid display name and unique
    staged = fanout.gpu_pods([item(n, f"r2k1-{n}", 2, 1) for n in ("hidden50", "hidden100")], 2)
    assert staged == [{"label": "r2k1-hidden50.hidden100", "runs": staged[0]["runs"], "round": 2, "rung": 1}]
    long = fanout.gpu_pods([item(f"hidden100-lr-0.00{i}{'x' * 20}") for i in range(8)], 4)
    assert len({p["label"] for p in long}) == 2
    assert all(configs.DISPLAY_NAME.match(p["label"]) for p in long), long


def test_plan_fills_runs_or_groups_never_both(tmp_path):
    def plan(k: int) -> dict:
        files = {name: tmp_path / f"{name}-{k}.json" for name in ("runs", "cpu-runs", "groups")}
        cmd = steps.plan(FIVE, "true", result_file=str(files["runs"]), cpu_result_file=str(files["cpu-runs"]),
                         runs_per_gpu=k, group_result_file=str(files["groups"]))
        proc = subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return {name: json.loads(f.read_text()) for name, f in files.items()}

    solo, paired = plan(1), plan(2)
    assert len(solo["runs"]) == 5 and solo["groups"] == [] and [i["name"] for i in solo["cpu-runs"]] == ["tfidf"]
    assert paired["runs"] == [] and paired["cpu-runs"] == solo["cpu-runs"]  # the baseline keeps a CPU pod of its own
    assert [json.loads(p["runs"]) for p in paired["groups"]] == [solo["runs"][0:2], solo["runs"][2:4], solo["runs"][4:]]


def test_plan_refuses_no_runs_per_gpu_in_one_line(tmp_path):
    cmd = steps.plan("hidden50", "true", result_file=str(tmp_path / "r"), runs_per_gpu=0, group_result_file=str(tmp_path / "g"))
    proc = subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --runs-per-gpu 0: must be >= 1 (1: a pod per run)"


@pytest.mark.parametrize("text, message", [
    ("nope", "--runs: not JSON"),
    ("[]", "--runs: expected a non-empty JSON list"),
    ('[{"name": "a"}]', "--runs: run 'a' lacks spec, epochs, round, rung"),
    (json.dumps([item("a"), item("a")]), "--runs: a run is listed twice (a)"),
])
def test_train_group_refuses_a_malformed_list_of_runs(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_runs(text)


# --- on the harness ------------------------------------------------------------------------------------------


def pods_of(result: argo.WorkflowResult, task: str) -> dict:
    """A train-group fan-out's nodes (not Skipped) by the names of their runs."""
    return {tuple(r["name"] for r in json.loads(n.inputs["runs"])): n
            for n in result.task(task) if n.type != "Skipped" and "runs" in n.inputs}


@pytest.mark.slow
@pytest.mark.s3
def test_five_runs_at_two_a_gpu_make_three_train_pods_and_the_whole_report(tmp_path, s3, s3_server, bucket, secrets, helm):
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    manifest = render_search(FIVE, bucket, {"runs_per_gpu": 2})
    result = run(manifest, tmp_path, configmaps=[repository_cm], secrets=secrets, image_env=image_env)
    assert result.phase == "Succeeded", result.describe()
    pods = pods_of(result, "train-group")
    assert [len(names) for names in pods] == [2, 2, 1] and len(result.pods("train-group")) == 3, result.describe()
    assert result.pods("train") == [] and [n.phase for n in result.task("train")] == ["Skipped"]
    assert list(trained(result, "train-on-cpu")) == ["tfidf"]
    for names, node in pods.items():
        # the Argo UI shows each pod as its runs (fanout.gpu_pods), a valid display name (operator.go executeTemplate)
        assert argo.DISPLAY_NAME.match(node.display_name) and node.display_name.count(".") >= len(names) - 1
        (pod,) = (result.nodes[c] for c in node.children)
        for name in names:  # each run trained in its own process, its lines tagged with its name
            assert re.search(rf"^\[{re.escape(name)}\] .* done: test loss", pod.log, re.M), pod.log[-2000:]
        assert set(json.loads(pod.outputs["balanced-accuracies"])) == set(names)
    summary = assert_report_in_repository(s3, result, repository_of(repository_cm))
    rows = {r["config"]: r for r in summary["rows"]}
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows.values())
    for name in (n for names in pods for n in names):  # each run's own folder, exactly as a solo run's
        keys = {o["Key"].rsplit("/", 1)[-1] for o in
                s3.list_objects_v2(Bucket=bucket, Prefix=f"meli/sweeps/{result.name}/{name}/")["Contents"]}
        assert {"metrics.jsonl", "checkpoint.pt", "model.pt", "summary.json"} <= keys, (name, keys)


@pytest.mark.slow
@pytest.mark.s3
def test_halving_with_two_runs_a_gpu_promotes_and_resumes_runs_in_pods(tmp_path, s3, s3_server, bucket, secrets, helm):
    """Rungs of 4, 2 and 1 runs make 2, 1 and 1 pods; a promoted run goes on from its checkpoint in its new pod."""
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    result = run(render_search(SPACE, bucket, {**SEARCH, "runs_per_gpu": 2}), tmp_path, configmaps=[repository_cm],
                 secrets=secrets, image_env=image_env)
    assert result.phase == "Succeeded", result.describe()
    rungs = [pods_of(result, f"{task}-group") for task in RUNGS]
    assert [sorted(len(names) for names in rung) for rung in rungs] == [[2, 2], [2], [1]], result.describe()
    assert all(trained(result, task) == {} for task in RUNGS)  # no solo GPU pod
    promoted = {n for rung in rungs[1:] for names in rung for n in names}
    first = {n for names in rungs[0] for n in names}
    assert promoted <= first and len(first) == 4
    for budget, rung in ((1, rungs[1]), (2, rungs[2])):
        for names, node in rung.items():
            log = result.nodes[node.children[-1]].log
            for name in names:
                assert re.search(rf"resumed from s3://\S+/{re.escape(name)}/checkpoint.pt after epoch {budget}\b", log)
    labels = [n.display_name for rung in rungs for n in rung.values()]
    assert len(set(labels)) == len(labels) and all(argo.DISPLAY_NAME.match(x) and x.startswith("r1k") for x in labels)
    summary = assert_report_in_repository(s3, result, repository_of(repository_cm))
    assert len(summary["rows"]) == 5 and all(r["status"] == "ok" for r in summary["rows"])


@pytest.mark.slow
@pytest.mark.s3
def test_a_preempted_pod_starts_both_its_runs_again_and_one_resumes_from_its_checkpoint(tmp_path, s3, s3_server, bucket, secrets, helm):
    """The pod is killed once one of its runs has its epoch-2 checkpoint in S3; the retry starts both runs
    again, and that run goes on from its checkpoint."""
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    # 75 batches an epoch (1,200 rows of 16): epoch 3 is still running when the kill lands after epoch 2's checkpoint
    two = "hidden50:epochs=3,max_train_rows=1200,batch_size=16,lr=1e-3|1e-2"
    manifest = render_search(two, bucket, {"runs_per_gpu": 2})
    killed_run: list = []

    def after_epoch_2(line: str, pod: argo.PodView) -> bool:
        found = re.match(r"\[(\S+)\] .* epoch 2/3: train loss", line)
        if not found:
            return False
        name = found.group(1)
        deadline = time.time() + 60
        while time.time() < deadline:  # metrics.jsonl is rewritten after checkpoint.pt: two lines, epoch 2 is kept
            key = f"meli/sweeps/{pod.command[pod.command.index('--sweep') + 1]}/{name}/metrics.jsonl"
            try:
                lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
            except s3.exceptions.NoSuchKey:
                lines = []
            if len(lines) >= 2:
                killed_run.append(name)
                return True
            time.sleep(0.05)
        raise AssertionError("no epoch-2 checkpoint within 60 s")

    preempt = argo.Preempt(template="train-group", when=after_epoch_2)
    result = argo.run_workflow(manifest, argo.Cluster(namespace=NAMESPACE, configmaps=[repository_cm], secrets=secrets,
                                                      image_env=image_env), tmp_path / "pods", [preempt])
    assert result.phase == "Succeeded", result.describe()
    ((names, node),) = pods_of(result, "train-group").items()
    killed, retried = (result.nodes[c] for c in node.children)
    assert preempt.fired == [killed.pod_name] and killed.phase == "Failed" and node.retries == 1
    (name,) = killed_run
    assert re.search(rf"resumed from s3://\S+/{re.escape(name)}/checkpoint.pt after epoch 2\b", retried.log), retried.log[-3000:]
    for other in names:
        # every run of the pod started again: from its checkpoint when it had one (the other run may not have
        # finished an epoch when the pod was killed), each epoch kept once
        assert re.search(rf"^\[{re.escape(other)}\] .* {re.escape(other)}: lstm on cpu", retried.log, re.M), retried.log[-3000:]
        body = s3.get_object(Bucket=bucket, Key=f"meli/sweeps/{result.name}/{other}/metrics.jsonl")["Body"].read().decode()
        assert [json.loads(x)["epoch"] for x in body.splitlines()] == [1, 2, 3]


# --- on one machine -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_sweep_trains_runs_in_pods_as_argo_does(tiny_csv, tmp_path):
    """`python -m job sweep --runs-per-gpu 2`: the same train-group step, each run in its own folder."""
    three = "hidden50:epochs=1,max_train_rows=400,lr=1e-3|3e-3|1e-2"
    proc = run_job("sweep", "--configs", three, "--data", str(tiny_csv), "--out", str(tmp_path), "--sweep", "t",
                   "--runs-per-gpu", "2")
    assert "round 1, rung 0: 4 run(s) to 1 epochs, in pods of up to 2" in proc.stderr, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "sweeps" / "t" / "report" / "summary.json").read_text())
    names = sorted(r["config"] for r in summary["rows"])
    assert len(names) == 4 and all(r["status"] == "ok" for r in summary["rows"])
    assert "training 2 runs at once on one device" in proc.stderr and "training 1 runs at once" in proc.stderr
    for name in names:
        if name != "tfidf":
            assert f"[{name}] " in proc.stderr
            assert (tmp_path / "sweeps" / "t" / name / "summary.json").exists()
