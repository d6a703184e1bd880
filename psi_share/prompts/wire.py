"""The prompt parameter set on the wire (``PromptParameters`` in node.proto).

A session whose kinds include ``prompt`` carries the requester's
:meth:`~.params.PromptParams.describe` in its open message; the responder
compares it field by field with its own (:func:`.params.check_agreement`).
Only the seed's id travels, never the seed.

Who learns what: the parameter set is public within the federation (the
seed id names the seed without revealing it).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..v1 import node_pb2 as pb

__all__ = ["from_message", "to_message"]

_FIELDS = ("normalisation_version", "shingle_words", "minhash", "bands", "rows", "seed_id")


def to_message(described: Mapping[str, object] | None) -> pb.PromptParameters | None:
    """The message for a ``describe()`` dictionary (None stays None: no prompt kind)."""
    if described is None:
        return None
    return pb.PromptParameters(**{key: described[key] for key in _FIELDS})  # type: ignore[arg-type]


def from_message(message: object, present: bool) -> dict[str, object] | None:
    """The dictionary a peer sent (None when it sent none); values are kept as
    sent, so the agreement check can name a wrong one."""
    if not present:
        return None
    return {key: getattr(message, key) for key in _FIELDS}
