"""Command line of the Argo side: render, submit and fetch the results of a sweep.

    python -m workflows.cli render --configs hidden50,hidden100 > sweep.yaml
    python -m workflows.cli render --chart -o helm/meli-sweep/files/workflowtemplate-spec.yaml
    python -m workflows.cli submit --configs hidden50,hidden100 --data s3://b/train.csv.gz --out s3://b/meli
    python -m workflows.cli results --sweep meli-sweep-7xk2p --out s3://b/meli

`make render`, `make submit` and `make results` call these. Submit talks to the
Argo server through Hera's WorkflowsService and reads the argo CLI's own
variables: ARGO_SERVER (host:port, or a URL), ARGO_TOKEN, ARGO_NAMESPACE,
ARGO_INSECURE_SKIP_VERIFY, ARGO_BASE_HREF, and ARGO_SECURE=false for plain HTTP.
Every config spec and URI is checked here before anything is sent. Errors
print one line, `error: ...`, and exit non-zero; the token is never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from job import capacity, steps, storage
from job import search as job_search
from job.errors import UserError, run_cli
from workflows.dag import (
    CHART_SEMAPHORE, NAME, PARAMETER, WORKFLOW, Options, build, parameter_fields, parameter_name, parse_artifact_repository,
    parse_node_selector, parse_toleration, reference, search_settings,
)

DEFAULTS = Options()
TIMEOUT_S = 30.0  # seconds to wait for the Argo server to connect and answer
# Chart mode of render: what the chart's WorkflowTemplate spec holds (the chart sets the rest from its values).
CHART_OPTIONS = dict(namespace=None, service_account="", artifact_repository="", gpu_semaphore=CHART_SEMAPHORE)
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")  # a Kubernetes resource quantity


def env_name(f) -> str:
    """The environment variable (and Makefile variable) of an option: train_memory -> TRAIN_MEMORY."""
    return f.name.upper()


def _flag_fields(roles: tuple[str, ...]) -> list:
    return [f for f in dataclasses.fields(Options) if f.metadata["flag"] and f.metadata["role"] in roles]


def _add_options(p: argparse.ArgumentParser, roles: tuple[str, ...], installed: bool = False) -> None:
    """One flag per Options field: its help and default come from the field. Unset flags stay None, so that
    what was given can be told from the defaults (submit sends only what was given)."""
    p.add_argument("--configs", required=True, help="config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4")
    for f in _flag_fields(roles):
        default = getattr(DEFAULTS, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        default_text = shown if shown not in (None, '') else 'none'
        if installed:  # submit: what the chart's install set comes first
            default_text = f"the chart's install value, else {default_text}"
        help = f"{f.metadata['help']} (default: {default_text}; env {env_name(f)})"
        if isinstance(default, bool):
            p.add_argument(f"--{parameter_name(f)}", action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            p.add_argument(f"--{parameter_name(f)}", type=int if isinstance(default, int) else str, default=None, help=help)
    p.add_argument("--from-env", action="store_true",
                   help="take each option not given as a flag from its environment variable, if set and not empty "
                        "(what make does: `make submit TRAIN_MEMORY=32Gi`)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflows.cli", description="meli-sweep on Argo Workflows.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("render", help="print the sweep as a standalone Workflow (no cluster needed)")
    _add_options(s, (PARAMETER, WORKFLOW))
    s.add_argument("--kind", choices=("Workflow", "WorkflowTemplate"), default="Workflow", help="resource kind")
    s.add_argument("--chart", action="store_true",
                   help="the spec of the chart's WorkflowTemplate (helm/meli-sweep/files/): no service account or "
                        "artifact repository, which the chart sets")
    s.add_argument("-o", "--output", default="-", help="write the YAML to this file instead of stdout")

    s = sub.add_parser("submit", help="check the configs, then submit a sweep of the chart's WorkflowTemplate")
    _add_options(s, (PARAMETER,), installed=True)
    s.add_argument("--parallelism", type=int, default=None, help="pods of the sweep at once (default: the template's)")
    s.add_argument("--namespace", default=None, help="namespace (default: $ARGO_NAMESPACE, else argo)")

    s = sub.add_parser("chart-schema", help="print the chart's values.schema.json: the parameter names its values may set")
    s.add_argument("-o", "--output", default="-", help="write it to this file instead of stdout")

    s = sub.add_parser("results", help="download a sweep's report into DEST/<sweep>/report/")
    s.add_argument("--sweep", required=True, help="the sweep id: the workflow name printed by submit")
    s.add_argument("--out", default="", help="the output prefix the sweep used, s3:// (required)")
    s.add_argument("--dest", default="runs", help="local folder (default: runs)")
    return p


def _uri(value: str, what: str, allow_none: bool = False) -> str:
    """Pods read only object storage: a local path would fail inside the cluster, so refuse it here."""
    if allow_none and value == "none":
        return value
    storage.check_uri(value, what)
    if not storage.is_s3(value):
        raise UserError(f"{what} {value!r}: the cluster reads S3 only (expected s3://bucket/key)")
    return value


def _given(args) -> dict:
    """The options given as flags, then (with --from-env) as environment variables, as typed values."""
    given = {}
    for f in dataclasses.fields(Options):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is None and args.from_env and os.environ.get(env_name(f), "").strip():
            value = _from_text(f, os.environ[env_name(f)].strip())
        if value is not None:
            given[f.name] = value
    return given


def _from_text(f, text: str):
    default = getattr(DEFAULTS, f.name)
    if isinstance(default, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise UserError(f"{env_name(f)}={text!r}: expected 1 or 0")
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{env_name(f)}={text!r}: expected a whole number") from None
    return text


def options_from(args) -> tuple[Options, set[str]]:
    """Check every input locally, so a typo fails here and not in a pod. Returns the options and which were given."""
    given = _given(args)
    for name in ("node_selector", "tolerations"):
        if name in given:
            given[name] = tuple(s for s in (x.strip() for x in str(given[name]).split(",")) if s)
    for name in ("data", "out"):
        if name in given:
            given[name] = _uri(given[name], name).rstrip("/") if name == "out" else _uri(given[name], name)
    if "embeddings" in given:
        _uri(given["embeddings"], "embeddings", allow_none=True)
    options = dataclasses.replace(DEFAULTS, **{k: v.strip() if isinstance(v, str) else v for k, v in given.items()})
    _check(options)
    _check_search(args.configs, options)
    return options, set(given)


def _check_search(configs: str, o: Options) -> None:
    """Every spec and search setting, and whether one Workflow holds the search, as the plan pod will check."""
    sweep = job_search.parse(configs, o.baseline, search_settings(o))
    shape = job_search.shape(sweep)
    capacity.check(shape.rounds, shape.rungs, capacity.trainings(sweep, shape), None, None, o.max_workflow_bytes)


def _check(o: Options) -> None:
    if o.parallelism < 1:
        raise UserError(f"parallelism {o.parallelism}: must be >= 1")
    if o.gpus < 0:
        raise UserError(f"gpus {o.gpus}: must be >= 0")
    for name in ("train_cpu", "train_memory", "prepare_cpu", "prepare_memory", "tmp_size", "prepare_tmp_size", "train_tmp_size"):
        value = getattr(o, name)
        if value is not None and not _QUANTITY.match(str(value)):
            raise UserError(f"{name.replace('_', '-')} {value!r}: expected a Kubernetes quantity such as 4, 500m or 16Gi")
    parse_node_selector(o.node_selector)
    for t in o.tolerations:
        parse_toleration(t)
    parse_artifact_repository(o.artifact_repository)
    if o.pushgateway_url and not o.pushgateway_url.startswith(("http://", "https://")):
        # The train pods push to it from inside the cluster: a typo there shows only as an empty dashboard.
        raise UserError(f"pushgateway-url {o.pushgateway_url!r}: expected http://host:port or https://host:port")
    if o.mlflow_tracking_uri:
        uri = urlsplit(o.mlflow_tracking_uri)
        if uri.scheme not in ("http", "https") or not uri.hostname:
            # The pods log to it from inside the cluster: a local path or a typo would only show as a warning there.
            raise UserError(f"mlflow-tracking-uri {o.mlflow_tracking_uri!r}: expected http://host:port or https://host:port")
        if uri.username or uri.password:
            raise UserError("mlflow-tracking-uri: carries credentials; a parameter is visible to anyone who can read the "
                            "workflow, so put MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN in the "
                            "mlflow-secret Secret instead")
    if not o.image:
        raise UserError("image: empty (set IMAGE=registry/meli-sweep:tag)")


def chart_schema(args) -> int:
    """Helm checks the values against it on install, lint and template: an unknown parameter name fails there."""
    names = ["configs"] + [parameter_name(f) for f in parameter_fields()]
    schema = {
        "title": "meli-sweep chart values (generated by make chart-template from workflows/dag.py Options)",
        "type": "object",
        "properties": {
            "workflowTemplate": {
                "type": "object",
                "properties": {
                    "parameters": {
                        "type": "object",
                        "description": "values of the sweep's parameters at this install, by name",
                        "propertyNames": {"enum": names},
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                    }
                },
            }
        },
    }
    _write(args.output, json.dumps(schema, indent=2) + "\n")
    return 0


def _write(output: str, text: str) -> None:
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)


def render(args) -> int:
    options, _ = options_from(args)
    if args.chart:
        spec = yaml.safe_load(build(args.configs, dataclasses.replace(options, **CHART_OPTIONS), kind="WorkflowTemplate").to_yaml())["spec"]
        text = yaml.safe_dump(spec, sort_keys=False, width=120)
    else:
        text = build(args.configs, options, kind=args.kind).to_yaml()
    _write(args.output, text)
    return 0


# --- submit -------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def argo_endpoint() -> tuple[str, str, bool]:
    """(API base URL ending in /, UI base URL without /, verify TLS) from the argo CLI's variables."""
    server = os.environ.get("ARGO_SERVER", "").strip()
    if not server:
        raise UserError("ARGO_SERVER is not set: export ARGO_SERVER=host:2746 (the Argo server), and ARGO_TOKEN")
    if "://" not in server:
        secure = os.environ.get("ARGO_SECURE", "true").strip().lower() not in ("false", "0", "no", "off")
        server = f"{'https' if secure else 'http'}://{server}"
    if not server.startswith(("http://", "https://")):
        raise UserError(f"ARGO_SERVER {server!r}: expected host:port, http://host:port or https://host:port")
    base_href = os.environ.get("ARGO_BASE_HREF", "").strip().strip("/")
    ui = server.rstrip("/") + (f"/{base_href}" if base_href else "")
    return ui + "/", ui, not _truthy(os.environ.get("ARGO_INSECURE_SKIP_VERIFY"))


