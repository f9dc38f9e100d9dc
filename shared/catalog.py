"""The error catalog: every failure shape outbox knows, as one immutable table.

This is the single source for three things (design principle 7):
- the classifier (``shared.classify`` builds its lookup indexes from these rows),
- the fakes in ``harness/`` (they produce replies and responses only through the helpers below,
  never from hard-coded text),
- the operator hints in poison messages and in ``docs/errors.md``.

Each row is a :class:`CatalogEntry`. ``text`` is the reply or message exactly as the service sends it,
with ``{placeholders}`` that the helpers fill from ``**fmt`` or from the row's ``defaults``. ``source``
says where the fact comes from: a Microsoft document, ``[obs]`` (seen verbatim in several unrelated
public reports) or ``assumption`` (nothing verified: outbox's own choice, documented as such).

Rows whose ``fallback`` is true are not a reply any service is known to send: they are what the
classifier answers when nothing more specific matches, and their ``text`` is only a sample.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from string import Formatter
from types import MappingProxyType
from typing import Any, Final

from shared.errors import CATEGORIES

_EXO_HOST: Final = "DM6PR04MB1234.namprd04.prod.outlook.com"
_REF: Final = "reference/m365-send-errors.md"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One failure shape. ``status`` is the SMTP reply code or the HTTP status (None: no reply at all)."""

    name: str
    transport: str | None
    status: int | None
    code: str
    text: str
    category: str
    retryable: bool
    maybe_delivered: bool
    hint: str
    source: str
    meaning: str = ""
    # Fragments (case-insensitive, any one suffices) that pick this row when several rows share
    # (status, code): e.g. the four meanings of 5.7.139, the two ErrorAccessDenied messages.
    match: tuple[str, ...] = ()
    # SMTP: the command the reply answers (connect, ehlo, starttls, auth, mail, rcpt, data).
    stage: str | None = None
    # Entra: the OAuth "error" value of the token endpoint body.
    oauth_error: str | None = None
    # Key Vault: error.innererror.code.
    inner_code: str | None = None
    # The response carries a Retry-After header.
    retry_after: bool = False
    # At most this many retries for this failure (None: the pipeline's OUTBOX_MAX_ATTEMPTS).
    max_retries: int | None = None
    # Drop the cached token (and re-read the certificate) before retrying.
    refresh_credentials: bool = False
    # This row answers for its status (SMTP reply code / HTTP status) when no code-level row matches.
    status_default: bool = False
    # SMTP: this row answers for unrecognised replies of its class (4xx/5xx) at its stage.
    stage_default: bool = False
    # Not a known server text: the classifier's answer when nothing specific matched.
    fallback: bool = False
    # Graph: the body carries innerError (Graph always does; Outlook REST, e.g. the upload URL, does not).
    inner_error: bool = True
    # Further codes (SMTP enhanced status codes) that mean the same thing.
    also_codes: tuple[str, ...] = ()
    defaults: tuple[tuple[str, str], ...] = field(default=())
    # Entra: "delegated" rows answer only for a user's sign-in (device code, authorization code, refresh
    # token grants), where some numbers (65001, 7000218) mean something else than for the app-only grant.
    flow: str | None = None

    def placeholders(self) -> frozenset[str]:
        return frozenset(f for _, f, _, _ in Formatter().parse(self.text) if f)

    def render(self, **fmt: object) -> str:
        """``text`` with placeholders filled from ``fmt``, then from ``defaults``."""
        values: dict[str, object] = dict(self.defaults)
        values.update(fmt)
        missing = self.placeholders() - set(values)
        if missing:
            raise KeyError(f"{self.name}: missing placeholder values {sorted(missing)}")
        return self.text.format_map(values)

    def parse(self, text: str) -> dict[str, str]:
        """The placeholder values found in ``text`` when it has this row's shape, else ``{}``."""
        if not self.placeholders():
            return {}
        parts = list(Formatter().parse(self.text))
        last = max(i for i, (_, name, _, _) in enumerate(parts) if name)
        pattern = "".join(re.escape(literal) + f"(?P<{name}>.+?)" for literal, name, _, _ in parts[: last + 1])
        # Servers append to their texts over time: after the last value, only the next word must agree.
        tail = parts[last + 1][0] if last + 1 < len(parts) else ""
        words = tail.split()
        if not words:
            pattern += "$"
        elif not any(c.isalnum() for c in tail):
            # Closing punctuation ("]", "."): it must end a word, not sit inside the value.
            pattern += re.escape(tail.rstrip()) + r"(?:\s|$)"
        else:
            word = next(w for w in words if any(c.isalnum() for c in w))
            pattern += re.escape(tail[: tail.find(word) + len(word)])
        found = re.search(pattern, text.strip(), re.DOTALL)
        return {k: v for k, v in found.groupdict().items() if v is not None} if found else {}

    def hint_for(self, values: Mapping[str, str]) -> str:
        """``hint`` with ``{placeholders}`` filled from ``values`` (``<name>`` where unknown)."""
        if "{" not in self.hint:
            return self.hint
        return self.hint.format_map(_Blank(values))


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


# --- Hints used by several rows -------------------------------------------------------------------

_HINT_535 = (
    "Exchange rejected the OAuth token and does not say why; check, in order: "
    "(1) the token was requested for scope https://outlook.office365.com/.default and its 'aud' is "
    "https://outlook.office365.com (a Graph token gives 535); "
    "(2) its 'roles' claim contains SMTP.SendAsApp: add the Office 365 Exchange Online application "
    "permission SMTP.SendAsApp to the app registration and grant admin consent; "
    "(3) Exchange knows the app: New-ServicePrincipal -AppId <application (client) id> -ObjectId "
    "<object id of the Enterprise Application, not of the app registration>; "
    "(4) the service principal may use the mailbox: Add-MailboxPermission -Identity <mailbox> "
    "-User <service principal id> -AccessRights FullAccess; "
    "(5) the user= in AUTH XOAUTH2 is exactly that mailbox's address; "
    "(6) the token has not expired (outbox renews it a few minutes before 'exp'). "
    "outbox retries once with a fresh token before giving up."
)
_HINT_SMTP_AUTH_DISABLED_MAILBOX = (
    "SMTP AUTH is switched off for this mailbox (this also blocks OAuth): "
    "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false "
    "(see https://aka.ms/smtp_auth_disabled)"
)
_HINT_SMTP_AUTH_DISABLED_TENANT = (
    "SMTP AUTH is switched off for the whole organisation: either enable it for the sending mailbox only "
    "with Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false (a per-mailbox "
    "setting overrides the tenant one), or organisation-wide with Set-TransportConfig "
    "-SmtpClientAuthenticationDisabled $false; or send through Graph (OUTBOX_TRANSPORT=graph)"
)
_HINT_SEND_AS = (
    "the From address is not the authenticated mailbox and that mailbox may not send as it: send from the "
    "mailbox itself, or grant Send As with Add-RecipientPermission -Identity <from address> -Trustee "
    "<sending mailbox or service principal> -AccessRights SendAs (takes up to an hour)"
)
_HINT_SMTP_CONCURRENCY = (
    "more than 3 SMTP connections for this mailbox at once (possibly from several instances or another "
    "application): outbox keeps OUTBOX_SMTP_CONNECTIONS (3) per mailbox per process; lower it or cap the "
    "Function's instance count"
)
_HINT_SENDER_THROTTLED = (
    "Exchange blocked SMTP AUTH for this mailbox after repeated identical failures ({why}); fix the cause "
    "first, then wait: the block expires after a period Microsoft chooses and support cannot lift it. "
    "Do not retry blindly; a different (correctly configured) mailbox works meanwhile."
)
_HINT_GRAPH_ACCESS_POLICY = (
    "the app may not use this mailbox: an Application Access Policy or RBAC for Applications scope "
    "excludes it. Check with Test-ApplicationAccessPolicy -Identity <mailbox> -AppId <client id>; add the "
    "mailbox to the policy's mail-enabled security group (New-ApplicationAccessPolicy -AppId <client id> "
    "-PolicyScopeGroupId <group> -AccessRight RestrictAccess), or with RBAC for Applications: "
    "New-ManagementRoleAssignment -App <service principal object id> -Role \"Application Mail.Send\" "
    "-CustomResourceScope <management scope including the mailbox> (Test-ServicePrincipalAuthorization "
    "shows the result). Policy changes take up to an hour to apply."
)
_HINT_GRAPH_NO_MAIL_SEND = (
    "the token has no Mail.Send application role: in the app registration add Microsoft Graph application "
    "permission Mail.Send and grant admin consent (check the token's 'roles' claim)"
)
_HINT_TRANSIENT = "temporary condition on Microsoft's side; outbox retries with backoff"
_HINT_GRAPH_THROTTLED = (
    "Graph throttled this app for this mailbox; outbox waits for Retry-After and keeps at most "
    "OUTBOX_GRAPH_CONCURRENCY (4) requests in flight per mailbox"
)
_HINT_AMBIGUOUS = (
    "no answer arrived after the request was sent, so the message MAY have been sent; outbox checks "
    "Sent Items before resending (OUTBOX_ON_AMBIGUOUS=lookup) or follows OUTBOX_ON_AMBIGUOUS"
)
_HINT_CERT = (
    "the client assertion was signed with a certificate Entra does not know for this app: upload the public "
    "certificate from Key Vault (OUTBOX_CERT_NAME) to the app registration (Certificates & secrets), or make "
    "sure OUTBOX_CLIENT_ID names the app that holds it; thumbprints must match"
)


def _smtp(
    name: str,
    status: int,
    code: str,
    text: str,
    category: str,
    *,
    retryable: bool,
    hint: str,
    source: str,
    stage: str | None = None,
    **extra: Any,
) -> CatalogEntry:
    return CatalogEntry(
        name=name, transport="smtp", status=status, code=code, text=text, category=category,
        retryable=retryable, maybe_delivered=False, hint=hint, source=source, stage=stage,
        **extra,
    )


def _graph(
    name: str,
    status: int,
    code: str,
    text: str,
    category: str,
    *,
    retryable: bool,
    hint: str,
    source: str,
    maybe_delivered: bool = False,
    **extra: Any,
) -> CatalogEntry:
    return CatalogEntry(
        name=name, transport="graph", status=status, code=code, text=text, category=category,
        retryable=retryable, maybe_delivered=maybe_delivered, hint=hint, source=source,
        **extra,
    )


def _entra(
    name: str,
    status: int,
    number: int | None,
    oauth_error: str,
    text: str,
    category: str,
    *,
    retryable: bool,
    hint: str,
    source: str,
    meaning: str,
    **extra: Any,
) -> CatalogEntry:
    code = f"AADSTS{number}" if number is not None else oauth_error
    full = f"{code}: {text}" if number is not None else text
    return CatalogEntry(
        name=name, transport="entra", status=status, code=code, text=full, category=category,
        retryable=retryable, maybe_delivered=False, hint=hint, source=source, meaning=meaning,
        oauth_error=oauth_error, **extra,
    )


