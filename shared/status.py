"""The status table: one row per message id, the single place that says what happened to a message.

Rows are claimed atomically before a send (insert-if-absent, or replace with an ETag match), so two
copies of one message cannot both send. A claim carries a lease (owner = the queue message id, until
= now + OUTBOX_LEASE_S): a copy that finds a live lease held by another queue message waits; a row
left in ``sending`` by this very queue message (the host redelivered it after a crash) or with an
expired lease means the previous attempt's outcome is unknown, which the pipeline treats like an
ambiguous send.

States: ``queued`` (accepted, not tried), ``sending`` (claimed), ``sent``, ``retrying``,
``ambiguous`` (may have been delivered; the next attempt decides per OUTBOX_ON_AMBIGUOUS),
``poisoned`` (an envelope is on the poison queue), ``failed`` (``mode=now`` answered a permanent
error to its caller; nothing was queued).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from shared.errors import ConfigError, OutboxError, redact

ROW_KEY = ""
STATES = ("queued", "sending", "sent", "retrying", "ambiguous", "poisoned", "failed")
_DETAIL_LIMIT = 1000
_CLAIM_TRIES = 8

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StatusRow:
    id: str
    state: str
    attempts: int = 0
    first_seen: datetime | None = None
    updated_at: datetime | None = None
    transport: str | None = None
    mailbox: str | None = None
    internet_message_id: str | None = None
    last_category: str | None = None
    last_code: str | None = None
    last_status: int | None = None
    last_hint: str | None = None
    last_detail: str | None = None
    request_ids: tuple[str, ...] = ()
    sent_at: datetime | None = None
    sent_via: str | None = None
    possibly_duplicated: bool = False
    lease_owner: str | None = None
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)

    @classmethod
    def from_entity(cls, entity: Any) -> StatusRow:
        def get(name: str) -> Any:
            value = entity.get(name)
            return None if value == "" else value

        def when(name: str) -> datetime | None:
            value = entity.get(name)
            return value if isinstance(value, datetime) else None

        ids = get("RequestIds") or ""
        return cls(
            id=str(get("PartitionKey")),
            state=str(get("State") or "queued"),
            attempts=int(get("Attempts") or 0),
            first_seen=when("FirstSeen"),
            updated_at=when("UpdatedAt"),
            transport=get("Transport"),
            mailbox=get("Mailbox"),
            internet_message_id=get("InternetMessageId"),
            last_category=get("LastCategory"),
            last_code=get("LastCode"),
            last_status=get("LastStatus"),
            last_hint=get("LastHint"),
            last_detail=get("LastDetail"),
            request_ids=tuple(i for i in str(ids).split(",") if i),
            sent_at=when("SentAt"),
            sent_via=get("SentVia"),
            possibly_duplicated=bool(get("PossiblyDuplicated") or False),
            lease_owner=get("LeaseOwner"),
            lease_until=when("LeaseUntil"),
            next_attempt_at=when("NextAttemptAt"),
            etag=(getattr(entity, "metadata", None) or {}).get("etag"),
        )

    def public(self) -> dict[str, Any]:
        """What ``GET /api/messages/{id}`` and the CLI show (no lease internals, no server detail)."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "attempts": self.attempts,
            "transport": self.transport,
            "mailbox": self.mailbox,
            "internetMessageId": self.internet_message_id,
            "firstSeen": _iso(self.first_seen),
            "updatedAt": _iso(self.updated_at),
            "sentAt": _iso(self.sent_at),
            "sentVia": self.sent_via,
            "possiblyDuplicated": self.possibly_duplicated,
            "requestIds": list(self.request_ids),
            "nextAttemptAt": _iso(self.next_attempt_at),
        }
        if self.last_category:
            out["lastError"] = {
                "category": self.last_category,
                "code": self.last_code,
                "status": self.last_status,
                "hint": self.last_hint,
                "detail": self.last_detail,
            }
        return out


class ClaimKind(Enum):
    CLAIMED = "claimed"          # this invocation owns the message now
    ALREADY_SENT = "sent"        # nothing to do: delete the queue copy
    POISONED = "poisoned"        # an operator owns it: delete the queue copy
    IN_FLIGHT = "in_flight"      # another queue message holds a live lease: come back later


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    row: StatusRow
    previous_state: str | None = None
    # The previous attempt may have delivered: it was left ambiguous, or it died while sending.
    previous_unknown: bool = False
    wait_s: float = 0.0


