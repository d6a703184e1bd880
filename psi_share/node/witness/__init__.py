"""Witnessing: the signed audit heads a node exchanges with its peers after
every session, and holds for them (:mod:`.service`)."""

from .service import Witness

__all__ = ["Witness"]
