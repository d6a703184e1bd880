"""Node configuration (node/config.py), job files (node/jobs.py) and item sets (node/itemsets.py)."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from psi_share.errors import ConfigError
from psi_share.identifiers import KINDS, domain_separated_item
from psi_share.node.config import (
    ExposureConfig,
    MatchingConfig,
    NodeConfig,
    SessionsConfig,
    load_config,
    parse_config,
    render_config,
)
from psi_share.node.home import init_home
from psi_share.node.server_config import SCHEMA as SERVER_SCHEMA
from psi_share.node.server_config import ServerConfig
from psi_share.transport.limits import CallLimits
from psi_share.node.psi.itemsets import build_item_set
from psi_share.jobs.spec import load_job
from psi_share.protocols.psi import DEFAULT_FALSE_POSITIVE_RATE, Mode
from psi_share.store.db import IdentifierRow

WHERE = "/etc/psi/config.toml"


def cfg(**sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"node": {"name": "lab-a"}}
    for name, body in sections.items():
        data.setdefault(name, {}).update(body)
    return data


# -- config ----------------------------------------------------------------------


def test_defaults() -> None:
    c = parse_config({"node": {"name": "lab-a"}}, WHERE)
    assert c == NodeConfig(name="lab-a")
    assert c.listen == "127.0.0.1:7400"
    assert c.log_level == "INFO"
    assert c.default_phone_region == "US"
    assert c.matching == MatchingConfig(false_positive_rate=DEFAULT_FALSE_POSITIVE_RATE, max_set_size=1_000_000, workers=2)
    assert c.exposure == ExposureConfig(datasets=("flagged",), kinds=(), reveal=True)
    assert c.sessions == SessionsConfig(ttl_seconds=900, max_open=256, setup_lifetime_seconds=86_400, max_open_per_peer=16)
    assert c.server.limits == CallLimits() and (c.server.health_listen, c.server.metrics_listen) == ("", "")
    assert c.exposed_kinds() == tuple(sorted(KINDS))
    assert c.canonicalization.default_phone_region == "US"


def test_every_key_is_read() -> None:
    c = parse_config(
        {
            "node": {"name": "lab-b", "listen": "0.0.0.0:9000", "log_level": "debug"},
            "identifiers": {"default_phone_region": "GB"},
            "matching": {"false_positive_rate": 1e-6, "max_set_size": 500, "workers": 4},
            "exposure": {"datasets": ["flagged", "accounts"], "kinds": ["phone", "email"], "reveal": False},
            "sessions": {"ttl_seconds": 60, "max_open": 3, "setup_lifetime_seconds": 120, "max_open_per_peer": 2},
            "server": {"threads": 8, "calls_per_peer": 2, "calls_per_second": 5, "call_burst": 7,
                       "call_max_seconds": 30, "refusal_log_window_seconds": 1.5,
                       "health_listen": "127.0.0.1:7401", "metrics_listen": "0.0.0.0:9464"},
        },
        WHERE,
    )
    assert c == NodeConfig(
        name="lab-b", listen="0.0.0.0:9000", default_phone_region="GB", log_level="DEBUG",
        matching=MatchingConfig(1e-6, 500, 4),
        exposure=ExposureConfig(("flagged", "accounts"), ("phone", "email"), False),
        sessions=SessionsConfig(60, 3, 120, 2),
        server=ServerConfig(CallLimits(8, 2, 5.0, 7, call_max_seconds=30.0, refusal_log_window_seconds=1.5),
                            "127.0.0.1:7401", "0.0.0.0:9464"),
    )
    assert c.exposed_kinds() == ("phone", "email")
    assert c.canonicalization.default_phone_region == "GB"


def test_integer_false_positive_rate_is_not_a_type_error() -> None:
    # TOML has no "1e-9 as int", but an integer where a float is expected is
    # fine in principle: it is the range check that must refuse 0 and 1.
    for value in (0, 1):
        with pytest.raises(ConfigError, match=r"\[matching\] false_positive_rate must be in \(0, 1\)"):
            parse_config(cfg(matching={"false_positive_rate": value}), WHERE)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"node": {}}, "[node] name"),
        ({}, "[node] name"),
        (cfg(daemon={"port": 1}), "unknown section [daemon]"),
        ({"node": {"name": "lab-a"}, "matching": 5}, "[matching] must be a table"),
        (cfg(matching={"threads": 2}), "unknown key [matching] threads"),
        (cfg(node={"nmae": "x"}), "unknown key [node] nmae"),
        (cfg(exposure={"reveals": True}), "unknown key [exposure] reveals"),
        # wrong types
        (cfg(node={"listen": 7400}), "[node] listen must be of type str"),
        ({"node": {"name": 5}}, "[node] name must be of type str"),
        (cfg(matching={"workers": "2"}), "[matching] workers must be of type int"),
        (cfg(matching={"max_set_size": 1.5}), "[matching] max_set_size must be of type int"),
        (cfg(matching={"false_positive_rate": "1e-9"}), "[matching] false_positive_rate must be of type float"),
        (cfg(exposure={"kinds": "email"}), "[exposure] kinds must be of type list"),
        (cfg(exposure={"datasets": ["flagged", 3]}), "[exposure] datasets must be a list of strings"),
        (cfg(exposure={"reveal": "yes"}), "[exposure] reveal must be of type bool"),
        (cfg(exposure={"reveal": 1}), "[exposure] reveal must be of type bool"),
        (cfg(identifiers={"default_phone_region": 44}), "[identifiers] default_phone_region must be of type str"),
        # a bool is not an int (nor a float), although Python thinks so
        (cfg(matching={"max_set_size": True}), "[matching] max_set_size must be of type int"),
        (cfg(matching={"workers": False}), "[matching] workers must be of type int"),
        (cfg(sessions={"ttl_seconds": True}), "[sessions] ttl_seconds must be of type int"),
        (cfg(matching={"false_positive_rate": True}), "[matching] false_positive_rate must be of type float"),
        # out of range
        (cfg(matching={"false_positive_rate": 1.5}), "[matching] false_positive_rate"),
        (cfg(matching={"false_positive_rate": -1e-9}), "[matching] false_positive_rate"),
        (cfg(matching={"false_positive_rate": 0.0}), "[matching] false_positive_rate"),
        (cfg(matching={"false_positive_rate": math.nan}), "[matching] false_positive_rate"),
        (cfg(matching={"false_positive_rate": math.inf}), "[matching] false_positive_rate"),
        (cfg(matching={"max_set_size": 0}), "[matching] max_set_size"),
        (cfg(matching={"workers": 0}), "[matching] workers"),
        (cfg(matching={"workers": 65}), "[matching] workers"),
        (cfg(sessions={"ttl_seconds": 0}), "[sessions] ttl_seconds"),
        (cfg(sessions={"max_open": -1}), "[sessions] max_open"),
        (cfg(sessions={"setup_lifetime_seconds": 0}), "[sessions] setup_lifetime_seconds"),
        (cfg(sessions={"max_open_per_peer": 0}), "[sessions] max_open_per_peer"),
        (cfg(server={"threads": 2}), "[server] threads"),
        (cfg(server={"calls_per_peer": 0}), "[server] calls_per_peer"),
        (cfg(server={"threads": 8, "calls_per_peer": 9}), "[server] calls_per_peer must not exceed threads"),
        (cfg(server={"calls_per_second": 0}), "[server] calls_per_second"),
        (cfg(server={"stream_idle_seconds": 60}), "unknown key [server] stream_idle_seconds"),
        (cfg(server={"health_listen": "0.0.0.0:7401"}), "[server] health_listen must be a loopback address"),
        (cfg(server={"metrics_listen": "9464"}), "[server] metrics_listen must be HOST:PORT"),
        (cfg(server={"refusal_window": 1}), "unknown key [server] refusal_window"),
        # values
        (cfg(exposure={"kinds": ["email", "fax"]}), "[exposure] kinds"),
        (cfg(exposure={"kinds": ["Email"]}), "[exposure] kinds"),
        (cfg(exposure={"datasets": ["Flagged Data"]}), "[exposure] datasets"),
        (cfg(identifiers={"default_phone_region": "us"}), "[identifiers] default_phone_region"),
        (cfg(identifiers={"default_phone_region": "XX"}), "[identifiers] default_phone_region"),
        (cfg(identifiers={"default_phone_region": ""}), "[identifiers] default_phone_region"),
        ({"node": {"name": "Lab A"}}, "[node] name"),
        ({"node": {"name": ""}}, "[node] name"),
        (cfg(node={"listen": "localhost"}), "[node] listen"),
        (cfg(node={"log_level": "verbose"}), "[node] log_level"),
        # [privacy]
        (cfg(privacy={"enabled": "no"}), "[privacy] enabled must be of type bool"),
        (cfg(privacy={"sum_clip_bound": 1.5}), "[privacy] sum_clip_bound must be of type int"),
        (cfg(privacy={"sum_clip_bound": 0}), "[privacy] sum_clip_bound"),
        (cfg(privacy={"sum_clip_bound": 2**64}), "[privacy] sum_clip_bound"),
        (cfg(privacy={"figure_sensitivity": 0}), "[privacy] figure_sensitivity"),
        (cfg(privacy={"epsilon_per_release": 0}), "[privacy] epsilon_per_release"),
        (cfg(privacy={"epsilon_per_release": math.nan}), "[privacy] epsilon_per_release"),
        (cfg(privacy={"epsilon_per_release": 2.0, "daily_epsilon_budget": 1.0}), "[privacy] daily_epsilon_budget"),
        (cfg(privacy={"daily_epsilon_budget": math.inf}), "[privacy] daily_epsilon_budget"),
        (cfg(privacy={"epsilon_per_release": 1e-12, "sum_clip_bound": 2**50}), "[privacy] sum_clip_bound / epsilon"),
        (cfg(privacy={"clip": 5}), "unknown key [privacy] clip"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: ")
    assert key in message


def test_boundaries_are_accepted() -> None:
    c = parse_config(cfg(matching={"workers": 64, "max_set_size": 1, "false_positive_rate": 0.5},
                         sessions={"ttl_seconds": 1, "max_open": 1, "setup_lifetime_seconds": 1},
                         exposure={"datasets": [], "kinds": []}), WHERE)
    assert (c.matching.workers, c.matching.max_set_size) == (64, 1)
    assert c.exposure.datasets == ()


@pytest.mark.parametrize("name, listen", [("lab-a", "127.0.0.1:7400"), ("x", "0.0.0.0:0"), ("lab_b-2", "[::1]:7401")])
def test_rendered_config_parses_back_to_the_defaults(tmp_path: Path, name: str, listen: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(render_config(name, listen), encoding="utf-8")
    assert load_config(path) == NodeConfig(name=name, listen=listen)
    # every key of every section is written out, so the file documents them all
    data = tomllib.loads(path.read_text())
    assert set(data) == {
        "node", "identifiers", "matching", "exposure", "sessions", "audit", "jobs", "tls", "policy",
        "paillier", "intersection_sum", "federation", "transport", "server", "privacy", "engine",
    }
    assert set(data["engine"]) == {"kind", "scheduler", "workers_read_sources"}
    assert set(data["privacy"]) == {"enabled", "epsilon_per_release", "daily_epsilon_budget", "sum_clip_bound",
                                    "figure_sensitivity"}
    assert set(data["transport"]) == {"peer_silence_seconds", "keepalive_seconds"}
    assert set(data["server"]) == set(SERVER_SCHEMA)
    assert set(data["tls"]) == {"ca", "cert", "key", "crl"}  # insecure is never written, only set by hand
    assert set(data["audit"]) == {"enabled", "transcripts", "transcript_max_bytes", "checkpoint_every"}
    assert set(data["jobs"]) == {"scheduled", "peer_attempts", "backoff_initial_seconds", "backoff_max_seconds"}
    assert set(data["paillier"]) == {"key_bits", "pool_size", "key_lifetime_seconds"}
    assert set(data["matching"]) == {"false_positive_rate", "max_set_size", "workers", "bucket_items"}
    assert set(data["sessions"]) == {"ttl_seconds", "max_open", "max_open_per_peer", "setup_lifetime_seconds"}


def test_init_home_writes_a_loadable_config(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", "lab-c", "127.0.0.1:7402")
    assert home.load_config() == NodeConfig(name="lab-c", listen="127.0.0.1:7402")
    with pytest.raises(ConfigError, match="already holds a node"):
        init_home(tmp_path / "home", "lab-c", "127.0.0.1:7402")
    with pytest.raises(ConfigError, match=r"invalid node name"):
        init_home(tmp_path / "other", "Bad Name", "127.0.0.1:7402")


@pytest.mark.parametrize(
    "name, listen",
    [('lab"a', "127.0.0.1:7400"), ("lab-a", '127.0.0.1:7400"'), ("lab\\a", "127.0.0.1:7400")],
    ids=["quote-in-name", "quote-in-listen", "backslash-in-name"],
)
def test_init_home_refuses_unrenderable_values_with_config_error(tmp_path: Path, name: str, listen: str) -> None:
    with pytest.raises(ConfigError):
        init_home(tmp_path / "home", name, listen)


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    broken = tmp_path / "broken.toml"
    broken.write_text('[node]\nname = "lab-a\n')
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(broken)
    assert str(broken) in str(info.value)
    typo = tmp_path / "typo.toml"
    typo.write_text('[node]\nname = "lab-a"\n[matching]\nworkerz = 2\n')
    with pytest.raises(ConfigError, match=r"unknown key \[matching\] workerz") as info:
        load_config(typo)
    assert str(typo) in str(info.value)


# -- job files ---------------------------------------------------------------------

GOOD_JOB = """\
[job]
name = "campaign-weekly"
participants = ["lab-a", "lab-b", "lab-c"]
dataset = "flagged"
peer_dataset = "shared"
kinds = ["email", "phone", "payment_fingerprint", "ip_prefix"]
mode = "count"
"""


def job_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_job_file(tmp_path: Path) -> None:
    path = job_file(tmp_path, GOOD_JOB)
    job = load_job(path)
    assert job.name == "campaign-weekly"
    assert job.participants == ("lab-a", "lab-b", "lab-c")
    assert (job.dataset, job.peer_dataset) == ("flagged", "shared")
    assert job.kinds == ("email", "phone", "payment_fingerprint", "ip_prefix")
    assert job.mode is Mode.COUNT
    assert job.source == str(path)
    assert job.peers_for("lab-b") == ("lab-a", "lab-c")
    assert job.peers_for("lab-z") == ("lab-a", "lab-b", "lab-c")
    assert job.parameters() == {
        "participants": ["lab-a", "lab-b", "lab-c"], "dataset": "flagged", "peer_dataset": "shared",
        "kinds": ["email", "phone", "payment_fingerprint", "ip_prefix"], "mode": "count",
    }


def test_job_defaults(tmp_path: Path) -> None:
    text = '[job]\nname = "j"\nparticipants = ["lab-a"]\ndataset = "flagged"\nkinds = ["email"]\n'
    job = load_job(job_file(tmp_path, text))
    assert job.peer_dataset == "flagged"
    assert job.mode is Mode.REVEAL


def _without(key: str) -> str:
    return "".join(line + "\n" for line in GOOD_JOB.splitlines() if not line.startswith(f"{key} ="))


def _replace(key: str, value: str) -> str:
    return "".join((f"{key} = {value}" if line.startswith(f"{key} =") else line) + "\n" for line in GOOD_JOB.splitlines())


@pytest.mark.parametrize(
    "text, needle",
    [
        (_without("name"), "missing name"),
        (_without("participants"), "missing participants"),
        (_without("dataset"), "missing dataset"),
        (_without("kinds"), "missing kinds"),
        (GOOD_JOB + 'schedule = "daily"\n', "[job.schedule] must be a table"),
        (GOOD_JOB + "[extra]\nx = 1\n", "exactly one [job] table"),
        ('job = "x"\n', "exactly one [job] table"),
        ("", "exactly one [job] table"),
        (_replace("kinds", '["email", "fax"]'), "unknown kind 'fax'"),
        (_replace("kinds", '["email", "email"]'), "kinds lists a name twice"),
        (_replace("kinds", "[]"), "kinds must be a non-empty list"),
        (_replace("participants", '["lab-a", "lab-b", "lab-a"]'), "participants lists a name twice"),
        (_replace("participants", '"lab-a"'), "participants must be a non-empty list"),
        (_replace("participants", '["lab-a", 2]'), "participants must be a non-empty list"),
        (_replace("participants", '["lab-a", "Lab B"]'), "participants holds an invalid node name"),
        (_replace("mode", '"maybe"'), "mode must be"),
        (_replace("mode", '"REVEAL"'), "mode must be"),
        (_replace("mode", "1"), "mode must be"),
        (_replace("name", '"Weekly Job"'), "name must be a lowercase name"),
        (_replace("name", "3"), "name must be a lowercase name"),
        (_replace("dataset", '"../etc"'), "dataset must be a lowercase name"),
        (_replace("peer_dataset", '""'), "peer_dataset must be a lowercase name"),
        ('[job\nname = "x"\n', "invalid TOML"),
    ],
)
def test_bad_job_file(tmp_path: Path, text: str, needle: str) -> None:
    path = job_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_job(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert needle in message


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such job file") as info:
        load_job(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


# -- item sets ------------------------------------------------------------------


def test_two_actors_sharing_an_identifier_give_one_item_with_two_owners() -> None:
    rows = [
        IdentifierRow("a-1", "payment_fingerprint", 1, "fp_card1", "fp_card1"),
        IdentifierRow("a-2", "payment_fingerprint", 1, "fp_card1", "fp_card1"),
        IdentifierRow("a-2", "email", 1, "x@example.com", "X@example.com"),
    ]
    s = build_item_set(rows)
    assert len(s) == 2
    card = domain_separated_item("payment_fingerprint", "fp_card1")
    email = domain_separated_item("email", "x@example.com")
    assert set(s.items) == {card, email}
    owners = dict(zip(s.items, s.owners))
    assert owners[card] == (("a-1", "payment_fingerprint"), ("a-2", "payment_fingerprint"))
    assert owners[email] == (("a-2", "email"),)
    assert len(set(s.items)) == len(s.items)  # distinct, as PsiRequester demands


def test_items_are_domain_separated_by_kind_and_version() -> None:
    rows = [
        IdentifierRow("a-1", "device_id", 1, "abc123x", "abc123x"),
        IdentifierRow("a-1", "account_handle", 1, "abc123x", "abc123x"),
        IdentifierRow("a-2", "account_handle", 2, "abc123x", "abc123x"),
    ]
    s = build_item_set(rows)
    assert len(s) == 3
    assert set(s.items) == {
        "psi-share/1/device_id/v1/abc123x",
        "psi-share/1/account_handle/v1/abc123x",
        "psi-share/1/account_handle/v2/abc123x",
    }
    assert sorted(s.items) == list(s.items)  # deterministic order


def test_item_set_order_does_not_depend_on_row_order() -> None:
    rows = [IdentifierRow(f"a-{i}", "email", 1, f"u{i % 5}@example.com", "") for i in range(12)]
    a, b = build_item_set(rows), build_item_set(list(reversed(rows)))
    assert a.items == b.items
    assert [set(o) for o in a.owners] == [set(o) for o in b.owners]
    assert sum(len(o) for o in a.owners) == 12


def test_empty_item_set() -> None:
    s = build_item_set([])
    assert len(s) == 0 and s.items == () and s.owners == ()


@pytest.mark.parametrize("engine, says", [
    ('kind = "spark"', '[engine] kind'),
    ('kind = "dask"', '[engine] scheduler'),
    ('kind = "dask"\nthreads = 4', 'threads'),
])
def test_engine_config_errors_name_the_key(tmp_path: Path, engine: str, says: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[node]\nname = "lab-a"\n[engine]\n{engine}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(path)
