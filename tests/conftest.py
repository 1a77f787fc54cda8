"""Shared test fixtures: a real S3 API server (moto's server mode) on loopback, and small datasets.

The S3 server is a separate process on a free 127.0.0.1 port; the code under test reaches it
through boto3 with AWS_ENDPOINT_URL, exactly as it would reach MinIO.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from argo_schema import in_ci

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "helm"))  # helmbin: the helm binary the chart targets and tests use

# --- CI: nothing skips but the CUDA tests --------------------------------------------------------

_skipped: list[tuple[str, str]] = []  # (test id, reason) of every skip that is not a CUDA test's


def pytest_runtest_logreport(report) -> None:
    if report.skipped and "cuda" not in report.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Under CI=true any skip but a CUDA test's (marker `cuda`) fails the session: in CI a check that
    cannot run is a failure, never a silent pass."""
    if in_ci() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if in_ci() and _skipped:
        terminalreporter.section("skipped under CI=true (only CUDA tests may skip)", red=True)
        for nodeid, reason in _skipped:
            terminalreporter.line(f"{nodeid}: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s")
            time.sleep(0.2)


def run_main(main, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A command line's main(argv) run in this process, as its own process would run: the exit status (argparse's
    too), stdout and stderr captured, and `env` as the whole environment while it runs. It saves the interpreter
    start-up and imports that a subprocess pays each time."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def rendered_workflow(*args: str) -> dict:
    """`workflows.cli render --configs hidden50,hidden100` (what workflows/sweep.yaml holds), run in this process, parsed."""
    import io
    from contextlib import redirect_stdout

    import yaml

    from workflows import cli

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli.main(["render", "--configs", "hidden50,hidden100", *args]) == 0
    return yaml.safe_load(buf.getvalue())


def start_moto(**env):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/")
    except Exception:
        proc.kill()
        raise
    return proc, url


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1; yields its endpoint URL."""
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server_with_auth():
    """A moto S3 server that checks credentials, as a real store does: unknown keys get 403."""
    proc, url = start_moto(INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment for a process talking to the moto server, plus a fresh bucket; yields (env, bucket)."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_MAX_ATTEMPTS": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from job import storage

    storage.s3_client.cache_clear()
    bucket = f"test-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    yield {**os.environ, **env}, bucket
    storage.s3_client.cache_clear()


def run_job(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m job ...` as a user would, capturing its output."""
    proc = subprocess.run([sys.executable, "-m", "job", *args], capture_output=True, text=True, env=env or os.environ.copy(),
                          cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m job {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    """A small synthetic dataset (3,000 rows, 8 categories), made once per session."""
    path = tmp_path_factory.mktemp("data") / "tiny.csv.gz"
    run_job("synth", "--rows", "3000", "--categories", "8", "--seed", "1", "--out", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_prepared(tiny_csv, tmp_path_factory) -> str:
    """The tiny dataset prepared once (trained 32-d vectors); yields the prepared folder."""
    out = tmp_path_factory.mktemp("prepared")
    proc = run_job("prepare", "--data", str(tiny_csv), "--embeddings", "none", "--embedding-dim", "32", "--out", str(out))
    return proc.stdout.strip().splitlines()[-1]
