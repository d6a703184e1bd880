"""The node's SQLite store: datasets, peers, match sessions, results, job runs."""

from .aggregates import FederationRunRecord, SumResultRecord
from .db import DatasetInfo, IdentifierRow, MatchRecord, PeerRecord, SessionRecord, Store
from .job_runs import JobRunPeerRecord, JobRunRecord
from .importer import ImportMode, ImportSummary, import_data_file, parse_data_file
from .rejects import ImportRejected, Reason

__all__ = [
    "DatasetInfo",
    "FederationRunRecord",
    "IdentifierRow",
    "ImportMode",
    "ImportRejected",
    "ImportSummary",
    "JobRunPeerRecord",
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
