"""Joint matching jobs: a TOML job file and this node's side of running it.

A job file is shared by every lab in the job; each lab runs
``psi-share job run JOBFILE`` on its own node, which matches its dataset
against every *other* participant and stores the results under one run::

    [job]
    name = "campaign-weekly"
    participants = ["lab-a", "lab-b", "lab-c"]   # peer names as in 'peers list'
    dataset = "flagged"          # our dataset to match
    peer_dataset = "flagged"     # the dataset asked of each peer
    kinds = ["email", "phone", "payment_fingerprint", "ip_prefix"]
    mode = "reveal"              # or "count"
    transcripts = true           # optional: keep the exact bytes sent in the audit log

    [job.schedule]               # optional: when 'serve' runs it (node/schedule.py)
    cron = "0 3 * * 1"
    timezone = "Europe/Berlin"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..identifiers import KINDS
from ..protocols.psi import Mode
from ..store.db import NAME_PATTERN
from .config import read_toml
from .schedule import Schedule, parse_schedule

_KEYS = {"name", "participants", "dataset", "peer_dataset", "kinds", "mode", "transcripts"}
_KEYS |= {"schedule"}  # periodic jobs: the [job.schedule] table


@dataclass(frozen=True)
class JobSpec:
    name: str
    participants: tuple[str, ...]
    dataset: str
    peer_dataset: str
    kinds: tuple[str, ...]
    mode: Mode = Mode.REVEAL
    source: str = ""
    transcripts: bool = False  # keep this run's sent bytes in the audit log
    schedule: Schedule | None = None  # [job.schedule]; None: run by hand or external cron

    def peers_for(self, local_name: str) -> tuple[str, ...]:
        return tuple(p for p in self.participants if p != local_name)

    def parameters(self) -> dict:
        return {
            "participants": list(self.participants), "dataset": self.dataset,
            "peer_dataset": self.peer_dataset, "kinds": list(self.kinds), "mode": self.mode.value,
        }


def load_job(path: Path) -> JobSpec:
    data = read_toml(path, "no such job file")
    job = data.get("job")
    if set(data) != {"job"} or not isinstance(job, dict):
        raise ConfigError(f"{path}: a job file holds exactly one [job] table")
    unknown = set(job) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [job]: {', '.join(sorted(unknown))}")
    missing = {"name", "participants", "dataset", "kinds"} - set(job)
    if missing:
        raise ConfigError(f"{path}: [job] is missing {', '.join(sorted(missing))}")

    def text_list(key: str) -> tuple[str, ...]:
        value = job[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: [job] {key} must be a non-empty list of strings")
        if len(set(value)) != len(value):
            raise ConfigError(f"{path}: [job] {key} lists a name twice")
        return tuple(value)

    participants = text_list("participants")
    kinds = text_list("kinds")
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"{path}: [job] kinds names unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    for key in ("name", "dataset", "peer_dataset"):
        value = job.get(key, job["dataset"] if key == "peer_dataset" else None)
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            raise ConfigError(f"{path}: [job] {key} must be a lowercase name")
    for p in participants:
        if not NAME_PATTERN.match(p):
            raise ConfigError(f"{path}: [job] participants holds an invalid node name {p!r}")
    mode = job.get("mode", "reveal")
    if mode not in ("reveal", "count"):
        raise ConfigError(f"{path}: [job] mode must be \"reveal\" or \"count\"")
    transcripts = job.get("transcripts", False)
    if not isinstance(transcripts, bool):
        raise ConfigError(f"{path}: [job] transcripts must be true or false")
    return JobSpec(
        name=job["name"], participants=participants, dataset=job["dataset"],
        peer_dataset=job.get("peer_dataset", job["dataset"]), kinds=kinds, mode=Mode(mode), source=str(path),
        transcripts=transcripts,
        schedule=parse_schedule(job["schedule"], str(path)) if "schedule" in job else None,
    )


@dataclass(frozen=True)
class PeerResult:
    peer: str
    status: str  # "ok" or "failed"
    session_id: str | None
    count: int | None
    matched_actors: int | None
    seconds: float
    error: str = ""
    attempts: int = 1  # tries, counting retries of an unreachable peer


@dataclass(frozen=True)
class JobRunResult:
    run_id: str
    job: str
    status: str  # "ok", "partial" or "failed"
    peers: tuple[PeerResult, ...]
    # actor_id -> peers that matched it (reveal mode only)
    attribution: dict[str, tuple[str, ...]] = field(default_factory=dict)
    mode: str = "reveal"
    started_at: float = 0.0
    finished_at: float = 0.0
    triggered_by: str = "manual"

    def seen_at(self, minimum: int) -> list[str]:
        return sorted(a for a, peers in self.attribution.items() if len(peers) >= minimum)
