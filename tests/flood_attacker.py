"""A federation member that tries to take a node from everyone else (issue 13).

Written from the proto as an attacker would, on a raw gRPC channel that
presents a member's certificate: no psi-share client code, no politeness.
Used by the tests (``test_fair_share.py``, ``test_flood_serve.py``) and by
``scripts/bench_flood.py``.

* :meth:`Attacker.idle_streams`: opens PsiProcess streams that never send a
  chunk, each holding whatever the server gives it;
* :meth:`Attacker.empty_chunk_flood`: opens a session and streams empty
  chunks at it (and 1-byte ones), as fast as the node takes them;
* :meth:`Attacker.abandon_sessions`: opens sessions and never closes them,
  until the node refuses.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import grpc

from psi_share.protocols import PROTOCOL_VERSION
from psi_share.v1 import node_pb2 as pb
from psi_share.v1 import node_pb2_grpc as pb_grpc

SERVICE = "/psi_share.v1.PsiShareNode/"


def open_request(set_size: int = 1000, dataset: str = "flagged", kind: str = "email") -> pb.PsiOpenRequest:
    return pb.PsiOpenRequest(protocol_version=PROTOCOL_VERSION, dataset=dataset,
                             kinds=[pb.KindVersion(kind=kind, version=1)], set_size=set_size, reveal_intersection=False)


class Attacker:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stub = pb_grpc.PsiShareNodeStub(channel)
        self._release = threading.Event()  # ends the idle request streams
        self._calls: list[grpc.Future] = []
        self._process = channel.stream_stream(
            SERVICE + "PsiProcess", request_serializer=pb.Chunk.SerializeToString, response_deserializer=pb.Chunk.FromString,
        )

    def _nothing(self) -> Iterator[pb.Chunk]:
        self._release.wait()
        return
        yield  # a generator that yields nothing until released

    def idle_streams(self, n: int, *, timeout: float = 120.0) -> list:  # type: ignore[type-arg]
        """Open ``n`` PsiProcess streams that send nothing; returns the calls (not waited for)."""
        calls = [self._process(self._nothing(), timeout=timeout) for _ in range(n)]
        self._calls += calls
        return calls

    @staticmethod
    def outcomes(calls: list, wait: float) -> Counter:  # type: ignore[type-arg]
        """Status codes of the calls that ended within ``wait`` seconds; "open" for the rest."""
        done = threading.Semaphore(0)
        for call in calls:
            call.add_done_callback(lambda _c: done.release())
        import time

        deadline = time.monotonic() + wait
        ended = 0
        while ended < len(calls) and done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            ended += 1
        return Counter(c.code().name if c.done() else "open" for c in calls)

    def empty_chunk_flood(self, *, chunks: int = 1000, set_size: int = 1000, tiny: bool = False) -> str:
        """Open a session, then stream ``chunks`` empty (or 1-byte) chunks at it; returns the status code."""
        try:
            sid = self.stub.PsiOpen(open_request(set_size), timeout=30).session_id
        except grpc.RpcError as exc:
            return f"open:{exc.code().name}"
        total = 33 * set_size

        def flood() -> Iterator[pb.Chunk]:
            for index in range(chunks):
                yield pb.Chunk(protocol_version=PROTOCOL_VERSION, session_id=sid, index=index, last=False,
                               total_bytes=total if index == 0 else 0, data=b"\x02" if tiny else b"")

        try:
            for _ in self._process(flood(), timeout=60):
                pass
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"

    def abandon_sessions(self, up_to: int, set_size: int = 1000) -> tuple[int, str]:
        """Open sessions and never close them; (how many opened, the code that stopped it or "OK")."""
        for opened in range(up_to):
            try:
                self.stub.PsiOpen(open_request(set_size), timeout=30)
            except grpc.RpcError as exc:
                return opened, exc.code().name
        return up_to, "OK"

    def stop(self) -> None:
        self._release.set()
        for call in self._calls:
            call.cancel()
