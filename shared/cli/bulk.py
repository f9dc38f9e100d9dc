"""Reading a bulk file into validated queue bodies, every line checked before anything is sent.

Two inputs:

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one v1 message object per line;
* CSV with a template: a v1 message in JSON whose strings hold ``{{column}}`` placeholders, filled
  from each row (``{{_line}}`` is the row's line number). A template may also be used with JSON
  lines, each line then being an object of variables.

Pure: no I/O beyond the file given, so the same checks run in tests without storage.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.acceptance import AcceptanceRules, NotAccepted, accept
from shared.message import valid_message_id
from shared.storage.queues import encode_body, fits_queue, queue_text_bytes

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Item:
    line: int
    body: dict[str, Any]
    text: str
    """The queue text (compact JSON) that will be sent."""


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class TemplateError(ValueError):
    """The template itself is unusable (not a JSON object)."""


def load_template(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"the template is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise TemplateError("the template must be a JSON object (a v1 message with {{column}} placeholders)")
    return value


def placeholders(template: Any) -> set[str]:
    """Every ``{{name}}`` used in the template's strings."""
    found: set[str] = set()
    if isinstance(template, str):
        found.update(m.group(1) for m in _PLACEHOLDER.finditer(template))
    elif isinstance(template, Mapping):
        for value in template.values():
            found |= placeholders(value)
    elif isinstance(template, list):
        for value in template:
            found |= placeholders(value)
    return found


def render(template: Any, variables: Mapping[str, Any]) -> Any:
    """The template with every placeholder replaced (KeyError names a missing variable)."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: _as_text(variables[m.group(1)]), template)
    if isinstance(template, Mapping):
        return {key: render(value, variables) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, variables) for value in template]
    return template


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def sniff_format(name: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    return "jsonl"


def rows(text: str, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, raw row): a decoded JSON value (or a JSONDecodeError text) or a CSV dict."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
        start = 2
        for row in reader:
            if None in row:
                yield start, ValueError(f"has {len(row) - 1 + len(row[None])} fields, the header has {len(reader.fieldnames or [])}")
            elif any(v is None for v in row.values()):
                yield start, ValueError(f"has fewer fields than the header ({len(reader.fieldnames or [])})")
            else:
                yield start, dict(row)
            start = reader.line_num + 1
        return
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, ValueError(f"is not valid JSON: {exc.msg} at column {exc.colno}")


def prepare(
    text: str,
    *,
    fmt: str,
    template: Mapping[str, Any] | None,
    rules: AcceptanceRules,
    id_prefix: str | None = None,
) -> tuple[list[Item], list[Problem]]:
    """Validate every row as the function will (shared.acceptance); return the queue items and every
    problem found (by line)."""
    if fmt == "csv" and template is None:
        raise TemplateError("a CSV file needs --template FILE (a v1 message with {{column}} placeholders)")
    items: list[Item] = []
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for line, row in rows(text, fmt):
        if isinstance(row, Exception):
            problems.append(Problem(line, str(row)))
            continue
        if template is not None:
            if not isinstance(row, Mapping):
                problems.append(Problem(line, "must be a JSON object of template variables"))
                continue
            try:
                body = render(template, {**row, "_line": str(line)})
            except KeyError as exc:
                problems.append(Problem(line, f"the template uses {{{{{exc.args[0]}}}}}, which this row does not have"))
                continue
        else:
            body = row
        if not isinstance(body, dict):
            problems.append(Problem(line, "must be a JSON object (one v1 message per line)"))
            continue
        if id_prefix and "id" not in body:
            body = {"id": f"{id_prefix}-{line}", **body}
        try:
            message = accept(body, rules, fallback_id=f"line-{line}").message
        except NotAccepted as exc:
            problems.append(Problem(line, "; ".join(f"{e['field']}: {e['message']}" for e in exc.to_list())))
            continue
        if message.id is not None:
            first = ids.setdefault(message.id, line)
            if first != line:
                problems.append(
                    Problem(line, f"id {message.id!r} is also used on line {first} (the second would never be sent)")
                )
                continue
        queue_text = encode_body(body)
        if not fits_queue(queue_text):
            problems.append(
                Problem(
                    line,
                    f"is {queue_text_bytes(queue_text):,} bytes as queue text; a queue message holds 64 KiB: "
                    'put attachments in the attachment container and reference them with "blob"',
                )
            )
            continue
        items.append(Item(line, body, queue_text))
    return items, problems


def valid_id_prefix(prefix: str) -> bool:
    return valid_message_id(f"{prefix}-1") and len(prefix) <= 110
