"""``outbox enqueue``: every line checked before anything is sent, then a fast parallel enqueue."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.azurite import Azurite
from shared.message import decode_body, parse_message
from tests.cli.conftest import SENDER


def message(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"bulk-{n}", "from": SENDER, "to": [f"user{n}@fabrikam.example"], "subject": f"Hello {n}",
            "text": f"Message {n}", **fields}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def queue_count(cli: Any) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return cli.queue_client().get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


def queue_bodies(cli: Any, n: int = 32) -> list[dict[str, Any]]:
    return [decode_body(m.content) for m in cli.queue_client().peek_messages(max_messages=n)]


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An emulator of its own: 10,000 messages (even deleted ones, until Azurite's clean-up runs) make
    the session's emulator stall other tests for over a minute."""
    instance = Azurite(log_file=tmp_path / "azurite.log").start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.mark.slow
def test_ten_thousand_lines_show_progress_and_all_arrive(cli: Any, own_azurite: Azurite, tmp_path: Path) -> None:
    cli.azurite = own_azurite
    source = write_jsonl(tmp_path / "bulk.jsonl", [message(n) for n in range(10_000)])

    result = cli("enqueue", str(source), "--workers", "16")
    count = queue_count(cli)
    body = queue_bodies(cli, 1)[0]

    assert result.code == 0, result.err[-2000:]
    progress = [line for line in result.err.splitlines() if line.startswith("enqueue [")]
    assert len(progress) >= 10  # a line per 10% when stderr is not a terminal
    assert "10000/10000 100%" in progress[-1]
    assert "enqueued 10000 of 10000 messages" in result.out
    assert count == 10_000
    # The body is what the function reads: plain JSON v1, id kept.
    assert parse_message(body).id == body["id"] and body["id"].startswith("bulk-")


def test_small_file_is_enqueued_with_a_summary(cli: Any, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "few.jsonl", [message(n) for n in range(25)])

    result = cli("enqueue", str(source), "--json")

    assert result.code == 0
    summary = result.json
    assert summary["enqueued"] == summary["total"] == 25 and summary["failed"] == []
    assert queue_count(cli) == 25
    assert {b["id"] for b in queue_bodies(cli)} == {f"bulk-{n}" for n in range(25)}


def test_one_bad_line_enqueues_nothing_and_names_the_line(cli: Any, tmp_path: Path) -> None:
    rows: list[Any] = [message(n) for n in range(300)]
    rows[136] = message(136, to=["not an address"])  # line 137

    result = cli("enqueue", str(write_jsonl(tmp_path / "bad.jsonl", rows)))

    assert result.code == 2
    assert "line 137: to[0]" in result.err
    assert "1 bad line" in result.err and "nothing was enqueued" in result.err
    assert queue_count(cli) == 0


def test_every_bad_line_is_listed_in_json(cli: Any, tmp_path: Path) -> None:
    rows: list[Any] = [message(n) for n in range(10)]
    rows[2] = "{not json"
    rows[5] = message(5, **{"from": "intruder@evil.example"})
    rows[7] = message(3)  # the same id as line 4

    result = cli("enqueue", str(write_jsonl(tmp_path / "bad.jsonl", rows)), "--json")

    assert result.code == 2
    problems = {p["line"]: p["error"] for p in result.json["problems"]}
    assert sorted(problems) == [3, 6, 8]
    assert "not valid JSON" in problems[3]
    assert "not an allowed sender" in problems[6]
    assert "also used on line 4" in problems[8]
    assert result.json["enqueued"] == 0


def test_a_line_over_the_queue_limit_is_refused_before_sending(cli: Any, tmp_path: Path) -> None:
    big = base64.b64encode(b"x" * 70_000).decode()
    rows = [message(1), message(2, attachments=[{"name": "big.bin", "contentBase64": big}])]

    result = cli("enqueue", str(write_jsonl(tmp_path / "big.jsonl", rows)))

    assert result.code == 2
    assert "line 2: is" in result.err and "64 KiB" in result.err
    assert queue_count(cli) == 0


def test_csv_with_a_template_fills_each_row(cli: Any, tmp_path: Path) -> None:
    template = tmp_path / "invite.json"
    template.write_text(json.dumps({
        "id": "invite-{{code}}", "from": SENDER, "to": [{"address": "{{email}}", "name": "{{name}}"}],
        "subject": "Welcome, {{name}}", "text": "Hello {{name}}, your code is {{code}} (row {{_line}}).",
    }), encoding="utf-8")
    people = tmp_path / "people.csv"
    people.write_text('email,name,code\nann@fabrikam.example,"Doe, Ann",A1\nbob@fabrikam.example,Bob,B2\n',
                      encoding="utf-8")

    result = cli("enqueue", str(people), "--template", str(template))

    assert result.code == 0, result.err
    bodies = {b["id"]: b for b in queue_bodies(cli)}
    assert set(bodies) == {"invite-A1", "invite-B2"}
    ann = bodies["invite-A1"]
    assert ann["to"] == [{"address": "ann@fabrikam.example", "name": "Doe, Ann"}]
    assert ann["subject"] == "Welcome, Doe, Ann"
    assert ann["text"].endswith("(row 2).")


def test_csv_row_without_a_template_column_is_named(cli: Any, tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"from": SENDER, "to": ["{{email}}"], "subject": "Hi {{nmae}}", "text": "x"}))
    people = tmp_path / "people.csv"
    people.write_text("email,name\nann@fabrikam.example,Ann\n", encoding="utf-8")

    result = cli("enqueue", str(people), "--template", str(template))

    assert result.code == 2
    assert "line 2: the template uses {{nmae}}" in result.err
    assert queue_count(cli) == 0


def test_id_prefix_gives_stable_ids_to_lines_without_one(cli: Any, tmp_path: Path) -> None:
    rows = [{k: v for k, v in message(n).items() if k != "id"} for n in range(3)]

    result = cli("enqueue", str(write_jsonl(tmp_path / "noid.jsonl", rows)), "--id-prefix", "run-7")

    assert result.code == 0
    assert {b["id"] for b in queue_bodies(cli)} == {"run-7-1", "run-7-2", "run-7-3"}


def test_dry_run_checks_everything_and_sends_nothing(cli: Any, tmp_path: Path) -> None:
    result = cli("enqueue", str(write_jsonl(tmp_path / "ok.jsonl", [message(1), message(2)])), "--dry-run")

    assert result.code == 0
    assert "2 messages checked" in result.out
    assert queue_count(cli) == 0


def test_unreachable_storage_stops_early_with_exit_1(cli: Any, tmp_path: Path) -> None:
    cli.overrides["AzureWebJobsStorage"] = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1"
    )

    result = cli("enqueue", str(write_jsonl(tmp_path / "ok.jsonl", [message(1)])))

    assert result.code == 1
    assert "storage is unreachable" in result.err
