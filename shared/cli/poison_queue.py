"""Reading ``<queue>-poison``: envelopes written by outbox, and raw messages the Functions host moved.

Azure queues can only *peek* the first 32 messages. Listing more, and anything that changes the queue
(requeue, purge), receives messages with a short visibility timeout to get pop receipts; messages that
are only looked at are made visible again at once, so the queue is left as it was found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.message import decode_body

POISON_SCHEMA = "outbox.poison/1"
HOST_MOVED = "host-moved"
HOST_HINT = (
    "the Functions host moved this message after the function failed maxDequeueCount times without "
    "answering (a crash, a timeout, storage failing during the retry/poison write): read the function's "
    "logs for the exception at the time below, fix it, then requeue"
)
PEEK_LIMIT = 32
SCAN_VISIBILITY_S = 120


@dataclass
class PoisonItem:
    queue_message_id: str
    text: str
    inserted_on: datetime | None = None
    dequeue_count: int | None = None
    pop_receipt: str | None = field(default=None, repr=False)
    envelope: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    """The v1 message inside (the envelope's message, or the decoded raw body), when readable."""

    @property
    def host_moved(self) -> bool:
        return self.envelope is None

    @property
    def error(self) -> Mapping[str, Any]:
        return (self.envelope or {}).get("error") or {}

    @property
    def id(self) -> str:
        envelope = self.envelope or {}
        for candidate in (envelope.get("id"), (self.body or {}).get("id")):
            if isinstance(candidate, str) and candidate:
                return candidate
        return self.queue_message_id

    @property
    def category(self) -> str:
        return HOST_MOVED if self.host_moved else str(self.error.get("category") or "unknown")

    @property
    def code(self) -> str | None:
        return None if self.host_moved else self.error.get("code")

    @property
    def hint(self) -> str:
        return HOST_HINT if self.host_moved else str(self.error.get("hint") or "")

    @property
    def mailbox(self) -> str | None:
        sender = (self.body or {}).get("from")
        if isinstance(sender, Mapping):
            sender = sender.get("address")
        return sender.lower() if isinstance(sender, str) and "@" in sender else None

    @property
    def subject(self) -> str | None:
        subject = (self.body or {}).get("subject")
        return subject if isinstance(subject, str) else None

    @property
    def failed_at(self) -> str | None:
        if self.envelope:
            return self.envelope.get("failedAt")
        if self.inserted_on is None:
            return None
        return self.inserted_on.isoformat(timespec="seconds").replace("+00:00", "Z")

    @property
    def message_blob(self) -> str | None:
        ref = (self.envelope or {}).get("messageBlob")
        return ref if isinstance(ref, str) else None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queueMessageId": self.queue_message_id,
            "kind": "host-moved" if self.host_moved else "envelope",
            "category": self.category,
            "code": self.code,
            "status": self.error.get("status"),
            "transport": self.error.get("transport"),
            "mailbox": self.mailbox,
            "subject": self.subject,
            "attempts": (self.envelope or {}).get("attempts"),
            "failedAt": self.failed_at,
            "hint": self.hint,
        }


def parse_item(queue_message_id: str, text: str, **meta: Any) -> PoisonItem:
    item = PoisonItem(queue_message_id, text, **meta)
    envelope: Any = None
    try:
        envelope = json.loads(text)
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and envelope.get("schema") == POISON_SCHEMA:
        item.envelope = envelope
        message = envelope.get("message")
        if isinstance(message, dict):
            item.body = message
        elif isinstance(message, str):
            item.body = _decoded(message)
        return item
    item.body = _decoded(text)
    return item


def _decoded(text: str) -> dict[str, Any] | None:
    try:
        return decode_body(text)
    except Exception:  # anything undecodable is shown raw
        return None


def _from_queue_message(message: Any) -> PoisonItem:
    content = message.content
    if isinstance(content, bytes | bytearray):
        content = bytes(content).decode("utf-8", "replace")
    return parse_item(
        str(message.id),
        content or "",
        inserted_on=getattr(message, "inserted_on", None),
        dequeue_count=getattr(message, "dequeue_count", None),
        pop_receipt=getattr(message, "pop_receipt", None),
    )


