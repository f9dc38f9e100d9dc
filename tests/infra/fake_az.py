"""A stand-in for the Azure CLI, just wide enough to run infra/scripts/*.sh end to end without a tenant.

It keeps a small Entra + Key Vault state in a JSON file (FAKE_AZ_STATE), answers the commands the scripts
use with Graph- and CLI-shaped JSON, evaluates `--query` with real JMESPath (so the scripts' queries are
checked too), honours `-o tsv|json|none`, and appends every change it makes to state["changes"].
An unknown command or option fails loudly: a script that starts using something new must teach it here.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import uuid
from pathlib import Path
from typing import Any

import jmespath

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"

# Application permissions of the two APIs (ids are the fake's own), plus a delegated-only decoy that the
# scripts' queries must not pick.
RESOURCE_SPS = [
    {
        "appId": GRAPH_APP_ID,
        "id": "aaaaaaaa-0000-0000-0000-000000000003",
        "displayName": "Microsoft Graph",
        "appRoles": [
            {"value": "Mail.Send", "id": "b633e1c5-b582-4048-a93e-9f11b44c7e96", "allowedMemberTypes": ["Application"]},
            {"value": "Mail.ReadBasic", "id": "693c5e45-0940-467d-9b8a-1022fb9d42ef", "allowedMemberTypes": ["Application"]},
            {"value": "Mail.ReadWrite", "id": "e2a3a72e-5f79-4c64-b1b1-878b674786c9", "allowedMemberTypes": ["Application"]},
        ],
        "oauth2PermissionScopes": [
            {"value": "Mail.Send", "id": "e383f46e-2787-4529-855e-0e479a3ffac0"},
            {"value": "Mail.Send.Shared", "id": "a367ab51-6b49-43bf-a716-a1fb06d2a174"},
            {"value": "Mail.ReadBasic", "id": "a4b8392a-d8d1-4954-a029-8e668a39a170"},
            {"value": "User.Read", "id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d"},
            {"value": "offline_access", "id": "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"},
        ],
    },
    {
        "appId": EXCHANGE_APP_ID,
        "id": "aaaaaaaa-0000-0000-0000-000000000002",
        "displayName": "Office 365 Exchange Online",
        "appRoles": [
            {"value": "SMTP.SendAsApp", "id": "7146-user-decoy", "allowedMemberTypes": ["User"]},
            {"value": "SMTP.SendAsApp", "id": "2ad0a3c9-8b1d-4c6a-9f1f-000000000001", "allowedMemberTypes": ["Application"]},
        ],
        "oauth2PermissionScopes": [{"value": "SMTP.Send", "id": "258f6531-6087-4cc4-bb90-092c5fb3ed3f"}],
    },
]

# Options that take no value, per command (every other option takes exactly one).
FLAGS = {
    ("ad", "app", "credential", "list"): {"--cert"},
    ("ad", "app", "credential", "delete"): {"--cert"},
    ("ad", "app", "credential", "reset"): {"--append"},
}

# Options each command accepts; anything else is an error, as a typo would be in the real CLI.
KNOWN_OPTIONS: dict[tuple[str, ...], set[str]] = {
    ("account", "show"): {"--query"},
    ("cloud", "show"): {"--query"},
    ("ad", "app", "list"): {"--display-name", "--query"},
    ("ad", "app", "create"): {"--display-name", "--sign-in-audience", "--query", "--is-fallback-public-client",
                              "--public-client-redirect-uris"},
    ("ad", "app", "show"): {"--id", "--query"},
    ("ad", "app", "update"): {"--id", "--is-fallback-public-client", "--public-client-redirect-uris"},
    ("keyvault", "secret", "show"): {"--vault-name", "--name", "--query"},
    ("keyvault", "secret", "set"): {"--vault-name", "--name", "--file"},
    ("ad", "sp", "show"): {"--id", "--query"},
    ("ad", "sp", "create"): {"--id", "--query"},
    ("keyvault", "certificate", "show"): {"--vault-name", "--name", "--query"},
    ("keyvault", "certificate", "create"): {"--vault-name", "--name", "--policy"},
    ("ad", "app", "credential", "list"): {"--id", "--cert", "--query"},
    ("ad", "app", "credential", "reset"): {"--id", "--keyvault", "--cert", "--append"},
    ("ad", "app", "credential", "delete"): {"--id", "--key-id", "--cert"},
    ("ad", "app", "permission", "list"): {"--id", "--query"},
    ("ad", "app", "permission", "add"): {"--id", "--api", "--api-permissions"},
    ("rest",): {"--method", "--url", "--headers", "--body", "--query"},
}


class CliError(Exception):
    pass


def _state_path() -> Path:
    return Path(os.environ["FAKE_AZ_STATE"])


def new_state(tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47") -> dict[str, Any]:
    return {
        "tenantId": tenant_id,
        "subscriptionId": "00000000-1111-2222-3333-444444444444",
        "apps": [],
        "sps": [dict(sp) for sp in RESOURCE_SPS],
        "vaults": {},
        "assignments": [],
        "changes": [],
    }


def _parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, str | bool], str]:
    words: list[str] = []
    i = 0
    while i < len(argv) and not argv[i].startswith("-"):
        words.append(argv[i])
        i += 1
    command = tuple(words)
    if command not in KNOWN_OPTIONS:
        raise CliError(f"'{' '.join(words)}' is not a command the fake knows")
    options: dict[str, str | bool] = {}
    output = "json"
    flags = FLAGS.get(command, set())
    while i < len(argv):
        name = argv[i]
        if name in ("-o", "--output"):
            output = argv[i + 1]
            i += 2
            continue
        if name not in KNOWN_OPTIONS[command]:
            raise CliError(f"unrecognized arguments: {name} (command: az {' '.join(words)})")
        if name in flags:
            options[name] = True
            i += 1
        else:
            if i + 1 >= len(argv):
                raise CliError(f"argument {name}: expected one argument")
            options[name] = argv[i + 1]
            i += 2
    return command, options, output


def _b64_thumb(hex_thumb: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_thumb)).decode()


def _app(state: dict[str, Any], app_id: str) -> dict[str, Any]:
    for app in state["apps"]:
        if app["appId"] == app_id:
            return app
    raise CliError(f"Resource '{app_id}' does not exist or one of its queried reference-property objects are not present.")


def _sp(state: dict[str, Any], ident: str) -> dict[str, Any] | None:
    for sp in state["sps"]:
        if ident in (sp["appId"], sp["id"]):
            return sp
    return None


def _vault(state: dict[str, Any], name: str) -> dict[str, Any]:
    return state["vaults"].setdefault(name, {"certificates": {}})


def _current_cert(state: dict[str, Any], vault: str, name: str) -> dict[str, Any] | None:
    versions = _vault(state, vault)["certificates"].get(name) or []
    return versions[-1] if versions else None


def _change(state: dict[str, Any], what: str, **detail: Any) -> None:
    state["changes"].append({"what": what, **detail})


def run(state: dict[str, Any], command: tuple[str, ...], o: dict[str, Any]) -> Any:
    if command == ("account", "show"):
        return {"id": state["subscriptionId"], "tenantId": state["tenantId"], "user": {"name": "admin@contoso.example"}}
    if command == ("cloud", "show"):
        return {"name": "AzureCloud", "endpoints": {"microsoftGraphResourceId": "https://graph.microsoft.com/"}}

    if command == ("ad", "app", "list"):
        return [a for a in state["apps"] if a["displayName"] == o["--display-name"]]
    if command == ("ad", "app", "create"):
        assert o["--sign-in-audience"] == "AzureADMyOrg", "outbox's sender app is single-tenant"
        app = {"appId": str(uuid.uuid4()), "id": str(uuid.uuid4()), "displayName": o["--display-name"],
               "signInAudience": o["--sign-in-audience"], "keyCredentials": [], "requiredResourceAccess": [],
               "isFallbackPublicClient": o.get("--is-fallback-public-client") == "true",
               "publicClient": {"redirectUris": [o["--public-client-redirect-uris"]]
                                if o.get("--public-client-redirect-uris") else []}}
        state["apps"].append(app)
        _change(state, "app.create", appId=app["appId"])
        return app

    if command == ("ad", "app", "show"):
        return _app(state, o["--id"])
    if command == ("ad", "app", "update"):
        app = _app(state, o["--id"])
        if "--is-fallback-public-client" in o:
            app["isFallbackPublicClient"] = o["--is-fallback-public-client"] == "true"
        if "--public-client-redirect-uris" in o:
            app["publicClient"] = {"redirectUris": str(o["--public-client-redirect-uris"]).split()}
        _change(state, "app.update", appId=app["appId"])
        return None

    if command == ("keyvault", "secret", "show"):
        secret = _vault(state, o["--vault-name"]).setdefault("secrets", {}).get(o["--name"])
        if secret is None:
            raise CliError(f"(SecretNotFound) A secret with (name/id) {o['--name']} was not found in this key vault.")
        return {"id": f"https://{o['--vault-name']}.vault.azure.net/secrets/{o['--name']}/1", "value": secret}
    if command == ("keyvault", "secret", "set"):
        value = Path(o["--file"]).read_text()
        _vault(state, o["--vault-name"]).setdefault("secrets", {})[o["--name"]] = value
        _change(state, "secret.set", name=o["--name"])
        return None

    if command == ("ad", "sp", "show"):
        sp = _sp(state, o["--id"])
        if sp is None:
            raise CliError(f"Resource '{o['--id']}' does not exist or one of its queried reference-property objects are not present.")
        return sp
    if command == ("ad", "sp", "create"):
        app = _app(state, o["--id"])
        if _sp(state, app["appId"]):
            raise CliError("Another object with the same value for property servicePrincipalNames already exists.")
        sp = {"appId": app["appId"], "id": str(uuid.uuid4()), "displayName": app["displayName"], "appRoles": []}
        state["sps"].append(sp)
        _change(state, "sp.create", appId=app["appId"])
        return sp

    if command == ("keyvault", "certificate", "show"):
        cert = _current_cert(state, o["--vault-name"], o["--name"])
        if cert is None:
            raise CliError(f"(CertificateNotFound) A certificate with (name/id) {o['--name']} was not found in this key vault.")
        return {"name": o["--name"], "x509ThumbprintHex": cert["thumbprint"], "policy": cert["policy"]}
    if command == ("keyvault", "certificate", "create"):
        policy_arg = o["--policy"]
        policy = json.loads(Path(policy_arg[1:]).read_text() if policy_arg.startswith("@") else policy_arg)
        assert policy["keyProperties"]["exportable"] is True, "the function reads the private key: it must be exportable"
        assert policy["secretProperties"]["contentType"] == "application/x-pkcs12"
        version = {"thumbprint": secrets.token_hex(20).upper(), "policy": policy}
        _vault(state, o["--vault-name"])["certificates"].setdefault(o["--name"], []).append(version)
        _change(state, "cert.create", name=o["--name"], thumbprint=version["thumbprint"])
        return None

    if command == ("ad", "app", "credential", "list"):
        assert o.get("--cert") is True
        return [{"keyId": k["keyId"], "customKeyIdentifier": k["customKeyIdentifier"], "type": "AsymmetricX509Cert"}
                for k in _app(state, o["--id"])["keyCredentials"]]
    if command == ("ad", "app", "credential", "reset"):
        app = _app(state, o["--id"])
        cert = _current_cert(state, o["--keyvault"], o["--cert"])
        if cert is None:
            raise CliError("certificate not found in the key vault")
        key = {"keyId": str(uuid.uuid4()), "customKeyIdentifier": _b64_thumb(cert["thumbprint"])}
        if not o.get("--append"):
            app["keyCredentials"] = []  # what the real CLI does without --append: every other key is gone
        app["keyCredentials"].append(key)
        _change(state, "credential.reset", append=bool(o.get("--append")), thumbprint=cert["thumbprint"])
        return {"appId": app["appId"], "tenant": state["tenantId"]}
    if command == ("ad", "app", "credential", "delete"):
        app = _app(state, o["--id"])
        before = len(app["keyCredentials"])
        app["keyCredentials"] = [k for k in app["keyCredentials"] if k["keyId"] != o["--key-id"]]
        if len(app["keyCredentials"]) == before:
            raise CliError(f"No key credential found with keyId {o['--key-id']}")
        _change(state, "credential.delete", keyId=o["--key-id"])
        return None

    if command == ("ad", "app", "permission", "list"):
        return _app(state, o["--id"])["requiredResourceAccess"]
    if command == ("ad", "app", "permission", "add"):
        app = _app(state, o["--id"])
        role_id, _, kind = o["--api-permissions"].partition("=")
        assert kind in ("Role", "Scope"), o["--api-permissions"]
        if kind == "Scope":  # a delegated permission goes on the public client only
            assert app["isFallbackPublicClient"], "delegated permissions on an app that is not a public client"
        entry = next((r for r in app["requiredResourceAccess"] if r["resourceAppId"] == o["--api"]), None)
        if entry is None:
            entry = {"resourceAppId": o["--api"], "resourceAccess": []}
            app["requiredResourceAccess"].append(entry)
        entry["resourceAccess"].append({"id": role_id, "type": kind})
        _change(state, "permission.add", api=o["--api"], role=role_id)
        return None

    if command == ("rest",):
        url = o["--url"]
        prefix = "https://graph.microsoft.com/v1.0/servicePrincipals/"
        if not (url.startswith(prefix) and url.endswith("/appRoleAssignments")):
            raise CliError(f"the fake has no {url}")
        sp_id = url[len(prefix):-len("/appRoleAssignments")]
        if o["--method"] == "GET":
            return {"value": [a for a in state["assignments"] if a["principalId"] == sp_id]}
        if o["--method"] == "POST":
            body = json.loads(o["--body"])
            assert body["principalId"] == sp_id
            resource = _sp(state, body["resourceId"])
            assert resource and any(r["id"] == body["appRoleId"] for r in resource["appRoles"]), body
            assignment = {"id": str(uuid.uuid4()), **body}
            state["assignments"].append(assignment)
            _change(state, "consent", appRoleId=body["appRoleId"], resourceId=body["resourceId"])
            return assignment
        raise CliError(f"method {o['--method']}")
    raise CliError(f"unhandled {command}")


def _format(value: Any, output: str) -> str:
    if output == "none":
        return ""
    if output == "json":
        return json.dumps(value, indent=2) + "\n"
    if output != "tsv":
        raise CliError(f"output {output}")

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (dict, list)):
            return json.dumps(v)
        return str(v)

    if value is None:
        return ""
    rows = value if isinstance(value, list) else [value]
    lines = ["\t".join(cell(c) for c in row) if isinstance(row, list) else cell(row) for row in rows]
    return "".join(line + "\n" for line in lines)


def main(argv: list[str]) -> int:
    path = _state_path()
    state = json.loads(path.read_text())
    try:
        command, options, output = _parse(argv)
        query = options.pop("--query", None)
        result = run(state, command, options)
        if query:
            result = jmespath.search(str(query), result)
    except (CliError, AssertionError) as exc:
        path.write_text(json.dumps(state))
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1
    path.write_text(json.dumps(state))
    sys.stdout.write(_format(result, output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
