"""The sweep's manifests run as the Argo v4 controller would run them (tests/argo/), no Kubernetes.

    .venv/bin/python -m pytest tests/test_argo_controller.py

The first part pins each controller rule the harness enforces with a small hand-written manifest whose
pods are one-line Python commands. The second part renders the real sweep (`make render`'s Workflow,
and the Helm chart's WorkflowTemplate submitted by reference), runs it on tiny synthetic data against
the moto S3 server, and asserts what Argo would show: phases, nodes, display names, report artifacts
where the chart's artifact repository puts them, retries after a preemption.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

import argo
import helmbin
from argo import pod_security
from conftest import ROOT
from workflows.dag import RETRY_WHEN, Options, build, reference

CHART = ROOT / "helm" / "meli-sweep"
NAMESPACE = "ml"
CHART_REPOSITORY = "meli-sweep-artifact-repository#meli-sweep-s3"  # the chart's artifact repository by default
S3_SECRET = "meli-sweep-s3"  # the Secret every step's envFrom and the chart's repository name (their defaults)

# Tiny runs: one or two epochs on at most 400 rows of the 3,000-row synthetic set.
TWO_RUNS = "hidden50:epochs=1,max_train_rows=400,hidden100:epochs=1,max_train_rows=400"
ONE_RUN = "hidden50:epochs=1,max_train_rows=400"  # the chart run: one pod is enough to prove the template
ONE_FAILS = "hidden50:epochs=1,max_train_rows=400,mlp256:lr=1e30,epochs=1,max_train_rows=400"  # NaN loss at epoch 1
KILLED = "hidden50:epochs=2,max_train_rows=1200,batch_size=16"  # 75 batches an epoch: time to be killed mid-epoch
KILLED_RUN = "hidden50_epochs=2_max_train_rows=1200_batch_size=16"


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(s3_server):
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def new_bucket(s3, prefix: str) -> str:
    name = f"{prefix}-{time.time_ns() % 10**10}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def bucket(s3, tiny_csv) -> str:
    """One bucket for the module: the data, the sweeps' outputs and the artifact repository."""
    name = new_bucket(s3, "argo")
    s3.upload_file(str(tiny_csv), name, "data/tiny.csv.gz")
    return name


