"""Dataset revisions move exactly when the stored rows change (store/datasets.py),
and stores made before device_id v2 are upgraded when opened (schema step 5)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from psi_share.identifiers import canonicalize
from psi_share.store import Store
from psi_share.store.db import _MIGRATIONS, SCHEMA_VERSION, IdentifierRow

Key = tuple[str, str, str]  # actor, kind, canonical
Model = dict[Key, tuple[int, str, int | None]]  # -> version, raw, amount


def _stored(store: Store, dataset: str) -> Model:
    rows = store.identifiers(dataset, ["email", "phone"])
    return {(r.actor_id, r.kind, r.canonical): (r.version, r.raw, r.amount) for r in rows}


def _random_rows(rng: random.Random) -> list[IdentifierRow]:
    """A few rows from a small universe, so that batches overlap often; raw
    text and amount vary for the same identifier."""
    rows: dict[Key, IdentifierRow] = {}
    for _ in range(rng.randint(0, 6)):
        actor, kind, n = f"a{rng.randint(1, 4)}", rng.choice(["email", "phone"]), rng.randint(1, 3)
        canonical = f"u{n}@example.org" if kind == "email" else f"+1415555010{n}"
        raw = canonical if rng.random() < 0.7 else canonical.upper()
        amount = rng.choice([None, 1, 2])
        rows.setdefault((actor, kind, canonical), IdentifierRow(actor, kind, 1, canonical, raw, amount))
    return list(rows.values())


@pytest.mark.parametrize("seed", range(12))
def test_revision_moves_exactly_when_the_rows_change(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    model: Model = {}
    revision, exists = 0, False
    for step in range(40):
        rows = _random_rows(rng)
        replace = rng.random() < 0.5
        incoming = {(r.actor_id, r.kind, r.canonical): (r.version, r.raw, r.amount) for r in rows}
        # Ground truth: append keeps what is stored for a known key; replace takes the batch.
        after = dict(incoming) if replace else {**incoming, **model}
        changed = not exists or after != model
        written = store.write_dataset("flagged", rows, replace=replace, now=float(step))
        revision += changed
        assert (written.changed, written.revision) == (changed, revision), (step, replace)
        added = {k for k in after if k not in model}
        removed = {k for k in model if k not in after}
        assert (written.identifiers_added, written.identifiers_removed) == (len(added), len(removed))
        actors_before, actors_after = {k[0] for k in model}, {k[0] for k in after}
        assert (written.actors_added, written.actors_removed) == (
            len(actors_after - actors_before), len(actors_before - actors_after))
        model, exists = after, True
        info = store.dataset("flagged")
        assert _stored(store, "flagged") == model
        assert (info.revision, info.actors) == (revision, len(actors_after))


def test_a_failing_before_commit_writes_nothing(store: Store) -> None:
    rows = [IdentifierRow("a1", "email", 1, "x@example.org", "x@example.org")]
    store.write_dataset("flagged", rows, replace=True, now=1.0)
    before = store.dataset("flagged")

    def refuse() -> None:
        raise OSError("the rejects file could not be renamed")

    more = rows + [IdentifierRow("a2", "email", 1, "y@example.org", "y@example.org")]
    with pytest.raises(OSError):
        store.write_dataset("flagged", more, replace=False, now=2.0, before_commit=refuse)
    assert store.dataset("flagged") == before
    assert store.actor_ids("flagged") == ["a1"]


# -- schema step 5: device_id v1 -> v2 ---------------------------------------------

V1_DEVICE_IDS = [  # raw, canonical under version 1 (lowercased; UUIDs hyphenated)
    ("Android-ABCDEF0123", "android-abcdef0123"),
    ("{6FA459EA-EE8A-3CA4-894E-DB77E160355E}", "6fa459ea-ee8a-3ca4-894e-db77e160355e"),
    ("9774D56D682E549C", "9774d56d682e549c"),
    ("dev-0000001", "dev-0000001"),
    (" Imei:35-209900 ", "imei:35-209900"),
]
V2_CANONICAL = ["Android-ABCDEF0123", "6fa459ea-ee8a-3ca4-894e-db77e160355e", "9774d56d682e549c",
                "dev-0000001", "Imei:35-209900"]  # by hand: case kept unless UUID or hex text


def _store_at_schema_4(path: Path) -> None:
    db = sqlite3.connect(path)
    for step, script in _MIGRATIONS:
        if step <= 4:
            db.executescript(f"BEGIN;{script}PRAGMA user_version={step};COMMIT;")
    db.executescript(
        "INSERT INTO datasets VALUES ('flagged', 3, 1.0), ('customers', 7, 1.0);"
        "INSERT INTO actors VALUES ('flagged', 'a1'), ('flagged', 'a2'), ('customers', 'c1');"
        "INSERT INTO identifiers(dataset, actor_id, kind, version, canonical, raw) VALUES "
        "('flagged', 'a2', 'email', 1, 'x@example.org', 'X@example.org'),"
        "('customers', 'c1', 'email', 1, 'y@example.org', 'y@example.org');"
    )
    db.executemany(
        "INSERT INTO identifiers(dataset, actor_id, kind, version, canonical, raw) VALUES ('flagged', 'a1', 'device_id', 1, ?, ?)",
        [(canonical, raw) for raw, canonical in V1_DEVICE_IDS],
    )
    db.commit()
    db.close()


def test_opening_an_older_store_upgrades_device_ids_to_v2(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _store_at_schema_4(path)
    with Store(path) as store:
        devices = store.identifiers("flagged", ["device_id"])
        assert {(r.raw, r.canonical, r.version) for r in devices} == {
            (raw, canonical, 2) for (raw, _), canonical in zip(V1_DEVICE_IDS, V2_CANONICAL)
        }
        # The upgrade is what an import would store today.
        assert all(r.canonical == canonicalize("device_id", r.raw) for r in devices)
        email = store.identifiers("flagged", ["email"])[0]
        assert (email.canonical, email.version) == ("x@example.org", 1)
        # New items, so a new revision; a dataset without device ids keeps its own.
        assert store.dataset("flagged").revision == 4
        assert store.dataset("customers").revision == 7
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # every later step ran too
    db.close()
    with Store(path) as store:  # runs once
        assert store.dataset("flagged").revision == 4
