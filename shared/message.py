"""The v1 message: model, validation, queue-body decoding and the sender allow-list.

Everything here is pure. ``parse_message`` checks the whole body and reports every problem at
once (an app team fixing a producer wants the full list, not one error per round trip), each
with a field path such as ``to[2].address`` or ``attachments[0].contentBase64``.

The message is transport-independent: rules that only one transport has (Graph accepts at
most 5 custom headers) are checked by ``parse_message`` only when the message itself names
that transport, and otherwise by ``validate_for_transport`` once the pipeline has chosen one.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeGuard

from shared.addresses import (
    Address,
    AddressError,
    ascii_domain,
    line_problem,
    make_address,
    normalize_name,
    parse_address,
)

__all__ = [
    "GRAPH_MAX_HEADERS",
    "MAX_RECIPIENTS",
    "Address",
    "Attachment",
    "FieldError",
    "InvalidMessage",
    "Message",
    "NotPermitted",
    "check_attachment_sources",
    "check_sender_allowed",
    "decode_body",
    "fingerprint",
    "message_to_json",
    "normalize_sender_pattern",
    "parse_message",
    "sender_allowed",
    "valid_message_id",
    "validate_for_transport",
]

MAX_RECIPIENTS = 500  # Exchange Online's default recipient limit per message
MAX_SUBJECT_LENGTH = 998  # one RFC 5322 line; Outlook shows far less, but nothing breaks
MAX_HEADER_NAME_LENGTH = 100
MAX_HEADER_VALUE_LENGTH = 998
MAX_ATTACHMENT_NAME_LENGTH = 255
MAX_CONTENT_ID_LENGTH = 250
MAX_BLOB_PATH_LENGTH = 1024
GRAPH_MAX_HEADERS = 5  # Graph answers 400 above 5 internetMessageHeaders
# Blob paths outbox writes itself in the attachment container (oversized poison originals): a producer
# naming one would have another message's original mailed to it.
RESERVED_BLOB_PREFIXES = ("poison/",)

IMPORTANCE_VALUES = ("low", "normal", "high")
TRANSPORT_VALUES = ("graph", "smtp")

_TOP_LEVEL_FIELDS = (
    "id", "from", "to", "cc", "bcc", "replyTo", "subject", "text", "html",
    "attachments", "headers", "importance", "transport", "saveToSentItems",
)  # fmt: skip
_ADDRESS_FIELDS = ("address", "name")
_ATTACHMENT_FIELDS = ("name", "contentType", "contentBase64", "blob", "inline", "contentId")
_RECIPIENT_LISTS = (("to", "to"), ("cc", "cc"), ("bcc", "bcc"), ("replyTo", "reply_to"))
# Names people reach for that are not v1 fields; the hint says what to write instead.
_ALIASES = {
    "sender": "from",
    "body": "text or html",
    "recipients": "to",
    "attachment": "attachments",
    "reply_to": "replyTo",
    "save_to_sent_items": "saveToSentItems",
}

_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}\Z")  # design.md, message v1 "id"
ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -"
_MIME_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"{_MIME_TOKEN}/{_MIME_TOKEN}\Z")
_HEADER_NAME = re.compile(r"[Xx]-[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 ftext: printable, no ':'
_CONTENT_ID = re.compile(r"[\x21-\x7e]+\Z")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
_RESERVED_HEADER_PREFIXES = ("x-ms-exchange-",)  # Exchange's own (spam verdicts, routing)


# ---------------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str
    # A rule across fields that no schema can state (a header name given twice in other letter case, a
    # contentId used twice, X-Priority beside importance, 500 recipients across to/cc/bcc): the body is
    # well-formed as docs/openapi.yaml describes it, so HTTP answers 422, not 400.
    across_fields: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidMessage(ValueError):
    """The message cannot be sent as it is; ``errors`` names every offending field.

    Never retried: the pipeline turns it into a poison envelope of category
    ``invalid_message`` with ``str(exc)`` as the detail.
    """

    category = "invalid_message"

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__(self.errors)

    @classmethod
    def single(cls, field_path: str, message: str) -> InvalidMessage:
        return cls([FieldError(field_path, message)])

    def to_list(self) -> list[dict[str, str]]:
        return [{"field": e.field, "message": e.message} for e in self.errors]

    @property
    def only_across_fields(self) -> bool:
        """Every problem is a rule across fields (the body itself is well-formed)."""
        return bool(self.errors) and all(e.across_fields for e in self.errors)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return f"invalid message: {self.errors[0]}"
        listed = "; ".join(str(e) for e in self.errors)
        return f"invalid message ({len(self.errors)} problems): {listed}"


class NotPermitted(InvalidMessage):
    """A well-formed message this deployment does not let through: a sender outside
    OUTBOX_ALLOWED_SENDERS, an attachment outside the attachment containers. Poisoned like any invalid
    message; the HTTP API answers 403 (the body is fine, the deployment refuses it)."""


# ----------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True, repr=False)
class Attachment:
    """One attachment. ``content`` holds the decoded bytes (from contentBase64, or loaded from
    ``blob`` by the caller with ``with_content``); ``size`` is known once content is."""

    name: str
    content_type: str
    content: bytes | None = field(default=None, compare=True)
    blob: str | None = None
    inline: bool = False
    content_id: str | None = None
    size: int | None = None

    @property
    def blob_container(self) -> str | None:
        return self.blob.split("/", 1)[0] if self.blob else None

    @property
    def blob_path(self) -> str | None:
        return self.blob.split("/", 1)[1] if self.blob else None

    def with_content(self, content: bytes) -> Attachment:
        """The same attachment with its bytes loaded (for blob attachments)."""
        return replace(self, content=bytes(content), size=len(content))

    def __repr__(self) -> str:
        # Content is never shown: attachments can be megabytes and end up in logs.
        source = f"blob={self.blob!r}" if self.blob else "inline-data"
        loaded = "loaded" if self.content is not None else "not loaded"
        return (
            f"Attachment(name={self.name!r}, content_type={self.content_type!r}, {source}, "
            f"size={self.size}, {loaded}, inline={self.inline}, content_id={self.content_id!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """A validated v1 message. ``sender`` is the ``from`` field; ``headers`` keeps order."""

    sender: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    importance: str | None = None
    transport: str | None = None
    save_to_sent_items: bool | None = None
    id: str | None = None

    @property
    def recipients(self) -> tuple[Address, ...]:
        """to + cc + bcc, as given (duplicates included)."""
        return self.to + self.cc + self.bcc

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def __repr__(self) -> str:
        def body(value: str | None) -> str:
            return "None" if value is None else f"<{len(value)} chars>"

        subject = self.subject if len(self.subject) <= 60 else self.subject[:57] + "..."
        return (
            f"Message(id={self.id!r}, sender={self.sender.address!r}, to={len(self.to)}, "
            f"cc={len(self.cc)}, bcc={len(self.bcc)}, reply_to={len(self.reply_to)}, "
            f"subject={subject!r}, text={body(self.text)}, html={body(self.html)}, "
            f"attachments={list(self.attachments)!r}, headers={[k for k, _ in self.headers]!r}, "
            f"importance={self.importance!r}, transport={self.transport!r}, "
            f"save_to_sent_items={self.save_to_sent_items!r})"
        )


# --------------------------------------------------------------------------------- parsing


def _kind(value: object) -> str:
    """How a JSON value is named in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _safe(text: object, limit: int = 60) -> str:
    """A field name or value as it may appear in an error: no line breaks, bounded length."""
    shown = text if isinstance(text, str) else repr(text)
    shown = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in shown)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _name(key: object) -> str:
    """A JSON key as a field-path component (an empty key would vanish from the path)."""
    return _safe(key) or '""'