def _keyvault(
    name: str,
    status: int,
    code: str,
    text: str,
    category: str,
    *,
    retryable: bool,
    hint: str,
    source: str,
    **extra: Any,
) -> CatalogEntry:
    return CatalogEntry(
        name=name, transport="keyvault", status=status, code=code, text=text, category=category,
        retryable=retryable, maybe_delivered=False, hint=hint, source=source,
        **extra,
    )


def _net(
    name: str,
    code: str,
    text: str,
    category: str,
    *,
    retryable: bool,
    maybe_delivered: bool,
    hint: str,
    source: str,
    meaning: str,
    max_retries: int | None = None,
) -> CatalogEntry:
    return CatalogEntry(
        name=name, transport=None, status=None, code=code, text=text, category=category,
        retryable=retryable, maybe_delivered=maybe_delivered, hint=hint, source=source, meaning=meaning,
        max_retries=max_retries,
    )


_HOST = (("host", _EXO_HOST),)

_ENTRIES: Final[tuple[CatalogEntry, ...]] = (
    # ------------------------------------------------------------------ SMTP AUTH XOAUTH2 (587)
    _smtp(
        "smtp.auth_failed", 535, "5.7.3", "Authentication unsuccessful [{host}]", "auth",
        retryable=True, max_retries=1, refresh_credentials=True, stage="auth", status_default=True,
        hint=_HINT_535, source=f"{_REF} §1; office-developer-exchange-docs how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth.md",
        meaning="token rejected: wrong audience, no SMTP.SendAsApp role or consent, no Exchange service "
        "principal or wrong ObjectId, no mailbox permission, user= not the authorised mailbox, expired token",
        defaults=_HOST,
    ),
    _smtp(
        "smtp.auth_disabled_mailbox", 535, "5.7.139",
        "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. "
        "Visit https://aka.ms/smtp_auth_disabled for more information. [{host}]",
        "permission", retryable=False, stage="auth", match=("disabled for the Mailbox",),
        hint=_HINT_SMTP_AUTH_DISABLED_MAILBOX, source=f"{_REF} §1; SupportArticles-docs smtp-submission-improvements.md",
        meaning="SMTP AUTH disabled on the mailbox (applies to OAuth too)", defaults=_HOST,
    ),
    _smtp(
        "smtp.auth_disabled_tenant", 535, "5.7.139",
        "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
        "Visit https://aka.ms/smtp_auth_disabled for more information. [{host}]",
        "permission", retryable=False, stage="auth", match=("disabled for the Tenant",),
        hint=_HINT_SMTP_AUTH_DISABLED_TENANT, source=f"{_REF} §1; SupportArticles-docs smtp-submission-improvements.md",
        meaning="SMTP AUTH disabled for the organisation (applies to OAuth too)", defaults=_HOST,
    ),
    _smtp(
        "smtp.auth_security_defaults", 535, "5.7.139",
        "Authentication unsuccessful, user is locked by your organization's security defaults policy. "
        "Contact your administrator. [{host}]",
        "permission", retryable=False, stage="auth", match=("security defaults",),
        hint="the tenant's Entra security defaults block this sign-in: replace security defaults with "
        "Conditional Access policies that allow the app (Entra admin center > Properties > Manage security "
        "defaults), or send through Graph (OUTBOX_TRANSPORT=graph)",
        source=f"[obs] {_REF} §1 (wording after 'unsuccessful,' seen in public reports)",
        meaning="security defaults block SMTP AUTH", defaults=_HOST,
    ),
    _smtp(
        "smtp.auth_conditional_access", 535, "5.7.139",
        "Authentication unsuccessful, the request did not meet the criteria to be authenticated "
        "successfully. Contact your administrator. [{host}]",
        "permission", retryable=False, stage="auth", match=("did not meet the criteria",),
        hint="a Conditional Access policy blocked the sign-in: check the Entra sign-in logs (service principal "
        "sign-ins) for the policy and exclude the app or allow its location",
        source=f"[obs] {_REF} §1", meaning="Conditional Access blocked the sign-in", defaults=_HOST,
    ),
    _smtp(
        "smtp.auth_blocked", 535, "5.7.139", "Authentication unsuccessful, {reason} [{host}]",
        "permission", retryable=False, stage="auth", fallback=True,
        hint="Exchange refused SMTP AUTH by policy (5.7.139): check Get-CASMailbox <mailbox> | fl "
        "SmtpClientAuthenticationDisabled, Get-TransportConfig | fl SmtpClientAuthenticationDisabled, "
        "security defaults and Conditional Access sign-in logs",
        source="outbox fallback for an unrecognised 5.7.139 text",
        meaning="SMTP AUTH refused by a policy outbox does not recognise",
        defaults=(*_HOST, ("reason", "the request was refused by policy.")),
    ),
    _smtp(
        "smtp.basic_auth_disabled", 550, "5.7.30", "Basic authentication is not supported for Client Submission.",
        "auth", retryable=False, stage="auth",
        hint="the client tried Basic authentication; outbox always uses AUTH XOAUTH2, so an SMTP server that "
        "is not Exchange Online's (OUTBOX_SMTP_HOST) or a proxy is in the way",
        source=f"{_REF} §1", meaning="Basic auth retired for client submission",
    ),
    _smtp(
        "smtp.auth_before_tls", 504, "5.7.4", "Unrecognized authentication type [{host}]",
        "config", retryable=False, stage="auth",
        hint="AUTH was sent before STARTTLS or XOAUTH2 is not offered: check OUTBOX_SMTP_HOST/OUTBOX_SMTP_PORT "
        "point at smtp.office365.com:587 (STARTTLS), then EHLO again after TLS",
        source=f"{_REF} §1", meaning="AUTH before STARTTLS or mechanism not offered", defaults=_HOST,
    ),
    _smtp(
        "smtp.bad_user", 501, "5.5.124", "Invalid XOAUTH2 auth data - User address provided is not valid",
        "auth", retryable=False, stage="auth",
        hint="the user= in AUTH XOAUTH2 is not a valid address: it must be the sending mailbox's UPN or primary "
        "SMTP address (the message's 'from')",
        source=f"{_REF} §1", meaning="bad user= in the XOAUTH2 string",
    ),
    _smtp(
        "smtp.not_authenticated", 530, "5.7.57", "Client not authenticated to send mail. [{host}]",
        "auth", retryable=False, stage="mail", status_default=True,
        hint="MAIL FROM was sent without a successful AUTH: the XOAUTH2 step failed earlier (see the auth "
        "error), or the connection was reused after an authentication failure",
        source=f"{_REF} §1", meaning="MAIL FROM without successful AUTH", defaults=_HOST,
    ),
    _smtp(
        "smtp.send_as_denied", 550, "5.7.60", "SMTP; Client does not have permissions to send as this sender",
        "permission", retryable=False, stage="mail",
        hint=_HINT_SEND_AS, source=f"{_REF} §1", meaning="From is not the authenticated mailbox",
    ),
    _smtp(
        "smtp.send_as_denied_submission", 554, "5.2.252",
        "SendAsDenied; {mailbox} not allowed to send as {sender}; "
        "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        "permission", retryable=False, stage="data", match=("SendAsDenied",),
        hint=_HINT_SEND_AS, source=f"{_REF} §1 (text after the second ';' abbreviated in the reference)",
        meaning="From is not the authenticated mailbox, refused at submission",
        defaults=(("mailbox", "app@contoso.example"), ("sender", "other@contoso.example")),
    ),
    _smtp(
        "smtp.sender_throttled", 550, "5.2.252", "Sender throttled due to continuous send as denied errors.",
        "quota", retryable=False, stage="data", match=("send as denied errors",),
        hint=_HINT_SENDER_THROTTLED.format(why="Send As denied: " + _HINT_SEND_AS),
        source="SupportArticles-docs 'Continuous error throttling for SMTP AUTH submissions'",
        meaning="mailbox blocked after repeated Send As denials",
    ),
    _smtp(
        "smtp.sender_throttled_mailbox_full", 550, "5.2.251",
        "Sender throttled due to continuous mailbox full errors.",
        "quota", retryable=False, stage="data", match=("mailbox full errors",),
        hint=_HINT_SENDER_THROTTLED.format(why="mailbox full: free space or raise the quota"),
        source="SupportArticles-docs 'Continuous error throttling for SMTP AUTH submissions'",
        meaning="mailbox blocked after repeated mailbox-full failures",
    ),
    _smtp(
        "smtp.sender_throttled_license", 550, "5.2.253",
        "Sender throttled due to continuous invalid license errors.",
        "quota", retryable=False, stage="data", match=("invalid license errors",),
        hint=_HINT_SENDER_THROTTLED.format(why="invalid licence: assign an Exchange Online licence to the mailbox"),
        source="SupportArticles-docs 'Continuous error throttling for SMTP AUTH submissions'",
        meaning="mailbox blocked after repeated licence failures",
    ),
    _smtp(
        "smtp.sender_throttled_too_many_recipients", 550, "5.2.254",
        "Sender throttled due to continuous too many recipients errors.",
        "quota", retryable=False, stage="data", match=("too many recipients errors",),
        hint=_HINT_SENDER_THROTTLED.format(why="too many recipients: keep messages under the recipient limit"),
        source="SupportArticles-docs 'Continuous error throttling for SMTP AUTH submissions'",
        meaning="mailbox blocked after repeated too-many-recipients failures",
    ),
    _smtp(
        "smtp.sender_throttled_invalid_recipients", 550, "5.2.255",
        "Sender throttled due to continuous invalid recipients errors.",
        "quota", retryable=False, stage="data", match=("invalid recipients errors",),
        hint=_HINT_SENDER_THROTTLED.format(why="invalid recipients: clean the producer's address lists"),
        source="SupportArticles-docs 'Continuous error throttling for SMTP AUTH submissions' "
        "(some public reports quote this text with 5.2.254)",
        meaning="mailbox blocked after repeated invalid-recipient failures",
    ),
    _smtp(
        "smtp.thread_limit", 432, "4.3.2", "STOREDRV.ClientSubmit; sender thread limit exceeded",
        "throttled", retryable=True, stage="data", match=("thread limit",),
        hint=_HINT_SMTP_CONCURRENCY,
        source=f"{_REF} §1", meaning="more than 3 concurrent submissions per mailbox",
    ),
    _smtp(
        "smtp.concurrent_connections", 432, "4.3.2", "Concurrent connections limit exceeded.",
        "throttled", retryable=True, stage="data",
        hint=_HINT_SMTP_CONCURRENCY,
        source="SupportArticles-docs 'Message storage and concurrent connection throttling for SMTP Authenticated "
        "Submission' (text as documented; every connection over three gets it)",
        meaning="more than 3 concurrent connections per mailbox",
    ),
    _smtp(
        "smtp.submission_quota", 554, "5.2.0",
        "STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        "quota", retryable=False, stage="data", match=("SubmissionQuotaExceeded",),
        hint="the mailbox passed its recipient rate limit (10,000 recipients per rolling 24 hours): pause this "
        "mailbox until the window rolls over, or spread the volume over several mailboxes",
        source="SupportArticles-docs 'Message storage and concurrent connection throttling for SMTP Authenticated "
        f"Submission' (text as documented); {_REF} §1",
        meaning="more than 10,000 recipients in 24 h",
    ),
    _smtp(
        "smtp.outbound_spam", 554, "5.2.0",
        "STOREDRV.Submission.Exception:OutboundSpamException; Failed to process message due to a permanent "
        "exception with message [BeginDiagnosticData]WASCL UserAction verdict is not None. Actual verdict is "
        "Suspend, ShowTierUpgrade. OutboundSpamException: WASCL UserAction verdict is not None.[EndDiagnosticData]",
        "quota", retryable=False, stage="data", match=("OutboundSpamException",),
        hint="Exchange Online Protection suspended this mailbox's sending as outbound spam: an admin releases it "
        "in the Microsoft Defender portal (Restricted entities) once the cause is found; retries do not help",
        source="[obs] DesertsP/Valine-Admin#26 (a 554 5.2.0 reply to an SMTP AUTH submission, full text); "
        "reference/fidelity-gaps.md #15",
        meaning="mailbox suspended for outbound spam",
    ),
    _smtp(
        "smtp.send_as_denied_storedrv", 554, "5.2.0",
        "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process "
        "message due to a permanent exception with message Cannot submit message.",
        "permission", retryable=False, stage="data", match=("SendAsDeniedException",),
        hint=_HINT_SEND_AS,
        source="[obs] the SendAsDenied text with enhanced code 5.2.0 in public test code (fidelity-gaps.md #15; "
        "the enhanced code is unverified: 5.2.252 is the documented one, a separate row)",
        meaning="From is not the authenticated mailbox (the 5.2.0 form)",
    ),
    _smtp(
        "smtp.max_submission", 554, "5.2.0",
        "STOREDRV.Submission.Exception:MessageSizeExceededException.MapiExceptionMaxSubmissionExceeded; "
        "Message size exceeds maximum size limit",
        "size", retryable=False, stage="data", match=("MaxSubmissionExceeded", "MessageSizeExceeded"),
        hint="the message is larger than the mailbox's MaxSendSize once encoded (base64 adds ~33%): shrink the "
        "attachments or raise it with Set-Mailbox <mailbox> -MaxSendSize",
        source="[obs] pankleks/pm2-health#52 (MapiExceptionMaxSubmissionExceeded on SMTP AUTH); fidelity-gaps.md #15",
        meaning="over MaxSendSize, refused at submission",
    ),
    _smtp(
        "smtp.mailbox_full", 554, "5.2.2",
        "mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionQuotaExceeded",
        "quota", retryable=False, stage="data",
        hint="the sending mailbox is full (SMTP submissions are kept in Sent Items): clean it up or add a "
        "retention policy that empties Sent Items; check with Get-MailboxStatistics <mailbox>",
        source=f"{_REF} §1; SupportArticles-docs 'Message storage and concurrent connection throttling for SMTP "
        "Authenticated Submission' (also ...MapiExceptionShutoffQuotaExceeded)",
        meaning="sending mailbox over its storage quota",
    ),
    _smtp(
        "smtp.logon_failure", 430, "4.2.0", "STOREDRV; mailbox logon failure",
        "permission", retryable=True, max_retries=2, stage="data",
        hint="Exchange could not open the mailbox for the app; if it persists, check the app's FullAccess: "
        "Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess",
        source=f"{_REF} §1 (seen with app-only; cause not verified)",
        meaning="store logon failure, cause not verified",
    ),
    _smtp(
        "smtp.tls_legacy", 421, "4.7.66",
        "TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. "
        "Visit https://aka.ms/smtp_auth_tls. [{host}]",
        "config", retryable=False, stage="starttls",
        hint="the TLS connection used TLS 1.0/1.1: outbox requires TLS 1.2+; check OUTBOX_CA_BUNDLE / the "
        "Python OpenSSL build and any TLS-intercepting proxy",
        source=f"{_REF} §1 (text after 'not supported.': [obs])", meaning="legacy TLS refused",
        defaults=_HOST,
    ),
    _smtp(
        "smtp.service_closing", 421, "4.3.2", "Service not available, closing transmission channel",
        "transient", retryable=True, stage="connect", status_default=True,
        hint=_HINT_TRANSIENT, source="RFC 5321 §3.8 (421 closing); enhanced code: assumption",
        meaning="server is closing the connection",
    ),
    _smtp(
        "smtp.server_busy", 451, "4.7.500", "Server busy. Please try again later from [{ip}]. ({as_code})",
        "throttled", retryable=True, stage="mail", match=("later from [",),
        hint="Exchange is graylisting or slowing this sender/IP: outbox backs off (minutes to hours); lower the "
        "sending rate (OUTBOX_SMTP_RATE_PER_WINDOW)",
        source=f"{_REF} §1 (the AS code varies)", meaning="graylisting / volume",
        defaults=(("ip", "203.0.113.10"), ("as_code", "AS761")),
    ),
    _smtp(
        "smtp.rate_limited", 451, "4.7.500", "Server busy. Please try again later.",
        "throttled", retryable=True, stage="data",
        hint="over the SMTP AUTH rate (30 messages per minute per mailbox): outbox paces each mailbox with "
        "OUTBOX_SMTP_RATE_PER_WINDOW / OUTBOX_SMTP_RATE_WINDOW_S and backs off",
        source=f"assumption ({_REF} §1: no verified text for the 30/min limit; the fakes use this one)",
        meaning="per-mailbox message rate exceeded",
    ),
    _smtp(
        "smtp.temporary_error", 451, "4.7.0", "Temporary server error. Please try again later. PRX{n}",
        "transient", retryable=True, stage="data",
        hint=_HINT_TRANSIENT, source=f"[obs] {_REF} §1", meaning="transient server error",
        defaults=(("n", "2"),),
    ),
    _smtp(
        "smtp.too_many_recipients", 452, "4.5.3", "Too many recipients",
        "recipient", retryable=False, stage="rcpt",
        hint="the message has more recipients than the mailbox's limit (500 by default, RecipientLimits "
        "1..1000): split it into several messages; resending the same message cannot succeed",
        source=f"{_REF} §1 (exact submission text not verified)", meaning="more recipients than allowed",
    ),
    _smtp(
        "smtp.ndr_too_many_recipients", 550, "5.5.3",
        "Too many recipients in the message. Reduce number of recipients in message and resend.",
        "recipient", retryable=False, stage="data",
        hint="the message had more recipients than the mailbox's limit (500 by default, RecipientLimits 1..1000): "
        "Exchange accepted it and answered with this NDR; split it into several messages",
        source="Microsoft KB 2524095 ('5.5.3 Too many recipients' NDR in Office 365 dedicated: the NDR text); "
        "status 550: assumption. Exchange answers the per-message limit with an NDR after accepting the "
        "submission (KB 842029); the harness's Graph fake records it so",
        meaning="NDR: more recipients than the mailbox's limit",
    ),
    _smtp(
        "smtp.ndr_daily_recipient_limit", 550, "5.1.90",
        "Your message can't be sent because you've reached your daily limit for message recipients",
        "quota", retryable=False, stage="data",
        hint="the mailbox passed its recipient rate limit (10,000 recipients per rolling 24 hours): Exchange "
        "accepted the message and answered with this NDR; pause the mailbox until the window rolls over, or "
        "spread the volume over several mailboxes",
        source="[obs] OfficeDocs-Exchange#2729 (the NDR quoted verbatim, a Microsoft submitter); the rolling "
        "24-hour window: OfficeDocs-O365ServiceDescriptions#201",
        meaning="NDR: daily recipient limit reached",
    ),
    _smtp(
        "smtp.message_too_large", 552, "5.3.4", "Message size exceeds fixed maximum message size",
        "size", retryable=False, stage="data", status_default=True,
        hint="the encoded message is larger than the mailbox's MaxSendSize (base64 adds ~33%): shrink the "
        "attachments or raise it with Set-Mailbox <mailbox> -MaxSendSize",
        source=f"{_REF} §1 (text not verified)", meaning="over MaxSendSize",
    ),
    _smtp(
        "smtp.restricted_sender", 550, "5.1.8", "Access denied, bad outbound sender",
        "quota", retryable=False, stage="mail",
        hint="the mailbox is on the Restricted entities list (suspected compromise): investigate, reset its "
        "credentials, then release it in the Defender portal (Restricted entities)",
        source=f"{_REF} §1; OfficeDocs-Exchange NDR 5.1.8", meaning="account in Restricted users",
    ),
    _smtp(
        "smtp.tenant_blocked", 550, "5.7.705", "Access denied, tenant has exceeded threshold",
        "quota", retryable=False, stage="mail",
        hint="the whole tenant is blocked from sending (suspicious volume): open a Microsoft support ticket",
        source=f"{_REF} §1 (code only); wording: OfficeDocs-Exchange NDR 5.7.705 page, not verified here",
        meaning="tenant-level block",
    ),
    _smtp(
        "smtp.ip_blocked", 550, "5.7.708", "Access denied, traffic not accepted from this IP",
        "quota", retryable=False, stage="mail",
        hint="Exchange refuses traffic from this sending IP (tenant block): open a Microsoft support ticket "
        "and verify the tenant's domains",
        source=f"{_REF} §1", meaning="tenant-level IP block",
    ),
    _smtp(
        "smtp.unregistered_domain", 550, "5.7.750",
        "Service unavailable. Client blocked from sending from unregistered domains",
        "quota", retryable=False, stage="mail",
        hint="the tenant sends from domains it has not verified: add and verify the sender domain in the "
        "Microsoft 365 admin center",
        source=f"{_REF} §1 (code only); wording: OfficeDocs-Exchange NDR 5.7.750 page, not verified here",
        meaning="sending from unregistered domains blocked",
    ),
    _smtp(
        "smtp.spam_abuse", 550, "5.7.501", "Access denied, spam abuse detected",
        "quota", retryable=False, stage="mail", also_codes=("5.7.502", "5.7.503"),
        hint="the sender was banned for spam (possible compromise): reset credentials, investigate, then ask "
        "Microsoft to delist it",
        source=f"{_REF} §1 (codes); wording: assumption", meaning="banned sender (spam)",
    ),
    _smtp(
        "smtp.banned_sender", 550, "5.7.511", "Access denied, banned sender",
        "quota", retryable=False, stage="mail",
        hint="the sender address is banned: reset credentials, investigate, then request delisting "
        "(delist@microsoft.com)",
        source=f"{_REF} §1 (code); wording: assumption", meaning="banned sender",
    ),
    _smtp(
        "smtp.banned_ip", 550, "5.7.606", "Access denied, banned sending IP [{ip}]",
        "quota", retryable=False, stage="connect",
        also_codes=tuple(f"5.7.{n}" for n in range(607, 650)),
        hint="the sending IP is banned: use the delist portal (https://sender.office.com) and investigate "
        "what else sends from it",
        source=f"{_REF} §1 (codes 5.7.606-649); wording: assumption", meaning="banned sending IP",
        defaults=(("ip", "203.0.113.10"),),
    ),
    _smtp(
        "smtp.recipient_rejected", 550, "5.1.10",
        "RESOLVER.ADR.RecipientNotFound; Recipient {recipient} not found by SMTP address lookup",
        "recipient", retryable=False, stage="rcpt", stage_default=True,
        hint="a recipient was refused at RCPT TO (Exchange usually accepts and sends an NDR later): fix the "
        "address in the message",
        source="OfficeDocs-Exchange NDR 5.1.10 (wording); refused at RCPT rather than by NDR: assumption; "
        "also outbox's answer for any unrecognised 5xx at RCPT",
        meaning="recipient refused", defaults=(("recipient", "nobody@contoso.example"),),
    ),
    _smtp(
        "smtp.transient_reply", 450, "4.0.0", "Temporary failure, please retry",
        "transient", retryable=True, fallback=True,
        hint=_HINT_TRANSIENT + " (unrecognised 4xx reply: the server's text is in detail)",
        source="outbox fallback: any 4xx reply outbox does not recognise (RFC 5321: transient)",
        meaning="unrecognised transient reply",
    ),
    _smtp(
        "smtp.permanent_reply", 554, "5.0.0", "Transaction failed",
        "unknown", retryable=False, fallback=True,
        hint="Exchange refused the message with a reply outbox does not recognise: read detail, look the "
        "enhanced status code up in the Exchange Online NDR reference, and report it so the catalog learns it",
        source="outbox fallback: any 5xx reply outbox does not recognise (RFC 5321: permanent)",
        meaning="unrecognised permanent reply",
    ),
    # ------------------------------------------------------------------ Graph sendMail
    _graph(
        "graph.invalid_recipients", 400, "ErrorInvalidRecipients", "At least one recipient isn't valid.",
        "recipient", retryable=False,
        hint="a recipient address is malformed or not resolvable: fix the message's to/cc/bcc",
        source=f"{_REF} §2; microsoft-graph-docs-contrib user-sendmail.md",
    ),
    _graph(
        "graph.invalid_mime", 400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.",
        "invalid_message", retryable=False,
        hint="the MIME body sent to Graph is not valid base64: a bug in outbox's renderer, please report it",
        source=f"{_REF} §2 (code); message text: assumption",
    ),
    _graph(
        "graph.header_count", 400, "InvalidInternetMessageHeaderCollection",
        "Maximum number of headers in one message should be less than or equal to 5.",
        "invalid_message", retryable=False,
        hint="Graph accepts 1 to 5 custom internetMessageHeaders; an empty list is refused too: send at most "
        "5 X- headers (or none: then the property is omitted)",
        source=f"{_REF} §2 (message); code and full text seen in public code with the full Graph body "
        "(GNOME evolution-ews, 2020; several .NET/Python projects); empty array: msgraph-sdk-dotnet#2208",
    ),
    _graph(
        "graph.invalid_header_name", 400, "InvalidInternetMessageHeader",
        "The internet message header name '{header}' should start with 'x-' or 'X-'.",
        "invalid_message", retryable=False,
        hint="custom header names must start with X- on Graph (SMTP has no such rule): rename the header",
        source=f"{_REF} §2", defaults=(("header", "Reply-By"),),
    ),
    _graph(
        "graph.request_too_large", 413, "BadRequest", "The maximum request length supported is 4MB.",
        "size", retryable=False, status_default=True, match=("maximum request length",),
        hint="the sendMail request is over ~4 MB: send attachments over 3 MB through a draft and an upload "
        "session (needs Mail.ReadWrite), or as blob references",
        source=f"{_REF} §2 (413); the JSON body with code BadRequest: [obs] microsoft-graph-docs-contrib#682 "
        "(the reference's plain-text assumption was wrong); any other 413 body is classified size too",
    ),
    _graph(
        "graph.request_body_read", 400, "RequestBodyRead",
        "The property '{property}' does not exist on type '{type}'. Make sure to only use property names that "
        "are defined by the type or mark the type as open type.",
        "invalid_message", retryable=False, match=("does not exist on type",),
        hint="Graph refused a property of the request body: a bug in outbox's Graph renderer (or a client "
        "that names a property Graph does not have), please report it with the message id",
        source="[obs] microsoft-graph-explorer-v4#946, msgraph-sdk-dotnet#984 (the type is named "
        "'Microsoft.OutlookServices.Message' there: Graph answers with the Outlook backend's type names)",
        defaults=(("property", "subjectLine"), ("type", "Microsoft.OutlookServices.Message")),
    ),
    _graph(
        "graph.request_body_read_value", 400, "RequestBodyRead",
        "Cannot convert the literal '{value}' to the expected type '{type}'.",
        "invalid_message", retryable=False, match=("Cannot convert the literal",),
        hint="Graph could not read a value of the request body as its type: a bug in outbox's Graph renderer, "
        "please report it with the message id",
        source="assumption: the OData library's conversion error (Microsoft.OData.Core), which Graph reports "
        "as RequestBodyRead; the exact text for each type is not documented",
        defaults=(("value", "yes"), ("type", "Edm.Boolean")),
    ),
    _graph(
        "graph.request_body_read_parameter", 400, "RequestBodyRead",
        "The parameter '{parameter}' in the request payload is not a valid parameter for the operation "
        "'{operation}'.",
        "invalid_message", retryable=False, match=("is not a valid parameter for the operation",),
        hint="Graph refused a top-level name of the sendMail body (its parameters are Message and "
        "SaveToSentItems, in any case): a bug in the client that built it, please report it",
        source="assumption: the OData library's unknown-action-parameter error, reported as RequestBodyRead; "
        "parameters bind whatever their case ([obs] msgraph-sdk-python sends Message / SaveToSentItems)",
        defaults=(("parameter", "saveToSent"), ("operation", "sendMail")),
    ),
    _graph(
        "graph.message_size_exceeded", 400, "ErrorMessageSizeExceeded",
        "The message exceeds the maximum supported size.",
        "size", retryable=False,
        hint="the message is larger than the mailbox's MaxSendSize: shrink it or raise it with Set-Mailbox "
        "<mailbox> -MaxSendSize",
        source=f"{_REF} §2 (code; status 400 or 413 not verified); message text: assumption",
    ),
    _graph(
        "graph.submit_message_size_exceeded", 400, "ErrorMessageSizeExceeded",
        "The message exceeds the maximum supported size., Cannot submit the message.",
        "size", retryable=False, match=("Cannot submit the message",),
        hint="the message (counted as Exchange counts it: attachments base64-encoded, ~4/3 of their bytes) is "
        "larger than the mailbox's MaxSendSize (35 MB by default) or 150 MB: shrink it, or raise the limit "
        "with Set-Mailbox <mailbox> -MaxSendSize and tell outbox with OUTBOX_MAX_SEND_BYTES",
        source="[obs] msgraph-sdk-java#2148 (the text, at /send after an upload session of ~30 MB); status 400: "
        "Exchange maps ErrorMessageSizeExceeded to 400 (the upload-session reports, microsoft-graph-docs-contrib#2561)",
    ),
    _graph(
        "graph.token_expired", 401, "InvalidAuthenticationToken",
        "Lifetime validation failed, the token is expired.",
        "auth", retryable=True, max_retries=1, refresh_credentials=True, match=("token is expired",),
        hint="the Graph token expired: outbox renews tokens before 'exp' and retries once with a new one; if "
        "this repeats, check the host clock",
        source=f"{_REF} §2",
    ),
    _graph(
        "graph.invalid_audience", 401, "InvalidAuthenticationToken",
        "Access token validation failure. Invalid audience.",
        "auth", retryable=False, match=("Invalid audience",),
        hint="the token is not for Graph (e.g. an SMTP token): request scope https://graph.microsoft.com/.default "
        "(OUTBOX_CLOUD picks the right one; its 'aud' must be the Graph resource)",
        source=f"{_REF} §2",
    ),
    _graph(
        "graph.invalid_token", 401, "InvalidAuthenticationToken", "CompactToken parsing failed with error code: {n}",
        "auth", retryable=True, max_retries=1, refresh_credentials=True, fallback=True, status_default=True,
        hint="Graph rejected the token: check the token's 'aud', 'tid' and 'roles' claims and that "
        "OUTBOX_TENANT_ID / OUTBOX_CLIENT_ID are right; outbox retries once with a new token",
        source="outbox fallback for other 401s; sample text: [obs]", defaults=(("n", "80049217"),),
    ),
    _graph(
        "graph.access_policy", 403, "ErrorAccessDenied",
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
        "permission", retryable=False, match=("Access to OData is disabled", "RAOP", "AccessPolicy"),
        hint=_HINT_GRAPH_ACCESS_POLICY, source=f"{_REF} §2; microsoft-graph-docs-contrib auth-limit-mailbox-access.md",
    ),
    _graph(
        "graph.no_mail_send", 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.",
        "permission", retryable=False, match=("Check credentials",),
        hint=_HINT_GRAPH_NO_MAIL_SEND, source=f"{_REF} §2",
    ),
    _graph(
        "graph.access_denied", 403, "ErrorAccessDenied", "Access is denied.",
        "permission", retryable=False, fallback=True, status_default=True,
        hint=_HINT_GRAPH_NO_MAIL_SEND + "; or an Application Access Policy / RBAC for Applications scope excludes "
        "the mailbox (Test-ApplicationAccessPolicy -Identity <mailbox> -AppId <client id>)",
        source="outbox fallback for other 403s",
    ),
    _graph(
        "graph.send_as_denied", 403, "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to send mail on "
        "behalf of the specified sending account., Cannot submit message.",
        "permission", retryable=False,
        hint="the message's from differs from the mailbox in the URL and Send As is missing: outbox posts to "
        "/users/<from>/sendMail; otherwise grant Send As (Add-RecipientPermission -Identity <from> -Trustee "
        "<mailbox> -AccessRights SendAs)",
        source=f"{_REF} §2 (code); full message quoted in GitLab's Microsoft Graph mailer docs; same text as EWS ErrorSendAsDenied",
    ),
    _graph(
        "graph.submission_blocked", 403, "ErrorMessageSubmissionBlocked",
        "Cannot send mail. Follow the instructions in your Inbox to verify your account.",
        "quota", retryable=False,
        hint="Exchange anti-abuse blocked sending for this mailbox: check Restricted entities in the Defender "
        "portal, investigate, then release it",
        source=f"{_REF} §2 (code); message text: assumption",
    ),
    _graph(
        "graph.invalid_user", 404, "ErrorInvalidUser", "The requested user '{user}' is invalid.",
        "config", retryable=False,
        hint="no mailbox with that address: fix the message's from (and OUTBOX_ALLOWED_SENDERS); shared and "
        "user mailboxes work, groups and contacts do not",
        source=f"{_REF} §2 (code); message text: [obs]", defaults=(("user", "nobody@contoso.example"),),
    ),
    _graph(
        "graph.resource_not_found", 404, "ResourceNotFound", "Resource could not be discovered.",
        "config", retryable=False, status_default=True,
        hint="Graph does not know this path or identity: check OUTBOX_GRAPH_URL and the sender address",
        source=f"{_REF} §2 (code); message text: [obs]",
    ),
    _graph(
        "graph.mailbox_not_enabled", 404, "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        "config", retryable=False,
        hint="the sender has no Exchange Online mailbox Graph can use (no licence, soft-deleted, or on-premises): "
        "assign an Exchange Online licence; a brand-new mailbox can take a while to be provisioned",
        source=f"{_REF} §2 (code, also seen as 401/403); message text: [obs]",
    ),
    _graph(
        "graph.mailbox_concurrency", 429, "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
        "throttled", retryable=True, retry_after=True, match=("MailboxConcurrency",),
        hint="more than 4 concurrent Graph requests for this mailbox (across all instances): outbox honours "
        "Retry-After and keeps OUTBOX_GRAPH_CONCURRENCY (4) in flight per mailbox per process; cap instances",
        source=f"{_REF} §2; microsoft-graph-docs-contrib throttling-limits.md",
    ),
    _graph(
        "graph.incoming_bytes", 429, "ApplicationThrottled", "Application is over its IncomingBytes limit.",
        "throttled", retryable=True, retry_after=True, match=("IncomingBytes",),
        hint="over 150 MB uploaded per 5 minutes for this mailbox: outbox waits for Retry-After; pace large "
        "attachments",
        source=f"{_REF} §2",
    ),
    _graph(
        "graph.request_budget", 429, "ApplicationThrottled", "Application is over its MailboxRequests limit.",
        "throttled", retryable=True, retry_after=True, match=("MailboxRequests",),
        hint="over 10,000 Graph requests per 10 minutes for this app and mailbox: outbox waits for Retry-After "
        "and paces with OUTBOX_GRAPH_BUDGET_REQUESTS / OUTBOX_GRAPH_BUDGET_WINDOW_S",
        source=f"assumption: {_REF} §1 says 429 ApplicationThrottled + Retry-After; the limit name is not verified",
    ),
    _graph(
        "graph.too_many_requests", 429, "TooManyRequests", "Too many requests.",
        "throttled", retryable=True, retry_after=True, status_default=True,
        hint=_HINT_GRAPH_THROTTLED, source=f"{_REF} §2; microsoft-graph-docs-contrib errors.md (429)",
    ),
    _graph(
        "graph.activity_limit", 429, "activityLimitReached", "The app or user has been throttled.",
        "throttled", retryable=True, retry_after=True,
        hint=_HINT_GRAPH_THROTTLED, source=f"{_REF} §2; microsoft-graph-docs-contrib errors.md (code)",
    ),
    _graph(
        "graph.exceeded_message_limit", 403, "ErrorExceededMessageLimit",
        "Cannot send mail. Daily Message/Recipient limit exceeded.",
        "quota", retryable=False,
        hint="the mailbox reached its sending limit (10,000 recipients per 24 h): pause this mailbox until the "
        "block expires, or spread volume over several mailboxes",
        source=f"{_REF} §2 (code); status 403 and text: [obs] in public code handling this code (400 also seen)",
    ),
    _graph(
        "graph.quota_exceeded", 507, "ErrorQuotaExceeded", "The mailbox has exceeded its quota.",
        "quota", retryable=False, status_default=True,
        hint="the sending mailbox is full (often Sent Items): clean it up or add a retention policy; "
        "Get-MailboxStatistics <mailbox> shows the size",
        source=f"{_REF} §2 ('ErrorQuotaExceeded / 507'); message text: assumption",
    ),
    _graph(
        "graph.submission_quota", 429, "ErrorSubmissionQuotaExceeded",
        "Cannot submit message because the submission quota has been exceeded.",
        "quota", retryable=False,
        hint="the mailbox's submission quota window is exhausted: pause this mailbox until the window rolls over",
        source=f"{_REF} §2 (code); status 429 and text: assumption",
    ),
    _graph(
        "graph.store_unavailable", 503, "ErrorMailboxStoreUnavailable", "The mailbox database is temporarily unavailable.",
        "transient", retryable=True, hint=_HINT_TRANSIENT,
        source=f"{_REF} §2 (code); status and text: assumption",
    ),
    _graph(
        "graph.server_busy", 503, "ErrorServerBusy", "The server cannot service this request right now. Try again later.",
        "transient", retryable=True, retry_after=True, hint=_HINT_TRANSIENT,
        source=f"{_REF} §2 (code); status and text: assumption",
    ),
    _graph(
        "graph.internal_transient", 500, "ErrorInternalServerTransientError",
        "An internal server error occurred. Try again later.",
        "transient", retryable=True, maybe_delivered=True, hint=_HINT_TRANSIENT + "; " + _HINT_AMBIGUOUS,
        source=f"{_REF} §2 (code); status and text: assumption; ambiguous: outbox's choice (a 500 on submit)",
    ),
    _graph(
        "graph.mailbox_move", 503, "ErrorMailboxMoveInProgress", "The mailbox is being moved.",
        "transient", retryable=True, hint=_HINT_TRANSIENT,
        source=f"{_REF} §2 (code); status and text: assumption",
    ),
    _graph(
        "graph.timeout_expired", 500, "ErrorTimeoutExpired", "The operation timed out.",
        "transient", retryable=True, maybe_delivered=True, hint=_HINT_TRANSIENT + "; " + _HINT_AMBIGUOUS,
        source=f"{_REF} §2 (code); status and text: assumption; ambiguous: outbox's choice",
    ),
    _graph(
        "graph.connection_failed", 503, "ErrorConnectionFailed", "The connection to the mailbox server failed.",
        "transient", retryable=True, hint=_HINT_TRANSIENT,
        source=f"{_REF} §2 (code); status and text: assumption",
    ),
    _graph(
        "graph.service_unavailable", 503, "serviceNotAvailable",
        "The service is temporarily unavailable. Please try again later.",
        "transient", retryable=True, retry_after=True, status_default=True, hint=_HINT_TRANSIENT,
        source=f"{_REF} §2; microsoft-graph-docs-contrib errors.md (code); text: assumption",
    ),
    _graph(
        "graph.gateway_timeout", 504, "GatewayTimeout", "The request timed out.",
        "transient", retryable=True, maybe_delivered=True, status_default=True, hint=_HINT_AMBIGUOUS,
        source=f"{_REF} §2 (504: may have been sent); code and text: assumption (outbox branches on status)",
    ),
    _graph(
        "graph.general_exception", 500, "generalException", "An unspecified error has occurred.",
        "transient", retryable=True, maybe_delivered=True, status_default=True, hint=_HINT_AMBIGUOUS,
        source=f"{_REF} §2; microsoft-graph-docs-contrib errors.md (generalException)",
    ),
    _graph(
        "graph.me_app_only", 400, "BadRequest", "/me request is only valid with delegated authentication flow.",
        "config", retryable=False, match=("/me request",),
        hint="an app-only token cannot use /me: outbox posts to /users/<sender>/sendMail; check OUTBOX_GRAPH_URL has "
        "no path beyond the version root",
        source="[obs] pnp/pnpcore#905 (full body), msgraph-sdk-php#1163 (reported by the harness engineers)",
    ),
    _graph(
        "graph.invalid_json", 400, "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
        "valid JSON format.",
        "invalid_message", retryable=False, match=("Unable to read JSON",),
        hint="Graph could not parse the request body: a bug in outbox's Graph renderer, please report it with "
        "the message id",
        source="[obs] Graph's answer to an unparsable body (widely quoted)",
    ),
    _graph(
        "graph.token_missing", 401, "InvalidAuthenticationToken", "Access token is empty.",
        "auth", retryable=True, max_retries=1, refresh_credentials=True, match=("Access token is empty",),
        hint="the request reached Graph without a token: outbox retries once with a new one; if it repeats, a "
        "proxy is stripping the Authorization header",
        source="[obs] Graph's answer to a request without Authorization header (widely quoted)",
    ),
    _graph(
        "graph.upload_too_small", 400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
        "Attachment size should not be less than the minimum size.",
        "invalid_message", retryable=False,
        hint="an attachment under 3 MB went through an upload session: a bug in outbox (small attachments are "
        "sent inline), please report it",
        source="code: microsoft-graph-docs-contrib outlook-large-attachments.md (Errors); status 400: public "
        "code handling it; text: assumption",
    ),
    _graph(
        "graph.upload_authorization", 401, "InvalidAudienceForResource",
        "The audience claim value is invalid for current resource. Audience claim is '{audience}', request url "
        "is '{url}'.",
        "auth", retryable=False, inner_error=False,
        hint="an Authorization header was sent to the upload URL, which must not get one "
        "(outlook-large-attachments.md): a bug in outbox, please report it",
        source="msgraph-sdk-java#409 (Authorization header sent to the uploadUrl); the docs say not to send one",
        defaults=(("audience", "https://graph.microsoft.com"),
                  ("url", "https://outlook.office.com/api/v2.0/Users('x')/Messages('y')/AttachmentSessions('z')")),
    ),
    _graph(
        "graph.upload_range", 400, "InvalidContentRange",
        "The Content-Range header is missing or does not match the expected range.",
        "transient", retryable=True, max_retries=1, inner_error=False,
        hint="the upload session lost track of the byte ranges: outbox starts the upload over once; if it "
        "repeats, please report it",
        source="assumption: Outlook requires in-order ranges (outlook-large-attachments.md) but its error is "
        "not documented",
    ),
    _graph(
        "graph.upload_session_not_found", 404, "ErrorItemNotFound", "The upload session was not found or has expired.",
        "transient", retryable=True, max_retries=2, inner_error=False, match=("upload session",),
        hint="the upload session expired or vanished: outbox starts over with a new draft and session",
        source="assumption (code is Exchange's usual not-found code; text not verified)",
    ),
    _graph(
        "graph.item_not_found", 404, "ErrorItemNotFound", "The specified object was not found in the store.",
        "transient", retryable=True, max_retries=1,
        hint="the draft or message was not found (deleted meanwhile, or by a retention policy): outbox starts "
        "over with a new draft once",
        source="[obs] Graph/EWS answer for an unknown message id (widely quoted)",
    ),
    _graph(
        "graph.client_error", 400, "BadRequest", "The request is invalid.",
        "unknown", retryable=False, fallback=True,
        hint="Graph refused the request with an error outbox does not recognise: read detail and the "
        "request-id, and report it so the catalog learns it",
        source="outbox fallback: any other 4xx",
    ),
    _graph(
        "graph.server_error", 502, "BadGateway", "Bad gateway.",
        "transient", retryable=True, maybe_delivered=True, fallback=True,
        hint=_HINT_TRANSIENT + "; " + _HINT_AMBIGUOUS,
        source="outbox fallback: any other 5xx (ambiguous on a send: outbox's choice)",
    ),
    _graph(
        "graph.unreadable_response", 502, "", "<html><body>Internal Server Error</body></html>",
        "transient", retryable=True, maybe_delivered=True, fallback=True,
        hint=_HINT_TRANSIENT + "; " + _HINT_AMBIGUOUS,
        source="outbox fallback: an error status whose body is not Graph JSON (HTML from a proxy, empty)",
    ),
    # ------------------------------------------------------------------ Entra ID token endpoint
    _entra(
        "entra.invalid_signature", 401, 700027, "invalid_client",
        "Client assertion failed signature validation.",
        "auth", retryable=True, max_retries=1, refresh_credentials=True, hint=_HINT_CERT,
        meaning="client assertion failed signature validation (certificate not uploaded, or thumbprint mismatch)",
        source=f"{_REF} §4; entra-docs reference-error-codes.md (InvalidClientAssertion)",
    ),
    _entra(
        "entra.app_not_found", 400, 700016, "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You may have sent your authentication request to the wrong tenant.",
        "config", retryable=False,
        hint="no app with OUTBOX_CLIENT_ID in tenant OUTBOX_TENANT_ID: check both values (client id of the app "
        "registration, not the object id), and that the app lives in that tenant",
        meaning="application not found in the tenant",
        source=f"{_REF} §4; entra-docs reference-error-codes.md (UnauthorizedClient_DoesNotMatchRequest); "
        "wording: [obs]",
        defaults=(("client_id", "00000000-0000-0000-0000-000000000000"), ("tenant", "contoso.example")),
    ),
    _entra(
        "entra.invalid_secret", 401, 7000215, "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        "value, not the client secret ID, for a secret added to app '{client_id}'.",
        "auth", retryable=False,
        hint="outbox authenticates with a certificate, not a secret: something sent a client secret; check "
        "OUTBOX_CERT_NAME and that no AZURE_CLIENT_SECRET is set for this app",
        meaning="invalid client secret", source=f"{_REF} §4; wording: [obs]",
        defaults=(("client_id", "00000000-0000-0000-0000-000000000000"),),
    ),
    _entra(
        "entra.secret_expired", 401, 7000222, "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired.",
        "auth", retryable=False,
        hint="a client secret expired: outbox uses a certificate; remove the secret-based configuration",
        meaning="expired client secret", source=f"{_REF} §4; wording: assumption",
        defaults=(("client_id", "00000000-0000-0000-0000-000000000000"),),
    ),
    _entra(
        "entra.unknown_authority", 400, 50049, "invalid_request", "Unknown or invalid instance.",
        "config", retryable=False,
        hint="the authority host is not a Microsoft login endpoint: check OUTBOX_CLOUD / OUTBOX_AUTHORITY_HOST",
        meaning="unknown authority", source=f"{_REF} §4; wording: assumption",
    ),
    _entra(
        "entra.tenant_not_found", 400, 90002, "invalid_request",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant.",
        "config", retryable=False,
        hint="OUTBOX_TENANT_ID names no tenant in this cloud: use the directory (tenant) id or a verified domain, "
        "and the right OUTBOX_CLOUD",
        meaning="tenant not found", source=f"{_REF} §4; wording: [obs]",
        defaults=(("tenant", "contoso.example"),),
    ),
    _entra(
        "entra.assertion_expired", 400, 700024, "invalid_client",
        "Client assertion is not within its valid time range. Current time: {now}, assertion valid from "
        "{nbf}, expiry time of assertion {exp}.",
        "auth", retryable=True, max_retries=1, refresh_credentials=True,
        hint="the client assertion's time range does not contain Entra's clock: the host clock is off (fix NTP); "
        "outbox retries once with a new assertion",
        meaning="assertion not within its valid time range (clock skew)",
        source=f"{_REF} §4; wording: [obs]; status: assumption",
        defaults=(("now", "2025-01-01T00:00:00.0000000Z"), ("nbf", "2025-01-01T00:20:00.0000000Z"),
                  ("exp", "2025-01-01T00:30:00.0000000Z")),
    ),
    _entra(
        "entra.scope_not_default", 400, 1002012, "invalid_scope",
        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI).",
        "config", retryable=False,
        hint="app-only tokens need a scope ending in /.default (https://graph.microsoft.com/.default, "
        "https://outlook.office365.com/.default)",
        meaning="client credentials scope must end in /.default", source=f"{_REF} §4; wording: [obs]",
        defaults=(("scope", "https://graph.microsoft.com/Mail.Send"),),
    ),
    _entra(
        "entra.consent_missing", 400, 65001, "invalid_grant",
        "The user or administrator has not consented to use the application with ID '{client_id}' named "
        "'{app_name}'. Send an interactive authorization request for this user and resource.",
        "permission", retryable=False,
        hint="admin consent is missing: in the app registration's API permissions press 'Grant admin consent' "
        "(Mail.Send for Graph, SMTP.SendAsApp for SMTP)",
        meaning="consent missing", source=f"{_REF} §4; wording: [obs]",
        defaults=(("client_id", "00000000-0000-0000-0000-000000000000"), ("app_name", "outbox")),
    ),
    _entra(
        "entra.resource_not_found", 400, 500011, "invalid_resource",
        "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You might have sent your authentication request to the wrong tenant.",
        "config", retryable=False,
        hint="the token's resource does not exist in this tenant: check the scope (OUTBOX_CLOUD) and, for SMTP, "
        "that the tenant has Exchange Online",
        meaning="resource principal not found", source=f"{_REF} §4; wording: [obs]; OAuth error: assumption",
        defaults=(("resource", "https://outlook.office365.com"), ("tenant", "contoso.example")),
    ),
    _entra(
        "entra.cert_subject_not_authorized", 401, 700030, "invalid_client",
        "Invalid certificate - subject name in certificate is not authorized. SubjectNames/SubjectAlternativeNames "
        "(up to 10) in token certificate are: {names}",
        "auth", retryable=False, hint=_HINT_CERT + " (subject-name/issuer trust: check the trusted subject "
        "configuration of the app)",
        meaning="certificate subject not authorised", source=f"{_REF} §4; wording: assumption",
        defaults=(("names", "CN=outbox"),),
    ),
    _entra(
        "entra.auth_failed", 401, 50012, "invalid_client", "Authentication failed.",
        "auth", retryable=False, hint=_HINT_CERT,
        meaning="authentication failed (generic)", source=f"{_REF} §4; wording: assumption",
    ),
    _entra(
        "entra.assertion_missing", 401, 7000218, "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        "config", retryable=False,
        hint="the token request carried no credential: the certificate from Key Vault (OUTBOX_KEYVAULT_URL, "
        "OUTBOX_CERT_NAME) was not loaded",
        meaning="missing client assertion", source=f"{_REF} §4; wording: [obs]",
    ),
    _entra(
        "entra.conditional_access", 400, 53003, "invalid_grant",
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        "permission", retryable=False,
        hint="a Conditional Access policy for workload identities blocks this app: check the Entra sign-in logs "
        "(service principal sign-ins) and exclude the app or allow its location",
        meaning="blocked by Conditional Access", source=f"{_REF} §4; wording: [obs]; OAuth error: assumption",
    ),
    _entra(
        "entra.transient_error", 500, 50033, "temporarily_unavailable", "A transient error has occurred. Please try again.",
        "transient", retryable=True, hint=_HINT_TRANSIENT,
        meaning="retryable error", source=f"{_REF} §4 (50033 RetryableError); wording and status: assumption",
    ),
    _entra(
        "entra.request_budget", 429, 90024, "temporarily_unavailable",
        "RequestBudgetExceededError - A transient error has occurred. Try again.",
        "throttled", retryable=True, retry_after=True,
        hint="Entra throttled token requests: outbox caches tokens per process; too many instances or processes "
        "asking at once",
        meaning="request budget exceeded", source=f"{_REF} §4; wording and status: assumption",
    ),
    _entra(
        "entra.temporarily_unavailable", 503, 90033, "temporarily_unavailable",
        "A transient error has occurred. Please try again.",
        "transient", retryable=True, retry_after=True, hint=_HINT_TRANSIENT,
        meaning="directory service unavailable (MsodsServiceUnavailable)",
        source=f"{_REF} §4 (90033, temporarily_unavailable: R); wording and status: assumption",
    ),
    _entra(
        "entra.external_retryable", 503, 90006, "temporarily_unavailable",
        "The server encountered a transient error. Please try again.",
        "transient", retryable=True, hint=_HINT_TRANSIENT,
        meaning="external server retryable error", source=f"{_REF} §4; wording and status: assumption",
    ),
    # ------------------------------------------------------------------ Entra ID: a user's sign-in
    # (device code, authorization code + PKCE, refresh token). Sources: ../shared/reference/
    # delegated-auth-notes.md §2, §3, §5, each row's own; "sign in again" for all of invalid_grant and
    # interaction_required (MSAL's UiRequiredException classification, learn.microsoft.com/dotnet/api/
    # microsoft.identity.client.uirequiredexceptionclassification).
    _entra(
        "entra.authorization_pending", 400, 70016, "authorization_pending",
        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        "signin_required", retryable=True, flow="delegated",
        hint="the device code has not been entered yet: the user opens the verification page and enters it",
        meaning="device code not yet approved",
        source="entra-docs v2-oauth2-device-code.md; wording: learn.microsoft.com/answers/questions/981553 [obs]",
    ),
    _entra(
        "entra.authorization_declined", 400, None, "authorization_declined",
        "The end user denied the authorization request.",
        "signin_required", retryable=False, flow="delegated",
        hint="the user declined the sign-in: run `outbox login` again and accept",
        meaning="the user declined the device code",
        source="entra-docs v2-oauth2-device-code.md (error authorization_declined); wording: assumption",
    ),
    _entra(
        "entra.expired_token", 400, 70020, "expired_token",
        "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
        "signin_required", retryable=False, flow="delegated",
        hint="the device code expired before it was entered (15 minutes): run `outbox login --device-code` again",
        meaning="device code expired",
        source="entra-docs v2-oauth2-device-code.md (expired_token); number and wording: ramosbugs/oauth2-rs#193 [obs]",
    ),
    _entra(
        "entra.bad_verification_code", 400, None, "bad_verification_code",
        "The device_code sent to the /token endpoint wasn't recognized.",
        "signin_required", retryable=False, flow="delegated",
        hint="the device code is not one Entra issued: run `outbox login --device-code` again",
        meaning="unknown device code",
        source="entra-docs v2-oauth2-device-code.md (bad_verification_code, its description); number: unknown",
    ),
    _entra(
        "entra.refresh_token_inactive", 400, 700082, "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive "
        "for {inactive}.",
        "signin_required", retryable=False, flow="delegated",
        hint="the sign-in was unused for 90 days and Entra dropped it: the mailbox's user runs `outbox login "
        "--mailbox <mailbox>`, then `outbox poison requeue`; the keep-alive timer prevents this",
        meaning="refresh token expired after inactivity",
        source="entra-docs refresh-tokens.md (MaxInactiveTime 90 days); wording: Azure/azure-cli#14244, #23105 [obs]",
        defaults=(("issued", "2026-09-01T08:00:00.0000000Z"), ("inactive", "90.00:00:00")),
    ),
    _entra(
        "entra.refresh_token_revoked", 400, 50173, "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might "
        "have changed or reset their password. The grant was issued on '{issued}' and the TokensValidFrom date "
        "(before which tokens are not valid) for this user is '{valid_from}'.",
        "signin_required", retryable=False, flow="delegated",
        hint="the user's sessions were revoked (password change or reset, or an admin revoked them): the "
        "mailbox's user runs `outbox login --mailbox <mailbox>`, then `outbox poison requeue`",
        meaning="refresh token revoked",
        source="entra-docs refresh-tokens.md (revocation); wording: microsoft/azuredatastudio#13953, "
        "Azure/azure-cli#16745 [obs]",
        defaults=(("issued", "2026-09-01T08:00:00.0000000Z"), ("valid_from", "2026-12-01T08:00:00.0000000Z")),
    ),
    _entra(
        "entra.refresh_token_expired", 400, 70008, "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. Send a new "
        "interactive authorization request for this user and resource.",
        "signin_required", retryable=False, flow="delegated",
        hint="the sign-in expired: the mailbox's user runs `outbox login --mailbox <mailbox>`, then "
        "`outbox poison requeue`",
        meaning="authorization code or refresh token expired",
        source="entra-docs reference-error-codes.md (ExpiredOrRevokedGrant); wording: Azure/azure-cli#10185 [obs]",
    ),
    _entra(
        "entra.mfa_required", 400, 50076, "interaction_required",
        "Due to a configuration change made by your administrator, or because you moved to a new location, "
        "you must use multi-factor authentication to access '{resource}'.",
        "signin_required", retryable=False, flow="delegated",
        hint="Conditional Access now asks this user for MFA, which a refresh cannot give: the user runs "
        "`outbox login --mailbox <mailbox>` (browser) and completes MFA, or the email team excludes the "
        "app from the policy",
        meaning="multi-factor authentication required",
        source="entra-docs reference-error-codes.md (UserStrongAuthClientAuthNRequired); wording: "
        "microsoft/vscode-azure-account#874 [obs]",
        defaults=(("resource", "00000003-0000-0000-c000-000000000000"),),
    ),
    _entra(
        "entra.sign_in_frequency", 400, 70043, "invalid_grant",
        "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. "
        "The token was issued on {issued} and the maximum allowed lifetime for this request is {max_age}.",
        "signin_required", retryable=False, flow="delegated",
        hint="a Conditional Access sign-in frequency policy ended the sign-in: the user signs in again with "
        "`outbox login --mailbox <mailbox>`; the email team can exclude the outbox app from the policy",
        meaning="sign-in frequency reached",
        source="entra-docs reference-error-codes.md (BadTokenDueToInteractionRequired); wording: assumption",
        defaults=(("issued", "2026-09-01T08:00:00.0000000Z"), ("max_age", "43200")),
    ),
    _entra(
        "entra.user_consent_missing", 400, 65001, "invalid_grant",
        "The user or administrator has not consented to use the application with ID '{client_id}' named "
        "'{app_name}'. Send an interactive authorization request for this user and resource.",
        "signin_required", retryable=False, flow="delegated",
        hint="the user has not consented to a scope outbox needs (Mail.Send, SMTP.Send...): sign in again "
        "with `outbox login --mailbox <mailbox>` and accept, or an admin grants consent for the tenant",
        meaning="user consent missing",
        source="entra-docs reference-error-codes.md (DelegatedConsentRequired); wording: O365/python-o365#323 [obs]",
        defaults=(("client_id", "00000000-0000-0000-0000-000000000000"), ("app_name", "outbox delegated")),
    ),
    _entra(
        "entra.scope_unauthorized", 400, 70000, "invalid_grant",
        "The request was denied because one or more scopes requested are unauthorized or expired. The user "
        "must first sign in and grant the client application access to the requested scope.",
        "signin_required", retryable=False, flow="delegated",
        hint="the sign-in does not cover a scope outbox asked for: sign in again with `outbox login`",
        meaning="scope not granted to this sign-in",
        source="entra-docs reference-error-codes.md (InvalidGrant); wording: "
        "AzureAD/microsoft-authentication-library-for-js#3303 [obs]",
    ),
    _entra(
        "entra.public_client_disabled", 401, 7000218, "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        "config", retryable=False, flow="delegated",
        hint="the delegated app registration (OUTBOX_DELEGATED_CLIENT_ID) is not a public client: set "
        "Authentication > 'Allow public client flows' to Yes (isFallbackPublicClient)",
        meaning="public client flows are disabled on the app",
        source="Azure/azure-sdk-for-go#22386, learn.microsoft.com/answers/questions/446907 [obs]",
    ),
    _entra(
        "entra.public_client_credential", 401, 700025, "invalid_client",
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        "config", retryable=False, flow="delegated",
        hint="a credential was sent for the public delegated app: OUTBOX_DELEGATED_CLIENT_ID must be the "
        "public-client registration, not the certificate app",
        meaning="public client presented a credential", source="Dielee/teamsPresenceBridge#1 [obs]",
    ),
    _entra(
        "entra.code_redeemed", 400, 54005, "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
        "existing refresh token.",
        "signin_required", retryable=False, flow="delegated",
        hint="the sign-in's authorization code was used twice: run `outbox login` again",
        meaning="authorization code already redeemed", source="entra-docs reference-error-codes.md (54005)",
    ),
    _entra(
        "entra.pkce_invalid", 400, 501481, "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        "signin_required", retryable=False, flow="delegated",
        hint="the browser sign-in's PKCE check failed: run `outbox login` again (and report it if it repeats)",
        meaning="PKCE verifier does not match", source="entra-docs reference-error-codes.md (501481)",
    ),
    _entra(
        "entra.redirect_mismatch", 400, 50011, "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
        "configured for the application '{client_id}'.",
        "config", retryable=False, flow="delegated",
        hint="register http://localhost as a 'Mobile and desktop applications' redirect URI on the delegated "
        "app (infra/scripts/register-delegated-app.sh does)",
        meaning="redirect URI not registered", source="entra-docs reference-error-codes.md (50011), reply-url.md",
        defaults=(("redirect_uri", "http://localhost:8400"), ("client_id", "00000000-0000-0000-0000-000000000000")),
    ),
    _entra(
        "entra.multiple_resources", 400, 28000, "invalid_scope",
        "Provided value for the input parameter scope is not valid because it contains more than one "
        "resource. Scope {scope} is not valid.",
        "config", retryable=False, flow="delegated",
        hint="one token is for one resource: ask for Graph and Outlook (SMTP) scopes in separate requests",
        meaning="scopes of more than one resource",
        source="Earlybyte/aad_oauth#328, microsoft/Partner-Center-PowerShell#167 [obs]; OAuth error: assumption",
        defaults=(("scope", "Mail.Send https://outlook.office.com/SMTP.Send"),),
    ),
    _entra(
        "entra.signin_required", 400, None, "invalid_grant", "The grant is not valid.",
        "signin_required", retryable=False, fallback=True, flow="delegated",
        hint="Entra no longer accepts this mailbox's sign-in: its user runs `outbox login --mailbox "
        "<mailbox>`, then `outbox poison requeue`",
        meaning="sign-in no longer valid (unrecognised AADSTS code)",
        source="outbox fallback for a user's invalid_grant / interaction_required: both mean \"sign in again\" "
        "(learn.microsoft.com/dotnet/api/microsoft.identity.client.uirequiredexceptionclassification)",
    ),
    _entra(
        "entra.invalid_client", 401, None, "invalid_client", "Client authentication failed.",
        "auth", retryable=False, fallback=True, hint=_HINT_CERT,
        meaning="client authentication failed (unrecognised AADSTS code)", source="outbox fallback by OAuth error",
    ),
    _entra(
        "entra.unauthorized_client", 400, None, "unauthorized_client", "The client is not authorized.",
        "config", retryable=False, fallback=True,
        hint="the app registration may not use this flow or tenant: check OUTBOX_CLIENT_ID and OUTBOX_TENANT_ID",
        meaning="client not authorised (unrecognised AADSTS code)", source="outbox fallback by OAuth error",
    ),
    _entra(
        "entra.invalid_request", 400, None, "invalid_request", "The request is not valid.",
        "config", retryable=False, fallback=True,
        hint="Entra rejected the token request: check OUTBOX_TENANT_ID, OUTBOX_CLOUD / OUTBOX_AUTHORITY_HOST",
        meaning="invalid request (unrecognised AADSTS code)", source="outbox fallback by OAuth error",
    ),
    _entra(
        "entra.invalid_scope", 400, None, "invalid_scope", "The scope is not valid.",
        "config", retryable=False, fallback=True,
        hint="the scope is wrong: app-only scopes are <resource>/.default for the right cloud (OUTBOX_CLOUD)",
        meaning="invalid scope (unrecognised AADSTS code)", source="outbox fallback by OAuth error",
    ),
    _entra(
        "entra.invalid_grant", 400, None, "invalid_grant", "The grant is not valid.",
        "auth", retryable=False, fallback=True,
        hint="Entra refused the grant: check admin consent and Conditional Access for the app",
        meaning="invalid grant (unrecognised AADSTS code)", source="outbox fallback by OAuth error",
    ),
    _entra(
        "entra.server_error", 500, None, "server_error", "The server encountered an error.",
        "transient", retryable=True, fallback=True, hint=_HINT_TRANSIENT,
        meaning="token endpoint failure", source="outbox fallback: 5xx or unrecognised OAuth error",
    ),
    # ------------------------------------------------------------------ Key Vault (certificate as secret)
    _keyvault(
        "keyvault.forbidden", 403, "Forbidden",
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
        "role definitions were changed recently, please observe propagation time.\r\nCaller: {caller}\r\n"
        "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '{resource}'\r\n"
        "Assignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: {vault};location={location}\r\n",
        "permission", retryable=False, inner_code="ForbiddenByRbac", status_default=True,
        match=("ForbiddenByRbac", "not authorized to perform action"),
        hint="grant Key Vault Certificate User (db79e9a7-68ee-4b58-9aeb-b90e7c24fcba) on the vault to the function "
        "identity (AZURE_CLIENT_ID's managed identity); role assignments take a few minutes to apply",
        source="Key Vault REST API error codes (learn.microsoft.com azure/key-vault/general/rest-error-codes: 403); "
        "code/innererror ForbiddenByRbac and wording: [obs] in az CLI and SDK output",
        defaults=(("caller", "appid=00000000-0000-0000-0000-000000000000;oid=00000000-0000-0000-0000-000000000001"),
                  ("resource", "/subscriptions/.../vaults/outbox-kv/secrets/outbox-cert"),
                  ("vault", "outbox-kv"), ("location", "westeurope")),
    ),
    _keyvault(
        "keyvault.forbidden_access_policy", 403, "Forbidden",
        "The user, group or application '{caller}' does not have secrets get permission on key vault "
        "'{vault};location={location}'. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125287",
        "permission", retryable=False, inner_code="AccessDenied", match=("AccessDenied", "does not have secrets"),
        hint="the vault uses access policies: give the function identity 'Get' on secrets (and certificates), or "
        "switch the vault to RBAC (enableRbacAuthorization) and grant Key Vault Certificate User",
        source="Key Vault REST API error codes (403); wording and innererror AccessDenied: [obs] "
        "(Azure troubleshooting docs and Terraform output)",
        defaults=(("caller", "appid=00000000-0000-0000-0000-000000000000;oid=00000000-0000-0000-0000-000000000001"),
                  ("vault", "outbox-kv"), ("location", "westeurope")),
    ),
    _keyvault(
        "keyvault.secret_not_found", 404, "SecretNotFound",
        "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you "
        "may be able to recover it using the correct recovery command. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125182",
        "config", retryable=False, status_default=True,
        hint="Key Vault has no certificate (secret) named '{name}': check OUTBOX_CERT_NAME and OUTBOX_KEYVAULT_URL "
        "(the secret name equals the certificate name); a soft-deleted one can be recovered",
        source="Key Vault REST API error codes (404); body and wording: azure-sdk recordings and SDK samples",
        defaults=(("name", "outbox-cert"),),
    ),
    _keyvault(
        "keyvault.unauthorized", 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
        "auth", retryable=False, status_default=True,
        hint="Key Vault did not accept the function identity's token: check the identity exists (AZURE_CLIENT_ID "
        "for a user-assigned one) and that the vault is in the same tenant",
        source="Key Vault REST API error codes (401); body: azure-sdk-for-js test recordings",
    ),
    _keyvault(
        "keyvault.throttled", 429, "Throttled", "Operations per second exceeds limit.",
        "throttled", retryable=True, retry_after=True, status_default=True,
        hint="Key Vault throttled the reads: outbox caches the certificate (OUTBOX_CERT_REFRESH_S); too many "
        "instances starting at once",
        source="Key Vault REST API error codes (429); code and wording: assumption",
    ),
    _keyvault(
        "keyvault.server_error", 500, "InternalServerError", "An unexpected error occurred.",
        "transient", retryable=True, fallback=True, hint=_HINT_TRANSIENT,
        source="outbox fallback: any 5xx from Key Vault",
    ),
    _keyvault(
        "keyvault.client_error", 400, "BadParameter", "The request is invalid.",
        "config", retryable=False, fallback=True,
        hint="Key Vault refused the request: check OUTBOX_KEYVAULT_URL and OUTBOX_CERT_NAME",
        source="outbox fallback: any other 4xx from Key Vault",
    ),
    # ------------------------------------------------------------------ No answer at all (any transport)
    _net(
        "net.connect_failed", "connect_failed", "connection refused or host unreachable", "transient",
        retryable=True, maybe_delivered=False,
        hint="could not connect: outbox retries; if it persists, check the endpoint setting "
        "(OUTBOX_GRAPH_URL / OUTBOX_SMTP_HOST / OUTBOX_KEYVAULT_URL), DNS and outbound firewall rules",
        source="outbox (exception, nothing sent)", meaning="connection could not be opened",
    ),
    _net(
        "net.connect_timeout", "connect_timeout", "timed out while connecting", "transient",
        retryable=True, maybe_delivered=False, hint="connecting timed out: outbox retries; check network reachability",
        source="outbox (exception, nothing sent)", meaning="connect timeout",
    ),
    _net(
        "net.timeout", "timeout", "timed out before the request was sent", "transient",
        retryable=True, maybe_delivered=False, hint=_HINT_TRANSIENT,
        source="outbox (exception, request not sent)", meaning="timeout before the request left",
    ),
    _net(
        "net.timeout_after_send", "timeout_after_send", "timed out waiting for the answer", "transient",
        retryable=True, maybe_delivered=True, hint=_HINT_AMBIGUOUS,
        source=f"design.md 'ambiguous'; {_REF} §2 (504)", meaning="no answer after the request was sent",
    ),
    _net(
        "net.connection_lost", "connection_lost", "connection closed before the request was sent", "transient",
        retryable=True, maybe_delivered=False, hint=_HINT_TRANSIENT,
        source="outbox (exception, request not sent)", meaning="connection dropped before sending",
    ),
    _net(
        "net.connection_lost_after_send", "connection_lost_after_send",
        "connection closed after the request was sent", "transient",
        retryable=True, maybe_delivered=True, hint=_HINT_AMBIGUOUS,
        source="design.md 'ambiguous' (connection dropped after DATA)", meaning="connection dropped after sending",
    ),
    _net(
        "net.tls_verify_failed", "tls_verify_failed", "certificate verify failed", "config",
        retryable=False, maybe_delivered=False,
        hint="the server's TLS certificate is not trusted: set OUTBOX_CA_BUNDLE to a PEM file holding the public "
        "roots plus any corporate/test CA (the harness writes one), or fix the proxy that intercepts TLS",
        source="outbox (ssl.SSLCertVerificationError)", meaning="TLS certificate verification failed",
    ),
    _net(
        "net.tls_error", "tls_error", "TLS handshake failed", "transient",
        retryable=True, maybe_delivered=False,
        hint="the TLS handshake failed: outbox retries; if it persists, check TLS 1.2 support and proxies",
        source="outbox (ssl.SSLError)", meaning="TLS handshake failed",
    ),
    _net(
        "net.credential_unavailable", "credential_unavailable", "no credential available", "config",
        retryable=False, maybe_delivered=False,
        hint="no Azure identity was found to read Key Vault: on Azure assign the managed identity and set "
        "AZURE_CLIENT_ID for a user-assigned one; locally sign in (az login) or let the harness set "
        "IDENTITY_ENDPOINT",
        source="outbox (azure.identity CredentialUnavailableError)", meaning="no credential for Key Vault",
    ),
    _net(
        "net.server_error", "server_error", "the service answered with a server error", "transient",
        retryable=True, maybe_delivered=False, hint=_HINT_TRANSIENT,
        source="outbox fallback: an HTTP 5xx/429 from a service without its own rows (storage)",
        meaning="server error from a service without catalog rows",
    ),
    _net(
        "net.client_error", "client_error", "the service refused the request", "unknown",
        retryable=False, maybe_delivered=False,
        hint="the service refused the request with an error outbox does not recognise: read detail",
        source="outbox fallback: an HTTP 4xx from a service without its own rows (storage)",
        meaning="client error from a service without catalog rows",
    ),
    _net(
        "net.unexpected_after_send", "unexpected_error", "unexpected error after the request was sent", "unknown",
        retryable=True, maybe_delivered=True, max_retries=2,
        hint="an unexpected error after the request left (probably a bug in outbox), so the message MAY have "
        "been sent: outbox retries at most twice, checking Sent Items first (OUTBOX_ON_AMBIGUOUS); the "
        "exception is in detail; report it",
        source="outbox fallback for exceptions it does not recognise", meaning="unrecognised exception after sending",
    ),
    _net(
        "net.unexpected", "unexpected_error", "unexpected error", "unknown",
        retryable=False, maybe_delivered=False,
        hint="an unexpected error (probably a bug in outbox): the exception is in detail; report it",
        source="outbox fallback for exceptions it does not recognise", meaning="unrecognised exception",
    ),
)


