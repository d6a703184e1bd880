"""The ``[prompts]`` section: prompt-chain matching (issue 14).

Parsed apart from :mod:`..config` so that the section's keys, defaults and
checks sit in one place; ``config.py`` only hooks it in. Every key is
documented in the README ("Configuration", "Prompt chains").

Without a ``seed`` the node does not match prompts: importing a prompt file
and any session naming the ``prompt`` kind are refused with a message
saying so. The seed is the federation's (the same at every member); it is
never printed, logged or sent (only its id, see
:attr:`psi_share.prompts.PromptParams.seed_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...prompts import DEFAULT_CONTAINMENT, DEFAULT_MAX_ITEMS_PER_ACTOR, DEFAULT_THRESHOLD, PromptParams

#: Keys of [prompts] and their TOML types (checked by config._check_shape).
SCHEMA: dict[str, type] = {
    "seed": str, "threshold": float, "bands": int, "rows": int, "min_bands": int, "max_items_per_actor": int,
    "stoplist": list, "containment": float, "benign_min_actors": int,
}


@dataclass(frozen=True)
class PromptsConfig:
    """Prompt matching: the parameter set, the per-actor cap and the exclusions."""

    seed: str = ""  # 64 hex digits, the federation's; "" = this node does not match prompts
    threshold: float = DEFAULT_THRESHOLD
    bands: int = 0  # 0: from the threshold (psi_share.prompts.RECOMMENDED)
    rows: int = 0
    min_bands: int = 0  # 0: from the threshold; with bands and rows, 1 unless given
    max_items_per_actor: int = DEFAULT_MAX_ITEMS_PER_ACTOR
    stoplist: tuple[str, ...] = ()  # stoplist files, relative to the home
    containment: float = DEFAULT_CONTAINMENT
    benign_min_actors: int = 5  # a shingle sent by this many benign actors is "common"
    _params: PromptParams | None = None

    def __repr__(self) -> str:  # the seed stays out of logs and tracebacks
        return (f"PromptsConfig(enabled={self.enabled}, bands={self.bands}, rows={self.rows}, "
                f"max_items_per_actor={self.max_items_per_actor}, stoplist={self.stoplist!r})")

    @property
    def enabled(self) -> bool:
        return self._params is not None

    @property
    def params(self) -> PromptParams:
        """The parameter set; ConfigError when [prompts] has no seed."""
        if self._params is None:
            raise ConfigError("this node does not match prompts: set [prompts] seed (the federation's seed, "
                              "64 hexadecimal digits) in config.toml")
        return self._params

    def stoplist_paths(self, home: Path) -> list[Path]:
        return [p if p.is_absolute() else home / p for p in map(Path, self.stoplist)]


def parse_prompts(p: dict[str, Any], where: str) -> PromptsConfig:
    section = f"{where}: [prompts]"
    d = PromptsConfig()
    if ("bands" in p or "rows" in p or "min_bands" in p) and "threshold" in p:
        raise ConfigError(f"{section} give a threshold or bands and rows (and min_bands), not both")
    params = None
    if p.get("seed", ""):
        bands, rows = p.get("bands"), p.get("rows")
        params = PromptParams.from_config(
            p["seed"], threshold=None if bands or rows else float(p.get("threshold", d.threshold)),
            bands=bands, rows=rows, min_bands=p.get("min_bands"), where=section,
        )
    cfg = PromptsConfig(
        seed=p.get("seed", ""), threshold=float(p.get("threshold", d.threshold)),
        bands=params.bands if params else p.get("bands", 0), rows=params.rows if params else p.get("rows", 0),
        min_bands=params.min_bands if params else p.get("min_bands", 0),
        max_items_per_actor=p.get("max_items_per_actor", d.max_items_per_actor),
        stoplist=tuple(p.get("stoplist", ())), containment=float(p.get("containment", d.containment)),
        benign_min_actors=p.get("benign_min_actors", d.benign_min_actors), _params=params,
    )
    if not p.get("seed", "") and set(p) - {"seed"}:
        raise ConfigError(f"{section} has settings but no seed: without the federation seed this node "
                          "cannot match prompts")
    if params is not None and not params.bands <= cfg.max_items_per_actor <= 1_000_000:
        raise ConfigError(f"{section} max_items_per_actor must be between bands ({params.bands}) and 1000000")
    if not 0 < cfg.containment <= 1:
        raise ConfigError(f"{section} containment must be in (0, 1]")
    if not 2 <= cfg.benign_min_actors <= 1_000_000:
        raise ConfigError(f"{section} benign_min_actors must be at least 2 (one actor's prompts are not common)")
    return cfg


def render_prompts() -> str:
    """The [prompts] section ``psi-share init`` writes (commented out: it needs the federation's seed)."""
    d = PromptsConfig()
    return f"""
# Prompt-chain matching (README "Prompt chains"); off until the federation's seed is set.
# [prompts]
# seed = "..."                    # the federation seed: 64 hex digits, the same at every member
# threshold = {d.threshold}                 # Jaccard similarity of word 2-shingles (0.5 0.6 0.7 0.8 0.9), or bands + rows [+ min_bands]
# max_items_per_actor = {d.max_items_per_actor}       # band items one actor may bring to a session
# stoplist = []                   # the federation's stoplist files of common benign templates
# containment = {d.containment}               # a prompt at least this much made of an excluded template is removed
# benign_min_actors = {d.benign_min_actors}           # 'import --benign': a shingle this many benign actors send is common
"""
