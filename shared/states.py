"""The names of what happens to a message: a status row's states and an invocation's outcomes."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A status row's state (docs/contracts.md)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    AMBIGUOUS = "ambiguous"
    POISONED = "poisoned"
    FAILED = "failed"  # mode=now answered a permanent error; nothing was queued


class Kind(StrEnum):
    """What one invocation did with a message (the ``outcome`` of its log event)."""

    SENT = "sent"
    RETRY = "retry"
    POISONED = "poisoned"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"
    ERROR = "error"  # the invocation failed before storing an outcome; the host redelivers
    FAILED = "failed"  # mode=now
    IN_FLIGHT = "in_flight"  # mode=now
    CONFLICT = "conflict"  # mode=now: the id names another message
    SENT_COPY = "sent_copy"  # a sent SMTP message's Sent Items copy step (shared.sent_copy)
