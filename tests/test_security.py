"""Security: no credential in any output, only safe loaders, names that cannot escape the prefix.

(Pod hardening is checked in tests/test_workflow.py, the chart's RBAC role in tests/test_helm.py.)

The secret test plants known credential values in the environment, runs a whole sweep against the
moto S3 server (which accepts any keys), and greps every byte the sweep left behind: each S3 object,
the local cache, the logs, the rendered workflow and the images' Dockerfiles.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import boto3
import pytest

from conftest import ROOT, rendered_workflow
from job import configs, storage
from job.errors import UserError

SOURCE_DIRS = ("job", "workflows", "tests")


def planted() -> dict[str, str]:
    tag = os.urandom(6).hex()
    return {"AWS_ACCESS_KEY_ID": f"AKIAPLANTED{tag.upper()}", "AWS_SECRET_ACCESS_KEY": f"planted-secret-{tag}",
            "AWS_SESSION_TOKEN": f"planted-token-{tag}", "ARGO_TOKEN": f"Bearer planted-argo-{tag}"}


def leaks(blob: bytes, secrets: dict[str, str]) -> list[str]:
    return [k for k, v in secrets.items() if v.encode() in blob or v.split()[-1].encode() in blob]


@pytest.mark.s3
@pytest.mark.slow
def test_planted_secrets_appear_in_no_output(tiny_csv, s3_env, tmp_path):
    env, bucket = s3_env
    secrets = planted()
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.upload_file(str(tiny_csv), bucket, "in/tiny.csv.gz")
    cache = tmp_path / "cache"
    run_env = {**env, **secrets, "MELI_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.run([sys.executable, "-m", "job", "sweep", "--configs", "mlp256:epochs=2,max_train_rows=300",
                            "--data", f"s3://{bucket}/in/tiny.csv.gz", "--out", f"s3://{bucket}/meli", "--sweep", "planted"],
                           cwd=ROOT, env=run_env, capture_output=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr.decode()[-3000:]
    # a failing step too: error lines must not carry credentials either
    failing = subprocess.run([sys.executable, "-m", "job", "prepare", "--data", f"s3://{bucket}/in/missing.csv",
                              "--out", f"s3://{bucket}/meli"], cwd=ROOT, env=run_env, capture_output=True, timeout=120)
    assert failing.returncode == 2 and b"no such S3 object" in failing.stderr

    outputs: dict[str, bytes] = {"sweep stdout": sweep.stdout, "sweep stderr": sweep.stderr,
                                 "error stdout": failing.stdout, "error stderr": failing.stderr}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            outputs[f"s3://{bucket}/{obj['Key']}"] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    for path in cache.rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes()
    names = set(outputs)
    assert any(n.endswith("/checkpoint.pt") for n in names) and any(n.endswith("/report/summary.md") for n in names)
    assert any(n.endswith("/manifest.json") for n in names) and any("cache" in n for n in names)

    # The rendered workflow, made with the secrets in the environment, and the images.
    outputs["rendered workflow"] = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "render", "--configs", "hidden50,hidden100", "--out", f"s3://{bucket}/meli"],
        cwd=ROOT, env=run_env, capture_output=True, timeout=120, check=True).stdout
    for dockerfile in (ROOT / "images").glob("Dockerfile*"):
        outputs[str(dockerfile)] = dockerfile.read_bytes()
    found = {name: leaks(blob, secrets) for name, blob in outputs.items() if leaks(blob, secrets)}
    assert not found, f"credentials found in: {found}"
    assert len(outputs) >= 20


def test_the_workflow_carries_no_credential():
    """No parameter carries a credential (one names the Secret that holds them), and no step sets one as a literal
    env value: they come from that Secret."""
    doc = rendered_workflow()
    params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    names = [p for p in params if re.search(r"secret|token|password|key", p.lower())]
    assert names == ["s3-secret", "mlflow-secret"], list(params)
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", params[name])  # a Kubernetes object's name
    containers = [t["container"] for t in doc["spec"]["templates"] if "container" in t]
    assert containers
    for c in containers:
        for name in names:
            assert {"secretRef": {"name": f"{{{{workflow.parameters.{name}}}}}", "optional": True}} in c["envFrom"], c["name"]
        assert "envFrom" in c and not any(re.search(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", e["name"]) and "value" in e
                                          for e in c.get("env", [])), c["name"]


# --- only safe loaders ----------------------------------------------------------------------------

def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield node, f"{f.value.id}.{f.attr}"
            elif isinstance(f, ast.Name):
                yield node, f.id


def test_only_safe_loaders_in_the_code():
    checked = 0
    problems = []
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for node, name in _calls(ast.parse(path.read_text(), str(path))):
                kw = {k.arg: k.value for k in node.keywords}
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if name == "torch.load":
                    checked += 1
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
                    problems.append(f"{where}: {name}; use yaml.safe_load")
                elif name in ("pickle.load", "pickle.loads", "marshal.loads", "eval", "exec"):
                    problems.append(f"{where}: {name}")
                elif name == "np.load" and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                    problems.append(f"{where}: np.load(allow_pickle=True)")
                elif "shell" in kw and isinstance(kw["shell"], ast.Constant) and kw["shell"].value and folder != "tests":
                    problems.append(f"{where}: shell=True")
    assert not problems, problems
    assert checked >= 1  # the scan does see the checkpoint loader


# --- names and URIs cannot leave the sweep's prefix --------------------------------------------------

@pytest.mark.parametrize("part", ["..", "../x", "a/../../b", "/etc", "", ".", "a b", "x\x00y", "%2e%2e", "a\\b", "~root"])
def test_path_parts_that_could_escape_are_refused(part):
    with pytest.raises(UserError, match="not a safe path part"):
        storage.join("s3://bucket/meli/sweeps/s", part)


HOSTILE_SPECS = ["../x", "hidden50/../../x", "/etc/passwd", "hidden50:seed=../x", "hidden50:family=..",
                 "hidden50:family=../../x", "hidden50:lr=1e-3/..", "hidden50:lr=$(id)", "hidden50:lr=`id`",
                 "hidden50:lr=1;rm", "hidden50:lr=1 2", "hidden50:lr=..", "hidden50:seed=0|../x"]


@pytest.mark.parametrize("spec", HOSTILE_SPECS)
def test_hostile_config_specs_are_refused(spec):
    with pytest.raises(UserError):
        configs.expand(spec)


def test_every_run_name_is_a_plain_folder_name():
    for spec in ["hidden50", "hidden100:lr=1e-3|3e-4,epochs=5", "mlp256:freeze_embeddings=false,dropout=0.5",
                 "cnn100:seed=0|1|2", "finetune256:max_len=+40"]:
        for run in configs.expand(spec):
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*", run.name) and ".." not in run.name, run.name
            assert storage.join("s3://b/meli/sweeps/s", run.name) == f"s3://b/meli/sweeps/s/{run.name}"


@pytest.mark.parametrize("sweep", ["../x", "a/b", "UPPER", ".lead", "a" * 70, "x..y/../z"])
def test_sweep_ids_that_could_escape_are_refused(sweep, tmp_path, capsys):
    from job.__main__ import main

    code = main(["sweep", "--configs", "hidden50", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path), "--sweep", sweep])
    err = capsys.readouterr().err
    assert code == 2 and "error: --sweep" in err and not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("uri, message", [
    ("s3:///key", "has no bucket"), ("s3://", "has no bucket"), ("s3://UP/x", "not a valid S3 bucket name"),
    ("s3://AKIAPLANTED:planted-secret@bucket/x", "must not hold credentials"),
    ("https://user:planted-secret@host/x", "unsupported"), ("file:///etc/passwd", "unsupported"),
])
def test_uris_are_checked_and_never_echo_credentials(uri, message):
    with pytest.raises(UserError, match=message) as e:
        storage.check_uri(uri, "--data")
    assert "planted-secret" not in str(e.value)
