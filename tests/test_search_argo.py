"""A search on Argo, run as the v4 controller would run it (tests/argo/): rungs of successive halving
as unrolled stages, each listed by a `next` pod from the results in S3, promoted runs going on from their
checkpoints, and the stages a sweep does not reach Skipped.

    .venv/bin/python -m pytest tests/test_search_argo.py

The first part pins the controller's `when` rules that the unrolled DAG relies on, with hand-written manifests;
the second runs `make render`'s Workflow and the chart's WorkflowTemplate on a halving sweep of tiny runs; the
third checks the size estimate that plan refuses too big a sweep with (job/capacity.py) against the harness' nodes.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import re
import subprocess
import sys
import time

import pytest

import argo
from conftest import ROOT
from job import capacity, steps
from job import search as job_search
from test_argo_controller import (  # noqa: F401  (fixtures)
    CHART_REPOSITORY, NAMESPACE, artifact_repository_configmap, assert_report_in_repository, bucket, chart_configmaps,
    container, echo_runs, helm, helm_template, image_env, moto_chart_values, repository_of, run, s3, secrets, workflow,
)
from workflows.dag import Options, reference

# Four trials of tiny LSTMs (3 epochs of 400 rows), halved at ETA 2 from 1 epoch: rungs of 1, 2 and 3 epochs
# training 4, then 2, then 1 run; the tfidf baseline trains once, in the first rung's CPU fan-out.
SPACE = "hidden50:epochs=3,max_train_rows=400,lr=loguniform(1e-3,3e-2)"
SEARCH = {"trials": 4, "halving": 2, "min_epochs": 1}
RUNGS = {"train": 4, "train-r1-k1": 2, "train-r1-k2": 1}  # the GPU fan-out of each stage, and its runs


# --- when: the rules the unrolled stages rely on ------------------------------------------------------


def stage(when: str) -> list[dict]:
    """plan, then a `next` task ruled in or out by `when`, a fan-out over its list that names it, and a join."""
    return [
        {"name": "plan", "template": "plan"},
        {"name": "next", "template": "plan", "depends": "plan", "when": when},
        {"name": "train", "template": "echo", "depends": "next", "when": when,
         "withParam": "{{tasks.next.outputs.parameters.runs}}", "arguments": {"parameters": [
             {"name": "x", "value": "{{item.name}}"}]}},
        {"name": "aggregate", "template": "echo", "depends": "(train.Succeeded || train.Skipped)",
         "arguments": {"parameters": [{"name": "x", "value": "done"}]}},
    ]


def plan_with_shape(*runs: dict) -> dict:
    """A template writing a JSON list (output `runs`) and the number 1 (output `rounds`), as plan does."""
    script = "import sys; open(sys.argv[1], 'w').write(sys.argv[3]); open(sys.argv[2], 'w').write('1')"
    return container("plan", script, "/tmp/runs.json", "/tmp/rounds", json.dumps(list(runs)), outputs={"parameters": [
        {"name": "runs", "valueFrom": {"path": "/tmp/runs.json"}}, {"name": "rounds", "valueFrom": {"path": "/tmp/rounds"}}]})


def echo() -> dict:
    return container("echo", "import sys; print(sys.argv[1])", "{{inputs.parameters.x}}",
                     inputs={"parameters": [{"name": "x"}]})


def test_a_stage_its_when_rules_out_is_skipped_and_holds_nothing_back(tmp_path):
    """dag.go executeDAGTask: a task whose `when` is false is a Skipped node; a fan-out whose `when` is false
    finds no items, even where its withParam names a task that never ran (resolveDependencyReferences resolves
    the `when` first): Skipped, empty params. A plain dependency counts Skipped as done."""
    manifest = workflow([plan_with_shape({"name": "a"}), echo()], stage("{{tasks.plan.outputs.parameters.rounds}} >= 2"))
    result = run(manifest, tmp_path)
    assert result.phase == "Succeeded", result.describe()
    (next_,) = result.task("next")
    assert next_.phase == "Skipped" and next_.message == "when '1 >= 2' evaluated false"
    (train,) = result.task("train")
    assert train.phase == "Skipped" and train.message == "Skipped, empty params"
    assert [n.phase for n in result.task("aggregate")] == ["Succeeded"]


def test_a_stage_its_when_rules_in_runs_its_fan_out(tmp_path):
    when = "{{tasks.plan.outputs.parameters.rounds}} >= 1 && 3 > 2"
    result = run(workflow([plan_with_shape({"name": "a"}, {"name": "b"}), echo()], stage(when)), tmp_path)
    assert result.phase == "Succeeded", result.describe()
    assert [n.phase for n in result.task("next")] == ["Succeeded"]
    assert sorted(n.inputs["x"] for n in result.pods("echo") if n.inputs["x"] != "done") == ["a", "b"]


def test_a_when_that_is_not_boolean_errors_the_task(tmp_path):
    result = run(workflow([plan_with_shape({"name": "a"}), echo()], stage("{{tasks.plan.outputs.parameters.rounds}}")),
                 tmp_path)
    (next_,) = result.task("next")
    assert next_.phase == "Error" and next_.message == "Expected boolean evaluation for '1'. Got 1", next_.message
    assert result.phase == "Error", result.describe()


# --- a halving sweep, end to end ------------------------------------------------------------------------


def render_search(configs: str, bucket: str, settings: dict) -> dict:
    """`make render CONFIGS=... TRIALS=... HALVING=...`'s Workflow, on the moto bucket."""
    flags = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "render", "--configs", configs, *flags,
                           "--data", f"s3://{bucket}/data/tiny.csv.gz", "--embeddings", "none", "--out", f"s3://{bucket}/meli",
                           "--artifact-repository", CHART_REPOSITORY],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import yaml

    return yaml.safe_load(proc.stdout)