def _error_fields(error: OutboxError | None) -> dict[str, Any]:
    if error is None:
        return {}
    detail = redact(error.detail or "")
    return {
        "LastCategory": error.category,
        "LastCode": error.code,
        "LastStatus": error.status,
        "LastHint": error.hint or "",
        "LastDetail": detail[:_DETAIL_LIMIT],
    }


def _join_ids(ids: Iterable[str | None]) -> str:
    seen: list[str] = []
    for i in ids:
        if i and i not in seen:
            seen.append(i)
    return ",".join(seen[-8:])


class StatusStore:
    """Status rows in Azure Table storage (azure-data-tables)."""

    def __init__(self, table_service: Any, table: str, *, clock: Clock = utcnow) -> None:
        self._service = table_service
        self.table_name = table
        self._clock = clock
        self._table: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Clock = utcnow) -> StatusStore:
        from shared.storage import client_options

        return cls(settings.storage.table_service_client(**client_options()), settings.status_table, clock=clock)

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def table(self) -> Any:
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._table = self._ensure_table()
        return self._table

    @staticmethod
    def _table_exists(client: Any) -> bool:
        """A role scoped to the table may be refused Create Table (it goes to /Tables, not to the
        table) while reading rows is allowed: one row read tells whether the table is there."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            next(iter(client.query_entities("PartitionKey eq ''", results_per_page=1)), None)
        except ResourceNotFoundError:
            return False
        return True

    def _ensure_table(self) -> Any:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        client = self._service.get_table_client(self.table_name)
        try:
            client.create_table()
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403):
                raise
            if exc.status_code == 403 and self._table_exists(client):
                return client
            raise ConfigError(
                f"table {self.table_name!r} does not exist and this identity may not create it",
                code="storage.table_missing",
                transport="storage",
                status=exc.status_code,
                hint=f"create the table {self.table_name!r} (the deployment does) or grant the "
                "function's identity Storage Table Data Contributor",
            ) from None
        return client

    def _get_entity(self, message_id: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.table.get_entity(partition_key=message_id, row_key=ROW_KEY)
        except ResourceNotFoundError:
            return None

    def _merge(self, message_id: str, fields: dict[str, Any], *, etag: str | None = None) -> None:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": message_id, "RowKey": ROW_KEY, "UpdatedAt": self._clock(), **fields}
        if etag is None:
            self.table.upsert_entity(entity, mode=UpdateMode.MERGE)
        else:
            self.table.update_entity(
                entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
            )

    # -- reads --------------------------------------------------------------------------------------

    def get(self, message_id: str) -> StatusRow | None:
        entity = self._get_entity(message_id)
        return None if entity is None else StatusRow.from_entity(entity)

    def rows(self, *, state: str | None = None, limit: int = 100) -> Iterator[StatusRow]:
        """Rows, optionally of one state (for the CLI's listings)."""
        if state is None:
            entities = self.table.list_entities(results_per_page=min(limit, 1000))
        else:
            entities = self.table.query_entities(
                "State eq @state", parameters={"state": state}, results_per_page=min(limit, 1000)
            )
        for n, entity in enumerate(entities):
            if n >= limit:
                break
            yield StatusRow.from_entity(entity)

    # -- the claim ----------------------------------------------------------------------------------

    def claim(
        self,
        message_id: str,
        *,
        owner: str,
        lease_s: float,
        transport: str | None,
        mailbox: str | None,
        internet_message_id: str | None = None,
    ) -> Claim:
        """Take the row for one attempt, atomically; see the module docstring for the rules."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        # Most messages are new: try the insert first (one round trip), read only when a row exists.
        entity: Any = None
        known = False
        for _ in range(_CLAIM_TRIES):
            now = self._clock()
            lease_until = now + timedelta(seconds=lease_s)
            if known:
                entity = self._get_entity(message_id)
            known = True
            common = {
                "State": "sending",
                "LeaseOwner": owner,
                "LeaseUntil": lease_until,
                "Transport": transport or "",
                "Mailbox": mailbox or "",
                "NextAttemptAt": None,
            }
            if internet_message_id:
                common["InternetMessageId"] = internet_message_id
            if entity is None:
                new = {"PartitionKey": message_id, "RowKey": ROW_KEY, "Attempts": 1, "FirstSeen": now,
                       "UpdatedAt": now, "PossiblyDuplicated": False, **common}
                new = {k: v for k, v in new.items() if v is not None}
                try:
                    created = self.table.create_entity(new)
                except ResourceExistsError:
                    continue  # another copy inserted first: read it and decide again
                row = StatusRow.from_entity(new)
                etag = (created or {}).get("etag") if isinstance(created, dict) else None
                return Claim(ClaimKind.CLAIMED, _with_etag(row, etag), previous_state=None)

            row = StatusRow.from_entity(entity)
            if row.state == "sent":
                return Claim(ClaimKind.ALREADY_SENT, row, previous_state="sent")
            if row.state == "poisoned" and row.last_category != "invalid_message":
                # An invalid message was never sent, so a corrected copy with the same id may go;
                # anything else poisoned waits for an operator (the CLI's requeue resets the row).
                return Claim(ClaimKind.POISONED, row, previous_state="poisoned")
            previous_unknown = False
            attempts = row.attempts + 1
            if row.state == "sending":
                lease_live = row.lease_until is not None and row.lease_until > now
                if lease_live and row.lease_owner != owner:
                    wait = (row.lease_until - now).total_seconds() if row.lease_until else lease_s
                    return Claim(ClaimKind.IN_FLIGHT, row, previous_state="sending", wait_s=wait)
                previous_unknown = True
            elif row.state == "ambiguous":
                previous_unknown = True
            elif row.state == "poisoned":
                attempts = 1
            fields = {**common, "Attempts": attempts}
            if row.first_seen is None:
                fields["FirstSeen"] = now
            try:
                self._merge(message_id, _drop_none(fields, keep=("NextAttemptAt",)), etag=row.etag)
            except ResourceNotFoundError:
                continue  # deleted under us: start over with an insert
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    continue  # someone else changed the row first: decide again on fresh data
                raise
            from dataclasses import replace

            claimed = replace(
                row, state="sending", attempts=attempts, lease_owner=owner, lease_until=lease_until,
                transport=transport or row.transport, mailbox=mailbox or row.mailbox,
                internet_message_id=internet_message_id or row.internet_message_id,
                first_seen=row.first_seen or now, next_attempt_at=None, etag=None,
            )
            return Claim(ClaimKind.CLAIMED, claimed, previous_state=row.state, previous_unknown=previous_unknown)
        raise OutboxError("transient", "status.claim_contended", transport="storage", retryable=True,
                          detail=f"could not claim status row {message_id!r} after {_CLAIM_TRIES} tries")

    # -- outcomes -----------------------------------------------------------------------------------

    def mark_sent(
        self,
        message_id: str,
        *,
        transport: str | None,
        request_ids: Iterable[str | None] = (),
        sent_via: str = "send",
        possibly_duplicated: bool | None = None,
        previous: StatusRow | None = None,
    ) -> None:
        now = self._clock()
        fields: dict[str, Any] = {
            "State": "sent",
            "SentAt": now,
            "SentVia": sent_via,
            "Transport": transport or "",
            "LeaseOwner": "",
            "LeaseUntil": None,
            "NextAttemptAt": None,
            "RequestIds": _join_ids([*(previous.request_ids if previous else ()), *request_ids]),
        }
        if possibly_duplicated is not None:
            fields["PossiblyDuplicated"] = possibly_duplicated
        self._merge(message_id, _drop_none(fields, keep=("LeaseUntil", "NextAttemptAt")))

    def mark_retrying(
        self,
        message_id: str,
        *,
        error: OutboxError,
        delay_s: float,
        state: str = "retrying",
        attempts: int | None = None,
        request_ids: Iterable[str | None] = (),
        previous: StatusRow | None = None,
    ) -> None:
        """``retrying`` (or ``ambiguous``) with the last error and when the next attempt is due."""
        fields: dict[str, Any] = {
            "State": state,
            "LeaseOwner": "",
            "LeaseUntil": None,
            "NextAttemptAt": self._clock() + timedelta(seconds=delay_s),
            **_error_fields(error),
        }
        if attempts is not None:
            fields["Attempts"] = attempts
        ids = _join_ids([*(previous.request_ids if previous else ()), *request_ids])
        if ids:
            fields["RequestIds"] = ids
        self._merge(message_id, _drop_none(fields, keep=("LeaseUntil",)))

    def mark_poisoned(
        self,
        message_id: str,
        *,
        error: OutboxError,
        attempts: int | None = None,
        transport: str | None = None,
        mailbox: str | None = None,
        request_ids: Iterable[str | None] = (),
        previous: StatusRow | None = None,
        state: str = "poisoned",
    ) -> None:
        fields: dict[str, Any] = {
            "State": state,
            "LeaseOwner": "",
            "LeaseUntil": None,
            "NextAttemptAt": None,
            **_error_fields(error),
        }
        if attempts is not None:
            fields["Attempts"] = attempts
        if transport:
            fields["Transport"] = transport
        if mailbox:
            fields["Mailbox"] = mailbox
        ids = _join_ids([*(previous.request_ids if previous else ()), *request_ids])
        if ids:
            fields["RequestIds"] = ids
        if previous is None and self.get(message_id) is None:
            fields["FirstSeen"] = self._clock()
        self._merge(message_id, _drop_none(fields, keep=("LeaseUntil", "NextAttemptAt")))

    def record_invalid(self, message_id: str, *, error: OutboxError, mailbox: str | None = None) -> bool:
        """A row for a message that failed validation, unless the id already has one (never overwrite a
        real message's history with a stray bad copy). Returns whether a row was written."""
        from azure.core.exceptions import ResourceExistsError

        now = self._clock()
        entity = {"PartitionKey": message_id, "RowKey": ROW_KEY, "State": "poisoned", "Attempts": 1,
                  "FirstSeen": now, "UpdatedAt": now, "Mailbox": mailbox or "", "PossiblyDuplicated": False,
                  **_error_fields(error)}
        try:
            self.table.create_entity(_drop_none(entity))
        except ResourceExistsError:
            return False
        return True

    def record_queued(self, message_id: str, *, transport: str | None, mailbox: str | None,
                      internet_message_id: str | None = None) -> bool:
        """The row ``mode=queue`` writes so ``GET /api/messages/{id}`` answers at once (insert only)."""
        from azure.core.exceptions import ResourceExistsError

        now = self._clock()
        entity = {"PartitionKey": message_id, "RowKey": ROW_KEY, "State": "queued", "Attempts": 0,
                  "FirstSeen": now, "UpdatedAt": now, "Transport": transport or "", "Mailbox": mailbox or "",
                  "InternetMessageId": internet_message_id or "", "PossiblyDuplicated": False}
        try:
            self.table.create_entity(entity)
        except ResourceExistsError:
            return False
        return True

    def release(self, message_id: str, *, attempts: int, state: str, delay_s: float) -> None:
        """Give the claim back without counting the attempt (a paused mailbox is not a failure)."""
        self._merge(message_id, {
            "State": state, "Attempts": attempts, "LeaseOwner": "", "LeaseUntil": None,
            "NextAttemptAt": self._clock() + timedelta(seconds=delay_s),
        })

    def reset_for_requeue(self, message_id: str) -> StatusRow:
        """For the CLI's requeue: back to ``queued`` with a fresh attempt budget (history kept)."""
        fields = {"State": "queued", "Attempts": 0, "LeaseOwner": "", "LeaseUntil": None, "NextAttemptAt": None}
        self._merge(message_id, fields)
        row = self.get(message_id)
        assert row is not None
        return row

    def delete(self, message_id: str) -> None:
        self.table.delete_entity(partition_key=message_id, row_key=ROW_KEY)

    def close(self) -> None:
        if self._table is not None:
            self._table.close()


def _drop_none(fields: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Table storage cannot store null; a None we want to clear is written as "" instead."""
    keep = set(keep)
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            if key in keep:
                out[key] = ""
            continue
        out[key] = value
    return out


def _with_etag(row: StatusRow, etag: str | None) -> StatusRow:
    if etag is None:
        return row
    from dataclasses import replace

    return replace(row, etag=etag)
