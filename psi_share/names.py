"""The rule every name follows: datasets, peers, nodes, jobs, metrics.

Names cross every layer (a job file names datasets and peers, a wire message
names a metric and the route of a federation total, the audit scan checks
that a recorded name is only a name), so the rule lives at the ground floor,
where the protocols, the store and the audit can all read it.
"""

from __future__ import annotations

import re

from .errors import StoreError

#: A lowercase letter, then up to 62 lowercase letters, digits, ``_`` or ``-``.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")


def check_name(what: str, name: str) -> str:
    """``name`` if it follows the rule, else a StoreError naming ``what`` it names."""
    if not NAME_PATTERN.match(name):
        raise StoreError(
            f"invalid {what} name {name!r}: use lowercase letters, digits, '-' or '_', "
            "starting with a letter (at most 63 characters)"
        )
    return name


__all__ = ["NAME_PATTERN", "check_name"]
