"""Write docs/settings.md from the settings registry (tests/unit/test_settings_doc.py keeps it current)."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.settings import PLATFORM_SETTINGS, SETTINGS

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `shared/settings.py` by `python scripts/gen_settings_doc.py`; a test fails when it is stale.",
        "",
        "outbox reads these from the environment (Azure: app settings; `func start`: `local.settings.json`",
        "Values). The CLI and the local host also take `--settings FILE` (a `local.settings.json` or a",
        "KEY=VALUE file such as the harness's `.state/outbox.env`); the environment wins over the file.",
        "Every problem is reported at once, naming the setting.",
        "",
        "| Setting | Default | Scope | What it does |",
        "|---|---|---|---|",
    ]
    for spec in SETTINGS.values():
        default = "(required)" if spec.required else (f"`{spec.default}`" if spec.default else "(none)")
        lines.append(f"| `{spec.name}` | {default} | {spec.scope} | {spec.doc} |")
    lines += [
        "",
        "Scope `function`: set in Azure by Bicep and in `local.settings.example.json`; `cli`: only the",
        "`outbox` command reads it.",
        "",
        "## Platform settings outbox also reads",
        "",
        "| Setting | Meaning |",
        "|---|---|",
        "| `AzureWebJobsStorage` | Azurite/local: a connection string (the harness writes one with the ports it chose); `UseDevelopmentStorage=true` means Azurite on its default ports 10000-10002. |",
        "| `AzureWebJobsStorage__queueServiceUri`, `__tableServiceUri`, `__blobServiceUri`, `__accountName` | Azure: identity-based connection (no keys). |",
        "| `AzureWebJobsStorage__credential`, `__clientId` | `managedidentity` and the user-assigned identity's client id. |",
        "| `AZURE_CLIENT_ID` | The function's user-assigned managed identity, used by DefaultAzureCredential for Key Vault. Not the sending app (that is `OUTBOX_CLIENT_ID`). |",
        "| `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` | Set by the platform (and by the harness) for managed identity. |",
        "",
    ]
    missing = [n for n in PLATFORM_SETTINGS if n.split("__")[0] not in "\n".join(lines)]
    assert not missing, missing
    return "\n".join(lines)


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {DOC}\n")
