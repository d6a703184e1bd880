"""MinHash signatures, band items and the parameter agreement (psi_share/prompts/).

Test vector: the signature and band items of one text under a fixed seed.
They are computed here twice, by the node's engine (datasketch 2.0.0,
legacy scheme) and by an independent re-implementation of the documented
construction in plain Python integers, and the engine's output is also
compared with values frozen when the construction was chosen: a datasketch
or numpy release that changed any of it fails this file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from psi_share.errors import ConfigError, VersionMismatch
from psi_share.identifiers import parse_item
from psi_share.prompts import (
    MINHASH_SCHEME,
    RECOMMENDED,
    PromptParams,
    SignatureEngine,
    check_agreement,
    match_probability,
    parse_band_canonical,
)
from psi_share.prompts.params import optimal_banding

SEED = bytes(range(32))
TEXT = "Think step by step: what is 12 * 34? Show every intermediate result."
FROZEN_SIGNATURE_HEAD = (15797392, 213834889, 20186623, 500141090, 111210776, 446004373, 22953842, 85450321)
FROZEN_ITEMS = {
    0: "psi-share/1/prompt/v1/b0/55f7d6735bad2ac092dbbe815d221bc0",
    17: "psi-share/1/prompt/v1/b17/384c04c3d1dccd6d6fb9633142d4d976",
}
FROZEN_FINGERPRINT = "a929ba139aea21d15b10d8705f912dacb9a8ee868a800e4e0d5a543f89324cd6"
MERSENNE = (1 << 61) - 1


@pytest.fixture(scope="module")
def engine() -> SignatureEngine:
    # The frozen vector pins the construction; it was taken with 3-word shingles (the
    # default is 2 now), so it says so rather than follow the default.
    return SignatureEngine(PromptParams(SEED, 18, 7, shingle_words=3))


def reference_signature(shingle_set: frozenset[str], seed: bytes, num_perm: int) -> list[int]:
    """The documented construction, without datasketch: keyed BLAKE2b-32 of each
    shingle, then (a*h + b mod 2^64) mod (2^61 - 1), low 32 bits, minimum."""
    perm_seed = int.from_bytes(hashlib.blake2b(seed, digest_size=4, person=b"psi-prompt-perm").digest(), "big")
    gen = np.random.RandomState(perm_seed)
    pairs = [(int(gen.randint(1, MERSENNE, dtype=np.uint64)), int(gen.randint(0, MERSENNE, dtype=np.uint64)))
             for _ in range(num_perm)]
    key = hashlib.blake2b(seed, digest_size=32, person=b"psi-prompt-shgl").digest()
    hashes = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4, key=key).digest(), "little")
              for s in shingle_set]
    return [min(((a * h + b) % (1 << 64)) % MERSENNE & 0xFFFFFFFF for h in hashes) for a, b in pairs]


def test_frozen_vector(engine: SignatureEngine) -> None:
    banded = engine.band(TEXT)
    assert engine.params.fingerprint == FROZEN_FINGERPRINT
    assert banded.signature[:8] == FROZEN_SIGNATURE_HEAD
    assert len(banded.signature) == 126 and len(banded.items) == 18
    for index, item in FROZEN_ITEMS.items():
        assert banded.items[index] == item


def test_engine_computes_the_documented_construction(engine: SignatureEngine) -> None:
    assert MINHASH_SCHEME == "datasketch-legacy/blake2b-32"
    rng = random.Random(5)
    for n in (1, 2, 7, 60):
        shingle_set = frozenset(" ".join(rng.choice("abcdefgh") * rng.randint(1, 4) for _ in range(3)) for _ in range(n))
        assert list(engine.sign_shingles(shingle_set)) == reference_signature(shingle_set, SEED, 126)


def test_band_digest_is_the_documented_one(engine: SignatureEngine) -> None:
    signature = engine.band(TEXT).signature
    band_key = hashlib.blake2b(bytes.fromhex(FROZEN_FINGERPRINT), digest_size=32, person=b"psi-prompt-band").digest()
    packed = b"".join(v.to_bytes(4, "big") for v in signature[7:14])  # band 1, rows 7
    digest = hashlib.blake2b(packed, digest_size=16, key=band_key, salt=(1).to_bytes(16, "big")).hexdigest()
    assert engine.band(TEXT).canonicals[1] == f"b1/{digest}"


_CHILD = """
import json, sys
from psi_share.prompts import PromptParams, SignatureEngine
engine = SignatureEngine(PromptParams(bytes(range(32)), 18, 7, shingle_words=3))
texts = json.loads(sys.stdin.read())
if sys.argv[1] == "register":
    # Registering changes the global kind registry: only ever in a child.
    from psi_share.errors import InvalidIdentifier
    from psi_share.identifiers import canonical_versions, canonicalize, domain_separated_item
    from psi_share.prompts import register_prompt_kind
    register_prompt_kind(); register_prompt_kind()
    assert canonical_versions(["prompt"]) == {"prompt": 1}
    banded = engine.band(texts[0])
    assert list(banded.items) == [domain_separated_item("prompt", c) for c in banded.canonicals]
    try:
        canonicalize("prompt", "some prompt text")
    except InvalidIdentifier as exc:
        assert "some prompt" not in str(exc) and "prompt file" in str(exc)
    else:
        raise SystemExit("a prompt row was canonicalized")
