"""What the fakes observed: deliveries and a request log, shared between the loop thread and tests."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Transport = Literal["graph", "smtp"]
AuthType = Literal["app", "delegated"]


@dataclass(frozen=True)
class Delivery:
    """One message a fake accepted (Graph 202 / SMTP 250 after DATA).

    ``mailbox`` is the mailbox the message was sent from (Graph: the ``/users/{id}`` mailbox; SMTP: the
    XOAUTH2 ``user=``), ``sender`` the From address, ``app_id`` the authenticated app (token ``appid``).
    ``raw_mime`` is set for SMTP (and Graph MIME sends), ``graph_json`` for Graph JSON sends.
    ``auth_type`` says whether an app-only or a delegated (user) token sent it; ``user`` is the signed-in
    user's UPN for delegated sends (None for app-only).
    """

    transport: Transport
    mailbox: str
    app_id: str
    recipients: tuple[str, ...]
    subject: str = ""
    sender: str = ""
    message_id: str | None = None
    raw_mime: bytes | None = field(default=None, repr=False)
    graph_json: Mapping[str, Any] | None = field(default=None, repr=False)
    saved_to_sent_items: bool = False
    request_id: str = ""
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    extra: Mapping[str, Any] = field(default_factory=dict)
    auth_type: AuthType = "app"
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "mailbox": self.mailbox,
            "appId": self.app_id,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "messageId": self.message_id,
            "rawMimeBase64": base64.b64encode(self.raw_mime).decode() if self.raw_mime is not None else None,
            "graphJson": self.graph_json,
            "savedToSentItems": self.saved_to_sent_items,
            "requestId": self.request_id,
            "time": self.time,
            "extra": dict(self.extra),
            "authType": self.auth_type,
            "user": self.user,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Delivery:
        raw = data.get("rawMimeBase64")
        return cls(
            transport=data["transport"],
            mailbox=data["mailbox"],
            app_id=data.get("appId", ""),
            sender=data.get("sender", ""),
            recipients=tuple(data.get("recipients", ())),
            subject=data.get("subject", ""),
            message_id=data.get("messageId"),
            raw_mime=base64.b64decode(raw) if raw is not None else None,
            graph_json=data.get("graphJson"),
            saved_to_sent_items=bool(data.get("savedToSentItems")),
            request_id=data.get("requestId", ""),
            time=float(data.get("time", 0.0)),
            id=data.get("id", ""),
            extra=data.get("extra") or {},
            auth_type=data.get("authType", "app"),
            user=data.get("user"),
        )


@dataclass(frozen=True)
class SavedItem:
    """An item a client created in a mailbox folder through Graph (not a delivery: nobody received it),
    e.g. outbox's Sent Items copy of an SMTP submission. ``is_draft`` is what Exchange made of its
    ``PidTagMessageFlags``: a draft unless the flags were given without MSGFLAG_UNSENT."""

    mailbox: str
    folder: str
    message_id: str | None
    subject: str
    message: Mapping[str, Any] = field(repr=False)
    is_draft: bool = True
    app_id: str = ""
    attachments: int = 0
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mailbox": self.mailbox, "folder": self.folder, "messageId": self.message_id,
                "subject": self.subject, "isDraft": self.is_draft, "appId": self.app_id, "attachments": self.attachments,
                "time": self.time}


@dataclass(frozen=True)
class RequestRecord:
    service: str
    operation: str
    status: int | str
    time: float
    mailbox: str | None = None
    app_id: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "operation": self.operation,
            "status": self.status,
            "time": self.time,
            "mailbox": self.mailbox,
            "appId": self.app_id,
            "detail": self.detail,
        }


class HarnessState:
    """Thread-safe observations. Fakes write from the loop thread; tests read from theirs."""

    def __init__(self, *, request_log_limit: int = 10_000) -> None:
        self._cond = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._saved: list[SavedItem] = []
        self._requests: list[RequestRecord] = []
        self._counters: dict[str, Counter[str]] = defaultdict(Counter)
        self._limit = request_log_limit
        self._version = 0

    # -- deliveries ---------------------------------------------------------------------------------------
    def add_delivery(self, delivery: Delivery) -> Delivery:
        with self._cond:
            self._deliveries.append(delivery)
            self._version += 1
            self._cond.notify_all()
        return delivery

    @property
    def version(self) -> int:
        """Changes whenever the deliveries do (a watcher compares it instead of re-reading them)."""
        with self._cond:
            return self._version

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self._cond:
            return next((d for d in reversed(self._deliveries) if d.id == delivery_id), None)

    def deliveries(
        self,
        *,
        transport: str | None = None,
        mailbox: str | None = None,
        predicate: Callable[[Delivery], bool] | None = None,
    ) -> list[Delivery]:
        with self._cond:
            items = list(self._deliveries)
        return [
            d
            for d in items
            if (transport is None or d.transport == transport)
            and (mailbox is None or d.mailbox.lower() == mailbox.lower())
            and (predicate is None or predicate(d))
        ]

    def sent_items(self, mailbox: str, *, delay_s: float = 0.0) -> list[Delivery]:
        """Messages that landed in a mailbox's Sent Items (for the Graph fake's Sent Items lookup), each
        visible ``delay_s`` after it was sent (the scenario's ``exchange.sent_items_delay_s``)."""
        visible_before = time.time() - delay_s
        return self.deliveries(mailbox=mailbox,
                               predicate=lambda d: d.saved_to_sent_items and d.time <= visible_before)

    def add_saved_item(self, item: SavedItem) -> SavedItem:
        with self._cond:
            self._saved.append(item)
            self._cond.notify_all()
        return item

    def saved_items(self, mailbox: str, *, folder: str | None = None) -> list[SavedItem]:
        """Items clients created in ``mailbox`` (in ``folder``, a well-known name, when given)."""
        with self._cond:
            items = list(self._saved)
        return [i for i in items if i.mailbox.lower() == mailbox.lower() and (folder is None or i.folder == folder)]

    def wait_for_deliveries(
        self, count: int, *, timeout: float = 10.0, transport: str | None = None, mailbox: str | None = None
    ) -> list[Delivery]:
        """Block until at least ``count`` matching deliveries exist (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    d
                    for d in self._deliveries
                    if (transport is None or d.transport == transport)
                    and (mailbox is None or d.mailbox.lower() == mailbox.lower())
                ]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)} of {count} deliveries after {timeout} s")
                self._cond.wait(remaining)

    # -- request log ------------------------------------------------------------------------------------
    def record_request(
        self,
        service: str,
        operation: str,
        status: int | str,
        *,
        mailbox: str | None = None,
        app_id: str | None = None,
        detail: str = "",
    ) -> None:
        record = RequestRecord(service, operation, status, time.time(), mailbox, app_id, detail)
        with self._cond:
            self._requests.append(record)
            if len(self._requests) > self._limit:
                del self._requests[: len(self._requests) - self._limit]
            counter = self._counters[service]
            counter["total"] += 1
            counter[f"{operation}"] += 1
            counter[f"status:{status}"] += 1
            self._cond.notify_all()

    def requests(self, *, service: str | None = None) -> list[RequestRecord]:
        with self._cond:
            return [r for r in self._requests if service is None or r.service == service]

    def counters(self) -> dict[str, dict[str, int]]:
        with self._cond:
            return {service: dict(counter) for service, counter in self._counters.items()}

    def count(self, service: str, key: str = "total") -> int:
        with self._cond:
            return self._counters.get(service, Counter())[key]

    def reset(self) -> None:
        with self._cond:
            self._deliveries.clear()
            self._saved.clear()
            self._version += 1
            self._requests.clear()
            self._counters.clear()
            self._cond.notify_all()

    def snapshot(self, services: Sequence[str] = ()) -> dict[str, Any]:
        counters = self.counters()
        return {s: counters.get(s, {}) for s in services} if services else counters
