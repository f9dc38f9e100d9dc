"""The email team's checklist, run live: what is wrong between this app, Entra ID and a mailbox.

``run_doctor`` returns a :class:`Report` (one :class:`Check` per line); it prints nothing, so the CLI,
tests and anything else can present it. Each check passes, warns, fails or is skipped because a check
it depends on failed (a token that cannot work is not also tried against Exchange: one cause, one
failing line).

Doctor names a single cause only when the evidence singles it out: the token's claims (``aud``,
``roles`` vs ``scp``, ``tid``, ``appid``, ``exp``), an AADSTS code, the certificate's dates, a 5.7.139
reply, a Send As refusal, Graph's ``[RAOP]`` 403. Exchange answers a bare ``535 5.7.3`` for several
causes once the token itself is right; then doctor says what it has ruled out and lists what remains,
each with the Exchange Online PowerShell command that checks it (design.md, "What doctor can know").

Nothing is sent unless ``send_test_to`` is given: the SMTP probe stops after ``MAIL FROM``, sends
``RSET`` and quits; the Graph probe reads (at most one message id from Sent Items) when the app may read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import OutboxError
from shared.redaction import DOCTOR_MEANING_MAX, clip, redact, redact_tree

if TYPE_CHECKING:
    from shared.certificates import CertificateMaterial, CertificateProvider
    from shared.settings import Settings
    from shared.tokens import TokenProvider
    from shared.transports.smtp import Probe, StepFailed

Status = Literal["pass", "warn", "fail", "skip"]
Transport = Literal["graph", "smtp"]


def transports_for(choice: str) -> tuple[Transport, ...]:
    """The transports a ``--transport`` choice names: ``both`` is SMTP then Graph."""
    if choice == "both":
        return ("smtp", "graph")
    if choice == "smtp":
        return ("smtp",)
    if choice == "graph":
        return ("graph",)
    raise ValueError(f"unknown transport {choice!r}: graph, smtp or both")

EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# Every cloud's resource identifiers, so a token for the other service is recognised as such.
_EXCHANGE_RESOURCES = (
    "https://outlook.office365.com", "https://outlook.office.com", "https://outlook.office365.us",
    "https://outlook-dod.office365.us", "https://partner.outlook.cn",
)  # fmt: skip
_GRAPH_RESOURCES = (
    "https://graph.microsoft.com", "https://graph.microsoft.us", "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
)  # fmt: skip
READ_ROLES = ("Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite")
# A token this close to expiry would be renewed by outbox before use; doctor only warns.
TOKEN_SHORT_S = 300
CONNECT_PS = "Connect-ExchangeOnline"
# How long doctor looks for an SMTP test message in Sent Items, and how often.
SENT_COPY_WAIT_S = 60.0
SENT_COPY_POLL_S = 2.0


@dataclass(frozen=True)
class RemainingCause:
    """A cause doctor could not rule out, with how an admin checks it."""

    name: str
    why: str
    check: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {"cause": self.name, "why": self.why, "check": self.check, "fix": self.fix}


@dataclass
class Check:
    id: str
    title: str
    status: Status
    summary: str
    fix: str = ""
    cause: str | None = None
    """The single cause the evidence names (e.g. ``smtp.auth_disabled_mailbox``), or None."""
    evidence: dict[str, Any] = field(default_factory=dict)
    remaining: list[RemainingCause] = field(default_factory=list)
    """When a failure has several possible causes: the ones not ruled out."""
    detail: str = ""
    """The server's own words (redacted), when they add to the summary."""

    def __post_init__(self) -> None:
        # A summary or detail quotes servers and settings: redacted here, so the text report, the JSON
        # report and anything else built from a Check read the same cleaned words.
        self.summary = redact(self.summary)
        self.detail = redact(self.detail)

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "warn")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "title": self.title, "status": self.status, "summary": self.summary}
        if self.fix:
            out["fix"] = self.fix
        if self.cause:
            out["cause"] = self.cause
        if self.detail:
            out["detail"] = self.detail
        if self.evidence:
            out["evidence"] = redact_tree(self.evidence)
        if self.remaining:
            out["remainingCauses"] = [r.to_dict() for r in self.remaining]
        return out


@dataclass
class Report:
    mailbox: str
    sender: str
    transports: tuple[Transport, ...]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def get(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mailbox": self.mailbox,
            "from": self.sender,
            "transports": list(self.transports),
            "checks": [c.to_dict() for c in self.checks],
        }


def _skip(check_id: str, title: str, because: str) -> Check:
    return Check(check_id, title, "skip", because)