def trained(result: argo.WorkflowResult, task: str) -> dict:
    """A fan-out's train nodes (not Skipped) by run name."""
    return {n.inputs["name"]: n for n in result.task(task) if n.type != "Skipped" and "name" in n.inputs}


def val_bacc(s3, run_bucket: str, sweep: str, run: str, epoch: int) -> float:
    """A run's validation balanced accuracy at its best epoch up to `epoch`, from its metrics.jsonl in S3."""
    body = s3.get_object(Bucket=run_bucket, Key=f"meli/sweeps/{sweep}/{run}/metrics.jsonl")["Body"].read().decode()
    rows = [json.loads(line) for line in body.splitlines() if line.strip()]
    return max(r["validation_balanced_accuracy"] for r in rows if r["epoch"] <= epoch)


def assert_halving_ran(result: argo.WorkflowResult, s3, run_bucket: str) -> None:
    """Rung sizes 4, 2, 1; the best half of each rung promoted; each promoted run resumed where it stopped."""
    assert result.phase == "Succeeded", result.describe()
    rungs = [trained(result, task) for task in RUNGS]
    assert [len(runs) for runs in rungs] == list(RUNGS.values()), result.describe()
    assert list(trained(result, "train-on-cpu")) == ["tfidf"]  # the baseline: once, in its CPU pod
    assert trained(result, "train-r1-k1-on-cpu") == {} and trained(result, "train-r1-k2-on-cpu") == {}
    budgets = [1, 2, 3]
    for k in range(1, len(rungs)):
        before, after = rungs[k - 1], rungs[k]
        scores = {name: val_bacc(s3, run_bucket, result.name, name, budgets[k - 1]) for name in before}
        best = sorted(before, key=lambda n: (-scores[n], n))[:len(after)]
        assert sorted(after) == sorted(best), (k, scores)  # the top 1/ETA by validation balanced accuracy
        for name, node in after.items():
            pod = result.nodes[node.children[-1]]
            assert re.search(rf"resumed from s3://\S+/{re.escape(name)}/checkpoint.pt after epoch {budgets[k - 1]}\b",
                             pod.log), pod.log[-2000:]
            assert node.inputs["epochs"] == str(budgets[k])
    labels = [n.display_name for runs in rungs for n in runs.values()]
    assert len(set(labels)) == len(labels) and all(argo.DISPLAY_NAME.match(x) for x in labels), labels


@pytest.mark.slow
@pytest.mark.s3
def test_rendered_halving_sweep_promotes_and_resumes_runs_and_saves_the_report(tmp_path, s3, s3_server, bucket,
                                                                                secrets, helm):
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    manifest = render_search(SPACE, bucket, SEARCH)
    tasks = [t["name"] for t in manifest["spec"]["templates"][-1]["dag"]["tasks"]]
    assert [t for t in tasks if t.startswith("next")] == ["next-r1-k1", "next-r1-k2"]  # unrolled to its own shape
    result = run(manifest, tmp_path, configmaps=[repository_cm], secrets=secrets, image_env=image_env)
    assert_halving_ran(result, s3, bucket)
    summary = assert_report_in_repository(s3, result, repository_of(repository_cm))
    rows = {r["config"]: r for r in summary["rows"]}
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows.values())
    assert summary["search"]["halving_eta"] == 2 and summary["search"]["rung_epochs"] == [1, 2, 3]
    # what one Workflow holds (job/capacity.py): the nodes as the controller keeps and compresses them
    nodes = {n.name: node_status(result, n) for n in result.nodes.values()}
    assert len(nodes) <= capacity.nodes(3, 4 + 1 + 2 + 1), result.describe()
    assert compressed(nodes) / len(nodes) <= capacity.NODE_BYTES, compressed(nodes) / len(nodes)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.helm
