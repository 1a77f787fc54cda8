"""The spec validation the controller runs once on a new workflow (workflow/validate/validate.go), and the
harness' own check that every field of the spec is modelled or knowingly ignored."""

from __future__ import annotations

import re

from argo.dag import _TASK_RESULTS, _ancestry, _task_dependencies
from argo.expressions import _each_tag, _strings, _text
from argo.metrics import _METRIC_NAME
from argo.objects import NotModelled, SpecError

# validate.go: workflowFieldNameFmt (templates, tasks), paramOrArtifactNameRegex (parameters, artifacts)
_FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
_PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# workflow/common/common.go: GlobalVarValidWorkflowVariablePrefix, the tags validation must resolve
_VAR_PREFIXES = ("item.", "steps.", "inputs.", "outputs.", "pod.", "workflow.", "tasks.")
_UNSUPPORTED_TEMPLATE_KINDS = ("steps", "script", "resource", "suspend", "containerSet", "data", "http", "plugin")


MODELLED = {
    "spec": {"entrypoint", "arguments", "templates", "serviceAccountName", "archiveLogs", "artifactRepositoryRef",
             "workflowTemplateRef", "retryStrategy", "podSpecPatch"},
    "template": {"name", "container", "dag", "inputs", "outputs", "retryStrategy", "metrics", "podSpecPatch",
                 "volumes", "annotations"},
    "container": {"image", "command", "args", "env", "envFrom", "volumeMounts"},  # image: its ENV (Cluster.image_env)
    "dag": {"tasks", "target", "failFast"},
    "task": {"name", "template", "arguments", "depends", "dependencies", "withParam", "when"},
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
        for unsupported in ("templateRef", "inline", "hooks", "onExit", "withItems", "withSequence"):
            if unsupported in task:
                raise NotModelled(f"task {tname}: `{unsupported}`")
        try:
            resolved = self._holder(task.get("template", ""))
        except SpecError as e:
            raise SpecError(f"templates.{dag}.tasks.{tname} {e}") from None
        self._add_outputs(scope, tname, resolved, aggregate=bool(task.get("withParam")))
        for m in re.finditer(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)", task.get("depends", "")):
            dep, result = m.group(1).split(".", 1)
            if result not in _TASK_RESULTS:  # ancestry.go ValidateTaskResults
                raise SpecError(f"templates.{dag}.tasks.{tname} task result '{result}' for task '{dep}' is invalid")
        for dep, kind in deps[tname].items():
            if dep not in by_name:
                # Argo's message names no task here: validateDAG shadows `task` with the failed lookup.
                raise SpecError(f"templates.{dag}.tasks. dependency '{dep}' not defined")
            dep_task = by_name[dep]
            if kind == "items" and not dep_task.get("withParam"):
                raise SpecError(f"templates.{dag}.tasks.{tname} dependency '{dep}' uses an items-based condition "
                                "such as .AnySucceeded or .AllFailed but does not contain any items")

    def _dag_task_variables(self, dag: str, task: dict, by_name: dict, deps: dict, scope: set) -> None:
        """validate.go validateDAG, second loop: every reference in the task resolves; tasks.* are ancestors."""
        tname = task["name"]
        task_scope = set(scope)
        ancestry = _ancestry(tname, deps)
        task_scope |= {f"tasks.{a}.status" for a in ancestry}
        any_item = bool(task.get("withParam"))
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

