"""Every row of reference/m365-send-errors.md, answered by an independent server, classified by outbox.

The replies are written here from the reference (SMTP replies as sent, Graph statuses, codes and
messages in Graph's documented error shape), with host names, IPs and numbers that outbox's catalog
does not use, so a classifier that matched whole texts instead of codes would fail. The function runs
as under the Functions host; what is checked is what an operator sees: the poison envelope (category,
code, status, transport) or, for retryable rows, the status row (retrying / ambiguous) and no poison.

Expected categories follow design.md's list ("auth (token, certificate, 535 5.7.3, 401, AADSTS),
permission (access policy, Send As, SMTP AUTH disabled), recipient, size, quota (daily/submission
limits, blocked sender), throttled, transient, config ..."); where the reference leaves the kind open,
the test accepts the plausible set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.azurite import Azurite
from harness.up import Harness
from tests.contract.conftest import HostPlay, contract_values, mail
from tests.contract.replay_servers import ReplayServers, entra_error, graph_error, replay_servers

HOST = "DM6PR11MB4545.namprd11.prod.outlook.com"  # not the harness's host name

POISON, RETRY, AMBIGUOUS = "poison", "retry", "ambiguous"


@dataclass(frozen=True)
class SmtpCase:
    stage: str
    reply: str
    outcome: str
    categories: frozenset[str]


@dataclass(frozen=True)
class GraphCase:
    reply: tuple[int, dict[str, str], bytes]
    outcome: str
    categories: frozenset[str]
    code: str | None = None


def cats(*names: str) -> frozenset[str]:
    return frozenset(names)


SMTP_CASES: dict[str, SmtpCase] = {
    "535-5.7.3": SmtpCase("auth", f"535 5.7.3 Authentication unsuccessful [{HOST}]", POISON, cats("auth")),
    "535-5.7.139-tenant": SmtpCase("auth", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
                                   "disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more "
                                   f"information. [{HOST}]", POISON, cats("permission")),
    "535-5.7.139-mailbox": SmtpCase("auth", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
                                    "disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more "
                                    f"information. [{HOST}]", POISON, cats("permission")),
    "535-5.7.139-security-defaults": SmtpCase("auth", "535 5.7.139 Authentication unsuccessful, user is locked by your "
                                              "organization's security defaults policy. Contact your administrator. "
                                              f"[{HOST}]", POISON, cats("permission")),
    "535-5.7.139-conditional-access": SmtpCase("auth", "535 5.7.139 Authentication unsuccessful, the request did not "
                                               "meet the criteria to be authenticated successfully. Contact your "
                                               f"administrator. [{HOST}]", POISON, cats("permission")),
    "550-5.7.30": SmtpCase("auth", "550 5.7.30 Basic authentication is not supported for Client Submission.",
                           POISON, cats("auth", "config")),
    "504-5.7.4": SmtpCase("auth", f"504 5.7.4 Unrecognized authentication type [{HOST}]", POISON,
                          cats("auth", "config")),
    "501-5.5.124": SmtpCase("auth", "501 5.5.124 Invalid XOAUTH2 auth data - User address provided is not valid",
                            POISON, cats("auth", "config")),
    "530-5.7.57": SmtpCase("mail", "530 5.7.57 Client not authenticated to send mail", POISON, cats("auth")),
    "550-5.7.60": SmtpCase("mail", "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
                           POISON, cats("permission")),
    "554-5.2.252-send-as": SmtpCase("data", "554 5.2.252 SendAsDenied; app@contoso.example not allowed to send as "
                                    "boss@contoso.example; STOREDRV.Submission.Exception:SendAsDeniedException; "
                                    "Failed to process message due to a permanent exception", POISON,
                                    cats("permission")),
    "550-5.2.251-throttled": SmtpCase("mail", "550 5.2.251 Sender throttled due to continuous mailbox full errors.",
                                      POISON, cats("quota")),
    "550-5.2.255-throttled": SmtpCase("mail", "550 5.2.255 Sender throttled due to continuous invalid recipients "
                                      "errors.", POISON, cats("quota")),
    "432-4.3.2": SmtpCase("data", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", RETRY,
                          cats("throttled")),
    "554-5.2.0": SmtpCase("data", "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", POISON,
                          cats("quota")),
    "554-5.2.2": SmtpCase("data", "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
                          "MapiExceptionQuotaExceeded", POISON, cats("quota", "size")),
    "430-4.2.0": SmtpCase("data", "430 4.2.0 STOREDRV; mailbox logon failure", RETRY,
                          cats("transient", "permission", "auth")),
    "451-4.7.500": SmtpCase("mail", "451 4.7.500 Server busy. Please try again later from [198.51.100.7]. (AS843)",
                            RETRY, cats("throttled", "transient")),
    "451-4.7.0": SmtpCase("data", "451 4.7.0 Temporary server error. Please try again later. PRX7", RETRY,
                          cats("transient")),
    "452-4.5.3": SmtpCase("rcpt", "452 4.5.3 Too many recipients", POISON, cats("recipient")),
    "552-5.3.4": SmtpCase("data", "552 5.3.4 Message size exceeds fixed maximum message size", POISON, cats("size")),
    "550-5.1.8": SmtpCase("mail", "550 5.1.8 Access denied, bad outbound sender", POISON, cats("quota", "permission")),
    "550-5.7.708": SmtpCase("mail", "550 5.7.708 Access denied, traffic not accepted from this IP", POISON,
                            cats("quota", "permission")),
    "550-5.7.501": SmtpCase("mail", "550 5.7.501 Access denied, spam abuse detected", POISON,
                            cats("quota", "permission")),
}

GRAPH_CASES: dict[str, GraphCase] = {
    "400-ErrorInvalidRecipients": GraphCase(graph_error(400, "ErrorInvalidRecipients",
                                                        "At least one recipient isn't valid."), POISON,
                                            cats("recipient")),
    "400-ErrorMimeContentInvalidBase64String": GraphCase(graph_error(400, "ErrorMimeContentInvalidBase64String",
                                                                     "Invalid base64 string for MIME content."),
                                                         POISON, cats("invalid_message")),
    "400-InvalidInternetMessageHeader": GraphCase(graph_error(
        400, "InvalidInternetMessageHeader", "The internet message header name 'Foo' should start with 'x-' or 'X-'."),
        POISON, cats("invalid_message")),
    "413-no-json-code": GraphCase((413, {"Content-Type": "text/plain"}, b"The maximum request length supported is 4MB."),
                                  POISON, cats("size")),
    "401-expired": GraphCase(graph_error(401, "InvalidAuthenticationToken",
                                         "Lifetime validation failed, the token is expired."), POISON, cats("auth")),
    "401-invalid-audience": GraphCase(graph_error(401, "InvalidAuthenticationToken",
                                                  "Access token validation failure. Invalid audience."), POISON,
                                      cats("auth")),
    "403-raop": GraphCase(graph_error(403, "ErrorAccessDenied", "Access to OData is disabled: [RAOP] : Blocked by "
                                      "tenant configured AppOnly AccessPolicy settings."), POISON, cats("permission")),
    "403-no-mail-send": GraphCase(graph_error(403, "ErrorAccessDenied",
                                              "Access is denied. Check credentials and try again."), POISON,
                                  cats("permission")),
    "403-ErrorSendAsDenied": GraphCase(graph_error(403, "ErrorSendAsDenied", "The user account which was used to "
                                                   "submit this request does not have the right to send mail on "
                                                   "behalf of the specified sending account."), POISON,
                                       cats("permission")),
    "403-ErrorMessageSubmissionBlocked": GraphCase(graph_error(403, "ErrorMessageSubmissionBlocked",
                                                               "Cannot send mail."), POISON,
                                                   cats("quota", "permission")),
    "404-ErrorInvalidUser": GraphCase(graph_error(404, "ErrorInvalidUser", "The requested user 'x' is invalid."),
                                      POISON, cats("config", "recipient")),
    "404-ResourceNotFound": GraphCase(graph_error(404, "ResourceNotFound", "Resource could not be discovered."),
                                      POISON, cats("config")),
    "404-MailboxNotEnabledForRESTAPI": GraphCase(graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is "
                                                             "either inactive, soft-deleted, or is hosted on-premise."),
                                                 POISON, cats("config")),
    "401-MailboxNotEnabledForRESTAPI": GraphCase(graph_error(401, "MailboxNotEnabledForRESTAPI", "REST API is not "
                                                             "yet supported for this mailbox."), POISON,
                                                 cats("config")),
    "429-MailboxConcurrency": GraphCase(graph_error(429, "ApplicationThrottled", "Application is over its "
                                                    "MailboxConcurrency limit.", **{"Retry-After": "2"}), RETRY,
                                        cats("throttled")),
    "429-TooManyRequests": GraphCase(graph_error(429, "TooManyRequests", "Too many requests.",
                                                 **{"Retry-After": "2"}), RETRY, cats("throttled")),
    "429-activityLimitReached": GraphCase(graph_error(429, "activityLimitReached", "The request has been throttled.",
                                                      **{"Retry-After": "2"}), RETRY, cats("throttled")),
    "403-ErrorExceededMessageLimit": GraphCase(graph_error(403, "ErrorExceededMessageLimit", "Cannot send mail. "
                                                           "Daily Message/Recipient limit exceeded."), POISON,
                                               cats("quota")),
    "507-ErrorQuotaExceeded": GraphCase(graph_error(507, "ErrorQuotaExceeded", "The mailbox quota is exceeded."),
                                        POISON, cats("quota", "size")),
    "403-ErrorSubmissionQuotaExceeded": GraphCase(graph_error(403, "ErrorSubmissionQuotaExceeded", "Submission "
                                                              "quota exceeded."), POISON, cats("quota")),
    "503-ErrorMailboxStoreUnavailable": GraphCase(graph_error(503, "ErrorMailboxStoreUnavailable", "Store is "
                                                              "unavailable."), RETRY, cats("transient")),
    "500-ErrorServerBusy": GraphCase(graph_error(500, "ErrorServerBusy", "The server is busy."), RETRY,
                                     cats("transient", "throttled")),
    "503-ErrorMailboxMoveInProgress": GraphCase(graph_error(503, "ErrorMailboxMoveInProgress", "Mailbox move in "
                                                            "progress."), RETRY, cats("transient")),
    "503-ErrorConnectionFailed": GraphCase(graph_error(503, "ErrorConnectionFailed", "Connection failed."), RETRY,
                                           cats("transient")),
    "503-serviceNotAvailable": GraphCase(graph_error(503, "serviceNotAvailable", "Service unavailable.",
                                                     **{"Retry-After": "2"}), RETRY, cats("transient", "throttled")),
    "504-gateway": GraphCase(graph_error(504, "GatewayTimeout", "Gateway timeout."), AMBIGUOUS, cats("transient")),
    "504-no-body": GraphCase((504, {"Content-Type": "text/html"}, b"<html><body>504 Gateway Time-out</body></html>"),
                             AMBIGUOUS, cats("transient", "unknown")),
    "500-generalException": GraphCase(graph_error(500, "generalException", "An unspecified error has occurred."),
                                      AMBIGUOUS, cats("transient", "unknown")),
}


@dataclass(frozen=True)
class EntraCase:
    reply: tuple[int, dict]
    outcomes: frozenset[str]
    categories: frozenset[str]


def outcomes(*names: str) -> frozenset[str]:
    return frozenset(names)


# Reference §4: "invalid_client, unauthorized_client, invalid_scope, invalid_request: P. temporarily_unavailable: R",
# and the AADSTS table.
ENTRA_CASES: dict[str, EntraCase] = {
    "700027": EntraCase(entra_error(401, "invalid_client", 700027, "Client assertion failed signature validation. "
                                    "[Reason - The key was not found., Thumbprint of key used by client: 'AB12']"),
                        outcomes(POISON), cats("auth", "config")),
    "700016": EntraCase(entra_error(400, "unauthorized_client", 700016, "Application with identifier 'x' was not "
                                    "found in the directory 'Contoso'."), outcomes(POISON), cats("config", "auth")),
    "7000215": EntraCase(entra_error(401, "invalid_client", 7000215, "Invalid client secret provided."),
                         outcomes(POISON), cats("auth", "config")),
    "7000222": EntraCase(entra_error(401, "invalid_client", 7000222, "The provided client secret keys for app 'x' "
                                     "are expired."), outcomes(POISON), cats("auth", "config")),
    "50049": EntraCase(entra_error(400, "invalid_instance", 50049, "Unknown or invalid instance."),
                       outcomes(POISON), cats("config")),
    "90002": EntraCase(entra_error(400, "invalid_request", 90002, "Tenant 'x' not found."), outcomes(POISON),
                       cats("config")),
    "700024": EntraCase(entra_error(400, "invalid_client", 700024, "Client assertion is not within its valid time "
                                    "range."), outcomes(POISON, RETRY), cats("auth", "config")),
    "1002012": EntraCase(entra_error(400, "invalid_scope", 1002012, "The provided value for scope x is not valid."),
                         outcomes(POISON), cats("config")),
    "65001": EntraCase(entra_error(400, "invalid_grant", 65001, "The user or administrator has not consented to use "
                                   "the application."), outcomes(POISON), cats("permission", "config")),
    "500011": EntraCase(entra_error(400, "invalid_resource", 500011, "The resource principal named x was not found "
                                    "in the tenant."), outcomes(POISON), cats("config")),
    "700030": EntraCase(entra_error(401, "invalid_client", 700030, "Invalid certificate - subject name in "
                                    "certificate is not authorized."), outcomes(POISON), cats("auth", "config")),
    "50012": EntraCase(entra_error(401, "invalid_client", 50012, "Authentication failed."), outcomes(POISON),
                       cats("auth")),
    "7000218": EntraCase(entra_error(401, "invalid_client", 7000218, "The request body must contain the following "
                                     "parameter: 'client_assertion' or 'client_secret'."), outcomes(POISON),
                         cats("auth", "config")),
    "53003": EntraCase(entra_error(400, "access_denied", 53003, "Access has been blocked by Conditional Access "
                                   "policies."), outcomes(POISON), cats("permission")),
    "50033": EntraCase(entra_error(500, "server_error", 50033, "A transient error has occurred."), outcomes(RETRY),
                       cats("transient")),
    "90024": EntraCase(entra_error(429, "server_error", 90024, "RequestBudgetExceededError"), outcomes(RETRY),
                       cats("transient", "throttled")),
    "90033": EntraCase(entra_error(503, "temporarily_unavailable", 90033, "A transient error has occurred."),
                       outcomes(RETRY), cats("transient", "throttled")),
    "90006": EntraCase(entra_error(503, "temporarily_unavailable", 90006, "The server encountered a transient "
                                   "error."), outcomes(RETRY), cats("transient", "throttled")),
    "invalid_client": EntraCase(entra_error(401, "invalid_client", None, "Client authentication failed."),
                                outcomes(POISON), cats("auth", "config")),
    "unauthorized_client": EntraCase(entra_error(400, "unauthorized_client", None, "Not authorized."),
                                     outcomes(POISON), cats("auth", "config", "permission")),
    "invalid_scope": EntraCase(entra_error(400, "invalid_scope", None, "Bad scope."), outcomes(POISON),
                               cats("config")),
    "invalid_request": EntraCase(entra_error(400, "invalid_request", None, "Bad request."), outcomes(POISON),
                                 cats("config")),
    "temporarily_unavailable": EntraCase(entra_error(503, "temporarily_unavailable", None, "Try again."),
                                         outcomes(RETRY), cats("transient", "throttled")),
}


@dataclass
class Replay:
    play: HostPlay
    servers: ReplayServers
    envelopes: dict[str, dict] = field(default_factory=dict)  # case -> envelope, for later checks


@pytest.fixture(scope="module")
def replay(_harness_session: Harness, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    harness = _harness_session
    harness.reset()
    directory = tmp_path_factory.mktemp("replay")
    with replay_servers(directory, Path(harness.ca_bundle)) as servers, pytest.MonkeyPatch.context() as mp:
        values = contract_values(harness, azurite, OUTBOX_GRAPH_URL=servers.graph_url, OUTBOX_SMTP_HOST="127.0.0.1",
                                 OUTBOX_SMTP_PORT=str(servers.smtp_port), OUTBOX_CA_BUNDLE=str(servers.ca_file),
                                 OUTBOX_ON_AMBIGUOUS="lookup", OUTBOX_RETRY_AFTER_MAX_S="30")
        play = HostPlay(values, mp, azurite)
        try:
            yield Replay(play, servers)
        finally:
            play.close()


def mailbox_for(case: str) -> str:
    return "case-" + "".join(c if c.isalnum() else "-" for c in case.lower()) + "@contoso.example"


def run_case(replay: Replay, case: str, transport: str) -> tuple[dict, dict | None]:
    mailbox = mailbox_for(case)
    message_id = f"{transport}-{mailbox.split('@')[0]}"
    invocation = replay.play.invoke_text(json.dumps(mail(id=message_id, transport=transport, **{"from": mailbox})))
    assert invocation.ok, invocation.error
    row = replay.play.storage.row(message_id)
    assert row is not None
    envelope = None
    if row["State"] == "poisoned":
        texts = replay.play.storage.take_poison(1, timeout=5)
        envelope = json.loads(texts[0])
        replay.envelopes[case] = envelope
    return row, envelope


def check(row: dict, envelope: dict | None, outcome: str, categories: frozenset[str], transport: str,
          status: int | None, code: str | None) -> None:
    if outcome == POISON:
        assert row["State"] == "poisoned", (row["State"], row.get("LastCategory"), row.get("LastCode"))
        assert envelope is not None
        error = envelope["error"]
        assert error["category"] in categories, (error["category"], error["code"], error["detail"])
        assert error["transport"] == transport and error["status"] == status
        if code is not None:
            assert error["code"] == code
        assert error["hint"]
        return
    assert envelope is None, envelope and envelope["error"]
    wanted = {"ambiguous"} if outcome == AMBIGUOUS else {"retrying", "queued"}
    assert row["State"] in wanted, (row["State"], row.get("LastCategory"), row.get("LastCode"))
    assert row["LastCategory"] in categories, (row["LastCategory"], row["LastCode"])


@pytest.mark.parametrize("case", list(SMTP_CASES))
def test_smtp_reply(replay: Replay, case: str) -> None:
    spec = SMTP_CASES[case]
    mailbox = mailbox_for(case)
    replay.servers.script.smtp[mailbox] = {spec.stage: spec.reply}
    row, envelope = run_case(replay, case, "smtp")
    status, enhanced = int(spec.reply[:3]), spec.reply.split()[1]
    check(row, envelope, spec.outcome, spec.categories, "smtp", status, enhanced)
    if case == "535-5.7.3":
        # One retry with a fresh token, then stop (reference: "P (one retry with a fresh token, then stop)").
        assert replay.servers.script.calls[(mailbox, "auth")] == 2


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_graph_reply(replay: Replay, case: str) -> None:
    spec = GRAPH_CASES[case]
    mailbox = mailbox_for(case)
    replay.servers.script.graph[mailbox] = spec.reply
    row, envelope = run_case(replay, case, "graph")
    status, _, body = spec.reply
    code = None
    if body.startswith(b"{"):
        code = json.loads(body)["error"]["code"]
    check(row, envelope, spec.outcome, spec.categories, "graph", status, code)
    if envelope is not None and code is not None:
        assert envelope["error"]["requestId"], "Graph's request-id belongs in the envelope"
    retry_after = spec.reply[1].get("Retry-After")
    if retry_after and spec.outcome == RETRY:
        # Retry-After is honoured: the next attempt is not due before it.
        delay = (row["NextAttemptAt"] - row["UpdatedAt"]).total_seconds()
        assert delay >= int(retry_after) - 0.05, delay
    calls = replay.servers.script.calls[(mailbox, "sendMail")]
    if case == "401-expired":
        assert calls == 2, "an expired token is retried once with a new token"
    elif spec.outcome == AMBIGUOUS:
        assert calls == 1, "a send that may have happened is never repeated in the same invocation"


@pytest.mark.parametrize("case", list(ENTRA_CASES))
def test_entra_token_error(replay: Replay, case: str) -> None:
    """The certificate comes from the harness's Key Vault; the token endpoint is the replay server's."""
    from function_app.runtime import close_runtime

    spec = ENTRA_CASES[case]
    close_runtime()  # a fresh worker: no token cached, no error replayed by MSAL's throttling cache
    replay.servers.script.entra = spec.reply
    saved = os.environ["OUTBOX_AUTHORITY_HOST"]
    os.environ["OUTBOX_AUTHORITY_HOST"] = replay.servers.graph_url
    try:
        row, envelope = run_case(replay, f"entra-{case}", "graph")
    finally:
        os.environ["OUTBOX_AUTHORITY_HOST"] = saved
        replay.servers.script.entra = None
        close_runtime()
    if envelope is not None:
        assert POISON in spec.outcomes, envelope["error"]
        error = envelope["error"]
        assert error["category"] in spec.categories, (error["category"], error["code"], error["detail"])
        assert error["transport"] == "entra" and error["status"] == spec.reply[0]
        if spec.reply[1]["error_codes"]:
            assert error["code"] == f"AADSTS{spec.reply[1]['error_codes'][0]}"
            assert error["requestId"] == spec.reply[1]["trace_id"]
    else:
        assert RETRY in spec.outcomes, (row["State"], row.get("LastCategory"), row.get("LastCode"))
        assert row["State"] in ("retrying", "queued"), row["State"]
        assert row["LastCategory"] in spec.categories, (row["LastCategory"], row["LastCode"])
    assert replay.servers.script.calls[(mailbox_for(f"entra-{case}"), "sendMail")] == 0


@pytest.mark.parametrize(("transport", "audience"), [("graph", "https://graph.microsoft.com"),
                                                     ("smtp", "https://outlook.office365.com")])
def test_tokens_are_for_the_resource_not_for_the_overridden_endpoint(replay: Replay, transport: str,
                                                                     audience: str) -> None:
    """design.md: scopes are resource identifiers, never derived from an endpoint override (here the
    replay servers' https://127.0.0.1:port). Graph requests carry a GUID client-request-id."""
    import jwt

    row, envelope = run_case(replay, f"ok-{transport}", transport)
    assert envelope is None and row["State"] == "sent"
    seen = replay.servers.script.seen[mailbox_for(f"ok-{transport}")]
    claims = jwt.decode(seen["token"], options={"verify_signature": False})
    assert claims["aud"].rstrip("/") == audience
    if transport == "graph":
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                            seen["client-request-id"].lower())
        assert seen["client-request-id"] in row["RequestIds"].split(",")


