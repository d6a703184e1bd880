"""The ``[privacy]`` section: differential privacy on released sums (issue 11).

Parsed apart from :mod:`.config` so that the section's keys, defaults and
checks sit in one place; ``config.py`` only hooks it in. Every key is
documented in the README ("Configuration", "Differential privacy").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..crypto.paillier import MAX_VALUE
from ..errors import ConfigError, LocalProtocolError
from ..privacy import DEFAULT_DAILY_BUDGET, DEFAULT_EPSILON_PER_RELEASE, laplace_scale

#: Keys of [privacy] and their TOML types (checked by config._check_shape).
SCHEMA: dict[str, type] = {"enabled": bool, "epsilon_per_release": float, "daily_epsilon_budget": float,
                           "sum_clip_bound": int}

#: Per identifier item: the README's "per deployment" bound needs a starting
#: point; 10 000 covers e.g. a day's API requests of an ordinary account.
DEFAULT_SUM_CLIP_BOUND = 10_000


@dataclass(frozen=True)
class PrivacyConfig:
    """Noise on what a peer learns from us, and how much it may learn per UTC day.

    ``enabled = false`` releases exact figures, clips nothing and charges no
    budget: for tests and for peers covered by a contract instead.
    """

    enabled: bool = True
    epsilon_per_release: float = float(DEFAULT_EPSILON_PER_RELEASE)
    daily_epsilon_budget: float = float(DEFAULT_DAILY_BUDGET)
    sum_clip_bound: int = DEFAULT_SUM_CLIP_BOUND  # an identifier's amount is clipped to [0, bound]

    @property
    def epsilon(self) -> Fraction:
        """epsilon_per_release as the decimal it is written as (0.1 is 1/10)."""
        return Fraction(repr(float(self.epsilon_per_release)))

    @property
    def budget(self) -> Fraction:
        return Fraction(repr(float(self.daily_epsilon_budget)))


def parse_privacy(p: dict[str, Any], where: str) -> PrivacyConfig:
    d = PrivacyConfig()
    cfg = PrivacyConfig(
        enabled=p.get("enabled", d.enabled),
        epsilon_per_release=float(p.get("epsilon_per_release", d.epsilon_per_release)),
        daily_epsilon_budget=float(p.get("daily_epsilon_budget", d.daily_epsilon_budget)),
        sum_clip_bound=p.get("sum_clip_bound", d.sum_clip_bound),
    )
    if not 0 < cfg.epsilon_per_release <= 100:
        raise ConfigError(f"{where}: [privacy] epsilon_per_release must be in (0, 100]")
    if not cfg.epsilon_per_release <= cfg.daily_epsilon_budget <= 10_000:
        raise ConfigError(f"{where}: [privacy] daily_epsilon_budget must be between epsilon_per_release and 10000")
    if not 1 <= cfg.sum_clip_bound <= MAX_VALUE:
        raise ConfigError(f"{where}: [privacy] sum_clip_bound must be between 1 and {MAX_VALUE}")
    try:
        laplace_scale(cfg.epsilon, cfg.sum_clip_bound)
    except LocalProtocolError:
        raise ConfigError(f"{where}: [privacy] sum_clip_bound / epsilon_per_release is too large a noise scale") from None
    return cfg


def render_privacy() -> str:
    """The [privacy] section ``psi-share init`` writes."""
    d = PrivacyConfig()
    return f"""
[privacy]
enabled = true                    # noise on every sum a peer learns from us; false: exact figures
epsilon_per_release = {d.epsilon_per_release}         # charged to the peer for each released sum
daily_epsilon_budget = {d.daily_epsilon_budget}        # per peer per UTC day; past it, RESOURCE_EXHAUSTED
sum_clip_bound = {d.sum_clip_bound}           # an identifier's amount is clipped to [0, this] before it is summed
"""
