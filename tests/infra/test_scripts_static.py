"""Static checks of the email team's scripts: what can be checked without a tenant, pwsh or az.

Bash: `bash -n`, shellcheck, strict mode, every change behind the dry-run guard, and only az commands the
fake CLI knows (tests/infra/test_scripts_run.py runs them). PowerShell (no pwsh here): brackets and
strings balance, strict mode, only known Exchange cmdlets with their documented parameters, every change
behind -VerifyOnly/-WhatIf and preceded by a Get-/Test- of the same thing, and every step verified.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import bicep, powershell
from tests.infra.fake_az import KNOWN_OPTIONS

SCRIPTS = bicep.INFRA / "scripts"
BASH = sorted(SCRIPTS.glob("*.sh"))
PWSH = sorted(SCRIPTS.glob("*.ps1"))
ENTRY_POINTS = [p for p in BASH if not p.name.startswith("_")]


def _id(path: Path) -> str:
    return path.name


def test_the_expected_scripts_exist() -> None:
    assert {p.name for p in ENTRY_POINTS} == {"new-sender-app.sh", "grant-admin-consent.sh", "rotate-certificate.sh",
                                             "register-delegated-app.sh", "create-signin-key.sh"}
    assert {p.name for p in PWSH} == {"scope-mailboxes.ps1"}


# ---------------------------------------------------------------------------------------------------------
# Bash
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BASH, ids=_id)
def test_bash_syntax(path: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", BASH, ids=_id)
def test_shellcheck_is_clean(path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("OUTBOX_REQUIRE_SHELLCHECK") == "1":
            pytest.fail("shellcheck is required here (OUTBOX_REQUIRE_SHELLCHECK=1) but not installed")
        pytest.skip("shellcheck not installed (apt-get install shellcheck); CI installs it")
    proc = subprocess.run([shellcheck, "-x", str(path)], capture_output=True, text=True, check=False,
                          cwd=bicep.ROOT)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=_id)
def test_bash_entry_points_are_strict_executable_and_documented(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(path, os.X_OK), f"{path.name} is not executable"
    assert "Usage:" in text and "Who runs it:" in text
    assert "--dry-run" in text
    assert 'source "${SCRIPT_DIR}/_common.sh"' in text


def _joined_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    return lines


AZ_CALL = re.compile(r"(?<![\w-])az\s+((?:[a-z]+\s+){0,3}[a-z]+)")
MUTATING = re.compile(r"(?<![\w-])az\s+(?:[a-z]+\s+)*(create|add|reset|delete|update|set)\b|--method\s+POST")


MESSAGE = re.compile(r'\b(die|log|ok|step)\s+"(?:[^"\\]|\\.)*"')


def _az_commands(path: Path) -> list[tuple[tuple[str, ...], str]]:
    found = []
    for line in _joined_lines(path.read_text()):
        line = MESSAGE.sub(r'\1 ""', line)  # messages may quote commands for the reader ("run 'az login'")
        for match in AZ_CALL.finditer(line):
            words = tuple(match.group(1).split())
            command = next((words[:n] for n in range(len(words), 0, -1) if words[:n] in KNOWN_OPTIONS), None)
            found.append((command or words, line))
    return found


@pytest.mark.parametrize("path", BASH, ids=_id)
def test_bash_uses_only_known_az_commands_and_options(path: Path) -> None:
    for command, line in _az_commands(path):
        assert command in KNOWN_OPTIONS, f"{path.name}: unknown az command {' '.join(command)!r}: {line.strip()}"
        options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split("az " + " ".join(command), 1)[1]))
        # The line may hold a second command after a pipe or in $(...); options of either are accepted.
        allowed = set().union(*(KNOWN_OPTIONS[c] for c, _ in _az_commands(path) if c in KNOWN_OPTIONS))
        assert options <= allowed | {"--output"}, f"{path.name}: {options - allowed} in {line.strip()}"


@pytest.mark.parametrize("path", BASH, ids=_id)
def test_every_change_goes_through_the_dry_run_guard(path: Path) -> None:
    for line in _joined_lines(path.read_text()):
        if MUTATING.search(line) and "die " not in line:
            assert re.search(r"(?<![\w-])change\s+az\s", line), f"{path.name}: change outside `change`: {line.strip()}"


# A change and the read that must come before it in the same script (look before you act).
AZ_LOOK_BEFORE = {
    "ad app create": "ad app list",
    "ad sp create": "ad sp show",
    "keyvault certificate create": "keyvault certificate show",
    "ad app credential reset": "ad app credential list",
    "ad app credential delete": "ad app credential list",
    "ad app permission add": "ad app permission list",
    "ad app update": "ad app show",
    "keyvault secret set": "keyvault secret show",
    "--method POST": "--method GET",
}


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=_id)
def test_bash_looks_before_it_changes(path: Path) -> None:
    text = "\n".join(_joined_lines(path.read_text()))
    common = "\n".join(_joined_lines((SCRIPTS / "_common.sh").read_text()))
    for change, look in AZ_LOOK_BEFORE.items():
        at = text.find(change)
        if at < 0:
            continue
        # The look may be in a helper of _common.sh (vault_cert_thumbprint, app_has_cert) called earlier.
        looked = look in text[:at] or (look in common and _helper_called_before(text[:at], common, look))
        assert looked, f"{path.name}: `{change}` without an earlier `{look}`"


def _helper_called_before(prefix: str, common: str, look: str) -> bool:
    helpers = re.findall(r"(?m)^(\w+)\(\) \{\n((?:.*\n)*?)\}", common + "\n")
    return any(look in body and re.search(rf"\b{name}\b", prefix) for name, body in helpers)


# ---------------------------------------------------------------------------------------------------------
# PowerShell
# ---------------------------------------------------------------------------------------------------------

COMMON_PARAMETERS = {"ErrorAction", "WarningAction", "Verbose", "Debug", "WhatIf", "Confirm", "ErrorVariable",
                     "OutVariable", "InformationAction"}

# Exchange Online cmdlets (ExchangeOnlineManagement 3.x) with the parameters this project may use,
# from their Microsoft Learn reference pages.
EXCHANGE_CMDLETS: dict[str, set[str]] = {
    "Get-ConnectionInformation": set(),
    "Get-Mailbox": {"Identity", "ResultSize"},
    "Get-ServicePrincipal": {"Identity", "Organization"},
    "New-ServicePrincipal": {"AppId", "ObjectId", "ServiceId", "DisplayName", "Organization"},
    "Get-ManagementScope": {"Identity"},
    "New-ManagementScope": {"Name", "RecipientRestrictionFilter", "RecipientRoot"},
    "Set-ManagementScope": {"Identity", "RecipientRestrictionFilter", "Name"},
    "Get-ManagementRoleAssignment": {"Identity", "Role", "RoleAssignee"},
    "New-ManagementRoleAssignment": {"Name", "App", "Role", "CustomResourceScope", "RecipientAdministrativeUnitScope"},
    "Get-DistributionGroup": {"Identity"},
    "New-DistributionGroup": {"Name", "PrimarySmtpAddress", "Type", "Members"},
    "Get-DistributionGroupMember": {"Identity", "ResultSize"},
    "Add-DistributionGroupMember": {"Identity", "Member", "BypassSecurityGroupManagerCheck"},
    "Get-ApplicationAccessPolicy": {"Identity"},
    "New-ApplicationAccessPolicy": {"AppId", "PolicyScopeGroupId", "AccessRight", "Description"},
    "Test-ApplicationAccessPolicy": {"Identity", "AppId"},
    "Get-MailboxPermission": {"Identity", "User"},
    "Add-MailboxPermission": {"Identity", "User", "AccessRights", "InheritanceType", "AutoMapping"},
    "Get-RecipientPermission": {"Identity", "Trustee", "AccessRights"},
    "Add-RecipientPermission": {"Identity", "Trustee", "AccessRights"},
    "Get-CASMailbox": {"Identity"},
    "Set-CASMailbox": {"Identity", "SmtpClientAuthenticationDisabled"},
    "Get-TransportConfig": set(),
    "Test-ServicePrincipalAuthorization": {"Identity", "Resource"},
}
CORE_CMDLETS: dict[str, set[str]] = {
    "Set-StrictMode": {"Version"},
    "Write-Host": set(),
    "Write-Warning": set(),
    "Write-Verbose": set(),
    "Where-Object": set(),
    "ForEach-Object": set(),
    "Select-Object": {"First", "Property"},
    "Sort-Object": {"Unique"},
}

# Exchange changes and the read that must come first (the script only acts on what it did not find).
PS_LOOK_BEFORE = {
    "New-ServicePrincipal": "Get-ServicePrincipal",
    "New-ManagementScope": "Get-ManagementScope",
    "Set-ManagementScope": "Get-ManagementScope",
    "New-ManagementRoleAssignment": "Get-ManagementRoleAssignment",
    "New-DistributionGroup": "Get-DistributionGroup",
    "Add-DistributionGroupMember": "Get-DistributionGroupMember",
    "New-ApplicationAccessPolicy": "Get-ApplicationAccessPolicy",
    "Add-MailboxPermission": "Get-MailboxPermission",
    "Add-RecipientPermission": "Get-RecipientPermission",
    "Set-CASMailbox": "Get-CASMailbox",
}


@pytest.fixture(scope="module", params=PWSH, ids=_id)
def ps(request: pytest.FixtureRequest) -> tuple[Path, str, str]:
    path: Path = request.param
    text = path.read_text(encoding="utf-8")
    return path, text, powershell.code_of(text)


def test_powershell_strings_comments_and_brackets_balance(ps: tuple[Path, str, str]) -> None:
    _path, _text, code = ps
    assert powershell.unbalanced(code) is None, powershell.unbalanced(code)


def test_powershell_is_strict_and_supports_whatif(ps: tuple[Path, str, str]) -> None:
    _path, text, code = ps
    assert re.search(r"\[CmdletBinding\(SupportsShouldProcess\s*=\s*\$true\)\]\s*param\(", code)
    strict = code.find("Set-StrictMode -Version Latest")
    stop = text.find("$ErrorActionPreference = 'Stop'")
    first_exchange = min(code.find(c) for c in EXCHANGE_CMDLETS if c in code)
    assert 0 < strict < first_exchange and 0 < stop < first_exchange
    assert ".SYNOPSIS" in text and ".EXAMPLE" in text and "[switch] $VerifyOnly" in text


def test_powershell_uses_only_known_cmdlets_and_parameters(ps: tuple[Path, str, str]) -> None:
    path, _text, code = ps
    own = powershell.functions_defined(code)
    for call in powershell.invocations(code):
        if call.cmdlet in own:
            continue
        known = EXCHANGE_CMDLETS.get(call.cmdlet, CORE_CMDLETS.get(call.cmdlet))
        assert known is not None, f"{path.name}:{call.line}: unknown cmdlet {call.cmdlet}"
        unknown = set(call.parameters) - known - COMMON_PARAMETERS
        assert not unknown, f"{path.name}:{call.line}: {call.cmdlet} has no parameter {unknown}"


def test_powershell_looks_before_each_change_and_guards_it(ps: tuple[Path, str, str]) -> None:
    path, _text, code = ps
    lines = code.splitlines()
    calls = powershell.invocations(code)
    for call in calls:
        if call.cmdlet not in PS_LOOK_BEFORE:
            continue
        look = PS_LOOK_BEFORE[call.cmdlet]
        assert any(c.cmdlet == look and c.line < call.line for c in calls), (
            f"{path.name}:{call.line}: {call.cmdlet} without an earlier {look}"
        )
        # Inside an Invoke-Change block, so -VerifyOnly reports instead of acting and -WhatIf is honoured.
        context = "\n".join(lines[max(0, call.line - 3):call.line])
        assert "Invoke-Change" in context, f"{path.name}:{call.line}: {call.cmdlet} outside Invoke-Change"


def test_powershell_verifies_every_step(ps: tuple[Path, str, str]) -> None:
    _path, _text, code = ps
    used = {c.cmdlet for c in powershell.invocations(code)}
    assert {"Test-ApplicationAccessPolicy", "Test-ServicePrincipalAuthorization", "Get-CASMailbox",
            "Get-MailboxPermission"} <= used
    assert "exit 1" in code


# The seed's "Infrastructure Team" checklist, each item as it appears in some script's header.
SEED_CHECKLIST = {
    "Authenticated SMTP": "SMTP: enable Authenticated SMTP on the sender mailbox",
    "service principal": "SMTP app-only: register Exchange service principal",
    "SendAs": "grant SendAs",
    "FullAccess": "(and FullAccess only if needed)",
    "Application Access Policy": "Graph app-only: configure Application Access Policy",
    "RBAC for Applications": "or RBAC for Applications",
    "admin consent": "Verify admin consent where required",
}


@pytest.mark.parametrize("phrase", sorted(SEED_CHECKLIST))
def test_scripts_walk_the_seed_checklist(phrase: str) -> None:
    headers = "\n".join(p.read_text().split("set -euo pipefail")[0] for p in ENTRY_POINTS)
    headers += "\n".join(p.read_text().split("[CmdletBinding")[0] for p in PWSH)
    assert phrase.lower() in headers.lower(), f"no script documents the checklist item {SEED_CHECKLIST[phrase]!r}"
