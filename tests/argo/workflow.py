"""The public entry: run_workflow operates one Workflow as the controller does (operator.go operate), from its
submission (a workflowTemplateRef merged, the spec validated, the global parameters set, the artifact repository
resolved) through executeTemplate for each node, to the workflow's phase."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Iterable

from argo.artifacts import resolve_artifact_repository
from argo.dag import _DagWalk
from argo.expressions import _text, process_args
from argo.merge import join_workflow_spec
from argo.metrics import _Metrics
from argo.objects import ArgoError, Cluster, Metric, Node, NotModelled, Preempt, SpecError, WorkflowResult, WorkflowStuck
from argo.pods import _Pod, _PodNotCreated, _PodStuck, pod_name
from argo.retries import _Retries
from argo.validation import _UNSUPPORTED_TEMPLATE_KINDS, check_spec_fields, validate

DISPLAY_NAME_KEY = "workflows.argoproj.io/display-name"
# operator.go: displayNameRegex
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-.]{0,61}[a-zA-Z0-9]$")
_STEPS_OR_DAG_SEPARATOR = re.compile(r"^(\[\d+\])?\.")  # operator.go: stepsOrDagSeparator


def _generate_name(prefix: str) -> str:
    """apimachinery's names.SimpleNameGenerator: generateName + 5 characters of its alphabet."""
    return prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class _Operation(_DagWalk, _Retries, _Metrics):
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


def run_workflow(manifest: dict, cluster: Cluster, workdir: str | os.PathLike, preempt: Iterable[Preempt] = (),
                 pod_timeout_s: float = 600) -> WorkflowResult:
    """Run a Workflow manifest to its end as the controller would; see the module docstring.

    Raises WorkflowStuck when it can never finish, NotModelled when it relies on what is not modelled.
    """
    if manifest.get("kind") != "Workflow":
        raise ValueError(f"expected a Workflow, got {manifest.get('kind')}")
    return _Operation(manifest, cluster, Path(workdir), preempt, pod_timeout_s).run()
