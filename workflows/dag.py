"""The sweep as an Argo Workflow, defined with Hera: plan and prepare, one GPU pod per run, aggregate.

    python -m workflows.cli render --configs hidden50,hidden100    # the Workflow YAML on stdout
    make render | make submit | make golden | make chart-template  # the same through make

`build()` returns a Hera `Workflow`, or a `WorkflowTemplate` with the same spec
(`kind="WorkflowTemplate"`, what the Helm chart ships); `reference()` a sweep of that
template, as `make submit` sends it. Every container runs a `python -m job ...` command
taken from `job.steps`, the step definitions the local sweep runs too. Every setting is a
field of `Options`, the one place it lives (README: Settings, one place each). Nothing here
imports torch.

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
import json
from dataclasses import dataclass, field, fields

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
# What the chart installs beside its WorkflowTemplate, by these names (see helm/meli-sweep/templates/):
PARAMETERS_CONFIGMAP = "meli-sweep-parameters"  # parameter values set at install; the template falls back to Options'
ENV_CONFIGMAP = "meli-sweep-env"  # S3 endpoint and region, every step's envFrom (optional: absent, nothing is set)
CHART_SEMAPHORE = "meli-sweep-semaphore#gpu-pods"  # GPU pods at once across the namespace's sweeps
RESULT = "/tmp/result"  # train writes the test balanced accuracy here (a plain number)
CPU_IMAGE = "{{workflow.parameters.cpu-image}}"  # image of every step but train
TMP = "/tmp"  # the one writable path of every step (an emptyDir): the root filesystem is read-only

# Preemption: a reclaimed spot/preemptible GPU node fails the pod ("imminent node shutdown") or deletes it
# ("pod deleted"), and a lost node shows as Error. A config that is simply broken (bad spec, NaN loss) fails
# with another message and is not retried.
RETRY_WHEN = "lastRetry.status == 'Error' || lastRetry.message matches 'imminent node shutdown|pod deleted'"


PARAMETER = "parameter"  # an Argo workflow parameter: per sweep, in the Argo UI's submit form
WORKFLOW = "workflow"  # a field of the rendered Workflow itself; the chart's WorkflowTemplate takes the chart's own


def option(default, role: str, help: str, flag: bool = True, argo: str = "", **kw):
    """A field of Options: its default, whether the sweep carries it as a parameter, its --flag help, and the
    parameter's description where its text differs from the flag's (JSON, not the flag's syntax)."""
    return field(default=default, metadata={"role": role, "help": help, "flag": flag, "argo": argo}, **kw)


@dataclass(frozen=True)
class Options:
    """Every setting of a sweep besides its configs, in one place: the CLI's flags and the Makefile's variables
    come from these fields, and the chart's WorkflowTemplate reads the parameters' values from its ConfigMap
    (PARAMETERS_CONFIGMAP), falling back to the defaults here. See "Settings: one place each" in the README."""

    data: str = option("s3://meli-sweep/data/spanish.train.csv.gz", PARAMETER, "challenge CSV or course jsonl.gz, s3://")
    embeddings: str = option("s3://meli-sweep/embeddings/SBW-vectors-300-min5.txt.gz", PARAMETER,
                             "word vectors (.txt.gz/.vec/.bin), s3://, or none")
    out: str = option("s3://meli-sweep", PARAMETER, "output prefix, s3://: prepared/<hash>/ and sweeps/<name>/ go under it")
    image: str = option(f"meli-sweep:{__version__}", PARAMETER, "the CUDA training image (images/Dockerfile)")
    cpu_image: str = option("", PARAMETER, "image of plan, prepare and aggregate (images/Dockerfile.cpu); empty: IMAGE-cpu")
    pushgateway_url: str = option("", PARAMETER, "Pushgateway the train pods push live metrics to; empty: no push")
    mlflow_tracking_uri: str = option("", PARAMETER, "MLflow tracking server the train and aggregate steps log to, "
                                      "http(s)://host:port without credentials; empty: no tracking")
    baseline: bool = option(True, PARAMETER, "add the tfidf baseline run (a CPU model, on the train template)")
    train_cpu: str = option("4", PARAMETER, "CPU cores per train pod (loading the prepared arrays, evaluation)")
    train_memory: str = option("16Gi", PARAMETER, "memory request and limit per train pod")
    gpus: int = option(1, PARAMETER, "nvidia.com/gpu per train pod")
    # past about 6 cores the one reading process limits; about 0.7 GiB at 20 M rows with 8 workers (make bench-prepare)
    prepare_cpu: str = option("6", PARAMETER, "CPU cores (request and limit) of prepare: one tokenizing process each")
    prepare_memory: str = option("2Gi", PARAMETER, "memory request and limit of the prepare pod")
    node_selector: tuple[str, ...] = option((), PARAMETER, "train pods: comma-separated key=value labels a GPU node must carry",
                                          argo="train pods' nodeSelector, a JSON object")
    tolerations: tuple[str, ...] = option(("nvidia.com/gpu:NoSchedule",), PARAMETER,
                                          "train pods: comma-separated key[=value][:effect] taints they tolerate, as kubectl taint",
                                          argo="train pods' tolerations, a JSON list (replaces the default)")
    s3_secret: str = option("meli-sweep-s3", PARAMETER,
                            "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_ENDPOINT_URL, AWS_REGION]; optional")
    mlflow_secret: str = option("meli-sweep-mlflow", PARAMETER,
                                "Secret with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN; "
                                "optional")
    parallelism: int = option(4, WORKFLOW, "pods of the sweep at once (spec.parallelism; only train pods overlap)")
    namespace: str | None = option(None, WORKFLOW, "Kubernetes namespace (submit: $ARGO_NAMESPACE, else argo)")
    service_account: str = option("meli-sweep", WORKFLOW, "pods' service account; on Argo v4 it needs create/patch on workflowtaskresults")
    artifact_repository: str = option("", WORKFLOW, "Argo artifact repository the sweep names, configmap or configmap#key; "
                                      "empty: the namespace's default, then the controller's")
    train_deadline_s: int = option(24 * 3600, WORKFLOW, "activeDeadlineSeconds of one train attempt: a hung pod is killed")
    retries: int = option(3, WORKFLOW, "train retries after preemption, each resuming from its last checkpoint in S3")
    ttl_success_s: int = option(3 * 24 * 3600, WORKFLOW, "seconds the Workflow object is kept after it succeeds")
    ttl_failure_s: int = option(7 * 24 * 3600, WORKFLOW, "... after it fails, longer to look into")
    uid: int = option(1000, WORKFLOW, "runAsUser of every container: the images' non-root user (images/Dockerfile*)", flag=False)
    gid: int = option(1000, WORKFLOW, "runAsGroup of every container: that user's group", flag=False)
    tmp_size: str | None = option(None, WORKFLOW, "sizeLimit of the /tmp emptyDir (prepared-data cache, downloads); empty: none")
    archive_logs: bool = option(True, WORKFLOW, "keep every pod's log in the artifact repository (podGC deletes succeeded pods)")
    gpu_semaphore: str = option("", WORKFLOW, "configmap#key of an Argo semaphore every train pod holds (GPU pods across sweeps)",
                                flag=False)
    labels: dict = option(None, WORKFLOW, "extra labels on the Workflow object", flag=False, compare=False)

    def image_cpu(self) -> str:
        return self.cpu_image or f"{self.image}-cpu"


def parameter_name(f) -> str:
    """The Argo parameter (and --flag) name of an Options field: train_memory -> train-memory."""
    return f.name.replace("_", "-")


def parameter_fields() -> list:
    return [f for f in fields(Options) if f.metadata["role"] == PARAMETER]


def parameter_value(o: Options, name: str) -> str:
    """The text an Argo parameter carries for an Options field (lists as the JSON the pod spec patch takes)."""
    if name == "cpu_image":
        return o.image_cpu()
    value = getattr(o, name)
    if name == "node_selector":
        return json.dumps(parse_node_selector(value), separators=(",", ":"))
    if name == "tolerations":
        return json.dumps([parse_toleration(t).model_dump(by_alias=True, exclude_none=True) for t in value], separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


def _parameters(configs: str, o: Options, template: bool) -> list[Parameter]:
    """configs, then one parameter per PARAMETER field. A WorkflowTemplate reads each from the chart's ConfigMap,
    and takes the default here when the ConfigMap lacks the key: with a default, any failed lookup falls back
    (workflow/controller/operator.go: setGlobalParameters). A submitted Workflow's own value wins whole
    (workflow/util/merge.go: JoinWorkflowSpec)."""
    params = [Parameter(name="configs", value=configs, description="config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4")]
    for f in parameter_fields():
        name, value = parameter_name(f), parameter_value(o, f.name)
        source = (
            dict(value_from=m.ValueFrom(config_map_key_ref=m.ConfigMapKeySelector(name=PARAMETERS_CONFIGMAP, key=name),
                                        default=value))
            if template
            else dict(value=value)
        )
        # No enum on a ConfigMap-valued parameter: with an enum, validation wants a value
        # (workflow/validate/validate.go: validateArgumentsValues).
        enum = ["true", "false"] if f.type in (bool, "bool") and not template else None
        description = f.metadata.get("argo") or f.metadata["help"]
        params.append(Parameter(name=name, description=description, enum=enum, **source))
    return params


def _env(o: Options) -> dict:
    """Container settings every step shares: S3 credentials come only from the Secret, endpoint and region from
    the Secret or the chart's ConfigMap; MLflow credentials only from a Secret of their own."""
    return dict(
        # Kubernetes takes a variable in several sources from the last: the chart's endpoint and region win.
        env_from=[
            SecretEnvFrom(name="{{workflow.parameters.s3-secret}}", optional=True),
            SecretEnvFrom(name="{{workflow.parameters.mlflow-secret}}", optional=True),
            m.EnvFromSource(config_map_ref=m.ConfigMapEnvSource(name=ENV_CONFIGMAP, optional=True)),
        ],
        env=[
            Env(name="PUSHGATEWAY_URL", value="{{workflow.parameters.pushgateway-url}}"),
            Env(name="MLFLOW_TRACKING_URI", value="{{workflow.parameters.mlflow-tracking-uri}}"),  # empty: off
            Env(name="PYTHONUNBUFFERED", value="1"),
            # The root filesystem is read-only: whatever a library writes under HOME or its cache dir
            # (matplotlib's font cache, torch hub and kernel caches, botocore's) goes to /tmp.
            Env(name="HOME", value=TMP),
            Env(name="XDG_CACHE_HOME", value=f"{TMP}/.cache"),
            Env(name="MPLCONFIGDIR", value=f"{TMP}/matplotlib"),
        ],
    )


def _resources_patch(cpu: str, memory: str, gpus: str | None = None, placement: bool = False, cpu_limit: bool = False) -> str:
    """A pod spec patch that sets the main container's requests and limits (and the train pod's node selector
    and tolerations) from parameters. Parameters cannot stand in for the fields themselves: a quantity must
    parse when the Workflow is read, and maps and lists are not text. The patch is substituted per pod, then
    checked as a PodSpec and merged (workflow/controller/workflowpod.go: processPodSpecPatch;
    workflow/util/util.go: ApplyPodSpecPatch), so a bad value errors the pod, not the submission."""
    requests = {"cpu": cpu, "memory": memory}
    limits = {"memory": memory, **({"cpu": cpu} if cpu_limit else {})}
    if gpus is not None:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = gpus
    patch = json.dumps({"containers": [{"name": "main", "resources": {"requests": requests, "limits": limits}}]})
    if placement:
        patch = ('{"nodeSelector": {{workflow.parameters.node-selector}}, '
                 '"tolerations": {{workflow.parameters.tolerations}}, ' + patch[1:])
    return patch


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
    """The sweep of `configs` (spec text, checked in the plan step) as a Hera Workflow or WorkflowTemplate.

    A WorkflowTemplate reads its parameters from the chart's ConfigMap (see _parameters) and holds the chart's
    GPU semaphore; with an empty service account or artifact repository it names neither (the chart sets them).
    """
    o = options or Options()
    if kind not in ("Workflow", "WorkflowTemplate"):
        raise UserError(f"kind {kind!r}: expected Workflow or WorkflowTemplate")
    template = kind == "WorkflowTemplate"
    with (WorkflowTemplate if template else Workflow)(
        **({"name": NAME} if template else {"generate_name": f"{NAME}-"}),
        namespace=o.namespace,
        annotations=_annotations(configs, o, template),
        labels={"app.kubernetes.io/name": NAME, "app.kubernetes.io/version": __version__, **(o.labels or {})},
        entrypoint="sweep",
        arguments=_parameters(configs, o, template),
        service_account_name=o.service_account or None,
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
        shared = {**_env(o), "security_context": _security_context(o), "volumes": [_tmp_volume(o)]}
        _sweep_dag(_plan(shared), _prepare(shared), _train(o, shared), _aggregate(shared))
    _name_train_nodes(w)
    return w


def _annotations(configs: str, o: Options, template: bool) -> dict:
    if template:
        return {TITLE: "meli-sweep: hyperparameter sweep",
                DESCRIPTION: "One GPU training pod per config, then a comparison report. Set configs, data, embeddings, out."}
    return {TITLE: f"meli-sweep: {configs}",
            DESCRIPTION: f"configs {configs}; data {o.data}; embeddings {o.embeddings}; out {o.out}"}


def _plan(shared: dict) -> Container:
    return Container(
        name="plan",
        image=CPU_IMAGE,
        command=steps.plan("{{workflow.parameters.configs}}", "{{workflow.parameters.baseline}}", result_file="/tmp/runs.json"),
        outputs=[Parameter(name="runs", value_from=m.ValueFrom(path="/tmp/runs.json"))],
        resources=Resources(cpu_request="100m", memory_request="256Mi", memory_limit="512Mi"),
        **shared,
    )


def _prepare(shared: dict) -> Container:
    return Container(
        name="prepare",
        image=CPU_IMAGE,
        command=steps.prepare(
            "{{workflow.parameters.data}}", "{{workflow.parameters.embeddings}}", "{{workflow.parameters.out}}",
            result_file="/tmp/prepared",
        ),
        outputs=[Parameter(name="prepared", value_from=m.ValueFrom(path="/tmp/prepared"))],
        # A CPU limit too: prepare starts a tokenizing process per usable core, which the limit caps (job.prepare:
        # usable_cores); without one, a 64-core node would get 64 processes in the pod's memory.
        pod_spec_patch=_resources_patch("{{workflow.parameters.prepare-cpu}}", "{{workflow.parameters.prepare-memory}}",
                                        cpu_limit=True),
        **shared,
    )


def _train(o: Options, shared: dict) -> Container:
    return Container(
        name="train",
        image="{{workflow.parameters.image}}",
        inputs=[Parameter(name="name"), Parameter(name="label"), Parameter(name="spec"), Parameter(name="prepared")],
        command=steps.train(
            "{{inputs.parameters.spec}}", "{{inputs.parameters.prepared}}", "{{workflow.parameters.out}}",
            "{{workflow.name}}", "{{inputs.parameters.name}}", result_file=RESULT,
        ),
        # A failed run writes no result: the default keeps the node's outputs valid.
        outputs=[Parameter(name="balanced-accuracy", value_from=m.ValueFrom(path=RESULT, default="nan"))],
        pod_spec_patch=_resources_patch("{{workflow.parameters.train-cpu}}", "{{workflow.parameters.train-memory}}",
                                        gpus="{{workflow.parameters.gpus}}", placement=True),
        synchronization=_semaphore(o.gpu_semaphore),
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
        **shared,
    )


def _aggregate(shared: dict) -> Container:
    return Container(
        name="aggregate",
        image=CPU_IMAGE,
        command=steps.aggregate(
            "{{workflow.parameters.out}}", "{{workflow.name}}", "{{workflow.parameters.configs}}", report_dir=REPORT_DIR
        ),
        outputs=_report_artifacts(),
        resources=Resources(cpu_request="1", memory_request="2Gi", memory_limit="2Gi"),
        **shared,
    )


def _semaphore(text: str) -> m.Synchronization | None:
    """"configmap#key" -> a semaphore the pod holds while it runs; "" -> none."""
    if not text:
        return None
    name, _, key = text.partition("#")
    return m.Synchronization(semaphores=[m.SemaphoreRef(config_map_key_ref=m.ConfigMapKeySelector(name=name, key=key))])


def reference(configs: str, o: Options, given: set[str]) -> Workflow:
    """A sweep of the chart's WorkflowTemplate (workflowTemplateRef), as `argo submit --from workflowtemplate/...`
    makes: only the parameters in `given` go with it, so everything else is what the chart installed."""
    names = {f.name for f in parameter_fields() if f.name in given or (f.name == "cpu_image" and "image" in given)}
    return Workflow(
        generate_name=f"{NAME}-",
        namespace=o.namespace,
        annotations=_annotations(configs, o, template=False),
        labels={"app.kubernetes.io/name": NAME, "app.kubernetes.io/version": __version__, **(o.labels or {})},
        workflow_template_ref=m.WorkflowTemplateRef(name=NAME),
        arguments=[Parameter(name="configs", value=configs)]
        + [Parameter(name=parameter_name(f), value=parameter_value(o, f.name)) for f in parameter_fields() if f.name in names],
        parallelism=o.parallelism if "parallelism" in given else None,
    )


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

