"""The parameter set two nodes agree on before they match prompts.

A band item only means something to a peer that computed it with the same
normalisation, shingle size, MinHash functions and banding. All of that is a
:class:`PromptParams`; two nodes compare :meth:`PromptParams.describe`
before a prompt session (``describe`` never contains the seed itself, only
an identifier of it), and :func:`check_agreement` refuses with
:class:`~psi_share.errors.VersionMismatch` (gRPC ``FAILED_PRECONDITION``)
naming every field that differs, as for canonicalization versions.

The federation seed
-------------------
32 random bytes, written as 64 hexadecimal digits, chosen once by the
federation (:func:`new_federation_seed`) and given to every member out of
band, like the CA certificate. It keys the shingle hash and seeds the MinHash
permutations, so signatures and band items cannot be computed without it.
It is not a secret *between members*: every member can compute the band
items of any text it guesses (see the README, "Prompt chains"). It keeps
outsiders from doing so, and a new seed makes every earlier band item
useless. Only :attr:`PromptParams.seed_id`, a hash of the seed under its own
domain tag, is ever shown or sent.

LSH banding and the decision
----------------------------
The signature has ``bands * rows`` MinHash values, cut into ``bands`` bands
of ``rows`` values. Two prompts whose shingle sets have Jaccard similarity
``s`` agree on one MinHash value with probability ``s``, on a whole band
with ``s**rows``, and (the bands being independent) on ``K ~ Binomial(bands,
s**rows)`` band items. Two prompts are **near-duplicates** when they share at
least ``min_bands`` band items, with probability :func:`match_probability`
``= P(K >= min_bands)``; the same rule decides everywhere: an actor's
near-duplicates are folded (:mod:`.prepare`), clusters form chains, and a
template of ours is *found* at a peer when at least ``min_bands`` of its band
items matched there. Requiring several bands, each short, gives a steeper
curve than one band of many rows for the same number of items: one chance
agreement of a near-miss no longer decides alone, which is what a template
seen through many fillings needs (each filling is another chance).

For each threshold :data:`RECOMMENDED` holds the ``(bands, rows, min_bands)``
of :func:`optimal_banding`: at most :data:`RECOMMENDED_MAX_BANDS` bands (each
band is one PSI item per prompt), at most :data:`RECOMMENDED_MAX_VALUES`
MinHash values, at least :data:`RECOMMENDED_MIN_ROWS` rows per band,
``min_bands`` at most :data:`RECOMMENDED_MAX_MIN_BANDS`, the triple that
minimises the area under the false-positive part of the curve
below the threshold plus the false-negative part above it (datasketch's
rule for ``(bands, rows)``, extended to ``min_bands``). Why at least four
rows: the requester counts a template's items found anywhere in the peer's
set, so every peer prompt of unrelated but similar wording adds chances of a
chance band; a band of 3 rows agrees for a 0.2-similar pair with probability
0.8 %, of 4 rows with 0.16 %, and on the synthetic campaign 3-row bands let a
template collect 8 chance bands from 6 different peer templates (README,
"Prompt chains"). The README's table is
printed from it (``scripts/bench_prompts.py --table``) and
``tests/test_prompts_signature.py`` recomputes it independently.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, VersionMismatch
from .normalise import NORMALISATION_VERSION

__all__ = [
    "DEFAULT_SHINGLE_WORDS",
    "DEFAULT_THRESHOLD",
    "banding_rows",
    "optimal_banding",
    "MINHASH_SCHEME",
    "RECOMMENDED",
    "PromptParams",
    "check_agreement",
    "match_probability",
    "new_federation_seed",
]

#: The MinHash construction: datasketch 2.0.0's "legacy" permutations
#: ``(a*h + b) mod (2^61 - 1)`` truncated to 32 bits, ``a, b`` drawn from
#: numpy's ``RandomState`` seeded from the federation seed, over a 32-bit
#: keyed BLAKE2b hash of each shingle. Changing any of it changes every
#: signature: it needs a new name here.
MINHASH_SCHEME = "datasketch-legacy/blake2b-32"
SEED_BYTES = 32
MAX_BANDS = 64
MAX_ROWS = 32
MAX_SHINGLE_WORDS = 8

DEFAULT_SHINGLE_WORDS = 2
RECOMMENDED_MAX_BANDS = 48
RECOMMENDED_MAX_VALUES = 192
RECOMMENDED_MAX_MIN_BANDS = 8
RECOMMENDED_MIN_ROWS = 4

#: threshold -> (bands, rows, min_bands): :func:`optimal_banding` of each
#: threshold, pinned here (computing it takes a second). Changing an entry's
#: bands or rows changes every band item made with it.
RECOMMENDED: Mapping[float, tuple[int, int, int]] = {
    0.5: (48, 4, 4),
    0.6: (48, 4, 7),
    0.7: (38, 5, 7),
    0.8: (29, 6, 8),
    0.9: (19, 10, 8),
}
DEFAULT_THRESHOLD = 0.5


def match_probability(similarity: float, bands: int, rows: int, min_bands: int = 1) -> float:
    """Probability that two texts of Jaccard ``similarity`` share at least ``min_bands`` band items."""
    p = similarity**rows
    below = sum(math.comb(bands, k) * p**k * (1.0 - p) ** (bands - k) for k in range(min_bands))
    return max(0.0, 1.0 - below)


def _curves(rows: int, bands: int, s: np.ndarray, max_min_bands: int) -> np.ndarray:
    """P(K >= m) for m = 1..max_min_bands (rows of the result) at every similarity in ``s``."""
    p = s**rows
    term = (1.0 - p) ** bands  # P(K = 0)
    below = np.zeros_like(s)
    out = []
    for k in range(max_min_bands):
        below = below + term
        out.append(np.clip(1.0 - below, 0.0, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(p < 1.0, term * (bands - k) / (k + 1) * p / np.where(p < 1.0, 1.0 - p, 1.0), 0.0)
    return np.array(out)


def optimal_banding(threshold: float, *, max_bands: int = RECOMMENDED_MAX_BANDS,
                    max_values: int = RECOMMENDED_MAX_VALUES, max_min_bands: int = RECOMMENDED_MAX_MIN_BANDS,
                    min_rows: int = RECOMMENDED_MIN_ROWS, steps: int = 400) -> tuple[int, int, int]:
    """The ``(bands, rows, min_bands)`` minimising false-positive area below ``threshold`` plus
    false-negative area above it (midpoint rule, ``steps`` points each side); ties: fewer bands."""
    low = (np.arange(steps) + 0.5) * threshold / steps
    high = threshold + (np.arange(steps) + 0.5) * (1.0 - threshold) / steps
    best: tuple[float, int, int, int] | None = None
    for bands in range(1, max_bands + 1):
        for rows in range(min_rows, max_values // bands + 1):
            fp = _curves(rows, bands, low, min(max_min_bands, bands)).sum(axis=1) * threshold / steps
            fn = (1.0 - _curves(rows, bands, high, min(max_min_bands, bands))).sum(axis=1) * (1.0 - threshold) / steps
            for m, error in enumerate(fp + fn, start=1):
                if best is None or error < best[0] - 1e-12:
                    best = (float(error), bands, rows, m)
    assert best is not None
    return best[1], best[2], best[3]


def banding_rows(deltas: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)) -> list[dict[str, float | int]]:
    """For each recommended threshold: bands, rows, min_bands and the match probability at ``threshold + delta``."""
    rows = []
    for threshold, (bands, r, m) in RECOMMENDED.items():
        row: dict[str, float | int] = {"threshold": threshold, "bands": bands, "rows": r, "min_bands": m}
        for delta in deltas:
            s = min(1.0, max(0.0, round(threshold + delta, 10)))
            row[f"{delta:+.1f}"] = match_probability(s, bands, r, m)
        rows.append(row)
    return rows


_SEED_RE = re.compile(r"[0-9a-f]{64}")


def new_federation_seed() -> str:
    """A fresh federation seed as 64 lowercase hexadecimal digits."""
    return secrets.token_hex(SEED_BYTES)


@dataclass(frozen=True)
class PromptParams:
    """Everything that decides a prompt's band items, except the text.

    Build it with :meth:`from_config` (seed as hex text, a threshold or an
    explicit ``bands``/``rows``); the seed itself is kept out of ``repr``.
    """

    seed: bytes
    bands: int
    rows: int
    #: Band items two prompts must share to be near-duplicates. A local decision: it
    #: does not change any band item, so it is not part of :meth:`describe`.
    min_bands: int = 1
    shingle_words: int = DEFAULT_SHINGLE_WORDS
    normalisation_version: int = NORMALISATION_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise ValueError(f"the federation seed must be {SEED_BYTES} bytes")
        for name, value, high in (
            ("bands", self.bands, MAX_BANDS),
            ("rows", self.rows, MAX_ROWS),
            ("min_bands", self.min_bands, self.bands if isinstance(self.bands, int) else 1),
            ("shingle_words", self.shingle_words, MAX_SHINGLE_WORDS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
                raise ValueError(f"{name} must be an integer from 1 to {high}")
        if self.normalisation_version != NORMALISATION_VERSION:
            raise ValueError(
                f"normalisation version {self.normalisation_version} is not implemented "
                f"(this software normalises with version {NORMALISATION_VERSION})"
            )

    def __repr__(self) -> str:  # the seed stays out of logs and tracebacks
        return (f"PromptParams(seed_id={self.seed_id!r}, bands={self.bands}, rows={self.rows}, "
                f"min_bands={self.min_bands}, shingle_words={self.shingle_words}, normalisation_version={self.normalisation_version})")

    @classmethod
    def from_config(
        cls,
        seed_hex: str,
        *,
        threshold: float | None = None,
        bands: int | None = None,
        rows: int | None = None,
        min_bands: int | None = None,
        shingle_words: int = DEFAULT_SHINGLE_WORDS,
        where: str = "[prompts]",
    ) -> PromptParams:
        """Parameters from configuration values; a bad value is a :class:`ConfigError` naming ``where``.

        Give either ``threshold`` (one of :data:`RECOMMENDED`, which sets
        ``min_bands`` too) or both ``bands`` and ``rows`` (and optionally
        ``min_bands``, 1 by default); with neither, :data:`DEFAULT_THRESHOLD`.
        """
        if not isinstance(seed_hex, str) or not _SEED_RE.fullmatch(seed_hex.strip().lower()):
            # The value is not echoed: it is the federation's key material.
            raise ConfigError(f"{where} seed must be {2 * SEED_BYTES} hexadecimal digits: the federation seed, "
                              "drawn once for the whole federation, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        if (bands is None) != (rows is None):
            raise ConfigError(f"{where} give both bands and rows, or neither")
        if bands is not None and threshold is not None:
            raise ConfigError(f"{where} give a threshold or bands and rows, not both")
        if min_bands is not None and bands is None:
            raise ConfigError(f"{where} min_bands goes with bands and rows (a threshold sets its own)")
        if bands is None:
            threshold = DEFAULT_THRESHOLD if threshold is None else threshold
            if threshold not in RECOMMENDED:
                raise ConfigError(f"{where} threshold must be one of {', '.join(map(str, RECOMMENDED))} "
                                  "(or give bands and rows)")
            bands, rows, min_bands = RECOMMENDED[threshold]
        try:
            return cls(bytes.fromhex(seed_hex.strip()), bands, rows, 1 if min_bands is None else min_bands,  # type: ignore[arg-type]
                       shingle_words)
        except ValueError as exc:
            raise ConfigError(f"{where} {exc}") from None

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """The similarity at which two prompts are near-duplicates with probability 1/2."""
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if match_probability(mid, self.bands, self.rows, self.min_bands) < 0.5 else (low, mid)
        return (low + high) / 2

    @property
    def seed_id(self) -> str:
        """A public name of the seed (16 hex digits): equal ids, equal seeds."""
        return hashlib.blake2b(self.seed, digest_size=8, person=b"psi-prompt-seed").hexdigest()

    def describe(self) -> dict[str, int | str]:
        """The public parameter set a node shows its peers (no seed, only its id)."""
        return {
            "normalisation_version": self.normalisation_version,
            "shingle_words": self.shingle_words,
            "minhash": MINHASH_SCHEME,
            "bands": self.bands,
            "rows": self.rows,
            "seed_id": self.seed_id,
        }

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`describe`: equal fingerprints, equal items."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"psi-share prompt params v1\n" + text.encode()).hexdigest()


_FIELD_NAMES = {
    "normalisation_version": "normalisation version",
    "shingle_words": "words per shingle",
    "minhash": "MinHash scheme",
    "bands": "bands",
    "rows": "rows per band",
    "seed_id": "federation seed (by id)",
}


def check_agreement(ours: Mapping[str, object], theirs: Mapping[str, object], *, us: str, peer: str) -> None:
    """Raise :class:`VersionMismatch` naming every parameter where ``theirs`` differs from ``ours``.

    ``ours`` and ``theirs`` are :meth:`PromptParams.describe` dictionaries
    (``theirs`` as the peer sent it, values as numbers or as text: any
    field may be missing or wrong, and such a field is named as differing,
    never echoed beyond its ``repr`` truncated to 24 characters).
    """
    differences = []
    for key, label in _FIELD_NAMES.items():
        mine, other = ours.get(key), theirs.get(key)
        # Compared as text: a wire format may carry every value as a string.
        if other is None or str(mine) != str(other):
            shown = "missing" if other is None else repr(other)[:24]
            differences.append(f"{label}: {mine!r} at {us}, {shown} at {peer}")
    unknown = sorted(set(theirs) - set(_FIELD_NAMES))
    if unknown:
        differences.append(f"{len(unknown)} parameter(s) unknown to {us}")
    if differences:
        raise VersionMismatch(
            "prompt parameters differ; both nodes must use the same [prompts] settings and federation seed: "
            + "; ".join(differences)
        )
