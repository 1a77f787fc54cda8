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

    plan ─────┐   ┌─> train (one GPU pod per run, withParam over plan's `runs`) ──────────┐
              ├───┼─> train-group (GPU pods of runs-per-gpu runs, over plan's `groups`) ──┼─> aggregate
    prepare ──┘   └─> train-on-cpu (one CPU pod per tfidf run, over plan's `cpu-runs`) ─┘

With runs-per-gpu 1 (the default) `groups` is empty and train-group Skipped; above 1, `runs` is.

`aggregate` runs once every train pod is done, whatever their outcome, and the
report lists the runs that failed. The workflow still ends Failed when a run
failed (see `_sweep_dag`). A fan-out over an empty list (no baseline: no CPU
runs) is Skipped, which holds nothing back.

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
from job import capacity
from job import search as job_search
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

# Retry only what another node heals, matched on Argo's exact node messages:
# - preemption: kubelet's graceful node shutdown sets the pod's status message "Pod was terminated in response to
#   imminent node shutdown." and inferFailedReason (workflow/controller/operator.go) makes a pod message the
#   node's, phase Failed;
# - node pressure from other pods: kubelet's eviction message "The node was low on resource: <resource>. ..."
#   (pkg/kubelet/eviction/helpers.go: nodeLowMessageFmt), phase Failed by the same path. The pod's own /tmp over
#   its sizeLimit is evicted with another message ("Usage of EmptyDir volume ...") and fails at once;
# - a deleted pod (a reclaimed or lost node, the pod garbage-collected): podReconciliation (operator.go) marks
#   the node Error with exactly "pod deleted".
# Everything else fails at once: a broken config (main's exit code), and failures of Argo's own init and wait
# containers (missing RBAC, bad S3 keys), which inferFailedReason reports as Error "init: ..." or "wait: ...".
RETRY_WHEN = (
    "lastRetry.status == 'Failed' && lastRetry.message matches "
    "'^(Pod was terminated in response to imminent node shutdown|The node was low on resource: )'"
    " || lastRetry.status == 'Error' && lastRetry.message == 'pod deleted'"
)


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

    # data, embeddings, out and image are required (job.steps.REQUIRED): the chart's WorkflowTemplate gives them no
    # default, so a sweep without them fails at once; in a rendered Workflow, plan refuses them empty.
    data: str = option("", PARAMETER, "challenge CSV or course jsonl.gz, s3:// (required; empty: plan refuses)")
    embeddings: str = option("", PARAMETER, "word vectors (.txt.gz/.vec/.bin), s3://, or none (required; empty: plan refuses)")
    out: str = option("", PARAMETER, "output prefix, s3://: prepared/<hash>/ and sweeps/<name>/ go under it "
                                     "(required; empty: plan refuses)")
    image: str = option(f"meli-sweep:{__version__}", PARAMETER, "the CUDA training image (images/Dockerfile); "
                        "the chart's WorkflowTemplate takes it from its install only")
    cpu_image: str = option("", PARAMETER, "image of plan, prepare and aggregate (images/Dockerfile.cpu); empty: IMAGE-cpu")
    pushgateway_url: str = option("", PARAMETER, "Pushgateway the train pods push live metrics to; empty: no push")
    mlflow_tracking_uri: str = option("", PARAMETER, "MLflow tracking server the train and aggregate steps log to, "
                                      "http(s)://host:port without credentials; empty: no tracking")
    baseline: bool = option(True, PARAMETER, "add the tfidf baseline run (a CPU model, in a CPU pod)")
    train_cpu: str = option("4", PARAMETER, "CPU cores per train pod, GPU or CPU (loading the prepared arrays, evaluation, tfidf)")
    train_memory: str = option("16Gi", PARAMETER, "memory request and limit per train pod, GPU or CPU")
    gpus: int = option(1, PARAMETER, "nvidia.com/gpu per GPU train pod")
    runs_per_gpu: int = option(1, PARAMETER, "GPU runs per GPU train pod, trained at once as one process each sharing "
                               "its GPU (template train-group); 1: a pod per run. Raise train-memory with it")
    # A sweep setting, not a config key: graphs change how a step is launched, not what it computes, so a run keeps
    # its name and its checkpoint whichever way it trains, and one switch covers every run of the sweep.
    cuda_graphs: bool = option(False, PARAMETER, "GPU train pods: replay each batch shape's training step as a CUDA graph "
                               "(job/graphs.py); false: eager steps")
    # past about 6 cores the one reading process limits; about 0.7 GiB at 20 M rows with 8 workers (make bench-prepare)
    prepare_cpu: str = option("6", PARAMETER, "CPU cores (request and limit) of prepare: one tokenizing process each")
    prepare_memory: str = option("2Gi", PARAMETER, "memory request and limit of the prepare pod")
    node_selector: tuple[str, ...] = option((), PARAMETER, "GPU train pods: comma-separated key=value labels a GPU node must carry",
                                          argo="GPU train pods' nodeSelector, a JSON object")
    tolerations: tuple[str, ...] = option(("nvidia.com/gpu:NoSchedule",), PARAMETER,
                                          "GPU train pods: comma-separated key[=value][:effect] taints they tolerate, as kubectl taint",
                                          argo="GPU train pods' tolerations, a JSON list (replaces the default)")
    s3_secret: str = option("meli-sweep-s3", PARAMETER,
                            "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_ENDPOINT_URL, AWS_REGION]; optional")
    # The search (docs/search.md); the defaults, job/search.py's, mean none: every listed run trained once.
    trials: int = option(job_search.DEFAULTS.trials, PARAMETER,
                         "trials sampled per spec that holds a search space, per round; 0: the specs hold no space")
    search: str = option(job_search.DEFAULTS.search, PARAMETER, "sampler of the trials: random | tpe")
    search_seed: int = option(job_search.DEFAULTS.search_seed, PARAMETER, "seed of the sampler: same seed, same trials")
    halving: int = option(job_search.DEFAULTS.halving, PARAMETER,
                          "successive halving's ETA: the best 1/ETA of a rung go on to the next; 0: no halving")
    min_epochs: int = option(job_search.DEFAULTS.min_epochs, PARAMETER, "halving: epochs of the first rung")
    rounds: int = option(job_search.DEFAULTS.rounds, PARAMETER,
                         "rounds of sampling, each later one asking a study of the earlier results (tpe)")
    max_workflow_bytes: int = option(capacity.WORKFLOW_SIZE_LIMIT, PARAMETER,
                                     "the controller's MAX_WORKFLOW_SIZE: plan refuses a sweep whose Workflow object "
                                     "would outgrow it; 0: no check (node status offloading is on)")
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
    # Each step's /tmp emptyDir has this sizeLimit, and its pod requests as much ephemeral-storage, so the scheduler
    # places it on a node with that much disk and a runaway step is evicted at its own limit (a message that is not
    # retried). Sized from what the steps write, measured by `make bench-disk` (docs/cluster.md: Disk).
    tmp_size: str = option("1Gi", WORKFLOW, "plan and aggregate: sizeLimit of /tmp and ephemeral-storage request "
                           "(the report's files: a few MiB)")
    prepare_tmp_size: str = option("10Gi", WORKFLOW, "prepare: sizeLimit of /tmp and ephemeral-storage request; measured "
                                   "(make bench-disk): the data file as downloaded plus about 50 bytes per row of staging, "
                                   "0.33 GiB in all at the course's 4.9 M rows, plus the word-vector file as stored: "
                                   "room for one of several GiB")
    train_tmp_size: str = option("4Gi", WORKFLOW, "train pods (GPU and CPU): sizeLimit of /tmp and ephemeral-storage "
                                 "request; measured (make bench-disk): the prepared arrays, about 31 bytes per row (0.14 GiB "
                                 "at 4.9 M rows), plus the word vectors' matrix, words x dimensions x 4 bytes (0.6 GiB for "
                                 "500,000 words of 300)")
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


def _parameter_names() -> list[str]:
    """Every parameter of the sweep, in order: configs, then one per PARAMETER field."""
    return ["configs"] + [parameter_name(f) for f in parameter_fields()]


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
    def source(name: str, value: str) -> dict:
        if not template:
            return dict(value=value)
        # A required parameter has no default: without the ConfigMap (absent, unlabelled, not yet in the
        # controller's informer cache) or its key, the sweep fails at once, naming the parameter and the
        # ConfigMap, instead of running on a placeholder (operator.go: setGlobalParameters and its caller
        # setExecWorkflow, "failed to set global parameters: ...").
        return dict(value_from=m.ValueFrom(config_map_key_ref=m.ConfigMapKeySelector(name=PARAMETERS_CONFIGMAP, key=name),
                                           default=None if name in steps.REQUIRED else value))

    # configs too: the chart's workflowTemplate.parameters.configs is what a sweep that sets none runs.
    params = [Parameter(name="configs", description="config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4",
                        **source("configs", configs))]
    for f in parameter_fields():
        name, value = parameter_name(f), parameter_value(o, f.name)
        # No enum on a ConfigMap-valued parameter: with an enum, validation wants a value
        # (workflow/validate/validate.go: validateArgumentsValues).
        enum = ["true", "false"] if f.type in (bool, "bool") and not template else None
        description = f.metadata.get("argo") or f.metadata["help"]
        params.append(Parameter(name=name, description=description, enum=enum, **source(name, value)))
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


def _resources_patch(cpu: str, memory: str, gpus: str | None = None, placement: bool = False, cpu_limit: bool = False,
                     disk: str | None = None) -> str:
    """A pod spec patch that sets the main container's requests and limits (and the train pod's node selector
    and tolerations) from parameters. Parameters cannot stand in for the fields themselves: a quantity must
    parse when the Workflow is read, and maps and lists are not text. The patch is substituted per pod, then
    checked as a PodSpec and merged (workflow/controller/workflowpod.go: processPodSpecPatch;
    workflow/util/util.go: ApplyPodSpecPatch), so a bad value errors the pod, not the submission."""
    requests = {"cpu": cpu, "memory": memory, **({"ephemeral-storage": disk} if disk else {})}
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


def _tmp_volume(size: str) -> EmptyDirVolume:
    """The writable /tmp of a step, on the node's disk (results, reports, the prepared-data cache), of at most `size`."""
    return EmptyDirVolume(name="tmp", mount_path=TMP, size_limit=size)


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
        shared = {**_env(o), "security_context": _security_context(o)}
        capacity = _capacity(configs, o, template)
        _sweep_dag(_plan(o, shared, capacity), _prepare(o, shared), _next(o, shared) if capacity != (1, 1) else None,
                   _train(o, shared, gpu=True), _train(o, shared, gpu=False), _train(o, shared, gpu=True, group=True),
                   _aggregate(o, shared), capacity)
    _name_train_nodes(w)
    return w


def _annotations(configs: str, o: Options, template: bool) -> dict:
    if template:
        return {TITLE: "meli-sweep: hyperparameter sweep",
                DESCRIPTION: "One GPU training pod per config, then a comparison report. Set configs, data, embeddings, out."}
    return {TITLE: f"meli-sweep: {configs}",
            DESCRIPTION: f"configs {configs}; data {o.data}; embeddings {o.embeddings}; out {o.out}"}


# Every search setting, as the steps take it from the sweep's parameters.
SEARCH = {name: "{{workflow.parameters.%s}}" % name.replace("_", "-") for name in steps.SEARCH_FLAGS}


def _capacity(configs: str, o: Options, template: bool) -> tuple[int, int]:
    """The (rounds, rungs) the DAG is unrolled to. A standalone Workflow carries what its own settings need; the
    chart's WorkflowTemplate, rendered at install before any sweep's settings are known, carries the most a sweep
    may have (job/search.py: MAX_ROUNDS, MAX_RUNGS). Either way plan refuses a sweep that needs more."""
    if template:
        return steps.MAX_ROUNDS, steps.MAX_RUNGS
    shape = job_search.shape_of(configs, o.baseline, search_settings(o))
    return shape.rounds, shape.rungs


def search_settings(o: Options) -> job_search.Search:
    """The search settings among the options (fields of the same names)."""
    return job_search.Search(**{name: getattr(o, name) for name in steps.SEARCH_FLAGS})


# How plan and next split the GPU runs into pods: runs-per-gpu of them a pod, listed in the output `groups`.
GROUPS = {"runs_per_gpu": "{{workflow.parameters.runs-per-gpu}}", "group_result_file": "/tmp/groups.json"}


def _list_outputs() -> list[Parameter]:
    """plan's and next's lists: GPU runs (a pod each), CPU runs (a pod each), GPU pods of several runs."""
    return [Parameter(name=name, value_from=m.ValueFrom(path=f"/tmp/{name}.json")) for name in ("runs", "cpu-runs", "groups")]


def _plan(o: Options, shared: dict, capacity: tuple[int, int]) -> Container:
    return Container(
        name="plan",
        image=CPU_IMAGE,
        # plan logs every parameter as resolved and refuses an empty required one (the sweep's first step)
        command=steps.plan("{{workflow.parameters.configs}}", "{{workflow.parameters.baseline}}", result_file="/tmp/runs.json",
                           cpu_result_file="/tmp/cpu-runs.json", search_settings=SEARCH, capacity=capacity,
                           shape_dir="/tmp/shape", max_workflow_bytes="{{workflow.parameters.max-workflow-bytes}}",
                           parameters={name: f"{{{{workflow.parameters.{name}}}}}" for name in _parameter_names()},
                           **GROUPS),
        # runs: the GPU pods' runs; cpu-runs: the runs of a CPU family (the tfidf baseline), for CPU pods;
        # groups: the GPU pods of several runs each (runs-per-gpu above 1; then runs is []);
        # rounds and rungs: the search's shape, which decides the stages that run (_stage_when)
        outputs=_list_outputs() + [
                 Parameter(name="rounds", value_from=m.ValueFrom(path="/tmp/shape/rounds")),
                 Parameter(name="rungs", value_from=m.ValueFrom(path="/tmp/shape/rungs"))],
        resources=Resources(cpu_request="100m", memory_request="256Mi", memory_limit="512Mi", ephemeral_request=o.tmp_size),
        volumes=[_tmp_volume(o.tmp_size)],
        **shared,
    )


def _prepare(o: Options, shared: dict) -> Container:
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
                                        cpu_limit=True, disk=o.prepare_tmp_size),
        volumes=[_tmp_volume(o.prepare_tmp_size)],
        **shared,
    )


def _next(o: Options, shared: dict) -> Container:
    """A later stage's list of runs (a rung after the first, or a later round), from the results so far in S3."""
    return Container(
        name="next",
        image=CPU_IMAGE,
        inputs=[Parameter(name="round"), Parameter(name="rung")],
        command=steps.next_runs(
            "{{workflow.parameters.out}}", "{{workflow.name}}", "{{workflow.parameters.configs}}",
            "{{workflow.parameters.baseline}}", "{{inputs.parameters.round}}", "{{inputs.parameters.rung}}",
            search_settings=SEARCH, result_file="/tmp/runs.json", cpu_result_file="/tmp/cpu-runs.json", **GROUPS,
        ),
        outputs=_list_outputs(),
        resources=Resources(cpu_request="100m", memory_request="512Mi", memory_limit="1Gi", ephemeral_request=o.tmp_size),
        volumes=[_tmp_volume(o.tmp_size)],
        **shared,
    )


def _train(o: Options, shared: dict, gpu: bool, group: bool = False) -> Container:
    """The train template: one run's pod. gpu: a GPU pod (nvidia.com/gpu, GPU placement, the GPU semaphore);
    otherwise the same command in a CPU pod (the tfidf baseline), with none of the three. Both use the training
    image, whose torch runs on a CPU too. group: a GPU pod of several runs (runs_per_gpu above 1), template
    train-group, which trains them at once, one train process each (steps.train_group), with the same
    resources, retries and deadline as a pod of one run."""
    if gpu:
        patch = _resources_patch("{{workflow.parameters.train-cpu}}", "{{workflow.parameters.train-memory}}",
                                 gpus="{{workflow.parameters.gpus}}", placement=True, disk=o.train_tmp_size)
    else:
        patch = _resources_patch("{{workflow.parameters.train-cpu}}", "{{workflow.parameters.train-memory}}",
                                 disk=o.train_tmp_size)
    if group:
        inputs = [Parameter(name="label"), Parameter(name="runs"), Parameter(name="prepared")]
        command = steps.train_group("{{inputs.parameters.runs}}", "{{inputs.parameters.prepared}}",
                                    "{{workflow.parameters.out}}", "{{workflow.name}}", result_file=RESULT,
                                    cuda_graphs="{{workflow.parameters.cuda-graphs}}")
        outputs = [Parameter(name="balanced-accuracies", value_from=m.ValueFrom(path=RESULT, default="{}"))]
    else:
        inputs = [Parameter(name="name"), Parameter(name="label"), Parameter(name="spec"), Parameter(name="prepared"),
                  Parameter(name="epochs"), Parameter(name="round"), Parameter(name="rung")]
        # epochs: the stage's budget; a promoted run goes on from the checkpoint its last rung left in S3
        command = steps.train(
            "{{inputs.parameters.spec}}", "{{inputs.parameters.prepared}}", "{{workflow.parameters.out}}",
            "{{workflow.name}}", "{{inputs.parameters.name}}", result_file=RESULT, epochs="{{inputs.parameters.epochs}}",
            round_="{{inputs.parameters.round}}", rung="{{inputs.parameters.rung}}",
            cuda_graphs="{{workflow.parameters.cuda-graphs}}",  # a CPU pod takes eager steps whatever it says
        )
        # A failed run writes no result: the default keeps the node's outputs valid.
        outputs = [Parameter(name="balanced-accuracy", value_from=m.ValueFrom(path=RESULT, default="nan"))]
    return Container(
        name="train-group" if group else "train" if gpu else "train-on-cpu",
        image="{{workflow.parameters.image}}",
        inputs=inputs,
        command=command,
        outputs=outputs,
        pod_spec_patch=patch,
        synchronization=_semaphore(o.gpu_semaphore) if gpu else None,
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
                    Label(key="config", value="{{inputs.parameters.%s}}" % ("label" if group else "name")),
                    Label(key="status", value="{{status}}"),
                ],
                realtime=False,
                value="{{duration}}",
            ),
        ],
        volumes=[_tmp_volume(o.train_tmp_size)],
        **shared,
    )


