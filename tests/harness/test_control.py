"""The control API, through harness.client.HarnessClient (what tests and the CLI use)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from harness.client import HarnessClient, HarnessControlError
from harness.state import Delivery
from harness.up import Harness


def _delivery(transport: str, mailbox: str, subject: str) -> Delivery:
    return Delivery(
        transport=transport, mailbox=mailbox, app_id="app", recipients=("to@example.com",), subject=subject,
        raw_mime=b"Subject: x\r\n\r\nbody" if transport == "smtp" else None,
        graph_json={"message": {"subject": subject}} if transport == "graph" else None,
    )


def test_deliveries_with_filters_and_reset(harness: Harness) -> None:
    state = harness.state
    state.add_delivery(_delivery("graph", "sender@contoso.example", "one"))
    state.add_delivery(_delivery("smtp", "noreply@contoso.example", "two"))
    control = harness.control
    assert [d.subject for d in control.deliveries()] == ["one", "two"]
    (smtp,) = control.deliveries(transport="smtp")
    assert smtp.raw_mime == b"Subject: x\r\n\r\nbody" and smtp.mailbox == "noreply@contoso.example"
    assert [d.subject for d in control.deliveries(mailbox="SENDER@contoso.example")] == ["one"]
    control.reset()
    assert control.deliveries() == []


def test_a_real_graph_send_shows_up(harness: Harness) -> None:
    token = harness.mint_token("graph")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(harness.ca_bundle))) as client:
        response = client.post(
            f"{harness.url('graph')}/v1.0/users/sender@contoso.example/sendMail",
            headers={"Authorization": f"Bearer {token}"},
            json={"message": {"subject": "hello", "body": {"contentType": "Text", "content": "hi"},
                              "toRecipients": [{"emailAddress": {"address": "to@example.com"}}]},
                  "saveToSentItems": True},
        )
    assert response.status_code == 202, response.text
    (delivery,) = harness.control.deliveries(transport="graph")
    assert delivery.subject == "hello" and delivery.recipients == ("to@example.com",)
    assert delivery.app_id == harness.scenario.sender.client_id
    assert harness.control.requests()["graph"]["status:202"] == 1


def test_faults_add_list_delete(harness: Harness) -> None:
    control = harness.control
    rule = control.add_fault(service="graph", catalog="graph.service_unavailable", nth=2)
    assert [f["id"] for f in control.faults()] == [rule.id]
    assert harness.runtime.faults.rules() == [rule]
    control.delete_fault(rule.id)
    assert control.faults() == []
    with pytest.raises(HarnessControlError) as caught:
        control.add_fault(service="graph", action="reply")  # no catalog entry
    assert caught.value.status == 400 and "catalog" in caught.value.body
    with pytest.raises(HarnessControlError):
        control.delete_fault("nope")


def test_scenario_switch_at_run_time(harness: Harness) -> None:
    control = harness.control
    assert control.scenario() == harness.scenario
    changed = control.apply_scenario(patch={"exchange": {"smtp_auth_enabled": False}})
    assert changed.smtp_auth_disabled("sender@contoso.example") == "tenant"
    assert harness.scenario == changed
    fixed = control.apply_scenario(changed.with_changes({"exchange": {"smtp_auth_enabled": True}}))
    assert fixed.smtp_auth_disabled("sender@contoso.example") is None
    with pytest.raises(HarnessControlError, match="colour"):
        control.apply_scenario(patch={"colour": "red"})
    control.apply_scenario(patch={"token_lifetime_s": 5})
    control.reset()
    assert harness.scenario.token_lifetime_s == 3599  # reset goes back to the starting scenario


def test_request_counters(harness: Harness) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(harness.ca_bundle))) as client:
        client.get(f"{harness.url('entra')}/{harness.scenario.tenant_id}/v2.0/.well-known/openid-configuration")
        client.get(f"{harness.url('entra')}/nope/v2.0/.well-known/openid-configuration")
    counters = harness.control.requests()["entra"]
    assert counters["total"] == 2 and counters["status:200"] == 1 and counters["status:400"] == 1


def test_client_from_state_folder(harness: Harness) -> None:
    with HarnessClient.from_state(harness.state_dir) as client:
        health = client.health()
    assert health["ok"] and set(health["endpoints"]) >= {"entra", "msi", "keyvault", "control"}
