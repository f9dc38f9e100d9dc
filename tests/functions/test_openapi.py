"""docs/openapi.yaml describes the HTTP functions as they are registered and answer.

The end-to-end HTTP tests (tests/e2e/test_http_api.py) check every answer they get against this document
too; here: the document itself, its examples, and the routes, methods and statuses of the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from function_app import app
from function_app.http_api import _STATUS_BY_CATEGORY
from harness.localhost import indexed_functions
from shared.errors import CATEGORIES
from shared.message import parse_message
from tests.functions.openapi_support import schema_errors, spec


def _examples() -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """(what, example name, schema, example) for every example next to a schema; what is e.g.
    "POST /send 202" or "POST /send request"."""
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            bodies = [("request", operation.get("requestBody") or {})]
            bodies += [(status, response) for status, response in operation["responses"].items()]
            for name, holder in bodies:
                for media in (holder.get("content") or {}).values():
                    what = f"{method.upper()} {path} {name}"
                    if "example" in media:
                        yield what, "example", media["schema"], media["example"]
                    for key, example in (media.get("examples") or {}).items():
                        yield what, key, media["schema"], example["value"]


def test_the_document_is_valid_openapi_3_0() -> None:
    validate(spec())


@pytest.mark.parametrize("what, name, schema, example", list(_examples()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_example_validates_against_its_schema(what: str, name: str, schema: dict[str, Any], example: Any) -> None:
    assert schema_errors(schema, example) == []


def test_every_json_answer_and_the_request_have_an_example() -> None:
    with_examples = {what for what, _, _, _ in _examples()}
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if response.get("content"):
                    assert f"{method.upper()} {path} {status}" in with_examples, (path, method, status)
    assert "POST /send request" in with_examples


def test_the_request_examples_are_messages_outbox_accepts() -> None:
    request = spec()["paths"]["/send"]["post"]["requestBody"]["content"]["application/json"]
    for example in request["examples"].values():
        parse_message(example["value"])  # raises InvalidMessage naming the field otherwise


def test_the_message_schema_rejects_what_outbox_rejects() -> None:
    message = spec()["components"]["schemas"]["Message"]
    good = {"from": "a@contoso.example", "to": ["b@fabrikam.example"], "text": "x"}
    assert schema_errors(message, good) == []
    for bad in ({**good, "to": []} | {"to": None}, {"from": "a@contoso.example", "to": ["b@fabrikam.example"]},
                {**good, "unknown": 1}, {**good, "importance": "urgent"}, {**good, "id": "a b"}):
        bad = {k: v for k, v in bad.items() if v is not None}
        assert schema_errors(message, bad), bad


def test_every_http_function_route_and_method_is_documented() -> None:
    routes: dict[str, list[str]] = {}
    for fn in indexed_functions(app):  # cached: the worker calls get_functions() once per process
        trigger = fn.trigger.raw
        if trigger["type"] == "httpTrigger":
            routes["/" + trigger["route"]] = [m.lower() for m in trigger["methods"]]
    documented = {path: sorted(item) for path, item in spec()["paths"].items()}
    assert documented == {route: sorted(methods) for route, methods in routes.items()}


def test_every_status_the_send_function_answers_is_documented() -> None:
    documented = {int(code) for code in spec()["paths"]["/send"]["post"]["responses"]}
    answered = set(_STATUS_BY_CATEGORY.values()) | {200, 202, 400, 401, 409, 413, 429, 503, 504}
    assert answered <= documented


def test_the_error_categories_are_the_catalogs() -> None:
    listed = spec()["components"]["schemas"]["Error"]["properties"]["category"]["enum"]
    assert set(listed) == set(CATEGORIES) | {"conflict"}


def test_function_keys_are_the_security_of_every_operation() -> None:
    schemes = spec()["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "x-functions-key"), ("query", "code")}
    assert spec()["security"] == [{name: []} for name in schemes]