@pytest.fixture(scope="module")
def secrets(s3_server) -> dict:
    """The Kubernetes Secret every step reads through envFrom, with the moto server's keys and endpoint."""
    return {S3_SECRET: {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL": s3_server, "AWS_REGION": "us-east-1"}}


def dockerfile_env(path: Path) -> dict:
    """The ENV a Dockerfile bakes into its image (KEY=value pairs, lines continued with a backslash)."""
    env = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def image_env(image: str) -> dict:
    """The images' ENV: plan, prepare and aggregate run the CPU image (tag suffix -cpu), train the GPU one.

    The code an image installs is this checkout's: PYTHONPATH says so, whatever the venv points at.
    """
    env = dockerfile_env(ROOT / "images" / ("Dockerfile.cpu" if image.endswith("-cpu") else "Dockerfile"))
    return {**env, "PYTHONPATH": str(ROOT)}


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


@pytest.fixture(scope="session")
def helm() -> str:
    return helmbin.helm_binary()


def helm_template(helm: str, *sets: str) -> list[dict]:
    args = [helm, "template", "meli-sweep", str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def moto_chart_values(bucket: str, s3_server: str) -> tuple[str, ...]:
    return (f"s3.bucket={bucket}", f"s3.endpoint={s3_server}", "s3.insecure=true", "s3.region=us-east-1")


def _holds_a_repository(configmap: dict) -> bool:
    values = [yaml.safe_load(v) for v in (configmap.get("data") or {}).values()]
    return any(isinstance(v, dict) and "s3" in v for v in values)


def artifact_repository_configmap(docs: list[dict]) -> dict:
    found = [d for d in docs if d["kind"] == "ConfigMap" and _holds_a_repository(d)]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    return found[0]


def repository_of(configmap: dict, key: str | None = None) -> dict:
    key = key or configmap["metadata"].get("annotations", {}).get(argo.DEFAULT_REPO_KEY) or next(iter(configmap["data"]))
    return yaml.safe_load(configmap["data"][key])


def chart_configmaps(docs: list[dict]) -> list[dict]:
    """Every ConfigMap the chart installs (artifact repository, parameters, env, semaphore): what the cluster holds."""
    return [d for d in docs if d["kind"] == "ConfigMap"]


def render_workflow(configs: str, bucket: str) -> dict:
    """`make render`'s Workflow: python -m workflows.cli render, with S3 inputs in the moto bucket, naming the
    chart's artifact repository (by its default name and key), which is not the namespace's default."""
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", "render", "--configs", configs,
                           "--data", f"s3://{bucket}/data/tiny.csv.gz", "--embeddings", "none", "--out", f"s3://{bucket}/meli",
                           "--artifact-repository", CHART_REPOSITORY],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


# --- small manifests for the rule tests ---------------------------------------------------------------


def container(name: str, script: str, *args: str, **extra) -> dict:
    """A container template running `python -c script args...`, with an emptyDir at /tmp."""
    tmpl = {"name": name, "volumes": [{"name": "tmp", "emptyDir": {}}],
            "container": {"image": "python:3.11-slim", "command": ["python", "-c", script, *args],
                          "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}}
    tmpl.update(extra)
    return tmpl


def workflow(templates: list, tasks: list, target: str | None = None, params: dict | None = None, **spec) -> dict:
    dag = {"tasks": tasks, **({"target": target} if target else {})}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "rules-"},
            "spec": {"entrypoint": "main", "templates": templates + [{"name": "main", "dag": dag}],
                     "arguments": {"parameters": [{"name": k, "value": v} for k, v in (params or {}).items()]}, **spec}}


def echo_runs(*runs: dict) -> dict:
    """A template printing a JSON list to /tmp/runs.json, its output parameter `runs`."""
    script = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    return container("plan", script, "/tmp/runs.json", json.dumps(list(runs)),
                     outputs={"parameters": [{"name": "runs", "valueFrom": {"path": "/tmp/runs.json"}}]})


def run(manifest: dict, tmp_path: Path, **cluster) -> argo.WorkflowResult:
    cluster.setdefault("namespace", NAMESPACE)
    return argo.run_workflow(manifest, argo.Cluster(**cluster), tmp_path / "pods")


# --- expressions, as retryStrategy.expression and depends evaluate them --------------------------------


@pytest.mark.parametrize("status, message, expected", [
    # Preemption: kubelet's graceful node shutdown leaves this pod status message, which inferFailedReason
    # (workflow/controller/operator.go) takes as the node's message, phase Failed (argo-workflows#9880).
    ("Failed", argo.NODE_SHUTDOWN_MESSAGE, True),
    # A node under disk or memory pressure from other pods evicts ours (kubelet pkg/kubelet/eviction/helpers.go:
    # nodeLowMessageFmt); the pod's own /tmp over its sizeLimit is another message, and is not retried.
    ("Failed", "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi. ", True),
    ("Failed", "Usage of EmptyDir volume \"tmp\" exceeds the limit \"20Gi\". ", False),
    # A deleted pod (a reclaimed or lost node): operator.go podReconciliation marks the node Error "pod deleted".
    ("Error", "pod deleted", True),
    # Failures that will never heal: a broken config, and the wait container failing (missing RBAC, bad keys),
    # which inferFailedReason reports as Error "wait: <reason> (exit code N): <message>".
    ("Failed", "main: Error (exit code 3)", False),
    ("Error", "wait: Error (exit code 1): workflowtaskresults.argoproj.io is forbidden", False),
    ("Error", "init: Error (exit code 1): failed to get secret meli-sweep-s3", False),
    ("Error", "Pod failed before main container starts due to CreateContainerConfigError: secret not found", False),
    ("Failed", "pod failed: wait container did not complete successfully", False),
    ("Error", "pod deleted during operation", False),  # only the exact message
])
def test_retry_expression_retries_preemption_only(status, message, expected):
    scope = argo._nest({"lastRetry.status": status, "lastRetry.message": message, "lastRetry.exitCode": "137"})
    assert argo.evaluate(RETRY_WHEN, scope) is expected  # the train step's own expression


def test_expressions_are_strict_about_types_and_names_as_expr_lang_is():
    scope = argo._nest({"lastRetry.exitCode": "137"})
    assert argo.evaluate("lastRetry.exitCode == '137' && !(lastRetry.exitCode == '0')", scope) is True
    with pytest.raises(argo.ArgoError, match="mismatched types"):
        argo.evaluate("lastRetry.exitCode == 137", scope)  # exitCode is a string in Argo's scope
    with pytest.raises(argo.ArgoError, match="unknown name lastRetry.reason"):
        argo.evaluate("lastRetry.reason == 'x'", scope)


def test_bare_task_names_in_depends_mean_succeeded_skipped_or_daemoned():
    deps, logic = argo._task_dependencies({"depends": "plan && prepare"}, {"plan": {}, "prepare": {}})
    assert deps == {"plan": "task", "prepare": "task"}
    assert logic == "(plan.Succeeded || plan.Skipped || plan.Daemoned) && (prepare.Succeeded || prepare.Skipped || prepare.Daemoned)"


# --- validation: what the controller refuses before any pod starts -------------------------------------


def simple(**work_extra) -> tuple[list, list]:
    work = container("work", "print('{{inputs.parameters.name}}')", inputs={"parameters": [{"name": "name"}]}, **work_extra)
    return [work], [{"name": "work", "template": "work", "arguments": {"parameters": [{"name": "name", "value": "a"}]}}]


@pytest.mark.parametrize("metric, problem", [
    ({"name": "meli-sweep_accuracy", "help": "h", "gauge": {"value": "1"}}, "metric name 'meli-sweep_accuracy' is invalid"),
    ({"name": "meli_sweep_accuracy", "help": "h", "gauge": {"value": "1"}, "labels": [{"key": "run-name", "value": "x"}]},
     "metric label 'run-name' is invalid"),
    ({"name": "meli_sweep_accuracy", "gauge": {"value": "1"}}, "must contain a help string"),
])
def test_bad_custom_metric_fails_the_workflow_before_any_pod(tmp_path, metric, problem):
    templates, tasks = simple(metrics={"prometheus": [metric]})
    result = run(workflow(templates, tasks), tmp_path)
    assert result.phase == "Failed" and result.message.startswith("invalid spec: ") and problem in result.message
    assert result.nodes == {}


@pytest.mark.parametrize("depends, problem", [
    ("wrok.Succeeded", "dependency 'wrok' not defined"),
    ("work.Suceeded", "task result 'Suceeded' for task 'work' is invalid"),
])
def test_depends_naming_an_unknown_task_or_result_fails_validation(tmp_path, depends, problem):
    templates, tasks = simple()
    tasks.append({"name": "after", "template": "work", "depends": depends,
                  "arguments": {"parameters": [{"name": "name", "value": "b"}]}})
    result = run(workflow(templates, tasks), tmp_path)
    assert result.phase == "Failed" and problem in result.message


def test_unknown_template_reference_fails_validation(tmp_path):
    templates, tasks = simple()
    tasks[0]["template"] = "wrok"
    result = run(workflow(templates, tasks), tmp_path)
    assert result.phase == "Failed" and "template name 'wrok' undefined" in result.message


@pytest.mark.parametrize("reference", ["{{inputs.parameters.label}}", "{{workflow.parameters.nope}}"])
def test_reference_to_an_undeclared_parameter_fails_validation(tmp_path, reference):
    templates, tasks = simple()
    templates[0]["container"]["command"].append(reference)
    result = run(workflow(templates, tasks), tmp_path)
    assert result.phase == "Failed" and f"failed to resolve {reference}" in result.message


def test_task_output_reference_needs_the_task_as_an_ancestor(tmp_path):
    templates, tasks = simple()
    templates.append(echo_runs({"name": "a"}))
    tasks = [{"name": "plan", "template": "plan"},
             {"name": "work", "template": "work", "arguments": {"parameters": [
                 {"name": "name", "value": "{{tasks.plan.outputs.parameters.runs}}"}]}}]
    result = run(workflow(templates, tasks), tmp_path)
    assert result.phase == "Failed" and "missing dependency 'plan' for parameter 'name'" in result.message


@pytest.mark.slow
@pytest.mark.helm
def test_rendered_sweep_passes_the_controller_validation(helm):
    argo.validate(render_workflow(TWO_RUNS, "meli-sweep")["spec"])
    wft = next(d for d in helm_template(helm) if d["kind"] == "WorkflowTemplate")
    argo.validate(wft["spec"], wft["metadata"])


# --- display names, fan-out and depends -------------------------------------------------------------------


def labelled_fan_out(display: str, *runs: dict) -> dict:
    work = container("work", "print('ran {{inputs.parameters.name}}')",
                     inputs={"parameters": [{"name": "name"}, {"name": "label"}]},
                     annotations={argo.DISPLAY_NAME_KEY: display})
    tasks = [{"name": "plan", "template": "plan"},
             {"name": "work", "template": "work", "depends": "plan", "withParam": "{{tasks.plan.outputs.parameters.runs}}",
              "arguments": {"parameters": [{"name": "name", "value": "{{item.name}}"},
                                           {"name": "label", "value": "{{item.label}}"}]}}]
    return workflow([echo_runs(*runs), work], tasks)


@pytest.mark.parametrize("display", ["train {{inputs.parameters.name}}", "{{inputs.parameters.name}}"])
def test_display_name_with_space_or_equals_errors_the_node(tmp_path, display):
    result = run(labelled_fan_out(display, {"name": "hidden100_lr=3e-4", "label": "hidden100-lr-3e-4"}), tmp_path)
    (node,) = result.task("work")
    assert node.phase == "Error" and "displayName must match the regex" in node.message, result.describe()
    assert node.log == "" and not result.pods("work")  # it never counts as a run
    assert result.phase == "Error"


def test_display_safe_label_names_the_node(tmp_path):
    result = run(labelled_fan_out("{{inputs.parameters.label}}", {"name": "hidden100_lr=3e-4", "label": "hidden100-lr-3e-4"}),
                 tmp_path)
    (node,) = result.task("work")
    assert result.phase == "Succeeded" and node.display_name == "hidden100-lr-3e-4"
    assert node.log == "ran hidden100_lr=3e-4\n"


def test_item_key_the_plan_does_not_write_errors_the_fan_out(tmp_path):
    result = run(labelled_fan_out("{{inputs.parameters.label}}", {"name": "hidden50"}), tmp_path)
    (node,) = result.task("work")
    assert node.phase == "Error" and "failed to resolve {{item.label}}" in node.message


@pytest.mark.parametrize("value, why", [("hidden50,hidden100", "invalid character 'h'"),
                                        ('{"name": "hidden50"}', "cannot unmarshal object")])
def test_with_param_that_is_not_a_json_list_errors_the_task(tmp_path, value, why):
    templates, _ = simple()
    tasks = [{"name": "work", "template": "work", "withParam": "{{workflow.parameters.runs}}",
              "arguments": {"parameters": [{"name": "name", "value": "{{item}}"}]}}]
    result = run(workflow(templates, tasks, params={"runs": value}), tmp_path)
    (node,) = result.task("work")
    assert node.type == "Skipped" and node.phase == "Error"
    assert "withParam value could not be parsed as a JSON list" in node.message and why in node.message
    assert result.phase == "Error"


def fan_out_with_one_failure(target: str) -> dict:
    work = container("work", "import sys; sys.exit(int('{{inputs.parameters.name}}' == 'bad'))",
                     inputs={"parameters": [{"name": "name"}]})
    tasks = [{"name": "work", "template": "work", "withParam": json.dumps(["good", "bad"]),
              "arguments": {"parameters": [{"name": "name", "value": "{{item}}"}]}},
             {"name": "report", "template": "done", "depends": "work.AnySucceeded"},
             {"name": "celebrate", "template": "done", "depends": "work.Succeeded"}]
    return workflow([work, container("done", "print('done')")], tasks, target=target)


def test_depends_sees_a_fan_out_through_its_children(tmp_path):
    result = run(fan_out_with_one_failure("report celebrate"), tmp_path)
    assert [n.phase for n in result.task("work")] == ["Succeeded", "Failed"]
    assert result.nodes[f"{result.name}.work"].phase == "Failed"  # the TaskGroup: its failed child's phase
    assert result.task("report")[0].phase == "Succeeded"  # AnySucceeded
    assert result.task("celebrate")[0].phase == "Omitted"
    assert result.phase == "Failed"  # an omitted target inherits the phase of its failed branch (assessDAGPhase)


def test_dag_is_judged_by_its_targets_only(tmp_path):
    assert run(fan_out_with_one_failure("report"), tmp_path / "a").phase == "Succeeded"
    assert run(fan_out_with_one_failure("report work"), tmp_path / "b").phase == "Failed"


# --- retries ------------------------------------------------------------------------------------------------


def test_backoff_is_waited_before_the_limit_and_expression_decide(tmp_path):
    failing = container("work", "import sys; sys.exit(2)", retryStrategy={
        "limit": 1, "retryPolicy": "Always", "backoff": {"duration": "1m", "factor": 2, "cap": "10m"}})
    result = run(workflow([failing], [{"name": "work", "template": "work"}]), tmp_path)
    (node,) = result.task("work")
    assert node.type == "Retry" and node.retries == 1 and node.message == "No more retries left"
    assert [result.nodes[c].message for c in node.children] == ["main: Error (exit code 2)"] * 2
    assert node.backoffs == [60.0]  # the second failure is not waited for: the limit is reached
    failing["retryStrategy"]["expression"] = RETRY_WHEN
    result = run(workflow([failing], [{"name": "work", "template": "work"}]), tmp_path / "expr")
    (node,) = result.task("work")
    assert node.retries == 0 and node.message == "retryStrategy.expression evaluated to false" and node.backoffs == [60.0]


# --- outputs, artifacts and the artifact repository -----------------------------------------------------------


def writer(**outputs) -> dict:
    """A template that writes /tmp/out/result.txt ("42")."""
    script = "import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/result.txt', 'w').write('42\\n')"
    return container("write", script, "/tmp/out", outputs=outputs)


def repository_configmap(name: str, s3: dict, default: bool = True) -> dict:
    meta = {"name": name, "namespace": NAMESPACE}
    if default:
        meta["annotations"] = {argo.DEFAULT_REPO_KEY: "repo"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"repo": yaml.safe_dump({"s3": s3})}}


def test_output_parameter_default_stands_in_for_a_missing_file(tmp_path):
    outputs = {"parameters": [{"name": "result", "valueFrom": {"path": "/tmp/out/result.txt"}},
                              {"name": "score", "valueFrom": {"path": "/tmp/out/none", "default": "nan"}}]}
    result = run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}]), tmp_path)
    assert result.task("write")[0].outputs == {"result": "42", "score": "nan"}  # one trailing newline trimmed
    outputs["parameters"][1]["valueFrom"].pop("default")
    result = run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}]), tmp_path / "b")
    node = result.task("write")[0]
    assert node.phase == "Error" and node.message == "wait: Error (exit code 1): open /tmp/out/none: no such file or directory"


