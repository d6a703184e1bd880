"""A foreign PSI client, written from ``protos/`` and ``protos/PROTOCOL.md`` only.

It imports nothing from psi_share: its messages come from compiling
``protos/psi_share/v1/node.proto`` with protoc into a private descriptor
pool, its method paths are spelled out, and OpenMined's own binding is its
PSI engine (as psi.js is for the JavaScript client that found the gaps the
contract now documents). Every rule it follows is one PROTOCOL.md states:
call order, item format, exact set size, the request size bound, chunks.

Run as a script it is the "slow client" of tests/test_liveness.py: it
opens a session and streams its request, and where the plan says it asks
the test to stop its whole process (SIGSTOP, as a busy single-threaded
client that reads nothing) and waits on stdin until resumed. It prints one
JSON line at the end.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import private_set_intersection.python as openmined
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"
SERVICE = "/psi_share.v1.PsiShareNode/"
VERSION = 1  # PROTOCOL.md: protocol_version on every message
MAX_CHUNK_DATA = 1 << 20  # any size works; the whole message must stay under 4 MiB


@functools.lru_cache(maxsize=1)
def messages() -> SimpleNamespace:
    """The contract's message classes, compiled from node.proto into a pool of our own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "node.pb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}",
                   "psi_share/v1/node.proto"]
        subprocess.run(command, check=True, capture_output=True)
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    names = ("NodeInfoRequest", "NodeInfoResponse", "KindVersion", "PsiOpenRequest", "PsiOpenResponse",
             "PsiSetupRequest", "Chunk", "PsiCloseRequest", "PsiCloseResponse", "SumOpenRequest", "SumOpenResponse",
             "SumMessage")
    found = {n: GetMessageClass(pool.FindMessageTypeByName(f"psi_share.v1.{n}")) for n in names}
    holders = pool.FindEnumTypeByName("psi_share.v1.ValueHolder").values_by_name
    return SimpleNamespace(**found, VALUE_HOLDER={k: v.number for k, v in holders.items()})


def item(kind: str, version: int, canonical: str) -> str:
    """PROTOCOL.md "Items": what both sides hash, for an already canonical identifier."""
    return f"psi-share/1/{kind}/v{version}/{canonical}"


def request_limit(set_size: int) -> int:
    """PROTOCOL.md: the largest serialized psi_proto.Request a session accepts."""
    return set_size * 35 + 16


def to_chunks(session_id: str, data: bytes, chunk_bytes: int = MAX_CHUNK_DATA) -> Iterator:
    """PROTOCOL.md "Chunks": session_id on every chunk, index from 0, total_bytes on
    the first, last on the last; an empty payload is one empty last chunk."""
    m = messages()
    starts = range(0, max(len(data), 1), chunk_bytes)
    for index, start in enumerate(starts):
        end = min(start + chunk_bytes, len(data))
        yield m.Chunk(protocol_version=VERSION, session_id=session_id, index=index, last=end >= len(data),
                      total_bytes=len(data) if index == 0 else 0, data=data[start:end])


def from_chunks(replies, session_id: str) -> bytes:  # type: ignore[no-untyped-def]
    """Reassemble a reply stream, checking what PROTOCOL.md promises about it."""
    parts, total = [], None
    for index, chunk in enumerate(replies):
        assert chunk.protocol_version == VERSION and chunk.session_id == session_id and chunk.index == index
        if index == 0:
            total = chunk.total_bytes
        parts.append(chunk.data)
        if chunk.last:
            data = b"".join(parts)
            assert len(data) == total
            return data
    raise AssertionError("reply stream ended without its last chunk")


