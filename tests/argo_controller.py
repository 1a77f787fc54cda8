"""Run a rendered Argo Workflow the way the Argo v4 controller and executor would, on one machine.

    result = run_workflow(manifest, Cluster(namespace="ml", configmaps=[...], secrets={...}), workdir)
    result.phase, result.nodes, result.artifacts, result.metrics

This is test infrastructure, not an Argo: it reads the manifest as the controller reads it and
applies the controller's rules, each taken from the argo-workflows v4.1.2 source and cited where it
is applied (file and function). Every container's command runs as a local process.

What it models:
- submission: a Workflow, or a Workflow with `spec.workflowTemplateRef` merged over the referenced
  WorkflowTemplate; the spec validation the controller runs once (workflow/validate/validate.go);
- the DAG walk in the controller's order (workflow/controller/dag.go): `depends` logic with task
  results, withItems/withParam fan-out, the TaskGroup's phase from its children, the DAG's phase
  from its target tasks;
- variable substitution ({{workflow.*}}, {{inputs.*}}, {{item.*}}, {{tasks.*}}, {{pod.name}},
  metric-only {{status}}/{{duration}}), display names, retries with retryStrategy (limit, policy,
  backoff and expression), custom Prometheus metrics;
- each pod: its spec as the controller creates it (Node.pod: Argo's init and wait containers from the
  controller's executor settings, Cluster.executor, then the pod spec patches), its env (image ENV, envFrom and env from the given Secrets), emptyDir volumes as fresh
  per-pod folders, output parameters read from valueFrom.path, output artifacts and archived logs
  saved to S3 where the resolved artifact repository says, Secrets the pod mounts;
- preemption: a pod killed from outside (SIGKILL) fails as a reclaimed node's pod does.

What it does not model. Every field of the spec, a template, a container, a DAG and a task is either
modelled or on IGNORED with its reason (parallelism, synchronization, resources, tolerations,
nodeSelector, activeDeadlineSeconds, podGC, ttlStrategy, securityContext); any other field raises
NotModelled (check_fields), and so does a modelled field used in a way the harness does not follow:
- scheduling: no nodes, resources, tolerations, parallelism or semaphores; pods run one at a time,
  each to its end, in the order the controller creates them; backoff waits are recorded, not slept
  (a virtual clock moves past them);
- real pods: no images, no read-only root filesystem, users or capabilities; the process runs from
  this checkout with `python` taken as this interpreter; /dev/shm and other paths not in the
  command line are the host's;
- steps, script, resource, suspend and other template kinds, hooks, onExit, input
  artifacts, withSequence, expression tags ({{=...}}), memoization, daemons, activeDeadlineSeconds
  (each pod has the harness' own time limit instead), realtime metrics.

Mapping /tmp: a container's emptyDir mount (here /tmp) becomes a fresh folder of its pod, and every
command argument, env value and output path under the mount is rewritten to it. TMPDIR is set to
that folder too: tempfile then writes where it would in the container (its /tmp), instead of the
host's /tmp. Rewriting is honest where the manifest names the path; TMPDIR covers what only the
libraries know.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import posixpath
import random
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

DISPLAY_NAME_KEY = "workflows.argoproj.io/display-name"
DEFAULT_REPO_KEY = "workflows.argoproj.io/default-artifact-repository"
DEFAULT_ARCHIVE_PATTERN = "{{workflow.name}}/{{pod.name}}"  # artifact_repository_types.go: DefaultArchivePattern
# kubelet's graceful node shutdown puts this on every pod it terminates (pkg/kubelet/nodeshutdown);
# Argo's inferFailedReason (operator.go) takes a pod's status message as the node's, phase Failed.
NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
EXECUTOR_IMAGE = "quay.io/argoproj/argoexec:v4.1.2"  # the controller's --executor-image default for its release
MAX_ATTEMPTS = 50  # a retryStrategy without a limit retries for ever in Argo; the harness gives up here
METRIC_PREFIX = "argo_workflows_"  # util/telemetry/metrics.go: the Prometheus exporter's namespace, on custom metrics too

# operator.go: displayNameRegex
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-.]{0,61}[a-zA-Z0-9]$")
# validate.go: workflowFieldNameFmt (templates, tasks), paramOrArtifactNameRegex (parameters, artifacts)
_FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
_PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# workflow/metrics/util.go IsValidMetricName: Prometheus' legacy name rule, and no ':' (label keys too)
_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# workflow/common/common.go: GlobalVarValidWorkflowVariablePrefix, the tags validation must resolve
_VAR_PREFIXES = ("item.", "steps.", "inputs.", "outputs.", "pod.", "workflow.", "tasks.")
# workflow/common/ancestry.go: taskNameRegex, TaskResult
_TASK_NAME = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)")
_TASK_RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
_STEPS_OR_DAG_SEPARATOR = re.compile(r"^(\[\d+\])?\.")  # operator.go: stepsOrDagSeparator
_UNSUPPORTED_TEMPLATE_KINDS = ("steps", "script", "resource", "suspend", "containerSet", "data", "http", "plugin")


# Every field of a Workflow spec, a template, its container and a DAG task is either modelled (applied
# where cited below) or on an IGNORED list with the reason it changes nothing a test sees here. Any other
# field raises NotModelled (check_fields), so a manifest can never rely silently on what is not modelled.
MODELLED = {
    "spec": {"entrypoint", "arguments", "templates", "serviceAccountName", "archiveLogs", "artifactRepositoryRef",
             "workflowTemplateRef", "retryStrategy", "podSpecPatch", "priority"},
    "template": {"name", "container", "dag", "inputs", "outputs", "retryStrategy", "metrics", "podSpecPatch",
                 "volumes", "annotations", "archiveLocation"},
    "container": {"image", "command", "args", "env", "envFrom", "volumeMounts"},  # image: its ENV (Cluster.image_env)
    "dag": {"tasks", "target", "failFast"},
    "task": {"name", "template", "arguments", "depends", "dependencies", "withItems", "withParam", "when"},
}
IGNORED = {
    "spec": {
        "parallelism": "pods run one at a time, each to its end, so any limit of 1 or more holds",
        "podGC": "a pod here is a finished local process: nothing is kept or deleted (its log is Node.log)",
        "ttlStrategy": "the Workflow object is not kept once run_workflow returns",
        "securityContext": "no users, capabilities or seccomp: the process runs as the test's user; the pod's "
                           "spec keeps it (Node.pod_spec) for static checks",
    },
    "template": {
        "synchronization": "pods run one at a time, so a semaphore or mutex never holds a pod back",
        "activeDeadlineSeconds": "each pod has the harness' own time limit (pod_timeout_s) instead",
        "nodeSelector": "no nodes and no scheduling; kept in Node.pod_spec",
        "tolerations": "no nodes and no scheduling; kept in Node.pod_spec",
    },
    "container": {
        "resources": "no scheduling and no cgroups: requests and limits are kept in Node.pod_spec, not enforced",
        "securityContext": "no users or capabilities, no read-only root filesystem; kept in Node.pod_spec",
    },
    "dag": {},
    "task": {},
}
# Fields ignored only at the value that changes nothing (the API default).
IGNORED_AT = {("template", "failFast"): False}  # operator.go: IsFailFast is false unless set true


def check_fields(where: str, obj: dict, what: str) -> None:
    """Raise NotModelled for a field of `obj` (a `where` object: spec, template, container, dag, task) that is
    neither modelled nor knowingly ignored."""
    for key, value in obj.items():
        if key in MODELLED[where] or key in IGNORED[where]:
            continue
        if (where, key) in IGNORED_AT and value == IGNORED_AT[(where, key)]:
            continue
        raise NotModelled(f"{what}: `{key}` is neither modelled nor on the harness' ignore list")


def check_spec_fields(spec: dict) -> None:
    """check_fields over the whole executed spec: every template, its container, its DAG and tasks."""
    check_fields("spec", spec, "spec")
    for t in spec.get("templates", []) or []:
        name = f"template {t.get('name')}"
        check_fields("template", t, name)
        if isinstance(t.get("container"), dict):
            check_fields("container", t["container"], f"{name} container")
        if isinstance(t.get("dag"), dict):
            check_fields("dag", t["dag"], f"{name} dag")
            for task in t["dag"].get("tasks") or []:
                check_fields("task", task, f"{name} task {task.get('name')}")


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


# --- expressions: the subset of expr-lang (retry expressions, depends) and govaluate (when) in use ------


_EXPR_TOKEN = re.compile(
    r"""\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"""
    r"""|(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"""|(?P<op>\|\||&&|==|!=|=~|!~|<=|>=|[<>!()])"""
    r"""|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"""
)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "matches": "matches", "contains": "contains"}


def _expr_tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _EXPR_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ArgoError(f"unable to evaluate expression '{text}': unexpected {text[pos:].strip()!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value in _WORD_OPS:
            kind, value = "op", _WORD_OPS[value]
        tokens.append((kind, value))
        pos = m.end()
    return tokens


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "nil" if value is None else type(value).__name__


class _Expr:
    """A tiny evaluator of `a == 'x' || b matches 'y' && !(c)`, strict about types as expr-lang is.

    Argo evaluates retryStrategy.expression (operator.go processNodeRetries) and the expanded `depends`
    (dag.go evaluateDependsLogic) with expr-lang (util/expr/argoexpr EvalBool). bare_strings: govaluate
    as a metric's `when` uses it (steps.go shouldExecute), where a bare word is a string, so
    `Succeeded == Succeeded` holds.
    """

    def __init__(self, text: str, scope: dict, bare_strings: bool = False):
        self.text, self.scope, self.bare = text, scope, bare_strings
        self.tokens, self.i = _expr_tokens(text), 0

    def evaluate(self):
        value = self._or()
        if self.i != len(self.tokens):
            self._fail(f"unexpected {self.tokens[self.i][1]!r}")
        return value

    def _fail(self, why: str):
        raise ArgoError(f"unable to evaluate expression '{self.text}': {why}")

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) and self.tokens[self.i][0] == "op" else None

    def _bool(self, value, op: str) -> bool:
        if not isinstance(value, bool):
            self._fail(f"invalid operation: {op} on {_kind(value)}")
        return value

    def _or(self):
        value = self._and()
        while self._peek() == "||":
            self.i += 1
            right = self._and()  # both sides are checked, as expr-lang compiles the whole expression
            value = self._bool(value, "||") or self._bool(right, "||")
        return value

    def _and(self):
        value = self._compare()
        while self._peek() == "&&":
            self.i += 1
            right = self._compare()
            value = self._bool(value, "&&") and self._bool(right, "&&")
        return value

    def _compare(self):
        left = self._unary()
        op = self._peek()
        if op not in ("==", "!=", "<", ">", "<=", ">=", "matches", "contains", "=~", "!~"):
            return left
        self.i += 1
        right = self._unary()
        if op in ("matches", "=~", "!~", "contains"):
            if not (isinstance(left, str) and isinstance(right, str)):
                self._fail(f"invalid operation: {op} (mismatched types {_kind(left)} and {_kind(right)})")
            # Go's RE2 and Python's re agree on the alternations and literals these expressions use.
            found = right in left if op == "contains" else re.search(right, left) is not None
            return not found if op == "!~" else found
        if _kind(left) != _kind(right) and "nil" not in (_kind(left), _kind(right)):
            self._fail(f"invalid operation: {op} (mismatched types {_kind(left)} and {_kind(right)})")
        return {"==": lambda: left == right, "!=": lambda: left != right, "<": lambda: left < right,
                ">": lambda: left > right, "<=": lambda: left <= right, ">=": lambda: left >= right}[op]()

    def _unary(self):
        if self._peek() == "!":
            self.i += 1
            return not self._bool(self._unary(), "!")
        return self._primary()

    def _primary(self):
        if self.i >= len(self.tokens):
            self._fail("unexpected end")
        kind, value = self.tokens[self.i]
        self.i += 1
        if kind == "op" and value == "(":
            inner = self._or()
            if self._peek() != ")":
                self._fail("missing )")
            self.i += 1
            return inner
        if kind == "num":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "name":
            return self._name(value)
        self._fail(f"unexpected {value!r}")

    def _name(self, dotted: str):
        if dotted in ("true", "false"):
            return dotted == "true"
        if dotted == "nil":
            return None
        value = self.scope
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                if self.bare:
                    return dotted
                self._fail(f"unknown name {dotted}")
            value = value[part]
        return value


