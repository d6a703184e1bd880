"""The node's SQLite store: datasets, peers, match sessions, results, job runs."""

from .aggregates import FederationRunRecord, SumResultRecord
from .db import DatasetInfo, IdentifierRow, MatchRecord, PeerRecord, SessionRecord, Store
from .job_runs import JobRunPeerRecord, JobRunRecord
from .importer import ImportMode, ImportSummary, parse_data_file

__all__ = [
    "DatasetInfo",
    "FederationRunRecord",
    "IdentifierRow",
    "ImportMode",
    "ImportSummary",
    "JobRunPeerRecord",
    "JobRunRecord",
    "MatchRecord",
    "PeerRecord",
    "SessionRecord",
    "Store",
    "SumResultRecord",
    "parse_data_file",
]
