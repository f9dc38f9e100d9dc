"""Property tests: parse_message and decode_body never fail with anything but InvalidMessage,
and valid messages survive the requeue form unchanged."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.message import InvalidMessage, Message, decode_body, message_to_json, parse_message
from tests.unit.message_strategies import TOP_LEVEL_FIELDS, json_values, valid_bodies

PROPERTY = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def parse_or_invalid(data: object) -> Message | InvalidMessage:
    try:
        return parse_message(data)
    except InvalidMessage as exc:
        assert exc.errors, "InvalidMessage without errors"
        assert all(e.field and e.message for e in exc.errors)
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return exc


@PROPERTY
@given(json_values)
def test_any_json_value_is_a_message_or_invalid(data: object) -> None:
    parse_or_invalid(data)


@PROPERTY
@given(st.dictionaries(st.sampled_from(TOP_LEVEL_FIELDS), json_values, max_size=14))
def test_any_values_under_the_real_field_names(data: dict[str, Any]) -> None:
    parse_or_invalid(data)


@PROPERTY
@given(valid_bodies(), st.sampled_from(TOP_LEVEL_FIELDS), json_values)
def test_one_field_of_a_valid_message_replaced_by_anything(
    body: dict[str, Any], field: str, value: object
) -> None:
    body[field] = value
    parse_or_invalid(body)


@PROPERTY
@given(valid_bodies(), st.sampled_from(["name", "contentType", "contentBase64", "blob", "inline", "contentId"]), json_values)
def test_one_attachment_field_replaced_by_anything(body: dict[str, Any], field: str, value: object) -> None:
    body.setdefault("attachments", [{"name": "a.txt", "contentBase64": ""}])[0][field] = value
    parse_or_invalid(body)


@PROPERTY
@given(valid_bodies())
def test_valid_bodies_parse(body: dict[str, Any]) -> None:
    message = parse_message(body)
    assert message.recipients
    assert (message.text is not None) or (message.html is not None)


@PROPERTY
@given(valid_bodies(), st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True))
def test_requeue_form_round_trips(body: dict[str, Any], new_id: str) -> None:
    message = parse_message(body)
    requeued = message_to_json(message, id=new_id)
    for encoded in (json.dumps(requeued), base64.b64encode(json.dumps(requeued).encode()).decode()):
        again = parse_message(decode_body(encoded))
        assert again == replace(message, id=new_id)
        assert message_to_json(again, id=new_id) == requeued


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_decode_body_takes_any_text_or_bytes(raw: str | bytes) -> None:
    try:
        assert isinstance(decode_body(raw), dict)
    except InvalidMessage as exc:
        assert [e.field for e in exc.errors] and "\n" not in str(exc)


@PROPERTY
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_body_takes_any_base64(payload: bytes) -> None:
    raw = base64.b64encode(payload).decode()
    try:
        assert isinstance(decode_body(raw), dict)
    except InvalidMessage as exc:
        assert [e.field for e in exc.errors]


@PROPERTY
@given(st.text(max_size=200))
def test_decode_body_takes_anything_that_starts_like_json(tail: str) -> None:
    try:
        result = decode_body("{" + tail)
    except InvalidMessage as exc:
        assert exc.errors
    else:
        assert isinstance(result, dict)
