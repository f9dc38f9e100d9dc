"""The scenario model: the default tenant, one-line misconfigurations, and the policy answers."""

from __future__ import annotations

import dataclasses

import pytest

from harness.scenario import DEFAULT_SCENARIO_PATH, Scenario, ScenarioError

SENDER = "sender@contoso.example"
NOREPLY = "noreply@contoso.example"
OTHER = "other@contoso.example"


@pytest.fixture(scope="module")
def default() -> Scenario:
    return Scenario.default()


def test_default_is_the_happy_path_for_both_transports(default: Scenario) -> None:
    app = default.sender
    assert app.name == "outbox-sender"
    assert set(app.consented_graph_roles) == {"Mail.Send", "Mail.ReadWrite", "Mail.ReadBasic"}
    assert app.consented_exchange_roles == ("SMTP.SendAsApp",)
    for mailbox in (SENDER, NOREPLY):
        assert default.graph_may_access(app.client_id, mailbox)
        assert default.smtp_auth_disabled(mailbox) is None
        assert default.smtp_may_authenticate(app.client_id, app.service_principal_id, mailbox)
    assert not default.graph_may_access(app.client_id, OTHER)
    assert not default.smtp_may_authenticate(app.client_id, app.service_principal_id, OTHER)
    assert default.mailbox(OTHER) is not None
    assert default.exchange.smtp_copies_to_sent_items is True  # Microsoft's documented behaviour
    assert default.managed_identity.may_read_secrets()


def test_round_trip_through_dict_and_copy(default: Scenario) -> None:
    assert Scenario.from_dict(default.to_dict()) == default
    assert dataclasses.replace(default, token_lifetime_s=5).token_lifetime_s == 5


@pytest.mark.parametrize(
    ("line", "check"),
    [
        ("exchange.smtp_auth_enabled = false", lambda s: s.smtp_auth_disabled(SENDER) == "tenant"),
        (
            'mailboxes."sender@contoso.example".smtp_auth_enabled = false',
            lambda s: s.smtp_auth_disabled(SENDER) == "mailbox" and s.smtp_auth_disabled(NOREPLY) is None,
        ),
        ("apps.outbox-sender.exchange_consent = false", lambda s: s.roles_for(s.sender.client_id, "exchange") == ()),
        ("apps.outbox-sender.graph_consent = false", lambda s: s.roles_for(s.sender.client_id, "graph") == ()),
        (
            'apps.outbox-sender.smtp.service_principal_object_id = "00000000-0000-0000-0000-000000000bad"',
            lambda s: not s.smtp_may_authenticate(s.sender.client_id, s.sender.service_principal_id, SENDER),
        ),
        (
            "apps.outbox-sender.smtp.service_principal_registered = false",
            lambda s: not s.smtp_may_authenticate(s.sender.client_id, s.sender.service_principal_id, SENDER),
        ),
        (
            'apps.outbox-sender.graph.mailboxes = ["noreply@contoso.example"]',
            lambda s: not s.graph_may_access(s.sender.client_id, SENDER),
        ),
        ('apps.outbox-sender.graph.mailboxes = ["*"]', lambda s: s.graph_may_access(s.sender.client_id, OTHER)),
        ('managed_identity.keyvault_role = "none"', lambda s: not s.managed_identity.may_read_secrets()),
        ("apps.outbox-sender.certificates.current.expired = true", lambda s: s.sender.certificates[0].expired),
        ("apps.outbox-sender.certificates.current.registered = false", lambda s: not s.sender.certificates[0].registered),
        ("exchange.smtp_copies_to_sent_items = false", lambda s: not s.exchange.smtp_copies_to_sent_items),
        ('settings.OUTBOX_TENANT_ID = "wrong"', lambda s: s.settings.get("OUTBOX_TENANT_ID") == "wrong"),
        ("limits.smtp.connections_per_mailbox = 1", lambda s: s.limits.smtp.connections_per_mailbox == 1),
    ],
)
def test_every_misconfiguration_is_one_line(line: str, check, default: Scenario) -> None:
    broken = Scenario.from_toml(f'extends = "default"\n{line}\n')
    assert check(broken)
    assert not check(default)


def test_every_default_value_is_a_line_in_the_bundled_file() -> None:
    text = DEFAULT_SCENARIO_PATH.read_text()
    edited = text.replace("smtp_auth_enabled = true            # tenant-wide", "smtp_auth_enabled = false  # tenant-wide")
    assert edited != text
    assert Scenario.from_toml(edited).smtp_auth_disabled(SENDER) == "tenant"


def test_code_api_derives_broken_scenarios(default: Scenario) -> None:
    no_consent = default.with_app("outbox-sender", exchange_consent=False)
    assert no_consent.roles_for(default.sender.client_id, "exchange") == ()
    assert default.roles_for(default.sender.client_id, "exchange") == ("SMTP.SendAsApp",)  # untouched
    off = default.with_mailbox(SENDER, smtp_auth_enabled=False)
    assert off.smtp_auth_disabled(SENDER) == "mailbox"
    patched = default.with_changes({"exchange": {"smtp_auth_enabled": False}}, token_lifetime_s=60)
    assert patched.smtp_auth_disabled(NOREPLY) == "tenant" and patched.token_lifetime_s == 60
    assert default.without_mailbox(OTHER).mailbox(OTHER) is None


def test_send_as_grants(default: Scenario) -> None:
    granted = default.with_mailbox(SENDER, send_as=[NOREPLY])
    assert granted.may_send_as(SENDER, NOREPLY)
    assert not default.may_send_as(SENDER, NOREPLY)
    assert default.may_send_as(SENDER, SENDER.upper())
    app = default.sender
    assert default.smtp_may_send_as(app.client_id, SENDER, NOREPLY)  # the app's own Send As grant
    assert not default.with_app("outbox-sender", smtp={"send_as": []}).smtp_may_send_as(app.client_id, SENDER, NOREPLY)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('extends = "default"\napps.outbox-sender.colour = "red"', "apps.outbox-sender"),
        ('extends = "default"\nlimits.smtp.max_size = 1', "limits.smtp"),
        ('extends = "default"\nsending_app = "nobody"', "sending_app"),
        ('extends = "default"\nmanaged_identity.keyvault_role = "Owner"', "keyvault_role"),
        ('extends = "nope"', "nope"),
        ('extends = "default"\n[[faults]]\nservice = "ftp"', "ftp"),
    ],
)
def test_mistakes_in_a_scenario_name_the_key(toml: str, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        Scenario.from_toml(toml)


def test_faults_in_toml() -> None:
    scenario = Scenario.from_toml(
        'extends = "default"\n[[faults]]\nservice = "graph"\ncatalog = "graph.service_unavailable"\nnth = 2\ntimes = 1\n'
    )
    (rule,) = scenario.faults
    assert (rule.service, rule.action, rule.catalog, rule.nth, rule.times) == (
        "graph", "reply", "graph.service_unavailable", 2, 1,
    )
