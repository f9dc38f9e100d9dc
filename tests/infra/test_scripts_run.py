"""Run the Azure CLI scripts for real against a fake `az` (tests/infra/fake_az.py): they do the seed
checklist's Entra and Key Vault steps, a second run changes nothing, a dry run changes nothing, and the
certificate rotation never leaves the app without the key the function uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep
from tests.infra.fake_az import EXCHANGE_APP_ID, GRAPH_APP_ID, new_state

SCRIPTS = bicep.INFRA / "scripts"
FAKE = Path(__file__).with_name("fake_az.py")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to run the scripts")


class Tenant:
    """A fake tenant + vault on disk, and a PATH whose only `az` is the fake (and no `azd`)."""

    def __init__(self, tmp: Path) -> None:
        self.state_file = tmp / "az-state.json"
        self.state_file.write_text(json.dumps(new_state()))
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        az = bin_dir / "az"
        az.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        az.chmod(0o755)
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FAKE_AZ_STATE": str(self.state_file),
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
        }

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def changes(self) -> list[dict[str, Any]]:
        return self.state["changes"]

    def run(self, script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(SCRIPTS / script), *args],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )
        if ok:
            assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr}"
        return proc


@pytest.fixture
def tenant(tmp_path: Path) -> Tenant:
    return Tenant(tmp_path)


def _kv(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith(" "))


def _app(tenant: Tenant) -> dict[str, Any]:
    (app,) = tenant.state["apps"]
    return app


def _declared(app: dict[str, Any]) -> dict[str, set[str]]:
    return {r["resourceAppId"]: {a["id"] for a in r["resourceAccess"]} for r in app["requiredResourceAccess"]}


def _role(api: str, value: str) -> str:
    from tests.infra.fake_az import RESOURCE_SPS

    (sp,) = [s for s in RESOURCE_SPS if s["appId"] == api]
    (role,) = [r for r in sp["appRoles"] if r["value"] == value and "Application" in r["allowedMemberTypes"]]
    return role["id"]


SETUP = ["--vault", "kv-test", "--transport", "both", "--graph-scoping", "policy", "--lookup"]


def test_new_sender_app_does_the_app_teams_steps_once(tenant: Tenant) -> None:
    out = tenant.run("new-sender-app.sh", *SETUP).stdout
    app = _app(tenant)
    values = _kv(out)
    assert values["OUTBOX_CLIENT_ID"] == app["appId"]
    assert values["OUTBOX_TENANT_ID"] == tenant.state["tenantId"]
    (sp,) = [s for s in tenant.state["sps"] if s["appId"] == app["appId"]]
    assert values["ENTERPRISE_APP_OBJECT_ID"] == sp["id"]  # what Exchange's New-ServicePrincipal needs
    (version,) = tenant.state["vaults"]["kv-test"]["certificates"]["outbox-sender"]
    assert values["CERT_THUMBPRINT"] == version["thumbprint"]
    # The app trusts exactly the vault's certificate.
    assert [k["customKeyIdentifier"] for k in app["keyCredentials"]] == [
        __import__("base64").b64encode(bytes.fromhex(version["thumbprint"])).decode()
    ]
    assert _declared(app) == {
        GRAPH_APP_ID: {_role(GRAPH_APP_ID, "Mail.Send"), _role(GRAPH_APP_ID, "Mail.ReadBasic")},
        EXCHANGE_APP_ID: {_role(EXCHANGE_APP_ID, "SMTP.SendAsApp")},
    }
    assert [c["what"] for c in tenant.changes()] == [
        "app.create", "sp.create", "cert.create", "credential.reset",
        "permission.add", "permission.add", "permission.add",
    ]
    assert all(c["append"] for c in tenant.changes() if c["what"] == "credential.reset")


def test_second_run_changes_nothing(tenant: Tenant) -> None:
    tenant.run("new-sender-app.sh", *SETUP)
    before = len(tenant.changes())
    first_app = _app(tenant)
    out = tenant.run("new-sender-app.sh", *SETUP).stdout
    assert len(tenant.changes()) == before
    assert _kv(out)["OUTBOX_CLIENT_ID"] == first_app["appId"]


def test_dry_run_changes_nothing_and_says_what_it_would_do(tenant: Tenant) -> None:
    proc = tenant.run("new-sender-app.sh", *SETUP, "--dry-run")
    assert tenant.changes() == []
    would = [line for line in proc.stderr.splitlines() if "[dry-run] would run" in line]
    assert any("ad app create" in line for line in would)
    assert any("keyvault certificate create" in line for line in would)
    assert any("credential reset" in line for line in would)


def test_rbac_scoping_declares_no_tenant_wide_graph_permission(tenant: Tenant) -> None:
    """With RBAC for Applications the Graph grant lives in Exchange, scoped; an Entra one would be tenant-wide."""
    tenant.run("new-sender-app.sh", "--vault", "kv-test")  # defaults: graph, rbac
    assert _declared(_app(tenant)) == {}


def test_two_apps_with_one_name_stop_the_script(tenant: Tenant) -> None:
    state = tenant.state
    state["apps"] = [{"appId": "a1", "id": "o1", "displayName": "outbox-sender", "keyCredentials": [],
                      "requiredResourceAccess": []}, {"appId": "a2", "id": "o2", "displayName": "outbox-sender",
                                                      "keyCredentials": [], "requiredResourceAccess": []}]
    tenant.state_file.write_text(json.dumps(state))
    proc = tenant.run("new-sender-app.sh", "--vault", "kv-test", ok=False)
    assert proc.returncode != 0 and "unique --name" in proc.stderr
    assert tenant.changes() == []


# --- consent ---------------------------------------------------------------------------------------------


def _setup(tenant: Tenant) -> dict[str, str]:
    return _kv(tenant.run("new-sender-app.sh", *SETUP).stdout)


def test_consent_grants_each_application_permission_once(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    tenant.run("grant-admin-consent.sh", "--app-id", app_id, "--permissions", "Mail.Send,SMTP.SendAsApp",
               "--graph-scoping", "policy")
    granted = {(a["resourceId"], a["appRoleId"]) for a in tenant.state["assignments"]}
    assert granted == {
        ("aaaaaaaa-0000-0000-0000-000000000003", _role(GRAPH_APP_ID, "Mail.Send")),
        ("aaaaaaaa-0000-0000-0000-000000000002", _role(EXCHANGE_APP_ID, "SMTP.SendAsApp")),
    }
    before = len(tenant.changes())
    tenant.run("grant-admin-consent.sh", "--app-id", app_id, "--permissions", "Mail.Send,SMTP.SendAsApp",
               "--graph-scoping", "policy")
    assert len(tenant.changes()) == before


def test_consent_refuses_graph_permissions_under_rbac_scoping(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    proc = tenant.run("grant-admin-consent.sh", "--app-id", app_id, "--permissions", "Mail.Send", ok=False)
    assert proc.returncode != 0 and "tenant-wide" in proc.stderr
    assert tenant.state["assignments"] == []


def test_verify_only_reports_a_missing_consent_without_granting(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    proc = tenant.run("grant-admin-consent.sh", "--app-id", app_id, "--permissions", "SMTP.SendAsApp",
                      "--verify-only", ok=False)
    assert proc.returncode != 0 and "MISSING: SMTP.SendAsApp" in proc.stderr
    assert tenant.state["assignments"] == []


# --- rotation --------------------------------------------------------------------------------------------


def _thumbs(tenant: Tenant) -> list[str]:
    return [k["customKeyIdentifier"] for k in _app(tenant)["keyCredentials"]]


def _b64(hex_thumb: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(hex_thumb)).decode()


def test_rotation_overlaps_old_and_new_keys_then_removes_only_the_old(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    args = ["--app-id", app_id, "--vault", "kv-test"]
    old = tenant.state["vaults"]["kv-test"]["certificates"]["outbox-sender"][-1]["thumbprint"]

    tenant.run("rotate-certificate.sh", *args)
    new = tenant.state["vaults"]["kv-test"]["certificates"]["outbox-sender"][-1]["thumbprint"]
    assert new != old
    assert _thumbs(tenant) == [_b64(old), _b64(new)], "both keys are valid while instances switch"

    before = len(tenant.changes())
    tenant.run("rotate-certificate.sh", *args)  # rotation under way: nothing new
    assert len(tenant.changes()) == before

    tenant.run("rotate-certificate.sh", *args, "--remove-old")
    assert _thumbs(tenant) == [_b64(new)]
    before = len(tenant.changes())
    tenant.run("rotate-certificate.sh", *args, "--remove-old")
    assert len(tenant.changes()) == before


def test_rotation_resumes_after_a_stop_between_vault_and_app(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    state = tenant.state
    versions = state["vaults"]["kv-test"]["certificates"]["outbox-sender"]
    versions.append({"thumbprint": "AB" * 20, "policy": versions[-1]["policy"]})  # made, never uploaded
    tenant.state_file.write_text(json.dumps(state))

    tenant.run("rotate-certificate.sh", "--app-id", app_id, "--vault", "kv-test")
    assert len(tenant.state["vaults"]["kv-test"]["certificates"]["outbox-sender"]) == 2, "no third version"
    assert _thumbs(tenant)[-1] == _b64("AB" * 20)


def test_remove_old_refuses_when_the_app_lacks_the_current_key(tenant: Tenant) -> None:
    app_id = _setup(tenant)["OUTBOX_CLIENT_ID"]
    state = tenant.state
    versions = state["vaults"]["kv-test"]["certificates"]["outbox-sender"]
    versions.append({"thumbprint": "CD" * 20, "policy": versions[-1]["policy"]})
    tenant.state_file.write_text(json.dumps(state))
    proc = tenant.run("rotate-certificate.sh", "--app-id", app_id, "--vault", "kv-test", "--remove-old", ok=False)
    assert proc.returncode != 0
    assert len(_thumbs(tenant)) == 1, "the key the function uses now was kept"


def test_scripts_print_their_usage(tenant: Tenant) -> None:
    for script in ("new-sender-app.sh", "grant-admin-consent.sh", "rotate-certificate.sh"):
        out = tenant.run(script, "--help").stdout
        assert "Usage:" in out and "shellcheck" not in out, script
    assert os.access(SCRIPTS / "new-sender-app.sh", os.X_OK)


# ---------------------------------------------------------------------------------------------------------
# Delegated sending: the public client app and the sign-in key
# ---------------------------------------------------------------------------------------------------------


def _scope(api: str, value: str) -> str:
    from tests.infra.fake_az import RESOURCE_SPS

    (sp,) = [s for s in RESOURCE_SPS if s["appId"] == api]
    (scope,) = [p for p in sp["oauth2PermissionScopes"] if p["value"] == value]
    return scope["id"]


def test_delegated_app_is_a_public_client_with_delegated_permissions_and_no_credential(tenant: Tenant) -> None:
    proc = tenant.run("register-delegated-app.sh")
    app = _app(tenant)
    assert app["isFallbackPublicClient"] is True
    assert app["publicClient"]["redirectUris"] == ["http://localhost"]
    assert app["keyCredentials"] == []  # no secret, no certificate: the seed's public client
    declared = {r["resourceAppId"]: {a["id"]: a["type"] for a in r["resourceAccess"]} for r in app["requiredResourceAccess"]}
    assert declared[GRAPH_APP_ID] == {_scope(GRAPH_APP_ID, v): "Scope" for v in
                                      ("Mail.Send", "Mail.ReadBasic", "Mail.Send.Shared", "User.Read", "offline_access")}
    assert declared[EXCHANGE_APP_ID] == {_scope(EXCHANGE_APP_ID, "SMTP.Send"): "Scope"}
    assert _kv(proc.stdout)["OUTBOX_DELEGATED_CLIENT_ID"] == app["appId"]
    before = len(tenant.changes())
    tenant.run("register-delegated-app.sh")
    assert len(tenant.changes()) == before  # a second run changes nothing


def test_delegated_app_dry_run_changes_nothing(tenant: Tenant) -> None:
    proc = tenant.run("register-delegated-app.sh", "--dry-run")
    assert tenant.changes() == []
    assert "--is-fallback-public-client" in proc.stderr and "=Scope" in proc.stderr


def test_signin_key_is_made_once_and_never_replaced(tenant: Tenant) -> None:
    import base64

    tenant.run("create-signin-key.sh", "--vault", "kv-test")
    key = tenant.state["vaults"]["kv-test"]["secrets"]["outbox-signin-key"]
    assert len(base64.b64decode(key, validate=True)) == 32
    proc = tenant.run("create-signin-key.sh", "--vault", "kv-test")
    assert tenant.state["vaults"]["kv-test"]["secrets"]["outbox-signin-key"] == key  # replacing it would lock everyone out
    assert "left alone" in proc.stderr
    assert [c["what"] for c in tenant.changes()] == ["secret.set"]
