"""The settings the code reads, the settings Bicep sets and local.settings.example.json cannot drift apart.

Source of truth: `shared.settings.SETTINGS` (scope "function": the app reads it, so Bicep and the example
must set it; scope "cli": only the operator's CLI reads it, so Bicep must not).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.settings import PLATFORM_SETTINGS, SETTINGS, load_settings
from tests.infra import bicep

FUNCTION_SETTINGS = {name for name, spec in SETTINGS.items() if spec.scope == "function"}
CLI_SETTINGS = {name for name, spec in SETTINGS.items() if spec.scope == "cli"}

# Keys only a local run has: the worker runtime (Flex sets it from functionAppConfig) and the Azurite
# connection string (Azure uses the identity-based AzureWebJobsStorage__* form instead).
LOCAL_ONLY = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "PYTHON_SCRIPT_FILE_NAME",
              "PYTHON_THREADPOOL_THREAD_COUNT"}

# Keys only the platform and the SDKs read, which Bicep sets besides outbox's own contract.
PLATFORM_ONLY = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AZURE_CLIENT_ID",
    "PYTHON_SCRIPT_FILE_NAME",
    "PYTHON_THREADPOOL_THREAD_COUNT",
}

# Flex Consumption rejects these app settings (its runtime, scale and package live in functionAppConfig).
FLEX_FORBIDDEN = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "FUNCTION_APP_EDIT_MODE",
    "ENABLE_ORYX_BUILD",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "WEBSITE_USE_PLACEHOLDER_DOTNETISOLATED",
    "WEBSITE_MOUNT_ENABLED",
    "AzureWebJobsDashboard",
}

EXAMPLE = bicep.ROOT / "local.settings.example.json"


def _example_values() -> dict[str, str]:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))["Values"]


def _param_name(setting: str) -> str:
    """OUTBOX_MAX_ATTEMPTS -> outboxMaxAttempts: the one parameter of main.bicep behind a setting."""
    first, *rest = setting.lower().split("_")
    return first + "".join(part.capitalize() for part in rest)


def test_bicep_sets_exactly_the_function_settings_the_code_reads() -> None:
    deployed = bicep.app_settings()
    outbox = {name for name in deployed if name.startswith("OUTBOX_")}
    assert FUNCTION_SETTINGS - outbox == set(), "read by the code but not set by Bicep"
    assert outbox - FUNCTION_SETTINGS == set(), "set by Bicep but not in shared.settings.SETTINGS"
    assert CLI_SETTINGS & set(deployed) == set(), "CLI-only settings must not be deployed"


def test_bicep_sets_no_unexplained_platform_setting() -> None:
    deployed = set(bicep.app_settings())
    assert deployed - FUNCTION_SETTINGS - PLATFORM_ONLY == set()


def test_local_example_lists_the_same_function_settings() -> None:
    values = _example_values()
    outbox = {name for name in values if name.startswith("OUTBOX_")}
    assert FUNCTION_SETTINGS - outbox == set(), "missing from local.settings.example.json"
    assert outbox - FUNCTION_SETTINGS - CLI_SETTINGS == set(), "unknown OUTBOX_ names in the example"
    assert {name for name in values if not name.startswith("OUTBOX_")} - LOCAL_ONLY == set()


def test_no_setting_flex_consumption_rejects() -> None:
    assert set(bicep.app_settings()) & FLEX_FORBIDDEN == set()
    # Also nowhere else in the templates (a second config resource, a module's own settings).
    for path in bicep.bicep_files():
        text = path.read_text()
        for name in FLEX_FORBIDDEN:
            assert not re.search(rf"\b{name}\s*:", text), f"{path.name} sets {name}"


def test_platform_settings_the_code_reads_are_ones_bicep_sets_or_derives() -> None:
    deployed = set(bicep.app_settings())
    # The loader reads the connection string OR the identity-based form; Bicep must give the latter.
    identity_form = {n for n in PLATFORM_SETTINGS if n.startswith("AzureWebJobsStorage__") and n.endswith("Uri")}
    assert identity_form <= deployed
    assert {"AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"} <= deployed
    assert "AzureWebJobsStorage" not in deployed, "no connection string exists: shared keys are off"


@pytest.mark.parametrize("name", sorted(FUNCTION_SETTINGS))
def test_each_setting_has_its_own_documented_parameter_with_the_code_default(name: str) -> None:
    main = bicep.parse(bicep.MAIN)
    value = bicep.app_settings()[name]
    spec = SETTINGS[name]
    param = _param_name(name)
    if value != param:
        # Derived from what the deployment creates (the vault URL) or from the tenant: no parameter default.
        assert name in {"OUTBOX_KEYVAULT_URL", "OUTBOX_TENANT_ID"}, f"{name} is set from {value!r}, not {param}"
        return
    declared = main["parameters"][param]
    description = bicep.decorator(declared, "description") or ""
    assert description.startswith(f"{name}:"), f"{param}'s description should start with '{name}:'"
    default = declared["default"]
    if spec.default is None:
        assert name in {"OUTBOX_QUEUE", "OUTBOX_CLIENT_ID", "OUTBOX_CERT_NAME"}, name
        return
    assert str(default) == spec.default, f"{param} defaults to {default!r}, the code to {spec.default!r}"


def _sample_environment() -> dict[str, str]:
    """The app settings as Azure would hold them after `azd up` with default parameters."""
    main = bicep.parse(bicep.MAIN)
    client_id = "11111111-2222-3333-4444-555555555555"
    derived = {
        "OUTBOX_KEYVAULT_URL": "https://kv-abc123.vault.azure.net/",
        "OUTBOX_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "AzureWebJobsStorage__blobServiceUri": "https://stabc123.blob.core.windows.net/",
        "AzureWebJobsStorage__queueServiceUri": "https://stabc123.queue.core.windows.net/",
        "AzureWebJobsStorage__tableServiceUri": "https://stabc123.table.core.windows.net/",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    }
    env: dict[str, str] = {}
    for name, expr in bicep.app_settings().items():
        if name in derived:
            env[name] = derived[name]
        elif isinstance(expr, str) and bicep.symbol_kind(main, expr) == "param":
            env[name] = str(main["parameters"][expr]["default"] or "")
        elif expr == "identityClientId" or (isinstance(expr, str) and "${identityClientId}" in expr):
            env[name] = expr.replace("${identityClientId}", client_id) if "${" in expr else client_id
        elif isinstance(expr, str):
            env[name] = expr
        else:
            raise AssertionError(f"no sample value for {name}: {expr!r}")
    return env


def test_the_deployed_settings_load_with_the_identity_based_storage_form() -> None:
    """What Bicep deploys is accepted by the one settings loader the function uses."""
    env = _sample_environment()
    settings = load_settings(environ=env)
    assert settings.queue == "outbox"
    assert settings.poison_queue == "outbox-poison"
    assert settings.storage.connection_string is None
    assert settings.storage.queue_service_uri == env["AzureWebJobsStorage__queueServiceUri"]
    assert settings.storage.table_service_uri == env["AzureWebJobsStorage__tableServiceUri"]
    assert settings.storage.blob_service_uri == env["AzureWebJobsStorage__blobServiceUri"]
    assert settings.storage.credential_kind == "managedidentity"
    assert settings.storage.client_id == env["AZURE_CLIENT_ID"] == env["AzureWebJobsStorage__clientId"]
    assert settings.keyvault_url == "https://kv-abc123.vault.azure.net"
    assert settings.cert_name == "outbox-sender"
    # Until the email team's app exists the client id is empty, and sending says which settings are missing.
    assert settings.client_id is None


def test_worker_finds_the_app_with_the_deployed_script_file_name() -> None:
    """The Python worker imports PYTHON_SCRIPT_FILE_NAME from the app root, or indexes nothing at all."""
    deployed = bicep.app_settings()["PYTHON_SCRIPT_FILE_NAME"]
    assert deployed == _example_values()["PYTHON_SCRIPT_FILE_NAME"]
    assert re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py", deployed), deployed
    assert (bicep.ROOT / deployed).is_file()


def test_application_insights_authenticates_as_the_function_identity() -> None:
    env: dict[str, Any] = bicep.app_settings()
    assert env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert env["AZURE_CLIENT_ID"] == "identityClientId"
    assert env["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"
