import json
from pathlib import Path

import pytest

from shared.settings import CLOUDS, SETTINGS, SettingsError, load_settings, read_settings_file

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "QueueEndpoint=http://127.0.0.1:1/devstoreaccount1"
)
BASE = {"OUTBOX_QUEUE": "outbox", "AzureWebJobsStorage": AZURITE}


def test_defaults_follow_the_design_contract() -> None:
    s = load_settings(BASE)
    assert s.queue == "outbox" and s.poison_queue == "outbox-poison"
    assert s.status_table == "outboxstatus"
    assert s.attachments_container == "outbox-attachments"
    assert (s.transport, s.on_ambiguous, s.max_attempts) == ("graph", "lookup", 8)
    assert (s.backoff_base_s, s.backoff_max_s) == (5, 900)
    assert s.allowed_senders == ()
    assert s.graph_url == "https://graph.microsoft.com"
    assert s.smtp_host == "smtp.office365.com" and s.smtp_port == 587
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.smtp_scope == "https://outlook.office365.com/.default"
    assert s.uses_microsoft_authority


def test_every_problem_is_reported_by_name_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"OUTBOX_MAX_ATTEMPTS": "many", "OUTBOX_TRANSPORT": "fax", "OUTBOX_GRAPH_URL": "http://x"})
    assert set(err.value.names) >= {
        "OUTBOX_QUEUE", "AzureWebJobsStorage", "OUTBOX_MAX_ATTEMPTS", "OUTBOX_TRANSPORT", "OUTBOX_GRAPH_URL",
    }
    assert "OUTBOX_MAX_ATTEMPTS: expected a whole number, got 'many'" in str(err.value)


def test_use_development_storage_means_azurite_on_its_default_ports() -> None:
    s = load_settings({"OUTBOX_QUEUE": "q", "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    conn = s.storage.connection_string or ""
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1" in conn
    assert "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1" in conn
    client = s.storage.queue_service_client()
    assert client.url.startswith("http://127.0.0.1:10001/devstoreaccount1")


def test_identity_based_storage_connection() -> None:
    s = load_settings({
        "OUTBOX_QUEUE": "outbox",
        "AzureWebJobsStorage__queueServiceUri": "https://st1.queue.core.windows.net",
        "AzureWebJobsStorage__accountName": "st1",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
    })
    assert s.storage.connection_string is None
    assert s.storage.queue_service_uri == "https://st1.queue.core.windows.net"
    assert s.storage.table_service_uri == "https://st1.table.core.windows.net"
    assert s.storage.credential_kind == "managedidentity"


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_picks_endpoints_and_overrides_never_change_scopes(cloud: str) -> None:
    s = load_settings({**BASE, "OUTBOX_CLOUD": cloud, "OUTBOX_GRAPH_URL": "https://127.0.0.1:9/",
                       "OUTBOX_AUTHORITY_HOST": "https://127.0.0.1:8"})
    assert s.graph_url == "https://127.0.0.1:9"
    assert s.graph_scope == CLOUDS[cloud].graph_scope
    assert s.smtp_scope == CLOUDS[cloud].smtp_scope
    assert not s.uses_microsoft_authority


def test_usgov_uses_the_us_hosts() -> None:
    s = load_settings({**BASE, "OUTBOX_CLOUD": "usgov"})
    assert s.authority_host == "https://login.microsoftonline.us"
    assert s.graph_url == "https://graph.microsoft.us"
    assert s.smtp_host == "smtp.office365.us"


def test_allowed_senders_are_parsed_and_checked() -> None:
    s = load_settings({**BASE, "OUTBOX_ALLOWED_SENDERS": " A@Contoso.example, *@fabrikam.example "})
    assert s.allowed_senders == ("a@contoso.example", "*@fabrikam.example")
    with pytest.raises(SettingsError, match="OUTBOX_ALLOWED_SENDERS"):
        load_settings({**BASE, "OUTBOX_ALLOWED_SENDERS": "a*b@x.example"})


def test_sending_needs_identity_settings_named() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(BASE).require_sending()
    assert set(err.value.names) == {"OUTBOX_TENANT_ID", "OUTBOX_CLIENT_ID", "OUTBOX_KEYVAULT_URL", "OUTBOX_CERT_NAME"}


def test_precedence_environment_over_file(tmp_path: Path) -> None:
    f = tmp_path / "local.settings.json"
    f.write_text(json.dumps({"IsEncrypted": False, "Values": {**BASE, "OUTBOX_TRANSPORT": "smtp",
                                                               "OUTBOX_MAX_ATTEMPTS": "3"}}))
    s = load_settings({"OUTBOX_MAX_ATTEMPTS": "4"}, settings_file=f)
    assert (s.transport, s.max_attempts) == ("smtp", 4)


def test_env_file_form(tmp_path: Path) -> None:
    f = tmp_path / "outbox.env"
    f.write_text("# harness\nOUTBOX_QUEUE=outbox\nexport AzureWebJobsStorage='" + AZURITE + "'\n")
    assert read_settings_file(f)["AzureWebJobsStorage"] == AZURITE
    assert load_settings({}, settings_file=f).queue == "outbox"


def test_ca_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OUTBOX_CA_BUNDLE"):
        load_settings({**BASE, "OUTBOX_CA_BUNDLE": str(tmp_path / "missing.pem")})


def test_ssl_context_is_built_once() -> None:
    s = load_settings(BASE)
    assert s.ssl_context() is s.ssl_context()


def test_upload_chunk_must_stay_under_graph_limit() -> None:
    with pytest.raises(SettingsError, match="OUTBOX_UPLOAD_CHUNK_BYTES"):
        load_settings({**BASE, "OUTBOX_UPLOAD_CHUNK_BYTES": str(4 * 1024 * 1024)})


def test_registry_documents_every_setting() -> None:
    assert all(spec.doc for spec in SETTINGS.values())
    assert {n for n, s in SETTINGS.items() if s.scope == "cli"} == {"OUTBOX_API_URL", "OUTBOX_API_KEY"}
