"""The DAG walk (workflow/controller/dag.go): `depends` and its task results (workflow/common/ancestry.go),
withParam fan-out into a TaskGroup, each task's `when`, the DAG's phase from its target tasks."""

from __future__ import annotations

import json
import re

from argo.expressions import _go_value, _text, evaluate, should_execute, should_execute_or_error, substitute
from argo.objects import ArgoError, Node

# workflow/common/ancestry.go: taskNameRegex, TaskResult
_TASK_NAME = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)")
_TASK_RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")


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


class _Requeue(Exception):
    """operator.go ErrRequeue: the task waits for something (a missing variable); tried again next pass."""


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


class _DagWalk:
    """dag.go executeDAG and its helpers: the DAG half of workflow._Operation (mixed into it), which owns
    the nodes, the globals and the clock these methods use."""

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
        if task.get("withParam"):
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
                if not task.get("withParam"):  # it may hold {{item}}: decided per item
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


def expand_task(task: dict, scope: dict) -> list[dict]:
    """dag.go expandTask: withParam parsed as a JSON list, into one task per item."""
    if not task.get("withParam"):
        return [task]
    text = task["withParam"]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        if task.get("when") and should_execute_or_error(task["when"]) is False:
            return []  # a task its `when` rules out expands to nothing: "Skipped, empty params"
        bad = text[e.pos] if e.pos < len(text) else ""
        raise ArgoError(f"withParam value could not be parsed as a JSON list: {text.strip()}: "
                        f"invalid character '{bad}' looking for beginning of value") from None
    if not isinstance(items, list):
        kind = {dict: "object", str: "string", bool: "bool"}.get(type(items), "number")
        raise ArgoError(f"withParam value could not be parsed as a JSON list: {text.strip()}: "
                        f"json: cannot unmarshal {kind} into Go value of type []v1alpha1.Item")
    body = {k: v for k, v in task.items() if k != "withParam"}
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
        # processItem's message names withItems whichever list the item came from
        raise ArgoError(f"withItems[{index}] expected string, number, list, or map. received: {item}")
    new = substitute(task, values, strict=True)  # template.Replace(..., allowUnresolved=false)
    new["name"] = f"{name}({index}:{desc.replace('(', '').replace(')', '')})"  # generateNodeName
    new["template"] = task["template"]
    return new
