"""The fake Graph binds a sendMail body as Graph does: parameters in any case, properties by their exact
names and types (harness/graph_metadata.py), JSON only with a JSON Content-Type; and outbox's renderer
writes only what that metadata allows."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import graph_metadata
from harness.up import Harness
from shared.message import parse_message
from shared.message_id import make_message_id
from shared.render_graph import render_draft_message, render_send_mail, render_sent_copy, to_json_bytes

SENDER = "sender@contoso.example"
SENT_AT = dt.datetime(2026, 12, 4, 7, 0, tzinfo=dt.UTC)


@pytest.fixture
def graph(harness: Harness) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(harness.ca_bundle))
    with httpx.Client(base_url=harness.url("graph"), verify=context, timeout=15,
                      headers={"Authorization": f"Bearer {harness.mint_token('graph')}"}) as client:
        yield client


def _post(graph: httpx.Client, body: Any, *, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"client-request-id": str(uuid.uuid4())}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return graph.post(f"/v1.0/users/{SENDER}/sendMail", content=json.dumps(body).encode(), headers=headers)


def _message(**extra: Any) -> dict[str, Any]:
    return {"subject": "Hi", "body": {"contentType": "Text", "content": "Hi"},
            "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}], **extra}


# What msgraph-sdk-python 1.x puts on the wire for users.by_user_id(..).send_mail.post(SendMailPostRequestBody(
# message=Message(...), save_to_sent_items=True)): the action's parameters with their metadata names, the
# attachment typed with @odata.type (recorded body; the SDK itself is not installed here, 470 MB).
SDK_BODY = {
    "Message": {
        "subject": "From the SDK",
        "body": {"content": "Hello", "contentType": "text"},
        "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}],
        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "contentBytes": "aGVsbG8=",
                         "contentType": "text/plain", "name": "a.txt"}],
    },
    "SaveToSentItems": True,
}


def test_the_sdks_pascal_case_parameters_bind(harness: Harness, graph: httpx.Client) -> None:
    response = _post(graph, SDK_BODY)
    assert response.status_code == 202, response.text
    [delivery] = harness.deliveries(transport="graph")
    assert delivery.subject == "From the SDK" and delivery.saved_to_sent_items
    assert _post(graph, {"message": _message(), "saveToSentItems": False}).status_code == 202


@pytest.mark.parametrize("body, text", [
    ({"message": _message(subjectLine="x")},
     "The property 'subjectLine' does not exist on type 'Microsoft.OutlookServices.Message'."),
    ({"message": _message(toRecipients=[{"emailAddress": {"address": "a@b.example", "displayName": "A"}}])},
     "The property 'displayName' does not exist on type 'Microsoft.OutlookServices.EmailAddress'."),
    ({"message": _message(Subject="x")},  # properties bind by their exact name
     "The property 'Subject' does not exist on type 'Microsoft.OutlookServices.Message'."),
    ({"message": _message(), "saveToSentItems": "maybe"},
     "Cannot convert the literal 'maybe' to the expected type 'Edm.Boolean'."),
    ({"message": _message(subject=42)}, "Cannot convert the literal '42' to the expected type 'Edm.String'."),
    ({"message": _message(importance="urgent")},
     "Cannot convert the literal 'urgent' to the expected type 'microsoft.graph.importance'."),
    ({"message": _message(toRecipients="ana@fabrikam.example")}, "to the expected type 'Collection("),
    ({"message": _message(), "saveToSent": True},
     "The parameter 'saveToSent' in the request payload is not a valid parameter for the operation 'sendMail'."),
])
def test_what_does_not_bind_is_400_request_body_read(harness: Harness, graph: httpx.Client, body: dict[str, Any],
                                                       text: str) -> None:
    response = _post(graph, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "RequestBodyRead" and text in error["message"]
    assert harness.deliveries() == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_without_a_json_content_type_is_not_read(harness: Harness, graph: httpx.Client,
                                                        content_type: str | None) -> None:
    response = _post(graph, {"message": _message()}, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "Content-Type" in response.json()["error"]["message"]
    assert _post(graph, {"message": _message()}, content_type="application/json; charset=utf-8").status_code == 202


_ADDRESS = st.sampled_from(["ana@fabrikam.example", {"address": "bo@fabrikam.example", "name": "Bo, B."},
                            "Cy <cy@b\u00fccher.example>"])


@settings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(
    {"from": st.just(SENDER), "to": st.lists(_ADDRESS, min_size=1, max_size=3)},
    optional={
        "cc": st.lists(_ADDRESS, max_size=2), "bcc": st.lists(_ADDRESS, max_size=2),
        "replyTo": st.lists(_ADDRESS, max_size=2), "subject": st.text(max_size=30).filter(str.isprintable),
        "text": st.text(max_size=40).filter(lambda t: "\x00" not in t), "html": st.just("<p>Hi</p>"),
        "importance": st.sampled_from(["low", "normal", "HIGH"]), "saveToSentItems": st.booleans(),
        "headers": st.dictionaries(st.sampled_from(["X-A", "X-Order", "X-Trace"]), st.text("abc", max_size=5),
                                   max_size=3),
        "attachments": st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["a.txt", "logo.png"]), "contentBase64": st.just("aGk=")},
            optional={"inline": st.booleans(), "contentType": st.just("image/png")}), max_size=2),
    },
))
def test_outbox_renders_only_what_graphs_metadata_binds(body: dict[str, Any]) -> None:
    if "text" not in body and "html" not in body:
        body["text"] = "x"
    message = parse_message(body)
    imid = make_message_id("m", SENDER)
    rendered = json.loads(to_json_bytes(render_send_mail(message, internet_message_id=imid)))
    params, problem = graph_metadata.bind_send_mail(rendered)
    assert problem is None, (problem, rendered)
    assert set(params) <= {"Message", "SaveToSentItems"} and "Message" in params
    draft = json.loads(to_json_bytes(render_draft_message(message, internet_message_id=imid)))
    assert graph_metadata.check_object(draft, "microsoft.graph.message") is None, draft
    copy = json.loads(to_json_bytes(render_sent_copy(message, internet_message_id=imid, sent_at=SENT_AT)))
    assert graph_metadata.check_object(copy, "microsoft.graph.message") is None, copy
