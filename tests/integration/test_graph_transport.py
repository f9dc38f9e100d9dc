"""Graph sendMail against the fake Graph: happy path, classified failures, pacing, large attachments."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import pytest

from shared.errors import OutboxError
from shared.http import build_client
from shared.pacing import PAUSED_CODE
from shared.senders import Senders
from shared.transports.graph import GraphTransport
from tests.integration.transport_support import SENDER, MemoryBlobs, from_threads, message

SEND = "POST /v1.0/users/{user}/sendMail"
PUT = "PUT /api/v2.0/{tail}"
TOKEN_POST = "POST /{tenant}/oauth2/v2.0/token"
MiB = 1024 * 1024




def send(senders: Senders, msg, mid, blobs=None):
    return senders.transport("graph").send(msg, internet_message_id=mid, blobs=blobs)


def graph_count(fakes, key: str) -> int:
    return fakes.state.count("graph", key)


def test_happy_path_records_every_field(fakes, senders):
    msg, mid = message(
        cc=[{"address": "cc@fabrikam.example", "name": "C C"}],
        bcc=["hidden@fabrikam.example"],
        html="<p>hello</p>",
        headers={"X-Ticket": "42"},
    )
    result = send(senders, msg, mid)
    assert (result.transport, result.mailbox, result.path) == ("graph", SENDER, "sendMail")
    assert result.internet_message_id == mid
    assert result.request_id and result.client_request_id and result.duration_ms > 0
    [delivery] = fakes.deliveries(transport="graph")
    assert delivery.mailbox == SENDER and delivery.sender == SENDER
    assert set(delivery.recipients) == {"ann@fabrikam.example", "cc@fabrikam.example", "hidden@fabrikam.example"}
    assert delivery.subject == "subject m1"
    assert delivery.message_id == mid
    assert delivery.saved_to_sent_items is True
    assert delivery.request_id == result.request_id
    assert delivery.extra["clientRequestId"] == result.client_request_id
    assert delivery.app_id == fakes.scenario.sender.client_id
    assert graph_count(fakes, SEND) == 1


def test_keep_alive_and_cached_token_across_messages(fakes, senders):
    for i in range(5):
        msg, mid = message(f"k{i}")
        send(senders, msg, mid)
    assert len(fakes.deliveries()) == 5
    assert fakes.state.count("entra", TOKEN_POST) == 1


def test_sent_items_lookup(fakes, senders):
    msg, mid = message()
    graph = senders.transport("graph")
    assert graph.find_sent(msg, internet_message_id=mid) is False
    send(senders, msg, mid)
    assert graph.find_sent(msg, internet_message_id=mid) is True


def test_lookup_without_mail_readbasic_cannot_tell(fakes, senders):
    fakes.apply_scenario({"apps": {"outbox-sender": {"graph_roles": ["Mail.Send"]}}})
    msg, mid = message()
    send(senders, msg, mid)
    assert senders.transport("graph").find_sent(msg, internet_message_id=mid) is None


def test_save_to_sent_items_false_is_honoured_and_lookup_says_cannot_tell(fakes, senders):
    msg, mid = message(saveToSentItems=False)
    send(senders, msg, mid)
    [delivery] = fakes.deliveries()
    assert delivery.saved_to_sent_items is False
    assert senders.transport("graph").find_sent(msg, internet_message_id=mid) is None


def test_expired_token_gets_one_fresh_token_retry(fakes, senders):
    msg, mid = message()
    send(senders, msg, mid)  # a token is cached
    fakes.set_fault(service="graph", operation="sendMail", catalog="graph.token_expired", times=1)
    msg2, mid2 = message("m2")
    result = send(senders, msg2, mid2)
    assert result.path == "sendMail"
    assert fakes.state.count("entra", TOKEN_POST) == 2
    assert graph_count(fakes, SEND) == 3
    assert len(fakes.deliveries()) == 2


def test_expired_token_twice_is_raised(fakes, senders):
    fakes.set_fault(service="graph", operation="sendMail", catalog="graph.token_expired", times=2)
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    assert (info.value.category, info.value.status) == ("auth", 401)
    assert graph_count(fakes, SEND) == 2


def test_invalid_audience_is_auth_and_not_retried(fakes, senders):
    fakes.set_fault(service="graph", operation="sendMail", catalog="graph.invalid_audience", times=1)
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.status, err.retryable, err.maybe_delivered) == ("auth", 401, False, False)
    assert "graph.microsoft.com" in err.hint
    assert graph_count(fakes, SEND) == 1


def test_mailbox_outside_the_access_policy_is_permission(fakes, senders):
    msg, mid = message(**{"from": "other@contoso.example"})
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.status, err.code) == ("permission", 403, "ErrorAccessDenied")
    assert "ApplicationAccessPolicy" in err.hint
    assert err.request_id and err.client_request_id
    assert not fakes.deliveries()


def test_429_pauses_that_mailbox_only(fakes, senders):
    fakes.set_fault(
        service="graph", operation="sendMail", mailbox=SENDER, catalog="graph.too_many_requests",
        retry_after=30, times=1,
    )
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.retryable, err.retry_after) == ("throttled", True, 30)
    assert senders.pacing.graph.paused_for(SENDER) > 25
    requests = graph_count(fakes, SEND)
    msg2, mid2 = message("m2")
    with pytest.raises(OutboxError) as info:
        send(senders, msg2, mid2)
    assert (info.value.code, info.value.request_sent) == (PAUSED_CODE, False)
    assert info.value.retry_after > 25
    assert graph_count(fakes, SEND) == requests  # nothing was sent for the paused mailbox
    other, other_mid = message("m3", **{"from": "noreply@contoso.example"})
    send(senders, other, other_mid)  # another mailbox is not paused
    assert len(fakes.deliveries()) == 1


def test_504_is_maybe_delivered(fakes, senders):
    fakes.set_fault(service="graph", operation="sendMail", catalog="graph.gateway_timeout", times=1)
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.status, err.retryable) == ("transient", 504, True)
    assert err.request_sent and err.maybe_delivered
    assert graph_count(fakes, SEND) == 1  # never retried inside the invocation


def test_connection_dropped_after_the_body_is_maybe_delivered_and_found_in_sent_items(fakes, senders):
    fakes.set_fault(service="graph", operation="sendMail", action="drop_after_body", times=1)
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    assert info.value.maybe_delivered and info.value.request_sent
    assert len(fakes.deliveries()) == 1
    assert senders.transport("graph").find_sent(msg, internet_message_id=mid) is True


def test_graph_down_is_transient_and_nothing_was_sent(fakes, senders):
    senders.tokens.token(senders.settings.graph_scope)
    fakes.set_fault(service="graph", action="down")
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.retryable, err.request_sent, err.maybe_delivered) == ("transient", True, False, False)


def test_at_most_four_requests_in_flight_per_mailbox(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_PACING_MAX_WAIT_S="5")
    fakes.set_fault(service="graph", operation="sendMail", action="latency", latency_s=0.05)
    send(senders, *message("warm"))
    errors = from_threads(lambda key: send(senders, *message(key)))
    assert not errors
    assert len(fakes.deliveries()) == 25
    assert fakes.state.count("graph", "status:429") == 0


def test_large_blob_attachment_goes_through_an_upload_session_in_ranges(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_UPLOAD_CHUNK_BYTES=str(2 * MiB))
    big = os.urandom(5 * MiB)
    blobs = MemoryBlobs({"outbox-attachments/big.bin": big}, chunk=700_000)
    msg, mid = message(
        attachments=[
            {"name": "big.bin", "blob": "outbox-attachments/big.bin"},
            {"name": "note.txt", "contentBase64": base64.b64encode(b"small").decode()},
        ]
    )
    result = send(senders, msg, mid, blobs)
    assert result.path == "uploadSession"
    [delivery] = fakes.deliveries()
    assert delivery.message_id == mid
    assert delivery.request_id == result.request_id
    attachments = {a["name"]: a for a in delivery.extra["attachments"]}
    assert attachments["big.bin"]["via"] == "uploadSession"
    assert attachments["big.bin"]["size"] == len(big)
    assert attachments["big.bin"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert attachments["note.txt"]["via"] == "inline"
    assert graph_count(fakes, PUT) == 3  # 2 + 2 + 1 MiB
    assert blobs.read_all_calls == []  # streamed, never read whole
    assert senders.transport("graph").find_sent(msg, internet_message_id=mid) is True


def test_large_message_with_save_to_sent_items_false_is_refused_before_sending(fakes, senders):
    blobs = MemoryBlobs({"outbox-attachments/big.bin": os.urandom(4 * MiB)})
    msg, mid = message(saveToSentItems=False, attachments=[{"name": "big.bin", "blob": "outbox-attachments/big.bin"}])
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid, blobs)
    err = info.value
    assert (err.category, err.code, err.request_sent) == ("invalid_message", "outbox.large_message_saves_copy", False)
    assert "smtp" in err.hint
    assert fakes.state.count("graph") == 0


def test_failed_upload_is_not_maybe_delivered(fakes, senders):
    fakes.set_fault(service="graph", operation="upload", catalog="graph.service_unavailable", times=1)
    blobs = MemoryBlobs({"outbox-attachments/big.bin": os.urandom(4 * MiB)})
    msg, mid = message(attachments=[{"name": "big.bin", "blob": "outbox-attachments/big.bin"}])
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid, blobs)
    err = info.value
    assert (err.category, err.retryable, err.maybe_delivered) == ("transient", True, False)
    assert not fakes.deliveries()


def test_read_timeout_after_the_body_is_maybe_delivered(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_HTTP_TIMEOUT_S="0.3")
    senders.tokens.token(senders.settings.graph_scope)
    fakes.set_fault(service="graph", operation="sendMail", action="latency", latency_s=1.0, times=1)
    msg, mid = message()
    with pytest.raises(OutboxError) as info:
        send(senders, msg, mid)
    err = info.value
    assert (err.category, err.retryable, err.request_sent, err.maybe_delivered) == ("transient", True, True, True)
    assert err.client_request_id
    # The server finishes the request after the client gave up: it was indeed sent.
    assert len(fakes.wait_for_deliveries(1, timeout=5)) == 1


class _BodyCutOff(httpx.BaseTransport):
    """The real connection to the fake Graph, except that sendMail's body breaks off on the way out.

    A seam: no server can make the client's write fail on cue (the kernel buffers a whole sendMail
    body), so the failure httpx raises then (WriteError) is raised here, before any byte arrives."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/sendMail"):
            raise httpx.WriteError("[Errno 104] Connection reset by peer", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_body_that_did_not_finish_going_out_is_not_maybe_delivered(fakes, senders):
    # A lost connection after a request is ambiguous (the server may act on it); a lost connection while
    # its body was still being written is not: a partial request is never acted on, so resending is safe.
    settings = senders.settings
    inner = httpx.HTTPTransport(verify=settings.ssl_context())
    with build_client(settings, transport=_BodyCutOff(inner)) as client:
        transport = GraphTransport(settings, senders.credentials, senders.pacing, client)
        with pytest.raises(OutboxError) as info:
            msg, mid = message("cut")
            transport.send(msg, internet_message_id=mid, blobs=None)
    err = info.value
    assert (err.category, err.retryable, err.maybe_delivered) == ("transient", True, False)
    assert not fakes.deliveries()


def test_a_late_504_delivery_is_found_in_drafts_then_sent_items(fakes, senders):
    from shared.transports.base import InDrafts

    fakes.apply_scenario({"exchange": {"ambiguous_delivery_delay_s": 0.8}})
    fakes.set_fault(service="graph", operation="sendMail", catalog="graph.gateway_timeout", times=1,
                    params={"delivered": "true"})
    msg, mid = message()
    graph = senders.transport("graph")
    with pytest.raises(OutboxError) as err:
        send(senders, msg, mid)
    assert err.value.maybe_delivered
    found = graph.find_sent(msg, internet_message_id=mid)
    # Exchange's own copy, on its way: the pipeline waits instead of resending.
    assert isinstance(found, InDrafts) and not found.ours
    fakes.wait_for_deliveries(1, timeout=10, transport="graph")
    assert graph.find_sent(msg, internet_message_id=mid) is True
    assert len(fakes.deliveries()) == 1
