"""Helpers shared by the transport integration tests (certificates, tokens, Graph, SMTP).

The fakes run in process (``harness.up.Harness``); outbox reaches them exactly as in production:
DefaultAzureCredential through IDENTITY_ENDPOINT/IDENTITY_HEADER, MSAL against the fake authority,
httpx/smtplib with the harness CA bundle given explicitly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from harness import up
from shared.message import Message, parse_message
from shared.message_id import make_message_id
from shared.settings import Settings, load_settings

# Time-based behaviour shrunk so tests run in seconds.
FAST = {
    "OUTBOX_HTTP_TIMEOUT_S": "5",
    "OUTBOX_SMTP_TIMEOUT_S": "5",
    "OUTBOX_PACING_MAX_WAIT_S": "0.5",
    "OUTBOX_BACKOFF_BASE_S": "1",
}
SENDER = "sender@contoso.example"


def settings_for(harness: Any, **overrides: str) -> Settings:
    values = dict(harness.settings_values())
    values.update(FAST)
    values.update(overrides)
    return load_settings(values, require_storage=False)


def identity_environment(harness: Any) -> contextlib.AbstractContextManager[None]:
    """The managed-identity variables the Functions platform sets (DefaultAzureCredential reads them)."""
    return up.identity_environment(harness.settings_values())


class MemoryBlobs:
    """A BlobSource over a dict; records how it was read (the streaming test checks chunk sizes)."""

    def __init__(self, blobs: Mapping[str, bytes], *, chunk: int = 1_000_000) -> None:
        self.blobs = dict(blobs)
        self.chunk = chunk
        self.read_all_calls: list[str] = []
        self.largest_chunk = 0

    def size(self, ref: str) -> int:
        return len(self.blobs[ref])

    def read_range(self, ref: str, offset: int, length: int) -> Iterator[bytes]:
        data = self.blobs[ref][offset : offset + length]
        # Deliberately not the range's size: the transport must stream whatever pieces come.
        for start in range(0, len(data), self.chunk):
            piece = data[start : start + self.chunk]
            self.largest_chunk = max(self.largest_chunk, len(piece))
            yield piece

    def read_all(self, ref: str) -> bytes:
        self.read_all_calls.append(ref)
        return self.blobs[ref]


def message(key: str = "m1", **fields: Any) -> tuple[Message, str]:
    """A parsed message from SENDER and the Message-ID outbox would give it."""
    body = {"from": SENDER, "to": ["ann@fabrikam.example"], "subject": f"subject {key}", "text": "hello"}
    body.update(fields)
    msg = parse_message(body)
    return msg, make_message_id(key, msg.sender.address)


def from_threads(send_one: Callable[[str], object], *, threads: int = 8, each: int = 3) -> list[BaseException]:
    """``threads`` threads each call ``send_one(key)`` ``each`` times at once; returns what they raised."""
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(each):
                send_one(f"t{n}-{i}")
        except BaseException as exc:  # surfaced to the test
            errors.append(exc)

    started = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join(30)
    return errors