class ForeignClient:
    """One mutual-TLS channel to a node, speaking as the certificate in ``tls_dir``."""

    def __init__(self, address: str, server_name: str, tls_dir: Path) -> None:
        read = lambda name: (Path(tls_dir) / name).read_bytes()  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read("ca.crt"), read("node.key"), read("node.crt"))
        # The server's certificate must name the node we mean (PROTOCOL.md "Authentication").
        self.channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", server_name)])
        self.m = messages()

    def _unary(self, method: str, request, reply_cls):  # type: ignore[no-untyped-def]
        call = self.channel.unary_unary(SERVICE + method, request_serializer=lambda r: r.SerializeToString(),
                                        response_deserializer=reply_cls.FromString)
        return call(request, timeout=60)

    def _stream(self, method: str, requests, request_kind: str):  # type: ignore[no-untyped-def]
        if request_kind == "unary":
            call = self.channel.unary_stream(SERVICE + method, request_serializer=lambda r: r.SerializeToString(),
                                             response_deserializer=self.m.Chunk.FromString)
        else:
            call = self.channel.stream_stream(SERVICE + method, request_serializer=lambda r: r.SerializeToString(),
                                              response_deserializer=self.m.Chunk.FromString)
        return call(requests, timeout=300)

    def node_info(self):  # type: ignore[no-untyped-def]
        return self._unary("NodeInfo", self.m.NodeInfoRequest(protocol_version=VERSION), self.m.NodeInfoResponse)

    def open(self, dataset: str, kinds: dict[str, int], set_size: int, reveal: bool):  # type: ignore[no-untyped-def]
        request = self.m.PsiOpenRequest(
            protocol_version=VERSION, dataset=dataset, set_size=set_size, reveal_intersection=reveal,
            kinds=[self.m.KindVersion(kind=k, version=v) for k, v in sorted(kinds.items())],
        )
        return self._unary("PsiOpen", request, self.m.PsiOpenResponse)

    def process(self, session_id: str, request: bytes, *, chunk_bytes: int = MAX_CHUNK_DATA,
                before_chunk: Callable[[int], None] | None = None) -> bytes:
        def chunks() -> Iterator:
            for chunk in to_chunks(session_id, request, chunk_bytes):
                if before_chunk is not None:
                    before_chunk(chunk.index)
                yield chunk

        return from_chunks(self._stream("PsiProcess", chunks(), "stream"), session_id)

    def setup(self, session_id: str) -> bytes:
        request = self.m.PsiSetupRequest(protocol_version=VERSION, session_id=session_id)
        return from_chunks(self._stream("PsiSetup", request, "unary"), session_id)

    def close(self, session_id: str, outcome: str) -> None:
        request = self.m.PsiCloseRequest(protocol_version=VERSION, session_id=session_id, outcome=outcome)
        self._unary("PsiClose", request, self.m.PsiCloseResponse)

    def sum_open(self, dataset: str, kind: str, version: int, set_size: int, holder: str, key_bits: int):  # type: ignore[no-untyped-def]
        request = self.m.SumOpenRequest(
            protocol_version=VERSION, dataset=dataset, kind=self.m.KindVersion(kind=kind, version=version),
            set_size=set_size, value_holder=self.m.VALUE_HOLDER[holder], key_bits=key_bits,
        )
        return self._unary("SumOpen", request, self.m.SumOpenResponse)

    def sum_exchange(self, session_id: str, message):  # type: ignore[no-untyped-def]
        """One SumExchange: our SumMessage in chunks, the responder's next one back."""
        replies = self._stream("SumExchange", to_chunks(session_id, message.SerializeToString()), "stream")
        return self.m.SumMessage.FromString(from_chunks(replies, session_id))


def intersect(reveal: bool, key: bytes, setup_bytes: bytes, response_bytes: bytes) -> list[int] | int:
    """OpenMined's client computes the result from the setup and the response."""
    client = openmined.client.CreateFromKey(key, reveal)
    setup, response = openmined.ServerSetup(), openmined.Response()
    setup.ParseFromString(setup_bytes)
    response.ParseFromString(response_bytes)
    if reveal:
        return sorted(client.GetIntersection(setup, response))
    return client.GetIntersectionSize(setup, response)


def run_session(client: ForeignClient, dataset: str, kinds: dict[str, int], items: list[str], reveal: bool, *,
                chunk_bytes: int = MAX_CHUNK_DATA, setup_first: bool = False,
                before_chunk: Callable[[int], None] | None = None,
                after_open: Callable[[str], None] | None = None) -> tuple[list[int] | int, str, str]:
    """One whole session in PROTOCOL.md's order: open, process, setup (or setup
    first, which the contract allows), close. Returns (result, session id, setup kind)."""
    psi_client = openmined.client.CreateWithNewKey(reveal)
    # The request does not depend on the session: a slow client builds it first.
    request = psi_client.CreateRequest(items).SerializeToString()
    assert len(request) <= request_limit(len(items))
    opened = client.open(dataset, kinds, len(items), reveal)
    sid = opened.session_id
    if after_open is not None:
        after_open(sid)
    setup = client.setup(sid) if setup_first else b""
    response = client.process(sid, request, chunk_bytes=chunk_bytes, before_chunk=before_chunk)
    if not setup_first:
        setup = client.setup(sid)
    result = intersect(reveal, psi_client.GetPrivateKeyBytes(), setup, response)
    client.close(sid, "done")
    parsed = openmined.ServerSetup()
    parsed.ParseFromString(setup)
    return result, sid, parsed.WhichOneof("data_structure")


