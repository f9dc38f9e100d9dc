"""Strategies for the custom formats docs/openapi.yaml uses where a pattern cannot say what outbox
accepts (an RFC 5322 address, a file name, a blob that exists), loaded by schemathesis through
SCHEMATHESIS_HOOKS in tests/e2e/test_openapi_fuzz.py. Each generates only values the validator takes,
so a refusal of a schema-valid body is a real disagreement between the document and the code."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import strategies as st

_LOCAL = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,14}[a-z0-9])?", fullmatch=True).filter(lambda s: ".." not in s)
_DOMAIN = st.sampled_from(["contoso.example", "fabrikam.example", "b\u00fccher.example", "mail.fabrikam.example"])
_SPEC = st.one_of(
    st.sampled_from(["sender@contoso.example", "noreply@contoso.example", "alice@fabrikam.example"]),
    st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN),
)
_NAME = st.from_regex(r"[A-Za-z][A-Za-z .'-]{0,20}[A-Za-z]", fullmatch=True)

schemathesis.openapi.format("outbox-address-spec", _SPEC)
schemathesis.openapi.format(
    "outbox-address",
    st.one_of(_SPEC, st.builds(lambda name, spec: f'"{name}" <{spec}>', _NAME, _SPEC)),
)
schemathesis.openapi.format(
    "outbox-filename", st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 _()-]{0,30}\.[a-z]{1,4}", fullmatch=True))
schemathesis.openapi.format("outbox-content-id", st.uuids().map(lambda u: f"part.{u.hex}"))
schemathesis.openapi.format(
    "outbox-blob", st.sampled_from([ref for ref in os.environ.get("OUTBOX_FUZZ_BLOBS", "").split(",") if ref]
                                   or ["outbox-attachments/missing.txt"]))
