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

LSH banding
-----------
The signature has ``bands * rows`` MinHash values, cut into ``bands`` bands
of ``rows`` values. Two prompts whose shingle sets have Jaccard similarity
``s`` agree on one MinHash value with probability ``s``, on a whole band
with ``s**rows``, and share at least one band item with probability
:func:`match_probability` ``= 1 - (1 - s**rows)**bands``. The threshold of a
parameter set is where that curve is steepest, close to
``(1/bands)**(1/rows)``; :data:`RECOMMENDED` lists the ``(bands, rows)``
this project uses for each threshold (the README's table is computed from
it).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError, VersionMismatch
from .normalise import NORMALISATION_VERSION

__all__ = [
    "DEFAULT_THRESHOLD",
    "banding_rows",
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

#: threshold -> (bands, rows): for each threshold, the pair with at most 128
#: MinHash values and at most 32 bands (every band is one item in every
#: session) that minimises the area under the false-positive part of the
#: curve below the threshold plus the false-negative part above it, the rule
#: datasketch's MinHashLSH uses (tests/test_prompts_signature.py recomputes
#: it). Changing an entry changes every band item made with it.
RECOMMENDED: Mapping[float, tuple[int, int]] = {
    0.5: (25, 5),
    0.6: (18, 7),
    0.7: (14, 9),
    0.8: (9, 13),
    0.9: (5, 25),
}
DEFAULT_THRESHOLD = 0.5


def banding_rows(deltas: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)) -> list[dict[str, float | int]]:
    """For each recommended threshold: bands, rows and the match probability at ``threshold + delta``."""
    rows = []
    for threshold, (bands, r) in RECOMMENDED.items():
        row: dict[str, float | int] = {"threshold": threshold, "bands": bands, "rows": r}
        for delta in deltas:
            s = min(1.0, max(0.0, round(threshold + delta, 10)))
            row[f"{delta:+.1f}"] = match_probability(s, bands, r)
        rows.append(row)
    return rows


_SEED_RE = re.compile(r"[0-9a-f]{64}")


def new_federation_seed() -> str:
    """A fresh federation seed as 64 lowercase hexadecimal digits."""
    return secrets.token_hex(SEED_BYTES)


def match_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two texts of Jaccard ``similarity`` share at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


@dataclass(frozen=True)
class PromptParams:
    """Everything that decides a prompt's band items, except the text.

    Build it with :meth:`from_config` (seed as hex text, a threshold or an
    explicit ``bands``/``rows``); the seed itself is kept out of ``repr``.
    """

    seed: bytes
    bands: int
    rows: int
    shingle_words: int = 3
    normalisation_version: int = NORMALISATION_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise ValueError(f"the federation seed must be {SEED_BYTES} bytes")
        for name, value, high in (
            ("bands", self.bands, MAX_BANDS),
            ("rows", self.rows, MAX_ROWS),
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
                f"shingle_words={self.shingle_words}, normalisation_version={self.normalisation_version})")

    @classmethod
    def from_config(
        cls,
        seed_hex: str,
        *,
        threshold: float | None = None,
        bands: int | None = None,
        rows: int | None = None,
        shingle_words: int = 3,
        where: str = "[prompts]",
    ) -> PromptParams:
        """Parameters from configuration values; a bad value is a :class:`ConfigError` naming ``where``.

        Give either ``threshold`` (one of :data:`RECOMMENDED`) or both
        ``bands`` and ``rows``; with neither, :data:`DEFAULT_THRESHOLD`.
        """
        if not isinstance(seed_hex, str) or not _SEED_RE.fullmatch(seed_hex.strip().lower()):
            # The value is not echoed: it is the federation's key material.
            raise ConfigError(f"{where} seed must be {2 * SEED_BYTES} hexadecimal digits: the federation seed, "
                              "drawn once for the whole federation, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        if (bands is None) != (rows is None):
            raise ConfigError(f"{where} give both bands and rows, or neither")
        if bands is not None and threshold is not None:
            raise ConfigError(f"{where} give a threshold or bands and rows, not both")
        if bands is None:
            threshold = DEFAULT_THRESHOLD if threshold is None else threshold
            if threshold not in RECOMMENDED:
                raise ConfigError(f"{where} threshold must be one of {', '.join(map(str, RECOMMENDED))} "
                                  "(or give bands and rows)")
            bands, rows = RECOMMENDED[threshold]
        try:
            return cls(bytes.fromhex(seed_hex.strip()), bands, rows, shingle_words)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(f"{where} {exc}") from None

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """Approximate similarity at which matching becomes likely: ``(1/bands)**(1/rows)``."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

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
