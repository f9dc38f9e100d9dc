"""The tenant a harness pretends to be: apps, permissions, mailboxes, limits, faults.

A scenario is a TOML file (see ``harness/scenarios/default.toml``) read into frozen dataclasses. Every
misconfiguration a user can make in a real tenant is one line in TOML, and in code one call:

    broken = scenario.with_app("outbox-sender", exchange_consent=False)
    broken = scenario.with_mailbox("sender@contoso.example", smtp_auth_enabled=False)
    broken = scenario.with_changes({"apps": {"outbox-sender": {"smtp": {"service_principal_object_id": "x"}}}})

Policy questions the fakes ask ("may app X use mailbox M over Graph?") are methods here, so the Graph
fake, the SMTP fake and the doctor tests agree on one answer.
"""

from __future__ import annotations

import copy
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from harness.faults import FaultRule

DEFAULT_SCENARIO_PATH = Path(__file__).parent / "scenarios" / "default.toml"

GRAPH_ROLES = ("Mail.Send", "Mail.ReadWrite", "Mail.ReadBasic", "Mail.Read", "Mail.ReadBasic.All")
EXCHANGE_ROLES = ("SMTP.SendAsApp", "full_access_as_app")
KEYVAULT_ROLES = ("Key Vault Certificate User", "Key Vault Secrets User", "Key Vault Administrator", "none")
KeyVaultRole = Literal[
    "Key Vault Certificate User", "Key Vault Secrets User", "Key Vault Administrator", "none"
]
UNRESTRICTED = "*"
# Namespace for the stable object ids of scenario users (uuid5 of the address).
USER_OID_NAMESPACE = uuid.UUID("6d1c6a4e-0000-4000-8000-00000000a5e7")
# Exchange's sizes are binary megabytes: MaxSendSize 35 MB = 36,700,160 bytes (Get-Mailbox), and SMTP's EHLO
# advertises the 150 MB ceiling as SIZE 157286400.
MIB = 1024 * 1024
EXCHANGE_DEFAULT_MAX_SEND_BYTES = 35 * MIB
EXCHANGE_MAX_MESSAGE_BYTES = 150 * MIB


class ScenarioError(ValueError):
    """A scenario that does not describe a coherent tenant (names the offending key)."""


# -- model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate the harness generates for an app registration.

    ``registered`` false: the key is in Key Vault but was never uploaded to the app (AADSTS700027).
    ``expired`` true: validity ended yesterday (Entra rejects assertions signed with it).
    """

    label: str = "current"
    valid_days: float = 365.0
    starts_days_ago: float = 0.0
    expired: bool = False
    registered: bool = True


@dataclass(frozen=True)
class GraphAccess:
    """Application Access Policy / RBAC for Applications: which mailboxes Graph lets this app touch."""

    mailboxes: tuple[str, ...] = (UNRESTRICTED,)

    @property
    def unrestricted(self) -> bool:
        return UNRESTRICTED in self.mailboxes

    def allows(self, mailbox: str) -> bool:
        return self.unrestricted or mailbox.lower() in {m.lower() for m in self.mailboxes}


@dataclass(frozen=True)
class SmtpAccess:
    """Exchange side of app-only SMTP: ``New-ServicePrincipal``, ``Add-MailboxPermission``, Send As.

    ``service_principal_object_id`` empty means "registered with the app's real object id"; any other
    value is the object id an admin typed (a wrong one makes every AUTH fail with 535 5.7.3).
    """

    service_principal_registered: bool = True
    service_principal_object_id: str = ""
    full_access: tuple[str, ...] = ()
    send_as: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppRegistration:
    name: str
    client_id: str
    service_principal_id: str
    display_name: str = ""
    graph_roles: tuple[str, ...] = ()
    graph_consent: bool = True
    exchange_roles: tuple[str, ...] = ()
    exchange_consent: bool = True
    certificates: tuple[CertificateSpec, ...] = (CertificateSpec(),)
    """``certificates = {}`` for an app with no credential (a public client)."""
    graph: GraphAccess = field(default_factory=GraphAccess)
    smtp: SmtpAccess = field(default_factory=SmtpAccess)
    public_client: bool = False
    """"Allow public client flows" (``isFallbackPublicClient``): device code and auth code without a secret."""
    redirect_uris: tuple[str, ...] = ("http://localhost",)
    """Registered redirect URIs ("Mobile and desktop applications"); ``http://localhost`` matches any port."""

    @property
    def consented_graph_roles(self) -> tuple[str, ...]:
        return self.graph_roles if self.graph_consent else ()

    @property
    def consented_exchange_roles(self) -> tuple[str, ...]:
        return self.exchange_roles if self.exchange_consent else ()

    def certificate(self, label: str) -> CertificateSpec:
        for spec in self.certificates:
            if spec.label == label:
                return spec
        raise ScenarioError(f"app {self.name!r} has no certificate labelled {label!r}")


