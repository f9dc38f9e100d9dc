"""Email addresses: parsing what producers write, and formatting what the wire needs.

Parsing goes through the stdlib ``email`` header parser (so quoted display names with commas,
``@`` or quotes, and RFC 2047 encoded words, are understood), then a strict check of the
addr-spec on top, because that parser is lenient (it turns ``John Doe john@x.example`` into a
quoted local part) and occasionally crashes on garbage (``IndexError`` on ``"john@"``).

Addresses are kept in their ASCII wire form: an internationalised domain is converted to its
A-label (``xn--...``) form, so Graph, SMTP envelopes, the sender allow-list and Message-IDs all
see one spelling. The display name is kept apart from the address everywhere: Graph receives
``{"address", "name"}`` separately and MIME headers are built from ``headerregistry.Address``
objects, never from a formatted string a name could break out of (a name containing ``@`` is
what produces ErrorSendAsDenied in peers that concatenate).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import AddressHeader, HeaderRegistry

import idna

MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART_LENGTH = 64
MAX_NAME_LENGTH = 256

# RFC 5322 atext; a local part is dot-atom (quoted local parts are refused: Exchange and most
# producers mishandle them, and nobody needs them for a sending mailbox or a recipient).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL_PART = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: any of them in a
# header-bound string is either an injection attempt or a corrupted value.
_FORBIDDEN_IN_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_REGISTRY = HeaderRegistry()


class AddressError(ValueError):
    """An address or display name that cannot be used; the message says why, for a person."""


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: ``address`` is the ASCII addr-spec, ``name`` the optional display name."""

    address: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def key(self) -> str:
        """Comparison key: addresses are compared case-insensitively (as Exchange does)."""
        return self.address.lower()

    def to_header(self) -> HeaderAddress:
        """The stdlib object that email.policy serialises with quoting and RFC 2047 names."""
        username, _, domain = self.address.rpartition("@")
        return HeaderAddress(display_name=self.name or "", username=username, domain=domain)

    def __str__(self) -> str:
        return format_address(self)


