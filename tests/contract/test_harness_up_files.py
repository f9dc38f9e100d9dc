"""design.md "The harness, the local host and the CLI find each other through files": what
``python -m harness up`` writes, read by a shell and by the one settings loader."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.up import SettingsConflict, copy_settings_to
from shared.settings import load_settings
from tests.contract.conftest import ROOT

# Every OUTBOX_* setting design.md names for the function (the CLI-only OUTBOX_API_URL/KEY excepted: no
# HTTP function runs in `harness up`).
CONTRACT_SETTINGS = (
    "OUTBOX_QUEUE", "OUTBOX_STATUS_TABLE", "OUTBOX_ATTACHMENTS_CONTAINER", "OUTBOX_TENANT_ID", "OUTBOX_CLIENT_ID",
    "OUTBOX_KEYVAULT_URL", "OUTBOX_CERT_NAME", "OUTBOX_TRANSPORT", "OUTBOX_ALLOWED_SENDERS", "OUTBOX_ON_AMBIGUOUS",
    "OUTBOX_MAX_ATTEMPTS", "OUTBOX_BACKOFF_BASE_S", "OUTBOX_BACKOFF_MAX_S", "OUTBOX_CLOUD", "OUTBOX_AUTHORITY_HOST",
    "OUTBOX_GRAPH_URL", "OUTBOX_SMTP_HOST", "OUTBOX_SMTP_PORT", "OUTBOX_CA_BUNDLE",
)
PLATFORM = ("AzureWebJobsStorage", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID",
            "FUNCTIONS_WORKER_RUNTIME")


@dataclass
class Up:
    state: Path
    env_file: Path
    cwd: Path
    root_settings_before: float | None
    table: list[str]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    base = tmp_path_factory.mktemp("up")
    state, env_file, cwd = base / "state", base / "exported.env", base / "cwd"
    cwd.mkdir()
    root_settings = ROOT / "local.settings.json"
    before = root_settings.stat().st_mtime if root_settings.exists() else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([sys.executable, "-m", "harness", "up", "--state", str(state), "--env-file", str(env_file)],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        table: list[str] = []
        for line in process.stdout:  # the endpoint table is printed once everything is up
            if line.startswith("Ctrl-C"):
                break
            table.append(line.rstrip("\n"))
        else:
            raise AssertionError("harness up exited before it was ready")
        yield Up(state, env_file, cwd, before, table)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def json_values(up: Up) -> dict[str, str]:
    data = json.loads((up.state / "local.settings.json").read_text(encoding="utf-8"))
    assert data["IsEncrypted"] is False
    return data["Values"]


def shell_values(path: Path) -> dict[str, str]:
    """The file read as a POSIX shell reads it (`set -a; . FILE`), the way people use .env files."""
    script = f"set -a; . {shlex.quote(str(path))}; env -0"
    done = subprocess.run(["bash", "-c", script], env={"PATH": os.environ.get("PATH", "")}, capture_output=True,
                          timeout=30, check=True)
    pairs = [item.split(b"=", 1) for item in done.stdout.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_local_settings_json_has_every_contract_setting(up: Up) -> None:
    values = json_values(up)
    missing = [name for name in (*CONTRACT_SETTINGS, *PLATFORM) if name not in values]
    assert not missing, f"missing from local.settings.json: {missing}"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert "QueueEndpoint=http://127.0.0.1:" in values["AzureWebJobsStorage"]
    assert Path(values["OUTBOX_CA_BUNDLE"]).is_file()
    assert values["IDENTITY_ENDPOINT"].startswith("https://127.0.0.1:") and values["IDENTITY_HEADER"]


def test_outbox_env_holds_the_same_values_as_key_value_lines(up: Up) -> None:
    values = json_values(up)
    from_shell = shell_values(up.state / "outbox.env")
    assert {k: from_shell.get(k) for k in values} == values


def test_env_file_option_writes_the_same_key_value_file(up: Up) -> None:
    assert up.env_file.read_text(encoding="utf-8") == (up.state / "outbox.env").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["local.settings.json", "outbox.env"])
def test_the_loader_reads_either_file_alike(up: Up, name: str) -> None:
    settings = load_settings({}, up.state / name)
    values = json_values(up)
    assert settings.queue == values["OUTBOX_QUEUE"] and settings.tenant_id == values["OUTBOX_TENANT_ID"]
    assert settings.ca_bundle == values["OUTBOX_CA_BUNDLE"]
    assert settings.storage.connection_string == values["AzureWebJobsStorage"]


def test_nothing_is_copied_to_the_project_root_unless_asked(up: Up) -> None:
    assert not (up.cwd / "local.settings.json").exists()
    root_settings = ROOT / "local.settings.json"
    after = root_settings.stat().st_mtime if root_settings.exists() else None
    assert after == up.root_settings_before


def test_a_root_copy_never_replaces_a_file_the_harness_did_not_write(up: Up, tmp_path: Path) -> None:
    written = json.loads((up.state / "local.settings.json").read_text(encoding="utf-8"))
    target = tmp_path / "local.settings.json"
    copy_settings_to(target, written)  # no file yet: written
    copy_settings_to(target, written)  # its own file: replaced
    assert json.loads(target.read_text()) == written
    foreign = '{"IsEncrypted": false, "Values": {"MINE": "1"}}\n'
    target.write_text(foreign)
    with pytest.raises(SettingsConflict):
        copy_settings_to(target, written)
    assert target.read_text() == foreign


def test_the_inbox_page_is_served_and_named_in_the_table_and_harness_json(up: Up) -> None:
    import ssl

    import httpx

    info = json.loads((up.state / "harness.json").read_text(encoding="utf-8"))
    url = info["inbox"]
    assert url.startswith("https://127.0.0.1:") and info["endpoints"]["inbox"] == url
    assert any(line.split() == ["inbox", url] for line in up.table), up.table
    verify = ssl.create_default_context(cafile=info["caBundle"])
    with httpx.Client(verify=verify, timeout=30) as client:
        page = client.get(url)
        assert page.status_code == 200 and "outbox harness inbox" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        overview = client.get(f"{url}/overview").json()
        # Under `harness up` the page reads the harness's own storage: outbox's side is on.
        assert overview["outbox"]["queue"] == json_values(up)["OUTBOX_QUEUE"]
        poison = client.get(f"{url}/outbox/poison")
        assert poison.status_code == 200, poison.text
        assert poison.json()["count"] == 0
