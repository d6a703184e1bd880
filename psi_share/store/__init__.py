"""The node's SQLite store: datasets, peers, match sessions, results, job runs."""

from .aggregates import FederationRunRecord, SumResultRecord
from .db import DatasetInfo, IdentifierRow, MatchRecord, PeerRecord, SessionRecord, Store
from .job_runs import JobRunPeerRecord, JobRunRecord
from .importer import ImportMode, ImportSummary, import_data_file, parse_data_file
from .registry import RegisterSummary, register_parquet
from .rejects import ImportRejected, Reason
from .sources import ColumnMapping

__all__ = [
    "ColumnMapping",
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
    "RegisterSummary",
    "SessionRecord",
    "Store",
    "SumResultRecord",
    "import_data_file",
    "parse_data_file",
    "register_parquet",
]
