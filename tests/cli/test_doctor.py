"""``outbox doctor`` against the harness: the healthy tenant, and each cause of the seed's 535 list.

Every broken scenario must fail exactly one line, naming the cause when the evidence singles it out,
and listing the remaining causes (without picking one) when Exchange only says 535 5.7.3.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.doctor import check_claims
from tests.cli.conftest import SENDER

OTHER = "other@contoso.example"


def failing(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["status"] == "fail"]


def test_healthy_tenant_passes_every_line(doctor_json: Any) -> None:
    code, report = doctor_json("--mailbox", SENDER, "--transport", "both")

    assert code == 0
    assert report["ok"] is True
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    expected = [
        "settings", "sender.allowed", "keyvault", "certificate",
        "smtp.token", "smtp.claims", "smtp.connect", "smtp.starttls", "smtp.auth", "smtp.mail_from",
        "graph.token", "graph.claims", "graph.mailbox",
    ]  # fmt: skip
    assert {k: statuses[k] for k in expected} == dict.fromkeys(expected, "pass")
    # Only the opt-in test sends are skipped; nothing was sent.
    assert statuses["smtp.send"] == statuses["graph.send"] == "skip"
    certificate = next(c for c in report["checks"] if c["id"] == "certificate")
    assert certificate["evidence"]["daysLeft"] > 300
    assert len(certificate["evidence"]["thumbprint"]) == 40


def test_healthy_run_sends_nothing_and_leaves_no_session_open(cli: Any) -> None:
    result = cli("doctor", "--mailbox", SENDER, "--transport", "smtp")

    assert result.code == 0, result.out + result.err
    assert "PASS  smtp: MAIL FROM" in result.out
    assert "all checks passed" in result.out
    assert cli.harness.deliveries() == []


# (scenario patch, doctor arguments, failing check, named cause or None, words the fix must contain)
BROKEN: dict[str, tuple[dict[str, Any], list[str], str, str | None, str]] = {
    "wrong scope (cloud)": (
        {"settings": {"OUTBOX_CLOUD": "usgov"}}, ["--transport", "smtp"],
        "smtp.token", "entra.resource_not_found", "OUTBOX_CLOUD",
    ),
    "missing SMTP.SendAsApp role": (
        {"apps": {"outbox-sender": {"exchange_consent": False}}}, ["--transport", "smtp"],
        "smtp.claims", "claims.missing_role", "SMTP.SendAsApp",
    ),
    "missing Mail.Send role": (
        {"apps": {"outbox-sender": {"graph_consent": False}}}, ["--transport", "graph"],
        "graph.claims", "claims.missing_role", "Mail.Send",
    ),
    "SMTP AUTH disabled for the mailbox": (
        {"mailboxes": {SENDER: {"smtp_auth_enabled": False}}}, ["--transport", "smtp"],
        "smtp.auth", "smtp.auth_disabled_mailbox", f"Set-CASMailbox -Identity {SENDER}",
    ),
    "expired certificate": (
        {"apps": {"outbox-sender": {"certificates": {"current": {"expired": True}}}}}, ["--transport", "both"],
        "certificate", "certificate.expired", "renew the certificate",
    ),
    "user= is not the sender": (
        {}, ["--transport", "smtp", "--from", OTHER],
        "smtp.mail_from", "smtp.send_as_denied", f"Add-RecipientPermission -Identity {OTHER} -Trustee {SENDER}",
    ),
    "certificate not uploaded to the app": (
        {"apps": {"outbox-sender": {"certificates": {"current": {"registered": False}}}}}, ["--transport", "smtp"],
        "smtp.token", "entra.invalid_signature", "upload the public certificate",
    ),
    "function identity may not read Key Vault": (
        {"managed_identity": {"keyvault_role": "none"}}, ["--transport", "both"],
        "keyvault", "keyvault.forbidden", "Key Vault Certificate User",
    ),
    "access policy excludes the mailbox": (
        {"apps": {"outbox-sender": {"graph": {"mailboxes": ["noreply@contoso.example"]}}}}, ["--transport", "graph"],
        "graph.mailbox", "graph.access_policy", f"Test-ApplicationAccessPolicy -Identity {SENDER}",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_each_misconfiguration_fails_one_line_with_its_cause(cli: Any, doctor_json: Any, case: str) -> None:
    patch, extra, check_id, cause, fix_words = BROKEN[case]
    if patch:
        cli.harness.apply_scenario(patch)

    code, report = doctor_json("--mailbox", SENDER, *extra)

    assert code == 1
    failed = failing(report)
    assert [c["id"] for c in failed] == [check_id], failed
    assert failed[0]["cause"] == cause
    assert fix_words in failed[0]["fix"]
    assert "remainingCauses" not in failed[0]


AMBIGUOUS = {
    "no Exchange service principal": {"apps": {"outbox-sender": {"smtp": {"service_principal_registered": False}}}},
    "service principal with a wrong object id": {
        "apps": {"outbox-sender": {"smtp": {"service_principal_object_id": "00000000-0000-0000-0000-000000000bad"}}}
    },
    "mailbox not permitted": {"apps": {"outbox-sender": {"smtp": {"full_access": ["noreply@contoso.example"]}}}},
}


@pytest.mark.parametrize("case", list(AMBIGUOUS), ids=list(AMBIGUOUS))
def test_bare_535_lists_remaining_causes_without_claiming_one(cli: Any, doctor_json: Any, case: str) -> None:
    cli.harness.apply_scenario(AMBIGUOUS[case])

    code, report = doctor_json("--mailbox", SENDER, "--transport", "smtp")

    assert code == 1
    (auth,) = failing(report)
    assert auth["id"] == "smtp.auth"
    assert "cause" not in auth
    assert "535 5.7.3" in auth["summary"]
    remaining = {r["cause"]: r for r in auth["remainingCauses"]}
    assert list(remaining) == ["exchange.service_principal", "exchange.mailbox_permission", "exchange.propagation"]
    oid = cli.harness.scenario.sender.service_principal_id
    assert "Get-ServicePrincipal" in remaining["exchange.service_principal"]["check"]
    assert f"New-ServicePrincipal -AppId {cli.harness.scenario.sender.client_id} -ObjectId {oid}" in (
        remaining["exchange.service_principal"]["fix"]
    )
    assert f"Get-MailboxPermission -Identity {SENDER}" in remaining["exchange.mailbox_permission"]["check"]
    # What the evidence did rule out is said, so nobody chases the token.
    assert "SMTP.SendAsApp" in auth["evidence"]["ruledOut"]
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["smtp.claims"] == "pass" and statuses["smtp.mail_from"] == "skip"


def test_the_ambiguous_causes_are_indistinguishable_in_doctor_output(cli: Any) -> None:
    outputs = []
    for patch in AMBIGUOUS.values():
        cli.harness.reset()
        cli.harness.apply_scenario(patch)
        result = cli("doctor", "--mailbox", SENDER, "--transport", "smtp")
        assert result.code == 1
        outputs.append(_without_times(result.out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert "remaining causes (not ruled out" in outputs[0]


def _without_times(text: str) -> str:
    import re

    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", text)
    text = re.sub(r"expires in \d+ min", "expires in <n> min", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "<host>", text)
    return re.sub(r"ready at [^\n]*", "ready", text)


def test_human_output_prints_the_fix_under_the_failing_line(cli: Any) -> None:
    cli.harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})

    result = cli("doctor", "--mailbox", SENDER, "--transport", "smtp")

    assert result.code == 1
    lines = result.out.splitlines()
    fail_at = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert "5.7.139" in lines[fail_at]
    assert lines[fail_at + 1].strip().startswith("fix: SMTP AUTH is switched off for this mailbox")
    assert "1 check failed: smtp: AUTH XOAUTH2" in result.out


def test_missing_settings_fail_the_first_line_and_skip_the_rest(cli: Any) -> None:
    cli.overrides.update({"OUTBOX_KEYVAULT_URL": "", "OUTBOX_CERT_NAME": ""})

    result = cli("doctor", "--json", "--mailbox", SENDER)

    assert result.code == 1
    report = result.json
    assert [c["id"] for c in failing(report)] == ["settings"]
    assert "OUTBOX_KEYVAULT_URL" in report["checks"][0]["summary"]
    assert len(report["checks"]) == 1


def test_sender_outside_the_allow_list_is_its_own_line(cli: Any, doctor_json: Any) -> None:
    cli.overrides["OUTBOX_ALLOWED_SENDERS"] = "noreply@contoso.example"

    code, report = doctor_json("--mailbox", SENDER, "--transport", "graph")

    assert code == 1
    (allowed,) = failing(report)
    assert allowed["id"] == "sender.allowed"
    assert f"add {SENDER}" in allowed["fix"]


def test_send_test_really_sends_once_through_outbox_transport(cli: Any, doctor_json: Any) -> None:
    code, report = doctor_json("--mailbox", SENDER, "--transport", "graph", "--send-test-to", "ops@fabrikam.example")

    assert code == 0
    send = next(c for c in report["checks"] if c["id"] == "graph.send")
    assert send["status"] == "pass"
    (delivery,) = cli.harness.wait_for_deliveries(1, transport="graph")
    assert delivery.recipients == ("ops@fabrikam.example",)
    assert delivery.mailbox == SENDER


def test_without_read_permission_the_policy_shows_only_in_the_test_send(cli: Any, doctor_json: Any) -> None:
    cli.harness.apply_scenario({"apps": {"outbox-sender": {
        "graph_roles": ["Mail.Send"], "graph": {"mailboxes": ["noreply@contoso.example"]}}}})

    code, report = doctor_json("--mailbox", SENDER, "--transport", "graph", "--send-test-to", "ops@fabrikam.example")

    assert code == 1
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["graph.mailbox"]["status"] == "skip"
    assert "not probed" in checks["graph.mailbox"]["summary"]
    assert [c["id"] for c in failing(report)] == ["graph.send"]
    assert checks["graph.send"]["cause"] == "graph.access_policy"
    assert cli.harness.deliveries() == []


# -- the claims check on tokens the harness mints (evidence no scenario of outbox's own can produce) ------


def _settings(cli: Any) -> Any:
    return cli.settings()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_a_graph_token_presented_for_smtp_is_named_wrong_audience(cli: Any) -> None:
    token_claims = _claims(cli.harness.mint_token("graph"))

    check = check_claims(_settings(cli), token_claims, "smtp", _now())

    assert check.status == "fail"
    assert check.cause == "claims.wrong_audience"
    assert "a Graph token" in check.summary
    assert "https://outlook.office365.com/.default" in check.fix


def test_claims_from_another_tenant_app_or_time_are_named(cli: Any) -> None:
    settings = _settings(cli)
    wrong_tenant = _claims(cli.harness.mint_token("exchange", tenant_id="11111111-2222-3333-4444-555555555555"))
    wrong_app = _claims(cli.harness.mint_token("exchange", client_id="99999999-0000-4000-8000-000000000000"))
    expired = _claims(cli.harness.mint_token("exchange", now=_now().timestamp() - 7200))
    delegated = _claims(cli.harness.mint_token("exchange", roles=(), extra_claims={"scp": "SMTP.Send"}))

    assert check_claims(settings, wrong_tenant, "smtp", _now()).cause == "claims.wrong_tenant"
    assert check_claims(settings, wrong_app, "smtp", _now()).cause == "claims.wrong_app"
    assert check_claims(settings, expired, "smtp", _now()).cause == "claims.expired"
    assert check_claims(settings, delegated, "smtp", _now()).cause == "claims.delegated_token"
    assert check_claims(settings, _claims(cli.harness.mint_token("exchange")), "smtp", _now()).status == "pass"


def _claims(token: str) -> dict[str, Any]:
    from shared.tokens import decode_claims

    return decode_claims(token)


def test_settings_only_the_function_needs_are_a_warning_not_a_stop(cli: Any, doctor_json: Any) -> None:
    cli.overrides["OUTBOX_QUEUE"] = ""

    code, report = doctor_json("--mailbox", SENDER, "--transport", "smtp")

    assert code == 0
    first = report["checks"][0]
    assert (first["id"], first["status"]) == ("settings", "warn")
    assert "OUTBOX_QUEUE" in first["summary"]
    assert {c["id"]: c["status"] for c in report["checks"]}["smtp.mail_from"] == "pass"


def test_smtp_endpoint_unreachable_is_the_egress_line(cli: Any, doctor_json: Any) -> None:
    cli.harness.set_fault(service="smtp", action="down")

    code, report = doctor_json("--mailbox", SENDER, "--transport", "smtp")

    assert code == 1
    (connect,) = failing(report)
    assert (connect["id"], connect["cause"]) == ("smtp.connect", "network.unreachable")
    assert "firewall egress on port" in connect["fix"]
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["smtp.claims"] == "pass"
    assert statuses["smtp.starttls"] == statuses["smtp.auth"] == statuses["smtp.mail_from"] == "skip"


# -- SMTP and Sent Items: which behaviour this tenant has -------------------------------------------------


@pytest.mark.parametrize("keeps", [True, False], ids=["tenant-keeps-copies", "tenant-keeps-none"])
def test_smtp_test_send_says_whether_the_tenant_keeps_a_sent_items_copy(cli: Any, doctor_json: Any,
                                                                          keeps: bool) -> None:
    cli.harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": keeps}})

    code, report = doctor_json("--mailbox", SENDER, "--transport", "smtp", "--send-test-to", "ops@fabrikam.example",
                               "--sent-copy-wait", "0.5")

    assert code == 0  # a tenant that keeps none is a warning: the default (never) still sends
    copy = next(c for c in report["checks"] if c["id"] == "smtp.sent_copy")
    if keeps:
        assert copy["status"] == "pass" and "Exchange kept the SMTP submission" in copy["summary"]
    else:
        assert copy["status"] == "warn" and copy["cause"] == "sent_copy.not_kept"
        assert "OUTBOX_SMTP_SENT_COPY=auto" in copy["fix"] and "Mail.ReadWrite" in copy["fix"]
    assert len(cli.harness.deliveries(transport="smtp")) == 1


def test_without_a_test_send_the_sent_items_behaviour_is_not_probed(doctor_json: Any) -> None:
    code, report = doctor_json("--mailbox", SENDER, "--transport", "smtp")
    copy = next(c for c in report["checks"] if c["id"] == "smtp.sent_copy")
    assert code == 0 and copy["status"] == "skip" and "--send-test-to" in copy["summary"]