def evaluate(text: str, scope: dict, bare_strings: bool = False):
    """Evaluate an expression with dotted names looked up in a nested scope."""
    return _Expr(text, scope, bare_strings).evaluate()


def _nest(flat: dict) -> dict:
    """{"lastRetry.status": x} -> {"lastRetry": {"status": x}} (util/expand: Expand, as env.GetFuncMap does)."""
    out: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


# --- variable substitution (util/template) --------------------------------------------------------


def _each_tag(text: str) -> Iterable[tuple[int, int, str]]:
    """(start, end, tag) of every {{tag}}, found as fasttemplate finds them (next "}}" after "{{")."""
    i = 0
    while True:
        j = text.find("{{", i)
        if j < 0:
            return
        k = text.find("}}", j + 2)
        if k < 0:
            return
        yield j, k + 2, text[j + 2:k]
        i = k + 2


def replace_tags(text: str, scope: dict, strict: bool = False, strict_prefixes: tuple = ()) -> str:
    """util/template/simple_template.go simpleReplaceStrict: {{ key }} -> scope[key] (spaces trimmed).

    An unresolved tag stays as it is, unless strict (template.Replace with allowUnresolved false), or it
    starts with one of strict_prefixes (ReplaceStrict): then it is the error Argo reports.
    """
    out, last = [], 0
    for start, end, tag in _each_tag(text):
        key = tag.strip()
        if key.startswith("="):
            raise NotModelled(f"expression tag {{{{{tag}}}}}: the harness substitutes simple tags only")
        out.append(text[last:start])
        if key in scope:
            out.append(str(scope[key]))
        elif strict or any(key == p or key.startswith(p + ".") for p in strict_prefixes):
            raise ArgoError(f"failed to resolve {{{{{tag}}}}}")
        else:
            out.append(text[start:end])
        last = end
    out.append(text[last:])
    return "".join(out)


def substitute(obj, scope: dict, strict: bool = False, strict_prefixes: tuple = ()):
    """A copy of obj with every string's tags replaced (Argo replaces over the JSON of the object)."""
    if isinstance(obj, str):
        return replace_tags(obj, scope, strict, strict_prefixes)
    if isinstance(obj, list):
        return [substitute(v, scope, strict, strict_prefixes) for v in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, scope, strict, strict_prefixes) for k, v in obj.items()}
    return obj


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)


def _text(value) -> str:
    """An AnyString as Argo prints it: YAML numbers and booleans become their text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_value(value) -> str:
    """An item value as processItem's fmt.Sprintf("%v") shows it (strings raw, the rest as JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def pod_name(workflow: str, node: str, template: str) -> str:
    """workflow/util/pod_name.go GeneratePodName (v2 names): <workflow>-<template>-<fnv32a(node name)>."""
    if workflow == node:
        return workflow
    prefix = f"{workflow}-{template}" if template else workflow
    return f"{prefix[:242]}-{_fnv32a(node)}"


