"""The job images (no docker engine here): the pods' non-root uid, a build context of the package only,
the pinned torch the tests run, and the make targets that build and push them.

    make test PYTEST_ARGS="-k image"       # or: .venv/bin/python -m pytest tests/test_image.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, rendered_workflow

DOCKERFILES = [ROOT / "images" / "Dockerfile", ROOT / "images" / "Dockerfile.cpu"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_venv_installs_the_pinned_torch_and_the_tests_run_it(tmp_path):
    pin = (ROOT / "images" / "torch-version").read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", pin), pin  # one exact version, nothing else
    recipe = subprocess.run(["make", "-n", f"VENV={tmp_path / 'venv'}", "venv"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert f'pip install -q "torch=={pin.strip()}"' in recipe, recipe
    import torch

    assert torch.__version__.split("+")[0] == pin.strip()  # the torch under test is the one the image ships


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_the_non_root_uid_the_pods_require(path):
    """The image's last USER, numeric so that runAsNonRoot can check it, is the uid:gid every pod runs as."""
    users = [args for word, args in instructions(path) if word == "USER"]
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0, users[-1]
    doc = rendered_workflow()
    contexts = [doc["spec"]["securityContext"]] + [t["container"]["securityContext"] for t in doc["spec"]["templates"]
                                                    if "container" in t]
    assert len(contexts) > 1
    for sc in contexts:
        assert (sc["runAsUser"], sc["runAsGroup"]) == (int(uid), int(gid)), sc


def test_build_context_holds_only_the_package():
    """No venv, runs, data or credentials can reach an image: the context starts empty and lets the package back in."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    assert ignore[0] == "*"
    assert {"!job/", "!workflows/", "!pyproject.toml", "!README.md", "!images/torch-version"} <= set(ignore)


def test_make_image_and_push_take_image():
    r = subprocess.run(["make", "-n", "push", "DOCKER=docker", "IMAGE=reg.example/meli:1", "CPU_IMAGE=reg.example/meli:1-cpu"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    commands = [line.strip() for line in r.stdout.splitlines() if line.startswith("docker ")]
    assert commands == ["docker build -f images/Dockerfile -t 'reg.example/meli:1' .",
                             "docker build -f images/Dockerfile.cpu -t 'reg.example/meli:1-cpu' .",
                             "docker push 'reg.example/meli:1'", "docker push 'reg.example/meli:1-cpu'"], r.stdout
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    listed = re.sub(r"\x1b\[[0-9;]*m", "", listed)  # the colours
    assert re.search(r"^  image +\S", listed, re.M) and re.search(r"^  push +\S", listed, re.M), listed


def test_both_images_install_the_mlflow_client_and_the_tests_the_server():
    """MLflow is an optional extra: the images carry the client (train and aggregate log with it), the tests the server."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [d for d in extras["tracking"] if d.startswith("mlflow")], extras["tracking"]
    assert any(re.match(r"mlflow\b(?!-)", d) for d in extras["test"]), "the test extra needs the full mlflow (its server)"
    gpu = " ".join(args for word, args in instructions(DOCKERFILES[0]) if word == "RUN")
    assert "pip install --constraint /tmp/torch-pin.txt '.[tracking]'" in gpu
    cpu = " ".join(args for word, args in instructions(DOCKERFILES[1]) if word == "RUN")
    assert "['optional-dependencies']['tracking']" in cpu
    for run in (gpu, cpu):
        assert "import" in run and "mlflow" in run.split("pip install", 1)[1]  # the build checks the client imports
