"""Strict validation of Argo manifests against Argo's published JSON schema.

The schema is not vendored: `ARGO_SCHEMA` names the file (CI sets it to Argo
Workflows v4.0.10's `schema.json`). As published it accepts any unknown key and
says `IntOrString` is a string only, so `strict_schema()` tightens both:

- every object definition that lists `properties` and says nothing about
  `additionalProperties` gets `additionalProperties: false`, so a typo such as
  `nodeSelecter` fails;
- `IntOrString` and `Quantity` accept integers (and Quantity numbers) too, as
  the Kubernetes API does.

Tests call `validator()` and `errors(validator, doc)`, which lists each error with its path.
Where ARGO_SCHEMA is unset `validator()` skips, saying why; under CI=true it fails instead, so a CI
run never passes with the schema checks left out.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import pytest

ENV = "ARGO_SCHEMA"  # path of Argo's JSON schema (api/jsonschema/schema.json of the release)
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def schema_path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def in_ci() -> bool:
    """CI=true, as CI services set it: checks that would skip elsewhere must run, or fail."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def strict_schema(schema: dict) -> dict:
    """A copy of Argo's schema that rejects unknown keys and accepts integer IntOrString/Quantity."""
    strict = copy.deepcopy(schema)
    defs = strict["definitions"]
    for definition in defs.values():
        if definition.get("type") == "object" and "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    if INT_OR_STRING in defs:
        defs[INT_OR_STRING]["type"] = ["string", "integer"]
    if QUANTITY in defs:
        defs[QUANTITY]["type"] = ["string", "number"]
    return strict


@functools.lru_cache(maxsize=None)
def _validator_for(path: str, kind: str | None):
    import jsonschema

    schema = strict_schema(json.loads(Path(path).read_text()))
    if kind:
        # Validate against the one kind, not the top-level oneOf, so errors point at the real key.
        schema = {"$schema": schema["$schema"], "definitions": schema["definitions"],
                  "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}"}
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validator(kind: str | None = None):
    """The strict validator (for one kind, e.g. "WorkflowTemplate", or any Argo kind); a pytest skip where
    ARGO_SCHEMA is unset, an error under CI=true."""
    path = schema_path()
    if path is None:
        why = f"{ENV} is unset: set it to Argo Workflows v4's schema.json to validate Argo manifests strictly"
        if in_ci():
            pytest.fail(f"{why} (CI=true: a missing schema is an error)", pytrace=False)
        pytest.skip(why)
    if not path.is_file():
        raise FileNotFoundError(f"{ENV}={path}: no such file")
    return _validator_for(str(path), kind)


def errors(validator_, doc: dict) -> list[str]:
    """Every schema error in doc, as 'path: message', deepest first (empty when valid)."""
    found = sorted(validator_.iter_errors(doc), key=lambda e: -len(e.absolute_path))
    out = []
    for err in found:
        # oneOf at the top level hides the real cause; show the best match inside it
        best = err
        if err.context:
            best = max(err.context, key=lambda e: len(e.absolute_path))
        where = "/".join(str(p) for p in best.absolute_path) or "<root>"
        out.append(f"{where}: {best.message[:300]}")
    return out
