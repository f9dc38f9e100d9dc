"""SMTP failures users meet first, and credentials that change under a running function."""

from __future__ import annotations

from tests.e2e.conftest import NOREPLY, SENDER, Stack, mail


def _auth_replies(stack: Stack) -> list[str]:
    return [str(r.status) for r in stack.harness.state.requests(service="smtp") if r.operation.lower() == "auth"]


def test_535_is_poisoned_as_auth_after_one_fresh_token_retry(stack: Stack) -> None:
    # The email team forgot the mailbox permission for the second mailbox.
    stack.harness.apply_scenario({"apps": {"outbox-sender": {"smtp": {"full_access": [SENDER], "send_as": [SENDER]}}}})
    stack.enqueue(mail(id="s535", transport="smtp", **{"from": NOREPLY}))
    [env] = stack.poison()
    assert isinstance(env, dict)
    assert env["error"]["category"] == "auth" and env["error"]["status"] == 535
    assert "5.7.3" in env["error"]["code"] + env["error"]["detail"]
    assert env["attempts"] == 1 and env["error"]["hint"]
    assert _auth_replies(stack).count("535") == 2  # the first try and one with a fresh token
    assert stack.harness.deliveries() == []
    # The other mailbox still works in the same process.
    stack.enqueue(mail(id="s-ok", transport="smtp"))
    stack.wait_state("s-ok", "sent")


def test_smtp_auth_disabled_is_permission_with_the_set_casmailbox_hint(stack: Stack) -> None:
    stack.harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    stack.enqueue(mail(id="s5139", transport="smtp"))
    [env] = stack.poison()
    assert isinstance(env, dict)
    assert env["error"]["category"] == "permission" and env["attempts"] == 1
    assert "Set-CASMailbox" in env["error"]["hint"]
    row = stack.wait_state("s5139", "poisoned")
    assert row.last_hint is not None and "Set-CASMailbox" in row.last_hint


def test_certificate_rotated_in_key_vault_is_used_by_the_next_sends(stack: Stack) -> None:
    stack.enqueue(mail(id="rot-1"))
    stack.wait_state("rot-1", "sent")
    vault_reads = stack.harness.state.count("keyvault")
    # A new version becomes current and the old key is removed from the app registration.
    stack.harness.rotate_certificate(keep_old=False)
    # SMTP needs a token the process does not have yet: it must be signed with the new certificate.
    stack.enqueue(mail(id="rot-2", transport="smtp"))
    row = stack.wait_state("rot-2", "sent")
    assert row.attempts == 1
    assert stack.harness.state.count("keyvault") > vault_reads  # the new version was read
    assert len(stack.harness.deliveries()) == 2
