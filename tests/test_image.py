"""Static checks of the job images (no docker engine here): pinned bases and torch, non-root user, no secrets.

    make test PYTEST_ARGS="-k image"       # or: .venv/bin/python -m pytest tests/test_image.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_and_names_no_registry_host(path):
    bases = [args.split()[0] for word, args in instructions(path) if word == "FROM"]
    assert len(bases) == 1
    name, _, tag = bases[0].rpartition(":")
    assert name and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), bases[0]
    assert "." not in name.split("/")[0], f"{bases[0]}: leave the registry to the build machine's configuration"


def test_gpu_image_shares_the_cpu_images_pinned_base():
    bases = {path.name: next(args for word, args in instructions(path) if word == "FROM") for path in DOCKERFILES}
    assert bases["Dockerfile"] == bases["Dockerfile.cpu"], bases  # torch comes from the pin, not from the base


def test_gpu_image_installs_the_pinned_torch_with_cuda():
    steps = instructions(DOCKERFILES[0])
    assert ("COPY", "images/torch-version ./images/") in steps
    run = next(args for word, args in steps if word == "RUN" and "pip install" in args)
    assert 'echo "torch==$(cat images/torch-version)" > /tmp/torch-pin.txt' in run
    assert "pip install --constraint /tmp/torch-pin.txt ." in run  # the pin holds while the package's dependencies install
    assert "torch.version.cuda" in run and '"$(cat images/torch-version)"' in run  # the build checks what it installed


def test_the_venv_installs_the_pinned_torch_and_the_tests_run_it(tmp_path):
    pin = (ROOT / "images" / "torch-version").read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", pin), pin  # one exact version, nothing else
    recipe = subprocess.run(["make", "-n", f"VENV={tmp_path / 'venv'}", "venv"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert f'pip install -q "torch=={pin.strip()}"' in recipe, recipe
    import torch

    assert torch.__version__.split("+")[0] == pin.strip()  # the torch under test is the one the image ships


def test_cpu_image_installs_no_torch():
    run = " ".join(args for word, args in instructions(DOCKERFILES[1]) if word == "RUN")
    assert "not d.startswith('torch')" in run and "pip install --no-deps ." in run


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user(path):
    users = [args for word, args in instructions(path) if word == "USER"]
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so that runAsNonRoot can check it


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_credentials_or_data_in_the_image(path):
    steps = instructions(path)
    secretish = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)
    for word, args in steps:
        if word in ("ENV", "ARG"):
            assert not secretish.search(args), f"{word} {args}: credentials come from a Kubernetes Secret at run time"
        if word in ("COPY", "ADD"):
            sources = args.split()[:-1]
            assert all(s in ("pyproject.toml", "README.md", "job", "workflows", "images/torch-version") for s in sources), args
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    assert ignore[0] == "*"  # the build context starts empty; only the package is let back in
    assert {"!job/", "!workflows/", "!pyproject.toml", "!README.md", "!images/torch-version"} <= set(ignore)


def test_make_image_and_push_take_image():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image:.*## ", makefile, re.M) and re.search(r"^push:.*## ", makefile, re.M)
    assert "-f images/Dockerfile -t '$(IMAGE)'" in makefile and "push '$(IMAGE)'" in makefile