print(json.dumps([list(engine.items(t)) for t in texts]))
"""


def test_signatures_are_identical_in_other_processes(engine: SignatureEngine) -> None:
    """Other interpreters, other hash seeds; in one of them the ``prompt`` kind is
    registered, and its items are exactly domain_separated_item's."""
    texts = [TEXT, "Translate to French: good morning", "用中文解释光合作用的每一个步骤", "a " * 3000,
             "```python\nx = 1\n```\nwhat does this do, step by step?"]
    expected = [list(engine.items(t)) for t in texts]
    for hash_seed, mode in (("0", "register"), ("12345", "plain")):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", _CHILD, mode], input=json.dumps(texts), env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == expected


def test_shingle_order_does_not_matter(engine: SignatureEngine) -> None:
    shingle_list = sorted(engine.band(TEXT).shingles)
    assert engine.sign_shingles(shingle_list) == engine.sign_shingles(reversed(shingle_list))


def test_items_are_domain_separated_items_of_kind_prompt(engine: SignatureEngine) -> None:
    for index, item in enumerate(engine.band(TEXT).items):
        kind, version, canonical = parse_item(item)
        assert (kind, version) == ("prompt", 1)
        assert parse_band_canonical(canonical, 18) == index
    for bad in ("b18/" + "0" * 32, "b01/" + "0" * 32, "c1/" + "0" * 32, "b1/" + "0" * 31, "b1/" + "G" * 32, "b1"):
        with pytest.raises(ValueError):
            parse_band_canonical(bad, 18)


def _pair(rng: random.Random, similarity: float, size: int = 100) -> tuple[set[str], set[str]]:
    """Two sets of exactly the given Jaccard similarity (common c, c + 2d = size)."""
    common = round(size * similarity)
    only = (size - common) // 2
    assert math.isclose(common / (common + 2 * only), similarity)
    words = [f"w{rng.getrandbits(48):012x}" for _ in range(common + 2 * only)]
    return set(words[: common + only]), set(words[:common] + words[common + only:])


@pytest.mark.parametrize(("bands", "rows", "min_bands"), [(18, 7, 1), (25, 5, 1), RECOMMENDED[0.5]])
def test_banding_matches_its_formula(bands: int, rows: int, min_bands: int) -> None:
    """Per-row agreement estimates s; P(share >= m band items) follows P(Binomial(b, s^r) >= m).

    Fixed seeds, 300 pairs per similarity; bounds are 4.5 standard errors of
    the binomial, so a correct construction fails this about once in 10^5 runs
    (never, with these seeds) and a biased one fails it reliably.
    """
    engine = SignatureEngine(PromptParams(hashlib.sha256(b"banding").digest(), bands, rows))
    rng = random.Random(2024)
    pairs = 300
    for similarity in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
        agree = rows_total = shared = 0
        for _ in range(pairs):
            a, b = _pair(rng, similarity)
            sig_a, sig_b = engine.sign_shingles(a), engine.sign_shingles(b)
            agree += sum(x == y for x, y in zip(sig_a, sig_b))
            rows_total += len(sig_a)
            shared += len(set(engine.band_canonicals(sig_a)) & set(engine.band_canonicals(sig_b))) >= min_bands
        rate = agree / rows_total
        assert abs(rate - similarity) <= 4.5 * math.sqrt(similarity * (1 - similarity) / rows_total) + 0.005
        expected = match_probability(similarity, bands, rows, min_bands)
        error = math.sqrt(max(expected * (1 - expected), 1 / pairs) / pairs)
        assert abs(shared / pairs - expected) <= 4.5 * error, (similarity, shared / pairs, expected)