def test_chart_template_runs_a_halving_sweep_and_skips_the_stages_it_does_not_reach(tmp_path, s3, s3_server, bucket,
                                                                                    secrets, helm):
    """The chart's WorkflowTemplate carries MAX_ROUNDS x MAX_RUNGS stages; `make submit ... TRIALS=4 HALVING=2`
    sends only its parameters, and the stages past the sweep's shape are Skipped."""
    docs = helm_template(helm, *moto_chart_values(bucket, s3_server), f"workflowTemplate.parameters.data=s3://{bucket}/data/tiny.csv.gz",
                         "workflowTemplate.parameters.embeddings=none")
    wft = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    options = dataclasses.replace(Options(), out=f"s3://{bucket}/meli", namespace=NAMESPACE, **SEARCH)
    submitted = reference(SPACE, options, {"out", *SEARCH}).build().model_dump(by_alias=True, exclude_none=True, mode="json")
    result = run(submitted, tmp_path, configmaps=chart_configmaps(docs), secrets=secrets, workflow_templates=[wft],
                 image_env=image_env)
    assert_halving_ran(result, s3, bucket)
    skipped = [n for n in result.nodes.values() if n.phase == "Skipped"]
    assert {n.name.split(".")[-1] for n in skipped if n.type == "Skipped"} >= {"next-r1-k3", "train-r1-k3", "next-r2-k0",
                                                                                f"train-r{steps.MAX_ROUNDS}-k{steps.MAX_RUNGS - 1}"}
    assert not any(n.type == "Pod" for n in result.nodes.values() if re.search(r"\.(next|train)-r(1-k[34]|[2-9])", n.name))
    assert_report_in_repository(s3, result, repository_of(artifact_repository_configmap(docs)))


@pytest.mark.slow
@pytest.mark.s3
def test_a_train_pod_killed_in_a_later_rung_resumes_from_that_rungs_checkpoint(tmp_path, s3, s3_server, bucket,
                                                                               secrets, helm):
    """Two rungs (1, then 3 epochs): a promoted run's pod is killed once its epoch-2 checkpoint is in S3; the
    retry goes on from that checkpoint, not from rung 0's or from scratch."""
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    # 75 batches an epoch (1,200 rows of 16): epoch 3 is still running when the kill lands after epoch 2's checkpoint
    slow = "hidden50:epochs=3,max_train_rows=1200,batch_size=16,lr=loguniform(1e-3,3e-2)"
    manifest = render_search(slow, bucket, {"trials": 2, "halving": 3, "min_epochs": 1})
    seen: dict = {}

    def checkpoint_tag(pod: argo.PodView) -> str | None:
        out = pod.command[pod.command.index("--out") + 1]  # s3://bucket/prefix/sweeps/<workflow>/<run>
        run_bucket, prefix = out[len("s3://"):].split("/", 1)
        found = s3.list_objects_v2(Bucket=run_bucket, Prefix=f"{prefix}/checkpoint.pt").get("Contents")
        return found[0]["ETag"] if found else None

    def after_epoch_2(line: str, pod: argo.PodView) -> bool:
        """Kill once epoch 2's checkpoint has replaced the one the pod resumed from (epoch 1's, rung 0's)."""
        if re.search(r"resumed from \S+ after epoch 1\b", line):
            seen["resumed from"] = checkpoint_tag(pod)
            return False
        if not re.search(r" epoch 2/3: train loss", line):
            return False
        deadline = time.time() + 60
        while time.time() < deadline:
            if checkpoint_tag(pod) not in (None, seen["resumed from"]):
                return True
            time.sleep(0.05)
        raise AssertionError("no epoch-2 checkpoint within 60 s")

    preempt = argo.Preempt(template="train", node="train-r1-k1(", when=after_epoch_2)
    result = argo.run_workflow(manifest, argo.Cluster(namespace=NAMESPACE, configmaps=[repository_cm], secrets=secrets,
                                                      image_env=image_env), tmp_path / "pods", [preempt])
    assert result.phase == "Succeeded", result.describe()
    (promoted,) = trained(result, "train-r1-k1").values()
    killed, resumed = (result.nodes[c] for c in promoted.children)
    assert preempt.fired == [killed.pod_name] and killed.phase == "Failed" and promoted.retries == 1
    assert re.search(r"resumed from s3://\S+/checkpoint.pt after epoch 1\b", killed.log)
    assert re.search(r"resumed from s3://\S+/checkpoint.pt after epoch 2\b", resumed.log), resumed.log[-2000:]
    assert "epoch 3/3: train loss" in resumed.log and "epoch 2/3: train loss" not in resumed.log


