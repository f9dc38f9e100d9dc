"""Every setting outbox reads, read and validated in one place.

Precedence: the process environment, then one settings file (``--settings FILE`` for the CLI and the
local host, else ``./local.settings.json`` when the environment is the real one), then the defaults of
the registry below. The Functions host puts app settings in the environment, so the function itself
only ever sees the first layer.

Each setting is declared once, as a field of :class:`Settings` (``setting(name, default, doc, read)``):
that one declaration is its parse rule, its typed attribute and its line in docs/settings.md.
``SETTINGS``, the registry built from those fields, is what the drift test compares with Bicep and
``local.settings.example.json``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from shared.errors import ConfigError

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

Scope = Literal["function", "cli", "local"]
MiB = 1024 * 1024


class SettingsError(ConfigError, ValueError):
    """A setting is missing or malformed. ``names`` lists every setting at fault."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        self.names = tuple(self.problems)
        lines = "; ".join(f"{name}: {why}" for name, why in self.problems.items())
        super().__init__(
            f"invalid settings: {lines}",
            code="settings",
            hint="Fix the named settings (app settings in Azure, local.settings.json locally); "
            "docs/settings.md lists every setting.",
        )


Read = Callable[["_Reader", str], Any]


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name, default and doc (docs/settings.md), who reads it, and how it is parsed."""

    name: str
    default: str | None
    doc: str
    scope: Scope = "function"
    required: bool = False
    read: Read = field(default=lambda r, name: r.text(name), compare=False, repr=False)


def setting(name: str, default: str | None, doc: str, read: Read | None = None, *, scope: Scope = "function",
            required: bool = False) -> Any:
    """A field of :class:`Settings` read from the setting ``name``: the one place a setting is declared."""
    spec = SettingSpec(name, default, doc, scope, required, read or (lambda r, n: r.text(n)))
    return field(metadata={"setting": spec})


def optional(r: _Reader, name: str) -> str | None:
    return r.optional(name)


def https_url(r: _Reader, name: str) -> str | None:
    return r.https_url(name)


def whole(minimum: int = 0) -> Read:
    return lambda r, name: r.number(name, int, minimum)


def number(minimum: float = 0.0) -> Read:
    return lambda r, name: r.number(name, float, minimum)


def choice(*allowed: str) -> Read:
    return lambda r, name: r.choice(name, allowed)


# Names the code reads that belong to the platform, not to outbox's contract.
PLATFORM_SETTINGS = (
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
)


@dataclass(frozen=True)
class Cloud:
    authority_host: str
    graph_url: str
    smtp_host: str
    graph_scope: str
    smtp_scope: str
    keyvault_scope: str
    outlook_resource: str = "https://outlook.office.com"  # a user's SMTP.Send scope lives here


# Scopes are resource identifiers: an endpoint override never changes them.
CLOUDS: dict[str, Cloud] = {
    "public": Cloud(
        "https://login.microsoftonline.com", "https://graph.microsoft.com", "smtp.office365.com",
        "https://graph.microsoft.com/.default", "https://outlook.office365.com/.default",
        "https://vault.azure.net/.default",
    ),
    "usgov": Cloud(
        "https://login.microsoftonline.us", "https://graph.microsoft.us", "smtp.office365.us",
        "https://graph.microsoft.us/.default", "https://outlook.office365.us/.default",
        "https://vault.usgovcloudapi.net/.default", "https://outlook.office365.us",
    ),
    "usgovdod": Cloud(
        "https://login.microsoftonline.us", "https://dod-graph.microsoft.us", "smtp.office365.us",
        "https://dod-graph.microsoft.us/.default", "https://outlook-dod.office365.us/.default",
        "https://vault.usgovcloudapi.net/.default", "https://outlook-dod.office365.us",
    ),
    "china": Cloud(
        "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", "smtp.partner.outlook.cn",
        "https://microsoftgraph.chinacloudapi.cn/.default", "https://partner.outlook.cn/.default",
        "https://vault.azure.cn/.default", "https://partner.outlook.cn",
    ),
}

MICROSOFT_AUTHORITY_HOSTS = frozenset(urlsplit(c.authority_host).hostname for c in CLOUDS.values())


# Azurite's well-known development account on its default ports (published in Azurite's README).
DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1"
)


@dataclass(frozen=True)
class StorageConfig:
    """The Functions connection ``AzureWebJobsStorage``: a connection string or the identity-based form."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    blob_service_uri: str | None = None
    credential_kind: str | None = None
    client_id: str | None = None

    def _credential(self) -> Any:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if (self.credential_kind or "").lower() == "managedidentity":
            return ManagedIdentityCredential(client_id=self.client_id) if self.client_id else ManagedIdentityCredential()
        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def queue_service_client(self, **kwargs: Any) -> QueueServiceClient:
        from azure.storage.queue import QueueServiceClient

        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        return QueueServiceClient(self.queue_service_uri or "", credential=self._credential(), **kwargs)

    def table_service_client(self, **kwargs: Any) -> TableServiceClient:
        from azure.data.tables import TableServiceClient

        if self.connection_string:
            return TableServiceClient.from_connection_string(self.connection_string, **kwargs)
        return TableServiceClient(self.table_service_uri or "", credential=self._credential(), **kwargs)

    def blob_service_client(self, **kwargs: Any) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)
        return BlobServiceClient(self.blob_service_uri or "", credential=self._credential(), **kwargs)


