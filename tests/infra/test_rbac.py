"""Least privilege, read from the templates: every role assignment, its role, its scope, its principal.

The expected table below IS the access model: a new assignment, a broader scope or a different role
fails here until the table (and docs/deploy.md) say why.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import bicep

ROLE_IDS = {
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Table Data Reader": "76199698-9eea-4c19-bc75-cec21354c6b6",
    "Key Vault Certificate User": "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Log Analytics Reader": "73c42c96-874c-492b-b04d-ab87d138a893",
}
ROLE_NAMES = {v: k for k, v in ROLE_IDS.items()}

# Roles that would give far more than outbox needs; none may appear anywhere in the templates.
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
}

# (principal, role, scope resource type, scope name) as rbac.bicep names them. "[*]" marks a loop.
EXPECTED_RBAC = {
    # The function identity: only what it uses.
    ("functionPrincipalId", "Storage Queue Data Contributor", "queues", "queueName"),
    ("functionPrincipalId", "Storage Queue Data Contributor", "queues", "poisonQueueName"),
    ("functionPrincipalId", "Storage Table Data Contributor", "tables", "statusTableName"),
    ("functionPrincipalId", "Storage Blob Data Contributor", "containers", "attachmentsContainerName"),
    ("functionPrincipalId", "Storage Blob Data Contributor", "containers", "deploymentContainerName"),
    ("functionPrincipalId", "Storage Blob Data Contributor", "containers", "slotsContainerName"),
    ("functionPrincipalId", "Storage Blob Data Contributor", "containers", "hostContainerNames[*]"),
    ("functionPrincipalId", "Key Vault Certificate User", "vaults", "keyVaultName"),
    # Delegated sign-ins (sealed MSAL caches): read and write back after a refresh; the sealing key is a
    # secret the Certificate User role above already reads.
    ("functionPrincipalId", "Storage Blob Data Contributor", "containers", "signinContainerName"),
    ("functionPrincipalId", "Monitoring Metrics Publisher", "components", "applicationInsightsName"),
    # Producers: enqueue on the outbox queue only; attachment writers: the attachment container only.
    ("producerPrincipalIds[*]", "Storage Queue Data Message Sender", "queues", "queueName"),
    ("attachmentWriterPrincipalIds[*]", "Storage Blob Data Contributor", "containers", "attachmentsContainerName"),
    # The operator who ran azd: the certificate, and `outbox poison requeue|purge` (poison queue, a put on the
    # outbox queue, the status row reset, the oversized original parked with the attachments).
    ("operatorPrincipalId", "Key Vault Certificates Officer", "vaults", "keyVaultName"),
    ("operatorPrincipalId", "Storage Queue Data Contributor", "queues", "poisonQueueName"),
    ("operatorPrincipalId", "Storage Queue Data Message Sender", "queues", "queueName"),
    ("operatorPrincipalId", "Storage Table Data Contributor", "tables", "statusTableName"),
    ("operatorPrincipalId", "Storage Blob Data Contributor", "containers", "attachmentsContainerName"),
    # `outbox login | accounts | logout`: write the sign-ins, read the key that seals them (never create it).
    ("operatorPrincipalId", "Storage Blob Data Contributor", "containers", "signinContainerName"),
    ("operatorPrincipalId", "Key Vault Secrets User", "vaults", "keyVaultName"),
}


def _loop(res: dict[str, Any]) -> dict[str, Any] | None:
    return res["config"]["loop_type"]["detail"] if bicep.is_loop(res) else None


def _role_id(doc: dict[str, Any], role_definition: Any) -> str:
    call = bicep.function_call(role_definition)
    assert call and call[0] == "subscription_resource_id", "roleDefinitionId must be subscriptionResourceId(...)"
    assert call[1]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    role_id = bicep.literal_or_var(doc, call[1]["resource_name_1"])
    assert isinstance(role_id, str) and bicep.GUID.match(role_id), role_id
    return role_id


def _principal(res: dict[str, Any], principal: str) -> str:
    loop = _loop(res)
    if loop and principal == loop["item_name"]:
        return f"{loop['array_name']}[*]"
    return principal


def _scope(doc: dict[str, Any], res: dict[str, Any]) -> tuple[str, str, str]:
    """(symbol, short resource type, name expression) of the resource an assignment is scoped to."""
    scope = bicep.body(res)["scope"]
    symbol = scope if isinstance(scope, str) else bicep.accessor_chain(scope)[0]
    target = doc["resources"][symbol]
    short_type = target["type"].rsplit("/", 1)[-1]
    name = bicep.body(target)["name"]
    loop = _loop(target)
    if loop and name == loop["item_name"]:
        name = f"{loop['array_name']}[*]"
    return symbol, short_type, name


def _assignments(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return bicep.resources_of_type(doc, "Microsoft.Authorization/roleAssignments")


def test_every_role_assignment_is_exactly_the_access_model() -> None:
    doc = bicep.parse(bicep.module_path("rbac"))
    found = set()
    for res in _assignments(doc).values():
        props = bicep.body(res)["properties"]
        role = ROLE_NAMES.get(_role_id(doc, props["roleDefinitionId"]), "unknown role")
        _symbol, short_type, name = _scope(doc, res)
        found.add((_principal(res, props["principalId"]), role, short_type, name))
    assert found == EXPECTED_RBAC, (
        f"unexpected: {sorted(found - EXPECTED_RBAC)}; missing: {sorted(EXPECTED_RBAC - found)}"
    )


def test_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    """Deterministic names: re-running azd never creates a duplicate assignment."""
    for path in bicep.bicep_files():
        doc = bicep.parse(path)
        for symbol, res in _assignments(doc).items():
            b = bicep.body(res)
            call = bicep.function_call(b["name"])
            assert call and call[0] == "guid", f"{path.name}:{symbol} name is not guid(...)"
            args = call[1]
            scope_symbol = _scope(doc, res)[0]
            assert bicep.accessor_chain(args["base_string"])[0] == scope_symbol, f"{symbol}: guid must start with the scope id"
            assert bicep.accessor_chain(args["base_string"])[-1] == "id"
            assert _role_id(doc, b["properties"]["roleDefinitionId"]) == bicep.literal_or_var(
                doc, args["extra_string_2"]
            ), f"{symbol}: guid must include the role it grants"
            principal = b["properties"]["principalId"]
            assert args["extra_string_1"] == principal or bicep.accessor_chain(args["extra_string_1"]), symbol


def test_operator_roles_exist_only_when_azd_knows_who_the_operator_is() -> None:
    doc = bicep.parse(bicep.module_path("rbac"))
    for symbol, res in _assignments(doc).items():
        if bicep.body(res)["properties"]["principalId"] == "operatorPrincipalId":
            cond = bicep.condition(res)
            assert cond is not None and "operatorPrincipalId" in bicep.strings_in(cond), symbol


def test_service_principals_are_declared_as_such() -> None:
    """principalType avoids replication-delay failures right after the identity is created."""
    doc = bicep.parse(bicep.module_path("rbac"))
    for symbol, res in _assignments(doc).items():
        props = bicep.body(res)["properties"]
        expected = "operatorPrincipalType" if props["principalId"] == "operatorPrincipalId" else "ServicePrincipal"
        assert props.get("principalType") == expected, symbol


def test_no_assignment_on_the_account_the_group_or_the_subscription() -> None:
    for path in bicep.bicep_files():
        doc = bicep.parse(path)
        for symbol, res in _assignments(doc).items():
            scope = bicep.body(res).get("scope")
            assert scope is not None, f"{path.name}:{symbol} has no scope (it would apply to the whole resource group)"
            _s, short_type, _n = _scope(doc, res)
            assert short_type not in {"storageAccounts", "resourceGroups", "subscriptions"}, f"{path.name}:{symbol}"


def test_no_broad_role_anywhere() -> None:
    for path in bicep.bicep_files():
        text = path.read_text()
        for role_id, name in BROAD_ROLES.items():
            assert role_id not in text, f"{path.name} grants {name}"


def test_main_wires_the_identity_the_app_runs_as_to_the_roles() -> None:
    main = bicep.parse(bicep.MAIN)
    fn = main["modules"]["functionApp"]["config"]["params"]
    rbac = main["modules"]["rbac"]["config"]["params"]
    assert bicep.accessor_chain(fn["identityId"]) == ["appIdentity", "outputs", "id"]
    assert bicep.accessor_chain(fn["identityClientId"]) == ["appIdentity", "outputs", "clientId"]
    assert bicep.accessor_chain(rbac["functionPrincipalId"]) == ["appIdentity", "outputs", "principalId"]
    # The queue the producers may write to is the queue the function reads.
    assert rbac["queueName"] == "outboxQueue"
    assert bicep.var_value(main, "outboxSettings")["OUTBOX_QUEUE"] == "outboxQueue"
    assert rbac["poisonQueueName"] == "poisonQueueName"
    assert bicep.var_value(main, "poisonQueueName") == "${outboxQueue}-poison"
    assert rbac["statusTableName"] == "outboxStatusTable"
    assert bicep.var_value(main, "outboxSettings")["OUTBOX_STATUS_TABLE"] == "outboxStatusTable"
    assert rbac["attachmentsContainerName"] == "outboxAttachmentsContainer"
    assert bicep.var_value(main, "outboxSettings")["OUTBOX_ATTACHMENTS_CONTAINER"] == "outboxAttachmentsContainer"
    assert rbac["operatorPrincipalId"] == "principalId"


@pytest.mark.parametrize("param", ["producerPrincipalIds", "attachmentWriterPrincipalIds"])
def test_principal_lists_drop_blanks_so_an_empty_azd_value_grants_nothing(param: str) -> None:
    rbac = bicep.parse(bicep.MAIN)["modules"]["rbac"]["config"]["params"]
    call = bicep.function_call(rbac[param])
    assert call and call[0] == "filter", f"{param} must be filtered for empty entries"
    assert "empty" in bicep.functions_in(call[1]["expression"])
    assert param in bicep.strings_in(call[1]["input_array"])


def test_poison_alert_reads_the_workspace_with_its_own_identity_only() -> None:
    doc = bicep.parse(bicep.module_path("alerts"))
    (res,) = _assignments(doc).values()
    props = bicep.body(res)["properties"]
    assert ROLE_NAMES[_role_id(doc, props["roleDefinitionId"])] == "Log Analytics Reader"
    assert bicep.accessor_chain(props["principalId"]) == ["poisonAlert", "identity", "principalId"]
    assert _scope(doc, res)[1] == "workspaces"
