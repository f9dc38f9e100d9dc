"""Delegated sending end to end: the real MSAL public client signs a user in through the fake Entra (device
code approved over the control API, the browser flow completed by harness.browser), the sign-in is stored
sealed in Azurite, the local host sends as that user through both transports, a revoked sign-in poisons
``signin_required`` without further Entra calls, and a new sign-in plus ``outbox poison requeue`` delivers."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.up import Harness
from shared.cli.main import main
from tests.e2e.conftest import NOREPLY, SENDER, Stack, mail, unique
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

PUBLIC_CLIENT_ID = "0b0c0000-0000-4000-8000-0000000de1e9"  # apps.outbox-delegated in the default scenario
DELEGATE = "delegate@contoso.example"


def delegated_settings(**extra: str) -> dict[str, str]:
    return {
        "OUTBOX_DELEGATED_CLIENT_ID": PUBLIC_CLIENT_ID,
        "OUTBOX_DELEGATED_MAILBOXES": f"{SENDER}, {NOREPLY}={DELEGATE}",
        "OUTBOX_SIGNIN_CONTAINER": unique("signins-"),
        "OUTBOX_SIGNIN_RECHECK_S": "0.2",
        **extra,
    }


class Operator:
    """``outbox`` run in-process with the stack's settings, as the operator would at a terminal."""

    def __init__(self, stack: Stack, directory: Path) -> None:
        self.stack = stack
        self.settings_file = directory / "outbox.env"
        self.settings_file.write_text("".join(f"{k}={v}\n" for k, v in stack.values.items()), encoding="utf-8")

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--settings", str(self.settings_file), *argv], stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def delegated(stack_factory: Callable[..., Stack], harness: Harness, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, Operator]]:
    monkeypatch.setenv("HARNESS_CA_BUNDLE", str(harness.ca_bundle))  # what harness.browser trusts
    # Access tokens of 5 minutes are "expired" for MSAL and outbox at once (both refresh within 5 minutes
    # of exp): every message refreshes silently, which is what a long-lived sign-in does after an hour.
    harness.control.apply_scenario(patch={"token_lifetime_s": 300, "delegated": {"device_code_interval_s": 1}})
    stack = stack_factory(settings=delegated_settings())
    yield stack, Operator(stack, tmp_path)


def approve_device_code_when_shown(harness: Harness, user: str) -> threading.Thread:
    """The user entering the code on another device: approve the first pending code, from a thread."""
    def approve() -> None:
        def pending() -> list[dict[str, Any]]:
            return harness.control.device_codes()
        wait_until(lambda: bool(pending()), 30, message="no device code was requested")
        harness.control.approve_device_code(pending()[0]["user_code"], user)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def entra_token_requests(harness: Harness) -> int:
    counters = harness.control.requests().get("entra", {})
    return sum(n for operation, n in counters.items() if operation.startswith("POST") and operation.endswith("/token"))


def stored_bytes(stack: Stack, mailbox: str) -> bytes:
    from azure.storage.blob import BlobServiceClient

    from shared.signins.store import blob_name

    service = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    return bytes(service.get_blob_client(stack.values["OUTBOX_SIGNIN_CONTAINER"], blob_name(mailbox))
                 .download_blob().readall())


