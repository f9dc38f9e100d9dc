"""design.md "Settings": names, precedence, the cloud table, the sender allow-list and explicit trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.up import Harness
from shared.settings import load_settings
from tests.contract.conftest import ROOT, HostPlay, mail

# Microsoft's national cloud endpoints (learn.microsoft.com/graph/deployments; Exchange Online's OAuth
# resources per cloud: outlook.office365.us, outlook-dod.office365.us, partner.outlook.cn).
CLOUDS = {
    "public": ("https://login.microsoftonline.com", "https://graph.microsoft.com", "smtp.office365.com",
               "https://graph.microsoft.com/.default", "https://outlook.office365.com/.default"),
    "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us", "smtp.office365.us",
              "https://graph.microsoft.us/.default", "https://outlook.office365.us/.default"),
    "usgovdod": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us", "smtp.office365.us",
                 "https://dod-graph.microsoft.us/.default", "https://outlook-dod.office365.us/.default"),
    "china": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", "smtp.partner.outlook.cn",
              "https://microsoftgraph.chinacloudapi.cn/.default", "https://partner.outlook.cn/.default"),
}
BASE = {"OUTBOX_QUEUE": "outbox", "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
        "QueueEndpoint=http://127.0.0.1:1/a;TableEndpoint=http://127.0.0.1:2/a;BlobEndpoint=http://127.0.0.1:3/a"}


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_cloud_picks_hosts_and_scopes(cloud: str) -> None:
    s = load_settings({**BASE, "OUTBOX_CLOUD": cloud})
    assert (s.authority_host, s.graph_url, s.smtp_host, s.graph_scope, s.smtp_scope) == CLOUDS[cloud]
    assert s.smtp_port == 587


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_endpoint_overrides_never_change_the_scopes(cloud: str) -> None:
    s = load_settings({**BASE, "OUTBOX_CLOUD": cloud, "OUTBOX_AUTHORITY_HOST": "https://127.0.0.1:4443",
                       "OUTBOX_GRAPH_URL": "https://127.0.0.1:4444", "OUTBOX_SMTP_HOST": "127.0.0.1",
                       "OUTBOX_SMTP_PORT": "2525"})
    assert (s.authority_host, s.graph_url, s.smtp_host, s.smtp_port) == (
        "https://127.0.0.1:4443", "https://127.0.0.1:4444", "127.0.0.1", 2525)
    assert (s.graph_scope, s.smtp_scope) == CLOUDS[cloud][3:]


def test_defaults_of_the_contract() -> None:
    s = load_settings(BASE)
    assert (s.status_table, s.attachments_container, s.poison_queue) == ("outboxstatus", "outbox-attachments",
                                                                         "outbox-poison")
    assert (s.transport, s.on_ambiguous, s.max_attempts, s.backoff_base_s, s.backoff_max_s, s.cloud) == (
        "graph", "lookup", 8, 5, 900, "public")
    assert s.allowed_senders == ()


def test_outbox_queue_is_required() -> None:
    with pytest.raises(ValueError, match="OUTBOX_QUEUE"):
        load_settings({k: v for k, v in BASE.items() if k != "OUTBOX_QUEUE"})


def _read_in(cwd: Path, env: dict[str, str], *argv: str) -> dict[str, str]:
    """What the one loader sees in a fresh process started in ``cwd`` (a real environment, a real cwd)."""
    code = ("import json, sys; from shared.settings import load_settings; "
            "s = load_settings(settings_file=sys.argv[1] if len(sys.argv) > 1 else None); "
            "print(json.dumps({'transport': s.transport, 'queue': s.queue, 'table': s.status_table}))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "AzureWebJobs"))}
    clean["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_precedence_environment_then_settings_file_then_local_settings_json(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        **BASE, "OUTBOX_TRANSPORT": "smtp", "OUTBOX_QUEUE": "from-local", "OUTBOX_STATUS_TABLE": "localtable"}}))
    env_file = tmp_path / "outbox.env"
    env_file.write_text("OUTBOX_QUEUE=from-file\nOUTBOX_STATUS_TABLE=filetable\n"
                        f"AzureWebJobsStorage='{BASE['AzureWebJobsStorage']}'\n")
    assert _read_in(tmp_path, {}) == {"transport": "smtp", "queue": "from-local", "table": "localtable"}
    assert _read_in(tmp_path, {}, str(env_file))["queue"] == "from-file"
    assert _read_in(tmp_path, {"OUTBOX_QUEUE": "from-env"}, str(env_file)) == {
        "transport": "graph", "queue": "from-env", "table": "filetable"}
    assert _read_in(tmp_path, {"OUTBOX_QUEUE": "from-env"})["queue"] == "from-env"


# -- OUTBOX_ALLOWED_SENDERS -----------------------------------------------------------------------------


@pytest.mark.parametrize(("allowed", "sender", "ok"), [
    ("*@contoso.example", "sender@contoso.example", True),
    ("*@contoso.example", "Sender@CONTOSO.example", True),
    ("*@CONTOSO.EXAMPLE", "sender@contoso.example", True),
    ("*@contoso.example", "sender@mail.contoso.example", False),
    ("*@contoso.example", "sender@fabrikam.example", False),
    ("noreply@contoso.example", "noreply@contoso.example", True),
    ("noreply@contoso.example", "sender@contoso.example", False),
    ("noreply@contoso.example, sender@contoso.example", "sender@contoso.example", True),
    ("", "sender@contoso.example", False),
])
def test_allowed_senders(harness: Harness, host_play, allowed: str, sender: str, ok: bool) -> None:
    play: HostPlay = host_play(OUTBOX_ALLOWED_SENDERS=allowed)
    assert play.deliver(mail(id="allow-1", **{"from": sender})).ok
    row = play.storage.row("allow-1")
    assert row is not None
    if ok:
        assert row["State"] == "sent"
        return
    assert row["State"] == "poisoned" and row["LastCategory"] == "invalid_message"
    [text] = play.storage.take_poison(1, timeout=5)
    error = json.loads(text)["error"]
    assert error["category"] == "invalid_message" and "from:" in error["detail"]
    assert "OUTBOX_ALLOWED_SENDERS" in error["detail"]
    assert harness.deliveries() == []


def test_empty_allow_list_is_said_at_start(tmp_path: Path, harness: Harness, azurite) -> None:
    """design.md: empty or unset = no sender allowed, "and the function says so at start": before any
    message arrives, a host that starts the function logs it."""
    values = json.loads((harness.state_dir / "local.settings.json").read_text())["Values"]
    values.update({"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_ALLOWED_SENDERS": "",
                   "OUTBOX_QUEUE": "ct-empty-allow"})
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "AzureWebJobs", "IDENTITY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "localhost", "--settings", str(settings), "--app-root", str(ROOT),
         "--port", "0", "--max-polling-interval", "1"],
        cwd=ROOT, env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Ctrl-C"):
                break
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=20)
    seen.append(rest or "")
    assert any("OUTBOX_ALLOWED_SENDERS" in line for line in seen), "".join(seen)


# -- OUTBOX_CA_BUNDLE ----------------------------------------------------------------------------------


def test_ca_bundle_is_given_to_every_tls_client(harness: Harness, host_play, tmp_path: Path) -> None:
    """The process-wide trust variables point at a CA that signed nothing here; only OUTBOX_CA_BUNDLE
    trusts the fakes. Managed identity, Key Vault, Entra (MSAL), Graph and SMTP must all still work."""
    import trustme

    decoy = tmp_path / "decoy.pem"
    trustme.CA().cert_pem.write_to_path(str(decoy))
    play: HostPlay = host_play(REQUESTS_CA_BUNDLE=str(decoy), SSL_CERT_FILE=str(decoy), CURL_CA_BUNDLE=str(decoy))
    assert play.deliver(mail(id="ca-graph")).ok
    assert play.deliver(mail(id="ca-smtp", transport="smtp")).ok
    for message_id in ("ca-graph", "ca-smtp"):
        row = play.storage.row(message_id)
        assert row is not None and row["State"] == "sent", (row or {}).get("LastDetail")


# -- OUTBOX_TRANSPORT and OUTBOX_ON_AMBIGUOUS --------------------------------------------------------------


def test_outbox_transport_is_the_default_and_a_message_may_override_it(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_TRANSPORT="smtp")
    assert play.deliver(mail(id="default-transport")).ok
    assert play.deliver(mail(id="own-transport", transport="graph")).ok
    assert play.storage.row("default-transport")["Transport"] == "smtp"
    assert play.storage.row("own-transport")["Transport"] == "graph"
    assert [d.transport for d in harness.deliveries()] in (["smtp", "graph"], ["graph", "smtp"])


def _ambiguous_then_retry(harness: Harness, play: HostPlay, message_id: str) -> dict:
    """A Graph send whose answer never comes (the fake delivers, then drops the connection)."""
    harness.set_fault(service="graph", action="drop_after_body", times=1)
    assert play.deliver(mail(id=message_id)).ok
    return play.storage.row(message_id) or {}


def test_on_ambiguous_lookup_finds_the_sent_copy_and_sends_nothing_twice(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_ON_AMBIGUOUS="lookup")
    assert _ambiguous_then_retry(harness, play, "amb-lookup")["State"] == "ambiguous"
    assert play.invoke_next(timeout=5).ok
    row = play.storage.row("amb-lookup")
    assert (row["State"], row["SentVia"]) == ("sent", "lookup")
    assert len(harness.deliveries(transport="graph")) == 1


def test_on_ambiguous_resend_sends_again_and_says_possibly_duplicated(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_ON_AMBIGUOUS="resend")
    assert _ambiguous_then_retry(harness, play, "amb-resend")["State"] == "ambiguous"
    assert play.invoke_next(timeout=5).ok
    row = play.storage.row("amb-resend")
    assert row["State"] == "sent" and row["PossiblyDuplicated"] is True
    assert len(harness.deliveries(transport="graph")) == 2


def test_on_ambiguous_poison_leaves_it_to_an_operator(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_ON_AMBIGUOUS="poison")
    assert _ambiguous_then_retry(harness, play, "amb-poison")["State"] == "poisoned"
    [text] = play.storage.take_poison(1, timeout=5)
    envelope = json.loads(text)
    assert envelope["message"]["id"] == "amb-poison" and envelope["error"]["transport"] == "graph"
    assert len(harness.deliveries(transport="graph")) == 1


def test_the_cli_trusts_only_the_ca_bundle_too(harness: Harness, azurite, tmp_path: Path) -> None:
    """The operator's tool is an outbound TLS client of outbox as well: doctor reaches the managed identity,
    Key Vault, Entra, Graph and SMTP with the process trust variables pointing at an unrelated CA."""
    import trustme

    decoy = tmp_path / "decoy.pem"
    trustme.CA().cert_pem.write_to_path(str(decoy))
    values = json.loads((harness.state_dir / "local.settings.json").read_text())["Values"]
    values.update({"AzureWebJobsStorage": azurite.connection_string, "REQUESTS_CA_BUNDLE": str(decoy),
                   "SSL_CERT_FILE": str(decoy)})
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "AzureWebJobs", "IDENTITY_"))}
    env.update({"REQUESTS_CA_BUNDLE": str(decoy), "SSL_CERT_FILE": str(decoy), "CURL_CA_BUNDLE": str(decoy),
                "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-c", "from shared.cli.main import main; raise SystemExit(main())", "--settings",
         str(settings), "--json", "doctor", "--mailbox", "sender@contoso.example", "--transport", "both"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    failed = [(c["id"], c["summary"]) for c in report["checks"] if c["status"] == "fail"]
    assert done.returncode == 0 and not failed, (failed, done.stderr[-2000:])
    assert {c["id"] for c in report["checks"] if c["status"] == "pass"} >= {"keyvault", "smtp.auth"}
