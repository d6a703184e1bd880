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
from ..names import NAME_PATTERN
from ..node.config import read_toml
from ..protocols.psi import Mode
from .schedule import Schedule, parse_schedule

_KEYS = {"name", "participants", "dataset", "peer_dataset", "kinds", "mode", "transcripts"}
_KEYS |= {"schedule"}  # periodic jobs: the [job.schedule] table
# Keys of Paillier-aggregate jobs (protocol = "intersection-sum" / "federation-total").
_AGGREGATE_KEYS = {
    "intersection-sum": {"name", "participants", "dataset", "peer_dataset", "kind", "value_holder", "key_bits", "protocol",
                         "transcripts", "schedule"},
    "federation-total": {"name", "participants", "metric", "min_contributors", "protocol", "transcripts", "schedule"},
}


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
    # Paillier aggregates (see _load_aggregate_job); "psi" jobs leave these empty.
    protocol: str = "psi"
    value_holder: str = ""
    key_bits: int = 0
    metric: str = ""
    min_contributors: int = 0

    def peers_for(self, local_name: str) -> tuple[str, ...]:
        return tuple(p for p in self.participants if p != local_name)

    def parameters(self) -> dict:
        if self.protocol == "intersection-sum":
            return {
                "protocol": self.protocol, "participants": list(self.participants), "dataset": self.dataset,
                "peer_dataset": self.peer_dataset, "kind": self.kinds[0], "value_holder": self.value_holder,
                "key_bits": self.key_bits,
            }
        if self.protocol == "federation-total":
            return {
                "protocol": self.protocol, "participants": list(self.participants), "metric": self.metric,
                "min_contributors": self.min_contributors,
            }
        return {
            "participants": list(self.participants), "dataset": self.dataset,
            "peer_dataset": self.peer_dataset, "kinds": list(self.kinds), "mode": self.mode.value,
        }


def load_job(path: Path) -> JobSpec:
    data = read_toml(path, "no such job file")
    job = data.get("job")
    if set(data) != {"job"} or not isinstance(job, dict):
        raise ConfigError(f"{path}: a job file holds exactly one [job] table")
    if "protocol" in job and job["protocol"] != "psi":
        return _load_aggregate_job(path, job)
    job = {k: v for k, v in job.items() if k != "protocol"}
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
    total: int | None = None  # intersection-sum: the sum over the intersection


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
    protocol: str = "psi"
    federation_total: int | None = None  # federation-total: the released total
    contributors: int | None = None

    def seen_at(self, minimum: int) -> list[str]:
        return sorted(a for a, peers in self.attribution.items() if len(peers) >= minimum)


def _load_aggregate_job(path: Path, job: dict) -> JobSpec:
    """An intersection-sum or federation-total job::

        [job]
        protocol = "intersection-sum"
        name = "campaign-traffic"
        participants = ["lab-a", "lab-b", "lab-c"]
        dataset = "flagged"          # ours
        peer_dataset = "usage"       # each peer's (default: dataset)
        kind = "account_handle"      # exactly one kind
        value_holder = "responder"   # whose data carries the values (default responder)
        key_bits = 2048              # optional: Paillier key size when we hold the values

        [job]
        protocol = "federation-total"
        name = "campaign-accounts"
        participants = ["lab-a", "lab-b", "lab-c"]   # the node running the job initiates
        metric = "campaign-accounts"                 # each lab's figure, by name
        min_contributors = 3                         # optional, never below 3
    """
    from ..protocols.federation_total import MIN_CONTRIBUTORS

    protocol = job["protocol"]
    if protocol not in _AGGREGATE_KEYS:
        raise ConfigError(f"{path}: [job] protocol must be \"psi\", \"intersection-sum\" or \"federation-total\"")
    unknown = set(job) - _AGGREGATE_KEYS[protocol]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [job] for protocol {protocol}: {', '.join(sorted(unknown))}")
    required = {"name", "participants"} | ({"dataset", "kind"} if protocol == "intersection-sum" else {"metric"})
    missing = required - set(job)
    if missing:
        raise ConfigError(f"{path}: [job] is missing {', '.join(sorted(missing))}")
    participants = job["participants"]
    if (
        not isinstance(participants, list) or not participants
        or not all(isinstance(p, str) and NAME_PATTERN.match(p) for p in participants)
        or len(set(participants)) != len(participants)
    ):
        raise ConfigError(f"{path}: [job] participants must be a non-empty list of distinct node names")

    def name(key: str, default: str | None = None) -> str:
        value = job.get(key, default)
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            raise ConfigError(f"{path}: [job] {key} must be a lowercase name")
        return value

    transcripts = job.get("transcripts", False)
    if not isinstance(transcripts, bool):
        raise ConfigError(f"{path}: [job] transcripts must be true or false")
    schedule = parse_schedule(job["schedule"], str(path)) if "schedule" in job else None
    if protocol == "federation-total":
        minimum = job.get("min_contributors", MIN_CONTRIBUTORS)
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < MIN_CONTRIBUTORS:
            raise ConfigError(f"{path}: [job] min_contributors must be an integer of at least {MIN_CONTRIBUTORS}")
        if len(participants) < minimum:
            raise ConfigError(f"{path}: [job] lists {len(participants)} participants; min_contributors is {minimum}")
        return JobSpec(
            name=name("name"), participants=tuple(participants), dataset="", peer_dataset="", kinds=(),
            source=str(path), protocol=protocol, metric=name("metric"), min_contributors=minimum,
            transcripts=transcripts, schedule=schedule,
        )
    kind = job["kind"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"{path}: [job] kind must be one identifier kind (known: {', '.join(sorted(KINDS))})")
    holder = job.get("value_holder", "responder")
    if holder not in ("requester", "responder"):
        raise ConfigError(f"{path}: [job] value_holder must be \"requester\" or \"responder\"")
    key_bits = job.get("key_bits", 0)
    if key_bits not in (0, 2048, 3072) or isinstance(key_bits, bool):
        raise ConfigError(f"{path}: [job] key_bits must be 2048 or 3072")
    dataset = name("dataset")
    return JobSpec(
        name=name("name"), participants=tuple(participants), dataset=dataset,
        peer_dataset=name("peer_dataset", dataset), kinds=(kind,), source=str(path), protocol=protocol,
        value_holder=holder, key_bits=key_bits, transcripts=transcripts, schedule=schedule,
    )
