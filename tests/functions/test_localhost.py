"""The local stand-in for the Functions host: the host behaviours outbox relies on, on a tiny app."""

from __future__ import annotations

import base64
import json
import os
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from harness.azurite import Azurite
from harness.localhost import IndexingError, LocalHost, QueueOptions, index_app, parse_timespan

APP = '''
import os
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
SEEN = []

@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    SEEN.append((body, msg.dequeue_count, os.environ.get("GREETING")))
    if body.startswith("boom"):
        raise RuntimeError("boom")

@app.route(route="items/{item_id}", methods=["GET"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"id": req.route_params["item_id"], "q": req.params.get("q")}),
                             mimetype="application/json")

@app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("open")

TICKS = []

@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    TICKS.append(timer.past_due)

import json
'''


def host_json(encoding: str = "none") -> dict:
    return {"version": "2.0", "extensions": {"queues": {
        "batchSize": 4, "newBatchThreshold": 2, "maxDequeueCount": 3, "visibilityTimeout": "00:00:00",
        "maxPollingInterval": "00:00:01", "messageEncoding": encoding}}}


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    # A module name of its own per test: the worker imports the script by its stem.
    name = f"tinyapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP))
    (tmp_path / "name").write_text(name)
    return tmp_path


def _values(app_root: Path, azurite: Azurite, queue: str) -> dict[str, str]:
    return {"AzureWebJobsStorage": azurite.connection_string, "WORK_QUEUE": queue, "GREETING": "hello",
            "TICK_SCHEDULE": "0 0 0 1 1 *",  # once a year: runs here only on startup and when asked
            "PYTHON_SCRIPT_FILE_NAME": (app_root / "name").read_text() + ".py"}


def _module(app_root: Path):
    import sys

    return sys.modules[(app_root / "name").read_text()]


def test_timespans_and_defaults() -> None:
    assert parse_timespan("00:00:30", 0) == 30 and parse_timespan("1.00:00:01", 0) == 86401
    assert parse_timespan("00:01:00.5", 0) == 60.5 and parse_timespan(None, 7) == 7
    opts = QueueOptions.from_host_json({"version": "2.0"})
    assert (opts.batch_size, opts.new_batch_threshold, opts.max_dequeue_count, opts.message_encoding) == (
        16, 8, 5, "base64")


def test_indexing_follows_the_worker_rule(app_root: Path) -> None:
    with pytest.raises(IndexingError, match="does not exist"):
        index_app(app_root, {})  # function_app.py is not there
    with pytest.raises(IndexingError, match=r"plain \.py file name"):
        index_app(app_root, {"PYTHON_SCRIPT_FILE_NAME": "sub/app.py"})
    (app_root / "two.py").write_text("import azure.functions as func\na = func.FunctionApp()\nb = func.FunctionApp()\n")
    with pytest.raises(IndexingError, match="More than one"):
        index_app(app_root, {"PYTHON_SCRIPT_FILE_NAME": "two.py"})


def test_failing_invocations_are_retried_then_moved_to_poison_as_they_were(app_root: Path, azurite: Azurite) -> None:
    queue = f"lh-{uuid.uuid4().hex[:8]}"
    host = LocalHost(app_root=app_root, values=_values(app_root, azurite, queue), host_json=host_json(),
                     queue_overrides={"max_polling_interval_s": 0.2}, http_port=None)
    from azure.storage.queue import QueueServiceClient

    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    q = service.get_queue_client(queue)
    q.create_queue()
    q.send_message("fine")
    q.send_message("boom!")
    with host:
        assert host.wait_until(lambda: host.stats.moved_to_poison == 1 and host.stats.succeeded == 1, 20)
        seen = list(_module(app_root).SEEN)
    assert ("fine", 1, "hello") in seen
    assert sorted(d for b, d, _ in seen if b == "boom!") == [1, 2, 3]  # maxDequeueCount = 3
    poison = service.get_queue_client(queue + "-poison")
    [moved] = list(poison.receive_messages())
    assert moved.content == "boom!"  # no envelope: what the host itself does
    assert q.get_queue_properties().approximate_message_count == 0
    assert "WORK_QUEUE" not in os.environ  # settings applied for the host's lifetime only