@dataclass(frozen=True)
class Settings:
    """Every setting outbox reads (``setting(...)`` fields, in the order docs/settings.md lists them),
    then what is derived from them. ``SETTINGS``, the registry, is built from these fields."""

    # Queue and storage.
    queue: str = setting("OUTBOX_QUEUE", None, "Queue the trigger reads; poison goes to <queue>-poison.",
                         required=True)
    status_table: str = setting("OUTBOX_STATUS_TABLE", "outboxstatus", "Table holding one status row per message id.")
    attachments_container: str = setting(
        "OUTBOX_ATTACHMENTS_CONTAINER", "outbox-attachments",
        "Blob container for attachment claim checks and oversized poison originals.")
    attachment_containers: tuple[str, ...] = setting(
        "OUTBOX_ATTACHMENT_CONTAINERS", "",
        "Comma list of further containers producers may name in an attachment's blob (the attachment "
        "container is always allowed; the host's azure-webjobs-* and app-package-* never).",
        lambda r, name: _attachment_containers(r.text("OUTBOX_ATTACHMENTS_CONTAINER"), r.text(name), r.problems))
    # Identity.
    tenant_id: str | None = setting("OUTBOX_TENANT_ID", None, "Entra tenant of the sending app registration.",
                                    optional)
    client_id: str | None = setting(
        "OUTBOX_CLIENT_ID", None, "Client id of the app registration that sends mail (not the function identity).",
        optional)
    keyvault_url: str | None = setting(
        "OUTBOX_KEYVAULT_URL", None, "Key Vault holding the app's certificate, e.g. https://kv-x.vault.azure.net/.",
        https_url)
    cert_name: str | None = setting(
        "OUTBOX_CERT_NAME", None, "Name of the Key Vault certificate (read through the secrets API).", optional)
    # Sending.
    transport: Literal["graph", "smtp"] = setting(
        "OUTBOX_TRANSPORT", "graph", "Default transport when a message names none: graph or smtp.",
        choice("graph", "smtp"))
    allowed_senders: tuple[str, ...] = setting(
        "OUTBOX_ALLOWED_SENDERS", "", "Comma list of sender addresses or *@domain; empty allows nobody.",
        lambda r, name: _allowed_senders(r.text(name), r.problems))
    on_ambiguous: Literal["lookup", "resend", "poison"] = setting(
        "OUTBOX_ON_AMBIGUOUS", "lookup", "When a send may have happened: lookup, resend or poison.",
        choice("lookup", "resend", "poison"))
    max_attempts: int = setting("OUTBOX_MAX_ATTEMPTS", "8", "Attempts before a retryable failure is poisoned.",
                                whole(1))
    backoff_base_s: float = setting(
        "OUTBOX_BACKOFF_BASE_S", "5", "First retry delay in seconds (doubles each attempt, with jitter).", number())
    backoff_max_s: float = setting("OUTBOX_BACKOFF_MAX_S", "900", "Longest retry delay in seconds.", number())
    retry_after_max_s: float = setting(
        "OUTBOX_RETRY_AFTER_MAX_S", "900", "Cap on a server's Retry-After, in seconds.", number())
    # Endpoints.
    cloud: str = setting("OUTBOX_CLOUD", "public", "public, usgov, usgovdod or china: picks hosts and token scopes.",
                         choice(*CLOUDS))
    authority_host: str = setting(
        "OUTBOX_AUTHORITY_HOST", "", "Override of the Entra authority host (https URL).",
        lambda r, name: r.https_url(name) or _cloud(r).authority_host)
    graph_url: str = setting("OUTBOX_GRAPH_URL", "", "Override of the Graph base URL.",
                             lambda r, name: r.https_url(name) or _cloud(r).graph_url)
    smtp_host: str = setting("OUTBOX_SMTP_HOST", "", "Override of the SMTP submission host.",
                             lambda r, name: r.optional(name) or _cloud(r).smtp_host)
    smtp_port: int = setting("OUTBOX_SMTP_PORT", "587", "SMTP submission port (STARTTLS is always required).",
                             whole(1))
    # Trust.
    ca_bundle: str | None = setting(
        "OUTBOX_CA_BUNDLE", "", "PEM file of CA certificates every outbound TLS client is given.",
        lambda r, name: _ca_bundle(r.optional(name), r.problems))
    # Tuning: every time-based behaviour is a setting so tests run it in seconds.
    http_timeout_s: float = setting(
        "OUTBOX_HTTP_TIMEOUT_S", "30", "Read/write timeout of Graph requests, in seconds.", number(0.001))
    smtp_timeout_s: float = setting(
        "OUTBOX_SMTP_TIMEOUT_S", "30", "Socket timeout of SMTP commands, in seconds.", number(0.001))
    graph_concurrency: int = setting(
        "OUTBOX_GRAPH_CONCURRENCY", "4",
        "Graph requests in flight per mailbox (Outlook allows 4): across all instances with OUTBOX_SLOTS=blob, "
        "per process with local.", whole(1))
    smtp_connections: int = setting(
        "OUTBOX_SMTP_CONNECTIONS", "3",
        "SMTP connections per mailbox (Exchange allows 3): across all instances with OUTBOX_SLOTS=blob, per "
        "process with local.", whole(1))
    slots: Literal["local", "blob"] = setting(
        "OUTBOX_SLOTS", "blob",
        "Where the per-mailbox slots are counted: blob (leases in the storage account, shared by every "
        "instance) or local (per process: one instance, or a static split).", choice("local", "blob"))
    slots_container: str = setting(
        "OUTBOX_SLOTS_CONTAINER", "outbox-slots", "Blob container holding one blob per mailbox slot (OUTBOX_SLOTS=blob).")
    slot_lease_s: float = setting(
        "OUTBOX_SLOT_LEASE_S", "15",
        "Lease period of a slot blob, 15-60 s: a crashed instance's slots free this long after it stopped renewing.",
        lambda r, name: _lease_period(r.number(name, float, 15), r.problems))
    slot_idle_s: float = setting(
        "OUTBOX_SLOT_IDLE_S", "0.25", "A slot lease unused this long is given back for other instances, in seconds.",
        number())
    slot_idle_alone_s: float = setting(
        "OUTBOX_SLOT_IDLE_ALONE_S", "2",
        "As OUTBOX_SLOT_IDLE_S, for a mailbox on which this instance has seen no other holder in the last lease "
        "period (saves re-taking slots; a newcomer may wait this long for an idle one); also the longest time "
        "between a holder's looks for instances waiting, in seconds.", number())
    slot_probe_s: float = setting(
        "OUTBOX_SLOT_PROBE_S", "0.25",
        "How often an instance that wants a slot held elsewhere looks for a free one, and how often a holder of "
        "several looks again while others wait (for their fair share), in seconds.", number(0.01))
    slot_timeout_s: float = setting(
        "OUTBOX_SLOT_TIMEOUT_S", "2",
        "A slot-store request slower than this counts as a store failure (the safe share applies), in seconds.",
        number(0.001))
    expected_instances: int = setting(
        "OUTBOX_EXPECTED_INSTANCES", "8",
        "Instances that may send at once (queue + HTTP scale groups + always-ready); while the slot store fails "
        "each takes floor(slots / this), at least 1.", whole(1))
    graph_budget_requests: int = setting(
        "OUTBOX_GRAPH_BUDGET_REQUESTS", "10000", "Graph requests per mailbox per budget window.", whole(1))
    graph_budget_window_s: float = setting(
        "OUTBOX_GRAPH_BUDGET_WINDOW_S", "600", "Length of the Graph request budget window, in seconds.",
        number(0.001))
    smtp_rate_per_window: int = setting(
        "OUTBOX_SMTP_RATE_PER_WINDOW", "30", "SMTP messages per mailbox per rate window.", whole(1))
    smtp_rate_window_s: float = setting(
        "OUTBOX_SMTP_RATE_WINDOW_S", "60", "Length of the SMTP rate window, in seconds.", number(0.001))
    pacing_max_wait_s: float = setting(
        "OUTBOX_PACING_MAX_WAIT_S", "2", "Longest in-process wait for a mailbox slot before re-queueing.", number())
    cert_refresh_s: float = setting(
        "OUTBOX_CERT_REFRESH_S", "3600", "How often the certificate is re-read from Key Vault, in seconds.", number())
    cert_expiry_margin_s: float = setting(
        "OUTBOX_CERT_EXPIRY_MARGIN_S", "604800",
        "Re-read the certificate when it expires within this many seconds.", number())
    smtp_idle_s: float = setting(
        "OUTBOX_SMTP_IDLE_S", "60", "Idle SMTP sessions are closed after this many seconds.", number())
    max_age_s: float = setting(
        "OUTBOX_MAX_AGE_S", "86400",
        "A throttled message (which spends no attempt) is poisoned once it is this old, in seconds (0: at once).",
        number())
    lookup_settle_s: float = setting(
        "OUTBOX_LOOKUP_SETTLE_S", "120",
        "After a send that may have been delivered, the first Sent Items lookup waits this long, in seconds.",
        number())
    smtp_sent_copy: Literal["auto", "always", "never"] = setting(
        "OUTBOX_SMTP_SENT_COPY", "never",
        "After an SMTP send: never, always (save a copy in Sent Items through Graph), or auto (look for "
        "Exchange's copy after OUTBOX_LOOKUP_SETTLE_S, save one only when there is none).",
        choice("auto", "always", "never"))
    lease_s: float = setting(
        "OUTBOX_LEASE_S", "300", "How long a status-row claim protects a message being sent, in seconds.",
        number(0.001))
    large_attachment_bytes: int = setting(
        "OUTBOX_LARGE_ATTACHMENT_BYTES", str(3 * MiB), "Attachments this large go through an upload session.",
        whole(1))
    max_send_bytes: int = setting(
        "OUTBOX_MAX_SEND_BYTES", str(35 * MiB),
        "The sending mailboxes' MaxSendSize (Exchange Online's default: 35 MB = 36700160 bytes): a Graph message "
        "larger, counted as Exchange counts it (attachments base64-encoded), is poisoned as size before any "
        "request; 0 = not known (only the 150 MB ceiling is checked).",
        whole(0))
    upload_chunk_bytes: int = setting(
        "OUTBOX_UPLOAD_CHUNK_BYTES", str(3 * MiB), "Byte range per upload-session PUT (under 4 MiB).",
        lambda r, name: _upload_chunk(r.number(name, int, 1), r.problems))
    api_deadline_s: float = setting(
        "OUTBOX_API_DEADLINE_S", "8", "Longest an HTTP function works before it answers 503 with Retry-After.",
        number(0.001))
    storage_timeout_s: float = setting(
        "OUTBOX_STORAGE_TIMEOUT_S", "10",
        "Connect and read timeout of each storage request, in seconds (bounds a stalled emulator or account).",
        number(0.001))
    # Delegated sending (docs/delegated.md): mailboxes a user signed in for, instead of the app's own roles.
    delegated_client_id: str | None = setting(
        "OUTBOX_DELEGATED_CLIENT_ID", "",
        "Client id of the public-client app registration users sign in to (no secret; not OUTBOX_CLIENT_ID).",
        optional)
    delegated_mailboxes: tuple[tuple[str, str], ...] = setting(
        "OUTBOX_DELEGATED_MAILBOXES", "",
        "Comma list of mailbox[=account]: these send as a signed-in user (`outbox login`), the rest app-only; "
        "account is the user who signs in for a shared mailbox.",
        lambda r, name: _delegated_mailboxes(r.text(name), r.problems))
    signin_container: str = setting(
        "OUTBOX_SIGNIN_CONTAINER", "outbox-signins",
        "Blob container holding each delegated mailbox's sign-in (its MSAL token cache, encrypted).")
    signin_key_name: str = setting(
        "OUTBOX_SIGNIN_KEY_NAME", "outbox-signin-key",
        "Key Vault secret (in OUTBOX_KEYVAULT_URL) holding the 256-bit key that encrypts the sign-ins.")
    signin_recheck_s: float = setting(
        "OUTBOX_SIGNIN_RECHECK_S", "60",
        "A mailbox whose sign-in is dead re-reads its stored sign-in at most this often, in seconds "
        "(Entra is not called until someone signs in again).", number())
    keepalive_schedule: str = setting(
        "OUTBOX_KEEPALIVE_SCHEDULE", "0 17 3 * * *",
        "NCRONTAB schedule of the keep-alive timer that refreshes every stored sign-in (daily by default; "
        "Entra drops a refresh token unused for 90 days).")
    # CLI only.
    api_url: str | None = setting("OUTBOX_API_URL", "", "Base URL of the HTTP function, for `outbox send`.",
                                  optional, scope="cli")
    api_key: str | None = setting("OUTBOX_API_KEY", "", "Function key for the HTTP function.", optional,
                                  scope="cli")

    # Derived: the storage connection (platform settings) and the token scopes of the cloud.
    storage: StorageConfig = field(default_factory=lambda: StorageConfig())
    graph_scope: str = ""
    smtp_scope: str = ""
    keyvault_scope: str = ""
    outlook_resource: str = ""
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _ssl: dict[str, ssl.SSLContext] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def delegated_account(self, mailbox: str) -> str | None:
        """The user signed in for ``mailbox`` when it sends delegated; None: app-only."""
        wanted = mailbox.lower()
        return next((account for box, account in self.delegated_mailboxes if box == wanted), None)

    @property
    def poison_queue(self) -> str:
        return f"{self.queue}-poison"

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def uses_microsoft_authority(self) -> bool:
        return urlsplit(self.authority_host).hostname in MICROSOFT_AUTHORITY_HOSTS

    def ssl_context(self) -> ssl.SSLContext:
        """One client context per process: loading a CA bundle costs ~20 ms, so it is never done per request."""
        with self._lock:
            ctx = self._ssl.get("client")
            if ctx is None:
                ctx = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else ssl.create_default_context()
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                self._ssl["client"] = ctx
            return ctx

    def require_sending(self) -> None:
        """Raise SettingsError naming every setting that sending needs and that is missing."""
        missing = {
            name: "required to send mail"
            for name, value in (
                ("OUTBOX_TENANT_ID", self.tenant_id),
                ("OUTBOX_CLIENT_ID", self.client_id),
                ("OUTBOX_KEYVAULT_URL", self.keyvault_url),
                ("OUTBOX_CERT_NAME", self.cert_name),
            )
            if not value
        }
        if missing:
            raise SettingsError(missing)