def test_artifacts_without_key_go_under_the_repository_key_format(tmp_path, s3, s3_server):
    bucket = new_bucket(s3, "repo")
    cm = repository_configmap("artifact-repositories", {
        "bucket": bucket, "endpoint": host_port(s3_server), "insecure": True, "useSDKCreds": True,
        "keyFormat": "runs/{{workflow.name}}/{{pod.name}}"})
    outputs = {"artifacts": [{"name": "plain", "path": "/tmp/out/result.txt", "archive": {"none": {}}},
                             {"name": "packed", "path": "/tmp/out/result.txt"},
                             {"name": "absent", "path": "/tmp/out/none", "optional": True}]}
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    result = run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}]), tmp_path,
                 configmaps=[cm], cloud_credentials=creds)  # useSDKCreds: no Secret needed
    node = result.task("write")[0]
    assert result.phase == "Succeeded", result.describe()
    prefix = f"runs/{result.name}/{node.pod_name}"
    assert [(a.name, a.bucket, a.key) for a in node.artifacts] == [
        ("plain", bucket, f"{prefix}/result.txt"), ("packed", bucket, f"{prefix}/packed.tgz")]
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/result.txt")["Body"].read() == b"42\n"
    assert result.artifact_repository_ref == {"namespace": NAMESPACE, "configMap": "artifact-repositories", "key": "repo"}


def test_repository_with_an_empty_endpoint_fails_the_save(tmp_path):
    cm = repository_configmap("artifact-repositories", {"bucket": "meli-sweep", "useSDKCreds": True})
    outputs = {"artifacts": [{"name": "plain", "path": "/tmp/out/result.txt", "archive": {"none": {}}}]}
    result = run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}]), tmp_path, configmaps=[cm],
                 cloud_credentials={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    node = result.task("write")[0]
    assert node.phase == "Error" and result.phase == "Error"
    assert "failed to create new S3 client: Endpoint:  does not follow ip address or domain name standards." in node.message


def test_repository_key_secret_that_does_not_exist_leaves_the_pod_stuck(tmp_path):
    cm = repository_configmap("artifact-repositories", {
        "bucket": "meli-sweep", "endpoint": "s3.amazonaws.com", "accessKeySecret": {"name": "nope", "key": "id"},
        "secretKeySecret": {"name": "nope", "key": "secret"}})
    outputs = {"artifacts": [{"name": "plain", "path": "/tmp/out/result.txt", "archive": {"none": {}}}]}
    with pytest.raises(argo.WorkflowStuck, match='secret "nope" not found') as stuck:
        run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}]), tmp_path, configmaps=[cm])
    node = stuck.value.result.task("write")[0]
    assert node.phase == "Pending" and node.message.startswith("ContainerCreating: MountVolume.SetUp failed")
    assert node.log == ""  # the container never started


