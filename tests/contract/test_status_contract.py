"""design.md "Status table": what an independent reader finds in ``OUTBOX_STATUS_TABLE``.

One row per message id (PartitionKey = id), a state from the documented list, and the transport,
attempts, last error, request ids and sent time (column names in docs/pipeline.md and docs/contracts.md).
"""

from __future__ import annotations

import re
from datetime import datetime

from harness.up import Harness
from tests.contract.conftest import DESIGN_STATES, EXTRA_STATES, HostPlay, Storage, mail

TIME_COLUMNS = ("FirstSeen", "UpdatedAt", "SentAt", "NextAttemptAt", "LeaseUntil")


def test_one_row_per_id_with_what_a_reader_needs(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    assert play.deliver(mail(id="row-1", transport="smtp")).ok
    rows = play.storage.rows("row-1")
    assert len(rows) == 1
    row = rows[0]
    assert row["PartitionKey"] == "row-1" and row["RowKey"] == ""
    assert row["State"] == "sent" and row["State"] in DESIGN_STATES
    assert row["Transport"] == "smtp" and row["Attempts"] == 1 and row["Mailbox"] == "sender@contoso.example"
    assert isinstance(row["SentAt"], datetime) and isinstance(row["FirstSeen"], datetime)
    [delivery] = harness.deliveries(transport="smtp")
    assert row["InternetMessageId"] == delivery.message_id
    # message-format.md: "<outbox." + 32 hex digits + "@" + the sender's domain + ">", the id not visible.
    assert re.fullmatch(r"<outbox\.[0-9a-f]{32}@contoso\.example>", row["InternetMessageId"])


def test_graph_request_ids_are_recorded(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    assert play.deliver(mail(id="row-graph")).ok
    row = play.storage.row("row-graph")
    [delivery] = harness.deliveries(transport="graph")
    assert row is not None and delivery.request_id in row["RequestIds"].split(",")


def test_the_table_name_is_the_setting_and_defaults_to_outboxstatus(harness: Harness, host_play, azurite) -> None:
    play: HostPlay = host_play(OUTBOX_STATUS_TABLE="")
    assert play.deliver(mail(id=f"default-table-{id(play)}")).ok
    default = Storage(azurite.connection_string, {**play.values, "OUTBOX_STATUS_TABLE": "outboxstatus"})
    try:
        assert default.row(f"default-table-{id(play)}")["State"] == "sent"
    finally:
        default.close()


def test_states_are_from_the_documented_list(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    harness.set_fault(service="graph", action="reply", catalog="graph.gateway_timeout", times=1)
    assert play.deliver(mail(id="states-1")).ok
    assert play.deliver(mail(id="states-2", **{"from": "other@contoso.example"})).ok
    assert play.deliver(mail(id="states-3", to="not-a-list")).ok
    states = {e["State"] for e in play.storage.table.list_entities()}
    assert states <= DESIGN_STATES | EXTRA_STATES, states
    assert {"poisoned"} <= states


def test_last_error_is_the_last_one(harness: Harness, host_play) -> None:
    """After a 503 and then a failure without any answer, the row's last error is the second one, whole:
    no status left over from the first."""
    play: HostPlay = host_play()
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=1, times=1)
    assert play.deliver(mail(id="last-err")).ok
    row = play.storage.row("last-err")
    assert (row["LastCode"], row["LastStatus"]) == ("serviceNotAvailable", 503)
    harness.set_fault(service="graph", action="down", down_mode="refused")
    retry = play.storage.receive_work(timeout=5)
    play.storage.queue.update_message(retry, visibility_timeout=0)
    assert play.invoke_next().ok
    harness.clear_faults()
    row = play.storage.row("last-err")
    assert row["State"] in ("retrying", "ambiguous") and row["Attempts"] == 2
    assert row["LastCode"] != "serviceNotAvailable"
    assert "LastStatus" not in row, f"stale status {row.get('LastStatus')} next to {row['LastCode']}"


def test_time_columns_always_hold_times(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=1, times=1)
    assert play.deliver(mail(id="typed-1")).ok
    retry = play.storage.receive_work(timeout=5)
    play.storage.queue.update_message(retry, visibility_timeout=0)
    assert play.invoke_next().ok
    row = play.storage.row("typed-1")
    assert row["State"] == "sent"
    wrong = {name: row[name] for name in TIME_COLUMNS if name in row and not isinstance(row[name], datetime)}
    assert not wrong, f"time columns that are not times: {wrong}"
    # The last error stays as history after the success; the cleared lease and next attempt are absent.
    assert row["LastCode"] == "serviceNotAvailable" and row["LastStatus"] == 503
    assert "LeaseUntil" not in row and "NextAttemptAt" not in row


def test_a_corrected_message_with_the_id_of_an_invalid_one_is_sent(harness: Harness, host_play) -> None:
    """A producer fixes its message and sends it again under the same id (docs/pipeline.md: an invalid
    message was never sent, so its id is not used up). Still one row."""
    play: HostPlay = host_play()
    assert play.deliver(mail(id="fix-me", subject="bad\nsubject")).ok
    assert play.storage.row("fix-me")["State"] == "poisoned"
    play.storage.take_poison(1, timeout=5)
    assert play.deliver(mail(id="fix-me", subject="good subject")).ok
    rows = play.storage.rows("fix-me")
    assert len(rows) == 1 and rows[0]["State"] == "sent"
    assert [d.subject for d in harness.deliveries()] == ["good subject"]
