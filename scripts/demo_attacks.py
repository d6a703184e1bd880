"""The demo's member running modified software (issue 11), against real nodes.

lab-d holds a valid federation certificate and, at lab-b, the default
count-only grant. Against the demo's ``psi-share serve`` processes (mutual
TLS on 127.0.0.1) it shows three things:

1. **A noisy count.** lab-d serves its flagged data with ``[privacy]
   enabled = true`` and the defaults (epsilon 0.5 per release, 4 per peer per
   UTC day); lab-b asks it ``match --count``. lab-b learns the count plus
   discrete Laplace noise of scale 1/epsilon = 2; lab-d charges epsilon to
   lab-b's budget. The truth printed beside it is computed here from the
   generator's CSV files with the generator's own stdlib canonicalizer
   (``gen_demo_data.CANON``), never with psi-share's.
2. **A forged Paillier key refused.** lab-d, as a cheating value holder,
   opens an intersection-sum with lab-b (lab-b matches) and sends a
   double-blinded message under the modulus N = 1009 * q of issue 11, with the
   valid proof of another key (bound to this very session), or with none.
   lab-b refuses it before using any ciphertext under N (which would have told
   lab-d which of its items matched) and its audit log records the refusal.
3. **A forged filter refused.** lab-d, as a cheating responder, answers
   lab-b's PSI with an all-ones Bloom filter (every item would "match": it
   poisons attribution) and with issue 11's forged GCS (which crashed
   OpenMined). lab-b's ``match`` fails with the reason, stores no match, and
   lab-b's ``serve`` keeps answering.

The attacker's pieces (:func:`forged_key_attack`, :class:`HostileResponder`,
the forgeries) are written from ``protos/`` with raw gRPC stubs, as a member
running its own software would write them; they reuse psi-share's public
crypto helpers only to compute what any implementation computes (points,
Paillier ciphertexts, filters). ``tests/test_demo_attacks.py`` runs them
against in-process nodes.
"""

from __future__ import annotations

import csv
import json
import random
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import gmpy2
import grpc
import private_set_intersection.python as openmined
from private_set_intersection.python import Request, ServerSetup

from psi_share.crypto import ec
from psi_share.crypto.modulus_proof import prove
from psi_share.crypto.openmined_params import bloom_shape
from psi_share.crypto.paillier import PrivateKey, PublicKey, encode_ciphertexts
from psi_share.identifiers import KINDS, canonicalize, domain_separated_item
from psi_share.protocols import PROTOCOL_VERSION
from psi_share.protocols.intersection_sum import proof_context
from psi_share.protocols.psi import DEFAULT_FALSE_POSITIVE_RATE, size_class
from psi_share.transport.chunks import from_chunks, to_chunks
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

SMALL_FACTOR = 1009  # issue 11's modulus: a 10-bit prime factor (it passed the old "< 1000" sieve)
KEY_BITS = 2048
NOISE_BOUND = 40  # |discrete Laplace(scale 2)| > 40 has probability about e^-20: a failure here is a bug
_MAX_MESSAGE = 1 << 30  # what the attacker is willing to buffer from its victim


# -- the cheating value holder (intersection-sum) --------------------------------


