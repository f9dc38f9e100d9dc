"""Read the Bicep templates offline with pycep-parser, and resolve the few expression shapes the tests need.

pycep turns a template into nested dicts. Identifiers and string literals both come out as plain strings,
so a string is read as a reference when it names a parameter, variable, resource or module of the same
file, and as a literal otherwise (the templates avoid literals that collide with symbol names).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    """The template as pycep's dict; raises on a syntax error (that is the syntax gate)."""
    return _parser().parse(file_path=path)


def module_path(name: str) -> Path:
    return INFRA / "app" / f"{name}.bicep"


def resource(doc: dict[str, Any], symbol: str) -> dict[str, Any]:
    return doc["resources"][symbol]


def resources_of_type(doc: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in doc["resources"].items() if r["type"].lower() == rtype.lower()}


def body(res: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, whether declared plainly, in a loop or behind a condition."""
    config = res["config"]
    if "loop_type" in config or ("condition" in config and "config" in config):
        return config["config"]
    return config


def is_loop(res: dict[str, Any]) -> bool:
    return "loop_type" in res["config"]


def condition(res: dict[str, Any]) -> Any:
    config = res["config"]
    return config.get("condition") if "config" in config else None


def accessor_chain(expr: Any) -> list[Any] | None:
    """`a.b.c` as ['a', 'b', 'c'] (an index `a[i]` keeps `a`); None when expr is not a property access."""
    if not isinstance(expr, dict) or "operator" not in expr:
        return None
    op = expr["operator"]
    if op.get("type") == "property_accessor":
        first = op["operands"]["operand_1"]
        rest = op["operands"]["operand_2"]
        head = accessor_chain(first) or [first]
        tail = accessor_chain(rest) or [rest]
        return head + tail
    if op.get("type") == "index_accessor":
        return accessor_chain(op["operands"].get("operand_1")) or [op["operands"].get("operand_1")]
    return None


def function_call(expr: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(expr, dict) and "function" in expr:
        fn = expr["function"]
        return fn["type"], fn.get("parameters") or {}
    return None


def symbol_kind(doc: dict[str, Any], name: Any) -> str:
    """'param', 'var', 'resource', 'module' or 'literal' for a plain string of a template."""
    if not isinstance(name, str):
        return "expression"
    for kind, section in (("param", "parameters"), ("var", "variables"), ("resource", "resources"),
                          ("module", "modules")):
        if name in doc.get(section, {}):
            return kind
    return "literal"


def var_value(doc: dict[str, Any], name: str) -> Any:
    return doc["variables"][name]["value"]


def literal_or_var(doc: dict[str, Any], expr: Any) -> Any:
    """Resolve `roles.x`, `someVar` and literals; anything else comes back unchanged."""
    chain = accessor_chain(expr)
    if chain and isinstance(chain[0], str) and symbol_kind(doc, chain[0]) == "var":
        value: Any = var_value(doc, chain[0])
        for key in chain[1:]:
            value = value[key]
        return value
    if isinstance(expr, str) and symbol_kind(doc, expr) == "var":
        return var_value(doc, expr)
    return expr


def walk(expr: Any):
    """Every node of an expression tree (dicts, lists, strings)."""
    yield expr
    if isinstance(expr, dict):
        for value in expr.values():
            yield from walk(value)
    elif isinstance(expr, list):
        for value in expr:
            yield from walk(value)


def strings_in(expr: Any) -> set[str]:
    return {node for node in walk(expr) if isinstance(node, str)}


def functions_in(expr: Any) -> set[str]:
    return {node["function"]["type"] for node in walk(expr) if isinstance(node, dict) and "function" in node}


def decorator(param: dict[str, Any], kind: str) -> Any:
    for d in param.get("decorators", []):
        if d.get("type") == kind:
            return d.get("argument")
    return None


def app_settings() -> dict[str, Any]:
    """Every app setting the deployment gives the function: name -> its expression.

    function.bicep's `appsettings` config resource holds `union(appSettings, platformSettings)`, and
    main.bicep passes its `outboxSettings` variable as `appSettings`; this follows that wiring (and fails
    if it changes) rather than trusting it.
    """
    fn = parse(module_path("function"))
    configs = [r for r in resources_of_type(fn, "Microsoft.Web/sites/config").values()
               if body(r)["name"] == "appsettings"]
    assert len(configs) == 1, "exactly one appsettings config resource"
    config = body(configs[0])
    assert config["parent"] == "site"
    union = function_call(config["properties"])
    assert union and union[0] == "union", "app settings must be union(appSettings, platformSettings)"
    parts = list(union[1].values())
    assert parts == ["appSettings", "platformSettings"], parts
    assert "appSettings" not in body(fn["resources"]["site"])["properties"]["siteConfig"], "set in one place only"

    main = parse(MAIN)
    passed = main["modules"]["functionApp"]["config"]["params"]["appSettings"]
    assert passed == "outboxSettings", "main.bicep must pass its outboxSettings variable as appSettings"
    settings: dict[str, Any] = dict(var_value(main, "outboxSettings"))
    platform = var_value(fn, "platformSettings")
    overlap = set(settings) & set(platform)
    assert not overlap, f"set twice: {overlap}"
    settings.update(platform)
    return settings
