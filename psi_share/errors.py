"""The psi-share exception tree.

::

    PsiShareError
    ├── ConfigError            a node home, config file or job file is wrong
    ├── ImportFileError        a data file row is wrong (carries file and line)
    ├── InvalidIdentifier      an identifier cannot be canonicalized
    ├── StoreError             the SQLite store refused an operation
    │   └── NotFound           a dataset, peer, session or run does not exist
    ├── JobBusy                another run of the same job holds its lock
    ├── PkiError               a CA directory, certificate, key or revocation list is wrong
    └── ProtocolError          a protocol step went wrong
        ├── Refused              this node refuses a peer (carries a gRPC code)
        ├── PeerUnavailable      a peer cannot be reached
        ├── LocalProtocolError   we were asked to do something the protocol forbids
        └── RemoteProtocolError  the peer sent something malformed or out of order
            ├── PeerRefused      the peer answered with an error status
            ├── UntrustedPeer    the server is not the federation member we meant (TLS)
            ├── OutOfOrder       a step the session state does not allow
            └── VersionMismatch  protocol or canonicalization versions differ

Garbage from the wire may only ever raise :class:`RemoteProtocolError` (or a
subclass); anything else escaping a protocol step on peer input is a bug.
"""

from __future__ import annotations


class PsiShareError(Exception):
    """Base class of every error psi-share raises on purpose."""


class ConfigError(PsiShareError):
    """A node home, configuration file or job file is missing or invalid."""


class InvalidIdentifier(PsiShareError, ValueError):
    """An identifier value cannot be canonicalized for its kind.

    The message names the kind and what is wrong, never the value itself:
    error messages end up in logs, and logs must not hold identifiers.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"invalid {kind}: {reason}")
        self.kind = kind
        self.reason = reason


class ImportFileError(PsiShareError):
    """A row of a data file is invalid; carries the file and 1-based line."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class StoreError(PsiShareError):
    """The store refused an operation."""


class NotFound(StoreError, LookupError):
    """A named dataset, peer, session or run does not exist."""


class ProtocolError(PsiShareError):
    """A protocol step failed."""


class LocalProtocolError(ProtocolError):
    """This side was asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, oversized or out of order."""


class PeerRefused(RemoteProtocolError):
    """The peer answered a call with an error status.

    ``code`` is the gRPC status code name (for example ``"PERMISSION_DENIED"``).
    """

    def __init__(self, peer: str, code: str, details: str) -> None:
        super().__init__(f"peer {peer} refused: {code}: {details}")
        self.peer = peer
        self.code = code
        self.details = details


class UntrustedPeer(RemoteProtocolError):
    """We refuse the server we reached: its certificate does not name the
    peer we meant, is not from the federation CA, or is revoked."""

    def __init__(self, peer: str, details: str) -> None:
        super().__init__(f"refusing peer {peer}: {details}")
        self.peer = peer
        self.details = details


class OutOfOrder(RemoteProtocolError):
    """The peer sent a step the session's state does not allow now."""


class VersionMismatch(RemoteProtocolError):
    """The peers disagree on the protocol or a canonicalization version."""


class Refused(ProtocolError):
    """This node refuses a peer's request by policy or because it is unknown.

    ``code`` is the gRPC status code name the transport answers with
    (``NOT_FOUND``, ``PERMISSION_DENIED``, ``RESOURCE_EXHAUSTED``,
    ``UNAUTHENTICATED``, ``FAILED_PRECONDITION``, ``INVALID_ARGUMENT``); the
    message is written for the peer's operator. ``reason``, when given, is a
    short fixed slug saying why (``"previous-hop"``, ``"replay"``...): the
    audit log records it beside the status, so a compliance officer can count
    refusals by cause without reading free text.
    """

    def __init__(self, code: str, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class PeerUnavailable(ProtocolError):
    """A peer could not be reached (down, wrong address, timed out)."""

    def __init__(self, peer: str, details: str) -> None:
        super().__init__(f"peer {peer} is unavailable: {details}")
        self.peer = peer
        self.details = details


class PkiError(PsiShareError):
    """A CA directory, certificate, key or revocation list is missing or wrong."""


class JobBusy(PsiShareError):
    """Another run of the same job is in progress (it holds the job's lock).

    ``holder`` is what that run wrote into the lock file (pid, start time),
    or an empty dict when it could not be read.
    """

    def __init__(self, job: str, holder: dict) -> None:
        who = ""
        if holder.get("pid"):
            who = f" (pid {holder['pid']}"
            who += f", since {holder['since']})" if holder.get("since") else ")"
        super().__init__(f"job {job!r} is already running{who}; two runs of one job never overlap")
        self.job = job
        self.holder = holder
