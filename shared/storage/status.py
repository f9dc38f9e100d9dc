"""The status table: one row per message id, the single place that says what happened to a message.

Rows are claimed atomically before a send (insert-if-absent, or replace with an ETag match), so two
copies of one message cannot both send. A claim carries a lease (owner = the queue message id, until
= now + OUTBOX_LEASE_S): a copy that finds a live lease held by another queue message waits; a row
left in ``sending`` by this very queue message (the host redelivered it after a crash) or with an
expired lease means the previous attempt's outcome is unknown, which the pipeline treats like an
ambiguous send.

Every state change writes the whole row (REPLACE), so a column that no longer applies (the lease after
a send, the time of a next attempt, the status code of an earlier error) is absent rather than left
over or written as "": each column always holds its one type, which typed readers (.NET
``DateTimeOffset?``, a POCO) need.

Row schema ``outbox.status/2`` (column ``Schema``) adds ``Fingerprint``: the hash of the message's
normalised content (shared.message.fingerprint). An id is an idempotency key for one message, so a body
with the same id and another fingerprint is refused (``ClaimKind.CONFLICT``; ``queued_for``), never
taken for a duplicate of the first. A version-1 row (no fingerprint) matches any content, as before.
An invalid message's row has no fingerprint either: nothing of it was ever accepted, so a corrected
message may take its id.

States: ``queued`` (accepted, not tried), ``sending`` (claimed), ``sent``, ``retrying``,
``ambiguous`` (may have been delivered; the next attempt decides per OUTBOX_ON_AMBIGUOUS),
``poisoned`` (an envelope is on the poison queue), ``failed`` (``mode=now`` answered a permanent
error to its caller; nothing was queued).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from shared.errors import ConfigError, OutboxError, redact
from shared.states import State

ROW_KEY = ""
ROW_SCHEMA = "outbox.status/2"
STATES = tuple(State)
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
    fingerprint: str | None = None
    throttled: int = 0  # throttled tries, which count no attempt
    # An SMTP submission's Sent Items copy (shared.sent_copy): its state, the tries at saving one, and why
    # it failed or could not be known. NextAttemptAt says when a pending step is due.
    sent_copy: str | None = None
    sent_copy_tries: int = 0
    sent_copy_detail: str | None = None
    etag: str | None = field(default=None, compare=False)

    def open_to(self, fingerprint: str | None) -> bool:
        """Whether a message with ``fingerprint`` may use this row's id: the same content, a row that
        holds no content of its own (an invalid message's, or a version-1 row), or no fingerprint to
        compare."""
        if fingerprint is None or self.fingerprint is None:
            return True
        if self.state == "poisoned" and self.last_category == "invalid_message":
            return True
        return self.fingerprint == fingerprint

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
            fingerprint=get("Fingerprint"),
            throttled=int(get("Throttled") or 0),
            sent_copy=get("SentCopy"),
            sent_copy_tries=int(get("SentCopyTries") or 0),
            sent_copy_detail=get("SentCopyDetail"),
            etag=(getattr(entity, "metadata", None) or {}).get("etag"),
        )

    def to_entity(self) -> dict[str, Any]:
        """The row as a table entity: every column that has a value, none written as "" or null."""
        columns: dict[str, Any] = {
            "State": self.state,
            "Attempts": self.attempts,
            "FirstSeen": self.first_seen,
            "UpdatedAt": self.updated_at,
            "Transport": self.transport,
            "Mailbox": self.mailbox,
            "InternetMessageId": self.internet_message_id,
            "LastCategory": self.last_category,
            "LastCode": self.last_code,
            "LastStatus": self.last_status,
            "LastHint": self.last_hint,
            "LastDetail": self.last_detail,
            "RequestIds": ",".join(self.request_ids),
            "SentAt": self.sent_at,
            "SentVia": self.sent_via,
            "PossiblyDuplicated": self.possibly_duplicated,
            "LeaseOwner": self.lease_owner,
            "LeaseUntil": self.lease_until,
            "NextAttemptAt": self.next_attempt_at,
            "Fingerprint": self.fingerprint,
            "Throttled": self.throttled or None,
            "SentCopy": self.sent_copy,
            "SentCopyTries": self.sent_copy_tries or None,
            "SentCopyDetail": self.sent_copy_detail,
            "Schema": ROW_SCHEMA,
        }
        present = {name: value for name, value in columns.items() if value is not None and value != ""}
        return {"PartitionKey": self.id, "RowKey": ROW_KEY, **present}

    def with_error(self, error: OutboxError | None) -> StatusRow:
        """This row with ``error`` as its last error, whole (no field of an earlier one left over)."""
        if error is None:
            return self
        detail = redact(error.detail or "")[:_DETAIL_LIMIT]
        return replace(self, last_category=error.category, last_code=error.code, last_status=error.status,
                       last_hint=error.hint or None, last_detail=detail or None)

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
            "throttledTries": self.throttled,
        }
        if self.sent_copy:
            out["sentCopy"] = {"state": self.sent_copy, "tries": self.sent_copy_tries,
                               "detail": self.sent_copy_detail}
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
    CONFLICT = "conflict"        # the id belongs to a message with other content: refuse this one


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    row: StatusRow
    previous_state: str | None = None
    # The previous attempt may have delivered: it was left ambiguous, or it died while sending.
    previous_unknown: bool = False
    wait_s: float = 0.0
    # When the row said the next attempt was due (an ambiguous row's settle time for the lookup).
    previous_due_at: datetime | None = None


@dataclass(frozen=True)
class Queued:
    """What :meth:`StatusStore.record_queued` found: a new row (``created``), the row of an earlier copy of
    the same message, or (``conflict``) the row of a different message that already uses the id."""

    row: StatusRow
    created: bool
    conflict: bool = False

    @property
    def needs_enqueue(self) -> bool:
        """Whether the caller must put the message on the queue. A copy that was recorded but never made
        it onto the queue (the caller got a 503 in between) leaves ``queued`` or ``failed``: put it there
        again, the claim keeps it single. Every other state has its own queue message, or is final."""
        return not self.conflict and (self.created or self.row.state in ("queued", "failed"))


class StatusStore:
    """Status rows in Azure Table storage (azure-data-tables)."""

    def __init__(self, table_service: Any, table: str, *, clock: Clock = utcnow) -> None:
        self._service = table_service
        self.table_name = table
        self._clock = clock
        self._table: Any = None
        self._lock = threading.Lock()

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

    def _save(self, row: StatusRow, *, etag: str | None = None) -> StatusRow:
        """Write the whole row; with ``etag``, only if nobody changed it since it was read (412 otherwise).
        Returns the row as stored, with its new ETag."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        saved = replace(row, updated_at=self._clock())
        entity = saved.to_entity()
        if etag is None:
            answer = self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        else:
            answer = self.table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        return replace(saved, etag=answer.get("etag") if isinstance(answer, dict) else None)

    def _current(self, message_id: str, previous: StatusRow | None) -> StatusRow:
        """The row a state change starts from: the caller's (its claim), else the stored one, else new."""
        if previous is not None:
            return previous
        return self.get(message_id) or StatusRow(id=message_id, state="queued", first_seen=self._clock())

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
        fingerprint: str | None = None,
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
            if entity is None:
                row = StatusRow(id=message_id, state="sending", attempts=1, first_seen=now, updated_at=now,
                                transport=transport, mailbox=mailbox, internet_message_id=internet_message_id,
                                lease_owner=owner, lease_until=lease_until, fingerprint=fingerprint)
                try:
                    created = self.table.create_entity(row.to_entity())
                except ResourceExistsError:
                    continue  # another copy inserted first: read it and decide again
                etag = created.get("etag") if isinstance(created, dict) else None
                return Claim(ClaimKind.CLAIMED, replace(row, etag=etag), previous_state=None)

            row = StatusRow.from_entity(entity)
            if not row.open_to(fingerprint):
                return Claim(ClaimKind.CONFLICT, row, previous_state=row.state)
            if row.state == "sent":
                return Claim(ClaimKind.ALREADY_SENT, row, previous_state="sent")
            if row.state == "poisoned" and row.last_category != "invalid_message":
                # An invalid message was never sent, so a corrected copy with the same id may go;
                # anything else poisoned waits for an operator (the CLI's requeue resets the row).
                return Claim(ClaimKind.POISONED, row, previous_state="poisoned")
            previous_unknown = False
            attempts = row.attempts + 1
            if row.state == "sending":
                if row.lease_until is not None and row.lease_until > now and row.lease_owner != owner:
                    wait = (row.lease_until - now).total_seconds()
                    return Claim(ClaimKind.IN_FLIGHT, row, previous_state="sending", wait_s=wait)
                previous_unknown = True
            elif row.state == "ambiguous":
                previous_unknown = True
            elif row.state == "poisoned":
                attempts = 1
            claimed = replace(
                row, state="sending", attempts=attempts, lease_owner=owner, lease_until=lease_until,
                transport=transport or row.transport, mailbox=mailbox or row.mailbox,
                internet_message_id=internet_message_id or row.internet_message_id,
                first_seen=row.first_seen or now, next_attempt_at=None, etag=None,
                fingerprint=fingerprint or row.fingerprint,
            )
            try:
                self._save(claimed, etag=row.etag)
            except ResourceNotFoundError:
                continue  # deleted under us: start over with an insert
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    continue  # someone else changed the row first: decide again on fresh data
                raise
            return Claim(ClaimKind.CLAIMED, claimed, previous_state=row.state, previous_unknown=previous_unknown,
                         previous_due_at=row.next_attempt_at)
        raise OutboxError("transient", "status.claim_contended", transport="storage", retryable=True,
                          detail=f"could not claim status row {message_id!r} after {_CLAIM_TRIES} tries")

    # -- outcomes: each writes the whole row, starting from the claim the caller holds ----------------

    def mark_sent(
        self,
        message_id: str,
        *,
        transport: str | None,
        request_ids: Iterable[str | None] = (),
        sent_via: str = "send",
        possibly_duplicated: bool | None = None,
        previous: StatusRow | None = None,
        sent_copy_due_s: float | None = None,
    ) -> StatusRow:
        """``sent``; with ``sent_copy_due_s``, a Sent Items copy step is pending, due that many seconds on."""
        row = self._current(message_id, previous)
        now = self._clock()
        pending = sent_copy_due_s is not None
        return self._save(replace(
            row, state="sent", sent_at=now, sent_via=sent_via, transport=transport or row.transport,
            lease_owner=None, lease_until=None,
            next_attempt_at=now + timedelta(seconds=sent_copy_due_s) if sent_copy_due_s is not None else None,
            request_ids=_merged_ids(row.request_ids, request_ids),
            possibly_duplicated=row.possibly_duplicated if possibly_duplicated is None else possibly_duplicated,
            sent_copy="pending" if pending else row.sent_copy,
        ))

    def take_sent_copy(self, message_id: str, *, owner: str, lease_s: float, previous: StatusRow) -> StatusRow | None:
        """Take a sent row's pending copy step for ``lease_s`` (ETag-guarded); None when another invocation
        changed the row first (it has the step, or the step is done)."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        now = self._clock()
        try:
            return self._save(replace(previous, lease_owner=owner, lease_until=now + timedelta(seconds=lease_s)),
                              etag=previous.etag)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return None
            raise

    def finish_sent_copy(self, message_id: str, *, state: str, tries: int, detail: str | None = None,
                         due_s: float | None = None, previous: StatusRow | None = None) -> StatusRow:
        """The copy step's result; ``pending`` with ``due_s`` when it is to be tried again then."""
        row = self._current(message_id, previous)
        clipped = redact(detail)[:_DETAIL_LIMIT] if detail else None
        return self._save(replace(
            row, sent_copy=state, sent_copy_tries=tries, sent_copy_detail=clipped, lease_owner=None,
            lease_until=None,
            next_attempt_at=self._clock() + timedelta(seconds=due_s) if due_s is not None else None,
        ))

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
        row = self._current(message_id, previous).with_error(error)
        self._save(replace(
            row, state=state, attempts=row.attempts if attempts is None else attempts,
            lease_owner=None, lease_until=None, next_attempt_at=self._clock() + timedelta(seconds=delay_s),
            request_ids=_merged_ids(row.request_ids, request_ids),
        ))

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
        throttled: int | None = None,
    ) -> None:
        row = self._current(message_id, previous).with_error(error)
        self._save(replace(
            row, state=state, attempts=row.attempts if attempts is None else attempts,
            throttled=row.throttled if throttled is None else throttled,
            transport=transport or row.transport, mailbox=mailbox or row.mailbox,
            lease_owner=None, lease_until=None, next_attempt_at=None,
            request_ids=_merged_ids(row.request_ids, request_ids),
        ))

    def record_invalid(self, message_id: str, *, error: OutboxError, mailbox: str | None = None) -> bool:
        """A row for a message that failed validation, unless the id already has one (never overwrite a
        real message's history with a stray bad copy). Returns whether a row was written."""
        now = self._clock()
        row = StatusRow(id=message_id, state="poisoned", attempts=1, first_seen=now, updated_at=now, mailbox=mailbox)
        return self._insert(row.with_error(error))

    def record_queued(self, message_id: str, *, transport: str | None, mailbox: str | None,
                      internet_message_id: str | None = None, fingerprint: str | None = None) -> Queued:
        """The row an enqueue writes so ``GET /api/messages/{id}`` answers at once, and what an id that
        already has a row means for this message (see :class:`Queued`)."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        for _ in range(_CLAIM_TRIES):
            now = self._clock()
            fresh = StatusRow(id=message_id, state="queued", attempts=0, first_seen=now, updated_at=now,
                              transport=transport, mailbox=mailbox, internet_message_id=internet_message_id,
                              fingerprint=fingerprint)
            if self._insert(fresh):
                return Queued(fresh, created=True)
            row = self.get(message_id)
            if row is None:
                continue  # deleted between the insert and the read
            if not row.open_to(fingerprint):
                return Queued(row, created=False, conflict=True)
            if row.state == "poisoned" and row.last_category == "invalid_message":
                # A corrected message takes the id of an invalid one: the row starts over.
                try:
                    self._save(replace(fresh, first_seen=row.first_seen or now), etag=row.etag)
                except ResourceNotFoundError:
                    continue
                except HttpResponseError as exc:
                    if exc.status_code == 412:
                        continue
                    raise
                return Queued(replace(fresh, first_seen=row.first_seen or now), created=True)
            return Queued(row, created=False)
        raise OutboxError("transient", "status.claim_contended", transport="storage", retryable=True,
                          detail=f"could not record status row {message_id!r} after {_CLAIM_TRIES} tries")

    def _insert(self, row: StatusRow) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.table.create_entity(row.to_entity())
        except ResourceExistsError:
            return False
        return True

    def release(self, message_id: str, *, attempts: int, state: str, delay_s: float,
                previous: StatusRow | None = None, error: OutboxError | None = None,
                throttled: int | None = None) -> None:
        """Give the claim back without counting the attempt (throttling is not the message's fault);
        ``error`` becomes the last error, ``throttled`` the count of throttled tries."""
        row = self._current(message_id, previous).with_error(error)
        self._save(replace(row, state=state, attempts=attempts, lease_owner=None, lease_until=None,
                           next_attempt_at=self._clock() + timedelta(seconds=delay_s),
                           throttled=row.throttled if throttled is None else throttled))

    def reset_for_requeue(self, message_id: str) -> StatusRow:
        """For the CLI's requeue: back to ``queued`` with a fresh attempt budget (history kept)."""
        row = replace(self._current(message_id, None), state="queued", attempts=0, lease_owner=None,
                      lease_until=None, next_attempt_at=None)
        self._save(row)
        stored = self.get(message_id)
        assert stored is not None
        return stored

    def delete(self, message_id: str) -> None:
        self.table.delete_entity(partition_key=message_id, row_key=ROW_KEY)

    def close(self) -> None:
        if self._table is not None:
            self._table.close()


def _merged_ids(previous: Iterable[str], new: Iterable[str | None]) -> tuple[str, ...]:
    """Request ids of every attempt, oldest first, without repeats; the last 8 (a row stays small)."""
    seen: list[str] = []
    for request_id in (*previous, *new):
        if request_id and request_id not in seen:
            seen.append(request_id)
    return tuple(seen[-8:])
