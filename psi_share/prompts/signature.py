"""MinHash signatures of prompts and their LSH band items.

Band items
----------
Band ``i`` (0-based) of a signature is the ``rows`` MinHash values
``sig[i*rows:(i+1)*rows]``; its item is::

    psi-share/1/prompt/v<normalisation version>/b<i>/<32 hex digits>
    e.g. psi-share/1/prompt/v1/b3/9f86d081884c7d659a2feaa0c55ad015

in the format of :func:`psi_share.identifiers.domain_separated_item` (kind
``prompt``, canonical text ``b<i>/<hex>``). The hex digits are a 128-bit
BLAKE2b digest of the band's values (big-endian 32-bit each), keyed with
the parameter fingerprint and the band index: band 3 of one prompt never
equals band 5 of another, and nodes with different parameters never produce
equal items even if their agreement check were skipped. A prompt has exactly
``bands`` items; two prompts of Jaccard similarity ``s`` share ``K ~
Binomial(bands, s**rows)`` of them, and are near-duplicates when ``K >=
min_bands`` (:func:`.params.match_probability`).

Signatures come from datasketch's :class:`~datasketch.MinHash` with its
``legacy`` permutation scheme, the shingle hash and the permutation seed
derived from the federation seed (see :data:`.params.MINHASH_SCHEME`). The
result depends only on the text and the parameters: not on the process,
``PYTHONHASHSEED``, the platform or the order of shingles
(``tests/test_prompts_signature.py`` checks a fixed vector and other
processes).

Who learns what: nothing here leaves the node. Band items are low-entropy
(anyone with the seed can compute them for a guessed text), so like
identifier items they are only sent blinded by the PSI protocols.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..identifiers import ITEM_PREFIX
from .normalise import normalise, shingles
from .params import PromptParams

__all__ = ["KIND", "BandedPrompt", "SignatureEngine", "band_item", "parse_band_canonical"]

KIND = "prompt"
BAND_DIGEST_BYTES = 16


def band_item(version: int, canonical: str) -> str:
    """The domain-separated item of a band (``psi-share/1/prompt/v<version>/<canonical>``).

    Written here rather than by :func:`psi_share.identifiers.domain_separated_item`
    because that needs the ``prompt`` kind registered; the two agree (tested).
    """
    return f"{ITEM_PREFIX}{KIND}/v{version}/{canonical}"


def parse_band_canonical(canonical: str, bands: int) -> int:
    """The band index of a canonical text ``b<i>/<hex>``; ``ValueError`` if malformed."""
    head, sep, digest = canonical.partition("/")
    if (
        not sep
        or not head.startswith("b")
        or not head[1:].isascii()
        or not head[1:].isdigit()
        or (len(head) > 2 and head[1] == "0")
        or len(digest) != 2 * BAND_DIGEST_BYTES
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError("malformed prompt band: expected b<index>/<32 hex digits>")
    index = int(head[1:])
    if index >= bands:
        raise ValueError(f"prompt band index out of range (bands: {bands})")
    return index


@dataclass(frozen=True)
class BandedPrompt:
    """One prompt after normalisation, signing and banding (all local)."""

    normalised: str
    shingles: frozenset[str]
    signature: tuple[int, ...]  # bands * rows 32-bit MinHash values; () when no shingle
    canonicals: tuple[str, ...]  # b<i>/<hex>, one per band; () when no shingle
    items: tuple[str, ...]  # the full domain-separated items, one per band

    @property
    def matchable(self) -> bool:
        return bool(self.items)


class SignatureEngine:
    """Signs and bands prompt texts under one :class:`PromptParams`.

    Holds the MinHash permutations (computed once); safe to share between
    threads (every call copies the template sketch).
    """

    def __init__(self, params: PromptParams) -> None:
        self.params = params
        seed = params.seed
        self._shingle_key = hashlib.blake2b(seed, digest_size=32, person=b"psi-prompt-shgl").digest()
        # numpy's RandomState takes a 32-bit seed; the permutations are only
        # as secret as that, the shingle hash below is keyed with all 256 bits.
        perm_seed = int.from_bytes(hashlib.blake2b(seed, digest_size=4, person=b"psi-prompt-perm").digest(), "big")
        from datasketch import MinHash  # here, not at import: it pulls in scipy (0.3 s on every CLI start)

        self._template = MinHash(
            num_perm=params.num_perm,
            seed=perm_seed,
            hashfunc=self._shingle_hash,
            scheme="legacy",
        )
        self._band_key = hashlib.blake2b(
            bytes.fromhex(params.fingerprint), digest_size=32, person=b"psi-prompt-band"
        ).digest()

    def _shingle_hash(self, data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=4, key=self._shingle_key).digest(), "little")

    def sign_shingles(self, shingle_set: Iterable[str]) -> tuple[int, ...]:
        """The MinHash signature of a set of shingles; ``()`` for an empty set."""
        encoded = [s.encode("utf-8") for s in shingle_set]
        if not encoded:
            return ()
        sketch = self._template.copy()
        sketch.update_batch(encoded)
        return tuple(sketch.hashvalues.tolist())

    def band_canonicals(self, signature: tuple[int, ...]) -> tuple[str, ...]:
        """``b<i>/<hex>`` of every band of ``signature``."""
        if not signature:
            return ()
        rows = self.params.rows
        packed = np.asarray(signature, dtype=">u4").tobytes()
        out = []
        for index in range(self.params.bands):
            digest = hashlib.blake2b(
                packed[4 * rows * index:4 * rows * (index + 1)],
                digest_size=BAND_DIGEST_BYTES,
                key=self._band_key,
                salt=index.to_bytes(16, "big"),
            ).hexdigest()
            out.append(f"b{index}/{digest}")
        return tuple(out)

    def band(self, text: str) -> BandedPrompt:
        """Normalise, shingle, sign and band one prompt text."""
        normalised = normalise(text)
        shingle_set = shingles(normalised, self.params.shingle_words)
        signature = self.sign_shingles(shingle_set)
        canonicals = self.band_canonicals(signature)
        version = self.params.normalisation_version
        return BandedPrompt(normalised, shingle_set, signature, canonicals,
                            tuple(band_item(version, c) for c in canonicals))

    def items(self, text: str) -> tuple[str, ...]:
        """Only the band items of ``text`` (``()`` if it has no word)."""
        return self.band(text).items
