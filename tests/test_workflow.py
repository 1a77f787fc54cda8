"""The Argo sweep as rendered by workflows/dag.py: models, strict schema, golden files, DAG shape.

    make test PYTEST_ARGS="-k workflow"       # or: .venv/bin/python -m pytest tests/test_workflow.py

The strict schema check (tests/argo_schema.py) reads Argo's JSON schema from
$ARGO_SCHEMA (.ci/run sets it) and skips, saying so, where it is unset (under CI=true it fails). Golden files are compared, never rewritten,
unless MELI_UPDATE_GOLDEN=1 is set (or `make golden` / `make chart-template` run).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import argo_schema  # tests/argo_schema.py: Argo's schema made strict
import pytest
import yaml

from conftest import ROOT, run_main
from job import steps
from workflows import cli as workflows_cli
from workflows import dag
from workflows.dag import RETRY_WHEN, Options, build

GOLDEN = ROOT / "workflows" / "sweep.yaml"
CHART_TEMPLATE = ROOT / "helm" / "meli-sweep" / "files" / "workflowtemplate-spec.yaml"
CHART_SCHEMA = ROOT / "helm" / "meli-sweep" / "values.schema.json"
GRID = "hidden50,hidden100:lr=1e-3|3e-4,epochs=2|3"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m workflows.cli ARGS`, run in this process (see conftest.run_main)."""
    return run_main(workflows_cli.main, list(args), env=env)


def render(configs: str = "hidden50,hidden100", *extra: str) -> dict:
    r = cli("render", "--configs", configs, *extra)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def template(doc: dict, name: str) -> dict:
    return next(t for t in doc["spec"]["templates"] if t["name"] == name)


def task(doc: dict, name: str) -> dict:
    return next(t for t in template(doc, "sweep")["dag"]["tasks"] if t["name"] == name)


@pytest.fixture(scope="module")
def doc() -> dict:
    return render()


# --- validity -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate"])
def test_rendered_yaml_round_trips_through_hera_models(kind):
    from hera.workflows import models as m

    text = build(GRID, kind=kind).to_yaml()
    data = yaml.safe_load(text)
    model = (m.Workflow if kind == "Workflow" else m.WorkflowTemplate).model_validate(data)
    assert model.model_dump(by_alias=True, exclude_none=True) == data
    assert data["kind"] == kind


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate"])
def test_strictly_valid_against_argo_schema(kind):
    validator = argo_schema.validator(kind)  # skips, saying so, where ARGO_SCHEMA is unset; fails under CI=true
    doc = render(GRID, "--kind", kind, "--node-selector", "gpu=h100", "--tolerations", "dedicated=ml:NoExecute")
    assert argo_schema.errors(validator, doc) == []


def test_strict_schema_rejects_an_unknown_key(doc):
    validator = argo_schema.validator("Workflow")
    bad = copy.deepcopy(doc)
    template(bad, "train")["retryStrategy"]["limt"] = 3
    errors = argo_schema.errors(validator, bad)
    assert len(errors) == 1 and "limt" in errors[0]


# --- golden files ----------------------------------------------------------------


