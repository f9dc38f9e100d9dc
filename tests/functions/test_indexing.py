"""The Functions worker must find the app under `func start` and in Azure.

Core Tools cannot run here, so these tests apply the Python worker's own discovery rule (azure-functions-
python-worker, ``loader.index_function_app`` and the dispatcher's metadata request): script file = app
setting ``PYTHON_SCRIPT_FILE_NAME`` or ``function_app.py``; a plain ``*.py`` name; if that file does not
exist in the app root, NO functions are indexed, silently; else ``importlib.import_module(stem)`` and
exactly one ``FunctionRegister`` among the module's top-level names. Each test runs the rule in a fresh
interpreter whose only path entry for the app is the app root, as the worker's is.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]

# The worker's rule, verbatim in behaviour; run with cwd = app root and sys.path[0] = app root.
WORKER_RULE = r"""
import importlib, json, os, pathlib, re, sys
app_root = sys.argv[1]
name = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
out = {"script": name}
if not re.match(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py$", name):
    out["error"] = "invalid script file name"
elif not os.path.exists(os.path.join(app_root, name)):
    out["functions"] = []          # the worker falls back to legacy indexing and finds nothing
else:
    sys.path.insert(0, app_root)
    module = importlib.import_module(pathlib.Path(name).stem)
    from azure.functions import FunctionRegister
    apps = [getattr(module, n) for n in module.__dir__() if isinstance(getattr(module, n, None), FunctionRegister)]
    if len(apps) != 1:
        out["error"] = f"{len(apps)} FunctionRegister instances"
    else:
        out["functions"] = [json.loads(f.get_function_json()) | {"name": f.get_function_name()}
                            for f in apps[0].get_functions()]
print(json.dumps(out))
"""


def index_like_the_worker(app_root: Path, script_file_name: str | None) -> dict:
    env = {"PATH": "/usr/bin:/bin"}
    if script_file_name is not None:
        env["PYTHON_SCRIPT_FILE_NAME"] = script_file_name
    # -I: isolated (no user site, no PYTHONPATH, no script dir), so only the app root can provide the app.
    proc = subprocess.run([sys.executable, "-I", "-c", WORKER_RULE, str(app_root)], cwd=app_root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_example_settings_name_a_root_script_the_worker_accepts() -> None:
    name = EXAMPLE["PYTHON_SCRIPT_FILE_NAME"]
    assert re.match(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py$", name)
    assert (ROOT / name).is_file()


def test_worker_indexes_all_four_functions_through_main_py() -> None:
    result = index_like_the_worker(ROOT, EXAMPLE["PYTHON_SCRIPT_FILE_NAME"])
    assert "error" not in result
    names = {f["name"] for f in result["functions"]}
    assert names == {"outbox_queue", "send", "message_status", "signin_keepalive"}


def test_without_the_setting_nothing_would_be_indexed() -> None:
    # Why the setting matters: the package folder function_app/ is not function_app.py.
    assert not (ROOT / "function_app.py").exists()
    assert index_like_the_worker(ROOT, None)["functions"] == []


def test_bindings_the_host_sees() -> None:
    fns = {f["name"]: f for f in index_like_the_worker(ROOT, "main.py")["functions"]}
    [queue] = fns["outbox_queue"]["bindings"]
    assert queue == {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%OUTBOX_QUEUE%",
                     "connection": "AzureWebJobsStorage"}
    send_in = next(b for b in fns["send"]["bindings"] if b["type"] == "httpTrigger")
    assert send_in["methods"] == ["POST"] and send_in["route"] == "send" and send_in["authLevel"] == "FUNCTION"
    status_in = next(b for b in fns["message_status"]["bindings"] if b["type"] == "httpTrigger")
    assert status_in["methods"] == ["GET"] and status_in["route"] == "messages/{id}"
    assert status_in["authLevel"] == "FUNCTION"
    [timer] = fns["signin_keepalive"]["bindings"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%OUTBOX_KEEPALIVE_SCHEDULE%"
    assert timer["runOnStartup"] is False


def test_the_keepalive_schedule_the_timer_binds_is_a_valid_ncrontab() -> None:
    from harness import ncrontab
    from shared.settings import SETTINGS

    schedule = ncrontab.parse(SETTINGS["OUTBOX_KEEPALIVE_SCHEDULE"].default or "")
    assert schedule.hours == {3} and len(schedule.days) == 31  # daily: far inside Entra's 90 days


def test_the_queue_setting_the_trigger_binds_is_set_by_the_templates() -> None:
    assert EXAMPLE["OUTBOX_QUEUE"] == "outbox"


def test_bicep_sets_the_script_file_name_too() -> None:
    bicep = "\n".join(p.read_text() for p in (ROOT / "infra").rglob("*.bicep"))
    assert re.search(r"PYTHON_SCRIPT_FILE_NAME['\"]?\s*[:,]\s*['\"]main\.py['\"]", bicep) or \
        re.search(r"name:\s*'PYTHON_SCRIPT_FILE_NAME'\s*\n\s*value:\s*'main\.py'", bicep)


def test_host_json_queue_settings_are_deliberate() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    queues = host["extensions"]["queues"]
    # Producers may send plain JSON; base64 (the default) would reject it before our code runs.
    assert queues["messageEncoding"] == "none"
    assert 1 <= queues["batchSize"] <= 32 and queues["newBatchThreshold"] < queues["batchSize"]
    assert queues["maxDequeueCount"] >= 2
    for key in ("visibilityTimeout", "maxPollingInterval"):
        assert re.fullmatch(r"\d\d:\d\d:\d\d", queues[key])


def test_requirements_hold_the_runtime_dependencies_and_never_the_worker() -> None:
    reqs = {re.split(r"[<>=!~ ]", line)[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert "azure-functions-worker" not in reqs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    assert reqs == runtime


def test_import_of_the_app_stays_light() -> None:
    # Heavy SDKs load on the first invocation, not when the worker indexes the app.
    code = ("import sys, main; heavy = [m for m in ('msal', 'httpx', 'azure.identity', 'azure.storage.queue',"
            " 'azure.data.tables', 'azure.keyvault.secrets', 'cryptography.x509') if m in sys.modules];"
            " print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_sender_allow_list_is_said_when_the_worker_loads_the_app(value: str | None) -> None:
    # design.md: empty or unset allows no sender, "and the function says so at start", i.e. before a message.
    env = {"PATH": "/usr/bin:/bin"} | ({} if value is None else {"OUTBOX_ALLOWED_SENDERS": value})
    proc = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(); import main"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OUTBOX_ALLOWED_SENDERS" in proc.stderr and "no sender is allowed" in proc.stderr


def test_a_set_sender_allow_list_loads_quietly() -> None:
    proc = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(); import main"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "OUTBOX_ALLOWED_SENDERS": "*@contoso.example"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
