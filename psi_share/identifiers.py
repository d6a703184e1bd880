"""Identifier kinds, their canonical forms, and domain-separated PSI items.

Two labs only find a match if they turn the same real-world identifier into
the *same bytes*. This module is the single place where that happens: every
identifier is canonicalized by the rules of its *kind*, then wrapped into a
*domain-separated item* that the PSI protocols blind and compare.

Domain-separated items
----------------------
::

    psi-share/1/<kind>/v<version>/<canonical>
    e.g. psi-share/1/email/v1/alice@gmail.com

The kind and its canonicalization version are part of the item, so kinds can
never collide (the text ``abc123`` as a ``device_id`` and as an
``account_handle`` are different items) and two nodes on different rule
versions produce items that simply do not match, rather than silently
half-matching. The item is *not* hashed or encrypted here, on purpose:
identifiers are low-entropy (anyone can enumerate phone numbers or guess
emails), so a plain hash would be as revealing as the value itself. The item
never leaves the node; only elliptic-curve points blinded with the node's
secret key do (see the PSI modules).

Common rules (every kind)
-------------------------
* Surrounding whitespace is stripped first.
* Empty or whitespace-only values are invalid.
* Values longer than 512 characters (after stripping) are invalid.
* Control characters (Unicode Cc), line/paragraph separators (Zl, Zp) and
  unpaired surrogates (Cs) anywhere in the value are invalid.
* Errors are :class:`~psi_share.errors.InvalidIdentifier`; their message names
  the kind and the reason, never the value (messages end up in logs).

Kinds, version 1
----------------
``email``
    Lowercase the whole address; exactly one ``@``; non-empty local part, no
    whitespace; local part NFC-normalized; domain converted to ASCII with IDNA
    (UTS #46), so ``user@BÜCHER.example`` becomes ``user@xn--bcher-kva.example``;
    a trailing dot on the domain (``example.com.``) is dropped.
    For ``gmail.com`` and ``googlemail.com`` only: dots are removed from the
    local part, everything from the first ``+`` is dropped, and the domain
    becomes ``gmail.com`` (Gmail ignores both, so they are the same mailbox).
    Other domains keep dots and ``+tags``: most providers treat them as
    significant (or let users configure it), and merging distinct mailboxes
    would produce false matches, which cost more than missed ones.
``phone``
    Parsed with libphonenumber using the context's default region for
    national-format numbers; output is E.164 (``+14155550123``). The number
    must be *possible* (right length for its country), not *valid*: validity
    depends on allocation tables that change between library releases and
    rejects reserved test ranges such as 555-01xx. Extensions are dropped.
``ipv4``
    Dotted-quad text as :class:`ipaddress.IPv4Address` prints it; leading
    zeros are rejected (``010.0.0.1`` is ambiguous: octal or decimal?).
``ipv6``
    RFC 5952 text: lowercase hex, leading zeros dropped, longest run of zero
    groups compressed to ``::``. Always all-hex: an IPv4-mapped address
    (``::ffff:192.0.2.1``) stays an ``ipv6`` and is written ``::ffff:c000:201``;
    it is not turned into an ``ipv4``. The text is produced here rather than
    by ``str(IPv6Address)`` because newer Pythons print mapped addresses in
    dotted form, and two nodes on different Pythons must still agree. Zone
    indexes (``fe80::1%eth0``) are rejected: they only mean something on one
    host.
``ip_prefix``
    An IPv4 or IPv6 network in CIDR notation; a prefix length is required.
    Host bits are cleared: ``203.0.113.57/24`` becomes ``203.0.113.0/24``.
    IPv6 prefixes use the same text as ``ipv6``.
``payment_fingerprint``
    An opaque token from the payment processor, 6-128 characters of
    ``A-Z a-z 0-9 _ - : .``. Case is preserved: processors' fingerprints are
    case-sensitive, so folding case could merge different cards.
``device_id`` (version 2)
    An opaque token: 4-256 printable ASCII characters (``!`` to ``~``,
    0x21-0x7E; no spaces, nothing outside ASCII), so base64 (``+ / =``) and
    base64url tokens are accepted. Case is preserved, because base64 is
    case-sensitive and folding it could merge two devices, except in the two
    forms whose case means nothing:

    * a UUID (hyphenated or 32 hex digits, optionally in braces or with a
      ``urn:uuid:`` prefix, any case) becomes the lowercase hyphenated form;
    * hexadecimal text (only ``0-9 a-f A-F`` and the separators ``:`` and
      ``-``: an Android ID, an APNs token, a MAC address) is lowercased.

    A base64 token made only of hex characters is folded too; for tokens of
    realistic length (16+ characters) that is vanishingly rare, and two such
    tokens would also have to differ only in case to be merged.
    Version 1 lowercased every device id and accepted only ``a-z 0-9 _ - :
    .`` (4-128 characters). UUIDs, hex ids and ids written in lowercase keep
    their canonical text under version 2; an id with an uppercase letter
    outside ``A-F`` keeps that letter now, which is why the version changed.
    A store made before version 2 is upgraded when it is opened (its raw
    values are kept, so they are canonicalized again).
``account_handle`` (version 1)
    NFKC-normalized, one leading ``@`` removed, casefolded (handles are
    case-insensitive on the platforms they come from); must then be 1-64
    printable ASCII characters (``!`` to ``~``: ``+``, ``@`` inside a
    fediverse-style ``user@instance`` and the like are fine, spaces and
    non-ASCII letters are not) and must not start with another ``@``.
    Earlier releases accepted only ``a-z 0-9 _ . -``; those handles keep
    their canonical text, so the version stays 1 (see Versions).

Versions
--------
Every kind carries a canonicalization version (``device_id`` is at 2, every
other kind at 1). A change to a kind's rules that gives *any* value the old
rules accepted a different canonical form must bump that kind's version:
otherwise two nodes would compute different items for the same identifier
and silently miss matches. Accepting values the old rules refused, without
changing the form of any value they accepted, needs no bump: a node on the
old rules cannot import such a value, which loses that match but can never
produce a wrong one. Both sides must agree on the versions
(:func:`canonical_versions`) before matching.

Test vectors for every kind (inputs, canonical forms, items and refusals) are
in ``protos/vectors/canonicalization.json``, next to the wire contract, for
anyone implementing it; ``tests/test_canonicalization_vectors.py`` runs them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType

import idna
import phonenumbers

from psi_share.errors import InvalidIdentifier

__all__ = [
    "DEFAULT_CONTEXT",
    "KINDS",
    "CanonicalizationContext",
    "KindSpec",
    "canonical_versions",
    "canonicalize",
    "domain_separated_item",
    "parse_item",
    "register_kind",
]

MAX_IDENTIFIER_LENGTH = 512
ITEM_PREFIX = "psi-share/1/"

_KIND_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ITEM_VERSION_RE = re.compile(r"v([1-9][0-9]*)")
# Categories that never belong in an identifier and would corrupt logs or CSV
# rows: control chars, unpaired surrogates (not encodable as UTF-8), and the
# Unicode line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


# --------------------------------------------------------------------------
# Context and registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalizationContext:
    """Settings that influence canonicalization.

    ``default_phone_region`` is the ISO 3166 region (uppercase, e.g. ``"GB"``)
    assumed for phone numbers written without a ``+country`` prefix.
    """

    default_phone_region: str = "US"

    def __post_init__(self) -> None:
        region = self.default_phone_region
        if not isinstance(region, str) or region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"unknown phone region {region!r}: expected an uppercase region "
                "code known to phonenumbers, e.g. 'US' or 'GB'"
            )


DEFAULT_CONTEXT = CanonicalizationContext()


@dataclass(frozen=True)
class KindSpec:
    """One identifier kind: its name, rule version and canonicalizer.

    ``canonicalize`` receives the raw value (already stripped and checked
    against the common rules when called through :func:`canonicalize`) and
    must return the canonical text or raise :class:`InvalidIdentifier`
    without putting the value in the message.
    """

    name: str
    version: int
    canonicalize: Callable[[str, CanonicalizationContext], str]
    description: str


_REGISTRY: dict[str, KindSpec] = {}
_REGISTRY_LOCK = threading.Lock()
KINDS: MappingProxyType[str, KindSpec] = MappingProxyType(_REGISTRY)


def register_kind(spec: KindSpec) -> None:
    """Add a kind to the registry; names are permanent and unique."""
    if not isinstance(spec.name, str) or not _KIND_NAME_RE.fullmatch(spec.name):
        raise ValueError(
            f"invalid kind name {spec.name!r}: must match ^[a-z][a-z0-9_]{{0,31}}$"
        )
    # bool is an int subclass; True as a version is certainly a mistake.
    if not isinstance(spec.version, int) or isinstance(spec.version, bool) or spec.version < 1:
        raise ValueError(f"kind {spec.name}: version must be an integer >= 1")
    with _REGISTRY_LOCK:
        if spec.name in _REGISTRY:
            raise ValueError(f"identifier kind {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec


def _safe_kind_label(kind: object) -> str:
    """The kind as it may appear in an error message.

    A caller that swapped arguments would pass an identifier as the kind;
    only well-formed kind names are echoed back so that cannot reach a log.
    """
    if isinstance(kind, str) and _KIND_NAME_RE.fullmatch(kind):
        return kind
    return "<malformed kind name>"


def _lookup(kind: str) -> KindSpec:
    spec = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if spec is None:
        label = _safe_kind_label(kind)
        raise InvalidIdentifier(
            label, f"unknown identifier kind (known: {', '.join(sorted(_REGISTRY))})"
        )
    return spec


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def canonicalize(
    kind: str, raw: str, ctx: CanonicalizationContext = DEFAULT_CONTEXT
) -> str:
    """Return the canonical text of ``raw`` as an identifier of ``kind``."""
    spec = _lookup(kind)
    value = _prepare(kind, raw)
    return spec.canonicalize(value, ctx)


def canonical_versions(kinds: Iterable[str] | None = None) -> dict[str, int]:
    """Map kind name -> current rule version, for all kinds or the given ones."""
    if isinstance(kinds, str):
        # A bare string would iterate per character: "email" -> e, m, a, ...
        raise TypeError("kinds must be an iterable of kind names, not a string")
    names = list(_REGISTRY) if kinds is None else list(kinds)
    return {name: _lookup(name).version for name in names}


def domain_separated_item(kind: str, canonical: str, version: int | None = None) -> str:
    """Wrap canonical text into the item the PSI protocols blind.

    ``canonical`` must already be the output of :func:`canonicalize` for
    ``kind``; ``version`` defaults to the kind's current version.
    """
    spec = _lookup(kind)
    if version is None:
        version = spec.version
    elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("version must be an integer >= 1")
    if not isinstance(canonical, str) or not canonical:
        raise ValueError("canonical value must be a non-empty string")
    return f"{ITEM_PREFIX}{kind}/v{version}/{canonical}"


def parse_item(item: str) -> tuple[str, int, str]:
    """Split an item made by :func:`domain_separated_item` into its parts.

    Returns ``(kind, version, canonical)``. The kind need not be registered
    here (it only has to be a well-formed name). Error messages never quote
    the item: it contains an identifier.
    """
    if not isinstance(item, str) or not item.startswith(ITEM_PREFIX):
        raise ValueError("malformed item: missing 'psi-share/1/' prefix")
    parts = item[len(ITEM_PREFIX):].split("/", 2)
    if len(parts) != 3:
        raise ValueError("malformed item: expected <kind>/v<version>/<canonical>")
    kind, version_text, canonical = parts
    if not _KIND_NAME_RE.fullmatch(kind):
        raise ValueError("malformed item: bad kind name")
    version_match = _ITEM_VERSION_RE.fullmatch(version_text)
    if version_match is None:
        raise ValueError("malformed item: bad version")
    if not canonical:
        raise ValueError("malformed item: empty canonical value")
    return kind, int(version_match.group(1)), canonical


# --------------------------------------------------------------------------
# Common checks
# --------------------------------------------------------------------------


def _prepare(kind: str, raw: str) -> str:
    """Apply the rules shared by every kind; return the stripped value."""
    if not isinstance(raw, str):
        # Only the type name: the value itself must not reach the message.
        raise InvalidIdentifier(kind, f"value must be a string, not {type(raw).__name__}")
    value = raw.strip()
    if not value:
        raise InvalidIdentifier(kind, "empty value")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(kind, f"longer than {MAX_IDENTIFIER_LENGTH} characters")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise InvalidIdentifier(kind, "contains control characters")
    return value


# --------------------------------------------------------------------------
# email
# --------------------------------------------------------------------------

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def _canonical_email(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("email", raw).lower()
    if value.count("@") != 1:
        raise InvalidIdentifier("email", "exactly one '@' required")
    local, _, domain = value.rpartition("@")
    if not local:
        raise InvalidIdentifier("email", "empty local part")
    if any(ch.isspace() for ch in local):
        # Unquoted addresses cannot contain spaces; this is a data error.
        raise InvalidIdentifier("email", "whitespace in local part")
    # NFC so that a precomposed and a decomposed accent are the same mailbox.
    local = unicodedata.normalize("NFC", local)
    domain = _email_domain(domain)
    if domain in _GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
        if not local:
            raise InvalidIdentifier("email", "empty local part after removing +tag")
    return f"{local}@{domain}"


# Pure, and a lab's emails share few domains (gmail.com...): the cache skips
# IDNA's per-character checks, a third of an email's canonicalization cost.
# Refusals raise, and raising results are not cached.
@functools.lru_cache(maxsize=16_384)
def _email_domain(domain: str) -> str:
    if not domain:
        raise InvalidIdentifier("email", "empty domain")
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        # `from None`: the library's message quotes the domain.
        raise InvalidIdentifier("email", "domain is not a valid IDNA name") from None
    # A fully qualified 'example.com.' is the same domain as 'example.com'.
    # Stripped after IDNA because UTS #46 maps other full stops (U+3002) to '.'.
    ascii_domain = ascii_domain.removesuffix(".")
    if not ascii_domain:
        raise InvalidIdentifier("email", "empty domain")
    return ascii_domain


# --------------------------------------------------------------------------
# phone
# --------------------------------------------------------------------------


_PHONE_PARSE_ERRORS: dict[int, str] = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "missing or unknown country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after international prefix",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


def _canonical_phone(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("phone", raw)
    try:
        number = phonenumbers.parse(value, ctx.default_phone_region)
    except phonenumbers.NumberParseException as exc:
        # Only the error class: the library's message may contain the input.
        reason = _PHONE_PARSE_ERRORS.get(exc.error_type, "cannot parse number")
        raise InvalidIdentifier("phone", reason) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifier("phone", "not a possible number for its country")
    canonical = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # Canonical forms must be fixed points. For some inputs libphonenumber
    # strips a national prefix after the country code ("+49 0..."), and the
    # E.164 text it prints would then canonicalize to something shorter
    # again; such a number has no stable canonical form, so refuse it.
    again = phonenumbers.parse(canonical, None)
    if phonenumbers.format_number(again, phonenumbers.PhoneNumberFormat.E164) != canonical:
        raise InvalidIdentifier("phone", "national prefix after the country code makes the number ambiguous")
    return canonical


# --------------------------------------------------------------------------
# ipv4, ipv6, ip_prefix
# --------------------------------------------------------------------------


def _canonical_ipv4(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("ipv4", raw)
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise InvalidIdentifier("ipv4", "not a dotted-quad IPv4 address") from None


def _canonical_ipv6(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("ipv6", raw)
    if "%" in value:
        raise InvalidIdentifier("ipv6", "zone index not allowed")
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidIdentifier("ipv6", "not an IPv6 address") from None
    return _ipv6_text(int(address))


def _ipv6_text(value: int) -> str:
    """RFC 5952 text of a 128-bit address, all-hex, independent of Python version."""
    groups = [f"{(value >> shift) & 0xFFFF:x}" for shift in range(112, -16, -16)]
    start, length = _longest_zero_run(groups)
    if length < 2:  # RFC 5952 4.2.2: never compress a single zero group
        return ":".join(groups)
    head = ":".join(groups[:start])
    tail = ":".join(groups[start + length:])
    return f"{head}::{tail}"


def _longest_zero_run(groups: list[str]) -> tuple[int, int]:
    """(start, length) of the first longest run of '0' groups (RFC 5952 4.2.3)."""
    best_start, best_len, run_start = -1, 0, -1
    for index, group in enumerate(groups + ["end"]):  # sentinel closes a final run
        if group == "0":
            if run_start < 0:
                run_start = index
            continue
        if run_start >= 0 and index - run_start > best_len:
            best_start, best_len = run_start, index - run_start
        run_start = -1
    return best_start, best_len


def _canonical_ip_prefix(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("ip_prefix", raw)
    if "/" not in value:
        raise InvalidIdentifier("ip_prefix", "prefix length required (e.g. /24)")
    if "%" in value:
        raise InvalidIdentifier("ip_prefix", "zone index not allowed")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidIdentifier("ip_prefix", "not an IP network in CIDR notation") from None
    if isinstance(network, ipaddress.IPv6Network):
        return f"{_ipv6_text(int(network.network_address))}/{network.prefixlen}"
    return str(network)


# --------------------------------------------------------------------------
# payment_fingerprint, device_id, account_handle
# --------------------------------------------------------------------------

_PAYMENT_RE = re.compile(r"[A-Za-z0-9_\-:.]{6,128}")
# Printable ASCII without the space: what opaque tokens (base64 included) use.
_OPAQUE_RE = re.compile(r"[!-~]+")
_HEX_TEXT_RE = re.compile(r"[0-9A-Fa-f:\-]+")
DEVICE_ID_LENGTH = (4, 256)
HANDLE_LENGTH = (1, 64)
# Matched case-insensitively. uuid.UUID() itself is too lenient to define a
# canonical form (it accepts hyphens anywhere, and int() accepts underscores),
# so only the usual textual forms are recognized.
_UUID_RE = re.compile(
    r"(?:urn:uuid:)?(?P<open>\{)?"
    r"(?P<hex>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})"
    r"(?(open)\})",
    re.IGNORECASE,
)


def _canonical_payment_fingerprint(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("payment_fingerprint", raw)
    if not _PAYMENT_RE.fullmatch(value):
        raise InvalidIdentifier(
            "payment_fingerprint", "must be 6-128 characters of A-Z a-z 0-9 _ - : ."
        )
    return value


def _canonical_device_id(raw: str, ctx: CanonicalizationContext) -> str:
    value = _prepare("device_id", raw)
    uuid_match = _UUID_RE.fullmatch(value)
    if uuid_match is not None:
        digits = uuid_match.group("hex").replace("-", "").lower()
        return "-".join(
            (digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:])
        )
    low, high = DEVICE_ID_LENGTH
    if not _OPAQUE_RE.fullmatch(value):
        raise InvalidIdentifier(
            "device_id", "only printable ASCII characters (no spaces) are allowed"
        )
    if not low <= len(value) <= high:
        raise InvalidIdentifier("device_id", f"must be {low}-{high} characters long")
    # Hex text has no meaningful case; anything else may be base64, which does.
    return value.lower() if _HEX_TEXT_RE.fullmatch(value) else value


def _canonical_account_handle(raw: str, ctx: CanonicalizationContext) -> str:
    # NFKC before removing '@' so a full-width '＠' prefix is treated like '@'.
    value = unicodedata.normalize("NFKC", _prepare("account_handle", raw))
    if value.startswith("@"):
        value = value[1:]
    if value.startswith("@"):
        raise InvalidIdentifier("account_handle", "more than one leading '@'")
    value = value.casefold()
    low, high = HANDLE_LENGTH
    if not low <= len(value) <= high or not _OPAQUE_RE.fullmatch(value):
        raise InvalidIdentifier(
            "account_handle",
            f"must be {low}-{high} printable ASCII characters (no spaces) after folding",
        )
    return value


# --------------------------------------------------------------------------
# Built-in kinds
# --------------------------------------------------------------------------

for _spec in (
    KindSpec("email", 1, _canonical_email,
             "email address; lowercased, IDNA domain, gmail dots and +tags removed"),
    KindSpec("phone", 1, _canonical_phone,
             "phone number in E.164, national numbers read in the context's region"),
    KindSpec("ipv4", 1, _canonical_ipv4, "IPv4 address in dotted-quad text"),
    KindSpec("ipv6", 1, _canonical_ipv6, "IPv6 address in RFC 5952 compressed text"),
    KindSpec("ip_prefix", 1, _canonical_ip_prefix,
             "IPv4 or IPv6 network in CIDR notation, host bits cleared"),
    KindSpec("payment_fingerprint", 1, _canonical_payment_fingerprint,
             "payment processor's card fingerprint, case-sensitive"),
    KindSpec("device_id", 2, _canonical_device_id,
             "opaque device token, case-sensitive; UUIDs and hex text lowercased"),
    KindSpec("account_handle", 1, _canonical_account_handle,
             "account handle without leading '@', NFKC-casefolded, printable ASCII"),
):
    register_kind(_spec)
del _spec