def test_archived_logs_without_any_artifact_repository_error_every_pod(tmp_path):
    """spec.archiveLogs makes every pod save its log: with no repository anywhere, no pod can succeed."""
    result = run(workflow([writer()], [{"name": "write", "template": "write"}], archiveLogs=True), tmp_path)
    node = result.task("write")[0]
    assert node.phase == "Error" and "artifact storage is not configured" in node.message
    assert result.artifact_repository_ref == {"default": True}


def test_artifact_repository_ref_is_looked_up_by_name_with_no_fallback():
    default = repository_configmap("artifact-repositories", {"bucket": "team"})
    ours = repository_configmap("ours", {"bucket": "ours"}, default=False)
    in_controller_ns = {**ours, "metadata": {**ours["metadata"], "namespace": "argo"}}
    cluster = argo.Cluster(namespace=NAMESPACE, configmaps=[default, ours])
    assert argo.resolve_artifact_repository(None, NAMESPACE, cluster)[1] == {"s3": {"bucket": "team"}}
    ref, repo = argo.resolve_artifact_repository({"configMap": "ours", "key": "repo"}, NAMESPACE, cluster)
    assert repo == {"s3": {"bucket": "ours"}} and ref["namespace"] == NAMESPACE
    cluster = argo.Cluster(namespace=NAMESPACE, configmaps=[default, in_controller_ns])
    assert argo.resolve_artifact_repository({"configMap": "ours", "key": "repo"}, NAMESPACE, cluster)[0]["namespace"] == "argo"
    with pytest.raises(argo.ArgoError, match="failed to find any artifact repository"):
        argo.resolve_artifact_repository({"configMap": "missing"}, NAMESPACE, cluster)
    assert argo.resolve_artifact_repository(None, NAMESPACE, argo.Cluster(namespace=NAMESPACE)) == ({"default": True}, {})


def test_workflow_arguments_override_the_workflow_templates(tmp_path):
    template = workflow([container("say", "print('{{workflow.parameters.greeting}}')")],
                        [{"name": "say", "template": "say"}], params={"greeting": "hello"})
    wft = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
           "metadata": {"name": "greeter", "namespace": NAMESPACE}, "spec": template["spec"]}
    submitted = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "greeter-"},
                 "spec": {"workflowTemplateRef": {"name": "greeter"},
                          "arguments": {"parameters": [{"name": "greeting", "value": "hola"}]}}}
    result = run(submitted, tmp_path, workflow_templates=[wft])
    assert result.phase == "Succeeded" and result.task("say")[0].log == "hola\n"
    missing = run({**submitted, "spec": {"workflowTemplateRef": {"name": "nope"}}}, tmp_path / "b", workflow_templates=[wft])
    assert missing.phase == "Error" and 'workflowtemplates.argoproj.io "nope" not found' in missing.message


# --- parameters from a ConfigMap, pod spec patches ------------------------------------------------------------


def parameter_configmap(data: dict, labelled: bool = True) -> dict:
    labels = {"workflows.argoproj.io/configmap-type": "Parameter"} if labelled else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "labels": labels}, "data": data}


def test_configmap_parameters_fall_back_to_their_default_on_any_lookup_failure(tmp_path):
    def say(default: str | None) -> dict:
        source = {"configMapKeyRef": {"name": "settings", "key": "greeting"}, **({"default": default} if default else {})}
        manifest = workflow([container("say", "print('{{workflow.parameters.greeting}}')")], [{"name": "say", "template": "say"}])
        manifest["spec"]["arguments"]["parameters"] = [{"name": "greeting", "valueFrom": source}]
        return manifest

    def log(result) -> str:
        assert result.phase == "Succeeded", result.describe()
        return result.task("say")[0].log

    assert log(run(say("hello"), tmp_path / "a", configmaps=[parameter_configmap({"greeting": "hola"})])) == "hola\n"
    assert log(run(say("hello"), tmp_path / "b", configmaps=[parameter_configmap({"other": "x"})])) == "hello\n"
    # without the configmap-type label the controller does not read it: the default again
    assert log(run(say("hello"), tmp_path / "c", configmaps=[parameter_configmap({"greeting": "hola"}, labelled=False)])) == "hello\n"
    # no ConfigMap and no default: setGlobalParameters fails, and its caller marks the workflow Failed
    # (workflow/controller/operator.go: setExecWorkflow, "failed to set global parameters: ...")
    failed = run(say(None), tmp_path / "d")
    assert failed.phase == "Failed" and not failed.nodes, failed.describe()
    assert failed.message == ("failed to set global parameters: failed to set global parameter greeting from configmap "
                              "with name settings and key greeting: ConfigMap 'settings' does not exist")


def test_a_parameter_with_no_value_and_no_default_fails_the_workflow(tmp_path):
    manifest = workflow([container("say", "print('{{workflow.parameters.greeting}}')")], [{"name": "say", "template": "say"}])
    # `supplied` passes validation (validate.go validateArgumentsValues) and leaves the parameter without a value
    manifest["spec"]["arguments"]["parameters"] = [{"name": "greeting", "valueFrom": {"supplied": {}}}]
    result = run(manifest, tmp_path)
    assert result.phase == "Failed" and not result.nodes, result.describe()
    assert result.message == ("failed to set global parameters: either value or valueFrom must be specified in order "
                              "to set global parameter greeting")
    # with neither value nor valueFrom, validation stops it first
    manifest["spec"]["arguments"]["parameters"] = [{"name": "greeting"}]
    result = run(manifest, tmp_path / "b")
    assert result.phase == "Failed" and result.message == (
        "invalid spec: spec.arguments.greeting.value or spec.arguments.greeting.valueFrom is required")


@pytest.mark.parametrize("where, field, value", [
    ("spec", "hostNetwork", True),
    ("spec", "onExit", "cleanup"),
    ("spec", "priority", 1),  # the sweep never sets it
    ("template", "timeout", "10s"),
    ("template", "archiveLocation", {"archiveLogs": True}),  # the sweep never sets it
    ("template", "failFast", True),  # false, the default, is ignored knowingly
    ("template", "memoize", {"key": "x", "cache": {"configMap": {"name": "c"}}}),
    ("container", "workingDir", "/srv"),
    ("container", "ports", [{"containerPort": 80}]),
    ("dag", "parallelism", 1),
])
def test_a_field_neither_modelled_nor_knowingly_ignored_is_refused(tmp_path, where, field, value):
    manifest = workflow([container("say", "print('hi')")], [{"name": "say", "template": "say"}])
    holder = {"spec": manifest["spec"], "template": manifest["spec"]["templates"][0],
              "container": manifest["spec"]["templates"][0]["container"],
              "dag": next(t for t in manifest["spec"]["templates"] if "dag" in t)["dag"]}[where]
    holder[field] = value
    with pytest.raises(argo.NotModelled, match=f"`{field}` is neither modelled nor on the harness' ignore list"):
        run(manifest, tmp_path)


