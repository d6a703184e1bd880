"""The node's SQLite store: datasets, peers, match sessions, results, job runs."""

from .db import (
    DatasetInfo,
    IdentifierRow,
    JobRunRecord,
    MatchRecord,
    PeerRecord,
    SessionRecord,
    Store,
)
from .importer import ImportMode, ImportSummary, parse_data_file

__all__ = [
    "DatasetInfo",
    "IdentifierRow",
    "ImportMode",
    "ImportSummary",
    "JobRunRecord",
    "MatchRecord",
    "PeerRecord",
    "SessionRecord",
    "Store",
    "parse_data_file",
]
