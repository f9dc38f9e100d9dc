"""shared.sent_copy: the copy step's decisions (look first or not, what each Graph answer leaves), and the
sent item it renders: flags that make it no draft, the submission time, no custom headers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.errors import OutboxError
from shared.message import Message, parse_message
from shared.message_id import make_message_id
from shared.render_graph import render_sent_copy
from shared.sent_copy import CopyState, first_due_s, run_step, wanted

SENDER = "sender@contoso.example"
IMID = make_message_id("m-1", SENDER)
SENT_AT = dt.datetime(2026, 12, 4, 7, 30, 5, tzinfo=dt.UTC)


def message(**fields: Any) -> Message:
    body: dict[str, Any] = {"from": SENDER, "to": ["a@fabrikam.example"], "subject": "S", "text": "t"}
    body.update(fields)
    return parse_message(body)


@dataclass
class Mailbox:
    """A Sent Items folder that answers as scripted (a real seam: the step's only collaborator)."""

    found: bool | None = False
    save_errors: list[OutboxError] = field(default_factory=list)
    look_errors: list[OutboxError] = field(default_factory=list)
    looks: int = 0
    saves: int = 0

    def in_sent_items(self, message: Message, *, internet_message_id: str) -> bool | None:
        self.looks += 1
        if self.look_errors:
            raise self.look_errors.pop(0)
        return self.found

    def save_sent_copy(self, message: Message, *, internet_message_id: str, sent_at: dt.datetime,
                       blobs: Any) -> str | None:
        self.saves += 1
        if self.save_errors:
            raise self.save_errors.pop(0)
        return "req-1"


def step(box: Mailbox, mode: str, tries: int = 0) -> Any:
    return run_step(box, message(), internet_message_id=IMID, mode=mode, tries=tries, sent_at=SENT_AT, blobs=None)


def throttled() -> OutboxError:
    return OutboxError("throttled", "graph.too_many_requests", transport="graph", status=429, retryable=True,
                       retry_after=7)


def denied() -> OutboxError:
    return OutboxError("permission", "ErrorAccessDenied", transport="graph", status=403, retryable=False,
                       catalog="graph.no_mail_send")


def test_which_sends_have_a_copy_step() -> None:
    assert wanted("auto", message(), "smtp") and wanted("always", message(), "smtp")
    assert not wanted("never", message(), "smtp")
    assert not wanted("auto", message(), "graph")  # Graph keeps its own copy
    assert not wanted("always", message(saveToSentItems=False), "smtp")
    assert (first_due_s("always", 120), first_due_s("auto", 120)) == (0.0, 120)


def test_auto_finds_exchanges_copy_and_saves_nothing() -> None:
    box = Mailbox(found=True)
    result = step(box, "auto")
    assert (result.state, box.looks, box.saves) == (CopyState.EXCHANGE, 1, 0)


def test_auto_saves_when_there_is_none_and_always_saves_without_looking() -> None:
    auto, always = Mailbox(found=False), Mailbox(found=True)
    assert step(auto, "auto").state is CopyState.SAVED and (auto.looks, auto.saves) == (1, 1)
    result = step(always, "always")
    assert result.state is CopyState.SAVED and (always.looks, always.saves) == (0, 1)
    assert (result.tries, result.request_id) == (1, "req-1")


def test_auto_that_may_not_read_saves_nothing_and_says_why() -> None:
    box = Mailbox(found=None)
    result = step(box, "auto")
    assert result.state is CopyState.UNKNOWN and box.saves == 0 and "Mail.ReadBasic" in (result.detail or "")


def test_a_retry_after_a_save_looks_first_and_takes_what_it_finds_for_its_own() -> None:
    box = Mailbox(found=True)
    result = step(box, "always", tries=1)
    assert (result.state, box.saves, result.tries) == (CopyState.SAVED, 0, 1)


def test_a_throttled_save_stays_pending_with_the_retry_after_and_counts_a_try() -> None:
    result = step(Mailbox(save_errors=[throttled()]), "always")
    assert (result.state, result.tries, result.retry_after) == (CopyState.PENDING, 1, 7)


def test_a_throttled_lookup_stays_pending_and_counts_no_save() -> None:
    result = step(Mailbox(look_errors=[throttled()]), "auto")
    assert (result.state, result.tries) == (CopyState.PENDING, 0)


def test_a_refused_save_fails_naming_the_permission_it_needs() -> None:
    result = step(Mailbox(save_errors=[denied()]), "always")
    assert result.state is CopyState.FAILED and "Mail.ReadWrite" in (result.detail or "")


def test_a_copy_too_large_for_one_request_is_skipped() -> None:
    too_large = OutboxError("size", "outbox.sent_copy_too_large", transport="graph", detail="5000000 bytes")
    result = step(Mailbox(save_errors=[too_large]), "always")
    assert (result.state, result.tries) == (CopyState.SKIPPED, 0)


def test_the_copy_is_a_sent_item_with_its_submission_time_and_no_custom_headers() -> None:
    rendered = render_sent_copy(message(headers={"X-Order": "1"}, html="<p>h</p>"), internet_message_id=IMID,
                                sent_at=SENT_AT)
    props = {p["id"]: p["value"] for p in rendered["singleValueExtendedProperties"]}  # type: ignore[attr-defined]
    flags = int(props["Integer 0x0E07"])
    assert flags & 0x8 == 0  # MSGFLAG_UNSENT clear: Exchange does not make it a draft
    assert props["SystemTime 0x0039"] == props["SystemTime 0x0E06"] == "2026-12-04T07:30:05Z"
    assert "internetMessageHeaders" not in rendered and rendered["internetMessageId"] == IMID
    assert rendered["body"] == {"contentType": "HTML", "content": "<p>h</p>"}


@pytest.mark.parametrize("tz", [dt.UTC, dt.timezone(dt.timedelta(hours=2))])
def test_the_submission_time_is_written_in_utc(tz: dt.tzinfo) -> None:
    rendered = render_sent_copy(message(), internet_message_id=IMID, sent_at=SENT_AT.astimezone(tz))
    props = {p["id"]: p["value"] for p in rendered["singleValueExtendedProperties"]}  # type: ignore[attr-defined]
    assert props["SystemTime 0x0039"] == "2026-12-04T07:30:05Z"
