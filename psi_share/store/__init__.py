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
from .importer import ImportMode, ImportSummary, import_data_file, parse_data_file
from .rejects import ImportRejected, Reason

__all__ = [
    "DatasetInfo",
    "FederationRunRecord",
    "IdentifierRow",
    "ImportMode",
    "ImportRejected",
    "ImportSummary",
    "JobRunRecord",
    "MatchRecord",
    "PeerRecord",
    "Reason",
    "SessionRecord",
    "Store",
    "SumResultRecord",
    "import_data_file",
    "parse_data_file",
]
