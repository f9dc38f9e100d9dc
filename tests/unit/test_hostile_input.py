"""A producer's values are hostile: attachments only from the attachment containers, an id never
drops another message, any body decodes to an answer (issue: close the hole, drop no message)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.azurite import Azurite
from shared.acceptance import NotAccepted, accept
from shared.errors import OutboxError
from shared.message import fingerprint, parse_message
from shared.settings import SettingsError, load_settings
from shared.storage.blobs import AzureBlobSource
from tests.unit.test_pipeline import World
from tests.unit.test_pipeline_support import message

HOST_BLOBS = (
    "azure-webjobs-secrets/func-outbox/host.json",      # the host and function keys
    "azure-webjobs-hosts/locks/func-outbox/host",       # the host's lock container
    "app-package-func-outbox-1a2b3c4/released.zip",     # the Flex deployment container
    "some-other-container/report.pdf",
)


@pytest.fixture
def world(azurite: Azurite) -> World:
    return World(azurite.connection_string)


def _with_blob(ref: str) -> dict[str, Any]:
    return message(attachments=[{"name": "a.pdf", "blob": ref}])


# -- attachments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", HOST_BLOBS)
def test_a_blob_outside_the_attachment_container_is_poisoned_at_once_and_never_read(
        world: World, azurite: Azurite, ref: str) -> None:
    # The blob exists (with a secret in it): only the rule stops it, not a 404.
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container, name = ref.split("/", 1)
    if not service.get_container_client(container).exists():
        service.get_container_client(container).create_container()
    service.get_blob_client(container, name).upload_blob(b'{"masterKey": "s3cret"}', overwrite=True)
    requests: list[str] = []
    world.pipeline.blobs = AzureBlobSource(
        BlobServiceClient.from_connection_string(
            azurite.connection_string, raw_request_hook=lambda r: requests.append(r.http_request.url)),
        containers=world.settings.attachment_containers)

    out = world.handle(_with_blob(ref), qid="q-host")

    assert out.kind == "poisoned" and out.category == "invalid_message" and out.attempt == 1
    assert out.invalid == [{"field": "attachments[0].blob", "message": out.invalid[0]["message"]}]
    assert f"container {container!r} is not an attachment container" in out.invalid[0]["message"]
    assert world.senders.graph.sent == [] and requests == []
    [envelope] = world.poisoned()
    assert envelope["error"]["category"] == "invalid_message" and envelope["error"]["retryable"] is False


def test_the_blob_reader_refuses_other_containers_before_any_request(azurite: Azurite) -> None:
    requests: list[str] = []
    source = AzureBlobSource(
        BlobServiceClient.from_connection_string(
            azurite.connection_string, raw_request_hook=lambda r: requests.append(r.http_request.url)),
        containers=("outbox-attachments",))
    for ref in (*HOST_BLOBS, "outbox-attachments/poison/other-id/2026.json"):
        with pytest.raises(OutboxError) as caught:
            source.size(ref)
        assert caught.value.category == "invalid_message" and caught.value.code == "attachment.container_not_allowed"
    assert requests == []


def test_outbox_own_parked_originals_are_not_attachments() -> None:
    with pytest.raises(Exception, match="poison/"):
        parse_message(_with_blob("outbox-attachments/poison/x/2026.json"))


def test_extra_attachment_containers_are_allowed_but_never_the_hosts() -> None:
    base = {"OUTBOX_QUEUE": "q", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    s = load_settings({**base, "OUTBOX_ATTACHMENT_CONTAINERS": "invoices, reports"})
    assert s.attachment_containers == ("outbox-attachments", "invoices", "reports")
    for bad in ("azure-webjobs-secrets", "app-package-func-1", "Bad_Name"):
        with pytest.raises(SettingsError) as caught:
            load_settings({**base, "OUTBOX_ATTACHMENT_CONTAINERS": bad})
        assert caught.value.names == ("OUTBOX_ATTACHMENT_CONTAINERS",)
    with pytest.raises(SettingsError):
        load_settings({**base, "OUTBOX_ATTACHMENTS_CONTAINER": "azure-webjobs-secrets"})


# -- idempotency ---------------------------------------------------------------------------------------


def test_fingerprint_is_the_message_not_its_encoding() -> None:
    body = message(id="f-1", to=["Ann@Fabrikam.EXAMPLE"], attachments=[{"name": "a.txt", "contentBase64": "aGk="}])
    same = {k: body[k] for k in reversed(list(body))} | {"to": ["Ann@fabrikam.example"]}
    assert fingerprint(parse_message(body)) == fingerprint(parse_message(same))
    for change in ({"subject": "Other"}, {"to": ["bob@fabrikam.example"]}, {"text": "Body!"},
                   {"attachments": [{"name": "a.txt", "contentBase64": "aGo="}]}, {"headers": {"X-A": "1"}}):
        assert fingerprint(parse_message({**body, **change})) != fingerprint(parse_message(body)), change
    # The id is the key, not part of the content.
    assert fingerprint(parse_message({**body, "id": "f-2"})) == fingerprint(parse_message(body))


def test_the_same_id_with_other_content_is_poisoned_and_the_first_is_untouched(world: World) -> None:
    monday = message(id="daily-q", subject="queued monday")
    assert world.handle(monday, qid="q-mon").kind == "sent"
    first = world.status.get("daily-q")
    assert first is not None

    tuesday = world.handle(message(id="daily-q", subject="queued tuesday"), qid="q-tue")

    assert tuesday.kind == "poisoned" and tuesday.code == "outbox.id_reused" and tuesday.category == "invalid_message"
    assert len(world.senders.graph.sent) == 1
    [envelope] = world.poisoned()
    assert envelope["message"]["subject"] == "queued tuesday"
    assert "'daily-q' was first used at" in envelope["error"]["detail"] and "new id" in envelope["error"]["hint"]
    assert world.status.get("daily-q") == first  # Monday's row, as it was
    # The same content again is still a plain duplicate.
    assert world.handle(monday, qid="q-mon-again").kind == "duplicate"
    assert len(world.senders.graph.sent) == 1


def test_reusing_a_retrying_messages_id_does_not_disturb_it(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("transient", "serviceNotAvailable", status=503, retryable=True)]
    assert world.handle(message(id="r-1"), qid="q-1").kind == "retry"
    assert world.handle(message(id="r-1", subject="else"), qid="q-2").kind == "poisoned"
    [retry] = world.requeued()
    assert world.handle(retry, qid="q-1b").kind == "sent"
    assert [m.subject for m, _ in world.senders.graph.sent] == ["Hello", "Hello"]


def test_enqueue_refuses_other_content_and_marks_duplicates(world: World) -> None:
    from shared.pipeline import IdConflict

    first = world.pipeline.enqueue(message(id="e-1"))
    assert not first.duplicate and first.row.state == "queued"
    again = world.pipeline.enqueue(message(id="e-1"))
    # Still only queued: the first copy may never have reached the queue, so it goes there again.
    assert again.duplicate and again.row.state == "queued"
    with pytest.raises(IdConflict) as caught:
        world.pipeline.enqueue(message(id="e-1", subject="another"))
    assert caught.value.message_id == "e-1" and "first used at" in caught.value.error.detail
    bodies = world.requeued()
    assert [b["subject"] for b in bodies] == ["Hello", "Hello"]
    assert world.handle(bodies[0], qid="q-a").kind == "sent"
    assert world.handle(bodies[1], qid="q-b").kind == "duplicate"
    assert len(world.senders.graph.sent) == 1
    # Once sent, the same message is answered as a duplicate and not queued again.
    done = world.pipeline.enqueue(message(id="e-1"))
    assert done.duplicate and done.row.state == "sent" and world.requeued() == []


def test_a_corrected_message_may_take_the_id_of_an_invalid_one(world: World) -> None:
    assert world.handle(message(id="fix-1", to=["nobody"]), qid="q-bad").kind == "poisoned"
    done = world.pipeline.enqueue(message(id="fix-1"))
    assert not done.duplicate and done.row.state == "queued"
    [body] = world.requeued()
    assert world.handle(body, qid="q-good").kind == "sent"


def test_send_now_answers_a_reused_id_as_a_conflict(world: World) -> None:
    assert world.pipeline.send_now(message(id="n-1")).kind == "sent"
    out = world.pipeline.send_now(message(id="n-1", text="different"))
    assert out.kind == "conflict" and out.code == "outbox.id_reused" and out.state == "sent"
    assert len(world.senders.graph.sent) == 1 and world.poisoned() == []


# -- any body is an answer -----------------------------------------------------------------------------


def test_a_number_of_5000_digits_is_an_invalid_message_not_a_crash() -> None:
    body = '{"id": ' + "9" * 5000 + ', "from": "a@contoso.example"}'
    for data in (body, body.encode(), base64.b64encode(body.encode()).decode()):
        with pytest.raises(NotAccepted) as caught:
            accept(data, _Rules(), fallback_id="q-1")
        assert caught.value.unreadable and "refused" in str(caught.value.error)


class _Rules:
    allowed_senders = ("*@contoso.example",)
    transport = "graph"
    attachment_containers = ("outbox-attachments",)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_FIELDS = st.sampled_from(["id", "from", "to", "cc", "subject", "text", "html", "attachments", "headers",
                           "importance", "transport", "saveToSentItems"])


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.dictionaries(_FIELDS, _JSON, max_size=8).map(lambda d: json.dumps(d)),
    st.dictionaries(_FIELDS, _JSON, max_size=8).map(lambda d: base64.b64encode(json.dumps(d).encode()).decode()),
))
def test_any_body_is_accepted_or_refused_never_crashes(data: bytes | str) -> None:
    try:
        accepted = accept(data, _Rules(), fallback_id="q-1")
    except NotAccepted as exc:
        assert exc.message_id and exc.to_list() and all(e["field"] and e["message"] for e in exc.to_list())
    else:
        assert accepted.fingerprint.startswith("sha256:") and accepted.body["id"] == accepted.message_id
