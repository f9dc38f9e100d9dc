"""Shared pieces of the pipeline tests: real storage (Azurite), a scripted transport at the seam.

The transport is the one seam replaced here: the transports have their own tests against the fakes, and
the end-to-end tests run the real ones. Status table, queues and blobs are the real code over Azurite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.errors import OutboxError
from shared.transports.base import SendResult
from tests.waiting import poll

SENDER = "sender@contoso.example"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def message(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": SENDER, "to": ["rcpt@fabrikam.example"], "subject": "Hello", "text": "Body"}
    body.update(fields)
    return body


@dataclass
class ScriptedTransport:
    """Answers ``send``/``find_sent`` from scripts: an exception is raised, anything else returned."""

    name: str
    send_script: list[Any] = field(default_factory=list)
    find_script: list[Any] = field(default_factory=list)
    sent: list[tuple[Any, str]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def send(self, message: Any, *, internet_message_id: str, blobs: Any) -> SendResult:
        self.sent.append((message, internet_message_id))
        step = self.send_script.pop(0) if self.send_script else None
        if isinstance(step, BaseException):
            raise step
        return SendResult(transport=self.name, mailbox=message.sender.address, internet_message_id=internet_message_id,
                          request_id=f"req-{len(self.sent)}", client_request_id=f"creq-{len(self.sent)}",
                          duration_ms=1.0)

    def find_sent(self, message: Any, *, internet_message_id: str) -> bool | None:
        self.lookups.append(internet_message_id)
        step = self.find_script.pop(0) if self.find_script else None
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self) -> None:
        pass


class ScriptedSenders:
    def __init__(self) -> None:
        self.graph = ScriptedTransport("graph")
        self.smtp = ScriptedTransport("smtp")

    def transport(self, name: str) -> ScriptedTransport:
        return {"graph": self.graph, "smtp": self.smtp}[name]

    def close(self) -> None:
        pass


def drain(queue_client: Any, *, wait_s: float = 0.0) -> list[Any]:
    """Receive (and delete) every visible message; when there is none, wait up to ``wait_s`` for one."""
    out: list[Any] = []

    def received() -> bool:
        while got := list(queue_client.receive_messages(messages_per_page=32, max_messages=32,
                                                        visibility_timeout=30)):
            for m in got:
                queue_client.delete_message(m)
            out.extend(got)
        return bool(out)

    poll(received, wait_s, poll_s=0.05)  # nothing within wait_s: the empty list says so
    return out


def poison_envelopes(queue_client: Any) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in drain(queue_client)]


def errors(code: str, category: str, **kw: Any) -> OutboxError:
    return OutboxError(category, code, **kw)


def iter_logs(records: list[Any], event: str = "outbox.outcome") -> Iterator[dict[str, Any]]:
    for r in records:
        dims = getattr(r, "custom_dimensions", None)
        if isinstance(dims, dict) and dims.get("event") == event:
            yield dims