def _duration_s(text) -> float:
    """pkg/apis/workflow/v1alpha1/utils.go ParseStringToDuration: plain seconds, or a Go duration (1m30s)."""
    text = str(text).strip()
    if re.fullmatch(r"-?\d+", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ArgoError(f"unable to parse {text} as a duration: time: invalid duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# --- validation (workflow/validate/validate.go) -------------------------------------------------


def _check_names(items: list, what: str, params: bool = False) -> None:
    """validate.go validateWorkflowFieldNames: names required, well formed and unique."""
    seen = set()
    for i, item in enumerate(items or []):
        name = item.get("name", "")
        if not name:
            raise SpecError(f"{what}[{i}].name is required")
        if params and not _PARAM_NAME.match(name):
            raise SpecError(f"{what}[{i}].name: '{name}' is invalid: Parameter/Artifact name must consist of "
                            "alpha-numeric characters, '_' or '-' e.g. my_param_1, MY-PARAM-1")
        if not params and (not _FIELD_NAME.match(name) or len(name) > 128):
            raise SpecError(f"{what}[{i}].name: '{name}' is invalid: name must consist of alpha-numeric characters "
                            "or '-', and must start with an alpha-numeric character (e.g. My-name1-2, 123-NAME)")
        if name in seen:
            raise SpecError(f"{what}[{i}].name '{name}' is not unique")
        seen.add(name)


def _resolve_all_variables(obj, scope: set, any_item: bool = False) -> None:
    """validate.go resolveAllVariables: every {{tag}} under a workflow prefix must be in scope."""
    allowed_prefixes = ("outputs.", "workflow.creationTimestamp", "workflow.scheduledTime", "workflow.duration",
                        "tasks.name", "steps.name", "node.name")
    for text in _strings(obj):
        for _, _, tag in _each_tag(text):
            key = tag.strip()
            if key.startswith("=") or not key.startswith(_VAR_PREFIXES) or key in scope:
                continue
            if any_item and (key == "item" or key.startswith("item.")):
                continue  # withParam: any {{item.*}} may exist at run time
            if key.startswith(allowed_prefixes):
                continue
            raise SpecError(f"failed to resolve {{{{{tag}}}}}")


def _task_dependencies(task: dict, tasks: dict) -> tuple[dict, str]:
    """workflow/common/ancestry.go GetTaskDependencies: {dependency: 'task'|'items'} and the expanded logic.

    A bare name in `depends` means (X.Succeeded || X.Skipped || X.Daemoned) (expandDependency).
    """
    depends = task.get("depends", "")
    if not depends and task.get("dependencies"):
        depends = " && ".join(task["dependencies"])
    deps: dict = {}
    bare = []
    for m in _TASK_NAME.finditer(depends):
        if m.group(1):
            name, result = m.group(1).split(".", 1)
            if result in ("AnySucceeded", "AllFailed"):
                deps[name] = "items"
            else:
                deps.setdefault(name, "task")
        else:
            deps[m.group(2)] = "task"
            bare.append(m)
    for m in reversed(bare):
        name = m.group(2)
        results = ["Succeeded", "Skipped", "Daemoned"]
        on = (tasks.get(name) or {}).get("continueOn") or {}
        results += ["Errored"] * bool(on.get("error")) + ["Failed"] * bool(on.get("failed"))
        depends = depends[:m.start()] + "(" + " || ".join(f"{name}.{r}" for r in results) + ")" + depends[m.end():]
    return deps, depends


def _ancestry(name: str, deps: dict) -> list[str]:
    """workflow/common/ancestry.go GetTaskAncestry: every task this one depends on, transitively."""
    seen: list = []

    def visit(task: str) -> None:
        for dep in deps.get(task, {}):
            if dep not in seen:
                visit(dep)
                seen.append(dep)

    visit(name)
    return seen


class _Validator:
    """validate.go Workflow: the checks the controller runs once on a new workflow (failure ends it Failed)."""

    def __init__(self, spec: dict, meta: dict):
        self.spec, self.meta = spec, meta
        self.templates = {t.get("name"): t for t in spec.get("templates", [])}
        self.done: set = set()
        self.globals = {"workflow.name", "workflow.namespace", "workflow.mainEntrypoint",
                        "workflow.serviceAccountName", "workflow.uid", "workflow.status"}
        params = spec.get("arguments", {}).get("parameters", [])
        if params:
            self.globals |= {"workflow.parameters", "workflow.parameters.json"}
        self.globals |= {f"workflow.parameters.{p['name']}" for p in params if p.get("name")}
        for kind in ("annotations", "labels"):
            self.globals |= {f"workflow.{kind}.{k}" for k in meta.get(kind, {}) or {}}
            self.globals |= {f"workflow.{kind}", f"workflow.{kind}.json"}
        if "priority" in spec:
            self.globals.add("workflow.priority")

    def run(self) -> None:
        _check_names(self.spec.get("templates", []), "spec.templates")
        self._arguments("spec.arguments.", self.spec.get("arguments", {}))
        entry = self.spec.get("entrypoint", "")
        if not entry:
            raise SpecError("spec.entrypoint is required")
        self._holder(entry)
        for name in self.templates:  # validate.go: every inlined template is validated too
            try:
                self._holder(name)
            except SpecError as e:
                raise SpecError(f"templates.{name} {e}") from None

    def _holder(self, name: str) -> dict:
        """validate.go validateTemplateHolder: the template must exist, then it is validated once."""
        if name not in self.templates:
            raise SpecError(f"template name '{name}' undefined")
        tmpl = self.templates[name]
        policy = (tmpl.get("retryStrategy") or {}).get("retryPolicy", "")
        if policy not in ("", "Always", "OnError", "OnFailure", "OnTransientError"):
            raise SpecError(f"{policy} is not a valid RetryPolicy")
        if name not in self.done:
            self.done.add(name)
            self._template(tmpl)
        return tmpl

    def _template(self, tmpl: dict) -> None:
        """validate.go validateTemplate."""
        name = tmpl["name"]
        kinds = [k for k in ("container", "dag") + _UNSUPPORTED_TEMPLATE_KINDS if k in tmpl]
        if len(kinds) != 1:
            raise SpecError(f"templates.{name} template type {'unspecified' if not kinds else 'multiple types specified'}")
        inputs = tmpl.get("inputs", {}) or {}
        _check_names(inputs.get("parameters", []), f"templates.{name}.inputs.parameters", params=True)
        scope = set(self.globals) | {f"inputs.parameters.{p['name']}" for p in inputs.get("parameters", [])}
        if inputs.get("parameters"):
            scope.add("inputs.parameters")
        if "container" in tmpl:
            scope.add("pod.name")
        if tmpl.get("retryStrategy"):
            scope |= {"retries", "lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message"}
        if "dag" in tmpl:
            self._dag(tmpl, scope)
        else:
            try:
                _resolve_all_variables(tmpl, scope)
            except SpecError as e:
                raise SpecError(f"templates.{name}: {e}") from None
        self._outputs(tmpl)
        self._metrics(tmpl)

    def _outputs(self, tmpl: dict) -> None:
        """validate.go validateOutputs / validateOutputParameter."""
        name, outputs = tmpl["name"], tmpl.get("outputs", {}) or {}
        _check_names(outputs.get("parameters", []), f"templates.{name}.outputs.parameters ", params=True)
        _check_names(outputs.get("artifacts", []), f"templates.{name}.outputs.artifacts ", params=True)
        for p in outputs.get("parameters", []):
            ref = f"templates.{name}.outputs.parameters.{p['name']}"
            if "valueFrom" in p and "value" in p:
                raise SpecError(f"{ref} has both valueFrom and value specified, choose one")
            if "valueFrom" not in p and "value" not in p:
                raise SpecError(f"{ref} does not have valueFrom or value specified")
            if "container" in tmpl and "valueFrom" in p and not p["valueFrom"].get("path"):
                raise SpecError(f"{ref}.path must be specified for Container templates")

    def _metrics(self, tmpl: dict) -> None:
        """validate.go validateTemplate: custom metric names, label keys, help and values (workflow/metrics/util.go)."""
        name = tmpl["name"]
        for m in (tmpl.get("metrics") or {}).get("prometheus", []):
            if not _METRIC_NAME.match(m.get("name", "")):
                raise SpecError(f"templates.{name} metric name '{m.get('name', '')}' is invalid. "
                                "Metric names must contain alphanumeric characters or '_'")
            for label in m.get("labels", []) or []:
                if not _METRIC_NAME.match(label.get("key", "")):
                    raise SpecError(f"metric label '{label.get('key', '')}' is invalid: "
                                    "keys may only contain alphanumeric characters or '_'")
            if not m.get("help"):
                raise SpecError(f"templates.{name} metric '{m['name']}' must contain a help string under 'help: ' field")
            for kind in ("gauge", "counter", "histogram"):
                if kind in m and not (m[kind] or {}).get("value"):
                    raise SpecError(f"templates.{name} metric '{m['name']}' error: missing {kind}.value")

    def _arguments(self, prefix: str, args: dict) -> None:
        """validate.go validateArguments: names, and a value (or valueFrom) for every parameter."""
        _check_names(args.get("parameters", []), f"{prefix}parameters", params=True)
        for p in args.get("parameters", []):
            if "value" not in p and "valueFrom" not in p:
                raise SpecError(f"{prefix}{p['name']}.value or {prefix}{p['name']}.valueFrom is required")
            source = p.get("valueFrom") or {}
            if source and not (source.get("configMapKeyRef") or source.get("event") or "supplied" in source):
                raise SpecError(f"{prefix}{p['name']}.valueFrom only allows: default, configMapKeyRef and supplied")
            # validateArgumentsValues: an enum needs a value to check (a ConfigMap-valued parameter has none yet)
            if "enum" in p and "value" not in p:
                raise SpecError(f"{prefix}{p['name']}.value is required")
            if "enum" in p and _text(p["value"]) not in p["enum"]:
                raise SpecError(f"{prefix}{p['name']}.value should be present in {prefix}{p['name']}.enum list")

    def _dag(self, tmpl: dict, scope: set) -> None:
        """validate.go validateDAG."""
        name, dag = tmpl["name"], tmpl["dag"]
        tasks = dag.get("tasks") or []
        if not tasks:
            raise SpecError(f"templates.{name} must have at least one task")
        by_name = {t.get("name"): t for t in tasks}
        deps = {t.get("name"): _task_dependencies(t, by_name)[0] for t in tasks}
        self._no_cycles(name, deps)
        _check_names(tasks, f"templates.{name}.tasks")
        for task in tasks:
            self._dag_task_refs(name, task, by_name, deps, scope)
        for target in (dag.get("target") or "").split():
            if target not in by_name and not re.fullmatch(r"\{\{[-a-zA-Z0-9]+(\.[-a-zA-Z0-9_]+)*\}\}", target):
                raise SpecError(f"templates.{name}.targets: target '{target}' is not defined")
        for task in tasks:
            self._dag_task_variables(name, task, by_name, deps, scope)

    def _no_cycles(self, name: str, deps: dict) -> None:
        """validate.go sortDAGTasks / verifyNoCycles."""
        state: dict = {}

        def visit(task: str, path: list) -> None:
            if state.get(task) == "done":
                return
            if task in path:
                raise SpecError(f"templates.{name}.tasks dependency cycle detected: {'->'.join(path + [task])}")
            for dep in deps.get(task, {}):
                if dep in deps:
                    visit(dep, path + [task])
            state[task] = "done"

        for task in deps:
            visit(task, [])

    def _dag_task_refs(self, dag: str, task: dict, by_name: dict, deps: dict, scope: set) -> None:
        """validate.go validateDAG, first loop: template references, task results, dependencies."""
        tname = task["name"]
        using_depends = any(t.get("depends") for t in by_name.values())
        if (using_depends or task.get("dependencies")) and tname[0].isdigit():
            raise SpecError(f"templates.{dag}.tasks.{tname} name cannot begin with a digit when using either "
                            "'depends' or 'dependencies'")
        if using_depends and task.get("dependencies"):
            raise SpecError(f"templates.{dag} cannot use both 'depends' and 'dependencies' in the same DAG template")
        if using_depends and task.get("continueOn"):
            raise SpecError(f"templates.{dag} cannot use 'continueOn' when using 'depends'. "
                            "Instead use 'dep-task.Failed'/'dep-task.Errored'")
        for unsupported in ("templateRef", "inline", "hooks", "onExit", "withSequence"):
            if unsupported in task:
                raise NotModelled(f"task {tname}: `{unsupported}`")
        try:
            resolved = self._holder(task.get("template", ""))
        except SpecError as e:
            raise SpecError(f"templates.{dag}.tasks.{tname} {e}") from None
        self._add_outputs(scope, tname, resolved, aggregate=bool(task.get("withItems") or task.get("withParam")))
        for m in re.finditer(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)", task.get("depends", "")):
            dep, result = m.group(1).split(".", 1)
            if result not in _TASK_RESULTS:  # ancestry.go ValidateTaskResults
                raise SpecError(f"templates.{dag}.tasks.{tname} task result '{result}' for task '{dep}' is invalid")
        for dep, kind in deps[tname].items():
            if dep not in by_name:
                # Argo's message names no task here: validateDAG shadows `task` with the failed lookup.
                raise SpecError(f"templates.{dag}.tasks. dependency '{dep}' not defined")
            dep_task = by_name[dep]
            if kind == "items" and not (dep_task.get("withItems") or dep_task.get("withParam")):
                raise SpecError(f"templates.{dag}.tasks.{tname} dependency '{dep}' uses an items-based condition "
                                "such as .AnySucceeded or .AllFailed but does not contain any items")

    def _dag_task_variables(self, dag: str, task: dict, by_name: dict, deps: dict, scope: set) -> None:
        """validate.go validateDAG, second loop: every reference in the task resolves; tasks.* are ancestors."""
        tname = task["name"]
        task_scope = set(scope)
        ancestry = _ancestry(tname, deps)
        task_scope |= {f"tasks.{a}.status" for a in ancestry}
        any_item = bool(task.get("withParam"))
        for item in task.get("withItems") or []:
            if isinstance(item, dict):
                task_scope |= {f"item.{k}" for k in item}
            else:
                task_scope.add("item")
        try:
            _resolve_all_variables(task, task_scope, any_item)
        except SpecError as e:
            raise SpecError(f"templates.{dag}.tasks.{tname} {e}") from None
        self._arguments(f"templates.{dag}.tasks.{tname}.arguments.", task.get("arguments", {}) or {})
        for p in (task.get("arguments") or {}).get("parameters", []):  # validateDAGTaskArgumentDependency
            value = _text(p.get("value", ""))
            if value.startswith("{{tasks."):
                ref = value.split(".")[1]
                if ref not in ancestry:
                    raise SpecError(f"templates.{dag}.tasks.{tname} missing dependency '{ref}' for parameter '{p['name']}'")

    @staticmethod
    def _add_outputs(scope: set, task: str, tmpl: dict, aggregate: bool) -> None:
        """validate.go addOutputsToScope."""
        ref = f"tasks.{task}"
        scope |= {f"{ref}.id", f"{ref}.startedAt", f"{ref}.finishedAt", f"{ref}.hostNodeName"}
        if "container" in tmpl or "script" in tmpl:
            scope |= {f"{ref}.outputs.result", f"{ref}.exitCode"}
        outputs = tmpl.get("outputs", {}) or {}
        scope |= {f"{ref}.outputs.parameters.{p['name']}" for p in outputs.get("parameters", [])}
        scope |= {f"{ref}.outputs.artifacts.{a['name']}" for a in outputs.get("artifacts", [])}
        if aggregate:
            scope.add(f"{ref}.outputs.parameters")


def validate(spec: dict, metadata: dict | None = None) -> None:
    """Raise SpecError as the controller's validation would (validate.go Workflow)."""
    _Validator(spec, metadata or {}).run()


# --- merging a WorkflowTemplate (workflow/util/merge.go) ----------------------------------------------

# workflow_types.go: the patchMergeKey of WorkflowSpec's and Arguments' lists (other lists are replaced)
_MERGE_KEYS = {("templates",): "name", ("arguments", "parameters"): "name", ("arguments", "artifacts"): "name",
               ("volumes",): "name", ("tolerations",): "key", ("imagePullSecrets",): "name", ("hostAliases",): "ip"}


def _strategic_merge(base, patch, path: tuple = (), keys: dict | None = None):
    """Kubernetes' strategic merge patch, as far as WorkflowSpec (or, with _POD_MERGE_KEYS, a PodSpec) needs it:
    patch wins, lists merge by key."""
    keys = _MERGE_KEYS if keys is None else keys
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _strategic_merge(out[key], value, path + (key,), keys) if key in out else copy.deepcopy(value)
        return out
    merge_key = keys.get(path)
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        out = copy.deepcopy(base)
        index = {item.get(merge_key): i for i, item in enumerate(out)}
        for item in patch:
            if item.get(merge_key) in index:
                i = index[item[merge_key]]
                out[i] = _strategic_merge(out[i], item, (), keys)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def join_workflow_spec(workflow_spec: dict, template_spec: dict) -> dict:
    """merge.go JoinWorkflowSpec: the Workflow's spec over the WorkflowTemplate's; its parameters win whole."""
    merged = _strategic_merge(template_spec, workflow_spec)
    own = {p["name"]: p for p in workflow_spec.get("arguments", {}).get("parameters", []) if "value" in p or "valueFrom" in p}
    for i, p in enumerate(merged.get("arguments", {}).get("parameters", [])):
        if p.get("name") in own:
            merged["arguments"]["parameters"][i] = copy.deepcopy(own[p["name"]])
    return merged


# --- artifact repositories (workflow/artifactrepositories/artifactrepositories.go) ----------------------


def resolve_artifact_repository(ref: dict | None, namespace: str, cluster: Cluster) -> tuple[dict, dict | None]:
    """artifactrepositories.go Resolve: (status.artifactRepositoryRef, the repository) of a workflow.

    With a ref: that ConfigMap and key, in the workflow's namespace, then the controller's; no fallback.
    Without: the namespace's `artifact-repositories` ConfigMap under its default-key annotation, then the
    controller's default repository (which may be none).
    """
    if ref is not None:
        places = [{"namespace": namespace, "configMap": ref.get("configMap", ""), "key": ref.get("key", "")},
                  {"namespace": cluster.controller_namespace, "configMap": ref.get("configMap", ""), "key": ref.get("key", "")}]
    else:
        places = [{"namespace": namespace, "configMap": "", "key": ""}, {"default": True}]
    for place in places:
        if place.get("default"):
            return {"default": True}, cluster.default_artifact_repository
        found = _repository_in_configmap(cluster, place)
        if found is not None:
            return found
    raise ArgoError(f'failed to find any artifact repository for artifact repository ref "{ref}"')


def _repository_in_configmap(cluster: Cluster, place: dict) -> tuple[dict, dict] | None:
    """artifactrepositories.go get: a missing ConfigMap or key means "look further" (None)."""
    name = place["configMap"] or "artifact-repositories"
    cm = cluster.configmap(place["namespace"], name)
    if cm is None:
        return None
    key = place["key"] or (cm.get("metadata", {}).get("annotations") or {}).get(DEFAULT_REPO_KEY, "")
    data = cm.get("data") or {}
    if key not in data:
        return None
    try:
        repo = yaml.safe_load(data[key]) or {}
    except yaml.YAMLError as e:
        raise ArgoError(f'failed to unmarshall config map key "{key}": {e}') from None
    return {"namespace": place["namespace"], "configMap": name, "key": key}, repo


def archive_location(repo: dict | None) -> dict | None:
    """artifact_repository_types.go ToArtifactLocation: the repository's bucket, key = its keyFormat.

    The controller's default repository is never nil (controller/config.go passes its config's struct),
    so a workflow without one gets a location of no kind: saving to it fails as "not configured".
    """
    if repo is None:
        return None
    location: dict = {"archiveLogs": bool(repo.get("archiveLogs"))}
    if "s3" in repo:
        s3 = {k: v for k, v in repo["s3"].items() if k not in ("keyFormat", "keyPrefix")}
        s3["key"] = repo["s3"].get("keyFormat") or posixpath.join(repo["s3"].get("keyPrefix", ""), DEFAULT_ARCHIVE_PATTERN)
        location["s3"] = s3
    elif repo:
        raise NotModelled(f"artifact repository kinds other than s3: {sorted(repo)}")
    return location


def s3_endpoint_error(endpoint: str) -> str | None:
    """Why the executor's S3 client would refuse this endpoint, or None.

    workflow/artifacts/s3/s3.go (ArtifactDriver.newClient -> NewClient) hands the endpoint to minio-go's
    New, whose getEndpointURL wants host[:port] with a valid IP or domain: an empty endpoint, or one with a
    scheme, fails there.
    """
    host = endpoint
    if ":" in endpoint:
        host, _, _port = endpoint.rpartition(":")
        if ":" in host:
            return f"address {endpoint}: too many colons in address"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    host = host.strip()
    valid = (0 < len(host) <= 255 and host[0] not in "-_." and host[-1] not in "-_"
             and not any(c in host for c in "`~!@#$%^&*()+={}[]|\\\"';:><?/"))
    return None if valid else f"Endpoint: {endpoint} does not follow ip address or domain name standards."


# --- running a pod -----------------------------------------------------------------------------------


class _PodNotCreated(Exception):
    """The controller could not make the pod (workflowpod.go createWorkflowPod errs): the node is Error."""


# Kubernetes' strategic merge keys of the PodSpec fields a pod spec patch here touches; other lists are replaced
# (tolerations, for one, has no merge key: a patch's list replaces the pod's).
# Paths start again inside each list item, as in _MERGE_KEYS.
_POD_MERGE_KEYS = {("containers",): "name", ("initContainers",): "name", ("volumes",): "name", ("env",): "name",
                   ("volumeMounts",): "mountPath"}
_QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?$")


def _check_pod_spec(patch, text: str) -> None:
    """util.go ApplyPodSpecPatch: the patch must unmarshal as a PodSpec; quantities must parse there."""
    if not isinstance(patch, dict):
        raise _PodNotCreated(f"invalid podSpecPatch {text!r}: cannot unmarshal into a PodSpec")
    for c in patch.get("containers") or []:
        for kind in ("requests", "limits"):
            for name, q in ((c.get("resources") or {}).get(kind) or {}).items():
                if not _QUANTITY.match(str(q)):
                    raise _PodNotCreated(f"invalid podSpecPatch {text!r}: quantities must match the regular expression "
                                         f"(resources.{kind}.{name}: {q!r})")
    for key, kind in (("nodeSelector", dict), ("tolerations", list)):
        if key in patch and not isinstance(patch[key], kind):
            raise _PodNotCreated(f"invalid podSpecPatch {text!r}: {key} has the wrong type")


class _PodStuck(Exception):
    """The kubelet cannot start the pod: it stays Pending with this reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass
class _PodRun:
    exit_code: int
    log: str
    preempted: Preempt | None


class _Pod:
    """One pod of a container template: volumes, env, the process, and what the executor saves after."""

    def __init__(self, op: "_Operation", node: Node, tmpl: dict, attempt: int):
        self.op, self.node, self.tmpl, self.attempt = op, node, tmpl, attempt
        self.root = op.workdir / node.pod_name
        self.mounts: dict[str, Path] = {}  # container path -> host folder
        self.errors: list[str] = []  # the wait container's errors (executor.go AddError)

    def run(self) -> None:
        """Create the pod, run its main container, then do what the wait container does."""
        self.tmpl = self._patched(self.tmpl)
        location = self._archive_location()
        self._check_secret_volumes(location)  # raises _PodStuck before anything runs
        container = self.tmpl["container"]
        self._volumes()
        env = self._env(container)
        argv = [self._map(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise NotModelled(f"template {self.tmpl['name']}: no command (the image's entrypoint is unknown here)")
        self.node.command = argv
        if argv[0] in ("python", "python3"):
            argv = [sys.executable] + argv[1:]
        run = self._process(argv, env)
        self.node.log = run.log
        self.node.exit_code = str(run.exit_code)
        if run.preempted is not None:
            # The node goes away with the pod: no wait container saves outputs (operator.go inferFailedReason
            # takes the pod's status message, phase Failed).
            self.node.phase, self.node.message = "Failed", run.preempted.message
            return
        self._save_parameters()
        self._save_artifacts(location)
        self._save_logs(location)
        self.node.phase, self.node.message = self._phase(run.exit_code)

    def _phase(self, exit_code: int) -> tuple[str, str]:
        """operator.go inferFailedReason: main's failure first (Failed), then the wait container's (Error)."""
        if exit_code != 0:
            return "Failed", f"main: Error (exit code {exit_code})"
        if self.errors:
            return "Error", f"wait: Error (exit code 1): {self.errors[0]}"
        return "Succeeded", ""

    # -- pod creation (workflow/controller/workflowpod.go) --

    def _patched(self, tmpl: dict) -> dict:
        """workflowpod.go processPodSpecPatch: the workflow's pod spec patch, then the template's, each substituted
        with the globals and pod.name, checked as a PodSpec and merged over the pod (ApplyPodSpecPatch)."""
        texts = [t for t in (self.op.spec.get("podSpecPatch"), tmpl.get("podSpecPatch")) if t]
        pod = {"containers": [{"name": "main", **tmpl["container"]}], "volumes": tmpl.get("volumes") or []}
        for key in ("nodeSelector", "tolerations"):
            if key in tmpl:
                pod[key] = tmpl[key]
        if "securityContext" in self.op.spec:
            pod["securityContext"] = self.op.spec["securityContext"]
        # The legacy (default) pod layout adds an `init` container and a `wait` container before the main one
        # (workflowpod.go createWorkflowPod; workflowpod_layout.go legacyLayout), both from newExecContainer: the
        # executor image with the controller ConfigMap's executor securityContext and resources, nothing else.
        # The pod spec patches are applied after, to the whole pod (processPodSpecPatch, ApplyPodSpecPatch).
        full = copy.deepcopy(pod)
        full["initContainers"] = [self._executor_container("init")]
        full["containers"] = [self._executor_container("wait")] + full["containers"]
        for text in texts:
            text = replace_tags(text, {**self.op.globals, "pod.name": self.node.pod_name})
            try:
                patch = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise _PodNotCreated(f"Failed to convert the PodSpecPatch yaml to json: {e}".splitlines()[0]) from None
            _check_pod_spec(patch, text)
            pod = _strategic_merge(pod, patch, keys=_POD_MERGE_KEYS)
            full = _strategic_merge(full, patch, keys=_POD_MERGE_KEYS)
        self.node.pod = full
        out = dict(tmpl)
        main = next(c for c in pod["containers"] if c["name"] == "main")
        out["container"] = {k: v for k, v in main.items() if k != "name"}
        out["volumes"] = pod.get("volumes") or []
        for key in ("nodeSelector", "tolerations"):
            if key in pod:
                out[key] = pod[key]
        self.node.pod_spec = pod
        return out

    def _executor_container(self, name: str) -> dict:
        """workflowpod.go newExecContainer: Argo's own container `init` or `wait` (argoexec)."""
        executor = self.op.cluster.executor
        container = {"name": name, "image": EXECUTOR_IMAGE, "command": ["argoexec", name]}
        for key in ("securityContext", "resources", "args"):
            if executor.get(key):
                container[key] = copy.deepcopy(executor[key])
        return container

    def _archive_location(self) -> dict | None:
        """workflowpod.go addArchiveLocation: the repository's location when an artifact or the log needs one.

        Its key (the keyFormat) is substituted with the pod's parameters (substitutePodParams): globals,
        inputs and pod.name.
        """
        if (self.tmpl.get("archiveLocation") or {}).get("s3", {}).get("bucket"):
            return self.tmpl["archiveLocation"]  # set explicitly in the template: nothing else to do
        artifacts = (self.tmpl.get("outputs", {}) or {}).get("artifacts", [])
        need = self.op.archive_logs(self.tmpl) or any(not _s3_has_location(a) for a in artifacts)
        if not need:
            return None
        location = archive_location(self.op.repository)
        if location is None:
            return None
        location["archiveLogs"] = self.op.archive_logs(self.tmpl)
        params = {**self.op.globals, **{f"inputs.parameters.{k}": v for k, v in self.node.inputs.items()},
                  "pod.name": self.node.pod_name}
        return substitute(location, params)

    def _check_secret_volumes(self, location: dict | None) -> None:
        """workflowpod.go createSecretVolumesAndMounts: the key Secrets of the archive location and of each
        artifact become required secret volumes; a missing Secret or key leaves the pod ContainerCreating."""
        locations = [location] + [a for a in (self.tmpl.get("outputs", {}) or {}).get("artifacts", [])]
        for loc in filter(None, locations):
            s3 = loc.get("s3") or {}
            for field_name in ("accessKeySecret", "secretKeySecret", "sessionTokenSecret"):
                ref = s3.get(field_name) or {}
                if not ref.get("name") or not ref.get("key"):
                    continue
                secret = self.op.cluster.secrets.get(ref["name"])
                if secret is None:
                    raise _PodStuck("ContainerCreating", f'MountVolume.SetUp failed for volume "{ref["name"]}" : '
                                    f'secret "{ref["name"]}" not found')
                if ref["key"] not in secret:
                    raise _PodStuck("ContainerCreating", f'MountVolume.SetUp failed for volume "{ref["name"]}" : '
                                    f'references non-existent secret key: {ref["key"]}')

    def _volumes(self) -> None:
        """Each emptyDir the container mounts becomes a fresh folder of this pod."""
        volumes = {v["name"]: v for v in self.tmpl.get("volumes", []) or []}
        for m in self.tmpl["container"].get("volumeMounts", []) or []:
            volume = volumes.get(m["name"]) or {}
            if "emptyDir" not in volume:
                continue  # secrets, PVCs and the like: not modelled; their paths stay the host's
            if m["mountPath"] == "/dev/shm":
                continue  # the host's shared memory serves the same purpose
            folder = self.root / "volumes" / m["name"]
            folder.mkdir(parents=True, exist_ok=True)
            self.mounts[m["mountPath"].rstrip("/")] = folder

    def _map(self, text: str) -> str:
        """A container path on an emptyDir mount -> the host folder that stands for it."""
        for mount, folder in self.mounts.items():
            if text == mount or text.startswith(mount + "/"):
                return str(folder) + text[len(mount):]
        return text

    def _env(self, container: dict) -> dict:
        """The container's environment: image ENV, then envFrom, then env (Kubernetes' order of precedence)."""
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
        if self.op.cluster.image_env:
            env.update(self.op.cluster.image_env(container.get("image", "")))
        for source in container.get("envFrom", []) or []:
            env.update(self._env_from(source))
        for var in container.get("env", []) or []:
            value = self._env_value(var)
            if value is not None:
                env[var["name"]] = value
        env = {k: self._map(v) for k, v in env.items()}
        if "/tmp" in self.mounts:
            env["TMPDIR"] = str(self.mounts["/tmp"])  # see the module docstring: where tempfile writes in the pod
        return env

    def _env_from(self, source: dict) -> dict:
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = self.op.cluster.configmap(self.op.namespace, ref.get("name", ""))
            secret = None if cm is None else cm.get("data") or {}
            kind = "configmap"
        elif "secretRef" in source:
            ref = source["secretRef"]
            secret = self.op.cluster.secrets.get(ref.get("name", ""))
            kind = "secret"
        else:
            raise NotModelled(f"envFrom {sorted(source)}: only secretRef and configMapRef are modelled")
        if secret is None:
            if ref.get("optional"):
                return {}
            raise _PodStuck("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
        prefix = source.get("prefix", "")
        # Keys that are not valid variable names are skipped by the kubelet.
        return {prefix + k: str(v) for k, v in secret.items() if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", prefix + k)}

    def _env_value(self, var: dict) -> str | None:
        if "valueFrom" not in var:
            return _text(var.get("value", ""))
        ref = var["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise NotModelled(f"env {var['name']}: valueFrom {sorted(var['valueFrom'])}")
        secret = self.op.cluster.secrets.get(ref.get("name", ""))
        if secret is None or ref.get("key") not in secret:
            if ref.get("optional"):
                return None
            why = (f'secret "{ref.get("name")}" not found' if secret is None
                   else f"couldn't find key {ref.get('key')} in Secret {self.op.namespace}/{ref.get('name')}")
            raise _PodStuck("CreateContainerConfigError", why)
        return str(secret[ref["key"]])

    # -- the main container --

    def _process(self, argv: list, env: dict) -> _PodRun:
        """Run the command; a matching Preempt kills it from outside once its predicate fires."""
        rule = self.op.preemption_for(self.node, self.tmpl["name"], self.attempt)
        view = PodView(self.node.pod_name, self.node.name, self.tmpl["name"], self.attempt, list(argv), dict(env))
        workdir = self.root / "workdir"  # the image's WORKDIR stands empty here
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        lines: list[str] = []
        failures: list[BaseException] = []  # a predicate that raised: reported once the pod is done
        kill_sent = threading.Event()

        def watch() -> None:
            for line in proc.stdout:
                lines.append(line)
                if rule is None or kill_sent.is_set() or failures:
                    continue
                try:
                    fire = rule.when(line, view)
                except BaseException as e:
                    failures.append(e)
                    continue
                if fire and proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                        kill_sent.set()
                    except ProcessLookupError:
                        pass  # it ended meanwhile: not preempted

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=self.op.pod_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"pod {self.node.pod_name} ran past the harness' {self.op.pod_timeout_s}s limit") from None
        finally:
            reader.join(timeout=60)
        if failures:
            raise RuntimeError(f"the preemption rule for {self.node.pod_name} failed") from failures[0]
        preempted = kill_sent.is_set() and code == -signal.SIGKILL
        if preempted:
            rule.fired.append(self.node.pod_name)
        exit_code = 128 - code if code < 0 else code  # a signal shows as 128 + its number, as a runtime reports it
        return _PodRun(exit_code, "".join(lines), rule if preempted else None)

    # -- the wait container (workflow/executor/executor.go) --

    def _host_path(self, container_path: str) -> Path:
        mapped = self._map(container_path)
        if mapped == container_path:
            raise NotModelled(f"{container_path}: not on an emptyDir volume; the harness cannot read an image's filesystem")
        return Path(mapped)

    def _save_parameters(self) -> None:
        """executor.go SaveParameters: valueFrom.path, or its default when the file is missing."""
        for p in (self.tmpl.get("outputs", {}) or {}).get("parameters", []):
            source = p.get("valueFrom")
            if source is None:
                self.node.outputs[p["name"]] = _text(p.get("value", ""))
                continue
            if not source.get("path"):
                raise NotModelled(f"output parameter {p['name']}: valueFrom {sorted(source)}")
            try:
                value = self._host_path(source["path"]).read_text()
            except (FileNotFoundError, IsADirectoryError):
                if "default" not in source:
                    self.errors.append(f"open {source['path']}: no such file or directory")
                    continue
                value = _text(source["default"])
            self.node.outputs[p["name"]] = value[:-1] if value.endswith("\n") else value  # one newline trimmed

    def _save_artifacts(self, location: dict | None) -> None:
        """executor.go SaveArtifacts / saveArtifact: stage each file, skip optional ones that are missing."""
        for art in (self.tmpl.get("outputs", {}) or {}).get("artifacts", []):
            try:
                staged = self._stage(art)
                if staged is None:
                    continue  # optional and missing: ignored, not saved
                self._save_file(art, *staged, location)
            except ArgoError as e:
                self.errors.append(str(e))

    def _stage(self, art: dict) -> tuple[str, Path] | None:
        """executor.go stageArchiveFile: (file name, local file); `archive: none` keeps the file as it is,
        the default packs it as <name>.tgz."""
        source = self._host_path(art["path"])
        if not source.exists():
            if art.get("optional"):
                return None
            raise ArgoError(f"{art['path']} no such file or directory")
        archive = art.get("archive") or {"tar": {}}
        if "none" in archive:
            return posixpath.basename(art["path"]), source
        if "tar" not in archive:
            raise NotModelled(f"artifact {art['name']}: archive {sorted(archive)}")
        packed = self.root / "outputs" / f"{art['name']}.tgz"
        packed.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(packed, "w:gz") as tar:
            tar.add(source, arcname=source.name)
        return packed.name, packed

    def _save_file(self, art: dict, file_name: str, local: Path, location: dict | None) -> None:
        """executor.go saveArtifactFromFile: an artifact with no key goes to <location key>/<file name>; then
        Relocate fills what the artifact lacks from the archive location."""
        s3 = dict(art.get("s3") or {})
        if not s3.get("key"):
            if location is None:
                raise ArgoError("key unsupported: cannot get key for artifact location, because it is invalid")
            s3["key"] = posixpath.join(_location_s3(location)["key"], file_name)
        if not _s3_has_location({"s3": s3}):  # workflow_types.go Relocate: the location's, with this key
            if location is None:
                raise ArgoError("template artifact location not set")
            s3 = {**_location_s3(location), "key": s3["key"]}
        self._upload(s3, local)
        saved = SavedArtifact(self.node.name, art["name"], s3["bucket"], s3["key"], s3.get("endpoint", ""))
        self.node.artifacts.append(saved)

    def _save_logs(self, location: dict | None) -> None:
        """executor.go SaveLogs: with archiveLogs, the main container's log goes to <location key>/main.log."""
        if not location or not location.get("archiveLogs"):
            return
        log = self.root / "outputs" / "main.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(self.node.log)
        try:
            self._save_file({"name": "main-logs"}, "main.log", log, location)
        except ArgoError as e:
            self.errors.append(str(e))

    def _upload(self, s3: dict, local: Path) -> None:
        """The S3 driver (workflow/artifacts/s3/s3.go Save): a client for the endpoint, then the upload."""
        why = s3_endpoint_error(s3.get("endpoint", ""))
        if why:
            raise ArgoError(f"failed to create new S3 client: {why}")
        creds = self.op.s3_credentials(s3)
        import boto3
        from botocore.config import Config

        scheme = "http" if s3.get("insecure") else "https"
        client = boto3.client("s3", endpoint_url=f"{scheme}://{s3['endpoint']}", region_name=s3.get("region") or "us-east-1",
                              config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
                              aws_access_key_id=creds[0], aws_secret_access_key=creds[1])
        try:
            client.upload_file(str(local), s3["bucket"], s3["key"])
        except Exception as e:  # any driver failure fails the wait container with its text
            raise ArgoError(f"failed to put file: {e}") from None


def _location_s3(location: dict) -> dict:
    """workflow_types.go ArtifactLocation.Get: a location of no kind is storage not configured."""
    if "s3" not in location:
        raise ArgoError("artifact storage is not configured; see the docs for setup instructions: "
                        "https://argo-workflows.readthedocs.io/en/latest/configure-artifact-repository/")
    return location["s3"]


def _s3_has_location(art: dict) -> bool:
    """workflow_types.go S3Artifact.HasLocation: endpoint, bucket and key all set."""
    s3 = art.get("s3") or {}
    return bool(s3.get("endpoint") and s3.get("bucket") and s3.get("key"))


# --- the controller (workflow/controller/operator.go, dag.go) ------------------------------------------


class _Requeue(Exception):
    """operator.go ErrRequeue: the task waits for something (a missing variable); tried again next pass."""


def _generate_name(prefix: str) -> str:
    """apimachinery's names.SimpleNameGenerator: generateName + 5 characters of its alphabet."""
    return prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class _Dag:
    """dag.go dagContext: the tasks of one DAG template, their dependencies and `depends` logic."""

    def __init__(self, boundary: Node, tmpl: dict):
        self.boundary, self.tmpl = boundary, tmpl
        self.tasks = {t["name"]: t for t in tmpl["dag"]["tasks"]}
        parsed = {name: _task_dependencies(t, self.tasks) for name, t in self.tasks.items()}
        self.deps = {name: list(d) for name, (d, _) in parsed.items()}
        self.logic = {name: logic for name, (_, logic) in parsed.items()}
        self.visited: set = set()

    def node_name(self, task: str) -> str:  # dag.go taskNodeName
        return f"{self.boundary.name}.{task}"

    def targets(self) -> list[str]:
        """dag.go executeDAG: `target` split on spaces, or else the leaf tasks (findLeafTaskNames)."""
        if self.tmpl["dag"].get("target"):
            return self.tmpl["dag"]["target"].split(" ")
        depended = {d for deps in self.deps.values() for d in deps}
        return sorted(t for t in self.tasks if t not in depended)


class _Operation:
    """operator.go wfOperationCtx: one workflow, operated until it finishes."""

    def __init__(self, manifest: dict, cluster: Cluster, workdir: Path, preempt: Iterable[Preempt], pod_timeout_s: float):
        self.wf = copy.deepcopy(manifest)
        self.cluster, self.workdir, self.pod_timeout_s = cluster, Path(workdir), pod_timeout_s
        self.preempt = list(preempt)
        meta = self.wf.setdefault("metadata", {})
        self.name = meta.get("name") or _generate_name(meta.get("generateName", "workflow-"))
        self.namespace = meta.get("namespace") or cluster.namespace
        self.uid = str(uuid.uuid4())
        self.created = time.time()
        self.skew = 0.0  # seconds the virtual clock is ahead: backoffs are recorded, not slept
        self.nodes: dict[str, Node] = {}
        self.metrics: list[Metric] = []
        self.metric_errors: list[str] = []
        self.repository: dict | None = None
        self.repository_ref: dict | None = None
        self.spec: dict = {}
        self.globals: dict = {}
        self.requeued: list[str] = []

    def now(self) -> float:
        return time.time() + self.skew

    # -- the workflow --

    def run(self) -> WorkflowResult:
        """operator.go operate, repeated until the entrypoint's node is fulfilled."""
        try:
            self.spec = self._exec_spec()
        except ArgoError as e:
            return self._result("Error", str(e))
        try:
            validate(self.spec, self.wf["metadata"])
        except SpecError as e:
            return self._result("Failed", f"invalid spec: {e}")  # operator.go setExecWorkflow
        check_spec_fields(self.spec)
        try:
            self.globals = self._global_params()
        except ArgoError as e:
            # operator.go setExecWorkflow: an error of setGlobalParameters marks the workflow Failed, before any node
            return self._result("Failed", f"failed to set global parameters: {e}")
        try:
            self.repository_ref, self.repository = resolve_artifact_repository(
                self.spec.get("artifactRepositoryRef"), self.namespace, self.cluster)
        except ArgoError as e:
            return self._result("Error", f"failed to resolve artifact repository: {e}")
        entry = self.spec["entrypoint"]
        while True:
            before = self._snapshot()
            self.requeued.clear()
            node, _ = self._execute_template(self.name, {"template": entry}, self.spec.get("arguments", {}), "")
            if node.fulfilled:
                break
            if self._snapshot() == before:
                reasons = [f"{n.name}: {n.message}" for n in self.nodes.values() if n.stuck] + self.requeued
                result = self._result("Running", "")
                raise WorkflowStuck("workflow cannot finish: " + "; ".join(reasons or ["no progress"]), result)
        # operator.go operate: the workflow's phase is its entrypoint node's (Skipped/Omitted count as Succeeded)
        phase = {"Failed": "Failed", "Error": "Error"}.get(node.phase, "Succeeded")
        return self._result(phase, node.message)

    def _snapshot(self) -> tuple:
        return tuple((n.name, n.phase, len(n.children)) for n in self.nodes.values())

    def _result(self, phase: str, message: str) -> WorkflowResult:
        artifacts = [a for n in self.nodes.values() for a in n.artifacts]
        return WorkflowResult(self.name, self.namespace, phase, message, self.nodes, artifacts, self.metrics,
                              self.metric_errors, self.repository_ref, self.spec)

    def _exec_spec(self) -> dict:
        """operator.go setExecWorkflow / setStoredWfSpec: a workflowTemplateRef is merged under the Workflow."""
        spec = self.wf.get("spec", {})
        ref = spec.get("workflowTemplateRef")
        if not ref:
            return copy.deepcopy(spec)
        if ref.get("clusterScope"):
            raise NotModelled("ClusterWorkflowTemplate references")
        template = self.cluster.workflow_template(self.namespace, ref.get("name", ""))
        if template is None:
            raise ArgoError(f'workflowtemplates.argoproj.io "{ref.get("name")}" not found')
        return join_workflow_spec(spec, template.get("spec", {}))

    def _configmap_parameter(self, p: dict) -> str:
        """operator.go setGlobalParameters with common/configmap.go GetConfigMapValue: the key of a ConfigMap that
        carries the configmap-type: Parameter label; on any failure the default if there is one, else an error."""
        ref, default = p["valueFrom"]["configMapKeyRef"], p["valueFrom"].get("default")
        cm = self.cluster.configmap(self.namespace, ref.get("name", ""))
        labels = ((cm or {}).get("metadata") or {}).get("labels") or {}
        if cm is None:
            why = f"ConfigMap '{ref.get('name')}' does not exist"
        elif labels.get("workflows.argoproj.io/configmap-type") != "Parameter":
            why = f"ConfigMap '{ref.get('name')}' needs to have the label workflows.argoproj.io/configmap-type: Parameter"
        elif ref.get("key") not in (cm.get("data") or {}):
            why = f"ConfigMap '{ref.get('name')}' does not have the key '{ref.get('key')}'"
        else:
            return _text(cm["data"][ref["key"]])
        if default is None:
            raise ArgoError(f"failed to set global parameter {p['name']} from configmap with name {ref.get('name')} "
                            f"and key {ref.get('key')}: {why}")
        return _text(default)

    def _global_params(self) -> dict:
        """operator.go setGlobalParameters (and setGlobalRuntimeParameters for status and duration)."""
        params = self.spec.get("arguments", {}).get("parameters", [])
        meta = self.wf["metadata"]
        g = {
            "workflow.name": self.name, "workflow.namespace": self.namespace, "workflow.uid": self.uid,
            "workflow.mainEntrypoint": self.spec.get("entrypoint", ""),
            "workflow.serviceAccountName": self.spec.get("serviceAccountName", ""),
            "workflow.creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "workflow.status": "Running", "workflow.duration": "0.000000",
        }
        g["workflow.parameters"] = g["workflow.parameters.json"] = json.dumps(params, separators=(",", ":"))
        for p in params:
            if "value" in p:
                g[f"workflow.parameters.{p['name']}"] = _text(p["value"])
            elif (p.get("valueFrom") or {}).get("configMapKeyRef"):
                g[f"workflow.parameters.{p['name']}"] = self._configmap_parameter(p)
            elif set(p.get("valueFrom") or {}) - {"supplied", "default"}:
                raise NotModelled(f"workflow parameter {p['name']}: valueFrom {sorted(p['valueFrom'])}")
            else:
                # A parameter with no value (valueFrom.supplied that nobody supplied) passes validation, then
                # fails here: setGlobalParameters' default case; its default is read only with a configMapKeyRef.
                raise ArgoError(f"either value or valueFrom must be specified in order to set global parameter {p['name']}")
        for kind in ("annotations", "labels"):
            values = meta.get(kind) or {}
            g[f"workflow.{kind}"] = g[f"workflow.{kind}.json"] = json.dumps(values, separators=(",", ":"))
            g.update({f"workflow.{kind}.{k}": _text(v) for k, v in values.items()})
        return g

    def archive_logs(self, tmpl: dict) -> bool:
        """workflowpod.go IsArchiveLogs: the repository's archiveLogs, else the workflow's, else the template's."""
        if self.repository and self.repository.get("archiveLogs"):
            return True
        archive = bool(self.spec.get("archiveLogs", False))
        template_flag = (tmpl.get("archiveLocation") or {}).get("archiveLogs")
        return bool(template_flag) if template_flag is not None else archive

    def s3_credentials(self, s3: dict) -> tuple[str, str]:
        """s3.go GetCredentials: the key Secrets (mounted into the pod), else the pod's cloud identity."""
        if (s3.get("accessKeySecret") or {}).get("name"):
            a, b = s3["accessKeySecret"], s3.get("secretKeySecret") or {}
            return self.cluster.secrets[a["name"]][a["key"]], self.cluster.secrets[b["name"]][b["key"]]
        if s3.get("useSDKCreds"):
            creds = self.cluster.cloud_credentials
            if not creds:
                raise ArgoError("failed to put file: no cloud identity credentials for useSDKCreds (Cluster.cloud_credentials)")
            return creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]
        raise NotModelled("S3 with neither key Secrets nor useSDKCreds (the node's IAM role)")

    def preemption_for(self, node: Node, template: str, attempt: int) -> Preempt | None:
        for rule in self.preempt:
            if rule.template == template and rule.attempt == attempt and rule.node in node.name and not rule.fired:
                return rule
        return None

    # -- nodes --

    def _init_node(self, name: str, type_: str, template: str, boundary: str, phase: str, message: str = "") -> Node:
        """operator.go initializeNode: the display name is the name less its boundary's, and a leading '.'."""
        if name in self.nodes:
            raise RuntimeError(f"node {name} already initialized")
        display = name
        if boundary and name.startswith(boundary):
            display = _STEPS_OR_DAG_SEPARATOR.sub("", name[len(boundary):])
        node = Node(name, type_, template, boundary, display, phase, message, started=self.now())
        if node.fulfilled:
            node.finished = node.started
        self.nodes[name] = node
        return node

    def _mark(self, node: Node, phase: str, message: str | None = None) -> Node:
        """operator.go markNodePhase."""
        node.phase = phase
        if message is not None:
            node.message = message
        if node.fulfilled and not node.finished:
            node.finished = self.now()
        return node

    def _error_node(self, node: Node | None, name: str, holder: dict, boundary: str, err: Exception) -> Node:
        """operator.go initializeNodeOrMarkError: a new node of type Skipped in Error, or the node marked Error."""
        if node is not None:
            return self._mark(node, "Error", str(err))
        return self._init_node(name, "Skipped", holder.get("template", ""), boundary, "Error", str(err))

    def _add_child(self, parent: str, child: str) -> None:
        """operator.go addChildNode."""
        children = self.nodes[parent].children
        if child not in children:
            children.append(child)

    def _template(self, name: str) -> dict:
        for t in self.spec.get("templates", []):
            if t.get("name") == name:
                for kind in _UNSUPPORTED_TEMPLATE_KINDS:
                    if kind in t:
                        raise NotModelled(f"template {name}: {kind} templates")
                return t
        raise ArgoError(f"template {name} not found")

    # -- executeTemplate --

    def _execute_template(self, name: str, holder: dict, args: dict, boundary: str) -> tuple[Node, Exception | None]:
        """operator.go executeTemplate: arguments into inputs, the display name rule, retries, then the kind."""
        node = self.nodes.get(name)
        tmpl = self._template(holder["template"])
        retry = tmpl.get("retryStrategy") or self.spec.get("retryStrategy")
        local = {"node.name": name}
        if "container" in tmpl and not retry:
            local["pod.name"] = pod_name(self.name, name, tmpl["name"])
        if boundary:
            local["tasks.name"] = holder.get("name", "")
        try:
            processed = process_args(tmpl, args, self.globals, local)
        except ArgoError as e:
            return self._error_node(node, name, holder, boundary, e), e
        if node is not None and node.fulfilled:
            # Argo re-checks the display name on every reconcile and marks the node Error again; the
            # harness errors a node once, so that a finished node is simply what it is on later passes.
            return node, None
        display = (processed.get("annotations") or {}).get(DISPLAY_NAME_KEY, "")
        if display and not DISPLAY_NAME.match(display):
            # Argo checks once the node exists (its next reconcile), then marks it Error. The harness checks
            # before the pod starts: in Argo the first pod may already be running, but it never counts.
            err = ArgoError(f"displayName must match the regex {DISPLAY_NAME.pattern}")
            return self._error_node(node, name, holder, boundary, err), err
        try:
            if "container" in processed and retry:
                node = self._execute_retry(name, node, holder, processed, retry, boundary)
            elif "container" in processed:
                node = self._execute_container(name, holder, processed, boundary, attempt=0)
            elif retry:
                raise NotModelled(f"template {tmpl['name']}: a retryStrategy on a DAG")
            else:
                node = self._execute_dag(name, node, holder, processed, boundary)
        except ArgoError as e:  # operator.go: a retry decision that fails marks the retry node Error
            return self._mark(self.nodes[name], "Error", str(e)), e
        if display:
            node.display_name = display  # operator.go setNodeDisplayName
        return node, None

    def _execute_container(self, name: str, holder: dict, tmpl: dict, boundary: str, attempt: int,
                           retried: bool = False) -> Node:
        """operator.go executeContainer: a Pod node, and its pod (run to its end here)."""
        node = self.nodes.get(name)
        if node is not None:
            return node  # its pod exists already (a stuck one stays as it is)
        node = self._init_node(name, "Pod", holder.get("template", ""), boundary, "Pending")
        node.retried = retried
        node.inputs = {p["name"]: _text(p.get("value", "")) for p in (tmpl.get("inputs") or {}).get("parameters", [])}
        node.pod_name = pod_name(self.name, name, tmpl["name"])
        self._mark(node, "Running")
        try:
            _Pod(self, node, tmpl, attempt).run()
        except _PodNotCreated as e:
            node.phase, node.message = "Error", str(e)
        except _PodStuck as stuck:
            node.phase, node.message, node.stuck = "Pending", f"{stuck.reason}: {stuck.message}", True
            return node
        node.finished = self.now()
        if not retried:
            self._emit_metrics(tmpl, node)
        return node

    # -- retries --

    def _execute_retry(self, name: str, node: Node | None, holder: dict, tmpl: dict, strategy: dict, boundary: str) -> Node:
        """operator.go executeTemplate with a retryStrategy: a Retry node whose children are the attempts."""
        if node is None:
            node = self._init_node(name, "Retry", holder.get("template", ""), boundary, "Running")
            node.inputs = {p["name"]: _text(p.get("value", "")) for p in (tmpl.get("inputs") or {}).get("parameters", [])}
        while not node.fulfilled:
            self._process_node_retries(node, strategy)  # an ArgoError here marks the retry node Error
            attempts = [self.nodes[c] for c in node.children]
            if node.fulfilled or (attempts and not attempts[-1].fulfilled):
                break  # done, or the last attempt's pod is stuck
            if len(attempts) >= MAX_ATTEMPTS:
                raise RuntimeError(f"{name}: {MAX_ATTEMPTS} attempts and still retrying (a retryStrategy without a limit?)")
            if attempts:
                self._emit_metrics(tmpl, attempts[-1])  # a finished attempt about to be retried
            child = f"{name}({len(attempts)})"
            self._add_child(name, child)
            attempt_tmpl = substitute(tmpl, {**self.globals, **self._retry_locals(child, tmpl, attempts)})
            self._execute_container(child, holder, attempt_tmpl, boundary, attempt=len(attempts), retried=True)
        if node.fulfilled and node.children:
            node.outputs = dict(self.nodes[node.children[-1]].outputs)
            node.exit_code = self.nodes[node.children[-1]].exit_code
            self._emit_metrics(tmpl, node)
        return node

    def _retry_locals(self, child: str, tmpl: dict, attempts: list) -> dict:
        """operator.go executeTemplate: pod.name, retries and lastRetry.* of the attempt about to start."""
        local = {"pod.name": pod_name(self.name, child, tmpl["name"]), "retries": str(len(attempts)),
                 "lastRetry.exitCode": "0", "lastRetry.duration": "0", "lastRetry.status": "", "lastRetry.message": ""}
        if attempts:
            last = attempts[-1]
            local.update({"lastRetry.exitCode": last.exit_code or "0", "lastRetry.status": last.phase,
                          "lastRetry.duration": str(last.finished - last.started), "lastRetry.message": last.message})
        return local

    def _process_node_retries(self, node: Node, strategy: dict) -> None:
        """operator.go processNodeRetries: succeed with the last attempt, or decide whether to try again.

        The backoff comes first (and is waited even when the expression then says no), then the policy,
        the limit and the expression.
        """
        attempts = [self.nodes[c] for c in node.children]
        if not attempts or not attempts[-1].fulfilled:
            return
        last = attempts[-1]
        if not last.failed_or_error:
            node.outputs = dict(last.outputs)
            self._mark(node, "Succeeded")
            return
        limit = strategy.get("limit")
        limit = int(limit) if limit is not None else None
        if strategy.get("backoff") and self._backoff(node, strategy["backoff"], attempts, limit):
            return
        policy = strategy.get("retryPolicy") or ("Always" if strategy.get("expression") else "OnFailure")
        retry_on = {"Always": ("Failed", "Error"), "OnError": ("Error",), "OnFailure": ("Failed",)}.get(policy)
        if retry_on is None:
            raise NotModelled(f"retryPolicy {policy}")
        if last.phase not in retry_on:
            self._mark(node, last.phase, last.message)
            return
        if limit is not None and len(attempts) > limit:
            self._mark(node, last.phase, "No more retries left")
            return
        expression = strategy.get("expression")
        if expression and not evaluate(expression, _nest(self._retry_scope(node))):
            self._mark(node, last.phase, "retryStrategy.expression evaluated to false")

    def _backoff(self, node: Node, backoff: dict, attempts: list, limit: int | None) -> bool:
        """processNodeRetries' backoff: duration * factor^(attempts-1), capped; True when it ends the node."""
        now = self.now()
        deadline = None
        if backoff.get("maxDuration"):
            deadline = attempts[0].started + _duration_s(backoff["maxDuration"])
            if now > deadline:
                self._mark(node, attempts[-1].phase, "Max duration limit exceeded")
                return True
        if not backoff.get("duration"):
            raise ArgoError("no base duration specified for retryStrategy")
        wait = _duration_s(backoff["duration"])
        factor = int(backoff.get("factor") or 0)
        if factor > 0:
            wait *= factor ** (len(attempts) - 1)
        if backoff.get("cap"):
            wait = min(wait, _duration_s(backoff["cap"]))
        until = attempts[-1].finished + wait
        if deadline is not None and until > deadline:
            self._mark(node, attempts[-1].phase, "Backoff would exceed max duration limit")
            return True
        if now < until and limit is not None and len(attempts) <= limit:
            node.backoffs.append(wait)
            self.skew += until - now  # the controller requeues after the wait; the next pass sees it elapsed
        return False

    def _retry_scope(self, node: Node) -> dict:
        """operator.go buildRetryStrategyLocalScope: retries and lastRetry.* (strings, as Argo passes them)."""
        attempts = [self.nodes[c] for c in node.children]
        last = attempts[-1]
        return {"retries": str(len(attempts) - 1), "lastRetry.exitCode": last.exit_code or "-1",
                "lastRetry.status": last.phase, "lastRetry.duration": str(last.finished - last.started),
                "lastRetry.message": last.message}

    # -- metrics --

    def _emit_metrics(self, tmpl: dict, node: Node) -> None:
        """operator.go computeMetrics with steps.go prepareMetricScope: after a node ends, each custom metric."""
        metrics = (tmpl.get("metrics") or {}).get("prometheus", [])
        if not metrics:
            return
        scope = {**self.globals, "duration": f"{node.finished - node.started:.6f}", "status": node.phase,
                 "resourcesDuration.cpu": "0", "resourcesDuration.memory": "0"}
        if node.children:
            scope["retries"] = str(len(node.children) - 1)
        scope.update({f"inputs.parameters.{k}": v for k, v in node.inputs.items()})
        scope.update({f"outputs.parameters.{k}": v for k, v in node.outputs.items()})
        if node.exit_code is not None:
            scope["exitCode"] = node.exit_code
        for spec in metrics:
            problem = self._emit_metric(spec, scope, node)
            if problem:
                self.metric_errors.append(problem)

    def _emit_metric(self, spec: dict, scope: dict, node: Node) -> str | None:
        if (spec.get("gauge") or {}).get("realtime"):
            return None  # realtime gauges are updated while the node runs: not modelled, nothing recorded
        if not spec.get("help"):
            return f"metric '{spec.get('name')}' must contain a help string under 'help: ' field"
        try:
            done = substitute(spec, scope, strict=True)  # template.Replace(..., allowUnresolved=false)
        except ArgoError as e:
            return f"unable to substitute parameters for metric '{spec.get('name')}': {e}"
        if done.get("when") and not evaluate(done["when"], {}, bare_strings=True):
            return None
        kind = next((k for k in ("gauge", "counter", "histogram") if k in done), None)
        if kind is None:
            return f"could not construct metric '{done['name']}': invalid metric spec"
        if not _METRIC_NAME.match(done["name"]):  # metrics_custom.go UpsertCustomMetric
            return "metric name is invalid: names may only contain alphanumeric characters or '_'"
        text = done[kind]["value"]
        try:
            value = float(text)  # Go's ParseFloat accepts NaN and Inf as Python does
        except ValueError:
            return f"could not construct metric '{done['name']}': strconv.ParseFloat: parsing \"{text}\": invalid syntax"
        labels = {label["key"]: label["value"] for label in done.get("labels", []) or []}
        self.metrics.append(Metric(done["name"], METRIC_PREFIX + done["name"], labels, value, node.name))
        return None

    # -- DAGs (dag.go) --

    def _execute_dag(self, name: str, node: Node | None, holder: dict, tmpl: dict, boundary: str) -> Node:
        """dag.go executeDAG: run each target task (its dependencies first), then judge the DAG."""
        if node is None:
            node = self._init_node(name, "DAG", holder.get("template", ""), boundary, "Running")
        dag = _Dag(node, tmpl)
        targets = dag.targets()
        for task in targets:
            self._execute_dag_task(dag, task)
        phase = self._assess_dag_phase(dag, targets)
        if phase != "Running":
            self._mark(node, phase)
        return node

    def _execute_dag_task(self, dag: _Dag, task_name: str) -> None:
        """dag.go executeDAGTask: dependencies first, then `depends`, references, fan-out, and the template."""
        if task_name in dag.visited:
            return
        dag.visited.add(task_name)
        task = dag.tasks[task_name]
        name = dag.node_name(task_name)
        node = self.nodes.get(name)
        if node is not None and node.fulfilled:
            return
        group = node if node is not None and node.type == "TaskGroup" else None
        if dag.logic[task_name]:
            for dep in dag.deps[task_name]:
                self._execute_dag_task(dag, dep)
            try:
                execute, proceed = self._evaluate_depends(dag, task_name)
            except ArgoError as e:
                self._skip(dag, task_name, "Error", str(e), group)
                return
            if not proceed:
                return
            if not execute:
                self._skip(dag, task_name, "Omitted", "omitted: depends condition not met", group)
                return
        try:
            resolved = self._resolve_dependency_references(dag, task)
            expanded = expand_task(resolved, {**self.globals, **self._task_scope(dag, task_name)})
        except _Requeue:
            return
        except ArgoError as e:
            if name not in self.nodes:
                self._skip(dag, task_name, "Error", str(e), group)
            return
        self._run_expanded(dag, task_name, task, expanded, group)

    def _skip(self, dag: _Dag, task_name: str, phase: str, message: str, group: Node | None) -> None:
        """dag.go executeDAGTask: a task that will not run gets a node of type Skipped (Error, Omitted or Skipped)."""
        name = dag.node_name(task_name)
        self._connect(dag, task_name, name, group)
        self._init_node(name, "Skipped", dag.tasks[task_name]["template"], dag.boundary.name, phase, message)

    def _run_expanded(self, dag: _Dag, task_name: str, task: dict, expanded: list, group: Node | None) -> None:
        """dag.go executeDAGTask: a TaskGroup for a fan-out, each (expanded) task's template, the group's phase."""
        name = dag.node_name(task_name)
        if task.get("withParam") or task.get("withItems"):
            if not expanded:
                self._skip(dag, task_name, "Skipped", "Skipped, empty params", group)
                return
            if group is None:
                self._connect(dag, task_name, name, None)
                group = self._init_node(name, "TaskGroup", task["template"], dag.boundary.name, "Running")
        for t in expanded:
            child = dag.node_name(t["name"])
            if child not in self.nodes:
                self._connect(dag, task_name, child, group)
                # dag.go executeDAGTask: each new task's `when`, before its template runs
                try:
                    proceed = should_execute(t.get("when", ""))
                except ArgoError as e:
                    self._init_node(child, "Skipped", t["template"], dag.boundary.name, "Error", str(e))
                    continue
                if not proceed:
                    self._init_node(child, "Skipped", t["template"], dag.boundary.name, "Skipped",
                                    f"when '{t['when']}' evaluated false")
                    continue
            node, err = self._execute_template(child, t, t.get("arguments", {}) or {}, dag.boundary.name)
            if err is not None:
                self._mark(self.nodes[child], "Error", f"task '{child}' errored: {err}")
                return
        if group is not None:
            children = [self.nodes.get(dag.node_name(t["name"])) for t in expanded]
            if all(c is not None and c.fulfilled for c in children):
                phase = "Succeeded"
                for c in children:
                    if c.failed_or_error:
                        phase = c.phase  # the last failed or errored child's phase
                self._mark(group, phase)

    def _connect(self, dag: _Dag, task_name: str, node_name: str, group: Node | None) -> None:
        """dag.go connectDependencies: a root task hangs from the DAG (a fanned-out one from its group),
        any other from the outbound nodes of each of its dependencies."""
        deps = dag.deps[task_name]
        if not deps or group is not None:
            self._add_child(group.name if group is not None else dag.boundary.name, node_name)
            return
        for dep in deps:
            for outbound in self._outbound(dag.node_name(dep)):
                self._add_child(outbound, node_name)

    def _outbound(self, name: str) -> list[str]:
        """operator.go getOutboundNodes: a pod is its own; a group's are its children's; a retry's its last try."""
        node = self.nodes[name]
        if node.type in ("Skipped", "Pod"):
            return [name]
        if node.type == "TaskGroup":
            if not node.children:
                return [name]
            return [o for c in node.children for o in self._outbound(c)]
        if node.type == "Retry":
            return [node.children[-1]] if node.children else []
        return []

    def _evaluate_depends(self, dag: _Dag, task_name: str) -> tuple[bool, bool]:
        """dag.go evaluateDependsLogic: (execute, proceed) from the dependencies' task results."""
        scope = {}
        for dep in dag.deps[task_name]:
            node = self.nodes.get(dag.node_name(dep))
            if node is None or not node.fulfilled:
                return False, False
            any_succeeded = all_failed = False
            if node.type == "TaskGroup":
                phases = [self.nodes[c].phase for c in node.children]
                any_succeeded = "Succeeded" in phases
                all_failed = bool(phases) and all(p == "Failed" for p in phases)
            scope[dep.replace("-", "_")] = {
                "Succeeded": node.phase == "Succeeded", "Failed": node.phase == "Failed",
                "Errored": node.phase == "Error", "Skipped": node.phase == "Skipped",
                "Omitted": node.phase == "Omitted", "Daemoned": False,
                "AnySucceeded": any_succeeded, "AllFailed": all_failed,
            }
        logic = dag.logic[task_name].replace("-", "_")
        result = evaluate(logic, scope)
        if not isinstance(result, bool):
            raise ArgoError(f"unable to cast expression result '{result}' to bool")
        return result, True

    def _task_scope(self, dag: _Dag, task_name: str) -> dict:
        """dag.go buildLocalScopeFromTask: each ancestor's id, status and outputs (aggregated for a group)."""
        deps = {name: dag.deps[name] for name in dag.tasks}
        scope: dict = {}
        for ancestor in _ancestry(task_name, deps):
            node = self.nodes.get(dag.node_name(ancestor))
            if node is None:
                raise ArgoError(f"Ancestor task node {ancestor} not found")
            ref = f"tasks.{ancestor}"
            scope.update({f"{ref}.id": node.name, f"{ref}.status": node.phase})
            if node.type == "TaskGroup":
                scope[f"{ref}.outputs.parameters"] = json.dumps([self.nodes[c].outputs for c in node.children])
            scope.update({f"{ref}.outputs.parameters.{k}": v for k, v in node.outputs.items()})
            if node.exit_code is not None:
                scope[f"{ref}.exitCode"] = node.exit_code
        return scope

    def _resolve_dependency_references(self, dag: _Dag, task: dict) -> dict:
        """dag.go resolveDependencyReferences: tasks.* must resolve now, or the task waits (requeue).

        A `when` is resolved first, and a task it rules out is returned with only its `when` resolved: v4.1's
        "Resolve the when clause first", so that the rest may name outputs of tasks that never ran (a Skipped
        `next` step's list). v4.0 substitutes the whole task with unresolved tags allowed, which ends alike.
        """
        scope = {**self.globals, **self._task_scope(dag, task["name"])}
        if task.get("when"):
            when = self._substitute_or_requeue(dag, task["name"], task["when"], scope)
            try:
                if not should_execute(when):
                    return {**task, "when": when}
            except ArgoError:
                if not (task.get("withParam") or task.get("withItems")):  # it may hold {{item}}: decided per item
                    raise
        return self._substitute_or_requeue(dag, task["name"], task, scope)

    def _substitute_or_requeue(self, dag: _Dag, task_name: str, obj, scope: dict):
        try:
            return substitute(obj, scope, strict_prefixes=("tasks", "steps"))
        except ArgoError as e:
            self.requeued.append(f"{dag.node_name(task_name)}: {e}")
            raise _Requeue() from None

    def _assess_dag_phase(self, dag: _Dag, targets: list[str]) -> str:
        """dag.go assessDAGPhase: walk from the DAG's roots carrying a branch phase; judge by the targets."""
        target_phase = {dag.node_name(t): "" for t in targets}
        queue = [(c, "Succeeded") for c in dag.boundary.children]
        seen = set(queue)
        while queue:
            name, branch = queue.pop(0)
            node = self.nodes.get(name)
            if node is None or not node.fulfilled:
                return "Running"
            if node.completed:
                branch = node.phase
            if name in target_phase and target_phase[name] not in ("Failed", "Error"):
                target_phase[name] = branch
            if node.type == "Retry":  # operator.go getRetryNodeChildrenIds: what hangs off its tries
                nxt = [g for c in reversed(node.children) for g in self.nodes[c].children]
            else:
                nxt = node.children
            for child in nxt:
                if (child, branch) not in seen:
                    seen.add((child, branch))
                    queue.append((child, branch))
        fail_fast = dag.tmpl["dag"].get("failFast", True) is not False
        result = "Succeeded"
        for t in targets:
            branch = target_phase[dag.node_name(t)]
            if branch == "":
                result = "Running"
                if not fail_fast:
                    break
            elif branch in ("Failed", "Error"):
                result = branch
                if fail_fast:
                    break
        return result


def process_args(tmpl: dict, args: dict, globals_: dict, local: dict) -> dict:
    """workflow/common/util.go ProcessArgs + SubstituteParams: arguments (or defaults) into inputs, then
    globals and locals, then inputs, substituted throughout the template (unresolved tags stay)."""
    t = copy.deepcopy(tmpl)
    if (t.get("inputs") or {}).get("artifacts"):
        raise NotModelled(f"template {t['name']}: input artifacts")
    given = {p["name"]: p for p in (args or {}).get("parameters", []) or []}
    for p in (t.get("inputs") or {}).get("parameters", []) or []:
        if "value" not in p and "default" in p:
            p["value"] = p["default"]
        if p["name"] in given and "value" in given[p["name"]]:
            p["value"] = given[p["name"]]["value"]
    scope = {**globals_, **local}
    t = substitute(t, scope)
    for p in (t.get("inputs") or {}).get("parameters", []) or []:
        if "value" not in p and "valueFrom" not in p:
            raise ArgoError(f"inputs.parameters.{p['name']} had no value")
        if "value" in p:
            scope[f"inputs.parameters.{p['name']}"] = _text(p["value"])
    scope["inputs.parameters"] = json.dumps((t.get("inputs") or {}).get("parameters", []), separators=(",", ":"))
    outputs = t.get("outputs") or {}
    scope.update({f"outputs.artifacts.{a['name']}.path": a["path"] for a in outputs.get("artifacts", []) if a.get("path")})
    scope.update({f"outputs.parameters.{p['name']}.path": p["valueFrom"]["path"]
                  for p in outputs.get("parameters", []) if (p.get("valueFrom") or {}).get("path")})
    return substitute(t, scope)


def should_execute(when: str) -> bool:
    """steps.go shouldExecute: a substituted `when`, evaluated by govaluate, where a bare word is a string."""
    if not when:
        return True
    result = evaluate(when, {}, bare_strings=True)
    if not isinstance(result, bool):
        raise ArgoError(f"Expected boolean evaluation for '{when}'. Got {result}")
    return result


def should_execute_or_error(when: str) -> bool | None:
    """should_execute, or None where it would error: expandTask (dag.go) skips a withParam it cannot parse only
    when the `when` evaluates false without error."""
    try:
        return should_execute(when)
    except ArgoError:
        return None


def expand_task(task: dict, scope: dict) -> list[dict]:
    """dag.go expandTask: withItems, or withParam parsed as a JSON list, into one task per item."""
    if task.get("withItems"):
        items = task["withItems"]
    elif task.get("withParam"):
        text = task["withParam"]
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            if task.get("when") and should_execute_or_error(task["when"]) is False:
                items = []  # a task its `when` rules out expands to nothing: "Skipped, empty params"
                return items
            bad = text[e.pos] if e.pos < len(text) else ""
            raise ArgoError(f"withParam value could not be parsed as a JSON list: {text.strip()}: "
                            f"invalid character '{bad}' looking for beginning of value") from None
        if not isinstance(items, list):
            kind = {dict: "object", str: "string", bool: "bool"}.get(type(items), "number")
            raise ArgoError(f"withParam value could not be parsed as a JSON list: {text.strip()}: "
                            f"json: cannot unmarshal {kind} into Go value of type []v1alpha1.Item")
    else:
        return [task]
    body = {k: v for k, v in task.items() if k not in ("withItems", "withParam", "withSequence")}
    return [_process_item(body, task["name"], i, item, scope) for i, item in enumerate(items)]


def _process_item(task: dict, name: str, index: int, item, scope: dict) -> dict:
    """operator.go processItem: {{item}} / {{item.key}} substituted (strictly), the node named after the item."""
    values = dict(scope)
    if isinstance(item, dict):
        values.update({f"item.{k}": _go_value(v) for k, v in item.items()})
        values["item"] = json.dumps(item, sort_keys=True, separators=(",", ":"))
        desc = ",".join(sorted(f"{k}:{_go_value(v)}" for k, v in item.items()))
    elif isinstance(item, (str, int, float, bool)):
        values["item"] = desc = _text(item) if not isinstance(item, str) else item
    elif isinstance(item, list):
        values["item"] = json.dumps(item, separators=(",", ":"))
        desc = "[" + " ".join(_go_value(v) for v in item) + "]"
    else:
        raise ArgoError(f"withItems[{index}] expected string, number, list, or map. received: {item}")
    new = substitute(task, values, strict=True)  # template.Replace(..., allowUnresolved=false)
    new["name"] = f"{name}({index}:{desc.replace('(', '').replace(')', '')})"  # generateNodeName
    new["template"] = task["template"]
    return new


def run_workflow(manifest: dict, cluster: Cluster, workdir: str | os.PathLike, preempt: Iterable[Preempt] = (),
                 pod_timeout_s: float = 600) -> WorkflowResult:
    """Run a Workflow manifest to its end as the controller would; see the module docstring.

    Raises WorkflowStuck when it can never finish, NotModelled when it relies on what is not modelled.
    """
    if manifest.get("kind") != "Workflow":
        raise ValueError(f"expected a Workflow, got {manifest.get('kind')}")
    return _Operation(manifest, cluster, Path(workdir), preempt, pod_timeout_s).run()
