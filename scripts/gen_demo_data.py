#!/usr/bin/env python3
"""Generate a synthetic federation of labs for the psi-share demo.

The story: a distillation campaign run by a few hundred *operators* registers
fake accounts at two or three labs each. Every lab flags its suspicious
accounts (the campaign's accounts plus local noise and a few near-miss
*decoys*) and holds a wider customer base. Each campaign account carries some
of its operator's real identifiers (payment fingerprints, an IPv4 /24 proxy
prefix, a phone, a gmail address, device ids, a handle), written the way that
lab happens to write them, so they only match after canonicalization.

Only the standard library is used, on purpose: the ground truth
(``truth.json``) comes from *construction* (which account belongs to which
operator and carries which of its identifiers), cross-checked against a small
stdlib re-implementation of the canonical forms. It never comes from
``psi_share``'s own canonicalizer, so the demo's precision/recall check
measures that canonicalizer instead of agreeing with it by definition.

What must always hold (checked before anything is written; the script fails
loudly otherwise):

* every canonical value belongs to exactly one *identity* (one operator
  identifier, or one unique value of one actor), and vice versa: nothing
  matches by accident, and every rendering of an operator identifier has the
  operator's canonical value;
* the truth computed from identities equals the truth computed from the
  canonical forms of the written values.

Determinism: day-0 data uses ``random.Random(seed)`` alone; day ``d`` of
``--day N`` adds data from ``random.Random(seed * 1000 + d)``, for d = 1..N in
turn, so day N's files contain day N-1's rows unchanged.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import random
import re
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Kinds the demo job matches on (ipv4 is written but not matched).
MATCHED_KINDS = (
    "account_handle",
    "device_id",
    "email",
    "ip_prefix",
    "payment_fingerprint",
    "phone",
)
ALL_KINDS = (
    "email",
    "phone",
    "ipv4",
    "ip_prefix",
    "payment_fingerprint",
    "device_id",
    "account_handle",
)
HEADER = ("actor_id", "kind", "value")

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# Non-gmail domains: reserved names (.example, example.*) so no real mailbox.
OTHER_DOMAINS = (
    "example.com",
    "example.net",
    "example.org",
    "mail.example",
    "inbox.example",
    "post.example",
    "corp.example",
)
FIRST = (
    "alex", "amir", "ana", "ben", "chen", "chloe", "dan", "diego", "elena",
    "emma", "farah", "felix", "grace", "hana", "ivan", "jade", "james", "jin",
    "kai", "kofi", "lara", "leo", "lina", "lucas", "maya", "mei", "nia", "noah",
    "omar", "priya", "quinn", "raj", "rosa", "sam", "sara", "taro", "uma",
    "vera", "wei", "yara", "yusuf", "zoe",
)
LAST = (
    "adams", "baker", "chen", "costa", "diaz", "evans", "fischer", "garcia",
    "haddad", "ito", "jones", "kim", "kowal", "lee", "lopez", "martin",
    "mensah", "mori", "nair", "novak", "okafor", "park", "patel", "reyes",
    "rossi", "sato", "silva", "smith", "tanaka", "usman", "vargas", "wang",
    "weber", "young", "zhang",
)
EMAIL_TAGS = ("api", "dev", "lab", "x", "bulk", "test", "work", "n1", "q7")
PAYMENT_PREFIXES = ("fp_", "pm_", "card_", "tok_", "")
ALNUM = string.ascii_letters + string.digits
PHONE_FORMATS = (
    "+1{a}{e}{l}",
    "({a}) {e}-{l}",
    "{a}-{e}-{l}",
    "+1 {a} {e} {l}",
    "{a}.{e}.{l}",
    "1-{a}-{e}-{l}",
    "+1 ({a}) {e}-{l}",
    "{a}{e}{l}",
)
CASE_MODES = ("lower", "upper", "capitalize", "mixed")
# Public-looking unicast first octets: no private, loopback, link-local,
# CGNAT, multicast, or the documentation/benchmark /8s.
IPV4_FIRST_OCTETS = tuple(
    o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192, 198, 203)
)

# Story parameters (fractions and weights, not flags).
THREE_LAB_SHARE = 0.4          # operators at three labs; the rest at two
SINGLE_KIND_SHARE = 0.3        # operators whose accounts link through one kind only
ACCOUNTS_PER_LAB = ((1, 2, 3), (55, 30, 15))
DECOYS_PER_FLAGGED = 1 / 25    # decoy actors per lab, as a share of --flagged
DAILY_CAMPAIGN_GROWTH = 0.05   # new campaign accounts per day / day-0 accounts
DAILY_NOISE_GROWTH = 0.01      # new locally-flagged noise per day / --flagged
DAILY_CUSTOMER_GROWTH = 0.005  # new ordinary customers per day / --customers
PRIMARY_WEIGHTS = {
    "payment_fingerprint": 3,
    "ip_prefix": 3,
    "device_id": 2,
    "phone": 1,
    "email": 1,
    "account_handle": 1,
}


class GenerationError(Exception):
    """The requested data cannot be generated, or a self-check failed."""


# --------------------------------------------------------------------------
# Canonical forms: a stdlib re-implementation of the matcher's rules, enough
# for every rendering this script writes (it is not a general parser).
# --------------------------------------------------------------------------

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canon_email(value: str) -> str:
    local, _, domain = value.strip().lower().rpartition("@")
    if not local or not domain:
        raise GenerationError(f"not an email: {value!r}")
    if domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def canon_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) != 10 or digits[0] in "01" or digits[3] in "01":
        raise GenerationError(f"not a US number: {value!r}")
    return "+1" + digits


def _ipv4_int(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(
        p.isdigit() and p.isascii() and (p == "0" or p[0] != "0") and int(p) <= 255 for p in parts
    ):
        raise GenerationError(f"not an IPv4 address: {text!r}")
    a, b, c, d = map(int, parts)
    return a << 24 | b << 16 | c << 8 | d


def _ipv4_text(value: int) -> str:
    return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _mask(length: int) -> int:
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF


def canon_ipv4(value: str) -> str:
    return _ipv4_text(_ipv4_int(value.strip()))


def canon_ip_prefix(value: str) -> str:
    addr, slash, length = value.strip().partition("/")
    if not slash or not length.isdigit() or not 0 <= int(length) <= 32:
        raise GenerationError(f"not an IPv4 prefix: {value!r}")
    return f"{_ipv4_text(_ipv4_int(addr) & _mask(int(length)))}/{int(length)}"


def canon_payment(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_]{16,24}", value):
        raise GenerationError(f"not a payment fingerprint: {value!r}")
    return value


def canon_device(value: str) -> str:
    # Every UUID written here is hyphenated, so lowercasing gives the
    # canonical form; other device ids are lowercased as they are.
    return value.strip().lower()


def canon_handle(value: str) -> str:
    value = value.strip()
    if value.startswith("@"):
        value = value[1:]
    return value.casefold()


CANON = {
    "email": canon_email,
    "phone": canon_phone,
    "ipv4": canon_ipv4,
    "ip_prefix": canon_ip_prefix,
    "payment_fingerprint": canon_payment,
    "device_id": canon_device,
    "account_handle": canon_handle,
}


# --------------------------------------------------------------------------
# Fast draws (random.choice/randint cost a microsecond each; the defaults
# draw a few million values)
# --------------------------------------------------------------------------


def _pick(rng: random.Random, seq):
    return seq[int(rng.random() * len(seq))]


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _pick_n(rng: random.Random, seq, count: int) -> list:
    """``count`` distinct elements of ``seq``, in random order."""
    pool = list(seq)
    for i in range(count):
        j = i + int(rng.random() * (len(pool) - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:count]


# --------------------------------------------------------------------------
# Canonical value generators (return canonical text)
# --------------------------------------------------------------------------


def _digits_suffix(rng: random.Random) -> str:
    return "" if rng.random() < 0.2 else str(_between(rng, 1, 9999))


def gen_email(rng: random.Random) -> str:
    f, l, n = _pick(rng, FIRST), _pick(rng, LAST), _digits_suffix(rng)
    if rng.random() < 0.3:
        local = _pick(rng, (f + l + n, f[0] + l + n, l + f + n, f + (n or "1")))
        return f"{local}@gmail.com"
    local = _pick(rng, 
        (f"{f}.{l}{n}", f"{f}{l}{n}", f"{f}_{l}{n}", f"{f[0]}.{l}{n}", f"{l}.{f}{n}", f"{f}{n or '1'}")
    )
    return f"{local}@{_pick(rng, OTHER_DOMAINS)}"


def gen_gmail(rng: random.Random) -> str:
    """A gmail address whose canonical local part has no dots (operators)."""
    f, l = _pick(rng, FIRST), _pick(rng, LAST)
    n = str(_between(rng, 10, 99999))
    return f"{_pick(rng, (f + l, f[0] + l, l + f, f + 'x' + l))}{n}@gmail.com"


def gen_phone(rng: random.Random) -> str:
    return f"+1{_between(rng, 200, 999)}{_between(rng, 200, 999)}{_between(rng, 0, 9999):04d}"


def _public_ipv4_int(rng: random.Random) -> int:
    bits = rng.getrandbits(24)
    first = IPV4_FIRST_OCTETS[int(rng.random() * len(IPV4_FIRST_OCTETS))]
    return first << 24 | (bits & 0xFFFF00) | (1 + (bits & 255) % 254)


def gen_ipv4(rng: random.Random) -> str:
    return _ipv4_text(_public_ipv4_int(rng))


def gen_prefix24(rng: random.Random) -> str:
    return f"{_ipv4_text(_public_ipv4_int(rng) & _mask(24))}/24"


PREFIX_LENGTHS = (24, 24, 24, 24, 24, 24, 22, 28)


def gen_ip_prefix(rng: random.Random) -> str:
    length = PREFIX_LENGTHS[int(rng.random() * len(PREFIX_LENGTHS))]
    return f"{_ipv4_text(_public_ipv4_int(rng) & _mask(length))}/{length}"


def gen_payment(rng: random.Random) -> str:
    prefix = _pick(rng, PAYMENT_PREFIXES)
    while True:
        body = "".join(rng.choices(ALNUM, k=_between(rng, 16, 24) - len(prefix)))
        if not body.isdigit():  # a letter, so a case-flipped decoy exists
            return prefix + body


def gen_device(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return f"{rng.getrandbits(64):016x}"


def gen_handle(rng: random.Random) -> str:
    f, l, n = _pick(rng, FIRST), _pick(rng, LAST), _digits_suffix(rng)
    return _pick(rng, (f + l + n, f + "_" + l + n, l + f + n, f + n + "_" + l[:3], f[0] + l + n))


GEN = {
    "email": gen_email,
    "phone": gen_phone,
    "ipv4": gen_ipv4,
    "ip_prefix": gen_ip_prefix,
    "payment_fingerprint": gen_payment,
    "device_id": gen_device,
    "account_handle": gen_handle,
}


# --------------------------------------------------------------------------
# Renderings: how a lab writes a canonical value (must canonicalize back)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabStyle:
    """Each lab has habits; a value follows them most of the time."""

    phone_format: int
    case_mode: str
    handle_at: bool
    device_upper: bool
    prefix_host_bits: bool


def lab_style(index: int) -> LabStyle:
    return LabStyle(
        phone_format=(index * 3 + 1) % len(PHONE_FORMATS),
        case_mode=CASE_MODES[index % len(CASE_MODES)],
        handle_at=index % 2 == 0,
        device_upper=index % 3 == 1,
        prefix_host_bits=index % 2 == 1,
    )


def _apply_case(text: str, mode: str, rng: random.Random) -> str:
    if mode == "upper":
        return text.upper()
    if mode == "capitalize":
        return text[:1].upper() + text[1:]
    if mode == "mixed":
        return "".join(c.upper() if rng.random() < 0.4 else c for c in text)
    return text


def _insert_dots(local: str, rng: random.Random, count: int) -> str:
    if len(local) < 2:
        return local
    slots = sorted(rng.sample(range(1, len(local)), min(count, len(local) - 1)))
    out, prev = [], 0
    for s in slots:
        out.append(local[prev:s])
        prev = s
    out.append(local[prev:])
    return ".".join(out)


class Renderer:
    """Write canonical values in a lab's style; ``strength`` is how often a
    rendering departs from the canonical text (high for campaign accounts,
    whose operators vary them on purpose)."""

    def __init__(self, style: LabStyle, strength: float):
        self.style = style
        self.p = strength

    def _habit(self, rng: random.Random) -> bool:
        return rng.random() < 0.7

    def render(self, kind: str, canon: str, rng: random.Random) -> str:
        return getattr(self, "_" + kind)(canon, rng)

    def _email(self, canon: str, rng: random.Random) -> str:
        local, _, domain = canon.rpartition("@")
        if domain == "gmail.com":
            if rng.random() < self.p:
                local = _insert_dots(local, rng, _between(rng, 1, 2))
            if rng.random() < self.p * 0.6:
                local += "+" + _pick(rng, EMAIL_TAGS)
            if rng.random() < self.p * 0.4:
                domain = "googlemail.com"
        text = f"{local}@{domain}"
        if rng.random() < self.p:
            mode = self.style.case_mode if self._habit(rng) else _pick(rng, CASE_MODES)
            text = _apply_case(text, mode, rng)
        return text

    def _phone(self, canon: str, rng: random.Random) -> str:
        d = canon[2:]
        if rng.random() < self.p:
            fmt = PHONE_FORMATS[self.style.phone_format] if self._habit(rng) else _pick(rng, PHONE_FORMATS)
        else:
            fmt = PHONE_FORMATS[0]
        return fmt.format(a=d[:3], e=d[3:6], l=d[6:])

    def _ipv4(self, canon: str, rng: random.Random) -> str:
        return canon

    def _ip_prefix(self, canon: str, rng: random.Random) -> str:
        addr, _, length = canon.partition("/")
        size = 1 << (32 - int(length))
        host_bits = self.style.prefix_host_bits if self._habit(rng) else rng.random() < 0.5
        if size > 2 and host_bits and rng.random() < max(self.p, 0.3):
            host = _ipv4_int(addr) + 1 + int(rng.random() * (size - 2))
            return f"{_ipv4_text(host)}/{length}"
        return canon

    def _payment_fingerprint(self, canon: str, rng: random.Random) -> str:
        return canon

    def _device_id(self, canon: str, rng: random.Random) -> str:
        upper = self.style.device_upper if self._habit(rng) else rng.random() < 0.5
        return canon.upper() if upper and rng.random() < max(self.p, 0.3) else canon

    def _account_handle(self, canon: str, rng: random.Random) -> str:
        text = canon
        if rng.random() < self.p:
            mode = self.style.case_mode if self._habit(rng) else _pick(rng, CASE_MODES)
            text = _apply_case(text, mode, rng)
        at = self.style.handle_at if self._habit(rng) else rng.random() < 0.5
        return "@" + text if at else text


# --------------------------------------------------------------------------
# Near misses: values that look like a match and must not be one
# --------------------------------------------------------------------------


def near_miss(kind: str, canon: str, rng: random.Random) -> str:
    """A canonical value one small, *significant* edit away from ``canon``."""
    if kind == "email":
        local, _, domain = canon.rpartition("@")
        if domain == "gmail.com":
            # the same gmail-looking local part, dotted, at a non-gmail domain
            dotted = _insert_dots(local, rng, _between(rng, 0, 1))
            return f"{dotted}@{_pick(rng, OTHER_DOMAINS)}"
        choice = rng.randrange(3)
        if choice == 0 and "." in local:  # drop the dots
            return f"{local.replace('.', '')}@{domain}"
        if choice == 1 and "." in local:  # move a dot
            plain = local.replace(".", "")
            return f"{_insert_dots(plain, rng, 1)}@{domain}"
        return f"{local}+{_pick(rng, EMAIL_TAGS)}@{domain}"  # a +tag is significant here
    if kind == "phone":
        i = rng.randrange(8, 12)  # one of the last four digits
        digit = _pick(rng, [c for c in string.digits if c != canon[i]])
        return canon[:i] + digit + canon[i + 1:]
    if kind == "ip_prefix":
        a, b, c, _ = canon.split("/")[0].split(".")
        other = _pick(rng, [x for x in range(256) if x != int(c)])
        return f"{a}.{b}.{other}.0/24"  # same /16, another /24
    if kind == "payment_fingerprint":
        letters = [i for i, ch in enumerate(canon) if ch.isalpha()]
        i = _pick(rng, letters)
        return canon[:i] + canon[i].swapcase() + canon[i + 1:]
    if kind == "device_id":
        start = len(canon) - 12 if _UUID_RE.fullmatch(canon) else 0
        i = rng.randrange(start, len(canon))
        digit = _pick(rng, [c for c in "0123456789abcdef" if c != canon[i]])
        return canon[:i] + digit + canon[i + 1:]
    if kind == "account_handle":
        if rng.random() < 0.5 and "_" in canon:
            return canon.replace("_", "", 1)
        return canon + _pick(rng, ("_", "0", "1", "x"))
    raise ValueError(kind)


def decoy_base(kind: str, rng: random.Random) -> str:
    """A fresh value suited to a near-miss pair."""
    if kind == "email":
        f, l, n = _pick(rng, FIRST), _pick(rng, LAST), _digits_suffix(rng)
        local = _pick(rng, (f"{f[0]}.{l}{n}", f"{f}.{l}{n}", f"{l}.{f}{n}"))
        return f"{local}@{_pick(rng, OTHER_DOMAINS)}"
    if kind == "ip_prefix":
        return gen_prefix24(rng)
    return GEN[kind](rng)


# --------------------------------------------------------------------------
# The federation being built
# --------------------------------------------------------------------------

Key = tuple  # ("op", op_id, slot) or ("u", n): the identity of a value by construction


@dataclass(slots=True)
class Ident:
    kind: str
    value: str  # as the lab writes it
    canon: str  # as constructed
    key: Key


@dataclass(slots=True)
class Actor:
    lab: str
    role: str  # "campaign", "decoy", "noise" (flagged) or "customer"
    day: int
    idents: list[Ident]
    operator: int | None = None
    actor_id: str = ""

    @property
    def flagged(self) -> bool:
        return self.role != "customer"


@dataclass
class Operator:
    op_id: int
    labs: list[str]
    pool: list[tuple[str, str]]  # (kind, canonical) slots
    primary: int  # slot every account carries
    single_kind: bool  # accounts carry only the primary slot of the pool
    day: int
    accounts: int = 0


@dataclass
class Federation:
    labs: list[str]
    tags: dict[str, str]
    id_space: int
    width: int
    actors: dict[str, list[Actor]] = field(default_factory=dict)
    used_ids: dict[str, set[int]] = field(default_factory=dict)
    operators: list[Operator] = field(default_factory=list)
    used: dict[tuple[str, str], Key] = field(default_factory=dict)
    next_unique: int = 0

    def __post_init__(self) -> None:
        self.actors = {lab: [] for lab in self.labs}
        self.used_ids = {lab: set() for lab in self.labs}
        styles = {lab: lab_style(i) for i, lab in enumerate(self.labs)}
        self.renderers = {
            (lab, campaign): Renderer(styles[lab], 0.8 if campaign else 0.25)
            for lab in self.labs
            for campaign in (False, True)
        }

    # -- values ------------------------------------------------------------

    def claim(self, kind: str, canon: str, key: Key | None = None) -> Key | None:
        """Reserve a canonical value federation-wide; None if already taken."""
        slot = (kind, canon)
        if slot in self.used:
            return None
        if key is None:
            key = ("u", self.next_unique)
            self.next_unique += 1
        self.used[slot] = key
        return key

    def fresh_canon(self, kind: str, rng: random.Random, maker=None) -> tuple[str, Key]:
        maker = maker or GEN[kind]
        for _ in range(1000):
            canon = maker(rng)
            key = self.claim(kind, canon)
            if key is not None:
                return canon, key
        raise GenerationError(f"could not draw a fresh {kind} value")

    def renderer(self, lab: str, campaign: bool) -> Renderer:
        return self.renderers[(lab, campaign)]

    def fresh_ident(self, kind: str, lab: str, rng: random.Random) -> Ident:
        canon, key = self.fresh_canon(kind, rng)
        return Ident(kind, self.renderer(lab, False).render(kind, canon, rng), canon, key)

    def filler(self, lab: str, rng: random.Random, count: int, exclude=()) -> list[Ident]:
        kinds = _pick_n(rng, [k for k in ALL_KINDS if k not in exclude], count)
        return [self.fresh_ident(k, lab, rng) for k in kinds]

    # -- actors ------------------------------------------------------------

    def add(self, actor: Actor) -> Actor:
        if not 2 <= len(actor.idents) <= 5:
            raise GenerationError(f"actor with {len(actor.idents)} identifiers")
        self.actors[actor.lab].append(actor)
        return actor

    def ordinary(self, lab: str, role: str, day: int, rng: random.Random) -> Actor:
        kinds = _pick_n(rng, ALL_KINDS, _between(rng, 2, 5))
        if "email" not in kinds and rng.random() < 0.8:
            kinds[0] = "email"
        return self.add(Actor(lab, role, day, [self.fresh_ident(k, lab, rng) for k in kinds]))

    def new_operator(
        self, rng: random.Random, day: int, labs: list[str] | None, single_kind: str | None
    ) -> Operator:
        op_id = len(self.operators)
        if labs is None:
            k = 3 if len(self.labs) >= 3 and rng.random() < THREE_LAB_SHARE else 2
            labs = rng.sample(self.labs, k)
        kinds = (
            ["payment_fingerprint"] * rng.randint(1, 2)
            + ["ip_prefix", "phone", "email"]
            + ["device_id"] * rng.randint(1, 2)
            + ["account_handle"]
        )
        makers = {"ip_prefix": gen_prefix24, "email": gen_gmail}
        pool = []
        for slot, kind in enumerate(kinds):
            for _ in range(1000):
                canon = makers.get(kind, GEN[kind])(rng)
                if self.claim(kind, canon, ("op", op_id, slot)) is not None:
                    break
            else:
                raise GenerationError(f"could not draw a fresh operator {kind}")
            pool.append((kind, canon))
        if single_kind is not None:
            primary = kinds.index(single_kind)
        else:
            primary = rng.choices(range(len(pool)), [PRIMARY_WEIGHTS[k] for k in kinds])[0]
        op = Operator(op_id, sorted(labs, key=self.labs.index), pool, primary, single_kind is not None, day)
        self.operators.append(op)
        return op

    def campaign_account(self, op: Operator, lab: str, day: int, rng: random.Random) -> Actor:
        render = self.renderer(lab, True)

        def slot_ident(slot: int) -> Ident:
            kind, canon = op.pool[slot]
            return Ident(kind, render.render(kind, canon, rng), canon, ("op", op.op_id, slot))

        idents = [slot_ident(op.primary)]
        if op.single_kind:
            primary_kind = op.pool[op.primary][0]
            idents += self.filler(lab, rng, rng.randint(1, 3), exclude=(primary_kind, "ipv4"))
        else:
            others = [s for s in range(len(op.pool)) if s != op.primary]
            idents += [slot_ident(s) for s in rng.sample(others, rng.randint(1, 3))]
        if len(idents) < 5 and rng.random() < 0.5:
            host = self._proxy_host(op, rng)
            if host is not None:
                idents.append(Ident("ipv4", host[0], host[0], host[1]))
        op.accounts += 1
        return self.add(Actor(lab, "campaign", day, idents, operator=op.op_id))

    def _proxy_host(self, op: Operator, rng: random.Random) -> tuple[str, Key] | None:
        """A fresh address inside the operator's proxy /24."""
        prefix = next(canon for kind, canon in op.pool if kind == "ip_prefix")
        base = prefix.split("/")[0].rsplit(".", 1)[0]
        for _ in range(50):
            addr = f"{base}.{rng.randint(1, 254)}"
            key = self.claim("ipv4", addr)
            if key is not None:
                return addr, key
        return None

    def decoy(self, lab: str, kind: str, canon: str, key: Key, day: int, rng: random.Random) -> Actor:
        ident = Ident(kind, self.renderer(lab, False).render(kind, canon, rng), canon, key)
        fill = self.filler(lab, rng, _between(rng, 1, 3), exclude=(kind,))
        return self.add(Actor(lab, "decoy", day, [ident] + fill))

    # -- actor ids ----------------------------------------------------------

    def format_id(self, lab: str, number: int) -> str:
        return f"a-{self.tags[lab]}-{number:0{self.width}d}"

    def assign_ids(self, lab: str, rng: random.Random) -> None:
        pending = [a for a in self.actors[lab] if not a.actor_id]
        free = self.id_space - len(self.used_ids[lab])
        if len(pending) > free:
            raise GenerationError(f"actor id space of {lab} exhausted")
        if not self.used_ids[lab]:
            numbers = rng.sample(range(self.id_space), len(pending))
        else:
            numbers = []
            taken = self.used_ids[lab]
            while len(numbers) < len(pending):
                n = rng.randrange(self.id_space)
                if n not in taken:
                    taken.add(n)
                    numbers.append(n)
        for actor, number in zip(pending, numbers):
            self.used_ids[lab].add(number)
            actor.actor_id = self.format_id(lab, number)


