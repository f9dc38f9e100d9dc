"""``outbox doctor`` for a delegated mailbox: the sign-in instead of the certificate, then the same
transport probes as the user. One cause per failing line, as for app-only mailboxes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import OutboxError
from shared.signins import scopes as scope_lists
from shared.signins.tokens import signin_hint

if TYPE_CHECKING:
    from shared.doctor import Check, Transport
    from shared.settings import Settings
    from shared.signins.store import SigninStore
    from shared.signins.tokens import DelegatedTokens

GRAPH_AUDIENCES = ("00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com")
# [guess] delegated-auth-notes.md §6: the Outlook audience is not documented; accept the forms seen.
OUTLOOK_AUDIENCES = ("https://outlook.office.com", "https://outlook.office365.com", "00000002-0000-0ff1-ce00-000000000000")
REFRESH_OVERDUE = dt.timedelta(days=60)


def delegated_checks(
    settings: Settings,
    *,
    tokens: DelegatedTokens,
    store: SigninStore,
    http: Any,
    mailbox: str,
    account: str,
    transports: tuple[Transport, ...],
    add: Callable[[Check], Check],
    now: dt.datetime,
) -> None:
    from shared.doctor import Check, _skip, smtp_checks, token_claims_view

    fix_login = signin_hint(mailbox, account)
    try:
        stored = store.get(mailbox)
    except OutboxError as exc:
        add(Check("signin.stored", "sign-in stored", "fail", f"cannot read container {store.container!r}: "
                  f"{exc.detail or exc.code}", fix=exc.hint, cause=exc.code))
        return
    if stored is None:
        add(Check("signin.stored", "sign-in stored", "fail", f"no sign-in is stored for {mailbox}",
                  fix=fix_login, cause="signin.missing"))
        return
    record = stored.record
    add(Check("signin.stored", "sign-in stored", "pass",
              f"{record.account} signed in {record.signed_in_at:%Y-%m-%d}; sealed in {store.container!r}",
              evidence=record.summary(now)))
    if record.dead is not None:
        add(Check("signin.alive", "sign-in alive", "fail",
                  f"needs a new sign-in since {record.dead.at:%Y-%m-%d %H:%M}: {record.dead.detail}",
                  fix=record.dead.hint or fix_login, cause=record.dead.code))
        return
    age = now - record.refreshed_at
    status: Literal["pass", "warn"] = "warn" if age > REFRESH_OVERDUE else "pass"
    add(Check("signin.alive", "sign-in alive", status,
              f"last refreshed {age.days} days ago; Entra drops it after 90 days unused"
              + (" (is the keep-alive timer running?)" if status == "warn" else ""),
              fix="check the signin_keepalive function's runs (OUTBOX_KEEPALIVE_SCHEDULE)" if status == "warn" else ""))

    for transport in transports:
        wanted = scope_lists.scopes_for(transport, shared=record.shared, outlook_resource=settings.outlook_resource)
        token: str | None = None
        claims: dict[str, Any] | None = None
        problem: str | None = None
        try:
            access = tokens.token(mailbox, account, transport)
        except OutboxError as exc:
            add(Check(f"{transport}.token", f"{transport}: token acquired", "fail",
                      f"no token for {' '.join(wanted)}: {exc.code}", fix=exc.hint, cause=exc.catalog or exc.code,
                      detail=exc.detail or ""))
            problem = f"no {transport} token ({exc.code})"
        else:
            from shared.tokens import decode_claims

            token, claims = access.token, decode_claims(access.token)
            add(Check(f"{transport}.token", f"{transport}: token acquired", "pass",
                      f"as {account}, scopes {' '.join(wanted)}"))
            claims_check = add(_claims_check(transport, claims, account, wanted, token_claims_view(claims)))
            if claims_check.status == "fail":
                problem, token = f"the token cannot work ({claims_check.cause})", None
        if transport == "smtp":
            for check in smtp_checks(settings, mailbox=account, sender=mailbox, token=token, claims=claims,
                                     token_problem=problem):
                add(check)
        elif token is None:
            add(_skip("graph.mailbox", "graph: mailbox reachable", f"skipped: {problem}"))
        elif record.shared:
            add(_skip("graph.mailbox", "graph: mailbox reachable",
                      f"not probed: reading {mailbox} as {account} needs Mail.ReadBasic.Shared, which outbox does "
                      "not ask for; Full Access and Send As show when sending (--send-test-to ADDR)"))
        else:
            add(_me_probe(settings, http, token, account))


def _claims_check(transport: str, claims: dict[str, Any], account: str, wanted: list[str],
                  evidence: dict[str, Any]) -> Check:
    from shared.doctor import Check

    problems: list[tuple[str, str, str]] = []
    audiences = GRAPH_AUDIENCES if transport == "graph" else OUTLOOK_AUDIENCES
    aud = str(claims.get("aud", "")).rstrip("/")
    if aud not in audiences:
        problems.append(("claims.wrong_audience", f"aud is {aud!r}", "report it: outbox asked for " + " ".join(wanted)))
    if claims.get("idtyp", "user") != "user" or "scp" not in claims:
        problems.append(("claims.app_token", "an app-only token, not the user's", "report it"))
    upn = str(claims.get("upn") or claims.get("preferred_username") or claims.get("unique_name") or "")
    if upn.lower() != account.lower():
        problems.append(("claims.wrong_user", f"the token is {upn or 'nobody'}'s, not {account}'s",
                         f"sign in again as {account}: outbox login --account {account}"))
    granted = set(str(claims.get("scp", "")).split())
    lacking = [s for s in wanted if scope_lists.short(s) not in granted]
    if lacking:
        problems.append(("claims.missing_scope", f"scp lacks {' '.join(lacking)}",
                         "the user (or an admin for the tenant) consents to it: sign in again with outbox login"))
    title = f"{transport}: token claims"
    if problems:
        cause, _, fix = problems[0]
        return Check(f"{transport}.claims", title, "fail", "; ".join(w for _, w, _ in problems), fix=fix, cause=cause,
                     evidence=evidence)
    return Check(f"{transport}.claims", title, "pass", f"aud {aud}, scp {' '.join(sorted(granted))}, upn {upn}, "
                 "idtyp user", evidence=evidence)


def _me_probe(settings: Settings, http: Any, token: str, account: str) -> Check:
    """The signed-in user's own Sent Items through /me (what sending uses); Mail.ReadBasic is asked at login."""
    from shared.doctor import sent_items_probe

    return sent_items_probe(settings, http, url=f"{settings.graph_url}/v1.0/me/mailFolders/sentitems/messages",
                            token=token, passed=f"/me is {account}'s mailbox (read Sent Items); sending is proven "
                            "only by --send-test-to", reading="reading /me Sent Items")
