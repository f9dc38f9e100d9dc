"""Exchange's size limits on the Graph path, outbox against the fake Graph: what outbox knows up front is
refused before any request (category size, naming the limit); what it does not know is Exchange's
mid-upload 400 ErrorMessageSizeExceeded, classified size and not retryable."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest

from shared.errors import OutboxError
from tests.integration.transport_support import SENDER, MemoryBlobs, message

MiB = 1024 * 1024
BIG = "outbox-attachments/big.bin"


class DeclaredBlobs:
    """Blobs of a declared size whose content must never be read (a refusal up front reads none)."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes

    def size(self, ref: str) -> int:
        return self.sizes[ref]

    def read_range(self, ref: str, offset: int, length: int) -> Iterator[bytes]:
        raise AssertionError(f"{ref} read although the message was refused up front")

    def read_all(self, ref: str) -> bytes:
        raise AssertionError(f"{ref} read although the message was refused up front")


def _send(senders, msg, mid, blobs):
    return senders.transport("graph").send(msg, internet_message_id=mid, blobs=blobs)


def _refused(senders, msg, mid, blobs) -> OutboxError:
    with pytest.raises(OutboxError) as info:
        _send(senders, msg, mid, blobs)
    return info.value


def test_40_mb_attachment_to_a_35_mb_mailbox_is_refused_before_any_request(fakes, senders):
    msg, mid = message(attachments=[{"name": "big.bin", "blob": BIG}])
    err = _refused(senders, msg, mid, DeclaredBlobs({BIG: 40 * MiB}))
    assert (err.category, err.code, err.retryable, err.request_sent) == ("size", "outbox.message_too_large", False, False)
    assert "MaxSendSize (OUTBOX_MAX_SEND_BYTES) of 36,700,160 bytes" in err.detail
    counted = len("subject m1" "hello") + 4 * ((40 * MiB + 2) // 3)  # subject, body, base64 of the attachment
    assert f"the message is {counted:,} bytes" in err.detail
    assert "OUTBOX_MAX_SEND_BYTES" in err.hint and "Set-Mailbox" in err.hint
    assert fakes.state.count("graph") == 0
    assert fakes.deliveries() == []


def test_over_150_mb_is_refused_even_when_the_mailbox_limit_is_unknown(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_MAX_SEND_BYTES="0")
    msg, mid = message(attachments=[{"name": "big.bin", "blob": BIG}])
    err = _refused(senders, msg, mid, DeclaredBlobs({BIG: 113 * MiB}))  # 150.7 MiB encoded
    assert (err.category, err.code) == ("size", "outbox.message_too_large")
    assert "150 MB message limit of 157,286,400 bytes" in err.detail
    assert fakes.state.count("graph") == 0


def test_a_small_inline_message_over_a_small_configured_limit_is_refused_too(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_MAX_SEND_BYTES="1000")
    attachment = {"name": "a.bin", "contentBase64": base64.b64encode(b"\0" * 1000).decode()}
    msg, mid = message(attachments=[attachment])
    err = _refused(senders, msg, mid, None)
    assert (err.category, err.code) == ("size", "outbox.message_too_large")
    assert fakes.state.count("graph") == 0
    ok, ok_mid = message("m2")
    _send(senders, ok, ok_mid, None)
    assert len(fakes.deliveries()) == 1


def test_with_the_limit_unknown_the_mid_upload_refusal_is_a_permanent_size_error(fakes, make_senders):
    fakes.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 5 * MiB}}})
    senders = make_senders(fakes, OUTBOX_MAX_SEND_BYTES="0", OUTBOX_UPLOAD_CHUNK_BYTES=str(2 * MiB))
    blobs = MemoryBlobs({BIG: os.urandom(9 * MiB // 2)})  # 6 MiB encoded: over 5 MiB at the second PUT
    msg, mid = message(attachments=[{"name": "big.bin", "blob": BIG}])
    err = _refused(senders, msg, mid, blobs)
    assert (err.category, err.code, err.status) == ("size", "ErrorMessageSizeExceeded", 400)
    assert (err.retryable, err.maybe_delivered) == (False, False)
    assert err.catalog == "graph.message_size_exceeded"
    puts = [r.status for r in fakes.state.requests(service="graph") if r.operation.startswith("PUT")]
    assert puts == [200, 400]
    assert fakes.deliveries() == []


def test_the_same_upload_goes_through_when_the_mailbox_allows_it(fakes, make_senders):
    fakes.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 7 * MiB}}})
    senders = make_senders(fakes, OUTBOX_MAX_SEND_BYTES=str(7 * MiB), OUTBOX_UPLOAD_CHUNK_BYTES=str(2 * MiB))
    blobs = MemoryBlobs({BIG: os.urandom(9 * MiB // 2)})
    msg, mid = message(attachments=[{"name": "big.bin", "blob": BIG}])
    assert _send(senders, msg, mid, blobs).path == "uploadSession"
    assert len(fakes.deliveries()) == 1
