"""``outbox login``, ``outbox accounts``, ``outbox logout``: the sign-ins of delegated mailboxes."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from shared.cli.context import Context
from shared.cli.output import CliError, Column, Exit

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.signins.scopes import Resource

LOGIN_EPILOG = """\
examples:
  outbox login --mailbox sender@contoso.example                 # a browser opens; sign in as sender@
  outbox login --mailbox sender@contoso.example --device-code   # no browser here: a code to enter elsewhere
  outbox login --mailbox noreply@contoso.example --account delegate@contoso.example   # a shared mailbox

The mailbox must be listed in OUTBOX_DELEGATED_MAILBOXES for the function to send as the sign-in.
exit codes: 0 signed in and stored; 1 the sign-in failed or lacks a consent (nothing stored); 2 settings."""

ACCOUNTS_EPILOG = """\
Lists every stored sign-in and every delegated mailbox without one.
exit codes: 0 every delegated mailbox has a working sign-in; 1 one needs a new sign-in; 2 settings."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("login", parents=[common], help="sign a user in for a delegated mailbox",
                       description="Sign a user in once; the function then sends as that user for months "
                       "(the keep-alive timer refreshes the sign-in daily).",
                       epilog=LOGIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mailbox", required=True, metavar="ADDR", help="the mailbox mail is sent from")
    p.add_argument("--account", metavar="UPN",
                   help="the user who signs in (default: the mailbox itself, or its account in "
                   "OUTBOX_DELEGATED_MAILBOXES); another user for a shared mailbox")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--browser", dest="method", action="store_const", const="browser",
                     help="authorization code + PKCE in a browser (the default)")
    how.add_argument("--device-code", dest="method", action="store_const", const="device-code",
                     help="a code to enter on another device (often blocked by Conditional Access)")
    p.add_argument("--transport", choices=("graph", "smtp", "both"), default="both",
                   help="which transports the sign-in must cover (default both)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds")
    p.set_defaults(func=login, method="browser")

    a = sub.add_parser("accounts", parents=[common], help="list the delegated mailboxes' sign-ins",
                       description="Who is signed in for which mailbox, when the sign-in was last refreshed, "
                       "and what needs a new sign-in.", epilog=ACCOUNTS_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.set_defaults(func=accounts)

    o = sub.add_parser("logout", parents=[common], help="remove a mailbox's stored sign-in",
                       description="Delete the stored sign-in of one mailbox (its messages then poison "
                       "signin_required until someone signs in again).")
    o.add_argument("--mailbox", required=True, metavar="ADDR")
    o.set_defaults(func=logout)


def _account_for(settings: Settings, mailbox: str, given: str | None) -> str:
    configured = settings.delegated_account(mailbox)
    account = (given or configured or mailbox).lower()
    if configured is not None and configured != account:
        raise CliError(f"OUTBOX_DELEGATED_MAILBOXES says {configured} signs in for {mailbox}, not {account}: "
                       "change the setting or drop --account", Exit.USAGE)
    return account


def login(args: argparse.Namespace, ctx: Context) -> int:
    from shared.http import build_client
    from shared.signins.key import SigninKey
    from shared.signins.login import SigninRefused, sign_in
    from shared.storage import StorageOptions, build_stores

    settings = ctx.settings()
    mailbox = args.mailbox.strip().lower()
    account = _account_for(settings, mailbox, args.account)
    transports: list[Resource] = ["graph", "smtp"] if args.transport == "both" else [args.transport]
    out = ctx.out
    if settings.delegated_account(mailbox) is None:
        out.info(f"note: {mailbox} is not in OUTBOX_DELEGATED_MAILBOXES; the function sends it app-only until it is")

    def show(flow: Any) -> None:
        out.info(str(flow.get("message") or f"enter {flow.get('user_code')} at {flow.get('verification_uri')}"))

    key = SigninKey(settings)
    with build_stores(settings, StorageOptions.cli(settings)) as stores, build_client(settings) as http:
        try:
            result = sign_in(settings, stores.signins, key, http, mailbox=mailbox, account=account,
                             method=args.method, transports=transports, show_device_code=show,
                             timeout_s=args.timeout)
        except SigninRefused as exc:
            raise CliError(str(exc), Exit.FAILED, details={"missing": exc.missing}) from None
        finally:
            key.close()
    record = result.record
    summary = record.summary(dt.datetime.now(dt.UTC))
    out.emit({"signedIn": summary, "claims": {r: _claims(c) for r, c in result.claims.items()}})
    out.line(f"{account} is signed in for {mailbox} ({', '.join(transports)}); stored encrypted in "
             f"container {settings.signin_container!r}")
    for resource, claims in result.claims.items():
        c = _claims(claims)
        out.line(f"  {resource:<6} scp={c['scp']} aud={c['aud']} upn={c['upn']}")
    return Exit.OK


def _claims(claims: dict[str, Any]) -> dict[str, Any]:
    return {"scp": claims.get("scp"), "aud": claims.get("aud"),
            "upn": claims.get("upn") or claims.get("preferred_username"), "idtyp": claims.get("idtyp")}


def account_rows(settings: Settings, store: Any, now: dt.datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for mailbox in sorted(store.mailboxes()):
        stored = store.get(mailbox)
        if stored is None:
            continue
        summary = stored.record.summary(now)
        dead = summary["needsSignIn"]
        delegated = settings.delegated_account(mailbox) is not None
        summary["status"] = ("needs sign-in: " + dead["code"]) if dead else (
            "ok" if delegated else "ok (not in OUTBOX_DELEGATED_MAILBOXES: unused)")
        if not dead and summary["refreshTokenAgeDays"] > 60:
            summary["status"] = "refresh overdue: is the keep-alive timer running?"
        rows.append(summary)
        seen.add(mailbox)
    for mailbox, account in settings.delegated_mailboxes:
        if mailbox not in seen:
            rows.append({"mailbox": mailbox, "account": account, "status": "not signed in",
                         "needsSignIn": {"code": "outbox.signin_missing",
                                         "hint": f"outbox login --mailbox {mailbox}"
                                         + (f" --account {account}" if account != mailbox else "")}})
    return rows


def accounts(args: argparse.Namespace, ctx: Context) -> int:
    from shared.cli.storage import stores

    settings = ctx.settings()
    with stores(settings) as parts:
        rows = account_rows(settings, parts.signins, dt.datetime.now(dt.UTC))
    out = ctx.out
    out.emit({"accounts": rows})
    if not rows:
        out.line("no delegated mailboxes: every mailbox sends app-only")
        return Exit.OK
    out.table(rows, [Column("MAILBOX", "mailbox"), Column("ACCOUNT", "account"),
                     Column("LAST REFRESH", "lastRefresh"), Column("RT AGE (d)", "refreshTokenAgeDays", align=">"),
                     Column("STATUS", "status", 60)])
    dead = [r for r in rows if r.get("needsSignIn")]
    for row in dead:
        out.line(f"  {row['mailbox']}: {row['needsSignIn'].get('hint')}")
    return Exit.FAILED if dead else Exit.OK


def logout(args: argparse.Namespace, ctx: Context) -> int:
    from shared.cli.storage import stores

    settings = ctx.settings()
    mailbox = args.mailbox.strip().lower()
    with stores(settings) as parts:
        removed = parts.signins.delete(mailbox)
    ctx.out.emit({"mailbox": mailbox, "removed": removed})
    if not removed:
        raise CliError(f"no sign-in is stored for {mailbox}", Exit.NOT_FOUND)
    ctx.out.line(f"the sign-in of {mailbox} was removed")
    return Exit.OK
