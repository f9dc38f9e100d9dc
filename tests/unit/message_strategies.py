"""Hypothesis strategies for v1 messages: arbitrary JSON, and valid bodies built field by field."""

from __future__ import annotations

import base64
from email.headerregistry import Address as HeaderAddress
from typing import Any

from hypothesis import strategies as st

TOP_LEVEL_FIELDS = (
    "id", "from", "to", "cc", "bcc", "replyTo", "subject", "text", "html",
    "attachments", "headers", "importance", "transport", "saveToSentItems",
)  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(TOP_LEVEL_FIELDS), children, max_size=5),
    max_leaves=15,
)

# Text that may go into a header line: no control characters, no line separators.
_line_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
line_text = st.text(_line_chars, max_size=40)
body_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)

_atext = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
local_parts = st.lists(st.text(st.sampled_from(_atext), min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
domains = st.lists(_labels, min_size=1, max_size=2).map(lambda ls: ".".join([*ls, "example"])) | st.sampled_from(
    ["bücher.example", "MÜNCHEN.Example", "Contoso.COM"]
)
addr_specs = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
_simple_name_chars = st.sampled_from(list("abcXYZ019 ,.@'-()éøß日本"))
simple_names = st.text(_simple_name_chars, min_size=1, max_size=20).filter(lambda s: s.strip())


def _formatted(name: str, addr: str) -> str:
    local, _, domain = addr.rpartition("@")
    return str(HeaderAddress(display_name=name.strip(), username=local, domain=domain))


address_items = st.one_of(
    addr_specs,
    st.builds(lambda a, n: {"address": a, "name": n}, addr_specs, st.none() | line_text),
    st.builds(lambda a: {"address": a}, addr_specs),
    st.builds(_formatted, simple_names, addr_specs.filter(lambda a: a.isascii())),
)

_file_names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() not in ("", ".", ".."))


@st.composite
def attachments(draw: st.DrawFn, index: int) -> dict[str, Any]:
    item: dict[str, Any] = {"name": draw(_file_names)}
    if draw(st.booleans()):
        item["contentBase64"] = base64.b64encode(draw(st.binary(max_size=64))).decode()
    else:
        item["blob"] = draw(st.from_regex(r"box-[a-z0-9]{1,5}/[A-Za-z0-9_.-]{0,6}[A-Za-z0-9_-]", fullmatch=True))
    if draw(st.booleans()):
        item["contentType"] = draw(st.sampled_from(["application/pdf", "image/png", "text/csv", "Application/Octet-Stream"]))
    if draw(st.booleans()):
        item["inline"] = draw(st.booleans())
    if draw(st.booleans()):
        item["contentId"] = draw(st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True)) + f".{index}"
    return item


@st.composite
def header_maps(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True), max_size=5))
    result: dict[str, str] = {}
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen or name.lower() == "x-priority" or name.lower().startswith("x-ms-exchange-"):
            continue
        seen.add(name.lower())
        result[name] = draw(line_text)
    return result


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A v1 body that parse_message must accept."""
    body: dict[str, Any] = {"from": draw(address_items)}
    for field in ("to", "cc", "bcc", "replyTo"):
        if draw(st.booleans()):
            body[field] = draw(st.lists(address_items, max_size=3))
    if not any(body.get(f) for f in ("to", "cc", "bcc")):
        body["to"] = [draw(address_items)]
    if draw(st.booleans()):
        body["subject"] = draw(line_text)
    bodies = draw(st.sampled_from(["text", "html", "both"]))
    if bodies in ("text", "both"):
        body["text"] = draw(body_text)
    if bodies in ("html", "both"):
        body["html"] = draw(body_text)
    count = draw(st.integers(0, 3))
    if count:
        body["attachments"] = [draw(attachments(i)) for i in range(count)]
    if draw(st.booleans()):
        body["headers"] = draw(header_maps())
    if draw(st.booleans()):
        body["importance"] = draw(st.sampled_from(["low", "normal", "high", "High"]))
    if draw(st.booleans()):
        body["transport"] = draw(st.sampled_from(["graph", "smtp", "SMTP"]))
    if draw(st.booleans()):
        body["saveToSentItems"] = draw(st.booleans())
    if draw(st.booleans()):
        body["id"] = draw(st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True))
    return body