def test_with_items_which_the_sweep_never_renders_is_refused(tmp_path):
    templates, tasks = simple()
    tasks[0]["withItems"] = ["a", "b"]  # the sweep fans out with withParam only
    with pytest.raises(argo.NotModelled, match="task work: `withItems`"):
        run(workflow(templates, tasks), tmp_path)


def test_every_field_of_the_sweep_is_modelled_or_knowingly_ignored_with_a_reason():
    """The fields that the harness once passed over in silence are now on its ignore list, each with its reason."""
    for where, field in [("spec", "parallelism"), ("spec", "podGC"), ("spec", "securityContext"),
                         ("template", "synchronization"), ("template", "activeDeadlineSeconds"),
                         ("template", "tolerations"), ("container", "resources"), ("container", "securityContext")]:
        assert len(argo.IGNORED[where][field]) > 20, (where, field)
    for name in ("workflows/sweep.yaml", "helm/meli-sweep/files/workflowtemplate-spec.yaml"):
        doc = yaml.safe_load((ROOT / name).read_text())
        argo.check_spec_fields(doc.get("spec", doc))


def test_enum_parameter_needs_a_value_to_check():
    spec = {"entrypoint": "main", "templates": [{"name": "main", "dag": {"tasks": []}}],
            "arguments": {"parameters": [{"name": "baseline", "enum": ["true", "false"],
                                          "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "baseline"}}}]}}
    with pytest.raises(argo.SpecError, match="baseline.value is required"):
        argo.validate(spec)


@pytest.mark.parametrize("memory, phase", [("1Gi", "Succeeded"), ("16 GB", "Error")])
def test_pod_spec_patch_is_substituted_checked_and_merged_per_pod(tmp_path, memory, phase):
    patch = '{"nodeSelector": {"pool": "gpu"}, "containers": [{"name": "main", "resources": {"limits": {"memory": "{{workflow.parameters.memory}}"}}}]}'
    manifest = workflow([container("say", "print('hi')", podSpecPatch=patch)], [{"name": "say", "template": "say"}],
                        params={"memory": memory})
    result = run(manifest, tmp_path)
    [pod] = result.pods("say")
    assert pod.phase == phase, result.describe()
    if phase == "Succeeded":
        assert pod.pod_spec["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
        assert pod.pod_spec["nodeSelector"] == {"pool": "gpu"} and pod.pod_spec["containers"][0]["command"][0] == "python"
    else:
        assert "invalid podSpecPatch" in pod.message


# --- the chart's artifact repository, as the controller and executor read it ----------------------------------


@pytest.mark.helm
def test_chart_default_repository_endpoint_is_one_the_executor_accepts(helm):
    """With s3.endpoint empty (AWS), the repository must still name an endpoint: minio-go refuses an empty one."""
    repo = repository_of(artifact_repository_configmap(helm_template(helm)))
    assert argo.s3_endpoint_error(repo["s3"].get("endpoint", "")) is None, repo


@pytest.mark.helm
@pytest.mark.s3
def test_chart_http_endpoint_serves_the_executor_as_it_serves_the_pods(tmp_path, helm, s3, s3_server, secrets):
    """s3.endpoint http://... reaches the store from the pods (AWS_ENDPOINT_URL); Argo's executor must reach it too."""
    bucket = new_bucket(s3, "http")
    repository = artifact_repository_configmap(helm_template(helm, f"s3.bucket={bucket}", f"s3.endpoint={s3_server}"))
    outputs = {"artifacts": [{"name": "plain", "path": "/tmp/out/result.txt", "archive": {"none": {}}}]}
    ref = {"configMap": repository["metadata"]["name"], "key": next(iter(repository["data"]))}  # the chart's own
    result = run(workflow([writer(**outputs)], [{"name": "write", "template": "write"}], artifactRepositoryRef=ref),
                 tmp_path, configmaps=[repository], secrets=secrets)
    assert result.phase == "Succeeded", result.describe()


@pytest.mark.helm
def test_chart_workflowtemplate_finds_its_own_repository_beside_another_default(helm):
    """The chart's WorkflowTemplate must name its repository: the namespace's default may be someone else's."""
    docs = helm_template(helm, "artifactRepository.configMapName=meli-sweep-artifacts", "artifactRepository.default=false")
    wft = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    ours = artifact_repository_configmap(docs)
    theirs = repository_configmap("artifact-repositories", {"bucket": "another-team"})
    cluster = argo.Cluster(namespace=NAMESPACE, configmaps=[ours, theirs])
    ref, repo = argo.resolve_artifact_repository(wft["spec"].get("artifactRepositoryRef"), NAMESPACE, cluster)
    assert ref.get("configMap") == "meli-sweep-artifacts" and repo["s3"]["bucket"] == "meli-sweep", (ref, repo)


# --- the sweep's DAG with stand-in steps: the GPU and CPU fan-outs and aggregate's `depends` ------------------


SET = dict(data="s3://b/data/train.csv.gz", embeddings="none", out="s3://b/meli")  # what a sweep must be given


def stand_in_sweep(configs: str, baseline: bool = True, fail: tuple[str, ...] = (), **options) -> dict:
    """The rendered sweep as it is (DAG, depends, targets, fan-outs, the real plan step), with prepare, train and
    aggregate replaced by one-line stand-ins: train fails for the runs named in `fail`. No S3: logs are not
    archived and aggregate declares no artifacts."""
    doc = build(configs, Options(baseline=baseline, archive_logs=False, **{**SET, **options})).to_dict()
    for t in doc["spec"]["templates"]:
        if t["name"] == "prepare":
            t["container"]["command"] = ["python", "-c", "import sys; open(sys.argv[1], 'w').write('s3://b/prepared/x')",
                                         "/tmp/prepared"]
        elif t["name"] in ("train", "train-on-cpu"):
            script = "import sys; open(sys.argv[1], 'w').write('0.5'); sys.exit(sys.argv[2] in sys.argv[3:])"
            t["container"]["command"] = ["python", "-c", script, "/tmp/result", "{{inputs.parameters.name}}", *fail]
        elif t["name"] == "aggregate":
            t["container"]["command"] = ["python", "-c", "print('report')"]
            del t["outputs"]
    return doc


def names(nodes: list) -> list[str]:
    return sorted(n.inputs.get("name", "") for n in nodes)


def test_tfidf_trains_in_the_cpu_fan_out_and_aggregate_runs_after_both(tmp_path):
    result = run(stand_in_sweep("hidden50,mlp256"), tmp_path)
    assert result.phase == "Succeeded", result.describe()
    assert names(result.task("train")) == ["hidden50", "mlp256"] and names(result.task("train-on-cpu")) == ["tfidf"]
    assert {p.template for p in result.pods()} == {"plan", "prepare", "train", "train-on-cpu", "aggregate"}
    assert result.task("train-on-cpu")[0].display_name == "tfidf"  # its node in the UI, as on the GPU template
    assert "nvidia.com/gpu" not in json.dumps(result.pods("train-on-cpu")[0].pod_spec)
    assert "nvidia.com/gpu" in json.dumps(result.pods("train")[0].pod_spec)
    (aggregate,) = result.task("aggregate")
    assert aggregate.phase == "Succeeded" and aggregate.started >= max(p.finished for p in result.pods("train-on-cpu"))


@pytest.mark.parametrize("fail", ["mlp256", "tfidf"])
def test_a_failed_run_on_either_fan_out_still_gets_its_report_and_fails_the_sweep(tmp_path, fail):
    result = run(stand_in_sweep("hidden50,mlp256", fail=(fail,)), tmp_path)
    assert result.task("aggregate")[0].phase == "Succeeded", result.describe()
    assert result.phase == "Failed"
    assert [n.inputs["name"] for n in result.failures() if n.type == "Pod"] == [fail]


def test_no_baseline_skips_the_empty_cpu_fan_out_and_aggregate_still_runs(tmp_path):
    """withParam over [] is a Skipped node (dag.go executeDAGTask: "Skipped, empty params"), which a
    `.Skipped` term of aggregate's depends lets through; a Skipped target does not fail the DAG."""
    result = run(stand_in_sweep("hidden50", baseline=False), tmp_path)
    assert result.phase == "Succeeded", result.describe()
    (skipped,) = result.task("train-on-cpu")
    assert (skipped.type, skipped.phase, skipped.message) == ("Skipped", "Skipped", "Skipped, empty params")
    assert result.task("aggregate")[0].phase == "Succeeded"
    failed = run(stand_in_sweep("hidden50,mlp256", baseline=False, fail=("mlp256",)), tmp_path / "failed")
    assert failed.phase == "Failed" and failed.task("aggregate")[0].phase == "Succeeded", failed.describe()
    # and the other way round: a sweep of the baseline alone has no GPU run
    alone = run(stand_in_sweep("tfidf"), tmp_path / "alone")
    assert alone.phase == "Succeeded" and alone.task("train")[0].phase == "Skipped", alone.describe()
    assert names(alone.task("train-on-cpu")) == ["tfidf"] and alone.task("aggregate")[0].phase == "Succeeded"


# --- Pod Security "restricted": every container of every pod -------------------------------------------------


def controller_executor_from_the_docs() -> dict:
    """The controller ConfigMap snippet of docs/cluster.md, parsed as the controller reads its `executor` key."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "workflow-controller-configmap" in b]
    assert len(blocks) == 1, "docs/cluster.md: one yaml block with the controller's ConfigMap"
    configmap = yaml.safe_load(blocks[0])
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "workflow-controller-configmap"
    return yaml.safe_load(configmap["data"]["executor"])


def test_every_container_of_every_pod_meets_the_restricted_profile_with_the_documented_controller_config(tmp_path):
    """The pods the harness builds, with the init and wait containers the controller adds to each
    (workflowpod.go newExecContainer), against the Pod Security Standards' restricted rules."""
    result = run(stand_in_sweep("hidden50"), tmp_path, executor=controller_executor_from_the_docs())
    assert result.phase == "Succeeded", result.describe()
    pods = result.pods()
    assert {p.template for p in pods} == {"plan", "prepare", "train", "train-on-cpu", "aggregate"}
    for p in pods:
        assert [c["name"] for c in p.pod["initContainers"]] == ["init"] and "wait" in [c["name"] for c in p.pod["containers"]]
        assert pod_security.restricted_violations(p.pod) == [], p.name
    # Without it (the controller's default: no executor securityContext), only Argo's own containers fail.
    default = run(stand_in_sweep("hidden50"), tmp_path / "default")
    for p in default.pods():
        failing = {v.split(":")[0] for v in pod_security.restricted_violations(p.pod)}
        assert failing == {"init", "wait"}, (p.name, failing)


def test_the_restricted_rules_catch_what_they_must():
    ok = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "main", "securityContext": {"allowPrivilegeEscalation": False,
                                                              "capabilities": {"drop": ["ALL"]}}}],
          "volumes": [{"name": "tmp", "emptyDir": {}}]}
    assert pod_security.restricted_violations(ok) == []
    for change, rule in [
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "capabilities.add"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccomp"),
        (lambda p: p["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccomp"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "volume types"),
        (lambda p: p.update(hostNetwork=True), "host namespaces"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    ]:
        pod = copy.deepcopy(ok)
        change(pod)
        assert any(rule in v for v in pod_security.restricted_violations(pod)), rule


# --- placeholders: a sweep never runs on a value nobody set -------------------------------------------------


def test_plan_logs_the_resolved_parameters_and_refuses_empty_ones_in_one_line(tmp_path):
    """`make render` with no DATA, EMBEDDINGS or OUT still renders; the sweep then stops in plan, before any
    other pod, in one line naming what to set. plan's log (the Argo UI's) shows every parameter it resolved."""
    result = run(stand_in_sweep("hidden50", data="", embeddings="", out=""), tmp_path)
    assert result.phase == "Failed" and {p.template for p in result.pods()} == {"plan", "prepare"}, result.describe()
    assert result.pods("prepare")[0].phase == "Succeeded"  # the stand-in: prepare does start beside plan
    (plan,) = result.task("plan")
    errors = [line for line in plan.log.splitlines() if line.startswith("error:")]
    assert errors == ["error: parameters data, embeddings, out are empty: set them when submitting (make submit "
                      "DATA=s3://... EMBEDDINGS=s3://...|none OUT=s3://..., argo submit -p data=...) or in the chart's "
                      "workflowTemplate.parameters"], plan.log
    assert "Traceback" not in plan.log and result.task("aggregate")[0].phase == "Omitted"
    ok = run(stand_in_sweep("hidden50", pushgateway_url="http://pgw:9091"), tmp_path / "ok")
    log = ok.task("plan")[0].log
    for line in ("parameter data = s3://b/data/train.csv.gz", "parameter embeddings = none", "parameter out = s3://b/meli",
                 "parameter configs = hidden50", "parameter pushgateway-url = http://pgw:9091", "parameter train-memory = 16Gi"):
        assert line in log, log


@pytest.mark.helm
@pytest.mark.parametrize("cluster_state, why", [
    ("absent", "ConfigMap 'meli-sweep-parameters' does not exist"),
    ("unlabelled", "ConfigMap 'meli-sweep-parameters' needs to have the label workflows.argoproj.io/configmap-type: Parameter"),
    ("no data set", "ConfigMap 'meli-sweep-parameters' does not have the key 'data'"),
])
def test_chart_sweep_without_its_parameters_fails_at_once_naming_what_to_set(tmp_path, helm, cluster_state, why):
    """The parameters ConfigMap absent, unlabelled, not yet in the informer's cache, or without the key: the
    template's required parameters have no default to fall back to, so the workflow fails before any pod
    (operator.go setGlobalParameters), instead of running on a bucket nobody named."""
    sets = ("workflowTemplate.parameters.embeddings=none",) + (
        () if cluster_state == "no data set" else ("workflowTemplate.parameters.data=s3://b/data/train.csv.gz",))
    docs = helm_template(helm, *sets)
    wft = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    configmaps = [d for d in chart_configmaps(docs) if d["metadata"]["name"] != "meli-sweep-parameters"]
    params = next(d for d in docs if d["metadata"]["name"] == "meli-sweep-parameters")
    if cluster_state == "unlabelled":
        del params["metadata"]["labels"]["workflows.argoproj.io/configmap-type"]
    if cluster_state != "absent":
        configmaps.append(params)
    submitted = reference(ONE_RUN, dataclasses.replace(Options(), namespace=NAMESPACE), set()).build().model_dump(
        by_alias=True, exclude_none=True, mode="json")  # `make submit CONFIGS=...` and nothing else
    result = run(submitted, tmp_path, configmaps=configmaps, workflow_templates=[wft])
    assert result.phase == "Failed" and not result.nodes, result.describe()
    first = "data" if cluster_state == "no data set" else next(
        p["name"] for p in wft["spec"]["arguments"]["parameters"] if "default" not in p["valueFrom"])
    assert result.message == (f"failed to set global parameters: failed to set global parameter {first} from configmap "
                              f"with name meli-sweep-parameters and key {first}: {why}")


# --- the sweep end to end -------------------------------------------------------------------------------------


def template(result: argo.WorkflowResult, name: str) -> dict:
    return next(t for t in result.spec["templates"] if t["name"] == name)


def first_backoff_s(result: argo.WorkflowResult) -> float:
    return argo._duration_s(template(result, "train")["retryStrategy"]["backoff"]["duration"])


def report_keys(result: argo.WorkflowResult, repository: dict) -> dict:
    """Where each report file the aggregate template declares must be: the repository's keyFormat for the
    aggregate pod, then the file name (they are stored as they are, `archive: none`)."""
    files = [a["path"].rsplit("/", 1)[-1] for a in template(result, "aggregate")["outputs"]["artifacts"]]
    assert len(files) >= 7, files  # plots, summary.{csv,json,md}
    (aggregate,) = result.task("aggregate")
    key_format = repository["s3"].get("keyFormat") or argo.DEFAULT_ARCHIVE_PATTERN
    prefix = key_format.replace("{{workflow.name}}", result.name).replace("{{pod.name}}", aggregate.pod_name)
    return {f: f"{prefix}/{f}" for f in files}


def assert_report_in_repository(s3, result: argo.WorkflowResult, repository: dict) -> dict:
    """Every report artifact saved where the repository says, and present in S3; returns summary.json."""
    expected = report_keys(result, repository)
    saved = {a.key.rsplit("/", 1)[-1]: a for a in result.task("aggregate")[0].artifacts if a.name != "main-logs"}
    assert {f: (a.bucket, a.key) for f, a in saved.items()} == {f: (repository["s3"]["bucket"], k) for f, k in expected.items()}
    for a in saved.values():
        assert s3.head_object(Bucket=a.bucket, Key=a.key)["ContentLength"] > 0
    body = s3.get_object(Bucket=saved["summary.json"].bucket, Key=saved["summary.json"].key)["Body"].read()
    return json.loads(body)


def assert_train_metrics(result: argo.WorkflowResult, ok: list[str]) -> None:
    """Each train node's custom metrics emitted without error: one duration per run, Succeeded for those in ok."""
    assert result.metric_errors == []
    specs = template(result, "train")["metrics"]["prometheus"]
    assert [m["name"] for m in specs] == ["meli_sweep_train_duration_seconds"]
    emitted = [m for m in result.metrics if m.name == "meli_sweep_train_duration_seconds"]
    assert sorted(m.labels["config"] for m in emitted if m.labels["status"] == "Succeeded") == sorted(ok)
    for m in result.metrics:
        assert m.exported_name == argo.METRIC_PREFIX + m.name and m.labels.get("workflow") == result.name, m


def plan_runs(result: argo.WorkflowResult) -> list[dict]:
    """The items the plan step wrote, which train fanned out over (run names by the spec language)."""
    (plan,) = result.task("plan")
    return json.loads(plan.outputs["runs"]) + json.loads(plan.outputs["cpu-runs"])  # GPU runs, then CPU runs


def assert_train_nodes_named_for_the_ui(result: argo.WorkflowResult, *configs: str) -> dict:
    """One train node per planned run, the given runs among them, each shown by a valid display name.

    Returns the train nodes by run name.
    """
    runs = plan_runs(result)
    trains = {n.inputs.get("name"): n for n in result.task("train") + result.task("train-on-cpu") if n.type != "Skipped"}
    assert sorted(trains, key=str) == sorted(r["name"] for r in runs), result.describe()
    assert set(configs) <= set(trains), (configs, list(trains))
    for node in trains.values():
        assert argo.DISPLAY_NAME.match(node.display_name), node.display_name
    return trains


@pytest.mark.slow
@pytest.mark.s3
def test_rendered_workflow_runs_to_success_and_saves_the_report(tmp_path, s3, s3_server, bucket, secrets, helm):
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    manifest = render_workflow(TWO_RUNS, bucket)
    result = run(manifest, tmp_path, configmaps=[repository_cm], secrets=secrets, image_env=image_env)
    assert result.phase == "Succeeded", result.describe()
    assert_train_nodes_named_for_the_ui(result, "hidden50_epochs=1_max_train_rows=400", "hidden100_epochs=1_max_train_rows=400")
    summary = assert_report_in_repository(s3, result, repository_of(repository_cm))
    assert {r["config"]: r["status"] for r in summary["rows"]} == {run["name"]: "ok" for run in plan_runs(result)}
    assert_train_metrics(result, ok=[run["name"] for run in plan_runs(result)])


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.helm
def test_chart_workflowtemplate_by_reference_runs_to_success(tmp_path, s3, s3_server, bucket, secrets, helm):
    """The install's settings reach the pods through the parameters ConfigMap; what `make submit` sends wins."""
    docs = helm_template(helm, *moto_chart_values(bucket, s3_server),
                         "artifactRepository.configMapName=meli-sweep-artifacts", "artifactRepository.default=false",
                         f"workflowTemplate.parameters.data=s3://{bucket}/data/tiny.csv.gz",
                         "workflowTemplate.parameters.embeddings=none", "workflowTemplate.parameters.train-memory=3Gi",
                         "workflowTemplate.gpu.nodeSelector.pool=gpu")
    wft = next(d for d in docs if d["kind"] == "WorkflowTemplate")
    ours = artifact_repository_configmap(docs)
    other = new_bucket(s3, "other-team")  # the namespace's default repository is another team's
    theirs = repository_configmap("artifact-repositories", {"bucket": other, "endpoint": host_port(s3_server),
                                                            "insecure": True, "useSDKCreds": True})
    # `make submit CONFIGS=... OUT=...`: the CLI's own Workflow, naming the template and only what was given
    options = dataclasses.replace(Options(), out=f"s3://{bucket}/meli", namespace=NAMESPACE)
    submitted = reference(ONE_RUN, options, {"out"}).build().model_dump(by_alias=True, exclude_none=True, mode="json")
    assert {p["name"] for p in submitted["spec"]["arguments"]["parameters"]} == {"configs", "out"}
    secrets_without_endpoint = {S3_SECRET: {k: v for k, v in secrets[S3_SECRET].items() if k != "AWS_ENDPOINT_URL"}}
    result = run(submitted, tmp_path, configmaps=chart_configmaps(docs) + [theirs], secrets=secrets_without_endpoint,
                 workflow_templates=[wft], image_env=image_env, cloud_credentials=secrets[S3_SECRET])
    assert result.phase == "Succeeded", result.describe()
    for train in result.pods("train"):  # the run and the tfidf baseline
        main = train.pod_spec["containers"][0]
        assert main["resources"]["limits"]["memory"] == "3Gi" and main["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert train.pod_spec["nodeSelector"] == {"pool": "gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train.pod_spec["tolerations"]
    assert_train_nodes_named_for_the_ui(result, "hidden50_epochs=1_max_train_rows=400")
    assert result.artifact_repository_ref["configMap"] == "meli-sweep-artifacts"
    summary = assert_report_in_repository(s3, result, repository_of(ours))
    assert {r["config"]: r["status"] for r in summary["rows"]} == {run["name"]: "ok" for run in plan_runs(result)}
    assert "Contents" not in s3.list_objects_v2(Bucket=other)


@pytest.mark.slow
@pytest.mark.s3
def test_failing_config_fails_the_workflow_after_the_report_lists_it(tmp_path, s3, s3_server, bucket, secrets, helm):
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    result = run(render_workflow(ONE_FAILS, bucket), tmp_path, configmaps=[repository_cm], secrets=secrets, image_env=image_env)
    assert result.phase == "Failed", result.describe()
    by_run = assert_train_nodes_named_for_the_ui(
        result, "hidden50_epochs=1_max_train_rows=400", "mlp256_lr=1e30_epochs=1_max_train_rows=400")
    failed = by_run["mlp256_lr=1e30_epochs=1_max_train_rows=400"]
    assert failed.phase == "Failed" and failed.message == "retryStrategy.expression evaluated to false"
    assert failed.retries == 0 and failed.backoffs == [first_backoff_s(result)]  # waited before the expression says no
    assert result.nodes[failed.children[0]].message == "main: Error (exit code 3)"
    assert by_run["hidden50_epochs=1_max_train_rows=400"].phase == "Succeeded"
    assert result.task("aggregate")[0].phase == "Succeeded"  # the report is written whatever the runs did
    summary = assert_report_in_repository(s3, result, repository_of(repository_cm))
    rows = {r["config"]: r for r in summary["rows"]}
    assert rows["mlp256_lr=1e30_epochs=1_max_train_rows=400"]["status"] == "failed"
    assert "loss is" in rows["mlp256_lr=1e30_epochs=1_max_train_rows=400"]["reason"]
    ok = [name for name in rows if name != "mlp256_lr=1e30_epochs=1_max_train_rows=400"]
    assert "hidden50_epochs=1_max_train_rows=400" in ok and all(rows[name]["status"] == "ok" for name in ok)
    assert_train_metrics(result, ok=ok)


@pytest.mark.slow
def test_train_metrics_are_emitted_without_error_for_a_preempted_attempt(tmp_path):
    """A preempted (or deleted) pod leaves no outputs; the train template's metrics must still substitute,
    because Argo substitutes a metric whole before it evaluates its `when` (operator.go computeMetrics)."""
    rendered = render_workflow("hidden50", "meli-sweep")
    train = next(t for t in rendered["spec"]["templates"] if t["name"] == "train")
    script = "import sys, time; print('started', flush=True); time.sleep(30 if sys.argv[1] == '0' else 0)"
    quick = container("train", script, "{{retries}}", **{k: train[k] for k in ("inputs", "outputs", "metrics", "retryStrategy")})
    args = [{"name": p["name"], "value": "x"} for p in train["inputs"]["parameters"]]
    preempt = argo.Preempt(template="train", when=lambda line, pod: line.startswith("started"))
    result = argo.run_workflow(workflow([quick], [{"name": "train", "template": "train", "arguments": {"parameters": args}}]),
                               argo.Cluster(namespace=NAMESPACE), tmp_path / "pods", [preempt])
    (node,) = result.task("train")
    assert result.phase == "Succeeded" and node.retries == 1 and preempt.fired, result.describe()
    assert result.metric_errors == []


def kill_after_first_checkpoint(s3, seen: dict):
    """Preemption rule: once the log shows epoch 1 finished and its checkpoint is in S3, kill the pod."""

    def when(line: str, pod: argo.PodView) -> bool:
        if not re.search(r" epoch 1/\d+: train loss", line):
            return False
        out = pod.command[pod.command.index("--out") + 1]  # s3://bucket/prefix/sweeps/<workflow>/<run>
        bucket, prefix = out[len("s3://"):].split("/", 1)
        deadline = time.time() + 60
        while time.time() < deadline:
            if s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/checkpoint.pt").get("KeyCount"):
                seen["summary at kill"] = bool(s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/summary.json").get("KeyCount"))
                seen["run"] = (bucket, prefix)
                return True
            time.sleep(0.05)
        raise AssertionError(f"{out}: no checkpoint within 60 s of epoch 1")

    return when


@pytest.mark.slow
@pytest.mark.s3
def test_train_pod_killed_mid_epoch_is_retried_and_resumes(tmp_path, s3, s3_server, bucket, secrets, helm):
    repository_cm = artifact_repository_configmap(helm_template(helm, *moto_chart_values(bucket, s3_server)))
    seen: dict = {}
    preempt = argo.Preempt(template="train", node=f"name:{KILLED_RUN},", when=kill_after_first_checkpoint(s3, seen))
    result = argo.run_workflow(render_workflow(KILLED, bucket), argo.Cluster(
        namespace=NAMESPACE, configmaps=[repository_cm], secrets=secrets, image_env=image_env), tmp_path / "pods", [preempt])
    assert result.phase == "Succeeded", result.describe()
    train = assert_train_nodes_named_for_the_ui(result, KILLED_RUN)[KILLED_RUN]
    killed, resumed = (result.nodes[c] for c in train.children)
    assert preempt.fired == [killed.pod_name] and seen["summary at kill"] is False  # mid-run, not after it
    assert killed.phase == "Failed" and "imminent node shutdown" in killed.message and killed.exit_code == "137"
    assert train.retries == 1 and train.backoffs == [first_backoff_s(result)] and resumed.phase == "Succeeded"
    assert re.findall(r" epoch (\d+)/2: train loss", killed.log) == ["1"]  # killed during epoch 2
    assert re.search(r"resumed from s3://\S+/checkpoint.pt after epoch 1", resumed.log), resumed.log[-2000:]
    run_bucket, prefix = seen["run"]
    metrics = s3.get_object(Bucket=run_bucket, Key=f"{prefix}/metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["epoch"] for line in metrics.splitlines() if line.strip()] == [1, 2]  # no epoch twice
    summary = json.loads(s3.get_object(Bucket=run_bucket, Key=f"{prefix}/summary.json")["Body"].read())
    assert summary["status"] == "ok" and summary["epochs"] == 2
