"""A node's TOML configuration: parsing, validation and defaults.

Every key is documented in the README ("Configuration"). Unknown sections or
keys are errors, not silently ignored: a typo in a security setting must not
fall back to a default without anyone noticing.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..identifiers import KINDS, CanonicalizationContext
from ..protocols.psi import DEFAULT_FALSE_POSITIVE_RATE
from ..transport.liveness import Liveness
from .policy_config import PolicyConfig, parse_policy, render_policy
from .server_config import SCHEMA as SERVER_SCHEMA
from .server_config import ServerConfig, parse_server, render_server
from .privacy_config import SCHEMA as PRIVACY_SCHEMA
from .privacy_config import PrivacyConfig, parse_privacy, render_privacy
from .prompts.config import SCHEMA as PROMPTS_SCHEMA
from .prompts.config import PromptsConfig, parse_prompts, render_prompts


@dataclass(frozen=True)
class MatchingConfig:
    false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE
    max_set_size: int = 1_000_000
    workers: int = 2
    # Above this many items a requester that reads bucketed setups gets one,
    # of buckets of about this many items (crypto.buckets).
    bucket_items: int = 1 << 20


@dataclass(frozen=True)
class EngineConfig:
    """Where blinding and filter building run: ``local`` (the node's own
    worker pool) or ``dask`` (a Dask distributed scheduler of the lab's
    cluster at ``scheduler``, e.g. ``tcp://10.0.0.5:8786``)."""

    kind: str = "local"
    scheduler: str = ""
    # dask: workers read a registered Parquet dataset's files themselves
    # (canonicalizing as they read); false: the node reads and ships items.
    workers_read_sources: bool = True


@dataclass(frozen=True)
class ExposureConfig:
    datasets: tuple[str, ...] = ("flagged",)
    kinds: tuple[str, ...] = ()  # empty: every kind
    reveal: bool = True


@dataclass(frozen=True)
class SessionsConfig:
    ttl_seconds: int = 900
    max_open: int = 256  # open sessions of all peers together, per protocol
    setup_lifetime_seconds: int = 86_400
    max_open_per_peer: int = 16  # one peer's abandoned sessions exhaust only its own quota


@dataclass(frozen=True)
class AuditConfig:
    """The compliance audit log (``HOME/audit/``); see README "Audit"."""

    enabled: bool = True
    transcripts: bool = False  # keep the exact bytes of every message sent
    transcript_max_bytes: int = 1 << 30  # older transcript segments are pruned beyond this
    checkpoint_every: int = 1000  # entries between signed checkpoints (and one at close)


@dataclass(frozen=True)
class JobsConfig:
    """Periodic jobs: which job files 'serve' schedules, and peer retries."""

    scheduled: tuple[str, ...] = ("jobs/*.toml",)  # globs, relative to the home
    peer_attempts: int = 3  # tries per unreachable peer in one run (1 = no retry)
    backoff_initial_seconds: float = 5.0  # wait before the first retry; doubles each time
    backoff_max_seconds: float = 60.0  # cap on one wait


@dataclass(frozen=True)
class TlsConfig:
    """Where the node's mutual-TLS material lives (paths relative to the home)."""

    ca: str = "tls/ca.crt"
    cert: str = "tls/node.crt"
    key: str = "tls/node.key"
    crl: str = "tls/crl.pem"
    insecure: bool = False  # plaintext, no authentication: only ever set explicitly


@dataclass(frozen=True)
class PaillierConfig:
    key_bits: int = 2048  # 2048 or 3072
    pool_size: int = 16_384  # precomputed randomness kept for the current key
    key_lifetime_seconds: int = 86_400  # a value holder's key (and its pool) is replaced after this


@dataclass(frozen=True)
class IntersectionSumConfig:
    # Which side's data may carry the values when a peer asks us:
    # "responder" = ours (the peer learns a sum over our values),
    # "requester" = the peer's (we learn a sum over its values).
    value_holders: tuple[str, ...] = ("requester", "responder")


@dataclass(frozen=True)
class FederationConfig:
    min_contributors: int = 3  # never below 3


@dataclass(frozen=True)
class NodeConfig:
    name: str
    listen: str = "127.0.0.1:7400"
    default_phone_region: str = "US"
    log_level: str = "INFO"
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    policy: PolicyConfig = field(default_factory=lambda: parse_policy({}, "defaults"))
    paillier: PaillierConfig = field(default_factory=PaillierConfig)
    intersection_sum: IntersectionSumConfig = field(default_factory=IntersectionSumConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # noise and epsilon budgets (issue 11)
    transport: Liveness = field(default_factory=Liveness)  # keepalive, silence limit (protos/PROTOCOL.md)
    server: ServerConfig = field(default_factory=ServerConfig)  # fair share, health listener, metrics
    prompts: PromptsConfig = field(default_factory=PromptsConfig)  # prompt-chain matching (issue 14)

    @property
    def canonicalization(self) -> CanonicalizationContext:
        return CanonicalizationContext(default_phone_region=self.default_phone_region)

    def exposed_kinds(self) -> tuple[str, ...]:
        return self.exposure.kinds or tuple(sorted(KINDS))


def render_config(name: str, listen: str) -> str:
    """The commented config.toml that ``psi-share init`` writes."""
    d, m, e, s = NodeConfig(name=name), MatchingConfig(), ExposureConfig(), SessionsConfig()
    return f"""# psi-share node configuration. Every key is described in the README.

[node]
name = "{name}"              # this lab's name, as peers know it
listen = "{listen}"  # address 'psi-share serve' binds
log_level = "{d.log_level}"

[identifiers]
default_phone_region = "{d.default_phone_region}"  # region for phone numbers without +country

[matching]
# Expected number of false matches over a requester's whole set (of up to
# max_set_size items) stays below this.
false_positive_rate = {m.false_positive_rate:g}
max_set_size = {m.max_set_size}   # largest set a peer may send, and we may send
workers = {m.workers}              # threads for blinding; one OpenMined object each
bucket_items = {m.bucket_items}     # above: bucketed setups of about this many items each

[engine]
kind = "local"             # or "dask": blinding and filters on a Dask cluster
scheduler = ""             # kind = "dask": the scheduler's address, e.g. "tcp://10.0.0.5:8786"
workers_read_sources = true  # kind = "dask": workers read Parquet datasets themselves (false: through the node)

[exposure]
datasets = {_toml_list(e.datasets)}  # what peers may match against
kinds = []                 # identifier kinds peers may match on; empty = all
reveal = {str(e.reveal).lower()}              # false: peers learn only counts

[sessions]
ttl_seconds = {s.ttl_seconds}               # an abandoned session is dropped after this
max_open = {s.max_open}                  # open sessions this node serves (per protocol, all peers)
max_open_per_peer = {s.max_open_per_peer}          # open sessions one peer may hold
setup_lifetime_seconds = {s.setup_lifetime_seconds}  # prepared filters (and their keys) are rotated after this
{_render_transport()}{render_server()}{_render_audit()}{_render_jobs()}{render_aggregates_config()}{render_privacy()}{render_prompts()}{_render_tls()}{render_policy()}"""


def _render_transport() -> str:
    t = Liveness()
    return f"""
[transport]
# How long a peer may stay silent in a call (send and acknowledge nothing)
# before this node cuts it, and how often quiet connections are pinged.
# See protos/PROTOCOL.md, "Timeouts and keepalive".
peer_silence_seconds = {t.peer_silence_seconds:g}
keepalive_seconds = {t.keepalive_seconds:g}
"""


def _render_audit() -> str:
    a = AuditConfig()
    return f"""
[audit]
# Every message to or from a peer is logged in HOME/audit/ (hash-chained,
# checkpoints signed with keys/audit.key) before it is sent.
enabled = {str(a.enabled).lower()}
transcripts = {str(a.transcripts).lower()}           # keep the exact bytes sent (for 'psi-share audit scan')
transcript_max_bytes = {a.transcript_max_bytes}  # retention: oldest transcripts are pruned beyond this
checkpoint_every = {a.checkpoint_every}        # entries between signed checkpoints
"""


def _render_jobs() -> str:
    j = JobsConfig()
    return f"""
[jobs]
# Job files whose [job.schedule] 'psi-share serve' runs (globs, relative to
# this home). Files without a schedule are skipped with a note.
scheduled = {_toml_list(j.scheduled)}
peer_attempts = {j.peer_attempts}              # tries per unreachable peer in one run (1 = no retry)
backoff_initial_seconds = {j.backoff_initial_seconds:g}    # wait before the first retry; doubles each retry
backoff_max_seconds = {j.backoff_max_seconds:g}       # cap on one wait
"""


def _render_tls() -> str:
    t = TlsConfig()
    return f"""
[tls]
# Mutual TLS with certificates from the federation CA (see 'psi-share pki').
# Paths are relative to the node home. Every peer connection needs them.
ca = "{t.ca}"      # the federation CA certificate
cert = "{t.cert}"  # this node's certificate (names this node)
key = "{t.key}"    # its private key (mode 0600)
crl = "{t.crl}"    # the federation's revocation list (re-read when it changes)
# insecure = true  # plaintext, NO authentication: never in production
"""


def render_aggregates_config() -> str:
    """The [paillier], [intersection_sum] and [federation] sections."""
    p, i, f = PaillierConfig(), IntersectionSumConfig(), FederationConfig()
    return f"""
[paillier]
key_bits = {p.key_bits}             # Paillier modulus when this node holds the values: 2048 or 3072
pool_size = {p.pool_size}           # randomness precomputed in idle time for the current key (0 = none)
key_lifetime_seconds = {p.key_lifetime_seconds}  # the key and its pool are replaced after this

[intersection_sum]
# Whose data may carry the values when a peer asks: "responder" (ours) and/or "requester" (theirs).
value_holders = {_toml_list(i.value_holders)}

[federation]
min_contributors = {f.min_contributors}        # a total is released only with at least this many labs (>= 3)
"""


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "node": {"name": str, "listen": str, "log_level": str},
    "identifiers": {"default_phone_region": str},
    "matching": {"false_positive_rate": float, "max_set_size": int, "workers": int, "bucket_items": int},
    "engine": {"kind": str, "scheduler": str, "workers_read_sources": bool},
    "exposure": {"datasets": list, "kinds": list, "reveal": bool},
    "sessions": {"ttl_seconds": int, "max_open": int, "max_open_per_peer": int, "setup_lifetime_seconds": int},
    "server": SERVER_SCHEMA,
    "audit": {"enabled": bool, "transcripts": bool, "transcript_max_bytes": int, "checkpoint_every": int},
    "jobs": {"scheduled": list, "peer_attempts": int, "backoff_initial_seconds": float, "backoff_max_seconds": float},
    "tls": {"ca": str, "cert": str, "key": str, "crl": str, "insecure": bool},
    "policy": {},  # nested tables: checked by policy_config.parse_policy
    "paillier": {"key_bits": int, "pool_size": int, "key_lifetime_seconds": int},
    "intersection_sum": {"value_holders": list},
    "federation": {"min_contributors": int},
    "privacy": PRIVACY_SCHEMA,  # type: ignore[dict-item]
    "prompts": PROMPTS_SCHEMA,  # type: ignore[dict-item]
    "transport": {"peer_silence_seconds": float, "keepalive_seconds": float},
}


def read_toml(path: Path, missing: str) -> dict[str, Any]:
    """Parse a TOML file; every failure is a ConfigError naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: Path) -> NodeConfig:
    return parse_config(read_toml(path, "no such config file (run 'psi-share init')"), str(path))


def parse_config(data: dict[str, Any], where: str) -> NodeConfig:
    _check_shape(data, where)
    node = data.get("node", {})
    if "name" not in node:
        raise ConfigError(f"{where}: [node] name is required")
    m, e, s = data.get("matching", {}), data.get("exposure", {}), data.get("sessions", {})
    cfg = NodeConfig(
        name=node["name"],
        listen=node.get("listen", NodeConfig.listen),
        log_level=node.get("log_level", NodeConfig.log_level).upper(),
        default_phone_region=data.get("identifiers", {}).get("default_phone_region", "US"),
        matching=MatchingConfig(
            false_positive_rate=float(m.get("false_positive_rate", DEFAULT_FALSE_POSITIVE_RATE)),
            max_set_size=m.get("max_set_size", MatchingConfig.max_set_size),
            workers=m.get("workers", MatchingConfig.workers),
            bucket_items=m.get("bucket_items", MatchingConfig.bucket_items),
        ),
        engine=EngineConfig(**data.get("engine", {})),
        exposure=ExposureConfig(
            datasets=tuple(e.get("datasets", ExposureConfig.datasets)),
            kinds=tuple(e.get("kinds", ())),
            reveal=e.get("reveal", ExposureConfig.reveal),
        ),
        sessions=SessionsConfig(
            ttl_seconds=s.get("ttl_seconds", SessionsConfig.ttl_seconds),
            max_open=s.get("max_open", SessionsConfig.max_open),
            max_open_per_peer=s.get("max_open_per_peer", SessionsConfig.max_open_per_peer),
            setup_lifetime_seconds=s.get("setup_lifetime_seconds", SessionsConfig.setup_lifetime_seconds),
        ),
        tls=_parse_tls(data.get("tls", {})),
        server=parse_server(data.get("server", {}), where),
        policy=parse_policy(data.get("policy", {}), where),
        privacy=parse_privacy(data.get("privacy", {}), where),
        prompts=parse_prompts(data.get("prompts", {}), where),
        **_parse_aggregates(data),
    )
    cfg = _with_audit(cfg, data.get("audit", {}))
    cfg = _with_jobs(cfg, data.get("jobs", {}))
    cfg = _with_transport(cfg, data.get("transport", {}), where)
    _check_values(cfg, where)
    _check_audit(cfg.audit, where)
    _check_jobs(cfg.jobs, where)
    _check_aggregates(cfg, where)
    return cfg


def _with_audit(cfg: NodeConfig, a: dict[str, Any]) -> NodeConfig:
    from dataclasses import replace

    return replace(cfg, audit=AuditConfig(
        enabled=a.get("enabled", AuditConfig.enabled),
        transcripts=a.get("transcripts", AuditConfig.transcripts),
        transcript_max_bytes=a.get("transcript_max_bytes", AuditConfig.transcript_max_bytes),
        checkpoint_every=a.get("checkpoint_every", AuditConfig.checkpoint_every),
    ))


def _with_transport(cfg: NodeConfig, t: dict[str, Any], where: str) -> NodeConfig:
    from dataclasses import replace

    d = Liveness()
    live = Liveness(
        peer_silence_seconds=float(t.get("peer_silence_seconds", d.peer_silence_seconds)),
        keepalive_seconds=float(t.get("keepalive_seconds", d.keepalive_seconds)),
    )
    for key in ("peer_silence_seconds", "keepalive_seconds"):
        if not 1 <= getattr(live, key) <= 86_400:
            raise ConfigError(f"{where}: [transport] {key} must be between 1 and 86400")
    return replace(cfg, transport=live)


def _check_audit(a: AuditConfig, where: str) -> None:
    if a.transcript_max_bytes < 1 << 16:
        raise ConfigError(f"{where}: [audit] transcript_max_bytes must be at least 65536")
    if a.checkpoint_every < 1:
        raise ConfigError(f"{where}: [audit] checkpoint_every must be at least 1")


def _parse_tls(t: dict[str, Any]) -> TlsConfig:
    d = TlsConfig()
    return TlsConfig(
        ca=t.get("ca", d.ca), cert=t.get("cert", d.cert), key=t.get("key", d.key), crl=t.get("crl", d.crl),
        insecure=t.get("insecure", False),
    )


def _with_jobs(cfg: NodeConfig, j: dict[str, Any]) -> NodeConfig:
    from dataclasses import replace

    d = JobsConfig()
    return replace(cfg, jobs=JobsConfig(
        scheduled=tuple(j.get("scheduled", d.scheduled)),
        peer_attempts=j.get("peer_attempts", d.peer_attempts),
        backoff_initial_seconds=float(j.get("backoff_initial_seconds", d.backoff_initial_seconds)),
        backoff_max_seconds=float(j.get("backoff_max_seconds", d.backoff_max_seconds)),
    ))


def _check_jobs(j: JobsConfig, where: str) -> None:
    if not 1 <= j.peer_attempts <= 10:
        raise ConfigError(f"{where}: [jobs] peer_attempts must be between 1 and 10")
    if not 0 <= j.backoff_initial_seconds <= 3600:
        raise ConfigError(f"{where}: [jobs] backoff_initial_seconds must be between 0 and 3600")
    if not j.backoff_initial_seconds <= j.backoff_max_seconds <= 3600:
        raise ConfigError(f"{where}: [jobs] backoff_max_seconds must be between backoff_initial_seconds and 3600")
    if any(not pattern.strip() for pattern in j.scheduled):
        raise ConfigError(f"{where}: [jobs] scheduled holds an empty pattern")


def _check_shape(data: dict[str, Any], where: str) -> None:
    for section, body in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        if section == "policy":
            continue
        for key, value in body.items():
            expected = _SCHEMA[section].get(key)
            if expected is None:
                raise ConfigError(f"{where}: unknown key [{section}] {key}")
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ConfigError(f"{where}: [{section}] {key} must be of type {expected.__name__}")
            if expected is list and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: [{section}] {key} must be a list of strings")


def _check_values(cfg: NodeConfig, where: str) -> None:
    from ..names import NAME_PATTERN

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: {key} {why}")

    if not NAME_PATTERN.match(cfg.name):
        raise bad("[node] name", "must be lowercase letters, digits, '-' or '_', starting with a letter")
    if ":" not in cfg.listen:
        raise bad("[node] listen", "must be HOST:PORT")
    if cfg.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("[node] log_level", "must be DEBUG, INFO, WARNING or ERROR")
    try:
        cfg.canonicalization
    except ValueError as exc:
        raise bad("[identifiers] default_phone_region", str(exc)) from None
    if not 0 < cfg.matching.false_positive_rate < 1:
        raise bad("[matching] false_positive_rate", "must be in (0, 1)")
    if cfg.matching.max_set_size < 1:
        raise bad("[matching] max_set_size", "must be at least 1")
    if not 1 <= cfg.matching.workers <= 64:
        raise bad("[matching] workers", "must be between 1 and 64")
    if cfg.matching.bucket_items < 1024:
        raise bad("[matching] bucket_items", "must be at least 1024")
    if cfg.engine.kind not in ("local", "dask"):
        raise bad("[engine] kind", 'must be "local" or "dask"')
    if cfg.engine.kind == "dask" and not cfg.engine.scheduler:
        raise bad("[engine] scheduler", 'is required with kind = "dask" (the scheduler\'s address)')
    for kind in cfg.exposure.kinds:
        if kind not in KINDS:
            raise bad("[exposure] kinds", f"names unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    for ds in cfg.exposure.datasets:
        if not NAME_PATTERN.match(ds):
            raise bad("[exposure] datasets", f"holds an invalid dataset name {ds!r}")
    for key in ("ttl_seconds", "max_open", "max_open_per_peer", "setup_lifetime_seconds"):
        if getattr(cfg.sessions, key) < 1:
            raise bad(f"[sessions] {key}", "must be at least 1")


def _parse_aggregates(data: dict[str, Any]) -> dict[str, Any]:
    p, i, f = data.get("paillier", {}), data.get("intersection_sum", {}), data.get("federation", {})
    return {
        "paillier": PaillierConfig(
            key_bits=p.get("key_bits", PaillierConfig.key_bits),
            pool_size=p.get("pool_size", PaillierConfig.pool_size),
            key_lifetime_seconds=p.get("key_lifetime_seconds", PaillierConfig.key_lifetime_seconds),
        ),
        "intersection_sum": IntersectionSumConfig(
            value_holders=tuple(i.get("value_holders", IntersectionSumConfig.value_holders)),
        ),
        "federation": FederationConfig(min_contributors=f.get("min_contributors", FederationConfig.min_contributors)),
    }


def _check_aggregates(cfg: NodeConfig, where: str) -> None:
    if cfg.paillier.key_bits not in (2048, 3072):
        raise ConfigError(f"{where}: [paillier] key_bits must be 2048 or 3072")
    if not 0 <= cfg.paillier.pool_size <= 10_000_000:
        raise ConfigError(f"{where}: [paillier] pool_size must be between 0 and 10000000")
    if cfg.paillier.key_lifetime_seconds < 1:
        raise ConfigError(f"{where}: [paillier] key_lifetime_seconds must be at least 1")
    for holder in cfg.intersection_sum.value_holders:
        if holder not in ("requester", "responder"):
            raise ConfigError(f"{where}: [intersection_sum] value_holders may hold only \"requester\" and \"responder\"")
    if not 3 <= cfg.federation.min_contributors <= 64:
        raise ConfigError(f"{where}: [federation] min_contributors must be between 3 and 64 (never below 3)")
