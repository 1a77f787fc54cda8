"""Contract test of `make submit`: a loopback HTTP server stands in for the Argo server.

    make test PYTEST_ARGS="-k submit"       # or: .venv/bin/python -m pytest tests/test_submit.py

The real submit command runs in a subprocess, as `make submit` runs it. The server
records each request (path, headers, JSON body) and answers 200 with the created
Workflow, or 401; a closed port stands in for an unreachable server.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import argo_schema  # tests/argo_schema.py: Argo's schema made strict
import pytest
from conftest import ROOT, free_port, run_main

from workflows import cli as workflows_cli

TOKEN = "s3cr3t-t0ken-never-printed"
CREATED = "meli-sweep-7xk2p"


class FakeArgo:
    """Records requests; answers `status` with Argo's JSON shapes."""

    def __init__(self, status: int = 200, message: str = "token not valid"):
        self.status, self.message = status, message
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                if fake.status == 200:
                    workflow = fake.requests[-1]["body"]["workflow"]
                    namespace = self.path.rstrip("/").rsplit("/", 1)[1]
                    answer = dict(workflow, metadata={**workflow["metadata"], "name": CREATED, "namespace": namespace})
                else:
                    answer = {"code": 16 if fake.status == 401 else 3, "message": fake.message}
                data = json.dumps(answer).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def argo_env(server: str | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGO_")}
    if server is not None:
        env["ARGO_SERVER"] = server
    env.update({"ARGO_TOKEN": TOKEN, "ARGO_NAMESPACE": "ml", **extra})
    return env


def submit(env: dict, *args: str, configs: str = "hidden50,hidden100") -> subprocess.CompletedProcess:
    """`python -m workflows.cli submit ...` with `env`, run in this process (see conftest.run_main)."""
    return run_main(workflows_cli.main, ["submit", "--configs", configs, "--out", "s3://bkt/meli", *args], env=env)


def assert_one_error_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr
    assert TOKEN not in r.stderr


@pytest.mark.slow
def test_make_submit_posts_a_sweep_of_the_chart_template_with_the_bearer_token():
    with FakeArgo() as argo:
        env = argo_env(f"127.0.0.1:{argo.port}", ARGO_SECURE="false")
        r = subprocess.run(
            ["make", "-s", "submit", "CONFIGS=hidden50,hidden100:lr=1e-3|3e-4", "OUT=s3://bkt/meli", "PARALLELISM=2",
             "PUSHGATEWAY_URL=http://prometheus-pushgateway.monitoring:9091", "TRAIN_MEMORY=32Gi",
             "MLFLOW_TRACKING_URI=http://mlflow.ml:5000"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["submitted", CREATED, f"http://127.0.0.1:{argo.port}/workflows/ml/{CREATED}"]
    assert TOKEN not in r.stdout + r.stderr
    [request] = argo.requests
    assert request["path"] == "/api/v1/workflows/ml"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    workflow = request["body"]["workflow"]
    assert workflow["kind"] == "Workflow" and workflow["metadata"]["namespace"] == "ml"
    assert workflow["metadata"]["generateName"] == "meli-sweep-"
    # a sweep of the chart's WorkflowTemplate: the chart's settings hold, but for what was given here
    assert workflow["spec"]["workflowTemplateRef"] == {"name": "meli-sweep"} and "templates" not in workflow["spec"]
    params = {p["name"]: p.get("value") for p in workflow["spec"]["arguments"]["parameters"]}
    assert params == {"configs": "hidden50,hidden100:lr=1e-3|3e-4", "out": "s3://bkt/meli", "train-memory": "32Gi",
                      # live metrics reach Grafana only when the train pods are told where to push
                      "pushgateway-url": "http://prometheus-pushgateway.monitoring:9091",
                      # and where to log their MLflow runs (the credentials stay in the mlflow-secret Secret)
                      "mlflow-tracking-uri": "http://mlflow.ml:5000"}
    assert workflow["spec"]["parallelism"] == 2


def test_body_is_strictly_valid_and_names_only_what_was_given():
    with FakeArgo() as argo:
        r = submit(argo_env(f"http://127.0.0.1:{argo.port}"), "--image", "reg.example/ml/meli:2")
    assert r.returncode == 0, r.stderr
    workflow = argo.requests[0]["body"]["workflow"]
    params = {p["name"]: p.get("value") for p in workflow["spec"]["arguments"]["parameters"]}
    # the CPU image follows the training image given, as it does in a rendered Workflow
    assert params == {"configs": "hidden50,hidden100", "out": "s3://bkt/meli", "image": "reg.example/ml/meli:2",
                      "cpu-image": "reg.example/ml/meli:2-cpu"}
    assert "parallelism" not in workflow["spec"]
    validator = argo_schema.validator("Workflow")  # skips, saying so, where ARGO_SCHEMA is unset; fails under CI=true
    assert argo_schema.errors(validator, workflow) == []


def test_base_href_and_a_token_that_already_says_bearer():
    with FakeArgo() as argo:
        env = argo_env(f"http://127.0.0.1:{argo.port}", ARGO_BASE_HREF="/argo/", ARGO_TOKEN=f"Bearer {TOKEN}")
        r = submit(env, "--namespace", "team-a")
    assert r.returncode == 0, r.stderr
    assert argo.requests[0]["path"] == "/argo/api/v1/workflows/team-a"
    assert argo.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert r.stdout.strip().endswith(f"/argo/workflows/team-a/{CREATED}")


def test_rejected_token_is_one_line():
    with FakeArgo(status=401) as argo:
        r = submit(argo_env(f"http://127.0.0.1:{argo.port}"))
    assert len(argo.requests) == 1
    assert_one_error_line(r, "rejected the token", "401", "ARGO_TOKEN")


def test_namespace_without_the_chart_template_is_one_line():
    # what the Argo server answers when workflowTemplateRef names a template the namespace lacks
    with FakeArgo(status=400, message='workflowtemplates.argoproj.io "meli-sweep" not found') as argo:
        r = submit(argo_env(f"http://127.0.0.1:{argo.port}"))
    assert len(argo.requests) == 1
    assert_one_error_line(r, "no WorkflowTemplate 'meli-sweep' in namespace 'ml'", "install the chart", "make render")


def test_connection_refused_is_one_line():
    port = free_port()  # free a moment ago: nothing listens there
    r = submit(argo_env(f"http://127.0.0.1:{port}"))
    assert_one_error_line(r, "cannot reach", f"127.0.0.1:{port}", "connection refused")


def test_unset_argo_server_is_one_line():
    r = submit(argo_env(None))
    assert_one_error_line(r, "ARGO_SERVER is not set")


@pytest.mark.parametrize(
    "configs, message",
    [("hidden50,hiden100", "unknown config 'hiden100'"), ("hidden50:lr=-1", "lr=-1.0"), ("hidden50:dropot=0.1", "unknown key")],
)
def test_bad_config_is_refused_before_anything_is_sent(configs, message):
    with FakeArgo() as argo:
        r = submit(argo_env(f"http://127.0.0.1:{argo.port}"), configs=configs)
    assert argo.requests == []
    assert_one_error_line(r, message)


SPACE = "hidden100:lr=loguniform(1e-4,1e-2)"


@pytest.mark.slow
def test_make_submit_of_a_search_sends_its_settings_as_parameters():
    """`make submit CONFIGS='hidden100:lr=loguniform(1e-4,1e-2)' TRIALS=27 HALVING=3`: the search settings reach the
    chart's template as parameters (its plan pod checks them again, against the stages the template carries)."""
    with FakeArgo() as argo:
        env = argo_env(f"127.0.0.1:{argo.port}", ARGO_SECURE="false")
        r = subprocess.run(["make", "-s", "submit", f"CONFIGS={SPACE}", "OUT=s3://bkt/meli", "TRIALS=27", "HALVING=3"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    [request] = argo.requests
    params = {p["name"]: p.get("value") for p in request["body"]["workflow"]["spec"]["arguments"]["parameters"]}
    assert params == {"configs": SPACE, "out": "s3://bkt/meli", "trials": "27", "halving": "3"}


@pytest.mark.parametrize("args, message", [
    ((), "give --trials N"),  # a space with no trials
    (("--trials", "0"), "give --trials N"),
    (("--trials", "9", "--halving", "3", "--min-epochs", "1", "--search", "grid"), "--search 'grid'"),
    (("--trials", "100000", "--halving", "3"), "MAX_WORKFLOW_SIZE"),  # past what one Workflow object holds
])
def test_a_bad_search_is_refused_before_anything_is_sent(args, message):
    with FakeArgo() as argo:
        r = submit(argo_env(f"http://127.0.0.1:{argo.port}"), *args, configs=SPACE)
    assert argo.requests == []
    assert_one_error_line(r, message)
