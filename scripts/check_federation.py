"""Four labs, real nodes, mutual TLS, default config: does every pair match exactly?

Each lab gets about 4,300 identifiers of every kind, written the way real
exports write them (case, spacing, gmail dots and +tags, national phone
formats, host bits in prefixes, UUIDs in braces...). Some identifiers are
shared by two, three or four labs, some actors at one lab share an identifier,
and near misses that must *not* match are planted (a dot in a non-gmail
address, a payment fingerprint or base64 device token differing only in case,
a /23 next to a /24).

The ground truth comes from how the data was generated, with plain Python
sets: every identifier is drawn from an *entity* (one mailbox, one number,
one card...), and two rows match exactly when they come from the same entity.
Nothing here calls psi_share to decide what should match; psi_share's
canonicalization has to find the same answer on its own.

Then every lab serves (a real gRPC server on 127.0.0.1 port 0, certificates
from one federation CA), every lab matches against every other lab, on every
kind, in reveal mode (which of my actors the peer also has) and in count mode
(the cardinality protocol: how many of my items the peer holds), and
precision and recall are printed per ordered pair. A count is released with
the default ``[privacy]`` noise (discrete Laplace, scale 1 / epsilon_per_release,
so 2), so for counts the noise is printed and must stay within 20 scales (a
chance of about e^-20 to exceed it); precision and recall are for reveal mode.

Config: what ``psi-share init`` writes, plus ``[policy.peers.NAME] reveal =
true`` for each other lab (by default a peer learns counts only, and a count
has no precision to measure).

    python scripts/check_federation.py [--labs 4] [--identifiers 4300] [--seed 12] [--json] [--no-count]

Exit status 0 when every pair has precision 1.0 and recall >= 0.99 and every
count is within its noise bound; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ipaddress
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("account_handle", "device_id", "email", "ip_prefix", "ipv4", "ipv6", "payment_fingerprint", "phone")
# How often each kind is drawn for an identifier (roughly what trust-and-safety exports hold).
KIND_WEIGHTS = {"email": 30, "phone": 15, "ipv4": 12, "ip_prefix": 8, "ipv6": 5,
                "payment_fingerprint": 10, "device_id": 12, "account_handle": 8}
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64 = _ALNUM + "+/"


# -- entities: one real-world identifier each, and the ways exports write it ------------


@dataclass(frozen=True)
class Entity:
    """One identifier in the world. ``spell(rng)`` writes it as some export would;
    every spelling is the same identifier (it must match itself)."""

    id: str  # unique per entity: the ground truth compares these
    kind: str
    spell: Callable[[random.Random], str] = field(compare=False, repr=False)


def _mixed_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def _pad(rng: random.Random, text: str) -> str:
    return rng.choice(["", " ", "  "]) + text + rng.choice(["", " "])


def _email(n: int, rng: random.Random) -> Entity:
    if rng.random() < 0.3:  # gmail: dots and +tags mean nothing, googlemail.com is gmail.com
        local = f"op{n}x{rng.randrange(10**6)}"

        def spell(r: random.Random) -> str:
            dotted = "".join(c + ("." if r.random() < 0.15 and i < len(local) - 1 else "") for i, c in enumerate(local))
            tag = r.choice(["", "", f"+{r.choice(['promo', 'x1', 'bot'])}"])
            return _pad(r, _mixed_case(r, f"{dotted}{tag}@{r.choice(['gmail.com', 'googlemail.com', 'GMail.com'])}"))
        return Entity(f"email:gmail:{local}", "email", spell)
    local, domain = f"user{n}.k{rng.randrange(10**6)}", f"mail{n % 97}.example.org"

    def spell(r: random.Random) -> str:
        return _pad(r, _mixed_case(r, f"{local}@{domain}" + r.choice(["", "", "."])))  # trailing dot: same domain
    return Entity(f"email:{local}@{domain}", "email", spell)


def _phone(n: int, rng: random.Random) -> Entity:
    if rng.random() < 0.2:  # London numbers, always written with +44
        digits = f"20{7000_0000 + n:08d}"

        def spell(r: random.Random) -> str:
            return r.choice([f"+44{digits}", f"+44 {digits[:2]} {digits[2:6]} {digits[6:]}",
                             f"+44-{digits[:2]}-{digits[2:6]}-{digits[6:]}"])
        return Entity(f"phone:+44{digits}", "phone", spell)
    area = (212, 415, 646, 312, 617)[n % 5]
    exchange, line = 200 + (n // 5) % 800, (n // 4000) * 1000 + rng.randrange(1000)
    a, e, li = f"{area}", f"{exchange}", f"{line:04d}"

    def spell(r: random.Random) -> str:
        return r.choice([f"({a}) {e}-{li}", f"{a}.{e}.{li}", f"+1 {a} {e} {li}", f"+1-{a}-{e}-{li}", f"+1{a}{e}{li}",
                         f"{a}{e}{li}"])
    return Entity(f"phone:+1{a}{e}{li}", "phone", spell)


def _ipv4(n: int, rng: random.Random) -> Entity:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + n * 7 + rng.randrange(7))
    return Entity(f"ipv4:{address}", "ipv4", lambda r: _pad(r, str(address)))


def _ipv6(n: int, rng: random.Random) -> Entity:
    address = ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd01::")) + (n << 16) + rng.randrange(1, 1 << 16))

    def spell(r: random.Random) -> str:
        return r.choice([str(address), address.exploded, address.exploded.upper(), str(address).upper()])
    return Entity(f"ipv6:{address}", "ipv6", spell)


def _ip_prefix(n: int, rng: random.Random) -> Entity:
    if rng.random() < 0.25:
        net6 = ipaddress.IPv6Network((int(ipaddress.IPv6Address("fd00::")) + (n << 80), 48))

        def spell6(r: random.Random) -> str:
            host = net6.network_address + r.randrange(1 << 16)  # host bits set: the same /48
            return r.choice([f"{host}/48", f"{host.exploded.upper()}/48"])
        return Entity(f"ip_prefix:{net6}", "ip_prefix", spell6)
    net = ipaddress.IPv4Network((int(ipaddress.IPv4Address("10.0.0.0")) + (n << 8), 24))

    def spell(r: random.Random) -> str:
        return f"{net.network_address + r.randrange(256)}/24"  # host bits set: the same /24
    return Entity(f"ip_prefix:{net}", "ip_prefix", spell)


def _payment(n: int, rng: random.Random) -> Entity:
    token = "fp_" + "".join(rng.choice(_ALNUM) for _ in range(20)) + f"{n:05d}"
    return Entity(f"payment_fingerprint:{token}", "payment_fingerprint", lambda r: _pad(r, token))


def _device(n: int, rng: random.Random) -> Entity:
    if rng.random() < 0.5:  # a UUID: any case, braces, urn, no hyphens
        u = uuid.UUID(int=rng.getrandbits(128) ^ n)

        def spell(r: random.Random) -> str:
            return r.choice([str(u), str(u).upper(), f"{{{u}}}", f"urn:uuid:{u}", u.hex, u.hex.upper()])
        return Entity(f"device_id:uuid:{u}", "device_id", spell)
    token = "".join(rng.choice(_B64) for _ in range(22)) + f"{n:05d}=="  # base64: case matters
    return Entity(f"device_id:{token}", "device_id", lambda r: token)


def _handle(n: int, rng: random.Random) -> Entity:
    name = f"hydra_{n}_{''.join(rng.choice('abcdefghjk') for _ in range(4))}"

    def spell(r: random.Random) -> str:
        return r.choice(["", "@"]) + _mixed_case(r, name)
    return Entity(f"account_handle:{name}", "account_handle", spell)


MAKERS: dict[str, Callable[[int, random.Random], Entity]] = {
    "email": _email, "phone": _phone, "ipv4": _ipv4, "ipv6": _ipv6, "ip_prefix": _ip_prefix,
    "payment_fingerprint": _payment, "device_id": _device, "account_handle": _handle,
}


def _near_miss(entity: Entity, n: int, rng: random.Random) -> Entity | None:
    """An entity that looks like ``entity`` but is another identifier, or None."""
    kind, key = entity.kind, entity.id.split(":", 1)[1]
    if kind == "email" and not key.startswith("gmail:"):
        local, domain = key.split("@")
        other = local.replace(".", "", 1)  # outside gmail, a dot is significant
        return Entity(f"email:{other}@{domain}", "email", lambda r: f"{other}@{domain}")
    if kind == "payment_fingerprint":
        other = key.swapcase()  # fingerprints are case-sensitive
        return Entity(f"payment_fingerprint:{other}", kind, lambda r: other)
    if kind == "device_id" and not key.startswith("uuid:"):
        other = key.swapcase()  # base64 tokens are case-sensitive
        return Entity(f"device_id:{other}", kind, lambda r: other)
    if kind == "ip_prefix" and "." in key:
        other = ipaddress.IPv4Network(key).supernet()  # the /23 around a /24 is another prefix
        if other.prefixlen == 23:
            return Entity(f"ip_prefix:{other}", kind, lambda r: str(other))
    return None


# -- the federation's data ---------------------------------------------------------------


@dataclass
class LabData:
    name: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # actor_id, kind, value as exported
    truth_rows: list[tuple[str, str, str]] = field(default_factory=list)  # actor_id, kind, entity id

    def entities(self, kinds: tuple[str, ...] = KINDS) -> set[str]:
        return {e for _, k, e in self.truth_rows if k in kinds}


@dataclass
class Generated:
    labs: dict[str, LabData]
    shared: int  # entities held by two or more labs
    near_misses: int


def generate(names: list[str], per_lab: int, seed: int) -> Generated:
    """Each lab's rows (about ``per_lab`` identifiers) and what each row is."""
    rng = random.Random(seed)
    counter = iter(range(10**9))
    kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())

    def fresh(kind: str | None = None) -> Entity:
        while True:
            entity = MAKERS[kind or rng.choices(kinds, weights)[0]](next(counter), rng)
            if entity.id not in seen:
                seen.add(entity.id)
                return entity

    seen: set[str] = set()
    labs = {n: LabData(n) for n in names}
    holdings: dict[str, list[Entity]] = {n: [] for n in names}
    # Shared: about 12% of each lab's identifiers come from entities held by 2 to all labs.
    shared = int(per_lab * 0.12 * len(names) / 2.5)
    for _ in range(shared):
        entity = fresh()
        for lab in rng.sample(names, min(len(names), rng.choice([2, 2, 2, 3, 3, len(names)]))):
            holdings[lab].append(entity)
    # Near misses: a lab holds an entity, another lab something that looks the same but is not.
    misses = 0
    for _ in range(per_lab // 40):
        entity = fresh(rng.choice(["email", "payment_fingerprint", "device_id", "ip_prefix"]))
        other = _near_miss(entity, next(counter), rng)
        if other is None or other.id in seen:
            continue
        seen.add(other.id)
        a, b = rng.sample(names, 2)
        holdings[a].append(entity)
        holdings[b].append(other)
        misses += 1
    for name in names:
        while len(holdings[name]) < per_lab:
            holdings[name].append(fresh())
        _assign_actors(labs[name], holdings[name], rng)
    return Generated(labs, shared, misses)


def _assign_actors(lab: LabData, entities: list[Entity], rng: random.Random) -> None:
    """Group a lab's identifiers into actors of 1 to 4; some identifiers are held by two
    actors, and some actors list one identifier twice (written differently)."""
    rng.shuffle(entities)
    previous: list[tuple[str, str, str]] = []  # the previous actor's (kind, value, entity id)
    i, actor = 0, 0
    while i < len(entities):
        size = rng.choice([1, 1, 2, 2, 3, 4])
        actor_id = f"{lab.name}-actor-{actor:05d}"
        held = []
        for entity in entities[i:i + size]:
            held.append((entity.kind, entity.spell(rng), entity.id))
            if rng.random() < 0.03:  # the same identifier again, spelled another way
                held.append((entity.kind, entity.spell(rng), entity.id))
        if previous and rng.random() < 0.04:  # shares an identifier with the previous actor
            held.append(rng.choice(previous))
        for kind, value, entity_id in held:
            lab.rows.append((actor_id, kind, value))
            lab.truth_rows.append((actor_id, kind, entity_id))
        previous = held
        i += size
        actor += 1


def truth_matches(requester: LabData, responder: LabData, kinds: tuple[str, ...] = KINDS) -> set[tuple[str, str]]:
    """(actor, kind) of the requester's rows whose entity the responder holds."""
    theirs = responder.entities(kinds)
    return {(a, k) for a, k, e in requester.truth_rows if k in kinds and e in theirs}


def truth_count(requester: LabData, responder: LabData, kinds: tuple[str, ...] = KINDS) -> int:
    """How many distinct identifiers of the requester's the responder holds."""
    return len(requester.entities(kinds) & responder.entities(kinds))


def write_rows(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actor_id", "kind", "value"])
        writer.writerows(rows)
    return path


# -- running it on real nodes ------------------------------------------------------------


@dataclass(frozen=True)
class PairResult:
    requester: str
    responder: str
    mode: str
    requester_items: int
    predicted: int
    truth: int
    true_positives: int
    seconds: float
    scale: float = 0.0  # count mode: the responder's noise scale (0: exact)

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.truth if self.truth else 1.0

    @property
    def ok(self) -> bool:
        if self.mode == "count":  # a noised count: within 20 scales of the truth (exact without noise)
            return abs(self.predicted - self.truth) <= 20 * self.scale
        return self.precision == 1.0 and self.recall >= 0.99


@contextlib.contextmanager
def running_federation(root: Path, generated: Generated) -> Iterator[dict[str, object]]:
    """Every lab as a real node: its own home, a certificate from one federation CA,
    its data imported into ``flagged``, serving on 127.0.0.1 port 0, every other lab a peer."""
    from psi_share import Node, init_home
    from psi_share.pki import init_ca, issue_node

    names = list(generated.labs)
    ca = init_ca(root / "federation-ca", "check_federation CA")
    nodes: dict[str, Node] = {}
    servers = []
    try:
        for name in names:
            issued = root / "issued" / name
            issue_node(ca, name, issued, addresses=["127.0.0.1"])
            home = init_home(root / name, name, "127.0.0.1:0", tls_from=issued)
            with home.config_path.open("a", encoding="utf-8") as fh:  # the members see each other's matches
                fh.writelines(f"\n[policy.peers.{peer}]\nreveal = true\n" for peer in names if peer != name)
            nodes[name] = Node.open(home.path)
            nodes[name].import_file("flagged", write_rows(root / f"{name}.csv", generated.labs[name].rows), None)
        ports = {}
        for name in names:
            server = nodes[name].serve("127.0.0.1:0")
            servers.append(server)
            ports[name] = server.port
        for name, node in nodes.items():
            for peer in names:
                if peer != name:
                    node.store.add_peer(peer, f"127.0.0.1:{ports[peer]}", now=node.clock())
        yield nodes  # type: ignore[misc]
    finally:
        for server in servers:
            server.stop(grace=1)
        for node in nodes.values():
            node.close()


def match_pair(nodes, generated: Generated, requester: str, responder: str, mode: str) -> PairResult:  # type: ignore[no-untyped-def]
    """``requester`` matches against ``responder`` on every kind; scored against the truth."""
    from psi_share import Mode

    node, want = nodes[requester], generated.labs[requester]
    started = time.perf_counter()
    outcome = node.match(responder, kinds=list(KINDS), mode=Mode(mode))
    seconds = time.perf_counter() - started
    if mode == "count":
        truth, got = truth_count(want, generated.labs[responder]), outcome.count or 0
        privacy = nodes[responder].config.privacy
        scale = 1 / privacy.epsilon_per_release if privacy.enabled else 0.0
        return PairResult(requester, responder, mode, outcome.requester_set_size, got, truth, min(got, truth), seconds,
                          scale)
    expected = truth_matches(want, generated.labs[responder])
    found = {(m.actor_id, m.kind) for m in node.store.matches([outcome.session_id])}
    return PairResult(requester, responder, mode, outcome.requester_set_size, len(found), len(expected),
                      len(found & expected), seconds)


def filter_kinds(nodes) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """Which filters each lab served (from its audit log's disclosures)."""
    from psi_share.audit.log import load_entries

    out = {}
    for name, node in nodes.items():
        out[name] = {e["result"]["filter"] for e in load_entries(node.home.audit_path)
                     if e["type"] == "disclosure" and "filter" in e.get("result", {})}
    return out


def run(root: Path, names: list[str], per_lab: int, seed: int, *, count: bool = True,
        check: bool = True) -> dict[str, object]:
    """Generate, serve, match every ordered pair; the figures as a dict."""
    generated = generate(names, per_lab, seed)
    report: dict[str, object] = {
        "labs": {n: {"rows": len(d.rows), "actors": len({a for a, _, _ in d.rows}), "identifiers": len(d.entities())}
                 for n, d in generated.labs.items()},
        "shared_identifiers": generated.shared, "near_misses": generated.near_misses,
    }
    results: list[PairResult] = []
    with running_federation(root, generated) as nodes:
        if check:
            from psi_share.node.checks import check_peers, exit_code

            report["peers_check_exit"] = {n: exit_code(check_peers(node, sizes=())) for n, node in nodes.items()}
        for mode in ("reveal", "count") if count else ("reveal",):
            for a in names:
                for b in names:
                    if a != b:
                        results.append(match_pair(nodes, generated, a, b, mode))
        report["filters_served"] = {n: sorted(k) for n, k in filter_kinds(nodes).items()}
    report["pairs"] = [dict(r.__dict__, precision=r.precision, recall=r.recall, ok=r.ok) for r in results]
    report["ok"] = all(r.ok for r in results)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", type=int, default=4)
    parser.add_argument("--identifiers", type=int, default=4300, help="identifiers per lab")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--no-count", action="store_true", help="reveal mode only")
    parser.add_argument("--no-check", action="store_true", help="skip peers check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 2 <= args.labs <= 26:
        parser.error("--labs: 2 to 26")
    names = [f"lab-{chr(ord('a') + i)}" for i in range(args.labs)]
    with tempfile.TemporaryDirectory(prefix="check-federation-") as tmp:
        report = run(Path(tmp), names, args.identifiers, args.seed, count=not args.no_count, check=not args.no_check)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0 if report["ok"] else 1
    for name, sizes in report["labs"].items():  # type: ignore[union-attr]
        print(f"{name}: {sizes['rows']} rows, {sizes['actors']} actors, {sizes['identifiers']} distinct identifiers")
    print(f"shared identifiers: {report['shared_identifiers']}; planted near misses: {report['near_misses']}")
    if "peers_check_exit" in report:
        print("peers check exit codes:", report["peers_check_exit"])
    print("filters served:", report["filters_served"])
    print(f"{'requester':<10} {'responder':<10} {'mode':<7} {'items':>6} {'found':>6} {'truth':>6} "
          f"{'precision':>9} {'recall':>7} {'seconds':>8}")
    for r in report["pairs"]:  # type: ignore[union-attr]
        if r["mode"] == "count":
            score = f"{'noise ' + format(r['predicted'] - r['truth'], '+d'):>9} {'s=' + format(r['scale'], 'g'):>7}"
        else:
            score = f"{r['precision']:>9.4f} {r['recall']:>7.4f}"
        print(f"{r['requester']:<10} {r['responder']:<10} {r['mode']:<7} {r['requester_items']:>6} "
              f"{r['predicted']:>6} {r['truth']:>6} {score} {r['seconds']:>8.2f}{'' if r['ok'] else '  FAILED'}")
    print("OK" if report["ok"] else "FAILED: a pair is below precision 1.0 / recall 0.99, or a count beyond its noise")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
