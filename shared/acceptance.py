"""Whether outbox takes a message: decode -> validate -> allow-list -> transport rules -> id.

Every entry (the queue trigger, ``POST /api/send`` in both modes, ``outbox send`` and ``outbox enqueue``)
goes through :func:`accept`, so a body is judged the same way wherever it arrives: the same checks in
the same order, the same field paths in the answer, the same id. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.message import (
    InvalidMessage,
    Message,
    NotPermitted,
    check_attachment_sources,
    check_sender_allowed,
    decode_body,
    fingerprint,
    parse_message,
    valid_message_id,
    validate_for_transport,
)
from shared.message_id import make_message_id

log = logging.getLogger("outbox.acceptance")

class AcceptanceRules(Protocol):
    """The settings acceptance reads (shared.settings.Settings has them)."""

    @property
    def allowed_senders(self) -> Sequence[str]: ...
    @property
    def transport(self) -> str: ...
    @property
    def attachment_containers(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Accepted:
    """A message outbox will try to send, with everything derived from it once."""

    message: Message
    body: dict[str, Any]  # the producer's body as written, with ``id`` filled in (what a retry re-queues)
    message_id: str
    transport: str
    mailbox: str
    internet_message_id: str
    fingerprint: str


class NotAccepted(Exception):
    """The body will never be sent as it is. Carries what the poison envelope and the answer need."""

    def __init__(self, error: Exception, *, original: Any, message_id: str, mailbox: str | None,
                 unreadable: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.original = original  # the decoded body, or the raw text of one that did not decode
        self.message_id = message_id
        self.mailbox = mailbox
        self.unreadable = unreadable

    @property
    def only_across_fields(self) -> bool:
        """Well-formed by the schema, refused by a rule across fields (HTTP 422)."""
        return isinstance(self.error, InvalidMessage) and self.error.only_across_fields

    @property
    def not_permitted(self) -> bool:
        """Well-formed, but outside what this deployment allows (sender, attachment container)."""
        return isinstance(self.error, NotPermitted)

    def to_list(self) -> list[dict[str, str]]:
        if isinstance(self.error, InvalidMessage) and not self.unreadable:
            return self.error.to_list()
        return [{"field": "$", "message": str(self.error)}]


def accept(data: Mapping[str, Any] | bytes | str, rules: AcceptanceRules, *, fallback_id: str) -> Accepted:
    """The message in ``data`` if outbox may send it; raises NotAccepted otherwise.

    ``fallback_id`` is the id of a message that names none (the queue message id, or a new one for HTTP),
    and also the id an invalid message is reported under when its own ``id`` is unusable."""
    if isinstance(data, bytes | bytearray | str):
        try:
            decoded: dict[str, Any] = decode_body(data)
        except Exception as exc:  # InvalidMessage, or anything a hostile body provokes
            text = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
            raise NotAccepted(exc, original=text, message_id=fallback_id, mailbox=None, unreadable=True) from None
    else:
        decoded = dict(data)

    given_id = decoded.get("id")
    message_id = given_id if valid_message_id(given_id) else fallback_id
    mailbox = sender_text(decoded.get("from"))
    try:
        message = parse_message(decoded)
        check_sender_allowed(message, rules.allowed_senders)
        check_attachment_sources(message, rules.attachment_containers)
        transport = message.transport or rules.transport
        validate_for_transport(message, transport)
    except InvalidMessage as exc:
        raise NotAccepted(exc, original=decoded, message_id=message_id, mailbox=mailbox) from None
    except Exception as exc:
        log.exception("validation of message %s failed unexpectedly", message_id)
        raise NotAccepted(exc, original=decoded, message_id=message_id, mailbox=mailbox) from None

    mailbox = message.sender.address
    return Accepted(
        message=message,
        body={**decoded, "id": message_id},
        message_id=message_id,
        transport=transport,
        mailbox=mailbox,
        internet_message_id=make_message_id(message_id, mailbox),
        fingerprint=fingerprint(message),
    )


def sender_text(value: Any) -> str | None:
    """The ``from`` address of an unvalidated body, for the log event only (never trusted)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping) and isinstance(value.get("address"), str):
        text = value["address"]
    else:
        return None
    text = text.strip()
    if "@" not in text or len(text) > 254 or any(c in text for c in "\r\n\x00"):
        return None
    return text