# --- what one Workflow holds --------------------------------------------------------------------------------


def node_status(result: argo.WorkflowResult, node: argo.Node) -> dict:
    """A node as the controller keeps it in status.nodes (workflow_types.go NodeStatus), with this run's values."""
    ids = {name: f"{result.name}-{abs(hash(name)) % 10**10}" for name in result.nodes}
    stamp = "2026-12-02T10:00:00Z"
    status = {
        "id": ids[node.name], "name": node.name, "displayName": node.display_name or node.name.rsplit(".", 1)[-1],
        "type": node.type, "templateName": node.template, "templateScope": "local/", "phase": node.phase,
        "boundaryID": ids.get(node.boundary, ""), "message": node.message, "startedAt": stamp, "finishedAt": stamp,
        "progress": "1/1", "resourcesDuration": {"cpu": 12, "memory": 345, "nvidia.com/gpu": 12},
        "children": [ids[c] for c in node.children], "hostNodeName": "gpu-node-a1b2c3",
        "inputs": {"parameters": [{"name": k, "value": v} for k, v in node.inputs.items()]},
        "outputs": {"parameters": [{"name": k, "value": v} for k, v in node.outputs.items()],
                    "artifacts": [{"name": a.name, "s3": {"key": a.key}} for a in node.artifacts],
                    **({"exitCode": node.exit_code} if node.exit_code is not None else {})},
    }
    return status


def compressed(obj) -> int:
    """Bytes of the controller's compressed nodes: gzip, then base64 (util/file: CompressEncodeString)."""
    return len(base64.b64encode(gzip.compress(json.dumps(obj, separators=(",", ":")).encode())))


def test_size_estimate_bounds_the_nodes_of_a_search_and_the_stored_template(helm):
    """capacity.NODE_BYTES bounds a node of the status as the controller compresses it, measured on the nodes
    the harness makes for a halving sweep; FIXED_BYTES bounds the Workflow without its nodes: the sweep's own
    spec and the chart's WorkflowTemplate spec stored in its status."""
    docs = helm_template(helm)
    wft = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    options = dataclasses.replace(Options(), **SEARCH)
    submitted = reference(SPACE, options, set(SEARCH)).build().model_dump(by_alias=True, exclude_none=True, mode="json")
    fixed = len(json.dumps(submitted)) + len(json.dumps(wft["spec"])) + 4096  # + metadata and status fields
    assert fixed <= capacity.FIXED_BYTES


def test_plan_refuses_a_sweep_past_the_workflow_size_or_the_stages_the_dag_carries(tmp_path):
    def plan(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "job", "plan", "--configs", SPACE, "--baseline", "false", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    big = plan("--trials", "4000", "--max-workflow-bytes", str(capacity.WORKFLOW_SIZE_LIMIT))
    assert big.returncode != 0 and big.stderr.count("\n") == 1, big.stderr
    assert "MAX_WORKFLOW_SIZE" in big.stderr and "offloading" in big.stderr and "--trials" in big.stderr
    assert plan("--trials", "4000", "--max-workflow-bytes", "0").returncode == 0  # offloading: no limit
    deep = plan("--trials", "4", "--halving", "2", "--max-rounds", "1", "--max-rungs", "2")
    assert deep.returncode != 0 and "carries 1 of 2" in deep.stderr and deep.stderr.count("\n") == 1, deep.stderr
    ok = plan("--trials", "4", "--halving", "2", "--max-rounds", "1", "--max-rungs", "3", "--shape-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "rounds").read_text() == "1" and (tmp_path / "rungs").read_text() == "3"


def test_largest_default_sweep_is_what_the_docs_say():
    """docs/search.md quotes the largest sweep a default install holds; it must be what the estimate gives."""
    stages = steps.MAX_ROUNDS * steps.MAX_RUNGS
    largest = capacity.largest_sweep(stages)
    text = (ROOT / "docs" / "search.md").read_text()
    assert f"{largest:,} run-trainings" in text, largest
    shape = job_search.shape_of(SPACE, False, job_search.Search(**SEARCH))
    assert shape.rungs == 3
