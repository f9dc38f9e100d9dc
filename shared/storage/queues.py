"""The queues outbox reads and writes: producer bodies, retries with a delay, poison envelopes.

host.json sets ``messageEncoding: none``, so the function sees the queue text exactly as the producer
wrote it; :func:`shared.message.decode_body` accepts plain JSON or base64 of JSON. What outbox itself
writes (retries, HTTP ``mode=queue``) is plain compact JSON (base64 of it only when that alone fits),
which reads back unchanged only because host.json pins ``messageEncoding: none``: the setting is part
of the contract, not a default.

Poison envelopes follow design.md (``outbox.poison/1``) field for field. When an envelope would not fit
in a queue message, the original goes to the attachment container and the envelope holds the reference:
``"message"`` is null, ``messageBlob`` names the blob, ``messageBytes`` its size and ``id`` the message id.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from shared.backoff import visibility_timeout_s
from shared.errors import ConfigError, OutboxError, redact

POISON_SCHEMA = "outbox.poison/1"
# The queue service limit is 64 KiB per message, counted on what goes over the wire (the REST API is
# XML, so &, < and > grow when escaped). A small margin keeps us clear of the edge.
MAX_QUEUE_MESSAGE_BYTES = 64 * 1024
_MARGIN = 256
_DETAIL_LIMIT = 2000


def encode_body(message: Mapping[str, Any], *, base64_encode: bool = False) -> str:
    """A v1 message as queue text: compact UTF-8 JSON, optionally base64 of it (both are accepted)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if base64_encode:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def queue_text_bytes(text: str) -> int:
    """Bytes the queue service counts for ``text`` (XML-escaped UTF-8)."""
    return len(xml_escape(text).encode("utf-8"))


def fits_queue(text: str) -> bool:
    return queue_text_bytes(text) <= MAX_QUEUE_MESSAGE_BYTES - _MARGIN


def raw_text(raw: bytes | str) -> str:
    """The queue body as text, whatever bytes it holds (an invalid UTF-8 body is kept, not dropped)."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="replace")


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_object(error: OutboxError) -> dict[str, Any]:
    """The envelope's ``error``: the classified fields, server text redacted and clipped."""
    obj = error.to_dict()
    detail = redact(obj.get("detail") or "")
    obj["detail"] = detail if len(detail) <= _DETAIL_LIMIT else detail[: _DETAIL_LIMIT - 1] + "…"
    return obj