class PoisonQueue:
    """One poison queue; ``scan`` holds received messages until ``release`` or ``delete``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = getattr(client, "queue_name", "")

    def exists(self) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.get_queue_properties()
        except ResourceNotFoundError:
            return False
        return True

    def count(self) -> int:
        return int(self.client.get_queue_properties().approximate_message_count or 0)

    def peek(self) -> list[PoisonItem]:
        return [_from_queue_message(m) for m in self.client.peek_messages(max_messages=PEEK_LIMIT)]

    def scan(self, *, visibility_s: int = SCAN_VISIBILITY_S) -> list[PoisonItem]:
        """Every visible message, received (hidden for ``visibility_s``) so each has a pop receipt."""
        items: list[PoisonItem] = []
        seen: set[str] = set()
        while True:
            batch = list(self.client.receive_messages(max_messages=32, visibility_timeout=visibility_s))
            if not batch:
                return items
            for message in batch:
                item = _from_queue_message(message)
                if item.queue_message_id not in seen:
                    seen.add(item.queue_message_id)
                    items.append(item)

    def read_all(self) -> list[PoisonItem]:
        """Everything, without changing the queue (peek when it fits, else scan and release)."""
        if self.count() <= PEEK_LIMIT:
            return self.peek()
        items = self.scan()
        self.release(items)
        return items

    def release(self, items: Iterable[PoisonItem]) -> None:
        """Make received messages visible again now (one whose receipt went stale already is)."""
        from azure.core.exceptions import HttpResponseError

        for item in items:
            if item.pop_receipt:
                receipt, item.pop_receipt = item.pop_receipt, None
                try:
                    self.client.update_message(item.queue_message_id, receipt, visibility_timeout=0)
                except HttpResponseError as exc:
                    if exc.status_code not in (400, 404):
                        raise

    def delete(self, item: PoisonItem) -> None:
        self.client.delete_message(item.queue_message_id, item.pop_receipt)
        item.pop_receipt = None


@dataclass
class Selection:
    ids: Sequence[str] = ()
    category: str | None = None
    mailbox: str | None = None
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.category or self.mailbox or self.everything)

    def matches(self, item: PoisonItem) -> bool:
        if self.ids and item.id not in self.ids and item.queue_message_id not in self.ids:
            return False
        if self.category and item.category != self.category:
            return False
        return not (self.mailbox and (item.mailbox or "") != self.mailbox.lower())

    def describe(self) -> str:
        parts = []
        if self.ids:
            parts.append("id " + ", ".join(self.ids))
        if self.category:
            parts.append(f"category {self.category}")
        if self.mailbox:
            parts.append(f"mailbox {self.mailbox}")
        return " and ".join(parts) or "all messages"


@dataclass
class Group:
    category: str
    mailbox: str | None
    items: list[PoisonItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        codes = sorted({i.code for i in self.items if i.code})
        hints = list(dict.fromkeys(i.hint for i in self.items if i.hint))
        return {
            "category": self.category,
            "mailbox": self.mailbox,
            "count": len(self.items),
            "codes": codes,
            "hint": hints[0] if hints else "",
            "otherHints": hints[1:],
            "lastFailedAt": max((i.failed_at or "" for i in self.items), default="") or None,
            "ids": [i.id for i in self.items],
        }


def grouped(items: Iterable[PoisonItem]) -> list[Group]:
    groups: dict[tuple[str, str | None], Group] = {}
    for item in items:
        key = (item.category, item.mailbox)
        groups.setdefault(key, Group(*key)).items.append(item)
    return sorted(groups.values(), key=lambda g: (-len(g.items), g.category, g.mailbox or ""))


def iter_matching(items: Iterable[PoisonItem], selection: Selection) -> Iterator[PoisonItem]:
    return (i for i in items if selection.matches(i))
