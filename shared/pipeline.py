"""How one message travels: parse -> validate -> already sent? -> send -> outcome.

The pipeline owns no I/O of its own: it is given the settings, the transports (``Senders``), the status
table, the queues, the blob source and a clock, so the same code runs under the Functions host, the
local host, the HTTP function and the unit tests.

Outcomes of a queue message (each logged as one ``outbox.outcome`` event):

- ``sent``: the status row says sent; the invocation returns and the host deletes the queue message.
- ``retry``: a retryable failure (or an ambiguous send): the row says retrying/ambiguous, the same v1
  body (``id`` filled in) goes back on the queue with a delay, the invocation returns.
- ``poisoned``: a permanent failure, an invalid message, or attempts exhausted: a classified envelope
  goes to ``<queue>-poison`` and the row says poisoned.
- ``duplicate``: the row says the message was already sent (or poisoned): nothing is sent.
- ``poisoned`` with code ``outbox.id_reused``: the id belongs to a message with other content; this one
  is refused (envelope only: the row stays the first message's). ``mode=now`` answers it as ``conflict``.
- ``error``: a storage call failed or stalled past OUTBOX_STORAGE_TIMEOUT_S: the invocation fails so the
  host redelivers the message (only this event says why).
- ``deferred``: another copy of the same id holds a live claim, or the mailbox is paused by a
  Retry-After: the copy goes back on the queue with a delay and no attempt is counted.

Every retry/poison write happens before the invocation returns; if one fails the exception propagates,
the invocation fails and the host redelivers the message, so nothing is ever acknowledged unsaved.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import sent_copy
from shared.acceptance import Accepted, NotAccepted, accept
from shared.backoff import retry_delay_s
from shared.deadline import Abandoned, Progress
from shared.decision import PAUSED_CODES, Action, Attempt, decide
from shared.errors import ConfigError, OutboxError, redact
from shared.events import log_outcome, outcome_event
from shared.message import Message
from shared.sent_copy import CopyState
from shared.states import Kind, State

if TYPE_CHECKING:
    from shared.ports import BlobSource, PipelineSettings, QueuePort, StatusPort, Transport, TransportSource
from shared.storage.queues import poison_envelope
from shared.storage.status import Claim, ClaimKind, StatusRow
from shared.transports.base import InDrafts, SendsDrafts

log = logging.getLogger("outbox.pipeline")

# A duplicate in flight is retried shortly after the other copy's lease ends.
_LEASE_GRACE_S = 1.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What became of one message in one invocation (the HTTP function renders it; tests assert it)."""

    kind: Kind
    message_id: str
    attempt: int = 0
    mailbox: str | None = None
    transport: str | None = None
    error: OutboxError | None = None
    invalid: list[dict[str, str]] | None = None
    delay_s: float | None = None
    request_ids: tuple[str, ...] = ()
    duration_ms: float = 0.0
    possibly_duplicated: bool = False
    sent_via: str | None = None
    internet_message_id: str | None = None
    state: str | None = None
    ambiguous: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str | None:
        return self.error.category if self.error else None

    @property
    def code(self) -> str | None:
        return self.error.code if self.error else None