def _freeze(seconds: float, where: str) -> None:
    """Ask the test to stop this whole process (SIGSTOP: every thread, so nothing
    is read or acknowledged) for ``seconds``; go on once it says so."""
    print(json.dumps({"freeze": seconds, "where": where}), flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("the test did not resume us")


def main(plan: dict) -> None:  # type: ignore[type-arg]
    """``plan``: address, server, tls, dataset, kind, values, freeze_after_open, freeze_before_chunks
    ({index: seconds}), chunk_bytes."""
    client = ForeignClient(plan["address"], plan["server"], Path(plan["tls"]))
    items = [item(plan["kind"], 1, v) for v in plan["values"]]
    freezes = {int(i): s for i, s in plan.get("freeze_before_chunks", {}).items()}

    def after_open(sid: str) -> None:
        print(json.dumps({"opened": sid}), flush=True)
        if plan.get("freeze_after_open"):
            _freeze(plan["freeze_after_open"], "after-open")

    before_chunk = lambda i: _freeze(freezes[i], f"before-chunk-{i}") if i in freezes else None  # noqa: E731
    try:
        found, sid, _ = run_session(client, plan["dataset"], {plan["kind"]: 1}, items, True,
                                    chunk_bytes=plan.get("chunk_bytes", MAX_CHUNK_DATA), before_chunk=before_chunk,
                                    after_open=after_open)
        print(json.dumps({"ok": True, "matched": found, "session": sid}), flush=True)
    except grpc.RpcError as exc:
        print(json.dumps({"ok": False, "code": exc.code().name, "details": exc.details()}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))


# -- intersection-sum from PROTOCOL.md section 7 ---------------------------------

P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
HASH_DOMAIN = b"psi-share/intersection-sum/v1/P-256/SHA-256/try-and-increment\x00"


def hash_to_x(item_text: str) -> bytes:
    """H(item)'s x coordinate, 32 bytes, exactly as PROTOCOL.md words it."""
    import hashlib

    for counter in range(256):
        digest = hashlib.sha256(HASH_DOMAIN + counter.to_bytes(4, "big") + item_text.encode()).digest()
        x = int.from_bytes(digest, "big")
        rhs = (x**3 - 3 * x + P256_B) % P256_P
        if x < P256_P and (rhs == 0 or pow(rhs, (P256_P - 1) // 2, P256_P) == 1):
            return digest
    raise AssertionError("no point")


def blind(scalar: int, x: bytes) -> bytes:
    """x(k * P) for either point P with x coordinate ``x``: ECDH does exactly that."""
    from cryptography.hazmat.primitives.asymmetric import ec

    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + x)
    return ec.derive_private_key(scalar, ec.SECP256R1()).exchange(ec.ECDH(), point)


def sum_as_matcher(client: ForeignClient, dataset: str, kind: str, version: int, items: list[str],
                   key_bits: int = 2048) -> tuple[int, int, str]:
    """The requester as matcher, the responder holding the values: (count, sum, session)."""
    import secrets

    m = client.m
    k1 = secrets.randbelow(2**255) + 1
    mine = [blind(k1, hash_to_x(i)) for i in items]
    secrets.SystemRandom().shuffle(mine)
    sid = client.sum_open(dataset, kind, version, len(items), "VALUE_HOLDER_RESPONDER", key_bits).session_id
    reply = client.sum_exchange(sid, m.SumMessage(protocol_version=VERSION, step="blinded-set", points=b"".join(mine)))
    assert reply.step == "double-blinded" and reply.public_key[0] == 1
    n = int.from_bytes(reply.public_key[1:], "big")
    n2, width = n * n, 2 * key_bits // 8
    split = lambda blob, size: [blob[i : i + size] for i in range(0, len(blob), size)]  # noqa: E731
    double = set(split(reply.points, 32))
    theirs = [blind(k1, x) for x in split(reply.paired_points, 32)]
    ciphertexts = [int.from_bytes(c, "big") for c in split(reply.ciphertexts, width)]
    product, count = 1, 0
    for point, c in zip(theirs, ciphertexts):
        if point in double:
            product, count = product * c % n2, count + 1
    r = secrets.randbelow(n - 2) + 2
    encrypted = product * pow(r, n, n2) % n2
    reply = client.sum_exchange(sid, m.SumMessage(protocol_version=VERSION, step="encrypted-sum", count=count,
                                                  ciphertexts=encrypted.to_bytes(width, "big")))
    assert reply.step == "sum" and reply.count == count
    return count, int.from_bytes(reply.sum, "big"), sid
