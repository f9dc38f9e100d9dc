"""The exceptions outbox raises, written down in one place.

Every failure that leaves the library is an :class:`OutboxError` (or a subclass) that carries its own
classification: what kind of failure it is, whether retrying can help, whether the request may already
have reached the server, the server's own words (with secrets removed) and what an operator should do.
The pipeline decides retry / poison from these attributes alone; nothing downstream re-parses text.

Tree::

    OutboxError                      category + code + hint, to_dict() = poison envelope "error"
    +-- ConfigError                  category "config" (missing/wrong setting, resource not found)

``SettingsError`` (``shared/settings.py``) reports invalid settings at start, before anything is sent.

``InvalidMessage`` (message validation) lives in ``shared/message.py``; the pipeline turns it into
``OutboxError(category="invalid_message", code="invalid_message", ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from shared.redaction import redact

__all__ = ["CATEGORIES", "ENVELOPE_KEYS", "TRANSPORTS", "ConfigError", "OutboxError", "redact"]

Category = Literal[
    "invalid_message",
    "auth",
    "signin_required",
    "permission",
    "recipient",
    "size",
    "quota",
    "throttled",
    "transient",
    "config",
    "unknown",
]
CATEGORIES: Final[frozenset[str]] = frozenset(get_args(Category))

Transport = Literal["graph", "smtp", "entra", "keyvault", "storage"]
TRANSPORTS: Final[frozenset[str]] = frozenset(get_args(Transport))

# Keys of the poison envelope's "error" object (design.md, "Poison envelope"), in order.
ENVELOPE_KEYS: Final[tuple[str, ...]] = (
    "category",
    "code",
    "status",
    "transport",
    "retryable",
    "detail",
    "hint",
    "requestId",
)


class OutboxError(Exception):
    """A classified failure. Constructed (not necessarily raised) by ``shared.classify``.

    ``retryable`` says whether another attempt can succeed without anyone changing anything.
    ``request_sent`` says bytes of the request left this process; ``maybe_delivered`` says the
    server may have acted on it although no answer came (resend only after deduplication).
    ``max_retries`` (None = the pipeline's own limit) and ``refresh_credentials`` (drop the cached
    token and certificate before the next try) come from the catalog entry.
    """

    def __init__(
        self,
        category: str,
        code: str,
        *,
        status: int | None = None,
        transport: str | None = None,
        retryable: bool = False,
        request_sent: bool = False,
        maybe_delivered: bool = False,
        detail: str | None = "",
        hint: str = "",
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
        catalog: str | None = None,
        max_retries: int | None = None,
        refresh_credentials: bool = False,
    ) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown error category {category!r}; expected one of {sorted(CATEGORIES)}")
        if transport is not None and transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; expected one of {sorted(TRANSPORTS)}")
        self.category = category
        self.code = code
        self.status = status
        self.transport = transport
        self.retryable = retryable
        self.request_sent = request_sent
        self.maybe_delivered = maybe_delivered
        self.detail = redact(detail)
        self.hint = hint
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after
        self.catalog = catalog
        self.max_retries = max_retries
        self.refresh_credentials = refresh_credentials
        super().__init__(self._summary())

    def _summary(self) -> str:
        where = f"{self.transport} " if self.transport else ""
        status = f"{self.status} " if self.status is not None else ""
        text = f"{where}{status}{self.code} [{self.category}]"
        if self.detail:
            text += f": {self.detail}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The poison envelope's ``error`` object: exactly :data:`ENVELOPE_KEYS`."""
        return {
            "category": self.category,
            "code": self.code,
            "status": self.status,
            "transport": self.transport,
            "retryable": self.retryable,
            "detail": self.detail,
            "hint": self.hint,
            "requestId": self.request_id,
        }

    def fields(self) -> dict[str, Any]:
        """Every constructor argument, for logging (detail is already redacted) and for :meth:`replace`."""
        return {
            "category": self.category,
            "code": self.code,
            "status": self.status,
            "transport": self.transport,
            "retryable": self.retryable,
            "request_sent": self.request_sent,
            "maybe_delivered": self.maybe_delivered,
            "detail": self.detail,
            "hint": self.hint,
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "retry_after": self.retry_after,
            "catalog": self.catalog,
            "max_retries": self.max_retries,
            "refresh_credentials": self.refresh_credentials,
        }

    def replace(self, **changes: Any) -> OutboxError:
        """A copy of this error (plain :class:`OutboxError`) with some attributes changed."""
        values = self.fields()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown OutboxError fields: {sorted(unknown)}")
        values.update(changes)
        category = values.pop("category")
        code = values.pop("code")
        return OutboxError(category, code, **values)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle through their args; ours are keyword-only, so rebuild from fields().
        return (_rebuild, (type(self), self.fields()))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(category={self.category!r}, code={self.code!r}, status={self.status!r}, "
            f"transport={self.transport!r}, retryable={self.retryable!r}, "
            f"maybe_delivered={self.maybe_delivered!r}, catalog={self.catalog!r})"
        )


def _rebuild(cls: type[OutboxError], fields: Mapping[str, Any]) -> OutboxError:
    values = dict(fields)
    err = OutboxError.__new__(cls)
    OutboxError.__init__(err, values.pop("category"), values.pop("code"), **values)
    return err


class ConfigError(OutboxError):
    """A setting, certificate, queue or other resource is missing or wrong: fix the deployment."""

    def __init__(self, detail: str, *, code: str = "config", hint: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("retryable", False)
        super().__init__("config", code, detail=detail, hint=hint, **kwargs)

