"""Attachments by reference ("claim check"): a message names ``container/path`` in blob storage.

Reads stream one range at a time (``read_range``), each range PUT to Graph's upload session as it is read:
a 150 MB attachment never sits in memory, whole or in pieces kept alive (benchmarks/bench_memory.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from shared.errors import ConfigError, OutboxError
from shared.message import RESERVED_BLOB_PREFIXES


def split_ref(ref: str) -> tuple[str, str]:
    container, sep, name = ref.strip().lstrip("/").partition("/")
    if not sep or not container or not name:
        raise OutboxError(
            "invalid_message",
            "attachment.bad_blob_ref",
            detail=f"blob reference {ref!r} is not 'container/path'",
            hint='reference attachments as "blob": "<container>/<path>"',
        )
    return container, name


class AzureBlobSource:
    """``BlobSource`` over azure-storage-blob (the transports read attachments through this).

    It reads only from ``containers`` (the deployment's attachment containers), whatever reference it is
    handed: validation refuses other containers already, and this second check keeps a message that
    slipped past it (an older body requeued by hand, a new entry that forgot to validate) from mailing
    the Functions host's keys."""

    def __init__(self, blob_service: Any, *, containers: Sequence[str]) -> None:
        self._service = blob_service
        self.containers = tuple(containers)

    def _client(self, ref: str) -> Any:
        container, name = split_ref(ref)
        if container not in self.containers or name.startswith(RESERVED_BLOB_PREFIXES):
            raise OutboxError(
                "invalid_message",
                "attachment.container_not_allowed",
                transport="storage",
                detail=f"blob reference {ref!r} is outside the attachment containers ({', '.join(self.containers)})",
                hint="producers upload attachments to the attachment container (OUTBOX_ATTACHMENTS_CONTAINER) "
                "and name them there",
            )
        return self._service.get_blob_client(container, name)

    def _classified(self, ref: str, exc: Exception) -> OutboxError:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

        if isinstance(exc, ResourceNotFoundError):
            return OutboxError(
                "invalid_message",
                "attachment.blob_not_found",
                transport="storage",
                status=404,
                detail=f"attachment blob {ref!r} does not exist",
                hint="upload the blob before enqueueing the message, then requeue it (outbox poison requeue ID)",
            )
        if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
            return ConfigError(
                f"may not read attachment blob {ref!r} ({exc.status_code})",
                code="storage.blob_forbidden",
                transport="storage",
                status=exc.status_code,
                hint="grant the function's identity Storage Blob Data Reader on the attachment container",
            )
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        return OutboxError(
            "transient",
            "storage.blob_read_failed",
            transport="storage",
            status=status,
            retryable=True,
            detail=f"reading attachment blob {ref!r} failed: {type(exc).__name__}"
            + ("" if isinstance(exc, ServiceRequestError) else f" {str(exc)[:200]}"),
        )

    def size(self, ref: str) -> int:
        try:
            return int(self._client(ref).get_blob_properties().size)
        except OutboxError:
            raise
        except Exception as exc:
            raise self._classified(ref, exc) from exc

    def read_range(self, ref: str, offset: int, length: int) -> Iterator[bytes]:
        """One range of the blob as the SDK streams it (one ranged GET, read in its own pieces)."""
        client = self._client(ref)
        try:
            stream = client.download_blob(offset=offset, length=length, max_concurrency=1)
            yield from stream.chunks()
        except OutboxError:
            raise
        except Exception as exc:
            raise self._classified(ref, exc) from exc

    def read_all(self, ref: str) -> bytes:
        try:
            return bytes(self._client(ref).download_blob().readall())
        except OutboxError:
            raise
        except Exception as exc:
            raise self._classified(ref, exc) from exc

    def close(self) -> None:
        self._service.close()
