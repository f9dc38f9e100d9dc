"""The templates parse, wire together, and lock the resources down (read offline with pycep-parser)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep

FILES = bicep.bicep_files()
APP_MODULES = {"alerts", "function", "identity", "keyvault", "monitoring", "rbac", "storage"}


def _rel(path: Path) -> str:
    return str(path.relative_to(bicep.ROOT))


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_template_parses(path: Path) -> None:
    doc = bicep.parse(path)
    assert doc["resources"] or doc.get("modules"), f"{path.name} declares nothing"


def test_layout_is_main_plus_plain_modules() -> None:
    assert {p.stem for p in (bicep.INFRA / "app").glob("*.bicep")} == APP_MODULES
    for path in FILES:
        text = path.read_text()
        # Registry modules cannot be restored or scanned offline; everything is a plain resource.
        assert not re.search(r"'\s*(br|ts)[:/]", text), f"{path.name} uses a registry module"


def test_modules_get_every_parameter_they_need_and_nothing_else() -> None:
    main = bicep.parse(bicep.MAIN)
    for symbol, module in main["modules"].items():
        target = (bicep.INFRA / module["detail"]["path"]).resolve()
        assert target.is_file(), f"module {symbol}: {target} missing"
        declared = bicep.parse(target)["parameters"]
        passed = set(module["config"]["params"])
        assert passed - set(declared) == set(), f"module {symbol} passes unknown parameters"
        required = {name for name, p in declared.items() if p["default"] is None}
        assert required - passed == set(), f"module {symbol} misses required parameters"
        assert module["config"]["scope"] == "rg", f"module {symbol} must deploy into the resource group"


def test_module_outputs_used_by_main_exist() -> None:
    main = bicep.parse(bicep.MAIN)
    outputs = {
        symbol: set(bicep.parse((bicep.INFRA / m["detail"]["path"]).resolve()).get("outputs", {}))
        for symbol, m in main["modules"].items()
    }
    text = bicep.MAIN.read_text()
    for symbol, name in re.findall(r"\b(\w+)\.outputs\.(\w+)", text):
        assert name in outputs[symbol], f"main.bicep reads {symbol}.outputs.{name}, which the module does not output"


def test_main_is_an_azd_subscription_template() -> None:
    main = bicep.parse(bicep.MAIN)
    text = bicep.MAIN.read_text()
    assert main["globals"]["scope"]["value"] == "subscription"
    assert "toLower(uniqueString(subscription().id, environmentName, location))" in text
    assert bicep.decorator(main["parameters"]["location"], "metadata") == {"azd": {"type": "location"}}
    rg = bicep.resource(main, "rg")
    assert rg["type"] == "Microsoft.Resources/resourceGroups"
    assert bicep.var_value(main, "tags") == {"'azd-env-name'": "environmentName"}
    # Every resource name is an abbreviation plus the resource token.
    abbreviations = json.loads((bicep.INFRA / "abbreviations.json").read_text())
    for key in re.findall(r"abbrs\.(\w+)", text):
        assert key in abbreviations, f"abbreviations.json has no {key}"
    for name in main["outputs"]:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"output {name} is not UPPER_SNAKE"


def _api_date(version: str) -> str:
    return version[:10]


# The newest stable versions of these types are older than the cut-off.
OLDER_LATEST = {
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/diagnosticSettings": "2021-05-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
}


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_api_versions_are_recent(path: Path) -> None:
    for symbol, res in bicep.parse(path)["resources"].items():
        version = _api_date(res["api_version"])
        floor = OLDER_LATEST.get(res["type"], "2023-01-01")
        assert version >= floor, f"{path.name}:{symbol} uses {res['type']}@{res['api_version']}"


# ---------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------


def _storage() -> dict[str, Any]:
    return bicep.parse(bicep.module_path("storage"))


def test_storage_account_is_locked_down() -> None:
    props = bicep.body(bicep.resource(_storage(), "storage"))["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowCrossTenantReplication"] is False


def test_storage_holds_the_queues_table_and_containers_outbox_uses() -> None:
    doc = _storage()
    names = {
        (res["type"].rsplit("/", 1)[-1], bicep.body(res)["name"])
        for res in doc["resources"].values()
    }
    assert ("queues", "queueName") in names
    assert ("queues", "poisonQueueName") in names
    assert ("tables", "statusTableName") in names
    assert ("containers", "attachmentsContainerName") in names
    assert ("containers", "deploymentContainerName") in names
    assert ("containers", "containerName") in names  # the host's containers, in a loop
    for symbol, res in bicep.resources_of_type(doc, "Microsoft.Storage/storageAccounts/blobServices/containers").items():
        assert bicep.body(res)["properties"]["publicAccess"] == "None", symbol

    main = bicep.parse(bicep.MAIN)
    params = main["modules"]["storage"]["config"]["params"]
    assert params["queueName"] == "outboxQueue"
    assert params["poisonQueueName"] == "poisonQueueName"
    assert params["statusTableName"] == "outboxStatusTable"
    assert params["attachmentsContainerName"] == "outboxAttachmentsContainer"
    assert params["deploymentContainerName"] == "deploymentContainerName"
    assert bicep.var_value(main, "hostContainerNames") == ["azure-webjobs-hosts", "azure-webjobs-secrets"]


def test_queue_writes_are_logged_for_the_poison_alert() -> None:
    doc = _storage()
    diag = bicep.body(bicep.resource(doc, "queueDiagnostics"))
    assert diag["scope"] == "queueService"
    assert diag["properties"]["workspaceId"] == "logAnalyticsWorkspaceId"
    assert {"category": "StorageWrite", "enabled": True} in diag["properties"]["logs"]


# ---------------------------------------------------------------------------------------------------------
# Function app
# ---------------------------------------------------------------------------------------------------------


def _function() -> dict[str, Any]:
    return bicep.parse(bicep.module_path("function"))


def test_plan_is_flex_consumption_on_linux() -> None:
    plan = bicep.body(bicep.resource(_function(), "plan"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_site_is_https_only_tls12_ftp_off_and_runs_as_the_user_assigned_identity() -> None:
    site = bicep.body(bicep.resource(_function(), "site"))
    props = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["scmMinTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]


def test_basic_auth_publishing_is_off() -> None:
    doc = _function()
    policies = bicep.resources_of_type(doc, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {bicep.body(p)["name"]: bicep.body(p)["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_flex_config_runtime_scale_and_identity_based_deployment_storage() -> None:
    config = bicep.body(bicep.resource(_function(), "site"))["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert config["scaleAndConcurrency"] == {
        "instanceMemoryMB": "instanceMemoryMB",
        "maximumInstanceCount": "maximumInstanceCount",
    }
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"].endswith("${deploymentContainerName}")
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    main = bicep.parse(bicep.MAIN)
    assert main["modules"]["functionApp"]["config"]["params"]["deploymentContainerName"] == "deploymentContainerName"
    assert main["modules"]["functionApp"]["config"]["params"]["pythonVersion"] == "pythonVersion"
    assert main["parameters"]["pythonVersion"]["default"] == "3.11"


def test_identity_based_storage_connection_points_at_the_account_endpoints() -> None:
    settings = bicep.app_settings()
    for service in ("blob", "queue", "table"):
        chain = bicep.accessor_chain(settings[f"AzureWebJobsStorage__{service}ServiceUri"])
        assert chain == ["storage", "properties", "primaryEndpoints", service]
    storage = bicep.resource(_function(), "storage")
    assert storage["existing"] is True and bicep.body(storage)["name"] == "storageAccountName"


def test_azd_finds_the_site_by_its_service_tag() -> None:
    tags = bicep.body(bicep.resource(_function(), "site"))["tags"]
    call = bicep.function_call(tags)
    assert call and call[0] == "union"
    service_tag = call[1]["arg_2"]["'azd-service-name'"]
    azure_yaml = (bicep.ROOT / "azure.yaml").read_text()
    assert re.search(rf"^  {service_tag}:\n    project: \.\n    language: python\n    host: function\n", azure_yaml, re.M)


# ---------------------------------------------------------------------------------------------------------
# Key Vault, monitoring, alert
# ---------------------------------------------------------------------------------------------------------


def test_key_vault_uses_rbac_with_purge_protection() -> None:
    props = bicep.body(bicep.resource(bicep.parse(bicep.module_path("keyvault")), "vault"))["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props


def test_monitoring_has_local_auth_off() -> None:
    doc = bicep.parse(bicep.module_path("monitoring"))
    insights = bicep.body(bicep.resource(doc, "applicationInsights"))["properties"]
    assert insights["DisableLocalAuth"] is True
    assert bicep.accessor_chain(insights["WorkspaceResourceId"]) == ["logAnalytics", "id"]
    workspace = bicep.body(bicep.resource(doc, "logAnalytics"))["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_poison_alert_counts_puts_on_the_poison_queue() -> None:
    doc = bicep.parse(bicep.module_path("alerts"))
    query = bicep.var_value(doc, "poisonQuery")
    assert query.startswith("StorageQueueLogs")
    assert 'OperationName == "PutMessage"' in query
    assert "/${poisonQueueName}/messages" in query
    rule = bicep.body(bicep.resource(doc, "poisonAlert"))
    assert rule["identity"] == {"type": "SystemAssigned"}
    props = rule["properties"]
    assert props["scopes"] == ["logAnalyticsWorkspaceId"]
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["query"] == "poisonQuery"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    main = bicep.parse(bicep.MAIN)
    params = main["modules"]["alerts"]["config"]["params"]
    assert params["poisonQueueName"] == "poisonQueueName"
    # The alert reads the workspace the queue log goes to.
    assert bicep.accessor_chain(params["logAnalyticsWorkspaceId"]) == ["monitoring", "outputs", "logAnalyticsWorkspaceId"]
    assert bicep.accessor_chain(main["modules"]["storage"]["config"]["params"]["logAnalyticsWorkspaceId"]) == [
        "monitoring", "outputs", "logAnalyticsWorkspaceId",
    ]


# ---------------------------------------------------------------------------------------------------------
# Outputs and secrets
# ---------------------------------------------------------------------------------------------------------

SECRET_WORDS = re.compile(r"(?i)(^|_)(key|secret|password|token|sas)(_|$)")


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_no_secret_in_any_output(path: Path) -> None:
    doc = bicep.parse(path)
    secure_params = {n for n, p in doc["parameters"].items() if bicep.decorator(p, "secure") is not None}
    for name, out in doc.get("outputs", {}).items():
        assert not any(d.get("type") == "secure" for d in out.get("decorators", [])), name
        assert not SECRET_WORDS.search(name.replace("KEY_VAULT", "VAULT")), f"{path.name}: output {name} sounds like a secret"
        value = out["value"]
        calls = bicep.functions_in(value)
        assert not {c for c in calls if c.startswith("list")}, f"{path.name}: output {name} calls {calls}"
        text = json.dumps(value)
        assert not re.search(r"(?i)list(Keys|Secrets|AccountSas|ServiceSas)|AccountKey|SharedAccessSignature", text), name
        assert not secure_params & bicep.strings_in(value), f"{path.name}: output {name} returns a secure parameter"


def test_no_template_reads_a_storage_key() -> None:
    for path in FILES:
        assert not re.search(r"listKeys|AccountKey=|listAccountSas", path.read_text()), path.name


# ---------------------------------------------------------------------------------------------------------
# azd files
# ---------------------------------------------------------------------------------------------------------


def test_main_parameters_hold_only_azd_substitutions_for_real_parameters() -> None:
    data = json.loads((bicep.INFRA / "main.parameters.json").read_text())
    main = bicep.parse(bicep.MAIN)
    for name, entry in data["parameters"].items():
        assert name in main["parameters"], f"main.parameters.json sets unknown parameter {name}"
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name}: {entry['value']!r}"
    required = {n for n, p in main["parameters"].items() if p["default"] is None}
    assert required <= set(data["parameters"]), "every parameter without a default comes from azd"
    assert data["parameters"]["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert data["parameters"]["location"]["value"] == "${AZURE_LOCATION}"
    assert data["parameters"]["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert data["parameters"]["outboxClientId"]["value"] == "${OUTBOX_CLIENT_ID}"


def test_azure_yaml_deploys_this_folder_as_a_python_function() -> None:
    text = (bicep.ROOT / "azure.yaml").read_text()
    assert re.search(r"^name: outbox$", text, re.M)
    assert "host: function" in text and "language: python" in text and "project: ." in text


def test_deploy_guide_documents_every_azd_variable_and_script() -> None:
    guide = (bicep.ROOT / "docs" / "deploy.md").read_text()
    data = json.loads((bicep.INFRA / "main.parameters.json").read_text())
    for entry in data["parameters"].values():
        variable = re.match(r"\$\{([A-Z0-9_]+)", entry["value"]).group(1)
        assert f"`{variable}`" in guide, f"docs/deploy.md does not explain {variable}"
    for script in (bicep.INFRA / "scripts").iterdir():
        if not script.name.startswith("_"):
            assert script.name in guide, f"docs/deploy.md does not mention {script.name}"
    assert "not run here" in guide.lower()


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_comment_runs_inside_blocks_stay_within_what_checkovs_parser_reads(path: Path) -> None:
    """checkov pins pycep-parser 0.5.1, which rejects more than 4 comment lines in a row inside an object
    (the checkov test would report a parse error; this says where, without needing checkov)."""
    run = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        indented_comment = line.startswith(" ") and line.lstrip().startswith("//")
        run = run + 1 if indented_comment else 0
        assert run <= 4, f"{path.name}:{lineno}: {run} comment lines in a row inside a block"
