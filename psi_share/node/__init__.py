"""The node: config, home, policy, the Node API, and a wing per capability
(psi/, counts/, sums/, federation.py) holding both sides of its protocol.

Importing the node registers the aggregate protocols' audit message checks
(:mod:`.audit_checks`) and the cardinality protocol's (:mod:`.counts.audit_checks`)
with :mod:`psi_share.audit.messages`, from above.
"""

from . import audit_checks  # noqa: F401  (registers itself)
from .counts import audit_checks as _count_checks  # noqa: F401  (registers itself)