def forged_modulus(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> int:
    """N = 1009 * q with q prime and N exactly 2048 bits: Paillier under N is
    malleable mod 1009, so a matcher that used it would leak its match vector."""
    rng = random.Random(random_bytes(32))
    while True:
        q = int(gmpy2.next_prime(rng.getrandbits(KEY_BITS - 10) | (3 << (KEY_BITS - 12))))
        if (SMALL_FACTOR * q).bit_length() == KEY_BITS:
            return SMALL_FACTOR * q


@dataclass(frozen=True)
class Refusal:
    """How the victim answered a forged message: a gRPC status name and text
    (``code`` empty when it accepted the message: the attack worked)."""

    code: str
    details: str
    session_id: str


def _sum_exchange(stub: pb_grpc.PsiShareNodeStub, sid: str, message: pb.SumMessage) -> pb.SumMessage:
    """One SumExchange: our message in chunks, the victim's reply reassembled."""
    replies = stub.SumExchange(to_chunks(sid, message.SerializeToString()), timeout=300)
    _, data = from_chunks(replies, max_bytes=_MAX_MESSAGE, session_id=sid)
    return pb.SumMessage.FromString(data)


def forged_key_attack(
    stub: pb_grpc.PsiShareNodeStub, *, attacker: str, victim: str, dataset: str, kind: str, items: Sequence[str],
    proof: str, random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Refusal:
    """Open an intersection-sum with ``victim`` as its matcher, values held by
    us, and send our double-blinded message under the forged modulus.

    ``items`` are our domain-separated items (any guesses). ``proof`` is
    ``"other-key"`` (a valid proof for an honest key of ours, bound to this
    session: the best a forger without a proof for N can send) or ``"none"``;
    ``"honest"`` sends that honest key with its proof instead of N (the
    control: the victim accepts, so its refusals are about the key alone).
    Everything else in the message is what an honest value holder sends.
    """
    if proof not in ("other-key", "none", "honest"):
        raise ValueError(f"proof must be 'other-key', 'none' or 'honest', not {proof!r}")
    opened = stub.SumOpen(pb.SumOpenRequest(
        protocol_version=PROTOCOL_VERSION, dataset=dataset, kind=pb.KindVersion(kind=kind, version=KINDS[kind].version),
        set_size=len(items), value_holder=pb.VALUE_HOLDER_REQUESTER, key_bits=KEY_BITS,
    ), timeout=300)
    sid = opened.session_id
    theirs = _sum_exchange(stub, sid, pb.SumMessage(protocol_version=PROTOCOL_VERSION, step="start"))
    key = PublicKey(forged_modulus(random_bytes))
    key_proof = b""
    if proof != "none":
        honest = PrivateKey.generate(KEY_BITS, random_bytes)
        key_proof = prove(honest, context=proof_context(sid, attacker, victim), protocol_version=PROTOCOL_VERSION)
        key = honest.public if proof == "honest" else key
    scalar = ec.new_scalar(random_bytes)
    forged = pb.SumMessage(
        protocol_version=PROTOCOL_VERSION, step="double-blinded", public_key=key.encode(), key_proof=key_proof,
        points=ec.blind_x_blob(scalar, theirs.points),
        paired_points=ec.hash_and_blind(scalar, [i.encode() for i in items]),
        ciphertexts=encode_ciphertexts(key, [key.encrypt(1, random_bytes) for _ in items]),
    )
    try:
        reply = _sum_exchange(stub, sid, forged)
    except grpc.RpcError as exc:
        return Refusal(exc.code().name, exc.details() or "", sid)
    return Refusal("", f"the victim accepted the key and answered {reply.step!r}", sid)


def audit_statuses(home: Path, session_id: str) -> list[tuple[int, str, str]]:
    """(entry number, step, "CODE: text") of every error status a node's
    audit log says it sent in ``session_id``."""
    out = []
    for line in (home / "audit" / "log.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("session") == session_id and str(entry.get("step", "")).endswith("-status"):
            params = entry.get("params", {})
            out.append((entry["seq"], entry["step"], f"{params.get('status')}: {params.get('text')}"))
    return out


# -- the cheating responder (PSI) -------------------------------------------------


def all_ones_bloom(fpr: float, queries: int, items: int) -> ServerSetup:
    """OpenMined's exact Bloom shape for the announced sizes, every bit set:
    every item of the requester would "match"."""
    hashes, num_bytes = bloom_shape(fpr, queries, items)
    setup = ServerSetup()
    setup.bloom_filter.num_hash_functions, setup.bloom_filter.bits = hashes, b"\xff" * num_bytes
    return setup


def issue_11_gcs(fpr: float, queries: int, items: int) -> ServerSetup:
    """Issue 11's GCS: div 40, hash range 2^63-1, 64 KiB of random bits (it
    made OpenMined's intersection die with SIGSEGV)."""
    setup = ServerSetup()
    setup.gcs.div, setup.gcs.hash_range, setup.gcs.bits = 40, 2**63 - 1, secrets.token_bytes(64 * 1024)
    return setup


FORGERIES: dict[str, Callable[[float, int, int], ServerSetup]] = {
    "an all-ones Bloom filter": all_ones_bloom,
    "issue 11's forged GCS (div 40, hash range 2^63-1, 64 KiB random)": issue_11_gcs,
}


@dataclass
class HostileResponder(pb_grpc.PsiShareNodeServicer):
    """A responder of our own making: it answers PSI honestly up to the
    filter, then serves ``forge(fpr, queries, items)`` instead of its own.

    It claims a set of ``claimed_items`` and, like an honest node, builds for
    the requester's size class at OpenMined's default false-positive rate, so
    the forged filter has the announced shape and only its content is wrong.
    """

    name: str
    forge: Callable[[float, int, int], ServerSetup]
    claimed_items: int = 300
    opened: dict[str, tuple[int, bool]] = field(default_factory=dict)  # session -> (queries, reveal)
    closed: dict[str, str] = field(default_factory=dict)  # session -> the outcome the requester told us

    def NodeInfo(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 (gRPC names)
        return pb.NodeInfoResponse(
            protocol_version=PROTOCOL_VERSION, node_name=self.name, software_version="hostile",
            openmined_psi_version="2.0.6", canonicalization=[pb.KindVersion(kind=k, version=s.version)
                                                             for k, s in sorted(KINDS.items())],
            datasets=[pb.ExposedDataset(name="flagged", kinds=sorted(KINDS))], protocols=["psi"],
        )

    def PsiOpen(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        sid = uuid.uuid4().hex
        queries = size_class(request.set_size, 1_000_000)
        self.opened[sid] = (queries, request.reveal_intersection)
        return pb.PsiOpenResponse(
            protocol_version=PROTOCOL_VERSION, session_id=sid, false_positive_rate=DEFAULT_FALSE_POSITIVE_RATE,
            max_set_size=queries, openmined_psi_version="2.0.6", session_ttl_seconds=600,
            responder_set_size=self.claimed_items,
        )

    def PsiProcess(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        sid, data = from_chunks(request_iterator, max_bytes=_MAX_MESSAGE)
        # One OpenMined server object per call: sharing one across threads aborts the process.
        server = openmined.server.CreateWithNewKey(self.opened[sid][1])
        yield from to_chunks(sid, server.ProcessRequest(Request.FromString(data)).SerializeToString())

    def PsiSetup(self, request, context) -> Iterator[pb.Chunk]:  # type: ignore[no-untyped-def]  # noqa: N802
        queries, _ = self.opened[request.session_id]
        forged = self.forge(DEFAULT_FALSE_POSITIVE_RATE, queries, self.claimed_items)
        yield from to_chunks(request.session_id, forged.SerializeToString())

    def PsiClose(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.closed[request.session_id] = request.outcome
        return pb.PsiCloseResponse(protocol_version=PROTOCOL_VERSION)


def serve_hostile(responder: HostileResponder, tls_dir: Path) -> tuple[grpc.Server, int]:
    """Serve ``responder`` on 127.0.0.1 port 0 with the member's real
    certificate (``tls_dir``: node.crt, node.key, ca.crt), mutual TLS."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_PsiShareNodeServicer_to_server(responder, server)
    credentials = grpc.ssl_server_credentials(
        [((tls_dir / "node.key").read_bytes(), (tls_dir / "node.crt").read_bytes())],
        root_certificates=(tls_dir / "ca.crt").read_bytes(), require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


# -- the demo section ---------------------------------------------------------------


def true_count(ours: Path, theirs: Path, kinds: Sequence[str]) -> tuple[int, int]:
    """(our distinct items, how many of them the other file holds), with the
    generator's stdlib canonical forms (independent of psi-share)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gen_demo_data import CANON

    def items(path: Path) -> set[tuple[str, str]]:
        with path.open(newline="", encoding="utf-8") as fh:
            return {(r["kind"], CANON[r["kind"]](r["value"])) for r in csv.DictReader(fh) if r["kind"] in kinds}

    mine = items(ours)
    return len(mine), len(mine & items(theirs))


def own_items(path: Path, kind: str) -> list[str]:
    """The attacker's items of ``kind``, as its own node would form them."""
    with path.open(newline="", encoding="utf-8") as fh:
        return sorted({domain_separated_item(kind, canonicalize(kind, r["value"]))
                       for r in csv.DictReader(fh) if r["kind"] == kind})


class AttackSection:
    """Section 10b of scripts/demo.py; ``psi`` runs the CLI on a home,
    ``start_node`` starts ``psi-share serve`` (both from demo.py)."""

    def __init__(self, out: Path, nodes: Path, ports: dict[str, int], *, psi: Callable[..., subprocess.CompletedProcess[str]],
                 start_node: Callable[[Path, Path], tuple[subprocess.Popen[str], int]], console) -> None:  # type: ignore[no-untyped-def]
        self.out, self.nodes, self.ports = out, nodes, ports
        self.psi, self.start_node, self.console = psi, start_node, console
        self.lab_b, self.lab_d = nodes / "lab-b", nodes / "lab-d"

    def verdict(self, ok: bool, what: str, detail: str = "") -> bool:
        from rich.markup import escape

        head = "[green]refused[/]" if ok else "[red]NOT refused[/]"
        self.console.print(f"{head}: {escape(what)}" + (f"\n    {escape(detail)}" if detail else ""), soft_wrap=True)
        return ok

    def run(self) -> bool:
        self.console.rule("[bold]10b. modified software: a noisy count, a forged key, forged filters")
        config = (self.lab_d / "config.toml").read_text(encoding="utf-8")
        if "\n[privacy]\nenabled = true" not in config:
            raise SystemExit("lab-d must serve with [privacy] enabled = true (its init default)")
        proc, port = self.start_node(self.lab_d, self.out / "logs" / "lab-d.log")
        try:
            ok = self.noisy_count(port)
            ok &= self.forged_key()
            ok &= self.forged_filters()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return ok

    def noisy_count(self, port: int) -> bool:
        from rich.table import Table

        kinds = json.loads((self.out / "data" / "truth.json").read_text())["kinds"]
        self.psi(self.lab_b, "peers", "add", "lab-d", f"127.0.0.1:{port}", "--replace")
        proc = self.psi(self.lab_b, "match", "lab-d", "--kinds", ",".join(kinds), "--count", "--format", "json",
                        check=False)
        got = json.loads(proc.stdout) if proc.returncode == 0 else {}
        released = got.get("matching_items")
        # lab-b's flagged set is day 1's (section 8 replaced it); lab-d holds lab-a's day-0 file (section 10)
        ours, truth = true_count(self.out / "data-day1" / "lab-b" / "flagged.csv",
                                 self.out / "data" / "lab-a" / "flagged.csv", kinds)
        spent = next((r["epsilon_today"] for r in json.loads(
            self.psi(self.lab_d, "policy", "show", "lab-b", "--format", "json").stdout)), "?")
        table = Table(title="lab-b asks lab-d (privacy on) how many of its flagged items lab-d holds")
        for col in ("true count", "released count", "noise scale (1/ε)", "ε spent by lab-b at lab-d (today/budget)"):
            table.add_column(col, justify="right")
        table.add_row(str(truth), str(released), "2", spent)
        self.console.print(table)
        ok = released is not None and abs(released - truth) <= NOISE_BOUND and got.get("our_items") == ours
        if released == truth:
            self.console.print("(the noise drew 0 this time: probability tanh(ε/2) ≈ 0.24)")
        if got and got.get("our_items") != ours:
            self.console.print(f"[red]lab-b sent {got.get('our_items')} items; the CSV holds {ours} distinct ones")
        self.console.print(f"{'[green]noisy[/]' if ok else '[red]NOT as expected[/]'}: lab-b received a count "
                           f"within {NOISE_BOUND} of the truth, epsilon charged at lab-d"
                           + ("" if proc.returncode == 0 else f"\n    {proc.stderr.strip()[:300]}"))
        return ok

    def forged_key(self) -> bool:
        tls = self.lab_d / "tls"
        credentials = grpc.ssl_channel_credentials((tls / "ca.crt").read_bytes(), (tls / "node.key").read_bytes(),
                                                   (tls / "node.crt").read_bytes())
        items = own_items(self.out / "data" / "lab-a" / "flagged.csv", "payment_fingerprint")
        ok = True
        with grpc.secure_channel(f"127.0.0.1:{self.ports['lab-b']}", credentials,
                                 options=[("grpc.ssl_target_name_override", "lab-b")]) as channel:
            stub = pb_grpc.PsiShareNodeStub(channel)
            for proof, how in (("other-key", "the valid proof of another key, bound to the session"),
                               ("none", "no proof")):
                r = forged_key_attack(stub, attacker="lab-d", victim="lab-b", dataset="flagged",
                                      kind="payment_fingerprint", items=items, proof=proof)
                logged = [e for e in audit_statuses(self.lab_b, r.session_id) if r.details and r.details in e[2]]
                ok &= self.verdict(
                    r.code == "INVALID_ARGUMENT" and bool(logged),
                    f"lab-d's Paillier modulus 1009·q ({KEY_BITS} bits) with {how}, to lab-b (intersection-sum, "
                    "lab-b matches)",
                    f"{r.code or 'accepted'}: {r.details[:220]}\n    lab-b's audit log: "
                    + (f"entry {logged[0][0]} ({logged[0][1]}) records this status, sent to lab-d in session "
                       f"{r.session_id[:12]}" if logged else "NO refusal recorded"),
                )
        return ok

    def forged_filters(self) -> bool:
        ok = True
        for what, forge in FORGERIES.items():
            hostile = HostileResponder("lab-d", forge)
            server, port = serve_hostile(hostile, self.lab_d / "tls")
            try:
                self.psi(self.lab_b, "peers", "add", "lab-d", f"127.0.0.1:{port}", "--replace")
                proc = self.psi(self.lab_b, "match", "lab-d", "--kinds", "email", "--format", "json", check=False)
            finally:
                server.stop(grace=1)
            reason = " ".join(proc.stderr.split()).removeprefix("error: ")
            sessions = json.loads(self.psi(self.lab_b, "results", "sessions", "--format", "json").stdout)
            mine = [s for s in sessions if s["session"] in hostile.opened]
            recorded = len(mine) == 1 and mine[0]["status"] == "failed" and mine[0]["matched"] is None
            ok &= self.verdict(
                proc.returncode != 0 and "filter" in reason and recorded and set(hostile.closed.values()) == {"failed"},
                f"lab-d (hostile responder) serving lab-b {what}",
                f"match exit {proc.returncode}: {reason[:240]}\n    lab-b's session: "
                + (f"{mine[0]['status']}, matched {mine[0]['matched']}" if mine else "not recorded"),
            )
        alive = self.psi(self.nodes / "lab-a", "peers", "check", "lab-b", check=False)
        ok &= alive.returncode == 0
        self.console.print(f"{'[green]still serving[/]' if alive.returncode == 0 else '[red]NOT serving[/]'}: lab-b's "
                           "serve process answers lab-a's 'peers check' after both forged filters")
        return ok