def _compare_golden(path: Path, text: str, target: str) -> None:
    if os.environ.get("MELI_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make {target}`"
    assert path.read_text() == text, f"{path.relative_to(ROOT)} is out of date: run `make {target}` and review the diff"


def test_golden_workflow_matches_render():
    r = cli("render", "--configs", "hidden50,hidden100")
    assert r.returncode == 0, r.stderr
    _compare_golden(GOLDEN, r.stdout, "golden")


def test_chart_workflowtemplate_matches_render():
    r = cli("render", "--chart", "--configs", "hidden50,hidden100")
    assert r.returncode == 0, r.stderr
    _compare_golden(CHART_TEMPLATE, r.stdout, "chart-template")
    spec = yaml.safe_load(r.stdout)
    # the chart sets these from its values, beside the spec; the parameters come from its ConfigMap
    assert "serviceAccountName" not in spec and "artifactRepositoryRef" not in spec and "podSpecPatch" not in spec
    params = spec["arguments"]["parameters"]
    assert params[0]["name"] == "configs" and params[0]["valueFrom"]["default"] == "hidden50,hidden100"
    for p in params:
        assert p["valueFrom"]["configMapKeyRef"] == {"name": "meli-sweep-parameters", "key": p["name"]}, p
        assert "enum" not in p and "value" not in p, p
        # a required parameter has no default to fall back to: a sweep without it fails at once
        assert ("default" in p["valueFrom"]) is (p["name"] not in steps.REQUIRED), p
    assert params_of(render("hidden50"))["train-memory"] == next(p for p in params if p["name"] == "train-memory")["valueFrom"]["default"]
    train = next(t for t in spec["templates"] if t["name"] == "train")
    assert train["synchronization"] == {"semaphores": [{"configMapKeyRef": {"name": "meli-sweep-semaphore", "key": "gpu-pods"}}]}
    r = cli("chart-schema")
    assert r.returncode == 0, r.stderr
    _compare_golden(CHART_SCHEMA, r.stdout, "chart-template")
    names = json.loads(r.stdout)["properties"]["workflowTemplate"]["properties"]["parameters"]["propertyNames"]["enum"]
    assert names == [p["name"] for p in params]


def _shell_env() -> dict:
    # As a user's shell runs make: under `make test` the inherited MAKELEVEL turns on make's
    # "Entering directory" line, which would land on stdout before the YAML.
    return {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}


def test_make_render_prints_only_the_workflow():
    r = subprocess.run(
        ["make", "render", "CONFIGS=hidden50,hidden100"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=_shell_env()
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == GOLDEN.read_text()


# --- the DAG ---------------------------------------------------------------------


def test_dag_plan_and_prepare_then_train_then_aggregate(doc):
    dag = template(doc, "sweep")["dag"]
    assert doc["spec"]["entrypoint"] == "sweep"
    assert [t["name"] for t in dag["tasks"]] == ["plan", "prepare", "train", "train-on-cpu", "train-group", "aggregate"]
    assert "depends" not in task(doc, "plan") and "depends" not in task(doc, "prepare")
    assert task(doc, "train")["depends"] == task(doc, "train-on-cpu")["depends"] == "plan && prepare"
    assert task(doc, "train-group")["depends"] == "plan && prepare"
    assert task(doc, "train-group")["withParam"] == "{{tasks.plan.outputs.parameters.groups}}"
    assert task(doc, "train")["withParam"] == "{{tasks.plan.outputs.parameters.runs}}"
    assert task(doc, "train-on-cpu")["withParam"] == "{{tasks.plan.outputs.parameters.cpu-runs}}"
    # aggregate runs on any outcome of either fan-out, Skipped (an empty list) included; the workflow still
    # fails when a run failed (tests/test_argo_controller.py runs each case)
    assert task(doc, "aggregate")["depends"] == (
        "plan && prepare && (train.Succeeded || train.Failed || train.Errored || train.Skipped || train.Omitted)"
        " && (train-on-cpu.Succeeded || train-on-cpu.Failed || train-on-cpu.Errored || train-on-cpu.Skipped"
        " || train-on-cpu.Omitted)"
        " && (train-group.Succeeded || train-group.Failed || train-group.Errored || train-group.Skipped"
        " || train-group.Omitted)")
    assert dag["failFast"] is False
    assert sorted(dag["target"].split()) == ["aggregate", "train", "train-group", "train-on-cpu"]


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate"])
def test_tfidf_trains_in_a_cpu_pod_with_no_gpu_request_placement_or_semaphore(kind, tmp_path):
    doc = build("hidden50", Options(gpu_semaphore="meli-sweep-semaphore#gpu-pods"), kind=kind).to_dict()
    gpu, cpu = template(doc, "train"), template(doc, "train-on-cpu")
    # one definition of the step: the same command, image, retries, deadline, metrics and display name
    for key in ("container", "inputs", "outputs", "retryStrategy", "activeDeadlineSeconds", "metrics", "annotations"):
        assert cpu[key] == gpu[key], key
    assert "synchronization" in gpu and "synchronization" not in cpu
    values = {p["name"]: p["value"] if "value" in p else p["valueFrom"].get("default", "")
              for p in doc["spec"]["arguments"]["parameters"]}
    patches = {}
    for name in ("train", "train-on-cpu"):
        text = template(doc, name)["podSpecPatch"]
        for p, value in values.items():
            text = text.replace("{{workflow.parameters.%s}}" % p, value)
        patches[name] = json.loads(text)
    assert patches["train"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "tolerations" in patches["train"] and "nodeSelector" in patches["train"]
    assert "nvidia.com/gpu" not in json.dumps(cpu) and "tolerations" not in patches["train-on-cpu"]
    assert "nodeSelector" not in patches["train-on-cpu"]
    assert patches["train-on-cpu"]["containers"][0]["resources"] == {
        "requests": {"cpu": values["train-cpu"], "memory": values["train-memory"], "ephemeral-storage": Options().train_tmp_size},
        "limits": {"memory": values["train-memory"]}}
    # plan sends the tfidf runs (the baseline, or one listed) to the CPU fan-out, the others to the GPU one
    command = template(doc, "plan")["container"]["command"]
    files = {"/tmp/runs.json": tmp_path / "runs.json", "/tmp/cpu-runs.json": tmp_path / "cpu-runs.json"}
    command = [str(files.get(c, c)) for c in command]
    command = _substitute(command, {**{f"workflow.parameters.{k}": v for k, v in values.items()},
                                    "workflow.parameters.configs": "hidden50,tfidf:epochs=2",
                                    "workflow.parameters.baseline": "true", "workflow.parameters.data": "s3://b/d.csv",
                                    "workflow.parameters.embeddings": "none", "workflow.parameters.out": "s3://b/o",
                                    "workflow.parameters.image": "meli-sweep:1"})
    r = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [i["name"] for i in json.loads(files["/tmp/runs.json"].read_text())] == ["hidden50"]
    assert [i["name"] for i in json.loads(files["/tmp/cpu-runs.json"].read_text())] == ["tfidf_epochs=2", "tfidf"]


def _substitute(value, params: dict):
    if isinstance(value, str):
        for k, v in params.items():
            value = value.replace("{{" + k + "}}", v)
        return value
    return [_substitute(v, params) for v in value]


def test_fan_out_expands_to_exactly_the_requested_runs_grids_included(tmp_path):
    doc = render(GRID, "--data", "s3://bkt/train.csv.gz", "--embeddings", "none", "--out", "s3://bkt/meli")
    params = {f"workflow.parameters.{p['name']}": p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    assert params["workflow.parameters.configs"] == GRID
    # Run the plan container's own command, as the pod would, with Argo's substitutions done by hand.
    command = _substitute(template(doc, "plan")["container"]["command"], params)
    result = template(doc, "plan")["outputs"]["parameters"][0]["valueFrom"]["path"]
    cpu_result = template(doc, "plan")["outputs"]["parameters"][1]["valueFrom"]["path"]
    command = [{result: str(tmp_path / "runs.json"), cpu_result: str(tmp_path / "cpu-runs.json")}.get(c, c) for c in command]
    assert command[:3] == ["python", "-m", "job"]
    r = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    items = json.loads((tmp_path / "runs.json").read_text())
    assert [i["name"] for i in items] == [
        "hidden50",
        "hidden100_lr=1e-3_epochs=2",
        "hidden100_lr=1e-3_epochs=3",
        "hidden100_lr=3e-4_epochs=2",
        "hidden100_lr=3e-4_epochs=3",
    ]
    # the baseline every sweep adds (parameter baseline), for the CPU fan-out
    assert [i["name"] for i in json.loads((tmp_path / "cpu-runs.json").read_text())] == ["tfidf"]
    # Each item becomes one train pod whose command is steps.train for that run.
    train_task = task(doc, "train")
    for item in items:
        args = {
            a["name"]: _substitute(a["value"], {"item.name": item["name"], "item.spec": item["spec"],
                                                "item.epochs": str(item["epochs"]), "item.round": str(item["round"]),
                                                "item.rung": str(item["rung"])})
            for a in train_task["arguments"]["parameters"]
        }
        pod = _substitute(
            template(doc, "train")["container"]["command"],
            {**params, **{f"inputs.parameters.{k}": v for k, v in args.items()}, "workflow.name": "meli-sweep-x"},
        )
        prepared = "{{tasks.prepare.outputs.parameters.prepared}}"
        assert pod == steps.train(item["spec"], prepared, params["workflow.parameters.out"], "meli-sweep-x", item["name"],
                                  "/tmp/result", epochs=str(item["epochs"]), round_=str(item["round"]),
                                  rung=str(item["rung"]), cuda_graphs="false")


def test_step_commands_come_from_job_steps(doc):
    def command(name):
        return template(doc, name)["container"]["command"]

    assert command("plan") == steps.plan(
        "{{workflow.parameters.configs}}", "{{workflow.parameters.baseline}}", result_file="/tmp/runs.json",
        cpu_result_file="/tmp/cpu-runs.json", search_settings=dag.SEARCH, capacity=(1, 1), shape_dir="/tmp/shape",
        max_workflow_bytes="{{workflow.parameters.max-workflow-bytes}}",
        parameters={p["name"]: "{{workflow.parameters.%s}}" % p["name"] for p in doc["spec"]["arguments"]["parameters"]},
        runs_per_gpu="{{workflow.parameters.runs-per-gpu}}", group_result_file="/tmp/groups.json",
    )
    assert command("prepare") == steps.prepare(
        "{{workflow.parameters.data}}", "{{workflow.parameters.embeddings}}", "{{workflow.parameters.out}}", result_file="/tmp/prepared"
    )
    assert command("train") == steps.train(
        "{{inputs.parameters.spec}}",
        "{{inputs.parameters.prepared}}",
        "{{workflow.parameters.out}}",
        "{{workflow.name}}",
        "{{inputs.parameters.name}}",
        result_file="/tmp/result",
        epochs="{{inputs.parameters.epochs}}",
        round_="{{inputs.parameters.round}}",
        rung="{{inputs.parameters.rung}}",
        cuda_graphs="{{workflow.parameters.cuda-graphs}}",
    )
    assert command("train-on-cpu") == command("train")
    assert command("train-group") == steps.train_group(
        "{{inputs.parameters.runs}}", "{{inputs.parameters.prepared}}", "{{workflow.parameters.out}}", "{{workflow.name}}",
        result_file="/tmp/result", cuda_graphs="{{workflow.parameters.cuda-graphs}}")
    assert command("aggregate") == steps.aggregate(
        "{{workflow.parameters.out}}", "{{workflow.name}}", "{{workflow.parameters.configs}}", report_dir="/tmp/report",
        search_settings=dag.SEARCH, baseline="{{workflow.parameters.baseline}}",
    )


def test_every_step_command_parses_with_the_job_cli(doc):
    from job.__main__ import _parser

    values = {f"workflow.parameters.{k}": v for k, v in params_of(doc).items()}
    for name in ("plan", "prepare", "train", "aggregate"):
        command = _substitute(template(doc, name)["container"]["command"], {**values, "inputs.parameters.epochs": "3",
                                                                           "inputs.parameters.round": "1",
                                                                           "inputs.parameters.rung": "0"})
        assert command[:3] == ["python", "-m", "job"]
        args = _parser().parse_args(command[3:])  # exits (fails the test) on an argument the job does not know
        assert args.step == name


def pod_patch(doc: dict, name: str) -> dict:
    """A template's pod spec patch with the workflow's parameter values in place, as the controller makes it."""
    text = template(doc, name)["podSpecPatch"]
    for p, value in params_of(doc).items():
        text = text.replace("{{workflow.parameters.%s}}" % p, value)
    return json.loads(text)


def test_train_pod_gpu_resources_scheduling_and_shm(doc):
    train = template(doc, "train")
    patch = pod_patch(doc, "train")
    [main] = patch["containers"]
    resources = main["resources"]
    assert main["name"] == "main"  # the container Argo runs the command in
    assert resources["requests"]["nvidia.com/gpu"] == "1" and resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["cpu"] == "4" and resources["requests"]["memory"] == resources["limits"]["memory"] == "16Gi"
    assert patch["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert patch["nodeSelector"] == {}
    prepare = pod_patch(doc, "prepare")["containers"][0]["resources"]
    # a CPU limit as well: prepare runs one tokenizing process per core the limit allows
    assert prepare == {"requests": {"cpu": "6", "memory": "2Gi", "ephemeral-storage": Options().prepare_tmp_size},
                       "limits": {"cpu": "6", "memory": "2Gi"}}
    assert [m["mountPath"] for m in train["container"]["volumeMounts"]] == ["/tmp"]  # no DataLoader: no /dev/shm
    assert isinstance(train["activeDeadlineSeconds"], int) and train["activeDeadlineSeconds"] > 0
    for cpu_step in ("plan", "prepare", "aggregate"):
        assert "nvidia.com/gpu" not in json.dumps(template(doc, cpu_step))
        assert template(doc, cpu_step)["container"]["image"] == "{{workflow.parameters.cpu-image}}"


IMAGE_UID = 1000  # uid and gid of the non-root user of images/Dockerfile and images/Dockerfile.cpu


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate"])
def test_every_pod_is_hardened(kind):
    """Non-root as the images' uid, no privilege gains, read-only root; each step writes only to a /tmp emptyDir."""
    doc = render(GRID, "--kind", kind)
    pod = doc["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == IMAGE_UID and pod["runAsGroup"] == IMAGE_UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = [t for t in doc["spec"]["templates"] if "dag" not in t]
    steps_ = ["aggregate", "plan", "prepare", "train", "train-on-cpu", "train-group"]
    # the chart's template carries a search's later stages, whose lists `next` writes
    assert sorted(t["name"] for t in containers) == sorted(steps_ + (["next"] if kind == "WorkflowTemplate" else []))
    for t in containers:
        c = t["container"]
        assert c["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, t["name"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in t["volumes"]}
        assert set(volumes[mounts["/tmp"]]) == {"name", "emptyDir"}, t["name"]  # on the node's disk, not in memory
        # only /tmp is writable: every file a step names lies under /tmp
        assert set(mounts) == {"/tmp"}, t["name"]
        paths = [p["valueFrom"]["path"] for p in t.get("outputs", {}).get("parameters", [])]
        paths += [a["path"] for a in t.get("outputs", {}).get("artifacts", [])]
        paths += [a for a in c["command"] if a.startswith("/")]
        assert paths and all(x.startswith("/tmp/") for x in paths), (t["name"], paths)
        # HOME and the caches of matplotlib, torch and boto3 are under /tmp, not on the read-only root
        env = {e["name"]: e.get("value") for e in c["env"]}
        for name in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
            assert env[name] == "/tmp" or env[name].startswith("/tmp/"), (t["name"], name)


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowTemplate"])
def test_every_step_has_a_sized_tmp_and_requests_that_much_ephemeral_storage(kind):
    """Without a sizeLimit or a request, a full /tmp is a disk-pressure eviction on whatever node the pod landed on."""
    o = Options()
    doc = build("hidden50", o, kind=kind).to_dict()
    sizes = {"plan": o.tmp_size, "aggregate": o.tmp_size, "prepare": o.prepare_tmp_size,
             "train": o.train_tmp_size, "train-on-cpu": o.train_tmp_size, "train-group": o.train_tmp_size,
             **({"next": o.tmp_size} if kind == "WorkflowTemplate" else {})}
    for name, size in sizes.items():
        t = template(doc, name)
        (tmp,) = [v for v in t["volumes"] if v["name"] == "tmp"]
        assert tmp["emptyDir"] == {"sizeLimit": size}, name
        requests = dict((t["container"].get("resources") or {}).get("requests") or {})
        if "podSpecPatch" in t:
            text = t["podSpecPatch"].replace("{{workflow.parameters.node-selector}}", "{}").replace(
                "{{workflow.parameters.tolerations}}", "[]")
            requests.update(json.loads(text)["containers"][0]["resources"]["requests"])
        assert requests["ephemeral-storage"] == size, name
    assert [t["name"] for t in doc["spec"]["templates"] if "container" in t and t["name"] not in sizes] == []
    # the help text of each size says what was measured and how
    for f in ("prepare_tmp_size", "train_tmp_size"):
        assert "make bench-disk" in Options.__dataclass_fields__[f].metadata["help"]


def test_node_selector_tolerations_and_resources_are_configurable():
    doc = render("hidden50", "--node-selector", "gpu=h100,pool=spot", "--tolerations", "dedicated=ml:NoExecute",
                 "--train-memory", "32Gi", "--gpus", "2")
    patch = pod_patch(doc, "train")
    assert patch["nodeSelector"] == {"gpu": "h100", "pool": "spot"}
    assert patch["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]
    assert patch["containers"][0]["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "2"}


@pytest.mark.slow
def test_make_variables_reach_the_options_and_nothing_else_does():
    """`make render TRAIN_MEMORY=32Gi`: each option's variable; the same name in the environment of a bare
    `python -m workflows.cli` (no --from-env) changes nothing."""
    r = subprocess.run(["make", "-s", "render", "CONFIGS=hidden50", "TRAIN_MEMORY=32Gi", "BASELINE=0", "PARALLELISM=2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=_shell_env())
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert params_of(doc)["train-memory"] == "32Gi" and params_of(doc)["baseline"] == "false" and doc["spec"]["parallelism"] == 2
    bare = cli("render", "--configs", "hidden50", env=dict(os.environ, TRAIN_MEMORY="32Gi"))
    assert params_of(yaml.safe_load(bare.stdout))["train-memory"] == "16Gi"
    bad = subprocess.run(["make", "-s", "render", "CONFIGS=hidden50", "TRAIN_MEMORY=32 GB"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=_shell_env())
    assert bad.returncode != 0 and "train-memory '32 GB': expected a Kubernetes quantity" in bad.stderr


def test_retry_strategy_catches_preemption_with_backoff(doc):
    retry = template(doc, "train")["retryStrategy"]
    assert retry["expression"] == RETRY_WHEN
    assert "imminent node shutdown" in retry["expression"] and "pod deleted" in retry["expression"]
    assert "lastRetry.message == 'pod deleted'" in retry["expression"]  # Error alone is not enough
    assert retry["retryPolicy"] == "Always" and retry["limit"] >= 1
    assert retry["backoff"]["duration"] and retry["backoff"]["factor"] >= 2
    for other in ("plan", "prepare", "aggregate"):
        assert "retryStrategy" not in template(doc, other)


def test_parameters_service_account_gc_ttl_and_parallelism():
    doc = render("hidden50", "--parallelism", "2", "--image", "reg.example/ml/meli:1", "--out", "s3://bkt/meli")
    spec = doc["spec"]
    params = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    assert set(params) == {"configs", "data", "embeddings", "out", "image", "cpu-image", "pushgateway-url", "baseline",
                           "train-cpu", "train-memory", "gpus", "runs-per-gpu", "cuda-graphs", "prepare-cpu", "prepare-memory", "node-selector",
                           "tolerations", "s3-secret", "trials", "search", "search-seed", "halving", "min-epochs", "rounds",
                           "max-workflow-bytes", "mlflow-tracking-uri", "mlflow-secret"}
    assert params["baseline"] == "true" and params_of(render("hidden50", "--no-baseline"))["baseline"] == "false"
    assert params["image"] == "reg.example/ml/meli:1" and params["cpu-image"] == "reg.example/ml/meli:1-cpu"
    assert params["out"] == "s3://bkt/meli"
    assert spec["parallelism"] == 2
    assert spec["serviceAccountName"] == "meli-sweep"
    assert spec["podGC"]["strategy"] and spec["ttlStrategy"]["secondsAfterSuccess"] > 0
    assert doc["metadata"]["generateName"] == "meli-sweep-"
    # the sweep id is the workflow name: it names the S3 folders
    assert "{{workflow.parameters.out}}/sweeps/{{workflow.name}}/" in " ".join(template(doc, "train")["container"]["command"])


def params_of(doc: dict) -> dict:
    return {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}


def test_s3_credentials_come_from_a_secret_and_no_secret_value_is_in_the_manifest():
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEY123", AWS_SECRET_ACCESS_KEY="very-secret-value-42", ARGO_TOKEN="tok-abc-987")
    r = cli("render", "--configs", "hidden50,hidden100", env=env)
    assert r.returncode == 0, r.stderr
    for secret in ("AKIAEXAMPLEKEY123", "very-secret-value-42", "tok-abc-987"):
        assert secret not in r.stdout
    doc = yaml.safe_load(r.stdout)
    for name in ("plan", "prepare", "train", "aggregate"):
        container = template(doc, name)["container"]
        assert container["envFrom"] == [{"secretRef": {"name": "{{workflow.parameters.s3-secret}}", "optional": True}},
                                        {"secretRef": {"name": "{{workflow.parameters.mlflow-secret}}", "optional": True}},
                                        {"configMapRef": {"name": "meli-sweep-env", "optional": True}}]
        assert not any(e["name"].startswith("AWS_") for e in container.get("env", []))
    assert not any(p["name"].lower().startswith(("aws", "secret", "token")) for p in doc["spec"]["arguments"]["parameters"])
    assert params_of(doc)["s3-secret"] == "meli-sweep-s3"  # the Secret's name, never its keys


def test_mlflow_uri_is_a_parameter_and_its_credentials_come_only_from_their_own_secret():
    env = dict(os.environ, MLFLOW_TRACKING_USERNAME="meli-user", MLFLOW_TRACKING_PASSWORD="mlflow-pass-77",
               MLFLOW_TRACKING_TOKEN="mlflow-tok-55")
    r = cli("render", "--configs", "hidden50", "--mlflow-tracking-uri", "http://mlflow.ml:5000", env=env)
    assert r.returncode == 0, r.stderr
    for secret in ("meli-user", "mlflow-pass-77", "mlflow-tok-55"):
        assert secret not in r.stdout
    doc = yaml.safe_load(r.stdout)
    assert params_of(doc)["mlflow-tracking-uri"] == "http://mlflow.ml:5000"
    assert params_of(doc)["mlflow-secret"] == "meli-sweep-mlflow"  # the Secret's name, never its keys
    assert params_of(render("hidden50"))["mlflow-tracking-uri"] == ""  # off unless given
    for name in ("train", "aggregate"):
        container = template(doc, name)["container"]
        assert {"name": "MLFLOW_TRACKING_URI", "value": "{{workflow.parameters.mlflow-tracking-uri}}"} in container["env"]
        assert {"secretRef": {"name": "{{workflow.parameters.mlflow-secret}}", "optional": True}} in container["envFrom"]
        assert [e["name"] for e in container["env"] if e["name"].startswith("MLFLOW_")] == ["MLFLOW_TRACKING_URI"]


@pytest.mark.parametrize("uri, problem", [
    ("http://user:pw@mlflow.ml:5000", "carries credentials"),
    ("runs/mlflow", "expected http://host:port"),
    ("file:///tmp/mlruns", "expected http://host:port"),
])
def test_a_tracking_uri_the_pods_cannot_use_is_refused_before_anything_is_sent(uri, problem):
    r = cli("render", "--configs", "hidden50", "--mlflow-tracking-uri", uri)
    assert r.returncode != 0 and problem in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "pw@" not in r.stderr


def test_argo_ui_annotations_display_name_output_and_metrics():
    doc = render("hidden50,hidden100", "--data", "s3://bkt/meli/spanish.train.csv.gz")
    notes = doc["metadata"]["annotations"]
    assert "hidden50,hidden100" in notes["workflows.argoproj.io/title"]
    assert "s3://bkt/meli/spanish.train.csv.gz" in notes["workflows.argoproj.io/description"]
    train = template(doc, "train")
    # The plan item's display-safe label, never the run name: Argo v3.7+ errors a node whose display name
    # fails its regex (operator.go: executeTemplate), and run names hold '_' and '='.
    assert train["annotations"]["workflows.argoproj.io/display-name"] == "{{inputs.parameters.label}}"
    assert task(doc, "train")["arguments"]["parameters"][1] == {"name": "label", "value": "{{item.label}}"}
    out = train["outputs"]["parameters"][0]
    assert out == {"name": "balanced-accuracy", "valueFrom": {"path": "/tmp/result", "default": "nan"}}
    # Only what every attempt can fill in: a preempted attempt has no outputs, and Argo substitutes a
    # metric whole before its `when` (operator.go: computeMetrics); tests/test_argo_controller.py runs it.
    [duration] = train["metrics"]["prometheus"]
    assert duration["name"] == "meli_sweep_train_duration_seconds"
    assert duration["gauge"]["value"] == "{{duration}}" and duration["help"]
    # the workflow label keeps two sweeps that run the same config apart
    assert duration["labels"] == [{"key": "workflow", "value": "{{workflow.name}}"},
                                  {"key": "config", "value": "{{inputs.parameters.name}}"},
                                  {"key": "status", "value": "{{status}}"}]


def test_aggregate_declares_its_report_files_as_s3_artifacts(doc):
    artifacts = {a["path"].rsplit("/", 1)[1]: a for a in template(doc, "aggregate")["outputs"]["artifacts"]}
    assert {"summary.md", "comparison.png", "train_loss.png", "validation_loss.png", "balanced_accuracy.png"} <= set(artifacts)
    for name, a in artifacts.items():
        # no key of their own: the repository's keyFormat places them (executor.go: saveArtifactFromFile)
        assert "s3" not in a
        assert a["archive"] == {"none": {}} and a["optional"] is True


def test_artifact_repository_and_log_archive():
    """The chart's WorkflowTemplate names the chart's repository; a rendered Workflow names one only when asked."""
    plain = render("hidden50")
    assert "artifactRepositoryRef" not in plain["spec"] and plain["spec"]["archiveLogs"] is True
    named = render("hidden50", "--artifact-repository", "team-artifacts#s3")
    assert named["spec"]["artifactRepositoryRef"] == {"configMap": "team-artifacts", "key": "s3"}
    r = cli("render", "--configs", "hidden50", "--artifact-repository", "Team Artifacts")
    assert r.returncode == 2 and r.stdout == "" and "artifact repository 'Team Artifacts'" in r.stderr


# --- inputs are checked before anything is rendered --------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--configs", "hidden5"], "unknown config 'hidden5'"),
        (["--configs", "hidden50:lr=fast"], "lr='fast'"),
        (["--configs", "hidden50", "--data", "/local/train.csv"], "S3 only"),
        (["--configs", "hidden50", "--tolerations", "gpu:Sometimes"], "toleration"),
        (["--configs", "hidden50", "--prepare-memory", "2 GiB"], "prepare-memory '2 GiB'"),
        (["--configs", "hidden50", "--node-selector", "gpu"], "node selector"),
    ],
)
def test_bad_input_is_one_line_and_no_yaml(args, message):
    r = cli("render", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr


def test_workflows_never_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import workflows.dag, workflows.cli\n"
        "sys.exit(workflows.cli.main(['render', '--configs', 'hidden50,hidden100']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["kind"] == "Workflow"


@pytest.mark.parametrize("module", ["job.prepare", "job.aggregate", "job.search", "job.search_report", "job.capacity",
                                    "job.tracking"])
def test_cpu_image_steps_import_no_torch(module):
    """The CPU image (images/Dockerfile.cpu) has no torch: its steps must not need it."""
    code = f"import sys; sys.modules['torch'] = None\nimport {module}\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{module} imports torch at module level:\n{r.stderr[-2000:]}"


def test_shell_quoting_of_make_variables_is_not_needed_for_grids():
    # `make render CONFIGS=a:lr=1|2` passes the spec through quotes: `|` must reach the CLI unchanged.
    r = subprocess.run(
        ["make", "-s", "render", "CONFIGS=hidden100:lr=1e-3|3e-4"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    params = {p["name"]: p["value"] for p in yaml.safe_load(r.stdout)["spec"]["arguments"]["parameters"]}
    assert params["configs"] == "hidden100:lr=1e-3|3e-4", shlex.quote(r.stdout[:200])