def peek_poison(stack: Stack, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        try:
            found[:] = [json.loads(m.content) for m in stack.poison_queue.peek_messages(max_messages=32)]
        except Exception:  # the poison queue does not exist before the first poison
            return False
        return len(found) >= count

    wait_until(enough, 60, message=lambda: f"{len(found)} of {count} poison messages")
    return found


def test_sign_in_send_both_ways_die_sign_in_again_and_requeue(delegated: tuple[Stack, Operator], harness: Harness) -> None:
    stack, outbox = delegated
    approver = approve_device_code_when_shown(harness, SENDER)
    code, out, err = outbox("login", "--mailbox", SENDER, "--device-code", "--timeout", "60")
    approver.join(5)
    assert code == 0, err
    assert f"{SENDER} is signed in for {SENDER}" in out
    assert "Mail.Send" in out and "SMTP.Send" in out  # the scp of each token, checked and shown

    # Stored sealed: no token, refresh token or JWT in the bytes at rest. The plain fields hold none of
    # their shapes; the sealed cache (random bytes, base64: a short marker could appear by chance) holds
    # none of the MSAL cache's own long markers, encoded or not.
    at_rest = stored_bytes(stack, SENDER)
    record = json.loads(at_rest)
    assert record["schema"] == "outbox.signin/1" and record["account"] == SENDER
    plain = json.dumps({k: v for k, v in record.items() if k != "cache"}).encode()
    for leak in (b"eyJ", b"1.AQ", b"RefreshToken", b"secret"):
        assert leak not in plain
    sealed = base64.b64decode(record["cache"])
    for marker in (b'"RefreshToken"', b'"AccessToken"', b'"credential_type"', b"eyJhbGci", b"eyJ0eXAi"):
        assert marker not in sealed and marker not in at_rest

    stack.enqueue(mail(id="d-graph", subject="as the user, Graph"))
    stack.enqueue(mail(id="d-smtp", transport="smtp", subject="as the user, SMTP"))
    stack.wait_state("d-graph", "sent")
    stack.wait_state("d-smtp", "sent")
    graph, = harness.deliveries(transport="graph")
    smtp, = harness.deliveries(transport="smtp")
    assert (graph.auth_type, graph.user, graph.mailbox) == ("delegated", SENDER, SENDER)
    assert (smtp.auth_type, smtp.user, smtp.sender) == ("delegated", SENDER, SENDER)

    # Expired access token: the next message refreshes silently (a refresh grant) and goes.
    before = entra_token_requests(harness)
    stack.enqueue(mail(id="d-refresh"))
    stack.wait_state("d-refresh", "sent")
    assert entra_token_requests(harness) > before

    # The sign-in dies (revoked: password reset): poisoned signin_required, with the fix.
    harness.control.revoke_refresh_tokens(SENDER)
    stack.enqueue(mail(id="d-dead-1"))
    row = stack.wait_state("d-dead-1", "poisoned")
    assert row.attempts == 1
    calls = entra_token_requests(harness)
    # (Graph: an SMTP session already authenticated before the revocation would still carry a message, as
    # Exchange keeps an authenticated session open; the check here is that Entra is not asked again.)
    stack.enqueue(mail(id="d-dead-2"))
    stack.wait_state("d-dead-2", "poisoned")
    assert entra_token_requests(harness) == calls  # a dead sign-in is not asked again
    envelopes = {e["message"]["id"]: e for e in peek_poison(stack, 2)}
    error = envelopes["d-dead-1"]["error"]
    assert error["category"] == "signin_required" and error["code"] == "AADSTS50173"
    assert error["retryable"] is False
    assert f"outbox login --mailbox {SENDER}" in error["hint"] and "outbox poison requeue" in error["hint"]

    code, out, _ = outbox("accounts")
    assert code == 1 and "needs sign-in: AADSTS50173" in out

    # Sign in again, with the browser this time (harness.browser plays the user), then requeue: both go, once.
    from harness import browser

    browser.register()
    code, out, err = outbox("login", "--mailbox", SENDER, "--timeout", "60")
    assert code == 0, err
    code, _, err = outbox("poison", "requeue", "--category", "signin_required", "--mailbox", SENDER)
    assert code == 0, err
    stack.wait_state("d-dead-1", "sent")
    stack.wait_state("d-dead-2", "sent")
    sent = [d for d in harness.deliveries() if d.user == SENDER]
    assert len(sent) == 5  # graph, smtp, refresh, and the two requeued: none twice
    code, out, _ = outbox("accounts", "--json")
    rows = {r["mailbox"]: r for r in json.loads(out)["accounts"]}
    assert rows[SENDER]["status"] == "ok" and rows[SENDER]["needsSignIn"] is None
    assert code == 1 and rows[NOREPLY]["status"] == "not signed in"  # listed in the setting, never signed in


def test_a_shared_mailbox_sends_as_its_delegate_and_a_missing_send_as_is_a_permission_poison(
    delegated: tuple[Stack, Operator], harness: Harness,
) -> None:
    stack, outbox = delegated
    approver = approve_device_code_when_shown(harness, DELEGATE)
    code, out, err = outbox("login", "--mailbox", NOREPLY, "--account", DELEGATE, "--device-code", "--transport", "graph")
    approver.join(5)
    assert code == 0, err
    assert "Mail.Send.Shared" in out

    stack.enqueue(mail(id="sh-1", **{"from": NOREPLY}))
    stack.wait_state("sh-1", "sent")
    d, = harness.deliveries(transport="graph")
    assert (d.auth_type, d.user, d.sender) == ("delegated", DELEGATE, NOREPLY)

    # The email team removes the Send As grant: Graph answers ErrorSendAsDenied, classified permission.
    harness.control.apply_scenario(patch={"mailboxes": {DELEGATE: {"send_as": []}}})
    stack.enqueue(mail(id="sh-2", **{"from": NOREPLY}))
    stack.wait_state("sh-2", "poisoned")
    envelope, = peek_poison(stack, 1)
    assert envelope["error"]["category"] == "permission"
    assert "SendAs" in envelope["error"]["code"] or "Send As" in envelope["error"]["hint"]


def test_login_refuses_another_user_than_the_one_asked_for(delegated: tuple[Stack, Operator], harness: Harness) -> None:
    _stack, outbox = delegated
    approver = approve_device_code_when_shown(harness, DELEGATE)  # the wrong person enters the code
    code, _, err = outbox("login", "--mailbox", SENDER, "--device-code")
    approver.join(5)
    assert code == 1
    assert f"{DELEGATE} signed in, but the sign-in is for {SENDER}" in err
    code, out, _ = outbox("accounts")
    assert "not signed in" in out


def test_keepalive_refreshes_every_sign_in_near_the_inactivity_limit(
    delegated: tuple[Stack, Operator], harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    stack, outbox = delegated
    for mailbox, user, extra in ((SENDER, SENDER, ()), (NOREPLY, DELEGATE, ("--account", DELEGATE))):
        approver = approve_device_code_when_shown(harness, user)
        code, _, err = outbox("login", "--mailbox", mailbox, *extra, "--device-code", "--transport", "graph")
        approver.join(5)
        assert code == 0, err
    for user in (SENDER, DELEGATE):
        harness.control.age_refresh_tokens(user, 89)
        assert max(t["last_used"] for t in harness.control.refresh_tokens(user=user)) < time.time() - 88 * 86400
    aged = {m: json.loads(stored_bytes(stack, m))["lastRefresh"] for m in (SENDER, NOREPLY)}

    runs = stack.host.stats.timer_runs
    caplog.set_level("INFO", logger="outbox")
    stack.host.run_timer("signin_keepalive")
    assert stack.host.wait_until(lambda: stack.host.stats.timer_runs > runs, 60)
    assert not stack.host.stats.errors
    events = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records
              if r.getMessage().startswith("outbox.keepalive ")]
    assert sorted((e["mailbox"], e["account"], e["outcome"]) for e in events) == [
        (NOREPLY, DELEGATE, "refreshed"), (SENDER, SENDER, "refreshed")]  # one event per account
    # Each user's refresh token was used just now (Entra's view): 89 days of inactivity reset to none.
    for user in (SENDER, DELEGATE):
        newest = max(harness.control.refresh_tokens(user=user), key=lambda t: t["last_used"])
        assert newest["last_used"] > time.time() - 600 and not newest["revoked"]
    for mailbox in (SENDER, NOREPLY):  # and the record says so (written back, still readable below)
        assert json.loads(stored_bytes(stack, mailbox))["lastRefresh"] >= aged[mailbox]
    # And the next message after the keep-alive still goes.
    stack.enqueue(mail(id="ka-1"))
    stack.wait_state("ka-1", "sent")


def test_doctor_checks_the_sign_in_and_probes_as_the_user(delegated: tuple[Stack, Operator], harness: Harness) -> None:
    _stack, outbox = delegated
    code, out, _ = outbox("doctor", "--mailbox", SENDER, "--transport", "both", "--json")
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and checks["signin.stored"]["status"] == "fail"
    assert f"outbox login --mailbox {SENDER}" in checks["signin.stored"]["fix"]

    approver = approve_device_code_when_shown(harness, SENDER)
    assert outbox("login", "--mailbox", SENDER, "--device-code")[0] == 0
    approver.join(5)
    code, out, err = outbox("doctor", "--mailbox", SENDER, "--transport", "both", "--json")
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert code == 0, err
    for check in ("signin.stored", "signin.alive", "graph.token", "graph.claims", "graph.mailbox", "smtp.token",
                  "smtp.claims", "smtp.auth"):
        assert checks[check]["status"] == "pass", checks[check]
    assert checks["graph.claims"]["evidence"]["idtyp"] == "user" and "eyJ" not in out

    harness.control.revoke_refresh_tokens(SENDER)
    code, out, _ = outbox("doctor", "--mailbox", SENDER, "--transport", "graph", "--json")
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and checks["graph.token"]["status"] == "fail" and checks["graph.token"]["cause"] == (
        "entra.refresh_token_revoked")
    assert "outbox login" in checks["graph.token"]["fix"]
