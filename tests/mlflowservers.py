"""Pytest fixture and helpers: a real `mlflow server` (sqlite store, served artifacts) on a free loopback port.

`mlflow_server` starts it once per session through `workflows.mlflowui.serve` (the same code as
`make mlflow`) and waits until /health answers. The server comes from the package's `test` extra
(the full `mlflow`); if it is missing the tests fail: server-backed tests are never skipped.

    from mlflowservers import mlflow_server, client   # in a test module
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from workflows import mlflowui


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    if importlib.util.find_spec("mlflow.server") is None:  # the server, not only the client
        pytest.fail("mlflow server is not installed: `make test` installs the test extra, which carries mlflow",
                    pytrace=False)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # the tests' own client sends nothing out either
    with mlflowui.serve(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def runs_of(url: str, sweep: str) -> dict[str, object]:
    """{run name: Run} of the sweep's experiment."""
    c = client(url)
    experiment = c.get_experiment_by_name(sweep)
    assert experiment is not None, f"no MLflow experiment {sweep!r}"
    return {r.info.run_name: r for r in c.search_runs([experiment.experiment_id])}


def history(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged point of a metric, in step order, duplicates kept."""
    return sorted((m.step, m.value) for m in client(url).get_metric_history(run_id, key))
