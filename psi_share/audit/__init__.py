"""The compliance audit: a tamper-evident record of everything a node sends.

* :mod:`.log` -- the append-only, hash-chained log with signed checkpoints
  (at least every 1000 entries) and optional transcripts of the exact bytes sent.
* :mod:`.verify` -- the verifier: every rule ``audit verify`` applies.
* :mod:`.recorder` -- the :class:`~psi_share.transport.egress.Egress`
  recorder that writes every message to the log before it leaves.
* :mod:`.scan` -- searches transcripts for any form of the lab's identifiers
  and checks that each message holds only what its type may hold.
* :mod:`.report` -- the Markdown/HTML report for the compliance officer.
* :mod:`.witness` -- signed heads our peers hold (witnesses) and the
  certificate binding of the audit key; registers the witness messages' checks.

The log format is specified in the README ("Audit log format") so that it
can be verified without this software.
"""

from .log import AuditError, AuditLog
from .verify import VerifyResult, verify_log
from . import witness  # noqa: E402,F401  (registers the witness messages' checks)

__all__ = ["AuditError", "AuditLog", "VerifyResult", "verify_log"]
