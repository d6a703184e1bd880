"""What ``peers check`` found about one peer: findings in order, and the exit code.

Each finding names its check (:data:`CHECKS`, in the order they run), a
status and a sentence for the operator; ``facts`` carry the same as data for
``--json``. No finding ever holds an identifier: the checks use only names,
versions, certificates and synthetic canary items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"

#: The checks, in the order they run; a failed one stops those that need it.
CHECKS = ("connect", "tls", "access", "identity", "versions", "prompts", "grants", "canary")

#: Exit codes of ``psi-share peers check`` (0: every check passed; warnings allowed).
EXIT_CHECK_FAILED = 7  # some check failed at some peer (TLS, identity, versions, prompts, grants, canary, refused)
EXIT_UNREACHABLE = 8  # the only failures are peers that could not be reached (down, wrong address)


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.check not in CHECKS or self.status not in (OK, WARN, FAIL, SKIPPED):
            raise ValueError(f"unknown check or status: {self.check}/{self.status}")


@dataclass
class PeerReport:
    """Everything ``peers check`` found about one peer."""

    peer: str
    address: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str, **facts: Any) -> Finding:
        finding = Finding(check, status, detail, facts)
        self.findings.append(finding)
        return finding

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def unreachable(self) -> bool:
        """Only the connection failed: the peer is down or the address is wrong."""
        return bool(self.failed) and all(f.check == "connect" for f in self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer, "address": self.address, "ok": self.ok,
            "failed": [f.check for f in self.failed],
            "checks": [{"check": f.check, "status": f.status, "detail": f.detail, **f.facts} for f in self.findings],
        }


def exit_code(reports: list[PeerReport]) -> int:
    """0 all passed; EXIT_UNREACHABLE when the only failures are unreachable
    peers; EXIT_CHECK_FAILED when anything else failed anywhere."""
    failed = [r for r in reports if not r.ok]
    if not failed:
        return 0
    return EXIT_UNREACHABLE if all(r.unreachable for r in failed) else EXIT_CHECK_FAILED