def _index(entries: tuple[CatalogEntry, ...]) -> Mapping[str, CatalogEntry]:
    by_name: dict[str, CatalogEntry] = {}
    for e in entries:
        if e.name in by_name:
            raise ValueError(f"duplicate catalog entry {e.name}")
        if e.category not in CATEGORIES:
            raise ValueError(f"{e.name}: unknown category {e.category}")
        by_name[e.name] = e
    return MappingProxyType(by_name)


BY_NAME: Final[Mapping[str, CatalogEntry]] = _index(_ENTRIES)


def entry(name: str) -> CatalogEntry:
    """The catalog row called ``name`` (KeyError names the unknown entry)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no catalog entry {name!r}") from None


def entries(transport: str | None = None) -> Iterator[CatalogEntry]:
    """All rows, in table order; with ``transport``, only that transport's rows ("net" for no-reply rows)."""
    for e in _ENTRIES:
        if transport is None or e.transport == transport or (transport == "net" and e.transport is None):
            yield e


# --- docs/errors.md ----------------------------------------------------------------------------------

DOC_BEGIN: Final = "<!-- catalog:begin (generated by `python -m shared.catalog docs/errors.md`; do not edit) -->"
DOC_END: Final = "<!-- catalog:end -->"

_SECTIONS: Final = (
    ("smtp", "SMTP AUTH XOAUTH2 (smtp.office365.com:587)"),
    ("graph", "Microsoft Graph sendMail"),
    ("entra", "Entra ID token endpoint"),
    ("keyvault", "Key Vault (certificate read through the secrets API)"),
    ("net", "No answer: connection, timeout and TLS failures (any transport)"),
)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def catalog_markdown() -> str:
    """The generated part of docs/errors.md: one table per transport, every row of the catalog."""
    out: list[str] = [DOC_BEGIN, ""]
    for transport, title in _SECTIONS:
        out += [f"### {title}", "", "| Entry | Reply | Text as sent | Category | Retry | May be sent | Fix | Source |",
                "|---|---|---|---|---|---|---|---|"]
        for e in entries(transport):
            if e.transport == "smtp":
                reply = f"`{e.status} {e.code}`"
            elif e.transport == "entra":
                reply = f"{e.status} `{e.oauth_error}` `{e.code}`" if e.code != e.oauth_error else f"{e.status} `{e.oauth_error}`"
            elif e.transport in ("graph", "keyvault"):
                inner = f" ({e.inner_code})" if e.inner_code else ""
                reply = f"{e.status} `{e.code}`{inner}" if e.code else f"{e.status} (no JSON code)"
            else:
                reply = f"`{e.code}`"
            retry = "yes" if e.retryable else "no"
            if e.retryable and e.max_retries is not None:
                retry = f"{e.max_retries}x"
            if e.refresh_credentials:
                retry += ", fresh token"
            if e.retry_after:
                retry += ", Retry-After"
            text = f"_{_cell(e.meaning)}_" if e.transport is None else f"`{_cell(e.text)}`"
            if e.fallback and e.transport is not None:
                text = f"(fallback) {text}"
            out.append(
                f"| `{e.name}` | {reply} | {text} | {e.category} | {retry} | "
                f"{'yes' if e.maybe_delivered else 'no'} | {_cell(e.hint)} | {_cell(e.source)} |"
            )
        out.append("")
    out.append(DOC_END)
    return "\n".join(out)


def write_docs(path: str) -> None:
    """Replace the generated section of ``path`` (between the markers) with :func:`catalog_markdown`."""
    with open(path, encoding="utf-8") as f:
        current = f.read()
    start = current.index(DOC_BEGIN)
    end = current.index(DOC_END) + len(DOC_END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(current[:start] + catalog_markdown() + current[end:])


if __name__ == "__main__":
    import sys

    write_docs(sys.argv[1] if len(sys.argv) > 1 else "docs/errors.md")