@dataclass(frozen=True)
class Mailbox:
    address: str
    display_name: str = ""
    licensed: bool = True
    smtp_auth_enabled: bool = True
    shared: bool = False
    send_as: tuple[str, ...] = ()
    """Addresses this mailbox may send as (``Add-RecipientPermission -Trustee <this> -AccessRights SendAs``)."""
    full_access: tuple[str, ...] = ()
    """Users with FullAccess on this mailbox (``Add-MailboxPermission -Identity <this> -User <user>``)."""
    max_send_bytes: int = EXCHANGE_DEFAULT_MAX_SEND_BYTES
    """``Set-Mailbox -MaxSendSize``: the largest message this mailbox may send, counted as Exchange counts it
    (the MIME size, attachments base64-encoded: ``harness.graph_limits``). Exchange Online's default is 35 MB,
    which ``Get-Mailbox`` shows as "35 MB (36,700,160 bytes)"; the Graph path's 150 MB ceiling
    (``limits.graph.max_message_bytes``) applies on top."""

    def __post_init__(self) -> None:
        if self.max_send_bytes <= 0:
            raise ScenarioError(f"mailboxes.{self.address}.max_send_bytes must be > 0")

    def grants_full_access(self, user: str) -> bool:
        return user.lower() in {u.lower() for u in self.full_access}


@dataclass(frozen=True)
class User:
    """A person who can sign in (delegated flows): UPN, what they consented to, how they sign in.

    ``consented`` holds Graph scopes by short name (``Mail.Send``) and Outlook's by full URI
    (``https://outlook.office.com/SMTP.Send``). ``auto_approve``: device codes approve themselves as this
    user and the authorize page signs this user in without a form.
    """

    address: str
    object_id: str = ""
    display_name: str = ""
    mfa_required: bool = False
    consented: tuple[str, ...] = ()
    auto_approve: bool = False

    def __post_init__(self) -> None:
        if not self.object_id:
            object.__setattr__(self, "object_id", str(uuid.uuid5(USER_OID_NAMESPACE, self.address.lower())))


@dataclass(frozen=True)
class DelegatedSettings:
    """Timings of the delegated sign-in flows (settings so that tests run them in seconds)."""

    device_code_expires_s: int = 900
    device_code_interval_s: int = 5
    auth_code_lifetime_s: int = 600
    refresh_token_inactive_days: float = 90.0
    """Entra's ``MaxInactiveTime``: a refresh token unused this long answers AADSTS700082."""

    def __post_init__(self) -> None:
        for name in ("device_code_expires_s", "device_code_interval_s", "auth_code_lifetime_s"):
            if getattr(self, name) < 0:
                raise ScenarioError(f"delegated.{name} must be >= 0")
        if self.refresh_token_inactive_days <= 0:
            raise ScenarioError("delegated.refresh_token_inactive_days must be > 0")


@dataclass(frozen=True)
class ManagedIdentity:
    """The function's user-assigned identity (``AZURE_CLIENT_ID``): reads Key Vault and storage."""

    client_id: str
    object_id: str
    keyvault_role: KeyVaultRole = "Key Vault Certificate User"

    def may_read_secrets(self) -> bool:
        # Certificate User includes secrets/getSecret, which is how a certificate's private key is read.
        return self.keyvault_role != "none"


@dataclass(frozen=True)
class KeyVaultSpec:
    certificate_name: str = "outbox-sender"
    app: str = "outbox-sender"
    certificate: str = "current"


