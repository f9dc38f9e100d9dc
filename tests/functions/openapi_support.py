"""docs/openapi.yaml as data, and a check that a body matches what the document says for an answer."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS31Validator, oas31_format_checker

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (OpenAPI 3.1 dialect: JSON Schema 2020-12, formats; $refs
    into the document's components)."""
    rooted = {**schema, "components": spec()["components"]}
    validator = OAS31Validator(rooted, format_checker=oas31_format_checker)
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(instance)]


def documented_response(path: str, method: str, status: int) -> dict[str, Any]:
    """The response object the document gives for ``method path`` answering ``status`` (asserted to exist)."""
    operation = spec()["paths"][path][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answers {status}, which docs/openapi.yaml omits"
    return responses[str(status)]


def check_response(path: str, method: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    """Assert that an answer is documented and its JSON body and documented headers match the document."""
    response = documented_response(path, method, status)
    content = (response.get("content") or {}).get("application/json")
    if content is None:
        assert not body, f"{method.upper()} {path} {status} has a body the document does not describe: {body!r}"
    else:
        errors = schema_errors(content["schema"], body)
        assert not errors, f"{method.upper()} {path} {status}: {errors} in {body!r}"
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    for name, header in (response.get("headers") or {}).items():
        value = lowered.get(name.lower())
        if value is not None and header.get("schema", {}).get("type") == "integer":
            assert value.isdigit(), f"{name}: {value!r} is not an integer"