def test_base64_encoding_decodes_and_rejects_plain_text(app_root: Path, azurite: Azurite) -> None:
    queue = f"lh-{uuid.uuid4().hex[:8]}"
    host = LocalHost(app_root=app_root, values=_values(app_root, azurite, queue), host_json=host_json("base64"),
                     queue_overrides={"max_polling_interval_s": 0.2}, http_port=None)
    from azure.storage.queue import QueueServiceClient

    q = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(queue)
    q.create_queue()
    q.send_message(base64.b64encode(b"encoded").decode())
    q.send_message("{plain json}")
    with host:
        assert host.wait_until(lambda: host.stats.moved_to_poison == 1 and host.stats.succeeded == 1, 20)
        bodies = [b for b, _, _ in _module(app_root).SEEN]
    assert bodies == ["encoded"]  # the plain one never reached the function: the classic silent poison


def test_http_routes_keys_and_route_params(app_root: Path, azurite: Azurite) -> None:
    values = _values(app_root, azurite, f"lh-{uuid.uuid4().hex[:8]}")
    with LocalHost(app_root=app_root, values=values, host_json=host_json(), function_key="k1") as host:
        base = f"{host.base_url}/api"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/items/7", timeout=10)
        assert denied.value.code == 401
        req = urllib.request.Request(f"{base}/items/7?q=x", headers={"x-functions-key": "k1"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read()) == {"id": "7", "q": "x"}
        with urllib.request.urlopen(f"{base}/items/8?code=k1", timeout=10) as resp:
            assert json.loads(resp.read())["id"] == "8"
        with urllib.request.urlopen(f"{base}/open", timeout=10) as resp:
            assert resp.read() == b"open"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nothing?code=k1", timeout=10)
        assert missing.value.code == 404


def test_timer_runs_on_startup_on_its_schedule_and_when_the_admin_api_asks(app_root: Path, azurite: Azurite) -> None:
    values = _values(app_root, azurite, f"lh-{uuid.uuid4().hex[:8]}")
    with LocalHost(app_root=app_root, values=values, host_json=host_json(), function_key="k1") as host:
        assert host.wait_until(lambda: host.stats.timer_runs >= 1, 10)  # runOnStartup
        assert _module(app_root).TICKS == [False]
        url = f"{host.base_url}/admin/functions/tick"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=10)
        assert denied.value.code == 401
        req = urllib.request.Request(url, data=b"{}", method="POST", headers={"x-functions-key": "k1"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
        assert host.wait_until(lambda: host.stats.timer_runs >= 2, 10)
        assert len(_module(app_root).TICKS) == 2
        with pytest.raises(urllib.error.HTTPError) as unknown:
            urllib.request.urlopen(urllib.request.Request(f"{host.base_url}/admin/functions/work", data=b"{}",
                                                          method="POST", headers={"x-functions-key": "k1"}), timeout=10)
        assert unknown.value.code == 404  # queue functions are not run this way here


def test_environment_wins_over_local_settings(app_root: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = f"lh-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GREETING", "from-env")
    host = LocalHost(app_root=app_root, values=_values(app_root, azurite, queue), host_json=host_json(),
                     queue_overrides={"max_polling_interval_s": 0.2}, http_port=None)
    from azure.storage.queue import QueueServiceClient

    q = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(queue)
    q.create_queue()
    q.send_message("which greeting")
    with host:
        assert host.wait_until(lambda: host.stats.succeeded == 1, 20)
        [(_, _, greeting)] = [s for s in _module(app_root).SEEN if s[0] == "which greeting"]
    assert greeting == "from-env"


def test_command_line_host_serves_and_stops_on_sigterm(app_root: Path, azurite: Azurite, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    queue = f"lh-{uuid.uuid4().hex[:8]}"
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": _values(app_root, azurite, queue)}))
    (app_root / "host.json").write_text(json.dumps(host_json()))
    proc = subprocess.Popen([sys.executable, "-m", "harness.localhost", "--settings", str(settings), "--app-root",
                             str(app_root), "--port", "0"], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stops it" in line:
                break
        assert any("functions: work, item, open_" in line for line in lines), lines
        url = next(line.split()[1] for line in lines if line.startswith("HTTP: "))
        with urllib.request.urlopen(f"{url}open", timeout=10) as resp:
            assert resp.read() == b"open"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