@dataclass(frozen=True)
class ExchangeSettings:
    smtp_auth_enabled: bool = True
    """Tenant-wide switch (``Set-TransportConfig -SmtpClientAuthenticationDisabled``)."""
    smtp_copies_to_sent_items: bool = True
    """Microsoft: "Email messages that are sent are stored in the Sent Items folder" (SupportArticles, SMTP AUTH
    submission throttling). The institution's FAQ says the opposite; false models that."""
    sent_items_delay_s: float = 0.0
    """How long after a Graph send its copy takes to appear in Sent Items. Graph answers 202 once the message
    is in Drafts; transport and the move to Sent Items happen afterwards (microsoft-graph-docs-contrib
    concepts/outlook-things-to-know-about-send-mail.md), at a time Microsoft does not state."""
    ambiguous_hold_s: float = 0.0
    """After an ambiguous fault on a sending request (a 5xx ``reply`` or ``drop_after_body`` on ``sendMail``
    or ``send``) the backend is still at work: the request's concurrency slot stays held this long, so a
    quick resend can get 429 MailboxConcurrency ([obs] Q&A 2286986: four 504s, then a 429 because the
    attempts were "still active", and the mail received four times). Fault param ``hold_s`` overrides it."""
    ambiguous_delivery_delay_s: float = 0.0
    """After such a fault the message that is delivered (``params.delivered``) goes out this long later; it
    sits in Drafts meanwhile (Graph's 202 comes once the message is saved in Drafts, transport follows),
    then its Sent Items copy appears ``sent_items_delay_s`` after delivery. Fault param ``deliver_after_s``
    overrides it. 0: delivered at once, as before."""

    def __post_init__(self) -> None:
        for name in ("sent_items_delay_s", "ambiguous_hold_s", "ambiguous_delivery_delay_s"):
            if getattr(self, name) < 0:
                raise ScenarioError(f"exchange.{name} must be >= 0")


def _check_latency(where: str, latency_ms: float) -> None:
    if latency_ms < 0:
        raise ScenarioError(f"{where}.latency_ms must be >= 0")


@dataclass(frozen=True)
class GraphLimits:
    concurrency: int = 4
    requests_per_window: int = 10_000
    window_s: float = 600.0
    upload_bytes_per_window: int = 150 * 1024 * 1024
    upload_window_s: float = 300.0
    max_request_bytes: int = 4 * 1024 * 1024
    latency_ms: float = 0.0
    """Base latency of every Graph request (held while the request counts as in flight)."""
    rejected_requests_count: bool = False
    """A request answered 429 still counts against the request budget. Microsoft: "Avoid immediate
    retries, because all requests accrue against your usage limits" (graph/throttling), so a client that
    hammers a throttled mailbox keeps its own window full. Off: a rejection consumes nothing."""
    concurrency_retry_after_s: int = 1
    """Retry-After of the MailboxConcurrency 429 (Microsoft does not document it; clients report short ones)."""

    max_message_bytes: int = EXCHANGE_MAX_MESSAGE_BYTES
    """The ceiling above every mailbox's MaxSendSize: 150 MB (microsoft-graph-docs-contrib
    concepts/outlook-large-attachments.md: upload sessions for files "between 3 MB and 150 MB")."""
    recipients_per_message: int = 500
    """Exchange Online's default RecipientLimits (1..1000; Exchange Online limits, "Recipient limit")."""
    recipients_per_day: int = 10_000
    """Recipient rate limit per mailbox over a rolling ``recipients_window_s`` (Exchange Online limits:
    10,000 recipients per day; the product team: "a rolling 24-hour window",
    OfficeDocs-O365ServiceDescriptions#201). Counted apart from the SMTP fake's own window."""
    recipients_window_s: float = 86_400.0

    def __post_init__(self) -> None:
        _check_latency("limits.graph", self.latency_ms)
        if self.concurrency_retry_after_s < 1:
            raise ScenarioError("limits.graph.concurrency_retry_after_s must be >= 1")
        for name in ("max_message_bytes", "recipients_per_message", "recipients_per_day", "recipients_window_s"):
            if getattr(self, name) <= 0:
                raise ScenarioError(f"limits.graph.{name} must be > 0")


