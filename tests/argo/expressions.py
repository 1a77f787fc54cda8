"""Variable substitution (util/template) and expressions: the subset of expr-lang (retry expressions,
`depends`) and govaluate (`when`) the sweep's manifests use."""

from __future__ import annotations

import copy
import json
import re
from typing import Iterable

from argo.objects import ArgoError, NotModelled

# --- expressions ------------------------------------------------------------------------------------

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


# --- a template's inputs, and a task's `when` ---------------------------------------------------------


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

