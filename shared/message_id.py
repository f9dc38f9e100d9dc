"""The Message-ID every attempt of one message carries, on both transports.

It is derived from the message id (the producer's idempotency key or the queue message id) and
the sender, so a retry, a redelivery or a switch from Graph to SMTP produces the same
Message-ID, and an ambiguous attempt can be looked up in the mailbox's Sent Items by it.
"""

from __future__ import annotations

import hashlib

_PREFIX = "outbox."


def make_message_id(message_key: str, sender: str) -> str:
    """``<outbox.<32 hex>@<sender domain>>``: stable for (message_key, sender), opaque (the
    app's id is hashed, not exposed to recipients), and a valid RFC 5322 msg-id."""
    domain = sender.rpartition("@")[2].strip().lower()
    if not domain or "@" not in sender:
        raise ValueError(f"sender {sender!r} has no domain to put in a Message-ID")
    digest = hashlib.sha256(f"{message_key}\n{sender.strip().lower()}".encode()).hexdigest()[:32]
    return f"<{_PREFIX}{digest}@{domain}>"


def is_outbox_message_id(value: str) -> bool:
    """Whether ``value`` has the shape make_message_id produces (for Sent Items lookups)."""
    return value.startswith(f"<{_PREFIX}") and value.endswith(">") and "@" in value