@dataclass(frozen=True)
class SmtpLimits:
    connections_per_mailbox: int = 3
    messages_per_window: int = 30
    window_s: float = 60.0
    recipients_per_message: int = 500
    recipients_per_day: int = 10_000
    max_message_bytes: int = 35 * 1024 * 1024
    latency_ms: float = 0.0
    """Base latency before every SMTP reply the fake scripts (banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA)."""
    concurrency_reply: str = "concurrent_connections"
    """The reply to a 4th concurrent session's DATA: Microsoft's documented "432 4.3.2 Concurrent connections
    limit exceeded." (SupportArticles, SMTP AUTH submission throttling), or "thread_limit" for the
    "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded" seen in older traces."""
    over_rate: str = "delay"
    """Past messages_per_window: "delay" (Microsoft: the excess is "throttled and successively carried over":
    accepted, delivered later) or "refuse" (451 4.7.500, the harness's earlier, stricter behaviour)."""

    def __post_init__(self) -> None:
        _check_latency("limits.smtp", self.latency_ms)
        if self.concurrency_reply not in ("concurrent_connections", "thread_limit"):
            raise ScenarioError("limits.smtp.concurrency_reply must be concurrent_connections or thread_limit")
        if self.over_rate not in ("delay", "refuse"):
            raise ScenarioError("limits.smtp.over_rate must be delay or refuse")


@dataclass(frozen=True)
class Limits:
    graph: GraphLimits = field(default_factory=GraphLimits)
    smtp: SmtpLimits = field(default_factory=SmtpLimits)

    def base_latency_s(self, service: str) -> float:
        """The per-service base latency the fakes add to every request (0 for services without one)."""
        if service == "graph":
            return self.graph.latency_ms / 1000.0
        if service == "smtp":
            return self.smtp.latency_ms / 1000.0
        return 0.0