POISONED_CASES = [*(c for c, s in SMTP_CASES.items() if s.outcome == POISON),
                  *(c for c, s in GRAPH_CASES.items() if s.outcome == POISON),
                  *(f"entra-{c}" for c, s in ENTRA_CASES.items() if s.outcomes == {POISON} or c == "700024")]


@pytest.mark.parametrize("case", POISONED_CASES)
def test_a_poisoned_reference_p_row_is_not_retryable(replay: Replay, case: str) -> None:
    """The reference classes these P: poisoned after whatever retries the row allows, another attempt would
    not succeed unless someone changes something (docs/errors.md's meaning of "retryable")."""
    envelope = replay.envelopes.get(case)
    assert envelope is not None, f"{case}: the reference poisons it, but no poison envelope came"
    assert envelope["error"]["retryable"] is False, f"{envelope['error']['code']}: poisoned, yet retryable"


def test_every_case_was_answered_by_the_replay_servers(replay: Replay, _harness_session: Harness) -> None:
    """The endpoint overrides took effect: the harness's fakes saw none of these mailboxes."""
    assert not [d for d in _harness_session.deliveries() if d.mailbox.startswith("case-")]
    answered = {mailbox for mailbox, _ in replay.servers.script.calls}
    assert {mailbox_for(c) for c in SMTP_CASES} | {mailbox_for(c) for c in GRAPH_CASES} <= answered
    assert replay.servers.script.calls[("entra", "token")] >= len(ENTRA_CASES)
