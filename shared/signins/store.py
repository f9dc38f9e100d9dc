"""The sign-ins container: one blob per mailbox, every write guarded by the blob's ETag.

Two instances refreshing one mailbox at once both succeed with Entra (the old refresh token stays
valid after a refresh), so a lost write race costs nothing but the loser's newer refresh token; what
the ETag prevents is an instance writing an old cache over a new sign-in (``outbox login`` between
its read and its write). The loser re-reads and keeps the newer record.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from shared.errors import ConfigError, OutboxError
from shared.signins.records import SigninRecord

log = logging.getLogger("outbox.signins")

SUFFIX = ".json"


class Conflict(Exception):
    """The blob changed (or appeared) since it was read: re-read it."""


@dataclass(frozen=True)
class Stored:
    record: SigninRecord
    etag: str


def blob_name(mailbox: str) -> str:
    return quote(mailbox.lower(), safe="@._-") + SUFFIX


class SigninStore:
    def __init__(self, blob_service: Any, container: str) -> None:
        self._service = blob_service
        self.container = container
        self.reads = 0
        self.writes = 0

    def _blob(self, mailbox: str) -> Any:
        return self._service.get_blob_client(self.container, blob_name(mailbox))

    def get(self, mailbox: str) -> Stored | None:
        from azure.core.exceptions import ResourceNotFoundError

        self.reads += 1
        try:
            downloaded = self._blob(mailbox).download_blob()
            data = downloaded.readall()
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise self._failure(exc, f"reading the sign-in of {mailbox}") from exc
        try:
            record = SigninRecord.from_bytes(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise OutboxError("config", "outbox.signin_unreadable", transport="storage",
                              detail=f"the stored sign-in of {mailbox} is not an outbox sign-in record: {exc}",
                              hint=f"sign in again: outbox login --mailbox {mailbox}") from exc
        return Stored(record, str(downloaded.properties.etag))

    def write(self, record: SigninRecord, *, etag: str | None) -> str:
        """Create (``etag=None``: only if absent) or replace (only if unchanged since ``etag``)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self._blob(record.mailbox)
        # The blob SDK takes IfMissing only as if_none_match="*" (etag="*" + IfMissing is passed to the
        # transport unread and fails).
        conditions: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {"if_none_match": "*"}
        )
        self.writes += 1
        for attempt in (1, 2):
            try:
                result = blob.upload_blob(record.to_bytes(), overwrite=True, **conditions)
                return str(result["etag"])
            except (ResourceModifiedError, ResourceExistsError) as exc:
                raise Conflict(record.mailbox) from exc
            except ResourceNotFoundError as exc:
                if etag or attempt == 2:  # replacing a blob that was deleted meanwhile
                    raise Conflict(record.mailbox) from exc
                self._create_container()
            except Exception as exc:
                if getattr(exc, "status_code", None) == 412:
                    raise Conflict(record.mailbox) from exc
                raise self._failure(exc, f"writing the sign-in of {record.mailbox}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, mailbox: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(mailbox).delete_blob()
        except ResourceNotFoundError:
            return False
        except Exception as exc:
            raise self._failure(exc, f"deleting the sign-in of {mailbox}") from exc
        return True

    def mailboxes(self) -> Iterator[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            for item in self._service.get_container_client(self.container).list_blobs():
                if item.name.endswith(SUFFIX):
                    yield unquote(item.name[: -len(SUFFIX)])
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise self._failure(exc, "listing the sign-ins") from exc

    def _create_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(self.container)

    def _failure(self, exc: Exception, what: str) -> OutboxError:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return ConfigError(f"{what}: the storage account refused it ({status})", code="storage.signin_forbidden",
                               transport="storage", status=status,
                               hint=f"grant this identity Storage Blob Data Contributor on the {self.container!r} "
                               "container (infra/main.bicep does for the function)")
        return OutboxError("transient", "storage.signin_failed", transport="storage", status=status, retryable=True,
                           detail=f"{what} failed: {type(exc).__name__} {str(exc)[:200]}")

    def close(self) -> None:
        """The blob service client belongs to whoever built it."""
