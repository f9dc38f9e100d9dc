"""The layers hold: pure cores import no SDK or network client, and the product never imports the harness.

Read from the source (AST), imports inside functions included, so a lazy import cannot slip past.
docs/architecture.md draws the layers these rules keep.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE_CORES = ("message", "addresses", "render_graph", "render_mime", "catalog", "classify", "backoff",
              "redaction", "transports/xoauth2")
"""Modules of shared/ that turn data into data: no I/O client, so they run (and are tested) anywhere."""

NOT_IN_PURE_CORES = ("azure", "httpx", "smtplib", "aiohttp", "aiosmtplib", "msal", "requests", "harness")


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as dotted names (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("module", PURE_CORES)
def test_pure_cores_import_no_sdk_or_network_client(module: str) -> None:
    path = ROOT / "shared" / f"{module}.py"
    bad = sorted(name for name in _imports(path) if _top(name) in NOT_IN_PURE_CORES)
    assert not bad, f"shared/{module}.py imports {bad}: a pure core takes data, not clients"


@pytest.mark.parametrize("package", ["shared", "function_app"])
def test_the_product_never_imports_the_harness(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if _top(n) in ("harness", "tests"))
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}, "the product (what the function ships) imports harness code"


def test_the_rules_see_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The scanner is what makes the rules above able to fail: it must see an import inside a function.
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import smtplib\n    from harness import replies\n    from .storage import queues\n")
    assert {"smtplib", "harness", "shared.storage"} <= _imports(probe, "shared")