def _unknown_field_hint(name: str, known: Sequence[str]) -> str:
    if known is _TOP_LEVEL_FIELDS and name in _ALIASES:
        return f"unknown field; did you mean {_ALIASES[name]!r}?"
    for candidate in known:
        if candidate.lower() == name.lower():
            return f"unknown field; field names are case-sensitive: write {candidate!r}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    return f"unknown field (known fields: {', '.join(known)})"


class _Parser:
    def __init__(self, max_recipients: int, max_subject_length: int) -> None:
        self.errors: list[FieldError] = []
        self.max_recipients = max_recipients
        self.max_subject_length = max_subject_length

    def fail(self, path: str, message: str, *, across_fields: bool = False) -> None:
        self.errors.append(FieldError(path, message, across_fields))

    def check_keys(self, path: str, obj: Mapping[object, object], known: Sequence[str]) -> None:
        for key in obj:
            if not isinstance(key, str):
                self.fail(f"{path}{_name(key)}", "field names must be strings")
            elif key not in known:
                self.fail(f"{path}{_name(key)}", _unknown_field_hint(key, known))

    # -- scalars

    def string(self, path: str, value: object) -> str | None:
        if isinstance(value, str):
            return value
        self.fail(path, f"must be a string, got {_kind(value)}")
        return None

    def boolean(self, path: str, value: object) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            self.fail(path, f'must be a JSON boolean (true or false), not the string "{value}"')
        else:
            self.fail(path, f"must be true or false, got {_kind(value)}")
        return None

    def choice(self, path: str, value: object, allowed: Sequence[str]) -> str | None:
        if value is None:
            return None
        text = self.string(path, value)
        if text is None:
            return None
        if text.lower() not in allowed:
            self.fail(path, f"must be one of {', '.join(allowed)}; got {_safe(text)!r}")
            return None
        return text.lower()

    # -- addresses

    def address_object(self, path: str, obj: Mapping[object, object]) -> Address | None:
        self.check_keys(f"{path}.", obj, _ADDRESS_FIELDS)
        raw_address = obj.get("address")
        raw_name = obj.get("name")
        address: str | None = None
        name: str | None = None
        ok = True
        if raw_address is None:
            self.fail(f"{path}.address", "required")
            ok = False
        else:
            text = self.string(f"{path}.address", raw_address)
            if text is None:
                ok = False
            else:
                try:
                    address = make_address(text).address
                except AddressError as exc:
                    self.fail(f"{path}.address", str(exc))
                    ok = False
        if raw_name is not None:
            text = self.string(f"{path}.name", raw_name)
            if text is None:
                ok = False
            else:
                try:
                    name = normalize_name(text)
                except AddressError as exc:
                    self.fail(f"{path}.name", str(exc))
                    ok = False
        if not ok or address is None:
            return None
        return Address(address, name)

    def address(self, path: str, value: object) -> Address | None:
        if isinstance(value, str):
            try:
                return parse_address(value)
            except AddressError as exc:
                self.fail(path, str(exc))
                return None
        if isinstance(value, Mapping):
            return self.address_object(path, value)
        self.fail(path, f'must be an address string or an object {{"address", "name"}}, got {_kind(value)}')
        return None

    def sender(self, value: object) -> Address | None:
        if value is None:
            self.fail("from", "required: the sending mailbox (its UPN or primary SMTP address)")
            return None
        if isinstance(value, list | tuple):
            self.fail("from", "must be one address, not a list")
            return None
        return self.address("from", value)

    def address_list(self, path: str, value: object) -> tuple[Address, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            self.fail(path, f'must be a list of addresses, got a string (write ["{_safe(value)}"])')
            return ()
        if not isinstance(value, list | tuple):
            self.fail(path, f"must be a list of addresses, got {_kind(value)}")
            return ()
        result: list[Address] = []
        for index, item in enumerate(value):
            parsed = self.address(f"{path}[{index}]", item)
            if parsed is not None:
                result.append(parsed)
        return tuple(result)

    # -- text fields

    def subject(self, value: object) -> str:
        if value is None:
            return ""
        text = self.string("subject", value)
        if text is None:
            return ""
        problem = line_problem(text)
        if problem:
            self.fail("subject", problem)
        if len(text) > self.max_subject_length:
            self.fail("subject", f"is {len(text)} characters long; at most {self.max_subject_length} allowed")
        return text

    def body(self, path: str, value: object) -> str | None:
        if value is None:
            return None
        text = self.string(path, value)
        if text is not None and "\x00" in text:
            self.fail(path, "must not contain NUL characters")
        return text

    def message_id(self, value: object) -> str | None:
        if value is None:
            return None
        text = self.string("id", value)
        if text is not None and not _ID.match(text):
            self.fail("id", f"must be 1-128 characters of A-Z a-z 0-9 . _ : @ -; got {_safe(text)!r}")
            return None
        return text

    # -- attachments

    def attachments(self, value: object) -> tuple[Attachment, ...]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.fail("attachments", f"must be a list of attachment objects, got {_kind(value)}")
            return ()
        result: list[Attachment] = []
        seen_cids: dict[str, int] = {}
        for index, item in enumerate(value):
            path = f"attachments[{index}]"
            if not isinstance(item, Mapping):
                self.fail(path, f"must be an object with name and contentBase64 or blob, got {_kind(item)}")
                continue
            attachment = self.attachment(path, item)
            if attachment is None:
                continue
            if attachment.content_id is not None:
                key = attachment.content_id.lower()
                if key in seen_cids:
                    self.fail(
                        f"{path}.contentId",
                        f"duplicates attachments[{seen_cids[key]}].contentId; each contentId must be unique",
                        across_fields=True,
                    )
                    continue
                seen_cids[key] = index
            result.append(attachment)
        return tuple(result)

    def attachment(self, path: str, obj: Mapping[object, object]) -> Attachment | None:
        before = len(self.errors)
        self.check_keys(f"{path}.", obj, _ATTACHMENT_FIELDS)
        name = self.attachment_name(f"{path}.name", obj.get("name"))
        content_type = self.content_type(f"{path}.contentType", obj.get("contentType"), name)
        raw_content = obj.get("contentBase64")
        raw_blob = obj.get("blob")
        content: bytes | None = None
        blob: str | None = None
        if raw_content is not None and raw_blob is not None:
            self.fail(path, "give exactly one of contentBase64 or blob, not both")
        elif raw_content is None and raw_blob is None:
            self.fail(path, "needs its content: contentBase64 (the bytes, base64) or blob (container/path)")
        elif raw_content is not None:
            content = self.base64_content(f"{path}.contentBase64", raw_content)
        else:
            blob = self.blob_reference(f"{path}.blob", raw_blob)
        inline = self.boolean(f"{path}.inline", obj.get("inline"))
        content_id = self.content_id(f"{path}.contentId", obj.get("contentId"))
        if len(self.errors) != before or name is None or content_type is None:
            return None
        return Attachment(
            name=name,
            content_type=content_type,
            content=content,
            blob=blob,
            inline=bool(inline),
            content_id=content_id,
            size=len(content) if content is not None else None,
        )

    def attachment_name(self, path: str, value: object) -> str | None:
        if value is None:
            self.fail(path, "required: the file name recipients will see")
            return None
        name = self.string(path, value)
        if name is None:
            return None
        problem = line_problem(name)
        if problem:
            self.fail(path, problem)
        elif not name.strip():
            self.fail(path, "must not be empty")
        elif "/" in name or "\\" in name:
            self.fail(path, "must be a file name, not a path (no / or \\)")
        elif name.strip() in (".", ".."):
            self.fail(path, "must be a file name")
        elif len(name) > MAX_ATTACHMENT_NAME_LENGTH:
            self.fail(path, f"is longer than {MAX_ATTACHMENT_NAME_LENGTH} characters")
        else:
            return name.strip()
        return None

    def content_type(self, path: str, value: object, name: str | None) -> str | None:
        if value is None:
            guessed = mimetypes.guess_type(name, strict=False)[0] if name else None
            return guessed or "application/octet-stream"
        text = self.string(path, value)
        if text is None:
            return None
        if not _CONTENT_TYPE.match(text.strip()):
            self.fail(path, f"must be a MIME type like application/pdf (type/subtype, no parameters); got {_safe(text)!r}")
            return None
        if text.strip().lower().startswith("multipart/"):
            self.fail(path, "multipart/* describes message structure, not a file; use the file's own type")
            return None
        return text.strip().lower()

    def base64_content(self, path: str, value: object) -> bytes | None:
        text = self.string(path, value)
        if text is None:
            return None
        compact = "".join(text.split())  # line-wrapped base64 (76 columns) is common and harmless
        if not compact.isascii():
            self.fail(path, "is not base64: it contains non-ASCII characters")
            return None
        if "-" in compact or "_" in compact:
            self.fail(path, "uses the URL-safe base64 alphabet (- and _); use standard base64 (+ and /)")
            return None
        if len(compact) % 4:
            self.fail(path, f"is not valid base64: its length ({len(compact)}) is not a multiple of 4 (missing = padding?)")
            return None
        try:
            return binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
        except binascii.Error as exc:
            self.fail(path, f"is not valid base64 ({exc})")
            return None

    def blob_reference(self, path: str, value: object) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        container, slash, blob_path = text.partition("/")
        problem = line_problem(text)
        if problem:
            self.fail(path, problem)
        elif not slash or not blob_path:
            self.fail(path, f"must be container/path (e.g. outbox-attachments/2024/report.pdf); got {_safe(text)!r}")
        elif not _CONTAINER.match(container):
            self.fail(
                path,
                f"container {_safe(container)!r} is not a valid container name "
                "(3-63 characters: lower-case letters, digits, single hyphens)",
            )
        elif "\\" in blob_path or any(part in ("", ".", "..") for part in blob_path.split("/")):
            self.fail(path, "blob path must not contain empty, '.' or '..' segments or backslashes")
        elif len(blob_path) > MAX_BLOB_PATH_LENGTH:
            self.fail(path, f"blob path is longer than {MAX_BLOB_PATH_LENGTH} characters")
        elif blob_path.startswith(RESERVED_BLOB_PREFIXES):
            self.fail(path, f"blob paths under {RESERVED_BLOB_PREFIXES[0]!r} are outbox's own (parked poison "
                      "originals), not attachments")
        else:
            return text
        return None

    def content_id(self, path: str, value: object) -> str | None:
        if value is None:
            return None
        text = self.string(path, value)
        if text is None:
            return None
        if not _CONTENT_ID.match(text) or any(ch in text for ch in '<>"'):
            self.fail(
                path,
                "must be printable ASCII without spaces, quotes or angle brackets "
                f"(write logo1, referenced as cid:logo1); got {_safe(text)!r}",
            )
            return None
        if len(text) > MAX_CONTENT_ID_LENGTH:
            self.fail(path, f"is longer than {MAX_CONTENT_ID_LENGTH} characters")
            return None
        return text

    # -- headers

    def headers(self, value: object, importance_given: bool) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.fail("headers", f'must be an object like {{"X-Name": "value"}}, got {_kind(value)}')
            return ()
        result: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw_name, raw_value in value.items():
            path = f"headers.{_name(raw_name)}"
            if not isinstance(raw_name, str):
                self.fail(path, "header names must be strings")
                continue
            name_ok = self.header_name(path, raw_name, importance_given)
            if name_ok and raw_name.lower() in seen:
                self.fail(path, "is given twice (header names are case-insensitive)", across_fields=True)
                name_ok = False
            seen.add(raw_name.lower())
            header_value = self.string(path, raw_value)
            if header_value is not None:
                problem = line_problem(header_value)
                if problem:
                    self.fail(path, f"value {problem}")
                    header_value = None
                elif len(header_value) > MAX_HEADER_VALUE_LENGTH:
                    self.fail(path, f"value is longer than {MAX_HEADER_VALUE_LENGTH} characters")
                    header_value = None
            if name_ok and header_value is not None:
                result.append((raw_name, header_value.strip()))
        return tuple(result)

    def header_name(self, path: str, name: str, importance_given: bool) -> bool:
        lower = name.lower()
        if not lower.startswith("x-"):
            self.fail(path, "custom header names must start with X- (Graph refuses any other name)")
        elif not _HEADER_NAME.match(name):
            self.fail(path, "header names may only hold printable ASCII without spaces or ':'")
        elif len(name) > MAX_HEADER_NAME_LENGTH:
            self.fail(path, f"header name is longer than {MAX_HEADER_NAME_LENGTH} characters")
        elif lower.startswith(_RESERVED_HEADER_PREFIXES):
            self.fail(path, "X-MS-Exchange-* headers are reserved for Exchange")
        elif lower == "x-priority" and importance_given:
            self.fail(path, "conflicts with importance, which sets X-Priority; give only one", across_fields=True)
        else:
            return True
        return False

    # -- whole message

    def message(self, data: object) -> Message | None:
        if not isinstance(data, Mapping):
            hint = " (a JSON array? send one message per queue message)" if isinstance(data, list) else ""
            self.fail("$", f"a message must be a JSON object, got {_kind(data)}{hint}")
            return None
        self.check_keys("", data, _TOP_LEVEL_FIELDS)
        message_id = self.message_id(data.get("id"))
        sender = self.sender(data.get("from"))
        lists: dict[str, tuple[Address, ...]] = {}
        list_errors = len(self.errors)
        for json_name, attr in _RECIPIENT_LISTS:
            lists[attr] = self.address_list(json_name, data.get(json_name))
        list_errors = len(self.errors) - list_errors
        subject = self.subject(data.get("subject"))
        text = self.body("text", data.get("text"))
        html = self.body("html", data.get("html"))
        if data.get("text") is None and data.get("html") is None:
            self.fail("text", "a body is required: give text, html or both")
        attachments = self.attachments(data.get("attachments"))
        importance = self.choice("importance", data.get("importance"), IMPORTANCE_VALUES)
        headers = self.headers(data.get("headers"), importance_given=data.get("importance") is not None)
        transport = self.choice("transport", data.get("transport"), TRANSPORT_VALUES)
        save = self.boolean("saveToSentItems", data.get("saveToSentItems"))

        recipients = lists["to"] + lists["cc"] + lists["bcc"]
        if not recipients and not list_errors:
            self.fail("to", "at least one recipient is required in to, cc or bcc")
        distinct = len({a.key() for a in recipients})
        if distinct > self.max_recipients:
            self.fail(
                "to",
                f"{distinct} recipients in to, cc and bcc together; at most {self.max_recipients} "
                "per message (Exchange Online's limit): split the message",
                across_fields=True,
            )
        if transport is not None:
            self.errors.extend(_transport_problems(transport, headers))
        if self.errors or sender is None:
            return None
        return Message(
            sender=sender,
            to=lists["to"],
            cc=lists["cc"],
            bcc=lists["bcc"],
            reply_to=lists["reply_to"],
            subject=subject,
            text=text,
            html=html,
            attachments=attachments,
            headers=headers,
            importance=importance,
            transport=transport,
            save_to_sent_items=save,
            id=message_id,
        )


def _transport_problems(transport: str, headers: Sequence[tuple[str, str]]) -> list[FieldError]:
    if transport == "graph" and len(headers) > GRAPH_MAX_HEADERS:
        return [
            FieldError(
                "headers",
                f"{len(headers)} custom headers; Graph accepts at most {GRAPH_MAX_HEADERS} "
                "(send through smtp, or drop some)",
            )
        ]
    return []


def parse_message(
    data: object,
    *,
    max_recipients: int = MAX_RECIPIENTS,
    max_subject_length: int = MAX_SUBJECT_LENGTH,
) -> Message:
    """Validate a decoded v1 body; raises InvalidMessage listing every problem found."""
    parser = _Parser(max_recipients, max_subject_length)
    try:
        message = parser.message(data)
    except RecursionError:
        raise InvalidMessage.single("$", "the message is nested too deeply to be a v1 message") from None
    if parser.errors or message is None:
        raise InvalidMessage(parser.errors or [FieldError("$", "not a valid message")])
    return message


def validate_for_transport(message: Message, transport: str) -> None:
    """Rules of the chosen transport (e.g. Graph's 5-header limit); raises InvalidMessage."""
    problems = _transport_problems(transport, message.headers)
    if problems:
        raise InvalidMessage(problems)


# ------------------------------------------------------------------------ queue body decoding

_EXCERPT = 80


def _excerpt(text: str) -> str:
    return _safe(text, _EXCERPT)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidMessage.single(_name(key), "is given twice in the JSON object")
        result[key] = value
    return result


def _load_json_object(text: str, *, how: str) -> dict[str, object]:
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise InvalidMessage.single(
            "$", f"{how} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidMessage.single("$", f"{how} is nested too deeply") from None
    except InvalidMessage:
        raise
    except ValueError as exc:
        # e.g. an integer of more than 4,300 digits: Python's int() limit raises a plain ValueError.
        raise InvalidMessage.single("$", f"{how} holds a value JSON decoding refused: {_safe(str(exc))}") from None
    if not isinstance(value, dict):
        raise InvalidMessage.single("$", f"{how} must be a JSON object, got {_kind(value)}")
    return value


def _trim(text: str) -> str:
    """Without surrounding whitespace and byte-order marks (editors and .NET writers add them)."""
    return text.strip().lstrip("\ufeff").strip()


def decode_body(raw: str | bytes) -> dict[str, object]:
    """The JSON object in a queue message body: plain JSON (starts with ``{`` after an optional
    BOM and whitespace) or base64 of JSON (which never starts with ``{``)."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage.single(
                "$", f"the body is not UTF-8 text (received {len(raw)} bytes starting {bytes(raw[:24])!r})"
            ) from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise InvalidMessage.single("$", f"the body must be text, got {type(raw).__name__}")

    stripped = _trim(text)
    if not stripped:
        raise InvalidMessage.single("$", "the body is empty; expected a JSON message (plain or base64)")
    if stripped.startswith("{"):
        return _load_json_object(stripped, how="the body (plain JSON)")

    compact = "".join(stripped.split())
    decoded: bytes | None = None
    if compact.isascii() and len(compact) % 4 == 0:
        try:
            decoded = binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
        except binascii.Error:
            decoded = None
    if decoded is None:
        hint = ""
        if stripped.startswith('"'):
            hint = "; it looks like a JSON string: send the object itself, not a string that contains it"
        elif stripped.startswith("["):
            hint = "; it looks like a JSON array: send one message object per queue message"
        raise InvalidMessage.single(
            "$",
            "the body is neither JSON (it does not start with '{') nor base64 of JSON; "
            f"received {len(text)} characters: {_excerpt(stripped)!r}{hint}. Send the message "
            "as plain UTF-8 JSON, or as base64 of it (e.g. azure-storage-queue's TextBase64EncodePolicy)",
        )
    try:
        inner = _trim(decoded.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidMessage.single(
            "$",
            "the body is base64, but what it decodes to is not UTF-8 text "
            f"(first bytes {decoded[:16]!r}); expected base64 of a JSON message",
        ) from None
    if not inner.startswith("{"):
        twice = " (it looks base64-encoded twice)" if inner.startswith("ey") else ""
        raise InvalidMessage.single(
            "$",
            "the body is base64, but it decodes to something that is not a JSON object: "
            f"{_excerpt(inner)!r}{twice}",
        )
    return _load_json_object(inner, how="the body (base64-decoded JSON)")


# ----------------------------------------------------------------------- sender allow-list


def normalize_sender_pattern(pattern: str) -> str:
    """``user@domain`` or ``*@domain``, lower-cased with an ASCII domain; raises ValueError."""
    text = pattern.strip()
    if text.startswith("*@"):
        try:
            return "*@" + ascii_domain(text[2:])
        except AddressError as exc:
            raise ValueError(f"sender pattern {pattern!r}: {exc}") from None
    try:
        return make_address(text).key()
    except AddressError as exc:
        raise ValueError(
            f"sender pattern {pattern!r} is neither an address nor *@domain: address {exc}"
        ) from None


def sender_allowed(address: str, allowed: Sequence[str]) -> bool:
    key = address.lower()
    domain = key.rpartition("@")[2]
    for pattern in allowed:
        try:
            normal = normalize_sender_pattern(pattern)
        except ValueError:
            continue  # the settings loader reports bad patterns; here they just never match
        if normal == key or normal == f"*@{domain}":
            return True
    return False


def check_sender_allowed(message: Message, allowed: Sequence[str]) -> None:
    """Raise InvalidMessage on ``from`` unless the sender matches an allowed pattern.
    An empty list allows nobody (outbox never sends as an arbitrary mailbox by default)."""
    address = message.sender.address
    if not allowed:
        raise NotPermitted.single(
            "from",
            f"{address} may not send: OUTBOX_ALLOWED_SENDERS is empty, so no sender is allowed",
        )
    if not sender_allowed(address, allowed):
        shown = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")
        raise NotPermitted.single(
            "from", f"{address} is not an allowed sender (OUTBOX_ALLOWED_SENDERS: {shown})"
        )


def check_attachment_sources(message: Message, containers: Sequence[str]) -> None:
    """Raise NotPermitted unless every blob attachment is in one of ``containers`` (the deployment's
    attachment containers). The function's identity can read the Functions host's own containers (keys,
    the app package); a producer that may only enqueue must never get them mailed to itself."""
    problems = [
        FieldError(f"attachments[{n}].blob",
                   f"container {a.blob_container!r} is not an attachment container; attachments may only come "
                   f"from {', '.join(containers)} (OUTBOX_ATTACHMENTS_CONTAINER, OUTBOX_ATTACHMENT_CONTAINERS)")
        for n, a in enumerate(message.attachments)
        if a.blob is not None and a.blob_container not in containers
    ]
    if problems:
        raise NotPermitted(problems)


# ----------------------------------------------------------------------------- serialising


def valid_message_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a message id as design.md defines it."""
    return isinstance(value, str) and _ID.match(value) is not None


def _address_json(address: Address) -> str | dict[str, str]:
    if address.name is None:
        return address.address
    return {"address": address.address, "name": address.name}


def _attachment_json(attachment: Attachment) -> dict[str, object]:
    result: dict[str, object] = {"name": attachment.name, "contentType": attachment.content_type}
    if attachment.blob is not None:
        result["blob"] = attachment.blob
    else:
        result["contentBase64"] = base64.b64encode(attachment.content or b"").decode("ascii")
    if attachment.inline:
        result["inline"] = True
    if attachment.content_id is not None:
        result["contentId"] = attachment.content_id
    return result


def message_to_json(message: Message, *, id: str) -> dict[str, object]:
    """The v1 body of ``message`` with ``id`` filled in (for requeueing a retry). Blob attachments
    stay references, so a requeued body stays small; it round-trips through parse_message."""
    if not _ID.match(id):
        raise ValueError(f"message id {id!r} is not {ID_RULE}")
    return {"id": id, **_content_json(message)}


FINGERPRINT_PREFIX = "sha256:"


def fingerprint(message: Message) -> str:
    """What makes two bodies with one id the same message: a hash of the normalised v1 form without its
    id. Plain or base64, key order, spacing, address case in the domain, a content type guessed or given
    all give the same value; any change a recipient could see (a subject, a recipient, a byte of an
    attachment, a header) gives another."""
    canonical = json.dumps(_content_json(message), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return FINGERPRINT_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _content_json(message: Message) -> dict[str, object]:
    body: dict[str, object] = {"from": _address_json(message.sender)}
    for json_name, attr in _RECIPIENT_LISTS:
        addresses: tuple[Address, ...] = getattr(message, attr)
        if addresses:
            body[json_name] = [_address_json(a) for a in addresses]
    body["subject"] = message.subject
    if message.text is not None:
        body["text"] = message.text
    if message.html is not None:
        body["html"] = message.html
    if message.attachments:
        body["attachments"] = [_attachment_json(a) for a in message.attachments]
    if message.headers:
        body["headers"] = dict(message.headers)
    if message.importance is not None:
        body["importance"] = message.importance
    if message.transport is not None:
        body["transport"] = message.transport
    if message.save_to_sent_items is not None:
        body["saveToSentItems"] = message.save_to_sent_items
    return body