def _session(verify: bool):
    import requests

    class _TimeoutSession(requests.Session):
        # WorkflowsService sets no timeout; an unreachable server must not hang `make submit`.
        def request(self, method, url, **kwargs):
            kwargs.setdefault("timeout", TIMEOUT_S)
            return super().request(method, url, **kwargs)

    session = _TimeoutSession()
    if not verify:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return session


def submit(args) -> int:
    import requests
    from hera import exceptions as hx
    from hera.workflows import WorkflowsService
    from hera.workflows.models import WorkflowCreateRequest

    options, given = options_from(args)
    api, ui, verify = argo_endpoint()
    namespace = args.namespace or os.environ.get("ARGO_NAMESPACE", "").strip() or "argo"
    token = os.environ.get("ARGO_TOKEN", "").strip() or None
    options = dataclasses.replace(options, namespace=namespace)
    manifest = reference(args.configs, options, given).build()

    service = WorkflowsService(host=api, token=token, verify_ssl=verify, namespace=namespace, session=_session(verify))
    where = f"the Argo server at {ui}"
    try:
        created = service.create_workflow(WorkflowCreateRequest(workflow=manifest), namespace=namespace)
    except hx.Unauthorized:
        raise UserError(f"{where} rejected the token (401 Unauthorized): check ARGO_TOKEN") from None
    except hx.Forbidden:
        raise UserError(f"{where} forbids creating workflows in namespace {namespace!r} (403): check the token's RBAC") from None
    except hx.NotFound:
        raise UserError(f"{where} has no workflow API at {api}api/v1/workflows/{namespace} (404): check ARGO_BASE_HREF") from None
    except hx.HeraException as e:
        if "workflowtemplate" in str(e).lower() and "not found" in str(e).lower():
            raise UserError(f"{where} has no WorkflowTemplate {NAME!r} in namespace {namespace!r}: install the chart there "
                            f"(helm/meli-sweep), or submit a standalone Workflow: make render | argo submit -") from None
        raise UserError(f"{where} refused the workflow: {e}") from None
    except requests.exceptions.SSLError:
        raise UserError(f"{where}: TLS verification failed (self-signed? set ARGO_INSECURE_SKIP_VERIFY=true)") from None
    except requests.exceptions.Timeout:
        raise UserError(f"{where} did not answer within {TIMEOUT_S:.0f} s") from None
    except requests.exceptions.ConnectionError as e:
        reason = "connection refused" if "refused" in str(e).lower() else "cannot connect"
        raise UserError(f"cannot reach {where}: {reason} (check ARGO_SERVER, ARGO_SECURE, port-forward)") from None
    except ValueError as e:  # a 2xx answer that is not a Workflow: a proxy or the UI's HTML, not the API
        raise UserError(f"{where} answered with something that is not a Workflow ({type(e).__name__}): check ARGO_BASE_HREF") from None
    name = created.metadata.name if created.metadata else None
    if not name:
        raise UserError(f"{where} accepted the workflow but returned no name")
    print(f"submitted {name}   {ui}/workflows/{namespace}/{name}")
    return 0


# --- results ------------------------------------------------------------------


def results(args) -> int:
    if not args.out:
        raise UserError("out: not set; give the output prefix the sweep used (make results OUT=s3://... SWEEP=...)")
    if not storage.is_s3(args.out):
        storage.check_uri(args.out, "out")
    else:
        _uri(args.out, "out")
    sweep = args.sweep
    storage.join(args.out, sweep)  # refuses a sweep id that is not a plain name: nothing may escape the prefix
    report = steps.report_uri(args.out, sweep)
    if not storage.exists(f"{report}/summary.json"):  # written last: the mark of a complete report
        raise UserError(f"{report}: no report yet (is the sweep finished? `argo get {sweep}` shows its state)")
    dest = Path(args.dest) / sweep / "report"
    names = [name for name in steps.REPORT_FILES if storage.exists(f"{report}/{name}")]
    for name in names:
        storage.download_file(f"{report}/{name}", dest / name)
    print(f"{len(names)} files of {report} -> {dest}/")
    print(f"summary: {dest / 'summary.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"render": render, "submit": submit, "results": results, "chart-schema": chart_schema}[args.command]
    return run_cli(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
