"""``outbox send`` (queue, now), ``outbox token``, and the console script itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli.conftest import SENDER

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def test_send_now_delivers_through_the_pipeline_and_records_it(cli: Any) -> None:
    result = cli("send", "--now", "--json", "--from", SENDER, "--to", "ann@fabrikam.example,bob@fabrikam.example",
                 "--subject", "Now", "--text", "At once", "--id", "now-1")

    assert result.code == 0, result.err
    assert result.json["kind"] == "sent" and result.json["transport"] == "graph"
    (delivery,) = cli.harness.wait_for_deliveries(1)
    assert delivery.recipients == ("ann@fabrikam.example", "bob@fabrikam.example")
    assert cli("status", "now-1", "--json").json["state"] == "sent"
    # Sending the same message (same id, same content) again sends nothing.
    again = cli("send", "--now", "--from", SENDER, "--to", "ann@fabrikam.example,bob@fabrikam.example",
                "--subject", "Now", "--text", "At once", "--id", "now-1")
    assert again.code == 0 and "already sent" in again.out
    # Another message under the same id is refused, naming the id, never reported as sent.
    other = cli("send", "--now", "--from", SENDER, "--to", "ann@fabrikam.example", "--subject", "Now",
                "--text", "At once", "--id", "now-1")
    assert other.code == 1 and "id 'now-1' was first used" in other.err and "new id" in other.err
    assert len(cli.harness.deliveries()) == 1


def test_send_now_refused_prints_the_fix_and_exits_1(cli: Any) -> None:
    cli.harness.apply_scenario({"apps": {"outbox-sender": {"graph": {"mailboxes": ["noreply@contoso.example"]}}}})

    result = cli("send", "--now", "--from", SENDER, "--to", "ann@fabrikam.example", "--subject", "x", "--text", "y")

    assert result.code == 1
    assert "ErrorAccessDenied" in result.err
    assert "fix: the app may not use this mailbox" in result.err
    assert cli.harness.deliveries() == []


def test_send_to_the_queue_validates_records_and_enqueues(cli: Any, tmp_path: Path) -> None:
    small = tmp_path / "note.txt"
    small.write_text("a small attachment")
    big = tmp_path / "report.bin"
    big.write_bytes(os.urandom(80_000))

    result = cli("send", "--queue", "--from", SENDER, "--to", "ann@fabrikam.example", "--subject", "Files",
                 "--html", "<p>see attached</p>", "--attach", str(small), "--attach", str(big), "--id", "q-1")

    assert result.code == 0, result.err
    assert "queued q-1" in result.out
    assert cli("status", "q-1", "--json").json["state"] == "queued"
    (message,) = cli.queue_client().peek_messages(max_messages=2)
    body = json.loads(message.content)
    small_att, big_att = body["attachments"]
    assert small_att["name"] == "note.txt" and "contentBase64" in small_att
    # Too big for a queue message: parked in the attachment container and referenced.
    assert big_att["blob"].startswith("outbox-attachments/cli/q-1/")
    from azure.storage.blob import BlobServiceClient

    container, _, name = big_att["blob"].partition("/")
    blob = BlobServiceClient.from_connection_string(cli.azurite.connection_string).get_blob_client(container, name)
    assert blob.download_blob().readall() == big.read_bytes()


def test_send_an_invalid_message_names_the_fields_and_queues_nothing(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"from": SENDER, "subject": "no recipients", "text": "x"}))

    result = cli("send", "--file", str(path), "--json")

    assert result.code == 2
    assert "at least one recipient" in json.dumps(result.json["errors"])
    from azure.core.exceptions import ResourceNotFoundError

    try:
        count = cli.queue_client().get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        count = 0
    assert count == 0


def test_token_shows_claims_never_the_token(cli: Any) -> None:
    result = cli("token", "--transport", "both", "--json")

    assert result.code == 0, result.err
    by_transport = {t["transport"]: t for t in result.json["tokens"]}
    assert by_transport["smtp"]["claims"]["aud"] == "https://outlook.office365.com"
    assert by_transport["smtp"]["claims"]["roles"] == ["SMTP.SendAsApp"]
    assert "Mail.Send" in by_transport["graph"]["claims"]["roles"]
    assert by_transport["graph"]["header"]["alg"] == "RS256"
    human = cli("token", "--transport", "smtp")
    assert "SMTP.SendAsApp" in human.out
    assert not JWT.search(result.out + result.err + human.out + human.err)


def test_token_with_a_missing_role_exits_1_with_the_fix(cli: Any) -> None:
    cli.harness.apply_scenario({"apps": {"outbox-sender": {"exchange_consent": False}}})

    result = cli("token", "--transport", "smtp")

    assert result.code == 1
    assert "SMTP.SendAsApp is missing" in result.out


# -- the console script in a real process --------------------------------------------------------------


def _script() -> str:
    return str(Path(sys.executable).with_name("outbox"))


def test_console_script_help_is_quick_and_lists_exit_codes() -> None:
    started = time.monotonic()
    done = subprocess.run([_script(), "--help"], capture_output=True, text=True, timeout=30, check=False)
    elapsed = time.monotonic() - started

    assert done.returncode == 0
    assert "exit codes:" in done.stdout and "4    not found" in done.stdout
    for command in ("doctor", "token", "send", "enqueue", "status", "poison"):
        assert command in done.stdout
    assert elapsed < 5  # no SDK is imported for --help (about 0.2 s on an idle machine)


def test_console_script_reads_the_env_file_like_func_start(cli: Any) -> None:
    """A fresh process with nothing in its environment: the managed-identity endpoint, the CA bundle and
    every OUTBOX_* setting come from the KEY=VALUE file alone."""
    settings = cli.write_settings()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OUTBOX_", "IDENTITY_", "AZURE_", "REQUESTS_CA", "SSL_CERT"))}

    done = subprocess.run(
        [_script(), "--settings", str(settings), "doctor", "--mailbox", SENDER, "--transport", "smtp", "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=PROJECT_ROOT, check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert {c["id"]: c["status"] for c in report["checks"]}["smtp.mail_from"] == "pass"


def test_usage_errors_exit_2(cli: Any) -> None:
    assert cli("doctor").code == 2  # --mailbox is required
    assert cli("doctor", "--mailbox", "not-an-address").code == 2
    missing = cli("enqueue", "/no/such/file.jsonl")
    assert missing.code == 2 and "no such file" in missing.err


def test_an_smtp_send_with_always_shows_its_sent_items_copy_in_status(cli: Any) -> None:
    cli.overrides["OUTBOX_SMTP_SENT_COPY"] = "always"
    cli.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})
    result = cli("send", "--now", "--transport", "smtp", "--from", SENDER, "--to", "ann@fabrikam.example",
                 "--subject", "Copy", "--text", "x", "--id", "copy-cli")
    assert result.code == 0, result.err

    shown = cli("status", "copy-cli")
    assert "Sent Items copy" in shown.out and "saved by outbox through Graph" in shown.out
    assert cli("status", "copy-cli", "--json").json["sentCopy"] == {"state": "saved", "tries": 1, "detail": None}
