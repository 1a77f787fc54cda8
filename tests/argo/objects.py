"""What a test hands the harness and gets back: the Cluster it runs against, Preempt rules, the
WorkflowResult with its Nodes, and the errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# kubelet's graceful node shutdown puts this on every pod it terminates (pkg/kubelet/nodeshutdown);
# Argo's inferFailedReason (operator.go) takes a pod's status message as the node's, phase Failed.
NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


class ArgoError(Exception):
    """An error the controller or executor would report; its text is Argo's message."""


class SpecError(ArgoError):
    """The manifest fails the controller's one-time validation (the workflow ends Failed)."""


class NotModelled(Exception):
    """The manifest relies on something this harness does not model: a test must not pass over it."""


class WorkflowStuck(Exception):
    """The workflow can never finish (a pod stuck Pending, a reference that never resolves).

    A real controller would keep it Running; the harness stops and says why. `result` holds the nodes.
    """

    def __init__(self, message: str, result: "WorkflowResult"):
        super().__init__(message)
        self.result = result


# --- results -------------------------------------------------------------------------------


@dataclass
class SavedArtifact:
    node: str  # the pod node that saved it
    name: str
    bucket: str
    key: str
    endpoint: str


@dataclass
class Metric:
    name: str  # as the template names it
    exported_name: str  # as Prometheus scrapes it from the controller
    labels: dict
    value: float
    node: str


@dataclass
class Node:
    name: str
    type: str  # DAG, TaskGroup, Retry, Pod or Skipped (operator.go: initializeNode)
    template: str
    boundary: str  # name of the DAG node this node belongs to ("" for the DAG itself)
    display_name: str = ""
    phase: str = "Pending"  # Pending, Running, Succeeded, Failed, Error, Skipped, Omitted
    message: str = ""
    children: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # parameter name -> value
    outputs: dict = field(default_factory=dict)  # output parameter name -> value
    exit_code: str | None = None
    pod_name: str = ""
    command: list = field(default_factory=list)  # the command as run (after substitution and mapping)
    log: str = ""  # what the container printed (stdout and stderr)
    artifacts: list = field(default_factory=list)  # SavedArtifact
    backoffs: list = field(default_factory=list)  # Retry nodes: seconds waited before each retry decision
    retried: bool = False  # NodeFlag.Retried: an attempt of a Retry node
    stuck: bool = False  # its pod never starts (ContainerCreating, CreateContainerConfigError)
    pod_spec: dict = field(default_factory=dict)  # the pod's spec as created: containers (main), volumes, placement
    pod: dict = field(default_factory=dict)  # the same with the containers the controller adds: init, wait (see _Pod)
    started: float = 0.0
    finished: float = 0.0

    @property
    def fulfilled(self) -> bool:  # workflow_types.go: NodePhase.Fulfilled
        return self.phase in ("Succeeded", "Failed", "Error", "Skipped", "Omitted")

    @property
    def completed(self) -> bool:  # workflow_types.go: NodePhase.Completed
        return self.phase in ("Succeeded", "Failed", "Error")

    @property
    def failed_or_error(self) -> bool:
        return self.phase in ("Failed", "Error")

    @property
    def retries(self) -> int:
        """Retry nodes: how many times the pod was retried (attempts - 1)."""
        return max(0, len(self.children) - 1) if self.type == "Retry" else 0


@dataclass
class WorkflowResult:
    name: str
    namespace: str
    phase: str  # Succeeded, Failed or Error (or Running when stuck)
    message: str
    nodes: dict  # node name -> Node, in creation order
    artifacts: list  # SavedArtifact, every pod's
    metrics: list  # Metric
    metric_errors: list  # the MetricsError condition's messages
    artifact_repository_ref: dict | None  # status.artifactRepositoryRef: where the repository was found
    spec: dict  # the executed spec (after the WorkflowTemplate merge)

    def task(self, name: str) -> list[Node]:
        """The nodes of a DAG task of the entrypoint: its fanned-out children, or the task's own node."""
        own = self.nodes.get(f"{self.name}.{name}")
        if own is not None and own.type == "TaskGroup":
            return [self.nodes[c] for c in own.children]
        fanned = [n for n in self.nodes.values() if n.name.startswith(f"{self.name}.{name}(") and not n.retried]
        return fanned or ([own] if own else [])

    def pods(self, template: str | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == "Pod" and (template is None or n.template == template)]

    def failures(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.failed_or_error]

    def describe(self) -> str:
        """One line per node, for assertion messages."""
        lines = [f"workflow {self.name}: {self.phase} {self.message}".rstrip()]
        for n in self.nodes.values():
            took = f" ({n.finished - n.started:.1f}s)" if n.finished else ""
            lines.append(f"  {n.type:9} {n.display_name or n.name}: {n.phase}{took} {n.message}".rstrip())
        return "\n".join(lines)


# --- the cluster the controller sees ---------------------------------------------------------


@dataclass
class Cluster:
    """What the controller and the kubelet would read from the API server, plus the controller's config."""

    namespace: str = "default"  # the workflow's namespace when its manifest names none
    controller_namespace: str = "argo"  # where the controller runs (second place an artifactRepositoryRef is looked up)
    configmaps: list = field(default_factory=list)  # ConfigMap manifests; no metadata.namespace = `namespace`
    secrets: dict = field(default_factory=dict)  # Secrets of the workflow's namespace: name -> {key: plain value}
    workflow_templates: list = field(default_factory=list)  # WorkflowTemplate manifests
    default_artifact_repository: dict = field(default_factory=dict)  # the controller's artifactRepository ({}: none set)
    cloud_credentials: dict | None = None  # what a pod's cloud identity gives (useSDKCreds): AWS_* variables
    image_env: Callable[[str], dict] | None = None  # image reference -> the ENV its Dockerfile bakes in
    # The controller ConfigMap's `executor` (a Container): its securityContext and resources go to the init and
    # wait containers of every pod (workflow/controller/workflowpod.go: newExecContainer). {}: the default, none.
    executor: dict = field(default_factory=dict)

    def configmap(self, namespace: str, name: str) -> dict | None:
        return self._find(self.configmaps, namespace, name)

    def workflow_template(self, namespace: str, name: str) -> dict | None:
        return self._find(self.workflow_templates, namespace, name)

    def _find(self, manifests: list, namespace: str, name: str) -> dict | None:
        """The manifest of that name in that namespace (one that names none is in `namespace`)."""
        for m in manifests:
            meta = m.get("metadata", {})
            if meta.get("name") == name and meta.get("namespace", self.namespace) == namespace:
                return m
        return None


@dataclass
class PodView:
    """What a preemption rule sees of the pod it may kill."""

    name: str
    node: str
    template: str
    attempt: int
    command: list
    env: dict


@dataclass
class Preempt:
    """Kill a pod from outside with SIGKILL, as a reclaimed spot node does, once `when` says so.

    `when(line, pod)` is called with each line the pod prints; the first True kills its process group.
    The pod then fails as kubelet's graceful node shutdown leaves it (see NODE_SHUTDOWN_MESSAGE).
    """

    template: str
    when: Callable[[str, PodView], bool]
    attempt: int = 0  # which try of a retried pod (0 = the first)
    node: str = ""  # a substring of the node name, to pick one pod of a fan-out
    message: str = NODE_SHUTDOWN_MESSAGE
    fired: list = field(default_factory=list)  # names of the pods it killed