def line_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a single header line, or None when it can."""
    found = _FORBIDDEN_IN_LINE.search(value)
    if found is None:
        return None
    char = found.group()
    if char in "\r\n":
        return "must not contain CR or LF (line breaks)"
    return f"must not contain control character U+{ord(char):04X}"


def ascii_domain(domain: str) -> str:
    """The A-label (punycode) form of ``domain``, lower case; raises AddressError if invalid."""
    if not domain:
        raise AddressError("has no domain (expected name@domain.example)")
    if domain.startswith("[") or domain.endswith("]"):
        raise AddressError("domain literals like [192.0.2.1] are not supported; use a domain name")
    if domain.endswith("."):
        domain = domain[:-1]
    try:
        ascii_form = domain.lower() if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise AddressError(f"has an invalid internationalised domain {domain!r} ({exc})") from None
    labels = ascii_form.split(".")
    if len(labels) < 2:
        raise AddressError(f"domain {domain!r} is not fully qualified (expected e.g. contoso.example)")
    for label in labels:
        if not _LABEL.match(label):
            raise AddressError(f"domain {domain!r} is not a valid host name")
    if len(ascii_form) > 253:
        raise AddressError("domain is longer than 253 characters")
    return ascii_form


def normalize_addr_spec(value: str) -> str:
    """Check a bare ``local@domain`` and return its wire form; raises AddressError."""
    problem = line_problem(value)
    if problem:
        raise AddressError(problem)
    if value != value.strip():
        value = value.strip()
    if not value:
        raise AddressError("is empty")
    if "<" in value or ">" in value:
        raise AddressError(
            "must be a bare address (name@domain.example); give the display name in 'name'"
        )
    if "," in value or ";" in value:
        raise AddressError("holds more than one address; give each address as its own list item")
    if any(ch.isspace() for ch in value):
        raise AddressError(
            "must not contain spaces (a display name is written as: Name <name@domain.example>)"
        )
    local, at, domain = value.rpartition("@")
    if not at:
        raise AddressError("has no '@' (expected name@domain.example)")
    if not local:
        raise AddressError("has nothing before the '@'")
    if not local.isascii():
        raise AddressError(
            "has non-ASCII characters before the '@' (internationalised local parts need SMTPUTF8, "
            "which outbox does not use)"
        )
    if not _LOCAL_PART.match(local):
        raise AddressError(f"has an invalid part before the '@': {local!r}")
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise AddressError(f"has more than {MAX_LOCAL_PART_LENGTH} characters before the '@'")
    result = f"{local}@{ascii_domain(domain)}"
    if len(result) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"is longer than {MAX_ADDRESS_LENGTH} characters")
    return result


def normalize_name(name: str) -> str | None:
    """Check a display name; returns it stripped, or None when it is blank."""
    problem = line_problem(name)
    if problem:
        raise AddressError(f"display name {problem}")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise AddressError(f"display name is longer than {MAX_NAME_LENGTH} characters")
    return name or None


def make_address(address: str, name: str | None = None) -> Address:
    """An Address from separate parts (the ``{"address", "name"}`` form)."""
    return Address(normalize_addr_spec(address), normalize_name(name) if name is not None else None)


def parse_address(text: str) -> Address:
    """Parse one address as people write it: ``a@b.example``, ``Name <a@b.example>``,
    ``"Doe, John" <john@x.example>``, ``=?utf-8?q?...?= <a@b.example>``."""
    problem = line_problem(text)
    if problem:
        raise AddressError(problem)
    stripped = text.strip()
    if not stripped:
        raise AddressError("is empty")
    if "<" not in stripped and '"' not in stripped and "(" not in stripped:
        # A bare addr-spec: checked directly, so that the error says exactly what is wrong
        # instead of whatever the lenient header parser made of it.
        return Address(normalize_addr_spec(stripped))
    try:
        header = _HEADER_REGISTRY("to", stripped)
        if not isinstance(header, AddressHeader):  # the registry maps "to" to an address header
            raise TypeError(type(header).__name__)
        groups = header.groups
    except Exception:  # the stdlib parser raises IndexError & co on some malformed input
        raise AddressError(f"cannot be parsed as an address: {stripped[:80]!r}") from None
    if len(groups) != 1 or groups[0].display_name is not None:
        raise AddressError(
            "holds more than one address; give each address as its own list item, and quote a "
            'display name that contains a comma: "Doe, John" <john@x.example>'
        )
    if header.defects:
        raise AddressError(f"cannot be parsed as an address: {stripped[:80]!r}")
    (parsed,) = groups[0].addresses
    if not parsed.username or not parsed.domain:
        raise AddressError(f"cannot be parsed as an address: {stripped[:80]!r}")
    name = parsed.display_name
    addr_spec = f"{parsed.username}@{parsed.domain}"
    return Address(normalize_addr_spec(addr_spec), normalize_name(name) if name else None)


_PHRASE_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_MAX_HEADER_LINE = 78


def _name_atoms(name: str) -> list[str]:
    """The display name as unbreakable ASCII pieces of at most 76 characters each."""
    if name.isascii() and "=?" not in name:
        phrase = name
        if _PHRASE_SPECIALS.search(name) or "  " in name or "\t" in name:
            phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(phrase) <= _MAX_HEADER_LINE - 2:
            return [phrase]
    # Non-ASCII (or long, or "=?"-looking) names become RFC 2047 encoded words, which decoders
    # rejoin across folds; a literal "=?" would otherwise be decoded by the recipient's client.
    # 66 leaves room for "Reply-To: " and a comma on the first line.
    encoded = Header(name, "utf-8", maxlinelen=66).encode(splitchars=" ", linesep="\n")
    return encoded.split("\n ")


def format_address_header(header_name: str, addresses: Sequence[Address]) -> str:
    """The value of an address header (From, To, Cc, Reply-To), ASCII and already folded at 78
    columns, each address kept whole, to be stored with ``EmailMessage.set_raw``.

    Why not let ``email.policy`` fold it: its folder (seen on CPython 3.11.7) RFC 2047-encodes the
    comma between two addresses when an encoded display name ends exactly at the line limit,
    which merges the addresses into one for every reader (found by this project's property tests).
    """
    atoms: list[str] = []
    for index, address in enumerate(addresses):
        pieces = [*_name_atoms(address.name), f"<{address.address}>"] if address.name else [address.address]
        if index < len(addresses) - 1:
            pieces[-1] += ","
        atoms.extend(pieces)
    lines: list[str] = []
    current = ""
    width = len(header_name) + 2  # "To: "
    for atom in atoms:
        if not current:
            current = atom
            width += len(atom)
        elif width + 1 + len(atom) <= _MAX_HEADER_LINE:
            current += " " + atom
            width += 1 + len(atom)
        else:
            lines.append(current)
            current = " " + atom
            width = len(current)
    lines.append(current)
    return "\r\n".join(lines)


def format_address(addr: Address) -> str:
    """Human-readable form (Unicode, quoted as needed): for logs and messages, never for Graph."""
    return str(addr.to_header())
