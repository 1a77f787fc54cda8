"""Retries (operator.go executeTemplate with a retryStrategy, processNodeRetries): a Retry node whose children
are the attempts; the backoff, the policy, the limit and the expression decide whether to try again."""

from __future__ import annotations

import re

from argo.expressions import _nest, _text, evaluate, substitute
from argo.objects import ArgoError, Node, NotModelled
from argo.pods import pod_name

MAX_ATTEMPTS = 50  # a retryStrategy without a limit retries for ever in Argo; the harness gives up here


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


class _Retries:
    """The retry half of workflow._Operation (mixed into it), which owns the nodes, the globals and the clock."""

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
