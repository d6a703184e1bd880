"""The node's SQLite store: datasets, peers, match sessions, results, job runs."""

from .db import (
    DatasetInfo,
    FederationRunRecord,
    IdentifierRow,
    JobRunRecord,
    MatchRecord,
    PeerRecord,
    SessionRecord,
    Store,
    SumResultRecord,
)
from .importer import ImportMode, ImportSummary, parse_data_file

__all__ = [
    "DatasetInfo",
    "FederationRunRecord",
    "IdentifierRow",
    "ImportMode",
    "ImportSummary",
    "JobRunRecord",
    "MatchRecord",
    "PeerRecord",
    "SessionRecord",
    "Store",
    "SumResultRecord",
    "parse_data_file",
]
