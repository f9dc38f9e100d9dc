"""docs/openapi.yaml describes the HTTP functions as they are registered and answer."""

from __future__ import annotations

import re
from pathlib import Path

from function_app import app
from function_app.http_api import _STATUS_BY_CATEGORY
from harness.localhost import indexed_functions

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "openapi.yaml").read_text()


def _paths() -> dict[str, str]:
    """path -> its block of text (the spec has two top-level path entries)."""
    body = SPEC.split("\npaths:\n", 1)[1].split("\ncomponents:\n", 1)[0]
    parts = re.split(r"^  (/[^:]+):\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_http_function_route_and_method_is_documented() -> None:
    paths = _paths()
    routes = {}
    for fn in indexed_functions(app):  # cached: the worker calls get_functions() once per process
        trigger = fn.trigger.raw
        if trigger["type"] == "httpTrigger":
            routes["/" + trigger["route"]] = [m.lower() for m in trigger["methods"]]
    assert set(paths) == set(routes)
    for route, methods in routes.items():
        for method in methods:
            assert re.search(rf"^    {method}:", paths[route], flags=re.M), (route, method)


def test_every_status_the_send_function_answers_is_documented() -> None:
    send = _paths()["/send"]
    documented = {int(code) for code in re.findall(r'^        "(\d{3})":', send, flags=re.M)}
    answered = set(_STATUS_BY_CATEGORY.values()) | {200, 202, 400, 401, 409, 413, 429, 503, 504}
    assert answered <= documented


def test_the_error_categories_are_the_catalogs() -> None:
    from shared.errors import CATEGORIES

    listed = re.search(r"enum: \[invalid_message,([^\]]+)\]", SPEC.replace("\n", " "))
    assert listed is not None
    names = {"invalid_message", *(n.strip() for n in listed.group(1).split(",") if n.strip())}
    assert set(CATEGORIES) <= names
