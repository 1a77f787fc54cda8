"""Kubernetes' strategic merge patch, as far as the harness needs it: a Workflow over its WorkflowTemplate
(workflow/util/merge.go) and a pod spec patch over a pod (workflowpod.go ApplyPodSpecPatch)."""

from __future__ import annotations

import copy

# workflow_types.go: the patchMergeKey of WorkflowSpec's and Arguments' lists (other lists are replaced)
_MERGE_KEYS = {("templates",): "name", ("arguments", "parameters"): "name", ("arguments", "artifacts"): "name",
               ("volumes",): "name", ("tolerations",): "key", ("imagePullSecrets",): "name", ("hostAliases",): "ip"}
# Kubernetes' strategic merge keys of the PodSpec fields a pod spec patch here touches; other lists are replaced
# (tolerations, for one, has no merge key: a patch's list replaces the pod's).
# Paths start again inside each list item, as in _MERGE_KEYS.
_POD_MERGE_KEYS = {("containers",): "name", ("initContainers",): "name", ("volumes",): "name", ("env",): "name",
                   ("volumeMounts",): "mountPath"}


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

