"""`python -m harness up` as a user runs it, the files it writes, and Azurite."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from harness.azurite import Azurite, AzuriteError
from harness.client import HarnessClient
from harness.up import WRITTEN_BY, SettingsConflict, copy_settings_to
from shared.settings import load_settings
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, waiting for its (re)parent to reap it


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> dict:
    def written() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"harness exited early: {process.stdout.read() if process.stdout else ''}")
        return path.exists()

    wait_until(written, timeout, poll_s=0.05, message="harness.json did not appear")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_up_starts_writes_files_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env_file = tmp_path / "extra.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "up", "--state", str(state), "--env-file", str(env_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        info = _wait_for(state / "harness.json", process)
        assert info["pid"] == process.pid
        with HarnessClient.from_state(state) as client:
            assert client.health()["ok"]
        settings = json.loads((state / "local.settings.json").read_text())
        values = settings["Values"]
        assert settings["IsEncrypted"] is False and settings["WrittenBy"] == WRITTEN_BY
        assert values["AzureWebJobsStorage"] == info["storage"] and "QueueEndpoint=http://127.0.0.1:" in info["storage"]
        assert values["OUTBOX_CA_BUNDLE"] == values["REQUESTS_CA_BUNDLE"] == values["SSL_CERT_FILE"] == info["caBundle"]
        env_lines = (state / "outbox.env").read_text().splitlines()
        assert env_file.read_text().splitlines() == env_lines
        assert f"OUTBOX_KEYVAULT_URL={values['OUTBOX_KEYVAULT_URL']}" in env_lines
        ports = [int(url.rsplit(":", 1)[1]) for url in info["endpoints"].values()]
        azurite_pid = info["azuritePid"]
        assert not _gone(azurite_pid)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "keyvault" in output and "harness stopped." in output  # the endpoint table, then the goodbye
    assert all(_port_closed(port) for port in ports)
    wait_until(lambda: _gone(azurite_pid), 10, poll_s=0.05, message=f"Azurite (pid {azurite_pid}) still runs")
    assert not (state / "harness.json").exists()


def test_harness_settings_load_with_the_outbox_loader(harness, azurite: Azurite) -> None:
    values = harness.settings_values()
    values["AzureWebJobsStorage"] = azurite.connection_string
    settings = load_settings(values)
    assert settings.authority_host == harness.url("entra")
    assert settings.graph_url == harness.url("graph")
    assert (settings.smtp_host, settings.smtp_port) == harness.endpoints["smtp"].address
    assert settings.keyvault_url.rstrip("/") == harness.keyvault_url
    assert str(settings.ca_bundle) == str(harness.ca_bundle)
    assert settings.tenant_id == harness.scenario.tenant_id and settings.client_id == harness.scenario.sender.client_id
    assert settings.queue == "outbox"


def test_scenario_settings_override_the_written_values(harness_factory) -> None:
    h = harness_factory('extends = "default"\nsettings.OUTBOX_TENANT_ID = "11111111-2222-3333-4444-555555555555"\n', with_mail=False)
    values = json.loads((h.state_dir / "local.settings.json").read_text())["Values"]
    assert values["OUTBOX_TENANT_ID"] == "11111111-2222-3333-4444-555555555555"


def test_copy_settings_never_overwrites_a_foreign_file(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    ours = {"IsEncrypted": False, "Values": {"A": "1"}, "WrittenBy": WRITTEN_BY}
    copy_settings_to(target, ours)
    copy_settings_to(target, {**ours, "Values": {"A": "2"}})  # our own file: replaced
    assert json.loads(target.read_text())["Values"] == {"A": "2"}
    target.write_text('{"IsEncrypted": false, "Values": {"MINE": "x"}}')
    with pytest.raises(SettingsConflict):
        copy_settings_to(target, ours)
    assert json.loads(target.read_text())["Values"] == {"MINE": "x"}


def test_azurite_queue_round_trip(azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, "harness-check", retry_total=0)
    queue.create_queue()
    queue.send_message("hello")
    (message,) = list(queue.receive_messages())
    assert message.content == "hello"


def test_azurite_missing_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="make setup"):
        Azurite(executable=tmp_path / "node_modules" / ".bin" / "azurite").start()


def test_main_without_command_prints_usage() -> None:
    result = subprocess.run([sys.executable, "-m", "harness"], cwd=ROOT, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 2 and result.stdout.startswith("usage: python -m harness <command>")
    assert re.search(r"(?m)^  up\s+start every fake", result.stdout)
