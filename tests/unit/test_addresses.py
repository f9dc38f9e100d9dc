"""Address parsing and formatting (shared/addresses.py)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest

from shared.addresses import (
    Address,
    AddressError,
    ascii_domain,
    format_address,
    format_address_header,
    make_address,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "address", "name"),
    [
        ("a@b.example", "a@b.example", None),
        ("  a@b.example  ", "a@b.example", None),
        ("<a@b.example>", "a@b.example", None),
        ("Jane Roe <jane@x.example>", "jane@x.example", "Jane Roe"),
        ('"Doe, John" <john@x.example>', "john@x.example", "Doe, John"),
        ('"J@ne (ops)" <j@x.example>', "j@x.example", "J@ne (ops)"),
        ('"say \\"hi\\"" <j@x.example>', "j@x.example", 'say "hi"'),
        ("=?utf-8?q?J=C3=B6rg?= <j@x.example>", "j@x.example", "Jörg"),
        ("Jörg Müller <j@x.example>", "j@x.example", "Jörg Müller"),
        ("j@Bücher.Example", "j@xn--bcher-kva.example", None),
        ("first.last+tag@sub.x.example", "first.last+tag@sub.x.example", None),
        ("o'brien@x.example", "o'brien@x.example", None),
        ("a@B.EXAMPLE", "a@b.example", None),
        ("a@x.example.", "a@x.example", None),
    ],
)
def test_parse_address_accepts(text: str, address: str, name: str | None) -> None:
    assert parse_address(text) == Address(address, name)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("john@", "no domain"),
        ("@x.example", "nothing before"),
        ("john", "no '@'"),
        ("a b@x.example", "spaces"),
        ("John Doe john@x.example", "Name <"),
        ("a@b", "not fully qualified"),
        ("a@-b.example", "not a valid host name"),
        ("a@b_c.example", "not a valid host name"),
        ("a..b@x.example", "invalid part before"),
        (".a@x.example", "invalid part before"),
        ("a@x.example\r\nBcc: evil@x.example", "CR or LF"),
        ("a@x.example\n", "CR or LF"),
        ("a\x00@x.example", "control character"),
        ("Doe, John <john@x.example>", "more than one address"),
        ("a@x.example, b@x.example", "more than one address"),
        ("Group: a@x.example;", "more than one address"),
        ("x <a@b.example> junk", "cannot be parsed"),
        ("user@[192.0.2.1]", "domain literals"),
        ('"quoted local"@x.example', "spaces"),
        ("ü@x.example", "non-ASCII"),
        ("a" * 65 + "@x.example", "more than 64"),
        ("a@" + "b" * 64 + ".example", "not a valid host name"),
    ],
)
def test_parse_address_rejects(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert fragment in str(caught.value)


def test_make_address_wants_a_bare_address() -> None:
    with pytest.raises(AddressError, match="bare address"):
        make_address("Bob <bob@x.example>")
    assert make_address(" bob@x.example ", "  Bob  ") == Address("bob@x.example", "Bob")
    assert make_address("bob@x.example", "   ") == Address("bob@x.example", None)


@pytest.mark.parametrize("name", ["Bob\r\nBcc: evil@x.example", "Bob\x85", "Bob\u2028", "x" * 257])
def test_display_name_rejects_line_breaks_controls_and_overlong(name: str) -> None:
    with pytest.raises(AddressError, match="display name"):
        make_address("bob@x.example", name)


def test_idn_domain_is_converted_to_its_a_label() -> None:
    assert ascii_domain("bücher.example") == "xn--bcher-kva.example"
    assert ascii_domain("BÜCHER.example") == "xn--bcher-kva.example"
    with pytest.raises(AddressError):
        ascii_domain("xn--.example")


@pytest.mark.parametrize(
    ("address", "wire_fragment"),
    [
        (Address("j@x.example", "Doe, John"), b'"Doe, John" <j@x.example>'),
        (Address("j@x.example", "J@ne"), b'"J@ne" <j@x.example>'),
        (Address("j@x.example", "Jörg"), b"=?utf-8?q?J=C3=B6rg?= <j@x.example>"),
        (Address("j@x.example", None), b"j@x.example"),
    ],
)
def test_header_form_quotes_and_encodes_names(address: Address, wire_fragment: bytes) -> None:
    msg = EmailMessage(policy=policy.SMTP)
    msg["To"] = address.to_header()
    wire = msg.as_bytes()
    assert wire_fragment in wire
    assert wire.isascii()


def test_format_address_is_human_readable() -> None:
    assert format_address(Address("j@x.example", "Doe, John")) == '"Doe, John" <j@x.example>'
    assert str(Address("j@x.example")) == "j@x.example"
    assert Address("J@X.example").key() == "j@x.example"
    assert Address("j@x.example").domain == "x.example"


def _reparse_address_header(name: str, value: str) -> list[tuple[str, str]]:
    import email

    parsed = email.message_from_bytes(f"{name}: {value}\r\n\r\n".encode("ascii"), policy=policy.default)
    assert not parsed[name].defects
    return [(a.display_name, a.addr_spec) for a in parsed[name].addresses]


def test_address_header_keeps_the_comma_between_addresses_at_the_line_limit() -> None:
    # With email.policy's own folder this pair became ONE address: the separating comma was
    # RFC 2047-encoded because the first encoded name ended exactly at column 78.
    addresses = [
        Address("0.000.000@kd.vz.example", "000000000000ßß日日日"),
        Address("R!^zLj=x@xn--bcher-kva.example"),
    ]
    value = format_address_header("Cc", addresses)
    assert value.isascii()
    assert _reparse_address_header("Cc", value) == [
        ("000000000000ßß日日日", "0.000.000@kd.vz.example"),
        ("", "R!^zLj=x@xn--bcher-kva.example"),
    ]


def test_address_header_folds_at_78_columns_and_quotes_or_encodes_names() -> None:
    addresses = [
        Address("a@x.example", "Doe, John"),
        Address("b@x.example", "=?utf-8?q?looks_encoded?="),
        Address("c@x.example", "L" * 200),
        Address("d@x.example", 'say "hi" \\ bye'),
        Address("e@x.example"),
    ]
    value = format_address_header("To", addresses)
    assert all(len(line) <= 78 for line in ("To: " + value).split("\r\n"))
    got = _reparse_address_header("To", value)
    assert [addr for _, addr in got] == [a.address for a in addresses]
    assert got[0][0] == "Doe, John"
    assert got[1][0] == "=?utf-8?q?looks_encoded?="  # shown literally, not decoded
    assert "".join(got[2][0].split()) == "L" * 200
    assert got[3][0] == 'say "hi" \\ bye'
