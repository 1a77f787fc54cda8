"""Command line of the Argo side: render, submit and fetch the results of a sweep.

    python -m workflows.cli render --configs hidden50,hidden100 > sweep.yaml
    python -m workflows.cli render --kind WorkflowTemplate -o helm/meli-sweep/files/workflowtemplate.yaml
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
import os
import sys
from pathlib import Path

from job import configs as job_configs
from job import steps, storage
from job.errors import UserError, run_cli
from workflows.dag import CHART_ARTIFACT_REPOSITORY, Options, build, parse_artifact_repository, parse_node_selector, parse_toleration

DEFAULTS = Options()
TIMEOUT_S = 30.0  # seconds to wait for the Argo server to connect and answer


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--configs", required=True, help="config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4")
    p.add_argument("--data", default=d.data, help=f"training data, s3:// (default: {d.data})")
    p.add_argument("--embeddings", default=d.embeddings, help=f"word vectors, s3://, or none (default: {d.embeddings})")
    p.add_argument("--out", default=d.out, help=f"output prefix, s3:// (default: {d.out})")
    p.add_argument("--image", default=d.image, help=f"training image (default: {d.image})")
    p.add_argument("--cpu-image", default=d.cpu_image, help="image of plan, prepare, aggregate (default: IMAGE-cpu)")
    p.add_argument("--parallelism", type=int, default=d.parallelism, help=f"GPU pods at once (default: {d.parallelism})")
    p.add_argument("--namespace", default=None, help="namespace (default: $ARGO_NAMESPACE, else argo)")
    p.add_argument("--service-account", default=d.service_account, help=f"pods' service account (default: {d.service_account})")
    p.add_argument("--s3-secret", default=d.s3_secret, help=f"Secret holding the S3 credentials (default: {d.s3_secret})")
    p.add_argument("--pushgateway-url", default=d.pushgateway_url, help="Pushgateway URL for live metrics (default: none)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="leave out the tfidf baseline run")
    p.add_argument(
        "--artifact-repository",
        default=d.artifact_repository,
        help="Argo artifact repository the sweep names: configmap or configmap#key (default: the namespace's default)",
    )
    p.add_argument("--node-selector", default="", help="train pods: comma-separated key=value node labels")
    p.add_argument(
        "--toleration",
        action="append",
        default=None,
        help="train pods: key[=value][:effect], repeatable (default: nvidia.com/gpu:NoSchedule)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflows.cli", description="meli-sweep on Argo Workflows.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("render", help="print the sweep's Workflow YAML (no cluster needed)")
    _add_sweep_options(s)
    s.add_argument("--kind", choices=("Workflow", "WorkflowTemplate"), default="Workflow", help="resource kind")
    s.add_argument("-o", "--output", default="-", help="write the YAML to this file instead of stdout")

    s = sub.add_parser("submit", help="check the configs, then submit the sweep to the Argo server")
    _add_sweep_options(s)

    s = sub.add_parser("results", help="download a sweep's report into DEST/<sweep>/report/")
    s.add_argument("--sweep", required=True, help="the sweep id: the workflow name printed by submit")
    s.add_argument("--out", default=DEFAULTS.out, help=f"the output prefix the sweep used (default: {DEFAULTS.out})")
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


def _pushgateway(url: str) -> None:
    """The train pods push to this URL from inside the cluster: a typo there shows only as an empty dashboard."""
    if url and not url.startswith(("http://", "https://")):
        raise UserError(f"pushgateway-url {url!r}: expected http://host:port or https://host:port")


def options_from(args) -> Options:
    """Check every input locally, so a typo fails here and not in a pod."""
    job_configs.expand(args.configs)
    if args.parallelism < 1:
        raise UserError(f"parallelism {args.parallelism}: must be >= 1")
    node_selector = tuple(s for s in (x.strip() for x in args.node_selector.split(",")) if s)
    parse_node_selector(node_selector)
    tolerations = tuple(args.toleration) if args.toleration is not None else DEFAULTS.tolerations
    for t in tolerations:
        parse_toleration(t)
    parse_artifact_repository(args.artifact_repository.strip())
    _pushgateway(args.pushgateway_url.strip())
    if not args.image.strip():
        raise UserError("image: empty (set IMAGE=registry/meli-sweep:tag)")
    return Options(
        data=_uri(args.data, "data"),
        embeddings=_uri(args.embeddings, "embeddings", allow_none=True),
        out=_uri(args.out, "out").rstrip("/"),
        image=args.image.strip(),
        cpu_image=args.cpu_image.strip(),
        pushgateway_url=args.pushgateway_url.strip(),
        baseline=args.baseline,
        parallelism=args.parallelism,
        namespace=args.namespace,
        service_account=args.service_account,
        s3_secret=args.s3_secret,
        node_selector=node_selector,
        tolerations=tolerations,
        artifact_repository=args.artifact_repository.strip(),
    )


def render(args) -> int:
    options = options_from(args)
    if args.kind == "WorkflowTemplate":
        # The chart file stays free of any one cluster's namespace, and names the chart's artifact repository.
        options = dataclasses.replace(
            options, namespace=None, artifact_repository=options.artifact_repository or CHART_ARTIFACT_REPOSITORY
        )
    text = build(args.configs, options, kind=args.kind).to_yaml()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
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

    options = options_from(args)
    api, ui, verify = argo_endpoint()
    namespace = args.namespace or os.environ.get("ARGO_NAMESPACE", "").strip() or "argo"
    token = os.environ.get("ARGO_TOKEN", "").strip() or None
    options = dataclasses.replace(options, namespace=namespace)
    manifest = build(args.configs, options).build()

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
    command = {"render": render, "submit": submit, "results": results}[args.command]
    return run_cli(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