# --------------------------------------------------------------------------
# Building day 0 and the daily additions
# --------------------------------------------------------------------------


def lab_tags(labs: list[str]) -> dict[str, str]:
    """One letter per lab for actor ids: ``lab-a`` -> ``a``, ``north`` -> ``n``;
    a, b, c... by position when those would be ambiguous."""
    tags = [re.sub(r"[^a-z0-9]", "", lab.rsplit("-", 1)[-1].lower())[:1] for lab in labs]
    if any(not t for t in tags) or len(set(tags)) != len(tags):
        tags = [string.ascii_lowercase[i] if i < 26 else f"l{i}" for i in range(len(labs))]
    return dict(zip(labs, tags))


def build_day0(fed: Federation, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    labs = fed.labs
    n_ops = args.campaign_operators

    # Operators: the first ones cover every pair (and one triple) so every
    # pair of labs shares something; the first 6*m link through a single kind.
    pairs = [[a, b] for i, a in enumerate(labs) for b in labs[i + 1:]]
    forced_labs: list[list[str]] = pairs + ([labs[:3]] if len(labs) >= 3 else [])
    per_kind = max(1, round(n_ops * SINGLE_KIND_SHARE / len(MATCHED_KINDS)))
    for i in range(n_ops):
        single = MATCHED_KINDS[i % len(MATCHED_KINDS)] if i < per_kind * len(MATCHED_KINDS) else None
        fed.new_operator(rng, 0, forced_labs[i] if i < len(forced_labs) else None, single)
    for op in fed.operators:
        for lab in op.labs:
            for _ in range(rng.choices(*ACCOUNTS_PER_LAB)[0]):
                fed.campaign_account(op, lab, 0, rng)

    # Decoys: near-miss pairs between two labs' noise, and near misses of
    # campaign identifiers placed at another lab.
    decoys_total = round(args.flagged * DECOYS_PER_FLAGGED) * len(labs)
    n_pairs = decoys_total // 3
    for i in range(n_pairs):
        kind = MATCHED_KINDS[i % len(MATCHED_KINDS)]
        lab_a, lab_b = rng.sample(labs, 2)
        base, base_key = fed.fresh_canon(kind, rng, lambda r, k=kind: decoy_base(k, r))
        near, near_key = fed.fresh_canon(kind, rng, lambda r, k=kind, c=base: near_miss(k, c, r))
        fed.decoy(lab_a, kind, base, base_key, 0, rng)
        fed.decoy(lab_b, kind, near, near_key, 0, rng)
    written = sorted(
        {(ident.key, ident.kind, ident.canon, a.lab)
         for lab in labs for a in fed.actors[lab] if a.role == "campaign"
         for ident in a.idents if ident.key[0] == "op"}
    )
    seen_at: dict[tuple, set[str]] = {}
    for key, kind, canon, lab in written:
        seen_at.setdefault((key, kind, canon), set()).add(lab)
    by_kind: dict[str, list[tuple]] = {k: [] for k in MATCHED_KINDS}
    for item in sorted(seen_at):
        by_kind[item[1]].append(item)
    for i in range(decoys_total - 2 * n_pairs):
        kind = MATCHED_KINDS[i % len(MATCHED_KINDS)]
        if not by_kind[kind]:
            continue
        item = rng.choice(by_kind[kind])
        elsewhere = [lab for lab in labs if lab not in seen_at[item]] or labs
        near, near_key = fed.fresh_canon(kind, rng, lambda r, k=kind, c=item[2]: near_miss(k, c, r))
        fed.decoy(rng.choice(elsewhere), kind, near, near_key, 0, rng)

    # Fill each lab: local noise up to --flagged, ordinary customers up to --customers.
    for lab in labs:
        flagged = sum(1 for a in fed.actors[lab] if a.flagged)
        if flagged > args.flagged:
            raise GenerationError(
                f"{lab}: {flagged} campaign and decoy actors exceed --flagged {args.flagged}; "
                "raise --flagged or lower --campaign-operators"
            )
        for _ in range(args.flagged - flagged):
            fed.ordinary(lab, "noise", 0, rng)
        for _ in range(args.customers - args.flagged):
            fed.ordinary(lab, "customer", 0, rng)
    for lab in labs:
        fed.assign_ids(lab, rng)


def add_day(fed: Federation, args: argparse.Namespace, day: int, day0_accounts: int) -> None:
    """New campaign accounts registered on ``day``, plus some ordinary churn
    so that new actor ids are not all campaign accounts."""
    rng = random.Random(args.seed * 1000 + day)
    target = max(1, round(day0_accounts * DAILY_CAMPAIGN_GROWTH))
    added = 0
    while added < target:
        expandable = [op for op in fed.operators if len(op.labs) < len(fed.labs)]
        if expandable and rng.random() < 0.5:
            op = rng.choice(expandable)  # an existing operator reaches a new lab
            lab = rng.choice([lab for lab in fed.labs if lab not in op.labs])
            op.labs = sorted(op.labs + [lab], key=fed.labs.index)
            for _ in range(rng.choices((1, 2), (70, 30))[0]):
                fed.campaign_account(op, lab, day, rng)
                added += 1
        else:
            single = rng.choice(MATCHED_KINDS) if rng.random() < SINGLE_KIND_SHARE else None
            op = fed.new_operator(rng, day, None, single)
            for lab in op.labs:
                for _ in range(rng.choices(*ACCOUNTS_PER_LAB)[0]):
                    fed.campaign_account(op, lab, day, rng)
                    added += 1
    for lab in fed.labs:
        for _ in range(round(args.flagged * DAILY_NOISE_GROWTH)):
            fed.ordinary(lab, "noise", day, rng)
        for _ in range(round(args.customers * DAILY_CUSTOMER_GROWTH)):
            fed.ordinary(lab, "customer", day, rng)
    for lab in fed.labs:
        fed.assign_ids(lab, rng)


# --------------------------------------------------------------------------
# Ground truth and the self-checks
# --------------------------------------------------------------------------


def compute_shared(fed: Federation, token, max_day: int) -> dict[str, dict[str, set[str]]]:
    """For each lab L and other lab M: L's flagged ids sharing a token with M's flagged."""
    where: dict[object, set[str]] = {}
    for lab in fed.labs:
        for actor in fed.actors[lab]:
            if actor.role != "customer" and actor.day <= max_day:
                for ident in actor.idents:
                    if ident.kind in MATCHED_KINDS:
                        where.setdefault(token(ident), set()).add(lab)
    shared = {lab: {m: set() for m in fed.labs if m != lab} for lab in fed.labs}
    for lab in fed.labs:
        for actor in fed.actors[lab]:
            if actor.role != "customer" and actor.day <= max_day:
                for ident in actor.idents:
                    if ident.kind in MATCHED_KINDS:
                        for other in where[token(ident)] - {lab}:
                            shared[lab][other].add(actor.actor_id)
    return shared


def by_construction(ident: Ident) -> Key:
    return ident.key


def by_canonical_form(ident: Ident) -> tuple[str, str]:
    return ident.kind, CANON[ident.kind](ident.value)


def verify(fed: Federation) -> None:
    """Fail loudly unless canonical forms and construction tell the same story."""
    canonical: dict[int, tuple[str, str]] = {}  # id(ident) -> canonical form of what is written
    canon_to_key: dict[tuple[str, str], Key] = {}
    key_to_canon: dict[Key, tuple[str, str]] = {}
    unique_seen: set[Key] = set()
    for lab in fed.labs:
        for actor in fed.actors[lab]:
            if not actor.actor_id:
                raise GenerationError("actor without an id")
            for ident in actor.idents:
                if not ident.value or ident.value != ident.value.strip() or "," in ident.value:
                    raise GenerationError(f"bad rendering {ident.value!r}")
                canon = canonical[id(ident)] = by_canonical_form(ident)
                if canon[1] != ident.canon:
                    raise GenerationError(
                        f"{ident.kind} {ident.value!r} canonicalizes to {canon[1]!r}, "
                        f"built as {ident.canon!r}"
                    )
                if canon_to_key.setdefault(canon, ident.key) != ident.key:
                    raise GenerationError(f"accidental overlap on {canon}")
                if key_to_canon.setdefault(ident.key, canon) != canon:
                    raise GenerationError(f"identity {ident.key} has two canonical forms")
                if ident.key[0] == "u":
                    if ident.key in unique_seen:
                        raise GenerationError(f"unique value reused: {canon}")
                    unique_seen.add(ident.key)
                elif actor.role != "campaign" or actor.operator != ident.key[1]:
                    raise GenerationError(f"operator value outside its operator: {canon}")
    # With the bijection above the two truths agree on any subset of days;
    # compare them on the two days truth.json reports.
    last_day = max((a.day for lab in fed.labs for a in fed.actors[lab]), default=0)
    for day in sorted({max(last_day - 1, 0), last_day}):
        by_canon = compute_shared(fed, lambda ident: canonical[id(ident)], day)
        if compute_shared(fed, by_construction, day) != by_canon:
            raise GenerationError(f"truth by construction and by canonical form differ (day {day})")


def sole_link_kinds(fed: Federation) -> set[str]:
    """Kinds that are the only link between some flagged actor and some other lab."""
    where: dict[Key, set[str]] = {}
    for lab in fed.labs:
        for actor in fed.actors[lab]:
            if actor.flagged:
                for ident in actor.idents:
                    if ident.kind in MATCHED_KINDS:
                        where.setdefault(ident.key, set()).add(lab)
    found = set()
    for lab in fed.labs:
        for actor in fed.actors[lab]:
            if not actor.flagged:
                continue
            for other in fed.labs:
                if other == lab:
                    continue
                kinds = {i.kind for i in actor.idents if i.kind in MATCHED_KINDS and other in where[i.key]}
                if len(kinds) == 1:
                    found |= kinds
    return found


# --------------------------------------------------------------------------
# Usage amounts (for intersection-sum and federation totals)
# --------------------------------------------------------------------------

# The one kind the usage files carry, and the amount column they add: API
# requests in the last 30 days. One row per actor (its first identifier of
# the kind), so an actor's traffic is never counted twice.
USAGE_KIND = "payment_fingerprint"
USAGE_HEADER = ("actor_id", "kind", "value", "amount")


def usage_rows(fed: Federation, args: argparse.Namespace) -> dict[str, list[tuple[Actor, Ident, int]]]:
    """Per lab: (actor, identifier, API requests). A separate RNG, so adding
    usage never changes the identifiers the main RNG draws."""
    rng = random.Random(args.seed * 7919 + 17)
    out: dict[str, list[tuple[Actor, Ident, int]]] = {}
    for lab in fed.labs:
        rows = out[lab] = []
        for actor in sorted(fed.actors[lab], key=lambda a: a.actor_id):
            idents = sorted((i for i in actor.idents if i.kind == USAGE_KIND), key=lambda i: i.value)
            if not idents:
                continue
            heavy = actor.role == "campaign"
            rows.append((actor, idents[0], rng.randrange(20_000, 400_000) if heavy else rng.randrange(0, 3_000)))
    return out


def usage_truth(fed: Federation, usage: dict[str, list[tuple[Actor, Ident, int]]]) -> dict:
    """For each (matcher, value holder): the intersection-sum of the matcher's
    flagged identifiers of USAGE_KIND with the holder's usage rows, by
    construction (identity keys), and each lab's local figures."""
    flagged_keys = {
        lab: {i.key for a in fed.actors[lab] if a.flagged for i in a.idents if i.kind == USAGE_KIND}
        for lab in fed.labs
    }
    pairs: dict[str, dict[str, dict[str, int]]] = {}
    for matcher in fed.labs:
        pairs[matcher] = {}
        for holder in fed.labs:
            if holder == matcher:
                continue
            values: dict[Key, int] = {}
            for _, ident, amount in usage[holder]:
                values[ident.key] = values.get(ident.key, 0) + amount
            hit = [k for k in values if k in flagged_keys[matcher]]
            pairs[matcher][holder] = {"count": len(hit), "sum": sum(values[k] for k in hit)}
    return {
        "kind": USAGE_KIND,
        "intersection_sum": pairs,
        "flagged_requests": {lab: sum(a for actor, _, a in usage[lab] if actor.flagged) for lab in fed.labs},
    }


def truth_document(fed: Federation, args: argparse.Namespace) -> dict:
    shared = compute_shared(fed, by_construction, args.day)
    previous = compute_shared(fed, by_construction, args.day - 1) if args.day > 0 else None
    labs = {}
    for lab in fed.labs:
        actors = fed.actors[lab]
        entry = {
            "flagged": sum(1 for a in actors if a.flagged),
            "customers": len(actors),
            "campaign_accounts": sum(1 for a in actors if a.role == "campaign"),
            "decoy_actors": sum(1 for a in actors if a.role == "decoy"),
            "shared_with": {m: sorted(ids) for m, ids in shared[lab].items()},
            "seen_at_2_or_more": sorted(
                a.actor_id for a in actors
                if a.flagged and sum(a.actor_id in ids for ids in shared[lab].values()) >= 2
            ),
        }
        if previous is not None:
            entry["new_since_previous_day"] = {
                "flagged": sorted(a.actor_id for a in actors if a.flagged and a.day == args.day),
                "shared_with": {m: sorted(shared[lab][m] - previous[lab][m]) for m in shared[lab]},
            }
        labs[lab] = entry
    at_labs: dict[str, int] = {}
    for op in fed.operators:
        at_labs[str(len(op.labs))] = at_labs.get(str(len(op.labs)), 0) + 1
    doc = {
        "seed": args.seed,
        "day": args.day,
        "kinds": list(MATCHED_KINDS),
        "labs": labs,
        "campaign": {
            "operators": len(fed.operators),
            "accounts": sum(op.accounts for op in fed.operators),
            "operators_by_lab_count": at_labs,
        },
    }
    if args.day > 0:
        doc["previous_day"] = args.day - 1
    return doc


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

README = """\
Synthetic psi-share demo data (seed {seed}, day {day}), made by scripts/gen_demo_data.py \
with the standard library only. Each lab directory ({labs}) holds customers.csv (the lab's \
whole account base) and flagged.csv (its suspicious actors; every flagged actor is also in \
customers.csv with the same identifiers), both in long form with the header \
actor_id,kind,value: one identifier per row, 2 to 5 rows per actor, kinds email, phone, ipv4, \
ip_prefix, payment_fingerprint, device_id and account_handle. Actor ids are opaque per lab. \
Among the flagged actors are accounts of a distillation campaign whose operators registered at \
two or three labs and reuse payment fingerprints, proxy /24 prefixes, phones, gmail addresses, \
device ids and handles, written differently at each lab (case, gmail dots and +tags, \
googlemail.com, national phone formats, host bits in prefixes, uppercase UUIDs, @handles) so \
they only match after canonicalization; the rest are local noise and decoys that look like \
matches but are not (dots or +tags at non-gmail domains, a neighbouring /24, a payment \
fingerprint differing in case, a phone one digit off). Ordinary values are unique across the \
federation. truth.json gives, for each lab and each other lab, the sorted flagged actor ids \
that share at least one canonical identifier of the matched kinds (all but ipv4) with a flagged \
actor there, and the ids seen at two or more other labs; it comes from construction and is \
cross-checked against canonical forms. usage.csv (header actor_id,kind,value,amount) gives each actor that has a payment fingerprint its API requests of the last 30 days, on one row (its first payment fingerprint), for intersection-sum; truth.json's "usage" section gives, per (matcher, value holder) pair, the count and sum over the matcher's flagged fingerprints, and each lab's total over its own flagged actors.
"""


def write_csv(path: Path, actors: list[Actor]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        for actor in sorted(actors, key=lambda a: a.actor_id):
            for ident in sorted(actor.idents, key=lambda i: (i.kind, i.value)):
                writer.writerow((actor.actor_id, ident.kind, ident.value))


def write_usage(path: Path, rows: list[tuple[Actor, Ident, int]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(USAGE_HEADER)
        for actor, ident, amount in rows:
            writer.writerow((actor.actor_id, ident.kind, ident.value, amount))


def write_output(fed: Federation, args: argparse.Namespace, truth: dict) -> None:
    out = Path(args.out)
    usage = usage_rows(fed, args)
    truth["usage"] = usage_truth(fed, usage)
    for lab in fed.labs:
        lab_dir = out / lab
        lab_dir.mkdir(parents=True, exist_ok=True)
        write_csv(lab_dir / "customers.csv", fed.actors[lab])
        write_csv(lab_dir / "flagged.csv", [a for a in fed.actors[lab] if a.flagged])
        write_usage(lab_dir / "usage.csv", usage[lab])
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(
        README.format(seed=args.seed, day=args.day, labs=", ".join(fed.labs)), encoding="utf-8"
    )


def summary(truth: dict, sole: set[str], elapsed: float, out: str) -> str:
    labs = list(truth["labs"])
    lines = [
        f"gen_demo_data: seed {truth['seed']}, day {truth['day']}, "
        f"{truth['campaign']['operators']} operators, {truth['campaign']['accounts']} campaign accounts "
        f"-> {out} ({elapsed:.2f} s)",
        f"{'lab':<12}{'customers':>10}{'flagged':>9}{'campaign':>10}{'decoys':>8}"
        + "".join(f"{'~' + m:>10}" for m in labs) + f"{'>=2 labs':>10}",
    ]
    for lab, entry in truth["labs"].items():
        cells = "".join(
            f"{len(entry['shared_with'][m]) if m != lab else '-':>10}" for m in labs
        )
        lines.append(
            f"{lab:<12}{entry['customers']:>10}{entry['flagged']:>9}{entry['campaign_accounts']:>10}"
            f"{entry['decoy_actors']:>8}{cells}{len(entry['seen_at_2_or_more']):>10}"
        )
    lines.append("kinds that alone link some actor to another lab: " + ", ".join(sorted(sole)))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--labs", default="lab-a,lab-b,lab-c", help="comma-separated lab names")
    parser.add_argument("--customers", type=int, default=30000, help="customer actors per lab (day 0)")
    parser.add_argument("--flagged", type=int, default=3000, help="flagged actors per lab (day 0)")
    parser.add_argument("--campaign-operators", type=int, default=400)
    parser.add_argument("--day", type=int, default=0, help="add N days of new campaign accounts")
    args = parser.parse_args(argv)
    args.labs = [lab.strip() for lab in args.labs.split(",") if lab.strip()]
    if len(args.labs) < 2 or len(set(args.labs)) != len(args.labs):
        parser.error("--labs needs at least two distinct names")
    for lab in args.labs:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", lab):
            parser.error(f"bad lab name {lab!r}")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.customers < args.flagged or args.flagged < 0:
        parser.error("need 0 <= --flagged <= --customers")
    if args.campaign_operators < 0 or args.day < 0:
        parser.error("--campaign-operators and --day must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    # Hundreds of thousands of small objects and no reference cycles worth
    # collecting: the cyclic GC would only rescan them (it costs ~40% here).
    gc.disable()
    id_space = max(10**6, 10 ** math.ceil(math.log10(max(args.customers, 1) * 20)))
    fed = Federation(args.labs, lab_tags(args.labs), id_space, len(str(id_space - 1)))
    try:
        build_day0(fed, args)
        day0_accounts = sum(op.accounts for op in fed.operators)
        for day in range(1, args.day + 1):
            add_day(fed, args, day, day0_accounts)
        verify(fed)
        sole = sole_link_kinds(fed)
        if args.campaign_operators >= len(MATCHED_KINDS) and sole != set(MATCHED_KINDS):
            raise GenerationError(f"some kinds never link alone: {set(MATCHED_KINDS) - sole}")
        truth = truth_document(fed, args)
    except GenerationError as exc:
        print(f"gen_demo_data: error: {exc}", file=sys.stderr)
        return 1
    write_output(fed, args, truth)
    print(summary(truth, sole, time.perf_counter() - started, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