def _iso(value: dt.datetime | float | int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _entry_meaning(error: OutboxError) -> str:
    if not error.catalog:
        return ""
    try:
        from shared.catalog import entry

        return entry(error.catalog).meaning
    except (ImportError, KeyError):
        return ""


def _describe(error: OutboxError) -> str:
    """``<status> <code>: <what it means>``, short; the server's full words go to ``Check.detail``."""
    head = " ".join(str(p) for p in (error.status, error.code) if p not in (None, ""))
    meaning = _entry_meaning(error)
    if not meaning and error.detail:
        meaning = error.detail
        for prefix in (f"{head}: ", f"{error.code}: ", f"{error.status}: "):
            meaning = meaning.removeprefix(prefix)
        meaning = clip(meaning, DOCTOR_MEANING_MAX)
    return f"{head}: {meaning}" if meaning else head


def personalize(text: str, known: Mapping[str, str | None]) -> str:
    """Fill the catalog's ``<placeholders>`` (``<mailbox>``, ``<client id>``...) with this run's values."""
    for placeholder, value in known.items():
        if value:
            text = text.replace(placeholder, value)
    return text


# -- settings -----------------------------------------------------------------------------------------


def check_settings(
    settings: Settings | None, problems: Mapping[str, str] | None, warnings: Mapping[str, str] | None = None
) -> Check:
    title = "settings present"
    if settings is None:
        listed = "; ".join(f"{k}: {v}" for k, v in (problems or {}).items())
        return Check("settings", title, "fail", f"settings are invalid: {listed}",
                     fix="set them in the app settings, local.settings.json Values or --settings FILE",
                     cause="settings", evidence={"problems": dict(problems or {})})
    from shared.settings import SettingsError

    try:
        settings.require_sending()
    except SettingsError as exc:
        return Check("settings", title, "fail", f"missing: {', '.join(exc.names)}",
                     fix="set " + ", ".join(exc.names) + " (the app registration and the Key Vault certificate)",
                     cause="settings", evidence={"problems": exc.problems})
    status: Status = "pass"
    note = ""
    if warnings:
        status = "warn"
        note = "; not needed to send but wrong for the function: " + "; ".join(f"{k}: {v}" for k, v in warnings.items())
    return Check(
        "settings", title, status,
        f"tenant {settings.tenant_id}, app {settings.client_id}, vault {settings.keyvault_url}, "
        f"certificate {settings.cert_name}, cloud {settings.cloud}{note}",
        fix="set " + ", ".join(warnings) + " for the function" if warnings else "",
        evidence={"tenant": settings.tenant_id, "clientId": settings.client_id, "keyVault": settings.keyvault_url,
                  "certificate": settings.cert_name, "cloud": settings.cloud,
                  "authority": settings.authority_host, "graph": settings.graph_url,
                  "smtp": f"{settings.smtp_host}:{settings.smtp_port}"},
    )


def check_allowed(settings: Settings, addresses: Sequence[str]) -> Check:
    from shared.message import sender_allowed

    title = "sender allowed"
    refused = [a for a in dict.fromkeys(addresses) if not sender_allowed(a, settings.allowed_senders)]
    if not refused:
        return Check("sender.allowed", title, "pass", f"{', '.join(dict.fromkeys(addresses))} in OUTBOX_ALLOWED_SENDERS")
    listed = ", ".join(settings.allowed_senders) or "(empty: nobody may send)"
    return Check(
        "sender.allowed", title, "fail",
        f"{', '.join(refused)} not in OUTBOX_ALLOWED_SENDERS ({listed}): the function refuses these messages",
        fix=f"add {refused[0]} (or *@{refused[0].rpartition('@')[2]}) to OUTBOX_ALLOWED_SENDERS",
        cause="config.sender_not_allowed",
    )


# -- Key Vault and certificate -----------------------------------------------------------------------


def check_keyvault(settings: Settings, provider: CertificateProvider) -> tuple[Check, CertificateMaterial | None]:
    title = "Key Vault certificate readable"
    try:
        material = provider.read_unchecked()
    except OutboxError as exc:
        return Check(
            "keyvault", title, "fail",
            f"cannot read {settings.cert_name!r} from {settings.keyvault_url}: {_describe(exc)}",
            fix=exc.hint, cause=exc.catalog or exc.code, detail=exc.detail or "",
            evidence={"status": exc.status, "code": exc.code},
        ), None
    return Check(
        "keyvault", title, "pass",
        f"{settings.cert_name} version {material.version}, thumbprint {material.thumbprint_sha1}",
        evidence={"thumbprint": material.thumbprint_sha1, "version": material.version, "subject": material.subject},
    ), material


def check_certificate(settings: Settings, material: CertificateMaterial, now: dt.datetime) -> Check:
    title = "certificate valid"
    left = material.expires_in(now)
    days = left / 86400
    evidence = {"thumbprint": material.thumbprint_sha1, "notBefore": _iso(material.not_before),
                "notAfter": _iso(material.not_after), "daysLeft": round(days, 1)}
    renew = (
        f"renew the certificate in Key Vault {settings.keyvault_url} under the same name ({settings.cert_name}), "
        "upload the new public certificate to the app registration (Certificates & secrets), then remove the old one"
    )
    if left <= 0:
        return Check("certificate", title, "fail",
                     f"expired on {_iso(material.not_after)} ({-days:.1f} days ago), thumbprint {material.thumbprint_sha1}",
                     fix=renew, cause="certificate.expired", evidence=evidence)
    if material.not_before > now:
        return Check("certificate", title, "fail",
                     f"not valid before {_iso(material.not_before)}: check this host's clock",
                     fix="fix the host clock (NTP) or wait until the certificate's start date",
                     cause="certificate.not_yet_valid", evidence=evidence)
    summary = f"expires {_iso(material.not_after)} ({days:.0f} days left)"
    if left <= settings.cert_expiry_margin_s:
        return Check("certificate", title, "warn", summary + ": rotate it soon", fix=renew, evidence=evidence)
    return Check("certificate", title, "pass", summary, evidence=evidence)


# -- tokens and claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    transport: Transport
    scope: str
    audiences: frozenset[str]
    other_audiences: frozenset[str]
    role: str
    permission: str


def expectation(settings: Settings, transport: Transport) -> Expectation:
    def forms(resources: Iterable[str], app_id: str) -> frozenset[str]:
        out = {app_id}
        for r in resources:
            out |= {r, r + "/"}
        return frozenset(out)

    if transport == "smtp":
        resource = settings.smtp_scope.removesuffix("/.default")
        return Expectation(
            "smtp", settings.smtp_scope, forms([resource], EXCHANGE_APP_ID),
            forms(_GRAPH_RESOURCES, GRAPH_APP_ID), "SMTP.SendAsApp",
            "Office 365 Exchange Online > Application permissions > SMTP.SendAsApp",
        )
    resource = settings.graph_scope.removesuffix("/.default")
    return Expectation(
        "graph", settings.graph_scope, forms([resource], GRAPH_APP_ID),
        forms(_EXCHANGE_RESOURCES, EXCHANGE_APP_ID), "Mail.Send",
        "Microsoft Graph > Application permissions > Mail.Send",
    )


_TOKEN_CAUSES = {
    # AADSTS codes whose words are clearer with this deployment's values filled in.
    "AADSTS500011": "the scope {scope} names a resource this tenant does not have: OUTBOX_CLOUD={cloud} picks the "
    "scopes; set it to the cloud your tenant lives in (public, usgov, usgovdod, china)",
    "AADSTS1002012": "the scope {scope} is not an app-only scope: it must be <resource>/.default",
    "invalid_scope": "the scope {scope} is not valid for this tenant: check OUTBOX_CLOUD={cloud}",
}


def check_token(settings: Settings, tokens: TokenProvider, transport: Transport) -> tuple[Check, str | None]:
    exp = expectation(settings, transport)
    check_id, title = f"{transport}.token", f"{transport}: token acquired"
    try:
        token = tokens.token(exp.scope)
    except OutboxError as exc:
        special = _TOKEN_CAUSES.get(exc.code)
        fix = special.format(scope=exp.scope, cloud=settings.cloud) if special else exc.hint
        return Check(
            check_id, title, "fail", f"no token for {exp.scope}: {_describe(exc)}",
            fix=fix, cause=exc.catalog or exc.code, detail=exc.detail or "",
            evidence={"code": exc.code, "status": exc.status, "traceId": exc.request_id,
                      "correlationId": exc.client_request_id, "scope": exp.scope},
        ), None
    return Check(check_id, title, "pass", f"scope {exp.scope}, expires {_iso(token.expires_on)}",
                 evidence={"scope": exp.scope}), token.token


def token_claims_view(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims an operator needs, with times in ISO form (never the token or its signature)."""
    keys = ("aud", "iss", "tid", "appid", "azp", "appidacr", "azpacr", "idtyp", "oid", "sub", "roles", "scp",
            "upn", "unique_name", "ver", "iat", "nbf", "exp")
    view = {k: claims[k] for k in keys if k in claims}
    for k in ("iat", "nbf", "exp"):
        if isinstance(view.get(k), int | float):
            view[k] = _iso(view[k])
    return view


def check_claims(
    settings: Settings, claims: Mapping[str, Any], transport: Transport, now: dt.datetime
) -> Check:
    """Compare a token's claims with what the transport needs; the first problem found is the cause."""
    exp = expectation(settings, transport)
    check_id, title = f"{transport}.claims", f"{transport}: token claims"
    problems: list[tuple[str, str, str]] = []  # (cause, what, fix)
    aud = str(claims.get("aud", ""))
    if aud not in exp.audiences:
        other = "a Graph" if transport == "smtp" else "an Exchange (SMTP)"
        what = f"aud is {aud!r}" + (f": {other} token" if aud in exp.other_audiences else "")
        problems.append(("claims.wrong_audience", what + f"; {transport} needs {exp.scope.removesuffix('/.default')}",
                         f"request the token for scope {exp.scope} (OUTBOX_CLOUD={settings.cloud} picks it)"))
    roles = [str(r) for r in claims.get("roles") or ()]
    scp = str(claims.get("scp") or "").split()
    if scp and not roles:
        problems.append(("claims.delegated_token", f"a delegated token (scp {' '.join(scp)}), not app-only",
                         "outbox uses app-only tokens (client credentials with the certificate): check OUTBOX_CLIENT_ID"))
    elif exp.role not in roles:
        have = f"roles are {', '.join(roles)}" if roles else "no roles claim"
        problems.append((
            "claims.missing_role", f"{have}: {exp.role} is missing",
            f"in the app registration add {exp.permission} and press 'Grant admin consent' "
            f"(check afterwards: Enterprise applications > {settings.client_id} > Permissions)",
        ))
    tid = str(claims.get("tid", ""))
    if settings.tenant_id and tid.lower() != settings.tenant_id.lower():
        problems.append(("claims.wrong_tenant", f"tid is {tid}, OUTBOX_TENANT_ID is {settings.tenant_id}",
                         "set OUTBOX_TENANT_ID to the directory (tenant) id of the app registration"))
    appid = str(claims.get("appid") or claims.get("azp") or "")
    if settings.client_id and appid.lower() != settings.client_id.lower():
        problems.append(("claims.wrong_app", f"appid is {appid}, OUTBOX_CLIENT_ID is {settings.client_id}",
                         "set OUTBOX_CLIENT_ID to the application (client) id of the sending app"))
    expires = claims.get("exp")
    expires_at = float(expires) if isinstance(expires, int | float) else None
    left = expires_at - now.timestamp() if expires_at is not None else None
    if expires_at is not None and left is not None and left <= 0:
        problems.append(("claims.expired", f"the token expired at {_iso(expires_at)}",
                         "check this host's clock (NTP): Entra issued a token that is already expired here"))
    evidence = token_claims_view(claims)
    if problems:
        cause, _, fix = problems[0]
        return Check(check_id, title, "fail", "; ".join(what for _, what, _ in problems), fix=fix, cause=cause,
                     evidence=evidence)
    summary = f"aud {aud}, roles {', '.join(roles)}, tid ok, appid ok"
    if left is not None:
        summary += f", expires in {left / 60:.0f} min"
    if left is not None and left < TOKEN_SHORT_S:
        return Check(check_id, title, "warn", summary + " (short: outbox renews tokens 5 min before exp)",
                     evidence=evidence)
    return Check(check_id, title, "pass", summary, evidence=evidence)


# -- SMTP ---------------------------------------------------------------------------------------------


def _classify_reply(code: int, text: str, stage: str) -> OutboxError:
    from shared.classify import classify_smtp_reply

    return classify_smtp_reply(code, text, stage=stage)


def remaining_535_causes(settings: Settings, mailbox: str, claims: Mapping[str, Any]) -> list[RemainingCause]:
    """What is left once the token is right and user= is the mailbox: Exchange's own configuration."""
    client = settings.client_id or "<application (client) id>"
    oid = str(claims.get("oid") or "<object id of the Enterprise Application>")
    return [
        RemainingCause(
            "exchange.service_principal",
            "Exchange has no service principal for the app, or one registered with another object id "
            f"(it must be the Enterprise Application's object id, which is the token's oid {oid})",
            f"Get-ServicePrincipal | Where-Object AppId -eq '{client}' | Format-List AppId,ObjectId,DisplayName",
            f"New-ServicePrincipal -AppId {client} -ObjectId {oid}   (remove a wrong one with Remove-ServicePrincipal)",
        ),
        RemainingCause(
            "exchange.mailbox_permission",
            f"the service principal may not use {mailbox} (no FullAccess, and no RBAC for Applications assignment)",
            f"Get-MailboxPermission -Identity {mailbox} | Where-Object User -like '*{oid}*'   "
            f"(RBAC: Test-ServicePrincipalAuthorization -Identity {oid} -Resource {mailbox})",
            f"Add-MailboxPermission -Identity {mailbox} -User {oid} -AccessRights FullAccess",
        ),
        RemainingCause(
            "exchange.propagation",
            "a service principal, permission or consent changed within the last hour has not reached Exchange yet",
            "when was the last change made? (Exchange caches app permissions for up to an hour)",
            "wait, then run doctor again",
        ),
    ]


def smtp_checks(
    settings: Settings,
    *,
    mailbox: str,
    sender: str,
    token: str | None,
    claims: Mapping[str, Any] | None,
    token_problem: str | None,
) -> list[Check]:
    """connect, STARTTLS, AUTH XOAUTH2 as ``mailbox``, MAIL FROM ``sender``, then RSET and QUIT: the SMTP
    transport's own session steps in its probe mode (nothing is sent)."""
    from shared.transports import smtp

    host, port = settings.smtp_host, settings.smtp_port
    where = f"{host}:{port}"
    try:
        found = smtp.probe(settings, mailbox=mailbox, sender=sender, token=token if claims is not None else None)
    except smtp.StepFailed as failed:
        return _smtp_failure(settings, failed, where, mailbox, claims)
    checks = [_connected(found, where)]
    mechanisms = list(found.auth_mechanisms)
    version = found.tls_version
    if "XOAUTH2" not in mechanisms:
        checks.append(Check(
            "smtp.starttls", "smtp: STARTTLS", "fail",
            f"{version}, but AUTH XOAUTH2 is not offered after TLS (AUTH {' '.join(mechanisms) or 'none'})",
            fix="the server is not Exchange Online's submission endpoint (smtp.office365.com:587)",
            cause="smtp.no_xoauth2",
        ))
        return checks + _skip_smtp_after("smtp.starttls", "XOAUTH2 not offered")
    checks.append(_secured(found))
    if not found.authenticated:
        checks.append(_skip("smtp.auth", "smtp: AUTH XOAUTH2", f"skipped: {token_problem or 'no token'}"))
        checks.append(_skip("smtp.mail_from", "smtp: MAIL FROM", "skipped: not authenticated"))
        return checks
    auth_code, auth_text = found.auth_reply or (235, "")
    checks.append(Check("smtp.auth", "smtp: AUTH XOAUTH2", "pass", f"{auth_code} {auth_text} (user={mailbox})"))
    mail_code, mail_text = found.mail_reply or (0, "")
    if mail_code != 250:
        err = _classify_reply(mail_code, mail_text, "mail")
        as_other = sender.lower() != mailbox.lower()
        summary = f"MAIL FROM:<{sender}> refused: {mail_code} {mail_text}"
        if as_other and err.category == "permission":
            summary += f" ({mailbox} authenticated, but may not send as {sender})"
        checks.append(Check("smtp.mail_from", "smtp: MAIL FROM", "fail", summary, fix=err.hint,
                            cause=err.catalog or err.code, evidence={"reply": f"{mail_code} {mail_text}"}))
    else:
        note = f" as {mailbox}" if sender.lower() != mailbox.lower() else ""
        checks.append(Check("smtp.mail_from", "smtp: MAIL FROM", "pass",
                            f"<{sender}> accepted{note}; RSET, nothing sent"))
    return checks


def _connected(found: Probe, where: str) -> Check:
    lines = found.greeting.splitlines()
    return Check("smtp.connect", "smtp: connect", "pass", f"{where}: {(lines[0] if lines else '')[:80]}")


def _secured(found: Probe) -> Check:
    mechanisms = list(found.auth_mechanisms)
    return Check("smtp.starttls", "smtp: STARTTLS", "pass", f"{found.tls_version}; AUTH {' '.join(mechanisms)}",
                 evidence={"tls": found.tls_version, "auth": mechanisms})


def _smtp_failure(settings: Settings, failed: StepFailed, where: str, mailbox: str,
                  claims: Mapping[str, Any] | None) -> list[Check]:
    """The check for the step the probe stopped at, and the later ones skipped."""
    err = failed.error
    port = settings.smtp_port
    checks: list[Check] = []
    if failed.stage == "connect":
        if err.code == "outbox.starttls_not_offered":
            checks.append(Check(
                "smtp.connect", "smtp: connect", "fail", f"{where} does not offer STARTTLS",
                fix="OUTBOX_SMTP_HOST/PORT must name Exchange Online's submission endpoint (smtp.office365.com:587)",
                cause="smtp.no_starttls",
            ))
            return checks + _skip_smtp_after("smtp.connect", "STARTTLS not offered")
        if err.status is not None:  # the server answered, with something other than 220
            checks.append(Check("smtp.connect", "smtp: connect", "fail", f"{where} greeted with {err.detail}",
                                fix=err.hint, cause=err.catalog or err.code))
            return checks + _skip_smtp_after("smtp.connect", "no usable greeting")
        checks.append(Check(
            "smtp.connect", "smtp: connect", "fail", f"cannot connect to {where}: {err.detail}",
            fix=f"check that {where} is reachable from here (firewall egress on port {port}, proxy, DNS; "
            "OUTBOX_SMTP_HOST / OUTBOX_SMTP_PORT)", cause="network.unreachable",
        ))
        return checks + _skip_smtp_after("smtp.connect", "no connection")
    checks.append(_connected(failed.found, where))
    if failed.stage == "starttls":
        if failed.reply is not None:
            code, text = failed.reply
            checks.append(Check("smtp.starttls", "smtp: STARTTLS", "fail", f"STARTTLS refused: {code} {text}",
                                fix=err.hint, cause=err.catalog or err.code))
        else:
            checks.append(Check(
                "smtp.starttls", "smtp: STARTTLS", "fail", f"TLS handshake with {where} failed: {err.detail}",
                fix="a TLS-intercepting proxy or a missing CA: OUTBOX_CA_BUNDLE must hold the CA that signed the "
                "server's certificate; TLS 1.2 or newer is required", cause="tls.handshake",
            ))
        return checks + _skip_smtp_after("smtp.starttls", "no TLS")
    checks.append(_secured(failed.found))
    code, text = failed.reply or (err.status or 0, err.detail or "")
    checks.append(_auth_failure(settings, code, text, mailbox, claims or {}))
    checks.append(_skip("smtp.mail_from", "smtp: MAIL FROM", "skipped: not authenticated"))
    return checks


def _skip_smtp_after(failed: str, because: str) -> list[Check]:
    order = [("smtp.connect", "smtp: connect"), ("smtp.starttls", "smtp: STARTTLS"),
             ("smtp.auth", "smtp: AUTH XOAUTH2"), ("smtp.mail_from", "smtp: MAIL FROM")]
    ids = [i for i, _ in order]
    return [_skip(i, t, f"skipped: {because}") for i, t in order[ids.index(failed) + 1:]]


def _auth_failure(settings: Settings, code: int, text: str, mailbox: str, claims: Mapping[str, Any]) -> Check:
    err = _classify_reply(code, text, "auth")
    title = "smtp: AUTH XOAUTH2"
    reply = f"{code} {text}"
    if err.catalog == "smtp.auth_failed" or (code == 535 and "5.7.3" in text and "5.7.139" not in text):
        ruled_out = (
            f"ruled out: aud {claims.get('aud')}, role SMTP.SendAsApp, tenant and app ids, token not expired, "
            f"user={mailbox}, TLS"
        )
        return Check(
            "smtp.auth", title, "fail",
            f"{reply}: the token is right, so Exchange's own configuration refuses it; Exchange does not say "
            f"which cause ({ruled_out})",
            fix="check the remaining causes below, in order (in Exchange Online PowerShell: "
            f"{CONNECT_PS})",
            cause=None, evidence={"reply": reply, "ruledOut": ruled_out},
            remaining=remaining_535_causes(settings, mailbox, claims),
        )
    meaning = _entry_meaning(err)
    return Check("smtp.auth", title, "fail", f"{reply}" + (f": {meaning}" if meaning else ""),
                 fix=(err.hint or "").replace("<mailbox>", mailbox), cause=err.catalog or err.code,
                 evidence={"reply": reply})


# -- Graph --------------------------------------------------------------------------------------------


def graph_probe(
    settings: Settings, *, mailbox: str, token: str, claims: Mapping[str, Any], http: Any
) -> Check:
    """Read at most one message id from Sent Items when the app may read; otherwise say it was not probed."""
    check_id, title = "graph.mailbox", "graph: mailbox reachable"
    roles = {str(r) for r in claims.get("roles") or ()}
    if not roles & set(READ_ROLES):
        return _skip(check_id, title,
                     "not probed: the app has no read permission (Mail.ReadBasic is optional), so whether an "
                     "access policy lets it use this mailbox shows only when sending (--send-test-to ADDR)")
    from urllib.parse import quote

    return sent_items_probe(
        settings, http, url=f"{settings.graph_url}/v1.0/users/{quote(mailbox)}/mailFolders/sentitems/messages",
        token=token, passed=f"the app may use {mailbox} (read Sent Items); sending is proven only by --send-test-to",
        reading=f"reading {mailbox}'s Sent Items")


def sent_items_probe(settings: Settings, http: Any, *, url: str, token: str, passed: str, reading: str) -> Check:
    """One message id from the Sent Items at ``url``: reachable and permitted, or the classified refusal."""
    check_id, title = "graph.mailbox", "graph: mailbox reachable"
    client_request_id = str(uuid.uuid4())
    try:
        response = http.get(url, params={"$top": "1", "$select": "id"},
                            headers={"Authorization": f"Bearer {token}", "client-request-id": client_request_id})
    except Exception as exc:
        return Check(check_id, title, "fail", f"cannot reach {settings.graph_url}: {exc}",
                     fix="check egress to Graph (proxy, firewall, OUTBOX_GRAPH_URL, OUTBOX_CA_BUNDLE)",
                     cause="network.unreachable")
    if response.status_code == 200:
        return Check(check_id, title, "pass", passed, evidence={"requestId": response.headers.get("request-id")})
    from shared.classify import classify_graph_response

    err = classify_graph_response(response.status_code, response.content, response.headers, operation="lookup")
    return Check(
        check_id, title, "fail", f"{reading}: {_describe(err)}",
        fix=err.hint, cause=err.catalog or err.code, detail=err.detail or "",
        evidence={"requestId": err.request_id, "clientRequestId": client_request_id},
    )


# -- the whole run ------------------------------------------------------------------------------------


@dataclass
class Probes:
    """What doctor talks to: outbox's own certificate, token and transport objects (``Senders``)."""

    certificates: CertificateProvider
    tokens: TokenProvider
    http: Any
    send_test: Callable[[Transport, str, str, str], str] | None = None
    """(transport, sender, to, message id) -> what the server answered; raises OutboxError. Really sends."""
    find_sent: Callable[[str, str], bool | None] | None = None
    """(mailbox, Message-ID) -> whether its Sent Items hold it (None: the app may not read them)."""
    closer: Callable[[], None] | None = None
    delegated: Any = None  # DelegatedTokens, when the mailbox sends as a signed-in user
    signins: Any = None  # its SigninStore

    @classmethod
    def from_settings(cls, settings: Settings, *, mailbox: str | None = None) -> Probes:
        from shared.senders import Senders

        stores = None
        if mailbox is not None and settings.delegated_account(mailbox) is not None and (
                settings.storage.connection_string or settings.storage.blob_service_uri):
            from shared.storage import StorageOptions, build_stores

            stores = build_stores(settings, StorageOptions.cli(settings))
        senders = Senders.from_settings(settings, signins=stores.signins if stores else None)

        def send_test(transport: Transport, sender: str, to: str, message_id: str) -> str:
            return send_test_message(senders.transport(transport), sender, to, message_id=message_id)

        def find_sent(mailbox: str, internet_message_id: str) -> bool | None:
            from shared.transports.graph import GraphTransport

            graph = senders.transport("graph")
            return graph.find_by_message_id(mailbox, internet_message_id) if isinstance(graph, GraphTransport) else None

        def close() -> None:
            senders.close()
            if stores is not None:
                stores.close()

        return cls(senders.certificates, senders.tokens, senders.http_client, send_test, find_sent, close,
                   senders.delegated, stores.signins if stores else None)

    def close(self) -> None:
        if self.closer is not None:
            with contextlib.suppress(Exception):  # best effort at the end of a diagnostic run
                self.closer()


def send_test_message(transport: Any, sender: str, to: str, *, message_id: str) -> str:
    """One small message through outbox's own transport, exactly as the pipeline sends."""
    from shared.message import parse_message
    from shared.message_id import make_message_id

    stamp = _iso(dt.datetime.now(dt.UTC))
    message = parse_message({
        "id": message_id,
        "from": sender,
        "to": [to],
        "subject": f"outbox doctor test {stamp}",
        "text": f"Sent by `outbox doctor --send-test-to` at {stamp} from {sender}. No action needed.",
    })
    result = transport.send(message, internet_message_id=make_message_id(message_id, sender), blobs=None)
    ids = ", ".join(i for i in (result.request_id, result.client_request_id) if i)
    return f"accepted ({result.path}{'; ' + ids if ids else ''})"


def run_doctor(
    settings: Settings | None,
    *,
    mailbox: str,
    transports: Sequence[Transport],
    sender: str | None = None,
    send_test_to: str | None = None,
    settings_problems: Mapping[str, str] | None = None,
    settings_warnings: Mapping[str, str] | None = None,
    probes: Probes | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    on_check: Callable[[Check], None] | None = None,
    sent_copy_wait_s: float = SENT_COPY_WAIT_S,
) -> Report:
    """Run the checklist for ``mailbox`` (authenticating as it) sending as ``sender`` (default: itself).

    After an SMTP test send, doctor looks for it in the sender's Sent Items for up to ``sent_copy_wait_s``
    and says whether this tenant keeps SMTP submissions there (``smtp.sent_copy``)."""
    sender = sender or mailbox
    report = Report(mailbox, sender, tuple(transports))

    known: dict[str, str | None] = {
        "<mailbox>": mailbox, "<from address>": sender, "<from>": sender, "<sending mailbox>": mailbox,
        "<sending mailbox or service principal>": mailbox,
        "<client id>": settings.client_id if settings else None,
        "<application (client) id>": settings.client_id if settings else None,
    }

    def add(check: Check) -> Check:
        check.fix = personalize(check.fix, known)
        report.checks.append(check)
        if on_check is not None:
            on_check(check)
        return check

    if add(check_settings(settings, settings_problems, settings_warnings)).status == "fail" or settings is None:
        return report
    add(check_allowed(settings, [mailbox, sender]))
    own = probes is None
    probes = probes or Probes.from_settings(settings, mailbox=mailbox)
    try:
        account = settings.delegated_account(mailbox)
        if account is not None and probes.delegated is None:
            add(Check("signin.stored", "sign-in stored", "fail",
                      f"{mailbox} sends as a signed-in user, and its sign-in lives in the storage account",
                      fix="set AzureWebJobsStorage (or its identity-based form) as the function has it",
                      cause="settings.storage_missing"))
        elif account is not None:
            from shared.signins.doctor import delegated_checks

            delegated_checks(settings, tokens=probes.delegated, store=probes.signins, http=probes.http,
                             mailbox=mailbox.lower(), account=account, transports=tuple(transports), add=add,
                             now=now())
            for transport in transports:
                # The user's token was checked above; the test send asks for it again through the transport.
                _send_test(add, probes, transport, mailbox, sender, send_test_to, "delegated", None,
                           settings=settings, sent_copy_wait_s=sent_copy_wait_s)
        else:
            _run_checks(settings, probes, add, mailbox, sender, tuple(transports), send_test_to, now, known,
                        sent_copy_wait_s)
    finally:
        if own:
            probes.close()
    return report


def _run_checks(
    settings: Settings,
    probes: Probes,
    add: Callable[[Check], Check],
    mailbox: str,
    sender: str,
    transports: tuple[Transport, ...],
    send_test_to: str | None,
    now: Callable[[], dt.datetime],
    known: dict[str, str | None],
    sent_copy_wait_s: float,
) -> None:
    vault, material = check_keyvault(settings, probes.certificates)
    add(vault)
    blocked: str | None = None
    if material is None:
        add(_skip("certificate", "certificate valid", "skipped: the certificate could not be read"))
        blocked = "the certificate could not be read"
    else:
        cert = add(check_certificate(settings, material, now()))
        if not cert.ok:
            blocked = f"the certificate is unusable ({cert.cause})"

    for transport in transports:
        token: str | None = None
        claims: dict[str, Any] | None = None
        problem = blocked
        if blocked:
            add(_skip(f"{transport}.token", f"{transport}: token acquired", f"skipped: {blocked}"))
            add(_skip(f"{transport}.claims", f"{transport}: token claims", f"skipped: {blocked}"))
        else:
            token_check, token = check_token(settings, probes.tokens, transport)
            add(token_check)
            if token is None:
                problem = f"no {transport} token ({token_check.cause})"
                add(_skip(f"{transport}.claims", f"{transport}: token claims", f"skipped: {problem}"))
            else:
                from shared.tokens import decode_claims

                claims = decode_claims(token)
                oid = str(claims.get("oid") or "") or None
                known.update({"<service principal object id>": oid, "<service principal id>": oid})
                claims_check = add(check_claims(settings, claims, transport, now()))
                if claims_check.status == "fail":
                    problem = f"the token cannot work ({claims_check.cause})"
                    token = None
        if transport == "smtp":
            probe = smtp_checks(settings, mailbox=mailbox, sender=sender, token=token, claims=claims,
                                token_problem=problem)
        elif token is None or claims is None:
            probe = [_skip("graph.mailbox", "graph: mailbox reachable", f"skipped: {problem}")]
        else:
            probe = [graph_probe(settings, mailbox=mailbox, token=token, claims=claims, http=probes.http)]
        for check in probe:
            add(check)
        failed = next((c for c in probe if c.status == "fail"), None)
        if token is not None and failed is not None:
            problem, token = f"{failed.title} failed", None
        _send_test(add, probes, transport, mailbox, sender, send_test_to, token, problem, settings=settings,
                   sent_copy_wait_s=sent_copy_wait_s)


def _send_test(
    add: Callable[[Check], Check],
    probes: Probes,
    transport: Transport,
    mailbox: str,
    sender: str,
    send_test_to: str | None,
    token: str | None,
    problem: str | None,
    *,
    settings: Settings,
    sent_copy_wait_s: float,
) -> None:
    check_id, title = f"{transport}.send", f"{transport}: test message sent"
    copy_id, copy_title = "smtp.sent_copy", "smtp: copy in Sent Items"
    if not send_test_to:
        add(_skip(check_id, title, "not requested (--send-test-to ADDR really sends one message)"))
        if transport == "smtp":
            add(_skip(copy_id, copy_title, "not probed: shows only after a test send (--send-test-to ADDR)"))
        return
    if token is None:
        add(_skip(check_id, title, f"skipped: {problem or 'no usable token'}"))
        return
    if probes.send_test is None:
        add(_skip(check_id, title, "skipped: no sender available"))
        return
    started = time.monotonic()
    message_id = f"doctor-{uuid.uuid4().hex}"
    try:
        what = probes.send_test(transport, sender, send_test_to, message_id)
    except OutboxError as exc:
        add(Check(check_id, title, "fail", f"refused: {_describe(exc)}", fix=exc.hint,
                  cause=exc.catalog or exc.code, detail=exc.detail or "",
                  evidence={"requestId": exc.request_id, "clientRequestId": exc.client_request_id}))
        return
    except OSError as exc:
        add(Check(check_id, title, "fail", f"sending failed: {exc}", cause="network.unreachable"))
        return
    add(Check(check_id, title, "pass", f"{what} to {send_test_to} in {time.monotonic() - started:.1f} s"))
    if transport == "smtp":
        from shared.message_id import make_message_id

        add(sent_copy_check(settings, probes.find_sent, sender, make_message_id(message_id, sender),
                            wait_s=sent_copy_wait_s))


def sent_copy_check(settings: Settings, find_sent: Callable[[str, str], bool | None] | None, sender: str,
                    internet_message_id: str, *, wait_s: float, sleep: Callable[[float], None] = time.sleep) -> Check:
    """Whether Exchange kept the SMTP test message in the sender's Sent Items, looked for by its
    Message-ID for up to ``wait_s``: the tenant's behaviour, which OUTBOX_SMTP_SENT_COPY should match
    (Microsoft's SMTP AUTH article says submissions are stored; the seed FAQ says they are not)."""
    check_id, title = "smtp.sent_copy", "smtp: copy in Sent Items"
    mode = settings.smtp_sent_copy
    if find_sent is None:
        return _skip(check_id, title, "not probed: no Graph transport to look with")
    started = time.monotonic()
    interval = max(0.05, min(SENT_COPY_POLL_S, wait_s / 10))
    while True:
        try:
            found = find_sent(sender, internet_message_id)
        except OutboxError as exc:
            return Check(check_id, title, "warn", f"could not look: {_describe(exc)}", fix=exc.hint,
                         cause=exc.catalog or exc.code, detail=exc.detail or "")
        waited = time.monotonic() - started
        if found is None:
            return _skip(check_id, title, "not probed: the app may not read Sent Items (Mail.ReadBasic), so "
                         "whether this tenant keeps SMTP submissions there shows only in the mailbox itself")
        if found:
            summary = f"Exchange kept the SMTP submission in {sender}'s Sent Items (found after {waited:.0f} s)"
            if mode == "always":
                return Check(check_id, title, "warn", summary + "; OUTBOX_SMTP_SENT_COPY=always saves a second one",
                             fix="set OUTBOX_SMTP_SENT_COPY=never (or auto) for this tenant",
                             cause="sent_copy.kept_by_exchange")
            return Check(check_id, title, "pass", f"{summary}: OUTBOX_SMTP_SENT_COPY={mode} is right for this tenant")
        if waited >= wait_s:
            break
        sleep(interval)
    summary = (f"no copy of the SMTP submission in {sender}'s Sent Items after {wait_s:.0f} s: this tenant does "
               "not keep them (or keeps them later)")
    if mode == "never":
        return Check(check_id, title, "warn", summary,
                     fix="to keep copies, set OUTBOX_SMTP_SENT_COPY=auto (looks first) or always, and grant the app "
                     "Mail.ReadWrite (scope it to the sending mailboxes with an RBAC for Applications scope)",
                     cause="sent_copy.not_kept")
    return Check(check_id, title, "pass", f"{summary}; OUTBOX_SMTP_SENT_COPY={mode} saves one through Graph")
