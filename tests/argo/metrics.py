"""Custom Prometheus metrics (operator.go computeMetrics, steps.go prepareMetricScope): each template's
metrics, computed after its node ends."""

from __future__ import annotations

import re

from argo.expressions import evaluate, substitute
from argo.objects import ArgoError, Metric, Node

METRIC_PREFIX = "argo_workflows_"  # util/telemetry/metrics.go: the Prometheus exporter's namespace, on custom metrics too
# workflow/metrics/util.go IsValidMetricName: Prometheus' legacy name rule, and no ':' (label keys too)
_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _Metrics:
    """The metrics half of workflow._Operation (mixed into it), which owns metrics and metric_errors."""

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