SETTINGS: dict[str, SettingSpec] = {
    f.metadata["setting"].name: f.metadata["setting"] for f in fields(Settings) if "setting" in f.metadata
}


def read_settings_file(path: str | Path) -> dict[str, str]:
    """``local.settings.json`` (its ``Values``) or a KEY=VALUE file such as the harness's ``outbox.env``."""
    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix == ".json":
        data = json.loads(text)
        values = data.get("Values", {}) if isinstance(data, dict) else {}
        return {str(k): "" if v is None else str(v) for k, v in values.items()}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def merged_values(
    environ: Mapping[str, str] | None = None, settings_file: str | Path | None = None
) -> dict[str, str]:
    """The layered name -> value map that ``load_settings`` reads (exposed for the local host and the CLI)."""
    values: dict[str, str] = {}
    if settings_file is not None:
        values.update(read_settings_file(settings_file))
    elif environ is None and Path("local.settings.json").is_file():
        values.update(read_settings_file("local.settings.json"))
    values.update(os.environ if environ is None else environ)
    return values


class _Reader:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: dict[str, str] = {}

    def text(self, name: str) -> str:
        value = self.values.get(name)
        if value is None or value.strip() == "":
            default = SETTINGS[name].default if name in SETTINGS else None
            value = default if default is not None else ""
        return value.strip()

    def optional(self, name: str) -> str | None:
        return self.text(name) or None

    def number(self, name: str, kind: type[int] | type[float], minimum: float = 0) -> Any:
        raw = self.text(name)
        try:
            value = kind(raw)
        except ValueError:
            self.problems[name] = f"expected a {'whole ' if kind is int else ''}number, got {raw!r}"
            return kind(SETTINGS[name].default or 0)
        if value < minimum:
            self.problems[name] = f"must be at least {minimum}, got {raw!r}"
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in allowed:
            self.problems[name] = f"must be one of {', '.join(allowed)}, got {value!r}"
            return allowed[0]
        return value

    def https_url(self, name: str) -> str | None:
        value = self.optional(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            self.problems[name] = f"must be an https URL, got {value!r}"
        return value.rstrip("/")


def _storage(values: Mapping[str, str], problems: dict[str, str]) -> StorageConfig:
    conn = (values.get("AzureWebJobsStorage") or "").strip()
    prefix = "AzureWebJobsStorage__"
    account = (values.get(prefix + "accountName") or "").strip()

    def uri(service: str) -> str | None:
        explicit = (values.get(f"{prefix}{service}ServiceUri") or "").strip()
        if explicit:
            return explicit
        return f"https://{account}.{service}.core.windows.net" if account else None

    if conn:
        if conn.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
            # What Core Tools users have: Azurite on its fixed default ports. Spelled out, because not
            # every storage SDK expands the shorthand (the harness writes explicit ports instead).
            conn = DEVELOPMENT_STORAGE
        return StorageConfig(connection_string=conn)
    queue_uri = uri("queue")
    if not queue_uri:
        problems["AzureWebJobsStorage"] = (
            "set a connection string, or AzureWebJobsStorage__queueServiceUri/__tableServiceUri/__blobServiceUri"
        )
    return StorageConfig(
        queue_service_uri=queue_uri,
        table_service_uri=uri("table"),
        blob_service_uri=uri("blob"),
        credential_kind=(values.get(prefix + "credential") or "").strip() or None,
        client_id=(values.get(prefix + "clientId") or "").strip() or None,
    )


_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
# Containers of the Functions host itself (keys, leases, the app package): no producer may name them.
HOST_CONTAINER_PREFIXES = ("azure-webjobs-", "app-package-")


def _cloud(r: _Reader) -> Cloud:
    return CLOUDS.get(r.text("OUTBOX_CLOUD").lower(), CLOUDS["public"])


def _allowed_senders(text: str, problems: dict[str, str]) -> tuple[str, ...]:
    senders = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    for pattern in senders:
        local, at, domain = pattern.rpartition("@")
        if not at or not local or not domain or ("*" in local and local != "*") or "*" in domain:
            problems["OUTBOX_ALLOWED_SENDERS"] = f"entries are addresses or *@domain, got {pattern!r}"
    return senders


def _ca_bundle(path: str | None, problems: dict[str, str]) -> str | None:
    if path and not Path(path).is_file():
        problems["OUTBOX_CA_BUNDLE"] = f"no such file: {path}"
    return path


def _lease_period(value: float, problems: dict[str, str]) -> float:
    if value > 60:
        problems["OUTBOX_SLOT_LEASE_S"] = f"a blob lease lasts 15 to 60 s (Lease Blob), not {value:g}"
    return min(value, 60.0)


def _upload_chunk(size: int, problems: dict[str, str]) -> int:
    if size >= 4 * MiB:
        problems["OUTBOX_UPLOAD_CHUNK_BYTES"] = "must be under 4 MiB (Graph's limit per upload range)"
    return size


def _not_a_container_name(name: str) -> str | None:
    if _CONTAINER_NAME.match(name):
        return None
    return f"{name!r} is not a blob container name (3-63 of a-z, 0-9 and single '-')"


def _attachment_containers(main: str, extra: str, problems: dict[str, str]) -> tuple[str, ...]:
    """The containers an attachment's ``blob`` may name: the attachment container, then the extra list."""
    names = [main] + [name.strip() for name in extra.split(",") if name.strip()]
    for setting, name in [("OUTBOX_ATTACHMENTS_CONTAINER", main)] + [("OUTBOX_ATTACHMENT_CONTAINERS", n)
                                                                      for n in names[1:]]:
        if (bad_name := _not_a_container_name(name)) is not None:
            problems[setting] = bad_name
        elif name.startswith(HOST_CONTAINER_PREFIXES):
            problems[setting] = (f"{name!r} is a container of the Functions host (keys, leases): "
                                 "producers must never be able to mail its blobs")
    return tuple(dict.fromkeys(names))


def _delegated_mailboxes(text: str, problems: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """``mailbox[=account]`` pairs, lower-cased; the account defaults to the mailbox itself."""
    from shared.addresses import AddressError, normalize_addr_spec

    pairs: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        mailbox, _, account = (x.strip().lower() for x in item.partition("="))
        account = account or mailbox
        try:
            mailbox, account = normalize_addr_spec(mailbox), normalize_addr_spec(account)
        except AddressError as exc:
            problems["OUTBOX_DELEGATED_MAILBOXES"] = f"{item!r}: the address {exc} (expected mailbox[=account])"
            continue
        if mailbox in pairs and pairs[mailbox] != account:
            problems["OUTBOX_DELEGATED_MAILBOXES"] = f"{mailbox} is listed twice with different accounts"
        pairs[mailbox] = account
    return tuple(pairs.items())


def load_settings(
    environ: Mapping[str, str] | None = None,
    settings_file: str | Path | None = None,
    *,
    require_storage: bool = True,
) -> Settings:
    """Read and validate every setting; raise SettingsError naming each one at fault.

    ``environ=None`` means the real environment (plus ``./local.settings.json`` when no file is given).
    Passing a mapping reads only that mapping and ``settings_file``: tests stay hermetic.
    """
    values = merged_values(environ, settings_file)
    r = _Reader(values)
    problems = r.problems

    parsed = {f.name: f.metadata["setting"].read(r, f.metadata["setting"].name)
              for f in fields(Settings) if "setting" in f.metadata}
    if not parsed["queue"]:
        problems["OUTBOX_QUEUE"] = "required (the trigger binds %OUTBOX_QUEUE%); the templates use 'outbox'"
    storage = _storage(values, problems)
    if not require_storage:
        problems.pop("AzureWebJobsStorage", None)
    signins = parsed["signin_container"]
    if (bad_name := _not_a_container_name(signins)) is not None:
        problems["OUTBOX_SIGNIN_CONTAINER"] = bad_name
    elif (signins in parsed["attachment_containers"] or signins == parsed.get("slots_container")
          or signins.startswith(HOST_CONTAINER_PREFIXES)):
        problems["OUTBOX_SIGNIN_CONTAINER"] = (f"{signins!r} is a container producers may name or the host's: "
                                               "the sign-ins need a container of their own")
    cloud = _cloud(r)
    settings = Settings(**parsed, storage=storage, graph_scope=cloud.graph_scope, smtp_scope=cloud.smtp_scope,
                        keyvault_scope=cloud.keyvault_scope, outlook_resource=cloud.outlook_resource, raw=values)
    if problems:
        raise SettingsError(problems)
    return settings
