"""``outbox token``: the claims of the token outbox would use (the token itself is never printed)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from shared.cli.context import Context
from shared.cli.output import CliError, Exit

EPILOG = """\
examples:
  outbox token                       the transport of OUTBOX_TRANSPORT
  outbox token --transport smtp      aud should be https://outlook.office365.com, roles SMTP.SendAsApp
  outbox token --transport both --json

The token is acquired exactly as the function does (certificate from Key Vault, MSAL client
credentials). Only its header (alg, x5t/kid) and claims are shown; the token and its signature never
are. Each transport's claims are checked like `outbox doctor` does.

exit codes: 0 tokens acquired and claims right; 1 a token could not be acquired or its claims are wrong."""

_ORDER = ("aud", "roles", "scp", "tid", "appid", "azp", "appidacr", "azpacr", "idtyp", "oid", "sub", "iss",
          "ver", "iat", "nbf", "exp")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "token",
        parents=[common],
        help="show the claims of the token outbox would use",
        description="Acquire the app-only token for a transport and show its claims.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--transport", choices=("graph", "smtp", "both"), help="default: OUTBOX_TRANSPORT")
    p.set_defaults(func=run)


def _header(token: str) -> dict[str, Any]:
    import base64
    import json

    try:
        part = token.split(".")[0]
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return {k: value[k] for k in ("alg", "typ", "kid", "x5t") if k in value} if isinstance(value, dict) else {}


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from shared.doctor import Probes, check_claims, check_keyvault, expectation, transports_for
    from shared.errors import OutboxError
    from shared.tokens import decode_claims

    settings = ctx.settings(require_storage=False)
    from shared.settings import SettingsError

    try:
        settings.require_sending()
    except SettingsError as exc:
        raise CliError(exc.detail or str(exc), Exit.USAGE, details={"settings": exc.problems}) from None
    choice = args.transport or settings.transport
    transports = transports_for(choice)
    out = ctx.out
    probes = Probes.from_settings(settings)
    results: list[dict[str, Any]] = []
    ok = True
    try:
        vault, material = check_keyvault(settings, probes.certificates)
        if material is None:
            raise CliError(f"{vault.summary}; fix: {vault.fix}", Exit.FAILED)
        for transport in transports:
            scope = expectation(settings, transport).scope
            try:
                token = probes.tokens.token(scope).token
            except OutboxError as exc:
                ok = False
                results.append({"transport": transport, "scope": scope, "error": exc.to_dict()})
                out.line(f"{transport}: no token for {scope}: {exc}")
                if exc.hint:
                    out.line(f"  fix: {exc.hint}")
                continue
            claims = decode_claims(token)
            verdict = check_claims(settings, claims, transport, dt.datetime.now(dt.UTC))
            ok = ok and verdict.status != "fail"
            results.append({"transport": transport, "scope": scope, "header": _header(token), "claims": claims,
                            "check": verdict.to_dict(), "certificateThumbprint": material.thumbprint_sha1})
            _print(out, transport, scope, _header(token), claims, verdict)
    finally:
        probes.close()
    out.emit({"tokens": results, "ok": ok})
    return Exit.OK if ok else Exit.FAILED


def _print(out: Any, transport: str, scope: str, header: dict[str, Any], claims: dict[str, Any], verdict: Any) -> None:
    out.line(f"{transport}: token for {scope}")
    if header:
        out.line(f"  {'header':<16} " + ", ".join(f"{k}={v}" for k, v in header.items()))
    keys = [k for k in _ORDER if k in claims] + sorted(k for k in claims if k not in _ORDER)
    for key in keys:
        value = claims[key]
        if key in ("iat", "nbf", "exp"):
            value = _when(value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        out.line(f"  {key:<16} {value}")
    mark = {"pass": "ok", "warn": "warning", "fail": "PROBLEM"}.get(verdict.status, verdict.status)
    out.line(f"  {'check':<16} {mark}: {verdict.summary}")
    if verdict.fix and verdict.status != "pass":
        out.line(f"  {'fix':<16} {verdict.fix}")
    out.line()
