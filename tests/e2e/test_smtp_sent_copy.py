"""SMTP and Sent Items (OUTBOX_SMTP_SENT_COPY), end to end: whichever way the tenant behaves, an SMTP send
leaves exactly one item in the sender's Sent Items, a sent item and not a draft, and one delivery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.graph import sent_items_listing
from tests.e2e.conftest import SENDER, Stack, mail


def _smtp(**fields: Any) -> dict[str, Any]:
    return mail(transport="smtp", **fields)


def _sent_items(stack: Stack) -> list[dict[str, Any]]:
    return sent_items_listing(stack.harness.runtime, SENDER, harness_ids=True)


def _copies_of(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    row = stack.row(message_id)
    assert row is not None
    return [m for m in _sent_items(stack) if m["internetMessageId"] == row.internet_message_id]


def _graph_calls(stack: Stack, method: str, path: str = "mailFolders") -> int:
    """Graph requests of ``method`` on a path with ``path`` in it (the fake logs each by its route)."""
    return sum(1 for r in stack.harness.runtime.state.requests(service="graph")
               if r.operation.startswith(method + " ") and path in r.operation)


def _sent_copy_settled(stack: Stack, message_id: str, timeout: float = 30.0) -> str:
    found: list[str] = []

    def settled() -> bool:
        row = stack.row(message_id)
        if row is not None and row.state == "sent" and row.sent_copy not in (None, "pending"):
            found.append(row.sent_copy)
            return True
        return False

    assert stack.host.wait_until(settled, timeout, poll_s=0.1), f"{message_id}: copy step still {stack.row(message_id)}"
    stack.wait_idle()
    return found[-1]


@pytest.mark.parametrize("exchange_keeps_copies", [True, False], ids=["exchange-keeps", "exchange-keeps-none"])
def test_auto_leaves_exactly_one_sent_item_either_way(stack_factory: Callable[..., Stack],
                                                      exchange_keeps_copies: bool) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "auto", "OUTBOX_LOOKUP_SETTLE_S": "1"})
    stack.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": exchange_keeps_copies}})
    stack.enqueue(_smtp(id="copy-auto", subject="Invoice 7"))
    state = _sent_copy_settled(stack, "copy-auto")
    assert state == ("exchange" if exchange_keeps_copies else "saved")
    [item] = _copies_of(stack, "copy-auto")
    assert item["isDraft"] is False and item["subject"] == "Invoice 7"
    assert ("deliveryId" in item) is exchange_keeps_copies  # Exchange's own copy, or the one outbox saved
    assert len(stack.harness.deliveries()) == 1  # the copy went to nobody
    public = stack.row("copy-auto").public()  # type: ignore[union-attr]
    assert public["sentCopy"]["state"] == state and public["state"] == "sent"


def test_auto_waits_the_settle_time_so_a_late_exchange_copy_is_not_doubled(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "auto", "OUTBOX_LOOKUP_SETTLE_S": "3"})
    stack.harness.apply_scenario({"exchange": {"sent_items_delay_s": 1.5}})
    stack.enqueue(_smtp(id="copy-late"))
    assert _sent_copy_settled(stack, "copy-late") == "exchange"
    assert len(_copies_of(stack, "copy-late")) == 1


def test_always_saves_a_copy_at_once(stack_factory: Callable[..., Stack]) -> None:
    always = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "always"})
    always.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})
    always.enqueue(_smtp(id="copy-always"))
    assert _sent_copy_settled(always, "copy-always") == "saved"
    [item] = _copies_of(always, "copy-always")
    assert item["isDraft"] is False
    assert (_graph_calls(always, "POST"), _graph_calls(always, "GET")) == (1, 0)  # saved at once, no lookup


def test_never_saves_none(stack_factory: Callable[..., Stack]) -> None:
    never = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "never"})
    never.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})
    never.enqueue(_smtp(id="copy-never"))
    assert never.wait_state("copy-never", "sent", timeout=30).sent_copy is None
    never.wait_idle()
    assert _copies_of(never, "copy-never") == []
    assert _graph_calls(never, "POST", "mailFolders") == 0


def test_save_to_sent_items_false_gets_no_copy(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "always"})
    stack.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})
    stack.enqueue(_smtp(id="copy-optout", saveToSentItems=False))
    assert stack.wait_state("copy-optout", "sent", timeout=30).sent_copy is None
    assert _copies_of(stack, "copy-optout") == []


def test_a_save_whose_answer_was_lost_leaves_one_copy(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "always"})
    stack.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})
    # The fake saves the item, then drops the connection: outbox cannot know it was saved.
    stack.harness.set_fault(service="graph", operation="createMessage", action="drop_after_body", times=1)
    stack.enqueue(_smtp(id="copy-lost"))
    assert _sent_copy_settled(stack, "copy-lost") == "saved"
    assert len(_copies_of(stack, "copy-lost")) == 1  # the retry looked first and found it
    assert stack.row("copy-lost").sent_copy_tries == 1  # type: ignore[union-attr]
    assert len(stack.harness.deliveries()) == 1


def test_without_mail_readwrite_the_copy_fails_with_the_permission_named(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "auto", "OUTBOX_LOOKUP_SETTLE_S": "0.5"})
    stack.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False},
                                  "apps": {"outbox-sender": {"graph_roles": ["Mail.Send", "Mail.ReadBasic"]}}})
    stack.enqueue(_smtp(id="copy-denied"))
    assert _sent_copy_settled(stack, "copy-denied") == "failed"
    row = stack.row("copy-denied")
    assert row is not None and row.state == "sent" and row.attempts == 1  # the message itself is fine
    assert "Mail.ReadWrite" in (row.sent_copy_detail or "") and "403" in (row.sent_copy_detail or "")
    assert _copies_of(stack, "copy-denied") == []


def test_auto_without_read_permission_says_unknown_and_saves_nothing(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_SMTP_SENT_COPY": "auto", "OUTBOX_LOOKUP_SETTLE_S": "0.5"})
    stack.harness.apply_scenario({"apps": {"outbox-sender": {"graph_roles": ["Mail.Send"]}}})
    stack.enqueue(_smtp(id="copy-blind"))
    assert _sent_copy_settled(stack, "copy-blind") == "unknown"
    assert "Mail.ReadBasic" in (stack.row("copy-blind").sent_copy_detail or "")  # type: ignore[union-attr]
    assert _graph_calls(stack, "POST", "mailFolders") == 0
