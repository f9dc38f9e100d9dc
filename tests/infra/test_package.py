"""What `azd deploy` ships: .funcignore keeps the app's code and drops everything else, and the shipped code
imports nothing that stays behind (the harness, the tests, dev-only packages)."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import sys

from tests.infra import bicep

ROOT = bicep.ROOT
SKIP_WALK = {".git", ".venv", ".venv-checkov", "node_modules", ".state", "__pycache__", ".pytest_cache",
             ".ruff_cache", ".hypothesis"}


def _patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(rel: str, patterns: list[str] | None = None) -> bool:
    """gitignore-style matching, the subset .funcignore uses (no negation)."""
    patterns = _patterns() if patterns is None else patterns
    parts = rel.split("/")
    for raw in patterns:
        dir_only = raw.endswith("/")
        pattern = raw.rstrip("/")
        anchored = "/" in pattern
        # An anchored pattern matches leading paths; a bare one matches any single component.
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))] if anchored else parts
        if dir_only:
            candidates = candidates[:-1]  # a directory pattern matches the folders above the file
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return True
    return False


def _package() -> list[str]:
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_WALK]  # prune: node_modules alone is thousands of files
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")
            if not ignored(rel):
                files.append(rel)
    return sorted(files)


def test_the_worker_and_build_inputs_are_shipped() -> None:
    for rel in ("main.py", "host.json", "requirements.txt", "function_app/__init__.py", "shared/settings.py"):
        assert (ROOT / rel).is_file(), rel
        assert not ignored(rel), f".funcignore drops {rel}"


def test_local_and_development_files_stay_behind() -> None:
    for rel in ("local.settings.json", "local.settings.example.json", ".venv/bin/python",
                ".venv-checkov/bin/checkov", "tests/unit/test_x.py", "harness/server.py", "infra/main.bicep",
                "node_modules/azurite/package.json", "__azurite_db_queue__.json", "__blobstorage__/x",
                "__queuestorage__/x", ".state/outbox.env", "shared/__pycache__/settings.cpython-311.pyc",
                "docs/deploy.md", "pyproject.toml", ".git/config", ".ci/run"):
        assert ignored(rel), f".funcignore ships {rel}"


def _requirement_imports() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    # Distribution name -> top-level import name.
    return {"azure" if n.startswith("azure-") else n.replace("-", "_") for n in names}


def test_shipped_code_imports_only_what_ships_or_is_installed_from_requirements() -> None:
    shipped_py = [f for f in _package() if f.endswith(".py")]
    local = {f.split("/", 1)[0].removesuffix(".py") for f in shipped_py}
    allowed = set(sys.stdlib_module_names) | _requirement_imports() | local | {"__future__"}
    # azure-core, requests and typing_extensions come with the azure-* packages.
    allowed |= {"requests", "typing_extensions"}
    problems = []
    for rel in shipped_py:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top not in allowed:
                    problems.append(f"{rel}:{node.lineno} imports {name}")
    assert problems == [], "the deployed app would not find: " + "; ".join(problems)