@dataclass(frozen=True)
class Scenario:
    tenant_id: str
    apps: tuple[AppRegistration, ...]
    mailboxes: tuple[Mailbox, ...]
    managed_identity: ManagedIdentity
    name: str = "custom"
    tenant_domain: str = "contoso.example"
    sending_app: str = "outbox-sender"
    seed: int = 0
    token_lifetime_s: int = 3599
    keyvault: KeyVaultSpec = field(default_factory=KeyVaultSpec)
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)
    limits: Limits = field(default_factory=Limits)
    faults: tuple[FaultRule, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    """Extra or overriding app settings written to local.settings.json (e.g. a wrong OUTBOX_TENANT_ID)."""
    users: tuple[User, ...] = ()
    delegated: DelegatedSettings = field(default_factory=DelegatedSettings)

    def __post_init__(self) -> None:
        names = [a.name for a in self.apps]
        if len(set(names)) != len(names):
            raise ScenarioError("app names must be unique")
        addresses = [u.address.lower() for u in self.users]
        if len(set(addresses)) != len(addresses):
            raise ScenarioError("user addresses must be unique")
        if self.sending_app not in names:
            raise ScenarioError(
                f"sending_app {self.sending_app!r} is not one of the apps ({', '.join(names)})"
            )
        if self.keyvault.app not in names:
            raise ScenarioError(f"keyvault.app {self.keyvault.app!r} is not one of the apps")
        self.app(self.keyvault.app).certificate(self.keyvault.certificate)
        if self.managed_identity.keyvault_role not in KEYVAULT_ROLES:
            raise ScenarioError(f"managed_identity.keyvault_role must be one of {', '.join(KEYVAULT_ROLES)}")

    # -- lookups ----------------------------------------------------------------------------------------
    def app(self, name: str) -> AppRegistration:
        for app in self.apps:
            if app.name == name:
                return app
        raise ScenarioError(f"no app named {name!r}")

    def app_by_client_id(self, client_id: str) -> AppRegistration | None:
        for app in self.apps:
            if app.client_id.lower() == client_id.lower():
                return app
        return None

    def mailbox(self, address: str) -> Mailbox | None:
        address = address.lower()
        for mailbox in self.mailboxes:
            if mailbox.address.lower() == address:
                return mailbox
        return None

    def user(self, address: str) -> User | None:
        address = address.lower()
        for user in self.users:
            if user.address.lower() == address:
                return user
        return None

    def user_by_object_id(self, object_id: str) -> User | None:
        for user in self.users:
            if user.object_id.lower() == object_id.lower():
                return user
        return None

    def auto_approve_user(self) -> User | None:
        return next((u for u in self.users if u.auto_approve), None)

    def has_full_access(self, user: str, mailbox: str) -> bool:
        """Whether ``user`` may open ``mailbox``: its own, or a FullAccess grant on it."""
        if user.lower() == mailbox.lower():
            return self.mailbox(mailbox) is not None
        box = self.mailbox(mailbox)
        return box is not None and box.grants_full_access(user)

    @property
    def sender(self) -> AppRegistration:
        return self.app(self.sending_app)

    def roles_for(self, client_id: str, resource: Literal["graph", "exchange"]) -> tuple[str, ...]:
        """Consented application roles the app's token carries for a resource."""
        app = self.app_by_client_id(client_id)
        if app is None:
            return ()
        return app.consented_graph_roles if resource == "graph" else app.consented_exchange_roles

    # -- policy: Graph ------------------------------------------------------------------------------------
    def graph_may_access(self, client_id: str, mailbox: str) -> bool:
        """Application Access Policy / RBAC scope (false -> 403 ErrorAccessDenied [RAOP])."""
        app = self.app_by_client_id(client_id)
        return app is not None and app.graph.allows(mailbox)

    def may_send_as(self, mailbox: str, from_address: str) -> bool:
        """Whether ``mailbox`` may put ``from_address`` in From (itself, or a Send As grant)."""
        if mailbox.lower() == from_address.lower():
            return True
        box = self.mailbox(mailbox)
        return box is not None and from_address.lower() in {a.lower() for a in box.send_as}

    # -- policy: SMTP -------------------------------------------------------------------------------------
    def smtp_auth_disabled(self, mailbox: str) -> Literal["tenant", "mailbox"] | None:
        """Which SmtpClientAuthentication switch blocks this mailbox (-> 535 5.7.139), if any.

        The mailbox setting wins over the tenant's, as in Exchange (a mailbox explicitly enabled works even
        when the tenant default is off is NOT modelled: here either switch being off blocks).
        """
        box = self.mailbox(mailbox)
        if box is not None and not box.smtp_auth_enabled:
            return "mailbox"
        if not self.exchange.smtp_auth_enabled:
            return "tenant"
        return None

    def smtp_may_authenticate(self, client_id: str, token_object_id: str, mailbox: str) -> bool:
        """Exchange's view of an app-only XOAUTH2 login once the token itself is valid.

        True only if Exchange knows a service principal for the app registered with the token's ``oid``
        and that principal has FullAccess on the mailbox. Deliberately a bool: Exchange answers 535 5.7.3
        for every cause, and so must the fake.
        """
        app = self.app_by_client_id(client_id)
        if app is None or not app.smtp.service_principal_registered:
            return False
        registered_oid = app.smtp.service_principal_object_id or app.service_principal_id
        if registered_oid.lower() != token_object_id.lower():
            return False
        if self.mailbox(mailbox) is None:
            return False
        return mailbox.lower() in {m.lower() for m in app.smtp.full_access}

    def smtp_may_send_as(self, client_id: str, authenticated_mailbox: str, from_address: str) -> bool:
        """MAIL FROM / From allowed for an app authenticated as ``authenticated_mailbox``."""
        if self.may_send_as(authenticated_mailbox, from_address):
            return True
        app = self.app_by_client_id(client_id)
        return app is not None and from_address.lower() in {m.lower() for m in app.smtp.send_as}

    # -- derivation -----------------------------------------------------------------------------------
    def with_changes(self, changes: Mapping[str, Any] | None = None, **top_level: Any) -> Scenario:
        """A new scenario with a TOML-shaped patch deep-merged in (apps/mailboxes keyed by name/address).

        ``scenario.with_changes({"exchange": {"smtp_auth_enabled": False}})`` or
        ``scenario.with_changes(token_lifetime_s=5)``.
        """
        data = self.to_dict()
        if changes:
            _deep_merge(data, _plain(changes))
        _deep_merge(data, _plain(top_level))
        return Scenario.from_dict(data)

    def with_app(self, name: str, **changes: Any) -> Scenario:
        return self.with_changes({"apps": {name: changes}})

    def with_mailbox(self, address: str, **changes: Any) -> Scenario:
        return self.with_changes({"mailboxes": {address: changes}})

    def without_mailbox(self, address: str) -> Scenario:
        return replace(
            self, mailboxes=tuple(m for m in self.mailboxes if m.address.lower() != address.lower())
        )

    # -- (de)serialisation ------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> Scenario:
        return cls.from_file(DEFAULT_SCENARIO_PATH)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path}: {exc}") from exc
        data.setdefault("name", path.stem)
        return cls.from_dict(_resolve_extends(data, path.parent))

    @classmethod
    def from_toml(cls, text: str, *, base_dir: str | Path | None = None) -> Scenario:
        data = tomllib.loads(text)
        return cls.from_dict(_resolve_extends(data, Path(base_dir) if base_dir else Path.cwd()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        data = _resolve_extends(data, Path.cwd()) if "extends" in data else dict(data)
        try:
            apps = tuple(_app_from(name, body) for name, body in dict(data.pop("apps", {})).items())
            mailboxes = tuple(
                _build(Mailbox, {"address": address, **body}, f"mailboxes.{address}")
                for address, body in dict(data.pop("mailboxes", {})).items()
            )
            identity = _build(ManagedIdentity, data.pop("managed_identity", {}), "managed_identity")
            keyvault = _build(KeyVaultSpec, data.pop("keyvault", {}), "keyvault")
            exchange = _build(ExchangeSettings, data.pop("exchange", {}), "exchange")
            limits_data = dict(data.pop("limits", {}))
            limits = Limits(
                graph=_build(GraphLimits, limits_data.pop("graph", {}), "limits.graph"),
                smtp=_build(SmtpLimits, limits_data.pop("smtp", {}), "limits.smtp"),
            )
            if limits_data:
                raise ScenarioError(f"unknown key(s) in limits: {', '.join(limits_data)}")
            faults = tuple(FaultRule.from_dict(rule) for rule in data.pop("faults", ()))
            settings = {str(k): str(v) for k, v in dict(data.pop("settings", {})).items()}
            users = tuple(
                _build(User, {"address": address, **body}, f"users.{address}")
                for address, body in dict(data.pop("users", {})).items()
            )
            delegated = _build(DelegatedSettings, data.pop("delegated", {}), "delegated")
            return _build(
                cls,
                {
                    **data,
                    "apps": apps,
                    "mailboxes": mailboxes,
                    "managed_identity": identity,
                    "keyvault": keyvault,
                    "exchange": exchange,
                    "limits": limits,
                    "faults": faults,
                    "settings": settings,
                    "users": users,
                    "delegated": delegated,
                },
                "scenario",
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ScenarioError):
                raise
            raise ScenarioError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """TOML/JSON-shaped: from_dict(to_dict()) == self."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "apps":
                out["apps"] = {app.name: _app_to(app) for app in value}
            elif f.name == "mailboxes":
                out["mailboxes"] = {m.address: _dump(m, skip=("address",)) for m in value}
            elif f.name == "users":
                out["users"] = {u.address: _dump(u, skip=("address",)) for u in value}
            elif f.name == "faults":
                out["faults"] = [rule.to_dict() for rule in value]
            elif f.name == "settings":
                out["settings"] = dict(value)
            else:
                out[f.name] = _dump(value)
        return out


# -- helpers --------------------------------------------------------------------------------------------


def _resolve_extends(data: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """``extends = "default"`` (a bundled scenario) or a path relative to the extending file."""
    data = dict(data)
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        return data
    bundled = DEFAULT_SCENARIO_PATH.parent / f"{parent_ref}.toml"
    parent_path = bundled if bundled.exists() else (base_dir / str(parent_ref))
    if not parent_path.exists():
        raise ScenarioError(f"extends = {parent_ref!r}: no bundled scenario or file {parent_path}")
    try:
        parent = tomllib.loads(parent_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{parent_path}: {exc}") from exc
    merged = _resolve_extends(parent, parent_path.parent)
    _deep_merge(merged, data)
    return merged


def _app_from(name: str, body: Mapping[str, Any]) -> AppRegistration:
    body = dict(body)
    where = f"apps.{name}"
    certs = body.pop("certificates", None)
    if certs is not None:
        body["certificates"] = tuple(
            _build(CertificateSpec, {"label": label, **spec}, f"{where}.certificates.{label}")
            for label, spec in dict(certs).items()
        )
    if "graph" in body:
        body["graph"] = _build(GraphAccess, body["graph"], f"{where}.graph")
    if "smtp" in body:
        body["smtp"] = _build(SmtpAccess, body["smtp"], f"{where}.smtp")
    return _build(AppRegistration, {"name": name, **body}, where)


def _app_to(app: AppRegistration) -> dict[str, Any]:
    out = _dump(app, skip=("name", "certificates"))
    out["certificates"] = {c.label: _dump(c, skip=("label",)) for c in app.certificates}
    return out


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ScenarioError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc


def _dump(value: Any, skip: tuple[str, ...] = ()) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _dump(getattr(value, f.name)) for f in fields(value) if f.name not in skip}
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _dump(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _deep_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
