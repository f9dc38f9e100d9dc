"""The transports over slots shared through blob leases (OUTBOX_SLOTS=blob): two "instances" (two Senders,
each with its own pacing, over one slot container) against the fake Graph and Exchange, and a slot store
that stalls while mail is being sent."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.azurite import Azurite
from shared.pacing import MailboxSlots, Pacing
from shared.senders import Senders
from shared.storage import StorageOptions, build_slots, slot_client_options
from tests.integration.transport_support import SENDER, from_threads, message, settings_for
from tests.waiting import wait_until


@pytest.fixture
def instances(fakes: Any) -> Iterator[Callable[..., tuple[Senders, MailboxSlots]]]:
    """``make(storage, **settings)``: Senders whose pacing takes its slots from blob leases in ``storage``."""
    container = f"slots-{uuid.uuid4().hex[:12]}"
    made: list[tuple[Senders, MailboxSlots, Any]] = []

    def make(storage: Azurite, **overrides: str) -> tuple[Senders, MailboxSlots]:
        settings = settings_for(fakes, AzureWebJobsStorage=storage.connection_string, OUTBOX_SLOTS="blob",
                                OUTBOX_SLOTS_CONTAINER=container, OUTBOX_PACING_MAX_WAIT_S="10", **overrides)
        client = settings.storage.blob_service_client(
            **slot_client_options(settings, StorageOptions.function(settings)))
        slots = build_slots(settings, client)
        senders = Senders.from_settings(settings, pacing=Pacing.from_settings(settings, slots=slots))
        made.append((senders, slots, client))
        return senders, slots

    yield make
    for senders, slots, client in made:
        senders.close()
        slots.graph.close()
        slots.smtp.close()
        client.close()


def _send(senders: Senders, transport: str) -> Callable[[str], object]:
    def send_one(key: str) -> object:
        msg, mid = message(f"{key}-{uuid.uuid4().hex[:6]}")
        return senders.transport(transport).send(msg, internet_message_id=mid, blobs=None)

    return send_one


def test_two_instances_never_open_a_fourth_smtp_connection(
        fakes: Any, azurite: Azurite, instances: Callable[..., tuple[Senders, MailboxSlots]]) -> None:
    # Exchange: 3 connections per mailbox; a 4th session's DATA gets 432 4.3.2. Each instance alone
    # would open 3 (OUTBOX_SMTP_CONNECTIONS).
    fakes.apply_scenario({"limits": {"smtp": {"connections_per_mailbox": 3, "messages_per_window": 10_000,
                                              "latency_ms": 20}}})
    (a, _), (b, _) = instances(azurite), instances(azurite)
    errors = from_threads(lambda key: _send(a if key[1] in "0246" else b, "smtp")(key), threads=8, each=3)
    assert not errors, errors
    assert len(fakes.deliveries(transport="smtp")) == 24
    assert not [r for r in fakes.state.requests(service="smtp") if str(r.status).startswith("432")]


@pytest.mark.timeout(120)
def test_a_stalled_slot_store_leaves_graph_sending_at_the_safe_share_until_it_is_back(
        fakes: Any, stallable: Azurite, instances: Callable[..., tuple[Senders, MailboxSlots]]) -> None:
    senders, slots = instances(stallable, OUTBOX_EXPECTED_INSTANCES="2", OUTBOX_SLOT_TIMEOUT_S="0.5",
                               OUTBOX_SLOT_IDLE_S="30")
    send_one = _send(senders, "graph")
    send_one("warm")  # one lease taken while the store answers
    # Graph itself allows only the safe share, floor(4 / 2) = 2, while the store is down: a third request
    # in flight would be answered 429.
    fakes.apply_scenario({"limits": {"graph": {"concurrency": 2, "latency_ms": 100}}})
    assert stallable.pid is not None
    os.killpg(stallable.pid, signal.SIGSTOP)
    try:
        errors = from_threads(send_one, threads=8, each=2)
        assert not errors, errors
        assert slots.graph.degraded
    finally:
        os.killpg(stallable.pid, signal.SIGCONT)
    assert len(fakes.deliveries(transport="graph")) == 17
    assert fakes.state.count("graph", "status:429") == 0
    # Back: the keeper finds the store again and the whole mailbox is shared through leases once more.
    wait_until(lambda: not slots.graph.degraded, 20, message=lambda: f"still degraded: {slots.graph.operations()}")
    fakes.apply_scenario({"limits": {"graph": {"concurrency": 4, "latency_ms": 100}}})
    errors = from_threads(send_one, threads=8, each=2)
    assert not errors, errors
    assert fakes.state.count("graph", "status:429") == 0
    assert slots.graph.held(SENDER) == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["graph", "smtp"])
def test_an_instance_fetches_its_first_token_while_it_waits_for_a_slot_not_while_holding_one(
        fakes: Any, azurite: Azurite, instances: Callable[..., tuple[Senders, MailboxSlots]], transport: str) -> None:
    # An instance's first token (Key Vault, then Entra) takes a while on a busy host; fetched after the
    # slot is taken, that time is a slot every instance waits for with nothing in flight.
    (_, holder), (late, _) = instances(azurite), instances(azurite)
    held = holder.graph if transport == "graph" else holder.smtp
    assert all(held.take(SENDER, 2.0) for _ in range(held.capacity))
    tokens = fakes.state.count("entra")
    sending = threading.Thread(target=_send(late, transport), args=("late",))
    sending.start()
    try:
        wait_until(lambda: fakes.state.count("entra") > tokens, 10, message="no token asked for while waiting")
        assert not fakes.deliveries(transport=transport)  # every slot is still the other instance's
    finally:
        for _ in range(held.capacity):
            held.give_back(SENDER)
        sending.join(30)
    assert len(fakes.deliveries(transport=transport)) == 1
