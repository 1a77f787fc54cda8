"""Under CI=true nothing skips silently: a missing Argo schema is an error, and any skip but a CUDA
test's fails the session (tests/conftest.py). Each case is a pytest run of its own, as CI runs it.

    make test PYTEST_ARGS=tests/test_ci.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TESTS = ROOT / "tests"


def pytest_run(test_file: Path, ci: bool, **env: str) -> subprocess.CompletedProcess:
    """pytest on one file with this suite's conftest loaded as a plugin, CI set or not."""
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "ARGO_SCHEMA")}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]))
    if ci:
        environ["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(test_file.parent), str(test_file)],
                          capture_output=True, text=True, env=environ, timeout=120)


@pytest.mark.slow
def test_a_skip_fails_the_session_under_ci_unless_it_is_a_cuda_test(tmp_path):
    plain = tmp_path / "test_plain.py"
    plain.write_text("import pytest\n\ndef test_x():\n    pytest.skip('promtool not found')\n")
    cuda = tmp_path / "test_gpu.py"
    cuda.write_text("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pytest.skip('needs a CUDA GPU')\n")
    assert pytest_run(plain, ci=False).returncode == 0  # a developer's machine: a skip, said in the summary
    r = pytest_run(plain, ci=True)
    assert r.returncode == 1 and "test_plain.py::test_x: Skipped: promtool not found" in r.stdout, r.stdout
    r = pytest_run(cuda, ci=True)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout


@pytest.mark.slow
def test_a_missing_argo_schema_is_an_error_under_ci(tmp_path):
    check = tmp_path / "test_schema.py"
    check.write_text("import argo_schema\n\ndef test_x():\n    argo_schema.validator('Workflow')\n")
    r = pytest_run(check, ci=False)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
    r = pytest_run(check, ci=True)
    assert r.returncode == 1 and "1 failed" in r.stdout and "a missing schema is an error" in r.stdout, r.stdout