def test_recommended_banding_is_the_stated_optimum() -> None:
    """Every (b, r, m) with b <= 48, 4 <= r, b*r <= 192, m <= 8 is tried; RECOMMENDED holds the one with
    the least false-positive area below the threshold plus false-negative area above it.
    Computed here with scipy's binomial on one grid of 2,000 midpoints, independently of
    params.py's own computation."""
    from scipy.stats import binom

    steps = 2000
    s = (np.arange(steps) + 0.5) / steps
    errors: dict[float, dict[tuple[int, int, int], float]] = {t: {} for t in RECOMMENDED}
    for b in range(1, 49):
        for r in range(4, 192 // b + 1):
            ms = np.arange(1, min(8, b) + 1)
            matched = binom.sf(ms[:, None] - 1, b, s[None, :] ** r)  # P(K >= m), one row per m
            for t in RECOMMENDED:
                cut = round(t * steps)
                area = (matched[:, :cut].sum(axis=1) + (1 - matched[:, cut:]).sum(axis=1)) / steps
                errors[t].update({(b, r, int(m)): float(e) for m, e in zip(ms, area)})
    for threshold, stated in RECOMMENDED.items():
        best = min(errors[threshold], key=lambda k: (round(errors[threshold][k], 9), k))
        assert best == stated, (threshold, best, errors[threshold][best], errors[threshold][stated])
    assert optimal_banding(0.5) == RECOMMENDED[0.5]  # params.py's own computation agrees


def test_params_from_config() -> None:
    seed = "ab" * 32
    default = PromptParams.from_config(seed)
    assert (default.bands, default.rows, default.min_bands, default.shingle_words) == (48, 4, 4, 2)
    params = PromptParams.from_config(seed, threshold=0.8)
    assert (params.bands, params.rows, params.min_bands, params.num_perm) == (29, 6, 8, 174)
    assert PromptParams.from_config(seed.upper(), bands=4, rows=4).seed == bytes.fromhex(seed)
    assert PromptParams.from_config(seed, bands=4, rows=4).min_bands == 1
    assert PromptParams.from_config(seed, bands=40, rows=4, min_bands=3).min_bands == 3
    # min_bands decides locally: it changes no band item, so it is no part of the agreed set
    assert PromptParams.from_config(seed, bands=40, rows=4, min_bands=3).describe() == \
        PromptParams.from_config(seed, bands=40, rows=4).describe()
    bad = [
        ({"seed_hex": "ab" * 31}, "64 hexadecimal digits"),
        ({"seed_hex": "zz" * 32}, "64 hexadecimal digits"),
        ({"seed_hex": seed, "threshold": 0.65}, "threshold must be one of"),
        ({"seed_hex": seed, "bands": 4}, "both bands and rows"),
        ({"seed_hex": seed, "bands": 4, "rows": 4, "threshold": 0.5}, "not both"),
        ({"seed_hex": seed, "bands": 65, "rows": 2}, "bands must be"),
        ({"seed_hex": seed, "bands": 4, "rows": 0}, "rows must be"),
        ({"seed_hex": seed, "shingle_words": 9}, "shingle_words must be"),
        ({"seed_hex": seed, "bands": 4, "rows": 4, "min_bands": 5}, "min_bands must be"),
        ({"seed_hex": seed, "min_bands": 2}, "min_bands goes with bands and rows"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=message) as caught:
            PromptParams.from_config(**kwargs)  # type: ignore[arg-type]
        assert "abab" not in str(caught.value)


def test_seed_never_shows() -> None:
    params = PromptParams(SEED, 18, 7)
    text = repr(params) + json.dumps(params.describe())
    assert SEED.hex() not in text and str(SEED) not in text
    assert params.seed_id in text and len(params.seed_id) == 16


def test_agreeing_params_pass() -> None:
    ours = PromptParams(SEED, 18, 7).describe()
    check_agreement(ours, dict(ours), us="lab-a", peer="lab-b")
    check_agreement(ours, {k: str(v) for k, v in ours.items()}, us="lab-a", peer="lab-b")  # as text on a wire


@pytest.mark.parametrize(
    ("theirs", "named"),
    [
        (PromptParams(bytes(32), 18, 7), ["federation seed"]),
        (PromptParams(SEED, 18, 6), ["rows per band"]),
        (PromptParams(SEED, 14, 9), ["bands", "rows per band"]),
        (PromptParams(SEED, 18, 7, shingle_words=3), ["words per shingle"]),
    ],
)
def test_mismatch_is_refused_naming_what_differs(theirs: PromptParams, named: list[str]) -> None:
    ours = PromptParams(SEED, 18, 7)
    with pytest.raises(VersionMismatch) as caught:
        check_agreement(ours.describe(), theirs.describe(), us="lab-a", peer="lab-b")
    message = str(caught.value)
    for label in named:
        assert f"{label}:" in message
    assert message.count(" at lab-b") == len(named)
    assert SEED.hex() not in message
    assert ours.fingerprint != theirs.fingerprint
    # different parameters never produce equal items, even unchecked
    assert not set(SignatureEngine(ours).items(TEXT)) & set(SignatureEngine(theirs).items(TEXT))


def test_mismatch_of_versions_and_hostile_descriptions() -> None:
    ours = PromptParams(SEED, 18, 7).describe()
    newer = dict(ours, normalisation_version=2, minhash="other")
    with pytest.raises(VersionMismatch, match="normalisation version: 1 at lab-a, 2 at lab-b") as caught:
        check_agreement(ours, newer, us="lab-a", peer="lab-b")
    assert "MinHash scheme" in str(caught.value)
    hostile = {"bands": "x" * 10_000, "customer@example.com": 1}
    with pytest.raises(VersionMismatch) as caught:
        check_agreement(ours, hostile, us="lab-a", peer="lab-b")
    assert len(str(caught.value)) < 1200 and "customer@" not in str(caught.value)
    assert "seed (by id): " in str(caught.value) and "missing at lab-b" in str(caught.value)
