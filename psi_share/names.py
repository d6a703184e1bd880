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

#: The dataset a canary session names (``peers check``): ``_canary.<dataset>``
#: (a synthetic set as large as the filter of that dataset) or
#: ``_canary.<dataset>.<items>`` (a synthetic set of that many items). No real
#: dataset can carry it: a name starts with a letter, never ``_``. Match it with
#: ``fullmatch`` (``$`` would let a trailing newline through).
CANARY_DATASET_PATTERN = re.compile(r"_canary\.([a-z][a-z0-9_-]{0,62})(?:\.([1-9][0-9]{0,6}))?")


def check_name(what: str, name: str) -> str:
    """``name`` if it follows the rule, else a StoreError naming ``what`` it names."""
    if not NAME_PATTERN.match(name):
        raise StoreError(
            f"invalid {what} name {name!r}: use lowercase letters, digits, '-' or '_', "
            "starting with a letter (at most 63 characters)"
        )
    return name


__all__ = ["CANARY_DATASET_PATTERN", "NAME_PATTERN", "check_name"]
