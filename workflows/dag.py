"""The sweep as an Argo Workflow, defined with Hera: plan and prepare, one GPU pod per run, aggregate.

    python -m workflows.cli render --configs hidden50,hidden100    # the Workflow YAML on stdout
    make render | make submit | make golden | make chart-template  # the same through make

`build()` returns a Hera `Workflow`, or a `WorkflowTemplate` with the same spec
(`kind="WorkflowTemplate"`, what the Helm chart ships). Every container runs a
`python -m job ...` command taken from `job.steps`, the step definitions the
local sweep runs too. Nothing here imports torch.

The DAG:

    plan ─────┐
              ├─> train (one GPU pod per run, withParam over plan's list) ─> aggregate
    prepare ──┘

`aggregate` runs once every train pod is done, whatever their outcome, and the
report lists the runs that failed. The workflow still ends Failed when a run
failed (see `_sweep_dag`).

Every pod is hardened (`_security_context`, `_tmp_volume`): it runs as the
images' non-root user (uid 1000), without privilege escalation or capabilities,
on a read-only root filesystem. Each step writes only to an emptyDir at /tmp
(results, reports, the prepared-data cache, and HOME with the caches of
matplotlib, torch and boto3). The training path has no DataLoader workers and no NCCL, so nothing
needs a memory-backed /dev/shm: the train pods get none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hera.workflows import (
    DAG,
    Artifact,
    Container,
    EmptyDirVolume,
    Env,
    Gauge,
    Label,
    NoneArchiveStrategy,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnvFrom,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows import models as m

from job import __version__, steps
from job.errors import UserError

_K8S_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")  # a ConfigMap's name (RFC 1123 subdomain)
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")  # a ConfigMap data key

NAME = "meli-sweep"  # generateName prefix of every sweep, and the WorkflowTemplate's name
TITLE = "workflows.argoproj.io/title"  # Argo UI annotations (shown in the workflow list)
DESCRIPTION = "workflows.argoproj.io/description"
DISPLAY_NAME = "workflows.argoproj.io/display-name"

REPORT_DIR = "/tmp/report"  # where the aggregate container also leaves its report, for the artifacts
# The chart's artifact repository ConfigMap#key (its values' defaults), which its WorkflowTemplate names.
CHART_ARTIFACT_REPOSITORY = "artifact-repositories#meli-sweep-s3"
RESULT = "/tmp/result"  # train writes the test balanced accuracy here (a plain number)
TMP = "/tmp"  # the one writable path of every step (an emptyDir): the root filesystem is read-only

# Preemption: a reclaimed spot/preemptible GPU node fails the pod ("imminent node shutdown") or deletes it
# ("pod deleted"), and a lost node shows as Error. A config that is simply broken (bad spec, NaN loss) fails
# with another message and is not retried.
RETRY_WHEN = "lastRetry.status == 'Error' || lastRetry.message matches 'imminent node shutdown|pod deleted'"


@dataclass(frozen=True)
class Options:
    """Everything a sweep can set besides its configs. Fields marked (parameter) are Argo workflow parameters."""

    data: str = "s3://meli-sweep/data/spanish.train.csv.gz"  # (parameter) challenge CSV or course jsonl.gz
    embeddings: str = "s3://meli-sweep/embeddings/SBW-vectors-300-min5.txt.gz"  # (parameter) word vectors, or none
    out: str = "s3://meli-sweep"  # (parameter) output prefix: prepared/<hash>/ and sweeps/<workflow name>/ go under it
    image: str = f"meli-sweep:{__version__}"  # (parameter) the CUDA training image (images/Dockerfile)
    cpu_image: str = ""  # (parameter) image of plan, prepare and aggregate (images/Dockerfile.cpu); "" = image + "-cpu"
    pushgateway_url: str = ""  # (parameter) Prometheus Pushgateway the train pods push to; "" = no push
    baseline: bool = True  # (parameter) add the tfidf baseline run to the sweep
    parallelism: int = 4  # GPU pods at once: the workflow's spec.parallelism (no other step overlaps train)
    namespace: str | None = None  # Kubernetes namespace; None leaves it to the submitter
    service_account: str = "meli-sweep"  # pods run as it; on Argo v4 it needs create/patch on workflowtaskresults
    s3_secret: str = "meli-sweep-s3"  # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_ENDPOINT_URL, AWS_REGION]
    node_selector: tuple[str, ...] = ()  # train pods only: "key=value" labels a GPU node must carry
    tolerations: tuple[str, ...] = ("nvidia.com/gpu:NoSchedule",)  # train pods: "key[=value][:effect]", as kubectl taint
    gpus: int = 1  # nvidia.com/gpu per train pod
    train_cpu: str = "4"  # CPU cores requested per train pod (loading the prepared arrays, evaluation metrics)
    train_memory: str = "16Gi"  # memory request and limit per train pod
    prepare_cpu: str = "4"  # CPU cores for prepare's tokenizing workers; past about 3.4 the one reading process limits
    prepare_memory: str = "2Gi"  # memory for prepare: streamed, about 0.8 GiB at 20 M rows with 8 workers (make bench-prepare)
    train_deadline_s: int = 24 * 3600  # activeDeadlineSeconds of one train attempt (seconds); a hung pod is killed
    retries: int = 3  # train retries after preemption (each resumes from its last checkpoint in S3)
    ttl_success_s: int = 3 * 24 * 3600  # the Workflow object is deleted this long after it succeeds (seconds)
    ttl_failure_s: int = 7 * 24 * 3600  # ... or after it fails, kept longer to look into
    uid: int = 1000  # runAsUser of every container: the images' non-root user `meli` (images/Dockerfile*)
    gid: int = 1000  # runAsGroup of every container: that user's group
    tmp_size: str | None = None  # sizeLimit of the /tmp emptyDir (prepared-data cache, downloads); None = no limit
    artifact_repository: str = ""  # "configmap" or "configmap#key" of Argo's artifact repository the sweep names
    #   (spec.artifactRepositoryRef); "" = the namespace's default repository, then the controller's
    archive_logs: bool = True  # keep every pod's log in the artifact repository: podGC deletes succeeded pods
    labels: dict = field(default_factory=dict, compare=False)  # extra labels on the Workflow object

    def image_cpu(self) -> str:
        return self.cpu_image or f"{self.image}-cpu"


def parse_node_selector(items) -> dict[str, str]:
    """"key=value" items -> a nodeSelector map; a malformed item is a UserError."""
    selector = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise UserError(f"node selector {item!r}: expected key=value")
        selector[key.strip()] = value.strip()
    return selector


def parse_toleration(text: str) -> m.Toleration:
    """kubectl-taint syntax: "key[=value][:effect]"; no value tolerates any value (operator Exists)."""
    rest, colon, effect = str(text).partition(":")
    key, eq, value = rest.partition("=")
    effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
    if not key.strip() or (colon and effect not in effects):
        raise UserError(f"toleration {text!r}: expected key[=value][:effect], effect one of {', '.join(effects)}")
    return m.Toleration(
        key=key.strip(),
        operator="Equal" if eq else "Exists",
        value=value.strip() if eq else None,
        effect=effect or None,
    )


def parse_artifact_repository(text: str) -> m.ArtifactRepositoryRef | None:
    """"configmap" or "configmap#key" -> spec.artifactRepositoryRef; "" -> None (the namespace default).

    With a ref, Argo looks only in that ConfigMap (workflow namespace, then the controller's) and never
    falls back to a default (workflow/artifactrepositories/artifactrepositories.go: Resolve).
    """
    if not text:
        return None
    name, _, key = str(text).partition("#")
    if not _K8S_NAME.match(name) or (key and not _CONFIGMAP_KEY.match(key)):
        raise UserError(f"artifact repository {text!r}: expected configmap or configmap#key (Kubernetes names)")
    return m.ArtifactRepositoryRef(config_map=name, key=key or None)


def _parameters(configs: str, o: Options) -> list[Parameter]:
    return [
        Parameter(name="configs", value=configs, description="config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4"),
        Parameter(name="data", value=o.data, description="challenge CSV (.csv.gz) or course .jsonl.gz, s3://"),
        Parameter(name="embeddings", value=o.embeddings, description="word vectors (.txt.gz/.vec/.bin) or none, s3://"),
        Parameter(name="out", value=o.out, description="output prefix, s3://; the sweep goes to <out>/sweeps/<name>/"),
        Parameter(name="image", value=o.image, description="training image (CUDA)"),
        Parameter(name="cpu-image", value=o.image_cpu(), description="image of plan, prepare and aggregate"),
        Parameter(name="pushgateway-url", value=o.pushgateway_url, description="Pushgateway for live metrics; empty = off"),
        Parameter(
            name="baseline",
            value="true" if o.baseline else "false",
            enum=["true", "false"],
            description="add the tfidf baseline run (a CPU model, on the train template) to the comparison",
        ),
    ]


def _env(o: Options) -> dict:
    """Container settings every step shares: S3 credentials and endpoint come only from the Secret."""
    return dict(
        env_from=[SecretEnvFrom(name=o.s3_secret, optional=True)],
        env=[
            Env(name="PUSHGATEWAY_URL", value="{{workflow.parameters.pushgateway-url}}"),
            Env(name="PYTHONUNBUFFERED", value="1"),
            # The root filesystem is read-only: whatever a library writes under HOME or its cache dir
            # (matplotlib's font cache, torch hub and kernel caches, botocore's) goes to /tmp.
            Env(name="HOME", value=TMP),
            Env(name="XDG_CACHE_HOME", value=f"{TMP}/.cache"),
            Env(name="MPLCONFIGDIR", value=f"{TMP}/matplotlib"),
        ],
    )


def _security_context(o: Options) -> m.SecurityContext:
    """Every step's container: the images' non-root user, no privilege gains or capabilities, read-only root."""
    return m.SecurityContext(
        run_as_non_root=True,
        run_as_user=o.uid,
        run_as_group=o.gid,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=m.Capabilities(drop=["ALL"]),
    )


def _tmp_volume(o: Options) -> EmptyDirVolume:
    """The writable /tmp of every step, on the node's disk (results, reports, the prepared-data cache)."""
    return EmptyDirVolume(name="tmp", mount_path=TMP, size_limit=o.tmp_size)


def _report_artifacts() -> list[Artifact]:
    # One artifact per file, stored as is (no tar), so the Argo UI links and previews each; optional, so a
    # report without, say, a loss plot (no run finished) still uploads the rest. No key: the executor
    # then stores each at the repository's keyFormat + "/" + file name (workflow/executor/executor.go:
    # saveArtifactFromFile), in the repository's bucket. The report's own copy is under OUT/sweeps/.
    return [
        Artifact(
            name=f.replace(".", "-").replace("_", "-"),
            path=f"{REPORT_DIR}/{f}",
            archive=NoneArchiveStrategy(),
            optional=True,
        )
        for f in steps.REPORT_FILES
    ]


def build(configs: str, options: Options | None = None, kind: str = "Workflow") -> Workflow:
    """The sweep of `configs` (spec text, checked in the plan step) as a Hera Workflow or WorkflowTemplate."""
    o = options or Options()
    if kind not in ("Workflow", "WorkflowTemplate"):
        raise UserError(f"kind {kind!r}: expected Workflow or WorkflowTemplate")
    template = kind == "WorkflowTemplate"
    cls = WorkflowTemplate if template else Workflow
    env = {**_env(o), "security_context": _security_context(o)}
    cpu_image = "{{workflow.parameters.cpu-image}}"
    annotations = {
        TITLE: f"meli-sweep: {configs}" if not template else "meli-sweep: hyperparameter sweep",
        DESCRIPTION: (
            f"configs {configs}; data {o.data}; embeddings {o.embeddings}; out {o.out}"
            if not template
            else "One GPU training pod per config, then a comparison report. Set configs, data, embeddings, out."
        ),
    }

    with cls(
        **({"name": NAME} if template else {"generate_name": f"{NAME}-"}),
        namespace=o.namespace,
        annotations=annotations,
        labels={"app.kubernetes.io/name": NAME, "app.kubernetes.io/version": __version__, **o.labels},
        entrypoint="sweep",
        arguments=_parameters(configs, o),
        service_account_name=o.service_account,
        parallelism=o.parallelism,
        pod_gc=m.PodGC(strategy="OnPodSuccess"),  # failed pods stay for `kubectl logs` until the TTL
        # Succeeded pods are deleted at once, so their logs live only in the artifact repository.
        archive_logs=o.archive_logs or None,
        artifact_repository_ref=parse_artifact_repository(o.artifact_repository),
        ttl_strategy=m.TTLStrategy(seconds_after_success=o.ttl_success_s, seconds_after_failure=o.ttl_failure_s),
        # Pod level too, so Argo's init and wait containers run as non-root under the runtime's seccomp profile.
        security_context=m.PodSecurityContext(
            run_as_non_root=True,
            run_as_user=o.uid,
            run_as_group=o.gid,
            seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
        ),
    ) as w:
        plan = Container(
            name="plan",
            image=cpu_image,
            command=steps.plan(
                "{{workflow.parameters.configs}}", "{{workflow.parameters.baseline}}", result_file="/tmp/runs.json"
            ),
            outputs=[Parameter(name="runs", value_from=m.ValueFrom(path="/tmp/runs.json"))],
            resources=Resources(cpu_request="100m", memory_request="256Mi", memory_limit="512Mi"),
            volumes=[_tmp_volume(o)],
            **env,
        )
        prepare = Container(
            name="prepare",
            image=cpu_image,
            command=steps.prepare(
                "{{workflow.parameters.data}}",
                "{{workflow.parameters.embeddings}}",
                "{{workflow.parameters.out}}",
                result_file="/tmp/prepared",
            ),
            outputs=[Parameter(name="prepared", value_from=m.ValueFrom(path="/tmp/prepared"))],
            resources=Resources(cpu_request=o.prepare_cpu, memory_request=o.prepare_memory, memory_limit=o.prepare_memory),
            volumes=[_tmp_volume(o)],
            **env,
        )
        train = Container(
            name="train",
            image="{{workflow.parameters.image}}",
            inputs=[Parameter(name="name"), Parameter(name="label"), Parameter(name="spec"), Parameter(name="prepared")],
            command=steps.train(
                "{{inputs.parameters.spec}}",
                "{{inputs.parameters.prepared}}",
                "{{workflow.parameters.out}}",
                "{{workflow.name}}",
                "{{inputs.parameters.name}}",
                result_file=RESULT,
            ),
            # A failed run writes no result: the default keeps the node's outputs valid.
            outputs=[Parameter(name="balanced-accuracy", value_from=m.ValueFrom(path=RESULT, default="nan"))],
            resources=Resources(
                gpus=o.gpus, cpu_request=o.train_cpu, memory_request=o.train_memory, memory_limit=o.train_memory
            ),
            volumes=[_tmp_volume(o)],
            node_selector=parse_node_selector(o.node_selector) or None,
            tolerations=[parse_toleration(t) for t in o.tolerations] or None,
            active_deadline_seconds=o.train_deadline_s,
            retry_strategy=RetryStrategy(
                limit=o.retries,
                retry_policy="Always",  # the expression decides; the policy alone would skip Failed or Error
                expression=RETRY_WHEN,
                backoff=m.Backoff(duration="1m", factor=2, cap="10m"),  # a new node may take minutes to join
            ),
            # No gauge of the test accuracy here: Argo substitutes a metric whole before its `when`
            # (workflow/controller/operator.go: computeMetrics), and a preempted attempt has no outputs to
            # substitute. The pushed meli_train_test_balanced_accuracy carries it instead.
            metrics=[
                Gauge(
                    name="meli_sweep_train_duration_seconds",
                    help="Duration of a sweep run's train pod in seconds",
                    labels=[
                        Label(key="workflow", value="{{workflow.name}}"),
                        Label(key="config", value="{{inputs.parameters.name}}"),
                        Label(key="status", value="{{status}}"),
                    ],
                    realtime=False,
                    value="{{duration}}",
                ),
            ],
            **env,
        )
        aggregate = Container(
            name="aggregate",
            image=cpu_image,
            command=steps.aggregate(
                "{{workflow.parameters.out}}", "{{workflow.name}}", "{{workflow.parameters.configs}}", report_dir=REPORT_DIR
            ),
            outputs=_report_artifacts(),
            resources=Resources(cpu_request="1", memory_request="2Gi", memory_limit="2Gi"),
            volumes=[_tmp_volume(o)],
            **env,
        )
        _sweep_dag(plan, prepare, train, aggregate)

    _name_train_nodes(w)
    return w


def _sweep_dag(plan: Container, prepare: Container, train: Container, aggregate: Container) -> DAG:
    # failFast off: one failed run must not stop the others from being scheduled.
    # target names train as well as aggregate: Argo judges a DAG by its target tasks only, so with aggregate
    # alone a failed run would be "handled" and the workflow would end Succeeded. With both, the workflow
    # waits for aggregate (the report is written) and then ends Failed when any run failed.
    with DAG(name="sweep", fail_fast=False, target="aggregate train") as dag:
        p = plan(name="plan")
        d = prepare(name="prepare")
        t = train(
            name="train",
            with_param="{{tasks.plan.outputs.parameters.runs}}",
            arguments={
                "name": "{{item.name}}",
                "label": "{{item.label}}",
                "spec": "{{item.spec}}",
                "prepared": "{{tasks.prepare.outputs.parameters.prepared}}",
            },
        )
        a = aggregate(name="aggregate")
        [p, d] >> t
        # Any outcome of the fan-out: AllFailed alone would miss a mix of Failed and Error runs.
        a.depends = "train.Succeeded || train.Failed || train.Errored"
    return dag


def _name_train_nodes(w: Workflow) -> None:
    """Show each train node as its run's label in the Argo UI, not as the JSON of its item.

    Argo reads the display name from the template's own `annotations`; Hera's `annotations` field goes
    to pod metadata instead, so the built template gets the annotation here. Argo v3.7+ checks it
    after substitution against DISPLAY_NAME (workflow/controller/operator.go: executeTemplate) and
    marks the node Error when it fails, hence the plan step's display-safe `label`, not the run name.
    """
    for i, t in enumerate(w.templates):
        if isinstance(t, Container) and t.name == "train":
            built = t._build_template()
            built.annotations = {DISPLAY_NAME: "{{inputs.parameters.label}}"}
            w.templates[i] = built

