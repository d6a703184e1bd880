"""The rule every name follows: datasets, peers, nodes, jobs, metrics.

Names cross every layer (a job file names datasets and peers, a wire message
names a metric and the route of a federation total, the audit scan checks
that a recorded name is only a name), so the rule lives at the ground floor,
where the protocols, the store and the audit can all read it.
"""

from __future__ import annotations

import re

#: A lowercase letter, then up to 62 lowercase letters, digits, ``_`` or ``-``.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

__all__ = ["NAME_PATTERN"]
