"""Run a rendered Argo Workflow the way the Argo v4 controller and executor would, on one machine.

    import argo
    result = argo.run_workflow(manifest, argo.Cluster(namespace="ml", configmaps=[...], secrets={...}), workdir)
    result.phase, result.nodes, result.artifacts, result.metrics

This is test infrastructure, not an Argo: it reads the manifest as the controller reads it and
applies the controller's rules, each taken from the argo-workflows v4.1.2 source and cited where it
is applied (file and function). Every container's command runs as a local process. RULES.md maps
each rule to the Argo function it follows, the harness function that applies it, and its test.

Its modules, by what the controller does:
- workflow: the public entry, run_workflow; submission (a Workflow, or one with `spec.workflowTemplateRef`
  merged over the referenced WorkflowTemplate), global parameters, executeTemplate, display names;
- validation: the spec validation the controller runs once (workflow/validate/validate.go), and the check
  that every field is modelled or knowingly ignored;
- expressions: variable substitution ({{workflow.*}}, {{inputs.*}}, {{item.*}}, {{tasks.*}}, {{pod.name}},
  metric-only {{status}}/{{duration}}) and the expr-lang/govaluate subset of `depends`, retry expressions
  and `when`;
- dag: the DAG walk in the controller's order (workflow/controller/dag.go): `depends` logic with task
  results, withParam fan-out, the TaskGroup's phase from its children, the DAG's phase from its targets;
- retries: retryStrategy (limit, policy, backoff and expression);
- metrics: custom Prometheus metrics;
- artifacts: the artifact repository, the archive location, the S3 driver;
- pods: each pod's spec as the controller creates it (Node.pod: Argo's init and wait containers from the
  controller's executor settings, Cluster.executor, then the pod spec patches), its env (image ENV, envFrom
  and env from the given Secrets), emptyDir volumes as fresh per-pod folders, output parameters read from
  valueFrom.path, output artifacts and archived logs saved to S3 where the resolved artifact repository
  says, Secrets the pod mounts; preemption: a pod killed from outside (SIGKILL) fails as a reclaimed
  node's pod does;
- pod_security: the Pod Security Standards' restricted profile, as rules over a pod spec;
- merge: strategic merge (a WorkflowTemplate, a pod spec patch);
- objects: what a test hands in and gets back (Cluster, Preempt, WorkflowResult, Node, the errors).

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
- what the sweep never renders: steps, script, resource, suspend and other template kinds, hooks,
  onExit, input artifacts, withItems and withSequence, expression tags ({{=...}}), memoization,
  daemons, activeDeadlineSeconds (each pod has the harness' own time limit instead), realtime metrics,
  spec.priority, a template's archiveLocation, env valueFrom (the pods take Secrets through envFrom).

Mapping /tmp: a container's emptyDir mount (here /tmp) becomes a fresh folder of its pod, and every
command argument, env value and output path under the mount is rewritten to it. TMPDIR is set to
that folder too: tempfile then writes where it would in the container (its /tmp), instead of the
host's /tmp. Rewriting is honest where the manifest names the path; TMPDIR covers what only the
libraries know.
"""

from argo.artifacts import DEFAULT_ARCHIVE_PATTERN, DEFAULT_REPO_KEY, resolve_artifact_repository, s3_endpoint_error
from argo.dag import _task_dependencies
from argo.expressions import _nest, evaluate
from argo.merge import _POD_MERGE_KEYS, _strategic_merge
from argo.metrics import METRIC_PREFIX
from argo.objects import (NODE_SHUTDOWN_MESSAGE, ArgoError, Cluster, Metric, Node, NotModelled, PodView, Preempt,
                          SavedArtifact, SpecError, WorkflowResult, WorkflowStuck)
from argo.retries import _duration_s
from argo.validation import IGNORED, MODELLED, check_spec_fields, validate
from argo.workflow import DISPLAY_NAME, DISPLAY_NAME_KEY, run_workflow

# The names the tests use; the private ones are single rules a test pins directly.
__all__ = [
    "DEFAULT_ARCHIVE_PATTERN", "DEFAULT_REPO_KEY", "DISPLAY_NAME", "DISPLAY_NAME_KEY", "IGNORED", "METRIC_PREFIX",
    "MODELLED", "NODE_SHUTDOWN_MESSAGE", "ArgoError", "Cluster", "Metric", "Node", "NotModelled", "PodView", "Preempt",
    "SavedArtifact", "SpecError", "WorkflowResult", "WorkflowStuck", "_POD_MERGE_KEYS", "_duration_s", "_nest",
    "_strategic_merge", "_task_dependencies", "check_spec_fields", "evaluate", "resolve_artifact_repository",
    "run_workflow", "s3_endpoint_error", "validate",
]
