"""Exchange's size limits as outbox knows them before sending: the size as Exchange counts it (MIME, base64
attachments), the mailbox's MaxSendSize when configured, and the 150 MB ceiling."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from shared.message import Message, parse_message
from shared.render_graph import MAX_MESSAGE_BYTES, exchange_size, size_refusal
from shared.settings import load_settings

MiB = 1024 * 1024
MAX_SEND_35_MB = 36_700_160


def _message(**fields: Any) -> Message:
    body: dict[str, Any] = {"from": "sender@contoso.example", "to": ["a@x.example"], "subject": "", "text": ""}
    body.update(fields)
    return parse_message(body)


def _with_blob_of(size: int) -> Message:
    """A message with one blob attachment of ``size`` bytes (its size known, its content not loaded)."""
    msg = _message(attachments=[{"name": "big.bin", "blob": "outbox-attachments/big.bin"}])
    return replace(msg, attachments=(replace(msg.attachments[0], size=size),))


def test_size_counts_attachments_base64_encoded_and_the_body_graph_gets() -> None:
    raw = b"\0" * 1000
    msg = _message(subject="Hé", text="plain", html="<p>x</p>",
                   attachments=[{"name": "a.bin", "contentBase64": base64.b64encode(raw).decode()}])
    # Graph gets the HTML when there is one: the text is not sent and does not count.
    assert exchange_size(msg) == len("Hé".encode()) + len("<p>x</p>") + 4 * 334
    assert exchange_size(_message(text="plain")) == 5
    assert exchange_size(_with_blob_of(3 * MiB)) == 4 * MiB


def test_exchange_default_max_send_size_takes_about_26_mb_of_attachment() -> None:
    assert size_refusal(_with_blob_of(26 * MiB), max_send_bytes=MAX_SEND_35_MB) is None
    refused = size_refusal(_with_blob_of(27 * MiB), max_send_bytes=MAX_SEND_35_MB)
    assert refused is not None and refused.limit == MAX_SEND_35_MB


@pytest.mark.parametrize("max_send_bytes", [0, MAX_MESSAGE_BYTES, 200 * MiB])
def test_the_150_mb_ceiling_applies_whatever_the_setting(max_send_bytes: int) -> None:
    edge = MAX_MESSAGE_BYTES // 4 * 3  # encodes to exactly 150 MB
    assert size_refusal(_with_blob_of(edge), max_send_bytes=max_send_bytes) is None
    refused = size_refusal(_with_blob_of(edge + 1), max_send_bytes=max_send_bytes)
    assert refused is not None
    assert (refused.limit, refused.size) == (MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 4)
    assert "150 MB" in refused.limit_name


def test_the_mailbox_limit_boundary_and_what_the_refusal_says() -> None:
    msg = _with_blob_of(3000)  # 4000 bytes encoded
    assert size_refusal(msg, max_send_bytes=4000) is None
    refused = size_refusal(msg, max_send_bytes=3999)
    assert refused is not None
    assert (refused.size, refused.limit) == (4000, 3999)
    detail = refused.detail()
    assert "4,000 bytes" in detail and "3,999 bytes" in detail and "MaxSendSize" in detail
    assert "OUTBOX_MAX_SEND_BYTES" in detail
    assert size_refusal(_with_blob_of(100 * MiB), max_send_bytes=0) is None  # 0: the mailbox's limit unknown


def test_sizes_must_be_known() -> None:
    msg = _message(attachments=[{"name": "big.bin", "blob": "outbox-attachments/big.bin"}])
    with pytest.raises(ValueError, match="no known size"):
        exchange_size(msg)


def test_setting_defaults_to_exchange_online_max_send_size() -> None:
    base = {"OUTBOX_QUEUE": "outbox"}
    assert load_settings(base, require_storage=False).max_send_bytes == MAX_SEND_35_MB
    assert load_settings({**base, "OUTBOX_MAX_SEND_BYTES": "0"}, require_storage=False).max_send_bytes == 0