# Where shared.message quotes an excerpt of an undecodable body: "received N characters: '...'",
# "first bytes b'...'", "decodes to something that is not a JSON object: '...'".
_EXCERPT = re.compile(r"""((?:characters|bytes|object):? b?)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def invalid_error(exc: Exception, *, unreadable: bool = False) -> OutboxError:
    """An InvalidMessage (or anything unreadable) as the classified error the envelope carries.

    For a body that did not decode, the validator quotes an excerpt of it; that excerpt is cut here,
    because body text never goes into logs or error fields (the envelope keeps the raw text itself)."""
    detail = str(exc)
    if unreadable:
        detail = _EXCERPT.sub(r"\1'…'", detail)
    return OutboxError(
        "invalid_message",
        "invalid_message",
        retryable=False,
        detail=detail,
        hint="fix the producer: the detail names each offending field (format: docs/message-format.md)",
    )


def id_conflict_error(message_id: str, row: StatusRow) -> OutboxError:
    """A body that reuses the id of a message with other content (design.md: ids are idempotency keys)."""
    first = row.first_seen.isoformat(timespec="seconds") if row.first_seen else "earlier"
    return OutboxError(
        "invalid_message",
        "outbox.id_reused",
        retryable=False,
        detail=f"id {message_id!r} was first used at {first} for a message with other content "
        f"(that message is {row.state}); this one was not sent",
        hint="give every new message a new id (the same id means the same message); send this one again "
        "with a new id",
    )


class IdConflict(Exception):
    """``enqueue``: the id already names a message with other content."""

    def __init__(self, message_id: str, row: StatusRow) -> None:
        self.message_id = message_id
        self.row = row
        self.error = id_conflict_error(message_id, row)
        super().__init__(self.error.detail)


@dataclass(frozen=True)
class Enqueued:
    """What ``enqueue`` did: the id, the row now stored, and whether an earlier copy was there first."""

    message_id: str
    row: StatusRow
    duplicate: bool


def unexpected_error(exc: BaseException, *, transport: str | None) -> OutboxError:
    """A bug or an unclassified failure inside a transport. We cannot know whether bytes left, so it
    is treated as possibly delivered: the next attempt deduplicates before sending again."""
    return OutboxError(
        "unknown",
        "outbox.unexpected",
        transport=transport if transport in ("graph", "smtp") else None,
        retryable=True,
        request_sent=True,
        maybe_delivered=True,
        detail=f"{type(exc).__name__}: {redact(str(exc))[:300]}",
        hint="an unexpected failure; the function log has the stack trace. Report it if it repeats",
    )


def _request_ids(obj: Any) -> tuple[str, ...]:
    ids: list[str] = []
    for name in ("request_id", "client_request_id"):
        value = getattr(obj, name, None)
        if value:
            ids.append(str(value))
    return tuple(ids)


class Pipeline:
    """Everything between a queue body (or an HTTP body) and its outcome."""

    def __init__(
        self,
        settings: PipelineSettings,
        senders: TransportSource | None,
        status: StatusPort,
        queues: QueuePort,
        blobs: BlobSource | None,
        clock: Clock = _utcnow,
        *,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.senders = senders
        self.status = status
        self.queues = queues
        self.blobs = blobs
        self.clock = clock
        self.rng = rng or random.Random()
        self.logger = logger

    # -- entry points -------------------------------------------------------------------------------

    def handle_queue_message(
        self, body: bytes | str, *, queue_message_id: str, dequeue_count: int = 1
    ) -> Outcome:
        """One queue message, start to outcome. Raises only when a retry/poison write failed."""
        started = time.perf_counter()
        ctx = _Ctx(queue_message_id=queue_message_id, dequeue_count=dequeue_count, started=started)
        try:
            outcome = self._handle(body, ctx)
        except Exception as exc:
            # A storage write failed or stalled past its timeout: the host redelivers the message, and
            # the log says so (otherwise an invocation that timed out would leave no outcome at all).
            self._emit_error(exc, ctx)
            raise
        self._emit(outcome, ctx)
        return outcome

    def send_now(self, data: Mapping[str, Any] | bytes | str, *, request_id: str | None = None,
                 progress: Progress | None = None) -> Outcome:
        """``POST /api/send?mode=now``: one attempt at once; failures are answered, not queued.

        ``progress`` (an HTTP answer's deadline) learns the id, and is asked before the send begins."""
        started = time.perf_counter()
        # The lease owner is unique per call, never the client's request id: a client retrying with the
        # same x-ms-client-request-id while the first call still sends must find the claim taken.
        owner = f"http:{uuid.uuid4().hex}"
        ctx = _Ctx(queue_message_id=owner, dequeue_count=1, started=started, now_mode=True,
                   client_request_id=request_id, progress=progress)
        outcome = self._handle(data, ctx)
        self._emit(outcome, ctx)
        return outcome

    def enqueue(self, data: Mapping[str, Any] | bytes | str, *, progress: Progress | None = None) -> Enqueued:
        """``POST /api/send?mode=queue``: accept, give the message an id, record it, put it on the queue.

        Raises ``NotAccepted`` for a message that would only be poisoned, ``IdConflict`` when the id belongs
        to a message with other content, and OutboxError (size) for one that does not fit a queue message.
        The same message again (same id, same content) is not queued twice once it has a queue message of
        its own: the answer says ``duplicate``. ``progress`` learns the id and is asked before the
        message goes on the queue."""
        accepted = accept(data, self.settings, fallback_id=uuid.uuid4().hex)
        if progress is not None:
            progress.identified(accepted.message_id)
        queued = self.status.record_queued(
            accepted.message_id, transport=accepted.transport, mailbox=accepted.mailbox,
            internet_message_id=accepted.internet_message_id, fingerprint=accepted.fingerprint)
        if queued.conflict:
            raise IdConflict(accepted.message_id, queued.row)
        if queued.needs_enqueue:
            if progress is not None:
                progress.commit()
            self.queues.enqueue(accepted.body)
        return Enqueued(accepted.message_id, queued.row, duplicate=not queued.created)

    # -- the flow -----------------------------------------------------------------------------------

    def _handle(self, body: Any, ctx: _Ctx) -> Outcome:
        # 1-2. Decode and validate: anything outbox will never send is poisoned (with its raw text when
        # it did not even decode).
        try:
            accepted = accept(body, self.settings, fallback_id=ctx.queue_message_id)
        except NotAccepted as exc:
            return self._invalid(exc, ctx)

        message_id, mailbox, transport_name = accepted.message_id, accepted.mailbox, accepted.transport
        message, imid = accepted.message, accepted.internet_message_id
        work = _Work(message_id, accepted.body, mailbox, accepted=accepted)
        ctx.message_id, ctx.mailbox, ctx.transport = message_id, mailbox, transport_name
        if ctx.progress is not None:
            ctx.progress.identified(message_id)

        # 3. Already sent? Claim the status row.
        claim = self.status.claim(message_id, owner=ctx.queue_message_id, lease_s=self.settings.lease_s,
                                  transport=transport_name, mailbox=mailbox, internet_message_id=imid,
                                  fingerprint=accepted.fingerprint)
        work.claim = claim
        if claim.kind is ClaimKind.CONFLICT:
            return self._conflict(work, ctx, claim.row)
        if claim.kind is ClaimKind.ALREADY_SENT and claim.row.sent_copy == CopyState.PENDING and not ctx.now_mode:
            return self._sent_copy_followup(work, ctx, claim.row)
        if claim.kind in (ClaimKind.ALREADY_SENT, ClaimKind.POISONED):
            return self._outcome(Kind.DUPLICATE, work, ctx, state=claim.row.state, attempt=claim.row.attempts,
                                 request_ids=claim.row.request_ids, sent_via=claim.row.sent_via)
        if claim.kind is ClaimKind.IN_FLIGHT:
            delay = claim.wait_s + _LEASE_GRACE_S
            if ctx.now_mode:
                return self._outcome(Kind.IN_FLIGHT, work, ctx, state=State.SENDING, delay_s=delay,
                                     attempt=claim.row.attempts)
            self.queues.requeue(self._retry_body(work), delay_s=delay)
            return self._outcome(Kind.DEFERRED, work, ctx, state=State.SENDING, delay_s=delay,
                                 attempt=claim.row.attempts, extra={"reason": "in_flight"})

        work.attempt = claim.row.attempts
        try:
            if self.senders is None:
                raise ConfigError("this pipeline was built without transports (enqueue only)",
                                  code="outbox.no_transports")
            transport = self.senders.transport(transport_name)
        except OutboxError as err:  # e.g. a transport that cannot be built from the settings: config
            return self._failed(work, ctx, err)

        # 4. The previous attempt may have delivered: decide per OUTBOX_ON_AMBIGUOUS before sending.
        if claim.previous_unknown:
            settled = self._settle_previous_attempt(work, ctx, transport)
            if settled is not None:
                return settled

        # 5. Send (unless the HTTP caller has been answered already: then give the claim back).
        if ctx.progress is not None:
            try:
                ctx.progress.commit()
            except Abandoned:
                self._give_back(work)
                raise
        try:
            if work.draft_id is not None and isinstance(transport, SendsDrafts):
                result = transport.send_draft(message, internet_message_id=imid, draft_id=work.draft_id)
            else:
                result = transport.send(message, internet_message_id=imid, blobs=self.blobs)
        except OutboxError as err:
            return self._failed(work, ctx, err)
        except Exception as exc:
            log.exception("transport %s raised an unclassified error for %s", transport_name, message_id)
            return self._failed(work, ctx, unexpected_error(exc, transport=transport_name))

        ids = _request_ids(result)
        sent_by = getattr(result, "transport", transport_name)
        mode = self.settings.smtp_sent_copy
        copy_due = sent_copy.first_due_s(mode, self.settings.lookup_settle_s) if sent_copy.wanted(
            mode, message, sent_by) else None
        row = self.status.mark_sent(message_id, transport=sent_by, request_ids=ids,
                                    possibly_duplicated=work.possibly_duplicated or None, previous=claim.row,
                                    sent_copy_due_s=copy_due)
        extra: dict[str, Any] = {"path": getattr(result, "path", None)}
        if copy_due is not None and copy_due <= 0:
            extra["sentCopy"] = str(self._copy_step(work, row).state)
        elif copy_due is not None:
            self.queues.requeue(self._retry_body(work), delay_s=copy_due)
            extra["sentCopy"] = str(CopyState.PENDING)
        return self._outcome(Kind.SENT, work, ctx, state=State.SENT, request_ids=ids, sent_via="send", extra=extra)

    # -- the Sent Items copy of an SMTP send (shared.sent_copy) -------------------------------------

    def _sent_copy_followup(self, work: _Work, ctx: _Ctx, row: StatusRow) -> Outcome:
        """The queue message that comes back for a sent message's pending copy step: take the step when it
        is due and nobody else holds it; otherwise it comes back when it is due (a copy of the message that
        arrives early stands in for a follow-up lost in a crash)."""
        now = self.clock()
        wait = (row.next_attempt_at - now).total_seconds() if row.next_attempt_at else 0.0
        if row.lease_until is not None and row.lease_until > now and row.lease_owner != ctx.queue_message_id:
            wait = max(wait, (row.lease_until - now).total_seconds() + _LEASE_GRACE_S)
        if wait > 0.5:
            self.queues.requeue(self._retry_body(work), delay_s=wait)
            return self._outcome(Kind.DEFERRED, work, ctx, state=State.SENT, delay_s=wait, attempt=row.attempts,
                                 extra={"reason": "sent_copy_not_due", "sentCopy": str(CopyState.PENDING)})
        taken = self.status.take_sent_copy(work.message_id, owner=ctx.queue_message_id, lease_s=self.settings.lease_s,
                                           previous=row)
        if taken is None:  # another invocation changed the row first: it has the step
            return self._outcome(Kind.DUPLICATE, work, ctx, state=State.SENT, attempt=row.attempts,
                                 request_ids=row.request_ids, extra={"reason": "sent_copy_taken"})
        result = self._copy_step(work, taken)
        failed = result.state in (CopyState.PENDING, CopyState.FAILED)
        return self._outcome(Kind.SENT_COPY, work, ctx, state=State.SENT, attempt=row.attempts,
                             error=result.error if failed else None,
                             request_ids=(result.request_id,) if result.request_id else (),
                             extra={"sentCopy": str(result.state), "sentCopyTries": result.tries})

    def _copy_step(self, work: _Work, row: StatusRow) -> sent_copy.CopyResult:
        """One copy step for a sent row, its result stored (and the follow-up queued when it stays pending)."""
        mode = self.settings.smtp_sent_copy
        tries = row.sent_copy_tries
        graph: Any = None
        problem = ""
        if mode == "never":
            problem = "OUTBOX_SMTP_SENT_COPY is never now"
        else:
            try:
                graph = self.senders.transport("graph") if self.senders is not None else None
            except OutboxError as err:
                problem = f"the Graph transport cannot be built: {err}"
        if not isinstance(graph, sent_copy.SavesSentCopies):
            state = CopyState.SKIPPED if mode == "never" else CopyState.FAILED
            result = sent_copy.CopyResult(state, tries, detail=problem or "no Graph transport")
        else:
            assert work.imid is not None
            result = sent_copy.run_step(graph, work.message, internet_message_id=work.imid, mode=mode, tries=tries,
                                        sent_at=row.sent_at or self.clock(), blobs=self.blobs)
        due: float | None = None
        if result.state is CopyState.PENDING:
            age_s = (self.clock() - row.sent_at).total_seconds() if row.sent_at else 0.0
            if result.tries >= self.settings.max_attempts or age_s >= self.settings.max_age_s:
                result = replace(result, state=CopyState.FAILED)
            else:
                due = retry_delay_s(max(1, result.tries), retry_after=result.retry_after,
                                    base_s=self.settings.backoff_base_s, max_s=self.settings.backoff_max_s,
                                    retry_after_max_s=self.settings.retry_after_max_s, rng=self.rng)
        self.status.finish_sent_copy(work.message_id, state=result.state, tries=result.tries, detail=result.detail,
                                     due_s=due, previous=row)
        if due is not None:
            self.queues.requeue(self._retry_body(work), delay_s=due)
        if result.state in (CopyState.FAILED, CopyState.UNKNOWN):
            log.warning("Sent Items copy of %s: %s (%s)", work.message_id, result.state, result.detail)
        return result

    def _settle_previous_attempt(self, work: _Work, ctx: _Ctx, transport: Transport) -> Outcome | None:
        """An earlier attempt may have delivered (ambiguous, or it died while sending). Returns the
        outcome when that settles the message, None when it is to be sent (again)."""
        claim = work.claim
        assert claim is not None
        work.after_ambiguous = True
        policy = self.settings.on_ambiguous
        if policy == "poison":
            return self._poison(work, ctx, _previous_unknown_error(work.transport))
        if policy == "resend":
            work.possibly_duplicated = True
            return None
        settling = self._still_settling(claim)
        if settling is not None:
            return self._not_yet_known(work, ctx, settling)
        try:
            assert work.imid is not None
            found = transport.find_sent(work.message, internet_message_id=work.imid)
        except OutboxError as err:
            return self._failed(work, ctx, err)
        except Exception as exc:
            log.exception("Sent Items lookup for %s failed unexpectedly", work.message_id)
            # Only a lookup failed: nothing was sent in this attempt.
            return self._failed(work, ctx, unexpected_error(exc, transport=work.transport)
                                .replace(maybe_delivered=False))
        if isinstance(found, InDrafts):
            return self._found_in_drafts(work, ctx, found)
        work.lookup = found
        if found is True:
            self.status.mark_sent(work.message_id, transport=work.transport, sent_via="lookup",
                                  previous=claim.row)
            return self._outcome(Kind.SENT, work, ctx, state=State.SENT, sent_via="lookup",
                                 request_ids=claim.row.request_ids)
        # Not found, or unknowable (SMTP, no Mail.ReadBasic): send. Either way it is flagged as maybe twice:
        # Sent Items can lag past the settle time (Microsoft states no bound), so a miss proves nothing.
        work.possibly_duplicated = True
        return None

    def _found_in_drafts(self, work: _Work, ctx: _Ctx, found: InDrafts) -> Outcome | None:
        """The message is in Drafts, not in Sent Items. Exchange's own copy of a sendMail it accepted is on
        its way (the backend can still be at work long after a 504): not yet known, wait, send nothing. A
        draft of outbox's own (the large path) still there after the settle time: its ``/send`` did not
        take effect, so that same draft is sent again (never a second item: if the first ``/send`` is still
        at work there is one item to move, not two messages). Flagged like any send after a miss."""
        claim = work.claim
        assert claim is not None
        first_seen = claim.row.first_seen
        age_s = (self.clock() - first_seen).total_seconds() if first_seen else 0.0
        if not found.ours and age_s < self.settings.max_age_s:
            return self._not_yet_known(work, ctx, max(1.0, self.settings.lookup_settle_s), in_drafts=True)
        work.lookup = False
        work.draft_id = found.draft_id
        work.possibly_duplicated = True
        return None

    def _still_settling(self, claim: Claim) -> float | None:
        """Seconds until an ambiguous attempt's Sent Items copy can be looked for (None: now)."""
        if claim.previous_state != State.AMBIGUOUS or claim.previous_due_at is None:
            return None
        wait = (claim.previous_due_at - self.clock()).total_seconds()
        return wait if wait > 0.5 else None

    def _not_yet_known(self, work: _Work, ctx: _Ctx, wait_s: float, *, in_drafts: bool = False) -> Outcome:
        """Too early to look: whether the earlier attempt delivered is not yet known. Nothing is sent and no
        attempt is counted; the message comes back when the lookup can tell."""
        claim = work.claim
        assert claim is not None
        transport = work.transport if work.transport in ("graph", "smtp") else None
        if in_drafts:
            detail = (f"an earlier attempt is in the mailbox's Drafts: Exchange is still sending it; Sent Items is "
                      f"looked at again in {wait_s:.0f} s (OUTBOX_LOOKUP_SETTLE_S)")
        else:
            detail = (f"an earlier attempt may have been delivered; Sent Items is looked at in {wait_s:.0f} s, once "
                      "its copy can have appeared (OUTBOX_LOOKUP_SETTLE_S)")
        err = OutboxError(
            "transient", "outbox.lookup_settling", transport=transport, retryable=True, maybe_delivered=True,
            retry_after=wait_s, detail=detail,
            hint="nothing to do: outbox looks for the message before it sends again; do not send a new copy")
        attempts = max(0, work.attempt - 1)
        self.status.release(work.message_id, attempts=attempts, state=State.AMBIGUOUS, delay_s=wait_s,
                            previous=claim.row)
        return self._answer_or_requeue(work, ctx, Kind.DEFERRED, err, state=State.AMBIGUOUS, delay_s=wait_s,
                                       request_ids=(), attempt=attempts, ambiguous=True,
                                       extra={"reason": err.code})

    def _give_back(self, work: _Work) -> None:
        """The claim back, unused, so the caller's resend of the same id need not wait out the lease.
        Best effort: storage may be what made the answer late."""
        claim = work.claim
        assert claim is not None
        try:
            state = claim.previous_state if claim.previous_state not in (None, State.SENDING) else State.QUEUED
            self.status.release(work.message_id, attempts=max(0, work.attempt - 1), state=state, delay_s=0,
                                previous=claim.row)
        except Exception as exc:
            log.warning("could not give back the claim of %s (the lease expires by itself): %s",
                        work.message_id, exc)

    # -- failure handling ---------------------------------------------------------------------------

    def _failed(self, work: _Work, ctx: _Ctx, err: OutboxError) -> Outcome:
        """Carry out :func:`shared.decision.decide`: write the row, then answer or requeue."""
        claim = work.claim
        assert claim is not None
        first_seen = claim.row.first_seen
        age_s = (self.clock() - first_seen).total_seconds() if first_seen else 0.0
        attempt = Attempt(work.attempt, claim.previous_state, after_ambiguous=work.after_ambiguous,
                          lookup=work.lookup, now_mode=ctx.now_mode, age_s=age_s, throttled=claim.row.throttled)
        decision = decide(err, attempt, self.settings, rng=self.rng)
        if decision.action is Action.POISON:
            return self._poison(work, ctx, decision.error, attempts=decision.attempts, throttled=decision.throttled,
                                extra={"exhausted": decision.exhausted or None, "throttledTries": decision.throttled})

        assert decision.delay_s is not None
        ids = _request_ids(err)
        if decision.action is Action.DEFER:
            attempts = decision.attempts if decision.attempts is not None else work.attempt
            self.status.release(work.message_id, attempts=attempts, state=decision.state,
                                delay_s=decision.delay_s, previous=claim.row,
                                error=None if err.code in PAUSED_CODES else err, throttled=decision.throttled)
            extra: dict[str, Any] = {"reason": err.code, "throttledTries": decision.throttled}
            if err.code in PAUSED_CODES:
                ids = ()
        else:
            attempts = work.attempt
            self.status.mark_retrying(work.message_id, error=decision.error, delay_s=decision.delay_s,
                                      state=decision.state, request_ids=ids, previous=claim.row)
            extra = {}
        return self._answer_or_requeue(work, ctx, decision.kind, err, state=decision.state,
                                       delay_s=decision.delay_s, request_ids=ids, attempt=attempts,
                                       ambiguous=decision.ambiguous, extra=extra)

    def _answer_or_requeue(self, work: _Work, ctx: _Ctx, kind: Kind, err: OutboxError, *, state: State,
                           delay_s: float, request_ids: tuple[str, ...], attempt: int, ambiguous: bool,
                           extra: dict[str, Any]) -> Outcome:
        """After the row says when the next attempt is due: the HTTP caller gets the answer (nothing goes
        back on the queue: it sends again itself), a queue message goes back with the delay."""
        if ctx.now_mode:
            now_kind = Kind.FAILED if ambiguous else Kind.RETRY
            return self._outcome(now_kind, work, ctx, error=err, state=state, delay_s=delay_s,
                                 request_ids=request_ids, attempt=attempt, ambiguous=ambiguous)
        self.queues.requeue(self._retry_body(work), delay_s=delay_s)
        return self._outcome(kind, work, ctx, error=err, state=state, delay_s=delay_s, request_ids=request_ids,
                             attempt=attempt, ambiguous=ambiguous, extra=extra)

    def _poison(self, work: _Work, ctx: _Ctx, err: OutboxError, *, attempts: int | None = None,
                throttled: int | None = None, extra: dict[str, Any] | None = None) -> Outcome:
        claim = work.claim
        assert claim is not None
        ids = _request_ids(err)
        attempts = work.attempt if attempts is None else attempts
        if ctx.now_mode:
            # The caller gets the error in the answer; nothing goes to the poison queue.
            self.status.mark_poisoned(work.message_id, error=err, request_ids=ids, previous=claim.row,
                                      state=State.FAILED, attempts=attempts, throttled=throttled)
            return self._outcome(Kind.FAILED, work, ctx, error=err, state=State.FAILED, request_ids=ids,
                                 extra=extra)
        envelope = poison_envelope(
            self._retry_body(work),
            err,
            attempts=attempts,
            first_seen=claim.row.first_seen,
            failed_at=self.clock(),
        )
        # Envelope first: if the row said poisoned and the envelope write then failed, a redelivery
        # would see "poisoned" and drop the message.
        self.queues.poison(envelope, message_id=work.message_id)
        self.status.mark_poisoned(work.message_id, error=err, attempts=attempts, request_ids=ids,
                                  previous=claim.row, throttled=throttled)
        return self._outcome(Kind.POISONED, work, ctx, error=err, state=State.POISONED, request_ids=ids,
                             attempt=attempts, extra=extra)

    def _invalid(self, refused: NotAccepted, ctx: _Ctx) -> Outcome:
        err = invalid_error(refused.error, unreadable=refused.unreadable)
        errors = refused.to_list() if not refused.unreadable else [{"field": "$", "message": err.detail}]
        message_id = refused.message_id
        work = _Work(message_id, refused.original, refused.mailbox)
        work.attempt = 1
        if ctx.now_mode:
            return self._outcome(Kind.FAILED, work, ctx, error=err, invalid=errors,
                                 extra={"notPermitted": refused.not_permitted or None,
                                        "acrossFields": refused.only_across_fields or None})
        # Row first, then envelope, and either failure raises so the host redelivers: an invalid message
        # never consults its row, so a redelivery writes the missing envelope without a second copy.
        now = self.clock()
        self.status.record_invalid(message_id, error=err, mailbox=refused.mailbox)
        envelope = poison_envelope(refused.original, err, attempts=1, first_seen=now, failed_at=now)
        self.queues.poison(envelope, message_id=message_id)
        return self._outcome(Kind.POISONED, work, ctx, error=err, state=State.POISONED, invalid=errors)

    def _conflict(self, work: _Work, ctx: _Ctx, row: StatusRow) -> Outcome:
        """The id is another message's: refuse this one without touching that message's row."""
        err = id_conflict_error(work.message_id, row)
        if ctx.now_mode:
            return self._outcome(Kind.CONFLICT, work, ctx, error=err, state=row.state, attempt=0)
        now = self.clock()
        envelope = poison_envelope(work.original, err, attempts=1, first_seen=now, failed_at=now)
        self.queues.poison(envelope, message_id=work.message_id)
        return self._outcome(Kind.POISONED, work, ctx, error=err, state=State.POISONED, attempt=1,
                             extra={"reason": "id_reused"})

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _retry_body(work: _Work) -> dict[str, Any]:
        """The producer's v1 body as written, with ``id`` filled in: never the normalised copy the
        transports send (lower-cased domains, guessed content types), so what comes back, or what an
        operator requeues from the poison queue, is what the producer sent."""
        return {**work.original, "id": work.message_id}

    def _outcome(self, kind: Kind, work: _Work, ctx: _Ctx, *, error: OutboxError | None = None,
                 invalid: list[dict[str, str]] | None = None, state: str | None = None,
                 delay_s: float | None = None, request_ids: tuple[str, ...] = (), attempt: int | None = None,
                 sent_via: str | None = None, ambiguous: bool = False,
                 extra: dict[str, Any] | None = None) -> Outcome:
        return Outcome(
            kind=kind,
            message_id=work.message_id,
            attempt=work.attempt if attempt is None else attempt,
            mailbox=work.mailbox,
            transport=work.transport,
            error=error,
            invalid=invalid,
            delay_s=delay_s,
            request_ids=tuple(request_ids),
            duration_ms=(time.perf_counter() - ctx.started) * 1000.0,
            possibly_duplicated=work.possibly_duplicated,
            sent_via=sent_via,
            internet_message_id=work.imid,
            state=state,
            ambiguous=ambiguous,
            extra={k: v for k, v in (extra or {}).items() if v is not None},
        )

    def _emit_error(self, exc: Exception, ctx: _Ctx) -> None:
        dims = outcome_event(
            Kind.ERROR,
            message_id=ctx.message_id,
            mailbox=ctx.mailbox,
            transport=ctx.transport,
            attempt=0,
            category="transient",
            code=f"outbox.{type(exc).__name__}",
            duration_ms=(time.perf_counter() - ctx.started) * 1000.0,
            queue_message_id=ctx.queue_message_id,
            dequeue_count=ctx.dequeue_count,
            detail=str(exc),
            hint="the invocation failed before its outcome was stored; the Functions host delivers the "
            "message again (after maxDequeueCount failures it moves it to the poison queue)",
        )
        log_outcome(dims, log=self.logger)

    def _emit(self, outcome: Outcome, ctx: _Ctx) -> None:
        err = outcome.error
        extra = dict(outcome.extra)
        if ctx.now_mode:
            extra["mode"] = "now"
            if ctx.client_request_id:
                extra["clientRequestId"] = ctx.client_request_id
        if outcome.ambiguous:
            extra["ambiguous"] = True
        if outcome.possibly_duplicated:
            extra["possiblyDuplicated"] = True
        if outcome.sent_via == "lookup":
            extra["sentVia"] = "lookup"
        if outcome.state:
            extra["state"] = outcome.state
        if err is not None and err.transport and err.transport != outcome.transport:
            extra["errorSource"] = err.transport
        dims = outcome_event(
            outcome.kind,
            message_id=outcome.message_id,
            mailbox=outcome.mailbox,
            transport=outcome.transport,
            attempt=outcome.attempt,
            category=err.category if err else None,
            code=err.code if err else None,
            status=err.status if err else None,
            request_ids=outcome.request_ids,
            duration_ms=outcome.duration_ms,
            queue_message_id=None if ctx.now_mode else ctx.queue_message_id,
            dequeue_count=None if ctx.now_mode else ctx.dequeue_count,
            delay_s=outcome.delay_s,
            detail=err.detail if err else None,
            hint=err.hint if err else None,
            extra=extra,
        )
        log_outcome(dims, log=self.logger)


@dataclass
class _Ctx:
    queue_message_id: str
    dequeue_count: int
    started: float
    now_mode: bool = False
    client_request_id: str | None = None  # mode=now: the caller's x-ms-client-request-id, for the log
    progress: Progress | None = None  # mode=now: the HTTP answer's deadline
    message_id: str | None = None  # once the message is accepted (for the error event)
    mailbox: str | None = None
    transport: str | None = None


@dataclass
class _Work:
    """One message in one invocation: what was accepted (None for a message that did not validate), the
    claim on its row, and what this attempt learnt about earlier ones."""

    message_id: str
    original: Any  # the producer's body with its id (a dict), or the raw text of one that did not decode
    mailbox: str | None
    accepted: Accepted | None = None
    claim: Claim | None = None
    attempt: int = 0
    after_ambiguous: bool = False  # an earlier attempt may have delivered
    lookup: bool | None = None  # what the Sent Items lookup said about it
    possibly_duplicated: bool = False
    draft_id: str | None = None  # a draft of the message found in Drafts: sent again instead of a new copy

    @property
    def message(self) -> Message:
        assert self.accepted is not None
        return self.accepted.message

    @property
    def transport(self) -> str | None:
        return self.accepted.transport if self.accepted else None

    @property
    def imid(self) -> str | None:
        return self.accepted.internet_message_id if self.accepted else None


def _previous_unknown_error(transport: str | None) -> OutboxError:
    return OutboxError(
        "unknown",
        "outbox.previous_attempt_unknown",
        transport=transport if transport in ("graph", "smtp") else None,
        retryable=False,
        maybe_delivered=True,
        detail="an earlier attempt of this message stopped without recording its outcome; it may have been sent",
        hint="OUTBOX_ON_AMBIGUOUS=poison: check the recipient or Sent Items, then requeue (outbox poison requeue ID) "
        "or discard the message",
    )
