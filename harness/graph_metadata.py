"""The part of Microsoft Graph's published metadata (v1.0 ``$metadata``, CSDL) that sendMail and the draft
path bind a body against: the ``sendMail`` action's parameters and the types a message is made of, with
the properties outbox or a client like msgraph-sdk-python writes.

Source: the v1.0 CSDL as documented in the message, recipient, emailAddress, itemBody,
internetMessageHeader, attachment and fileAttachment resource pages (microsoft-graph-docs-contrib
``api-reference/v1.0/resources/*.md``) and ``user-sendmail.md`` (action ``sendMail(Message, SaveToSentItems)``).
A subset: properties a client may not write (``id``, ``createdDateTime`` ...) are left out on purpose, so a
client that writes one is told so, as Graph tells it (writing a read-only property is an error there too).

Graph binds an action's parameters whatever their case (its metadata names them ``Message`` and
``SaveToSentItems``; the docs write ``message``), but a type's properties by their exact name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Graph answers with the Outlook backend's type names in RequestBodyRead messages
# (microsoft-graph-explorer-v4#946: 'Microsoft.OutlookServices.Message').
OUTLOOK_TYPE_NAMES = {
    "microsoft.graph.message": "Microsoft.OutlookServices.Message",
    "microsoft.graph.recipient": "Microsoft.OutlookServices.Recipient",
    "microsoft.graph.emailAddress": "Microsoft.OutlookServices.EmailAddress",
    "microsoft.graph.itemBody": "Microsoft.OutlookServices.ItemBody",
    "microsoft.graph.internetMessageHeader": "Microsoft.OutlookServices.InternetMessageHeader",
    "microsoft.graph.fileAttachment": "Microsoft.OutlookServices.FileAttachment",
    "microsoft.graph.singleValueLegacyExtendedProperty": "Microsoft.OutlookServices.SingleValueLegacyExtendedProperty",
}

SEND_MAIL_PARAMETERS = {"message": ("Message", "microsoft.graph.message"),
                        "savetosentitems": ("SaveToSentItems", "Edm.Boolean")}


@dataclass(frozen=True)
class Prop:
    type: str  # Edm.String, Edm.Boolean, Edm.Int32, Edm.Binary, Edm.DateTimeOffset, an enum, or a complex type
    collection: bool = False


ENUMS: Mapping[str, frozenset[str]] = {
    "microsoft.graph.importance": frozenset({"low", "normal", "high"}),
    "microsoft.graph.bodyType": frozenset({"text", "html"}),
    "microsoft.graph.inferenceClassificationType": frozenset({"focused", "other"}),
}

TYPES: Mapping[str, Mapping[str, Prop]] = {
    "microsoft.graph.message": {
        "subject": Prop("Edm.String"),
        "body": Prop("microsoft.graph.itemBody"),
        "from": Prop("microsoft.graph.recipient"),
        "sender": Prop("microsoft.graph.recipient"),
        "toRecipients": Prop("microsoft.graph.recipient", collection=True),
        "ccRecipients": Prop("microsoft.graph.recipient", collection=True),
        "bccRecipients": Prop("microsoft.graph.recipient", collection=True),
        "replyTo": Prop("microsoft.graph.recipient", collection=True),
        "importance": Prop("microsoft.graph.importance"),
        "internetMessageId": Prop("Edm.String"),
        "internetMessageHeaders": Prop("microsoft.graph.internetMessageHeader", collection=True),
        "attachments": Prop("microsoft.graph.fileAttachment", collection=True),
        "isDeliveryReceiptRequested": Prop("Edm.Boolean"),
        "isReadReceiptRequested": Prop("Edm.Boolean"),
        "isDraft": Prop("Edm.Boolean"),
        "categories": Prop("Edm.String", collection=True),
        "inferenceClassification": Prop("microsoft.graph.inferenceClassificationType"),
        # A navigation property written inline at creation (singlevaluelegacyextendedproperty-post-...md).
        "singleValueExtendedProperties": Prop("microsoft.graph.singleValueLegacyExtendedProperty", collection=True),
    },
    "microsoft.graph.singleValueLegacyExtendedProperty": {"id": Prop("Edm.String"), "value": Prop("Edm.String")},
    "microsoft.graph.recipient": {"emailAddress": Prop("microsoft.graph.emailAddress")},
    "microsoft.graph.emailAddress": {"address": Prop("Edm.String"), "name": Prop("Edm.String")},
    "microsoft.graph.itemBody": {"contentType": Prop("microsoft.graph.bodyType"), "content": Prop("Edm.String")},
    "microsoft.graph.internetMessageHeader": {"name": Prop("Edm.String"), "value": Prop("Edm.String")},
    "microsoft.graph.fileAttachment": {
        "name": Prop("Edm.String"),
        "contentType": Prop("Edm.String"),
        "contentBytes": Prop("Edm.Binary"),
        "contentId": Prop("Edm.String"),
        "contentLocation": Prop("Edm.String"),
        "isInline": Prop("Edm.Boolean"),
        "size": Prop("Edm.Int32"),
    },
}


@dataclass(frozen=True)
class BindError:
    """Why a body does not bind: the catalog entry and its values."""

    catalog: str
    fmt: Mapping[str, str]


def bind_send_mail(body: Mapping[str, Any]) -> tuple[dict[str, Any], BindError | None]:
    """The sendMail parameters by their metadata names (``Message``, ``SaveToSentItems``), however the body
    spelled them, or the first reason the body does not bind."""
    bound: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        found = SEND_MAIL_PARAMETERS.get(key.casefold())
        if found is None:
            return bound, BindError("graph.request_body_read_parameter", {"parameter": key, "operation": "sendMail"})
        name, type_name = found
        problem = check_value(value, Prop(type_name))
        if problem is not None:
            return bound, problem
        bound[name] = value
    return bound, None


def check_value(value: Any, prop: Prop) -> BindError | None:
    """None when ``value`` reads as ``prop``; null is always allowed (the property is then unset)."""
    if value is None:
        return None
    if prop.collection:
        if not isinstance(value, list):
            return _literal(value, f"Collection({prop.type})")
        for item in value:
            problem = check_value(item, Prop(prop.type))
            if problem is not None:
                return problem
        return None
    kind = prop.type
    if kind in TYPES:
        if not isinstance(value, Mapping):
            return _literal(value, kind)
        return check_object(value, kind)
    if kind in ENUMS:
        ok = isinstance(value, str) and value.casefold() in ENUMS[kind]
    elif kind == "Edm.String":
        ok = isinstance(value, str)
    elif kind == "Edm.Boolean":
        # The OData JSON reader also takes the literals "true" / "false" for a boolean.
        ok = isinstance(value, bool) or (isinstance(value, str) and value.casefold() in ("true", "false"))
    elif kind == "Edm.Int32":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "Edm.Binary":
        ok = isinstance(value, str)  # its base64 is checked where the bytes are read (ErrorMimeContent...)
    else:
        ok = True
    return None if ok else _literal(value, kind)


def check_object(value: Mapping[str, Any], type_name: str) -> BindError | None:
    props = TYPES[type_name]
    for key, item in value.items():
        if key.startswith("@odata."):
            continue  # instance annotations (@odata.type on attachments, as the SDKs write them)
        prop = props.get(key)
        if prop is None:
            return BindError("graph.request_body_read",
                             {"property": key, "type": OUTLOOK_TYPE_NAMES.get(type_name, type_name)})
        problem = check_value(item, prop)
        if problem is not None:
            return problem
    return None


def _literal(value: Any, type_name: str) -> BindError:
    shown = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return BindError("graph.request_body_read_value", {"value": shown[:80], "type": type_name})