def poison_envelope(
    message: Any,
    error: OutboxError,
    *,
    attempts: int,
    first_seen: datetime | str | None,
    failed_at: datetime | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """``outbox.poison/1``, exactly design.md's fields: the original message (or its raw text) with the
    classified error. ``message_id`` fills ``id`` into a message object that has none, so an operator's
    requeue keeps the id (and with it the status row and the Message-ID)."""
    if isinstance(first_seen, datetime):
        first_seen = now_iso(first_seen)
    if message_id and isinstance(message, Mapping) and "id" not in message:
        message = {**message, "id": message_id}
    return {
        "schema": POISON_SCHEMA,
        "message": message,
        "error": error_object(error),
        "attempts": attempts,
        "firstSeen": first_seen or now_iso(failed_at),
        "failedAt": now_iso(failed_at),
    }


_SAFE_BLOB_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


def poison_blob_name(message_id: str | None, failed_at: str) -> str:
    stamp = re.sub(r"[^0-9TZ]", "", failed_at)
    key = _SAFE_BLOB_CHARS.sub("_", message_id or "unknown")[:128]
    return f"poison/{key}/{stamp}.json"


class QueueStore:
    """The work queue, its poison queue and the attachment container, created on first need.

    Writes that fail raise, so the invocation fails and the Functions host redelivers the message:
    nothing is acknowledged before its retry or poison copy is safely stored.
    """

    def __init__(
        self,
        queue_service: Any,
        *,
        queue: str,
        poison_queue: str,
        blob_service: Any | None = None,
        container: str | None = None,
    ) -> None:
        self._service = queue_service
        self.queue = queue
        self.poison_queue = poison_queue
        self._blob_service = blob_service
        self.container = container
        self._clients: dict[str, Any] = {}
        self._ready: set[Any] = set()
        self._lock = threading.Lock()

    # -- resources ----------------------------------------------------------------------------------

    def _client(self, name: str) -> Any:
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    client = self._service.get_queue_client(name)
                    self._clients[name] = client
        return client

    def ensure_queue(self, name: str) -> None:
        """Create ``name`` if it is missing (always allowed on Azurite).

        An identity that may only add messages (Storage Queue Data Message Sender, what producers and
        operators get) is refused both the create and any look at the queue. That is no reason to stop:
        the send itself proves the queue exists, and only a send answered 404 makes it a config error.
        """
        if name in self._ready:
            return
        self._create_queue(name, strict=False)
        self._ready.add(name)

    def _create_queue(self, name: str, *, strict: bool) -> None:
        _create_resource(lambda: self._client(name).create_queue(), "queue", name,
                         role="Storage Queue Data Contributor", strict=strict)

    def ensure_container(self) -> None:
        """Create the attachment container if missing; like queues, a refused create is not yet an error."""
        if ("blob", self.container) in self._ready:
            return
        self._create_container(strict=False)
        self._ready.add(("blob", self.container))

    def _create_container(self, *, strict: bool) -> None:
        if self.container is None or self._blob_service is None:
            raise ConfigError("no attachment container configured", code="storage.container_missing",
                              transport="storage", hint="set OUTBOX_ATTACHMENTS_CONTAINER")
        service, container = self._blob_service, self.container
        _create_resource(lambda: service.get_container_client(container).create_container(), "container",
                         container, role="Storage Blob Data Contributor", strict=strict)

    def _send(self, name: str, text: str, *, delay_s: float = 0.0) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        visibility = visibility_timeout_s(delay_s) or None
        try:
            result = self._client(name).send_message(text, visibility_timeout=visibility)
        except ResourceNotFoundError:
            # Someone deleted the queue (or it never existed): create it and try once more.
            self._create_queue(name, strict=True)
            result = self._client(name).send_message(text, visibility_timeout=visibility)
        return str(result.id)

    # -- what the pipeline and the HTTP function write ----------------------------------------------

    def enqueue(self, message: Mapping[str, Any], *, delay_s: float = 0.0) -> str:
        """Put a v1 message on the work queue; return the queue message id.

        Plain JSON when it fits; otherwise base64 of it, which the function reads just the same and which
        is smaller on the wire for text full of ``<``, ``>`` and ``&`` (the XML wire format escapes each to
        four or five bytes): so a producer's base64 body of HTML that fitted still fits as its retry."""
        text = encode_body(message)
        if not fits_queue(text):
            text = encode_body(message, base64_encode=True)
        if not fits_queue(text):
            raise OutboxError(
                "size",
                "queue.message_too_large",
                transport="storage",
                detail=f"the message is {queue_text_bytes(text)} bytes as queue text; a queue message holds 64 KiB",
                hint="put large attachments in the attachment container and reference them with "
                '"blob": "container/path"',
            )
        self.ensure_queue(self.queue)
        return self._send(self.queue, text, delay_s=delay_s)

    def requeue(self, message: Mapping[str, Any], *, delay_s: float) -> str:
        """The retry: the same v1 body (with ``id`` filled) back on the queue, invisible for ``delay_s``."""
        return self.enqueue(message, delay_s=delay_s)

    def requeue_raw(self, text: str, *, delay_s: float) -> str:
        """Re-enqueue the producer's text as it came (used when no v1 body could be rebuilt)."""
        self.ensure_queue(self.queue)
        return self._send(self.queue, text, delay_s=delay_s)

    def poison(self, envelope: dict[str, Any], *, message_id: str | None = None) -> str:
        """Write an envelope to ``<queue>-poison``; park an oversized original in blob storage first
        (under ``message_id``, else the id the original carries)."""
        text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)
        if not fits_queue(text):
            original = envelope.get("message")
            original_text = original if isinstance(original, str) else json.dumps(original, ensure_ascii=False)
            if message_id is None and isinstance(original, Mapping) and isinstance(original.get("id"), str):
                message_id = original["id"]
            blob_ref = self.store_blob(
                poison_blob_name(message_id, str(envelope.get("failedAt", now_iso()))),
                original_text.encode("utf-8"),
            )
            # The claim check: the original is not in the envelope, so the reference names its id too.
            envelope = {**envelope, "message": None, "messageBlob": blob_ref,
                        "messageBytes": len(original_text.encode("utf-8")), "id": message_id}
            text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)
            if not fits_queue(text):
                # Only the error detail could still be large; the envelope must go out regardless.
                envelope["error"] = {**envelope["error"], "detail": (envelope["error"].get("detail") or "")[:500]}
                text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)
        self.ensure_queue(self.poison_queue)
        return self._send(self.poison_queue, text)

    def store_blob(self, name: str, data: bytes) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        self.ensure_container()
        assert self._blob_service is not None and self.container is not None
        blob = self._blob_service.get_blob_client(self.container, name)
        try:
            blob.upload_blob(data, overwrite=True)
        except ResourceNotFoundError:
            self._create_container(strict=True)
            blob.upload_blob(data, overwrite=True)
        return f"{self.container}/{name}"

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _create_resource(create: Callable[[], Any], kind: str, name: str, *, role: str, strict: bool) -> None:
    """Create a queue or container. A 403 is a missing permission, not a missing resource, so it only
    counts once the resource is shown missing (``strict``); a 401 is a bad credential: stop at once."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    try:
        create()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code not in (401, 403):
            raise
        if strict or exc.status_code == 401:
            raise ConfigError(
                f"{kind} {name!r} does not exist and this identity may not create it ({exc.status_code})",
                code=f"storage.{kind}_missing",
                transport="storage",
                status=exc.status_code,
                hint=f"create the {kind} {name!r} (the deployment does) or grant the function's identity "
                f"{role}",
            ) from None