def _aggregate(o: Options, shared: dict) -> Container:
    return Container(
        name="aggregate",
        image=CPU_IMAGE,
        command=steps.aggregate(
            "{{workflow.parameters.out}}", "{{workflow.name}}", "{{workflow.parameters.configs}}", report_dir=REPORT_DIR,
            search_settings=SEARCH, baseline="{{workflow.parameters.baseline}}",
        ),
        outputs=_report_artifacts(),
        resources=Resources(cpu_request="1", memory_request="2Gi", memory_limit="2Gi", ephemeral_request=o.tmp_size),
        volumes=[_tmp_volume(o.tmp_size)],
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


def _sweep_dag(plan: Container, prepare: Container, next_: Container | None, train: Container, train_cpu: Container,
               train_group: Container, aggregate: Container, capacity: tuple[int, int]) -> DAG:
    """The DAG, unrolled to `capacity` (rounds, rungs): stage (1, 0) trains plan's lists; every later stage is a
    `next` task that lists its runs from the results so far, then its two fan-outs. A stage the sweep's own shape
    does not reach is Skipped by its `when` (_stage_when), and so is a fan-out over an empty list; either holds
    nothing back, so the stages run in order to aggregate whatever the sweep's shape."""
    # failFast off: one failed run must not stop the others from being scheduled.
    # target names every next and train task as well as aggregate: Argo judges a DAG by its target tasks only,
    # so with aggregate alone a failed run would be "handled" and the workflow would end Succeeded. With them,
    # the workflow waits for aggregate (the report is written) and then ends Failed when any run or next failed.
    stages = [(r, k) for r in range(1, capacity[0] + 1) for k in range(capacity[1])]
    names = [_stage_name(stage) for stage in stages]
    targets = ["aggregate", "train", "train-on-cpu", "train-group"]
    for name in names[1:]:
        targets += [f"next-{name}", f"train-{name}", f"train-{name}-on-cpu", f"train-{name}-group"]
    with DAG(name="sweep", fail_fast=False, target=" ".join(targets)) as dag:
        p = plan(name="plan")
        d = prepare(name="prepare")
        prepared = "{{tasks.prepare.outputs.parameters.prepared}}"
        trains = _train_fan_out("train", "{{tasks.plan.outputs.parameters.%s}}", train, train_cpu, train_group, prepared)
        for t in trains:
            [p, d] >> t
        for (round_, rung), name in zip(stages[1:], names[1:]):
            when = _stage_when(round_, rung)
            n = next_(name=f"next-{name}", arguments={"round": str(round_), "rung": str(rung)}, when=when)
            n.depends = " && ".join(["plan", "prepare"] + [_finished(t.name) for t in trains])
            trains = _train_fan_out(f"train-{name}", f"{{{{tasks.next-{name}.outputs.parameters.%s}}}}", train, train_cpu,
                                    train_group, prepared, when=when)
            for t in trains:
                t.depends = f"next-{name} && prepare"
        a = aggregate(name="aggregate")
        # plan and prepare: when either failed, every train task is Omitted and there is nothing to report
        a.depends = " && ".join(["plan", "prepare"] + [_finished(t.name) for t in trains])
    return dag


def _stage_name(stage: tuple[int, int]) -> str:
    """A stage's part of its task names: "" for (1, 0), whose tasks keep the plain names; "r2-k1" for round 2, rung 1."""
    return "" if stage == (1, 0) else f"r{stage[0]}-k{stage[1]}"


def _stage_when(round_: int, rung: int) -> str:
    """Whether the sweep's shape, as plan wrote it, reaches this stage. Argo resolves a task's `when` before the rest
    of it from v4.1 (workflow/controller/dag.go: resolveDependencyReferences, "Resolve the when clause first"), and
    v4.0 leaves the unresolved outputs of a Skipped task in place, so a fan-out ruled out here may name a `next`
    task that never ran; expandTask then finds no items to expand: Skipped, empty params."""
    return (f"{{{{tasks.plan.outputs.parameters.rounds}}}} >= {round_} && "
            f"{{{{tasks.plan.outputs.parameters.rungs}}}} > {rung}")


def _train_fan_out(name: str, lists: str, gpu: Container, cpu: Container, group: Container, prepared: str,
                   when: str | None = None) -> list:
    """The training of one stage's runs: a fan-out of GPU pods over the list `lists % "runs"` names, one of
    CPU pods (task `<name>-on-cpu`) over `lists % "cpu-runs"`, and one of GPU pods of several runs each (task
    `<name>-group`) over `lists % "groups"`. plan and next fill `runs` or `groups`, never both (runs-per-gpu),
    so the other is an empty fan-out, Skipped. Returns the three tasks, for the dependencies and for the next
    stage's `depends` (_finished)."""
    run = {"name": "{{item.name}}", "label": "{{item.label}}", "spec": "{{item.spec}}", "prepared": prepared,
           "epochs": "{{item.epochs}}", "round": "{{item.round}}", "rung": "{{item.rung}}"}
    pod = {"label": "{{item.label}}", "runs": "{{item.runs}}", "prepared": prepared}
    fan_outs = ((gpu, name, "runs", run), (cpu, f"{name}-on-cpu", "cpu-runs", run), (group, f"{name}-group", "groups", pod))
    return [template(name=task_name, with_param=lists % output, when=when, arguments=arguments)
            for template, task_name, output, arguments in fan_outs]


def _finished(task: str) -> str:
    """A `depends` term that holds once a task is done, whatever its outcome.

    Any outcome of the pods: AllFailed alone would miss a mix of Failed and Error runs. Skipped: a fan-out over
    an empty list (no CPU runs when the baseline is off; nobody promoted) is a Skipped node, "Skipped, empty
    params" (workflow/controller/dag.go: executeDAGTask), as is a stage the sweep does not reach (its `when`).
    Omitted: a stage whose `next` failed is omitted, and the stages after it (which find nobody to promote) and
    aggregate still run, so the report lists what finished. The caller adds `plan && prepare`, so that nothing
    runs past a failed plan or prepare.
    """
    return "(" + " || ".join(f"{task}.{result}" for result in ("Succeeded", "Failed", "Errored", "Skipped", "Omitted")) + ")"


def _name_train_nodes(w: Workflow) -> None:
    """Show each train node as its run's label in the Argo UI, not as the JSON of its item (a pod of several
    runs: their labels joined, fanout.gpu_pods).

    Argo reads the display name from the template's own `annotations`; Hera's `annotations` field goes
    to pod metadata instead, so the built template gets the annotation here. Argo v3.7+ checks it
    after substitution against DISPLAY_NAME (workflow/controller/operator.go: executeTemplate) and
    marks the node Error when it fails, hence the plan step's display-safe `label`, not the run name.
    """
    for i, t in enumerate(w.templates):
        if isinstance(t, Container) and t.name in ("train", "train-on-cpu", "train-group"):
            built = t._build_template()
            built.annotations = {DISPLAY_NAME: "{{inputs.parameters.label}}"}
            w.templates[i] = built

