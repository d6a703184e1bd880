"""Exports of a job run for the lab's OWN tools: CSV, JSON and a STIX 2.1 bundle.

These files contain the lab's own identifiers in clear (as imported) next
to which other labs matched each actor. They are meant for the lab's ticket
system, TIP or ban pipeline and must stay inside the lab. The STIX bundle in
particular must never be sent to another lab: STIX ids of observables
(``email-addr--…``, ``ipv4-addr--…``) are UUIDv5 hashes of their values, so
anyone holding a guess can confirm it by recomputing the id, which is
exactly the leak psi-share exists to avoid. Every object is marked TLP:RED.

Only PSI reveal runs have actors to export; a count-only run raises.

STIX mapping (one entry per actor matched in the run):

* ``threat-actor`` — the lab's actor record (name ``DATASET/ACTOR_ID``),
  with ``first_seen`` (the earliest run of the job that matched it) and
  ``last_seen`` (this run);
* observables for its identifiers of the job's kinds: ``email-addr``,
  ``ipv4-addr``/``ipv6-addr`` (addresses and prefixes), ``user-account``
  (handles) and ``x-psi-share-identifier`` for phones, payment fingerprints
  and device ids (no STIX 2.1 object fits them; a new-SCO extension whose
  ``extension-definition`` the bundle carries), grouped by one
  ``observed-data``;
* ``sighting`` of the threat actor, ``count`` = how many other labs matched
  it in this run, ``where_sighted_refs`` = those labs' ``identity``,
  ``first_seen``/``last_seen`` as above;
* for a run over the ``prompt`` kind, each prompt chain that linked an actor
  is an ``attack-pattern`` (named by this node's chain label, with the
  number of bands matched and the similarity they imply; never the prompt
  text), a ``relationship`` "uses" from the threat actor to it, and a
  ``sighting`` of it at the labs that matched it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import uuid
from dataclasses import dataclass

import stix2
from stix2.properties import StringProperty
from stix2.v21 import CustomObservable

from ..errors import PsiShareError
from . import EXPORT_FORMATS as FORMATS
from ..store import JobRunRecord, Store
from ..node.prompts.matches import ChainSighting, chain_actors, chain_sightings
from ..prompts.signature import KIND as PROMPT_KIND
from .history import is_reveal, previous_diff, run_attribution

# Fixed namespace for the ids of psi-share's own SDOs (identities, actors),
# so that exporting the same run twice gives the same bundle.
_NAMESPACE = uuid.UUID("5b0a3c56-7d4e-4f7a-9a51-4b1e0c2f6e11")



# STIX 2.1 has no object for phones, payment fingerprints or device ids. They
# become a new SCO type defined the 2.1 way, by an extension-definition that
# every bundle carries. (The stix2 library treats any non-spec type as custom:
# parse such bundles with allow_custom=True; its checks of the spec objects
# still apply, and x-psi-share-identifier is validated by the class below.)
EXTENSION_ID = f"extension-definition--{uuid.uuid5(_NAMESPACE, 'x-psi-share-identifier/1')}"


@CustomObservable(
    "x-psi-share-identifier",
    [("kind", StringProperty(required=True)), ("value", StringProperty(required=True))],
    ["kind", "value"],
    extension_name=EXTENSION_ID,
)
class PsiShareIdentifier:
    """An identifier kind STIX 2.1 has no object for (phone, payment fingerprint, device id)."""


@dataclass(frozen=True)
class ExportedActor:
    actor_id: str
    peers: tuple[str, ...]
    matched_kinds: dict[str, tuple[str, ...]]  # peer -> kinds that matched
    first_seen: float  # start of the earliest run of this job that matched it
    change: str  # "new", "changed" or "" since the previous ok run ("" when there is none)
    identifiers: tuple[tuple[str, str], ...]  # (kind, raw value) of the job's kinds
    chains: tuple[ChainSighting, ...] = ()  # prompt runs: the chains that link it, with their peers


@dataclass(frozen=True)
class RunExport:
    node: str
    run: JobRunRecord
    base_run: str | None
    actors: tuple[ExportedActor, ...]


def collect(store: Store, node_name: str, run: JobRunRecord) -> RunExport:
    if not is_reveal(run):
        raise PsiShareError(f"run {run.id} was count-only: it learned counts, not actors, so there is nothing to export")
    if run.status not in ("ok", "partial"):
        raise PsiShareError(f"run {run.id} is {run.status}: it has no results to export")
    attribution = run_attribution(store, run.id)
    kinds: dict[str, dict[str, set[str]]] = {}
    sessions = [s.id for s in store.sessions(job_run_id=run.id) if s.role == "requester" and s.status == "done"]
    for m in store.matches(sessions):
        kinds.setdefault(m.actor_id, {}).setdefault(m.peer, set()).add(m.kind)
    first = store.first_matched(run.job_name, until=run.started_at)
    diff = previous_diff(store, run)
    change = {}
    if diff is not None and not diff.count_only:
        change = {c.actor_id: "new" for c in diff.newly_shared} | {c.actor_id: "changed" for c in diff.peers_changed}
    dataset, job_kinds = run.parameters.get("dataset", "flagged"), run.parameters.get("kinds", [])
    idents: dict[str, list[tuple[str, str]]] = {}
    linked = chain_actors(chain_sightings(store, sessions), 1) if PROMPT_KIND in job_kinds else {}
    try:
        for row in store.identifiers(dataset, job_kinds):
            # A prompt row's raw text is a label of ours; its chain stands for it.
            if row.actor_id in attribution and row.kind != PROMPT_KIND:
                idents.setdefault(row.actor_id, []).append((row.kind, row.raw))
    except PsiShareError:
        pass  # the dataset was deleted since: export without identifiers
    actors = tuple(
        ExportedActor(
            actor_id=a, peers=peers,
            matched_kinds={p: tuple(sorted(k)) for p, k in sorted(kinds.get(a, {}).items())},
            first_seen=first.get(a, run.started_at), change=change.get(a, ""),
            identifiers=tuple(idents.get(a, ())), chains=linked.get(a, ()),
        )
        for a, peers in attribution.items()
    )
    return RunExport(node_name, run, diff.base.id if diff else None, actors)


def to_csv(export: RunExport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    chains = any(a.chains for a in export.actors)  # the column only for prompt runs
    writer.writerow(["actor_id", "peer_count", "peers", "matched_kinds", "first_seen", "change_since_previous",
                     "identifiers"] + (["prompt_chains"] if chains else []))
    for a in export.actors:
        writer.writerow([
            a.actor_id, len(a.peers), ";".join(a.peers),
            ";".join(f"{p}:{','.join(k)}" for p, k in a.matched_kinds.items()),
            _iso(a.first_seen), a.change, ";".join(f"{k}:{v}" for k, v in a.identifiers),
        ] + ([";".join(f"{c.chain}:{','.join(c.peers)}" for c in a.chains)] if chains else []))
    return out.getvalue()


def to_json(export: RunExport) -> str:
    run = export.run
    doc = {
        "warning": "contains this lab's own identifiers in clear: keep inside the lab",
        "node": export.node,
        "run": {"id": run.id, "job": run.job_name, "status": run.status, "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at), "parameters": run.parameters},
        "previous_ok_run": export.base_run,
        "actors": [
            {"actor_id": a.actor_id, "peer_count": len(a.peers), "peers": list(a.peers),
             "matched_kinds": {p: list(k) for p, k in a.matched_kinds.items()},
             "first_seen": _iso(a.first_seen), "change_since_previous": a.change or None,
             "identifiers": [{"kind": k, "value": v} for k, v in a.identifiers],
             **({"prompt_chains": [{"chain": c.chain, "peers": list(c.peers), "best_bands_matched": c.best_bands,
                                    "bands": c.bands} for c in a.chains]} if a.chains else {})}
            for a in export.actors
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_stix(export: RunExport) -> str:
    run = export.run
    when = _utc(run.finished_at or run.started_at)
    marking = [stix2.TLP_RED]
    common = {"created": when, "modified": when, "object_marking_refs": marking}
    lab = stix2.Identity(
        id=_sdo_id("identity", f"lab/{export.node}"), name=export.node, identity_class="organization",
        description="this lab (the psi-share node that ran the job)", **common,
    )
    peer_names = sorted({p for a in export.actors for p in a.peers})
    peers = {
        p: stix2.Identity(id=_sdo_id("identity", f"lab/{p}"), name=p, identity_class="organization",
                          created_by_ref=lab.id, **common)
        for p in peer_names
    }
    objects: list = [lab, *peers.values()]
    extension_used = False
    dataset = run.parameters.get("dataset", "flagged")
    for a in export.actors:
        first = _utc(a.first_seen)
        actor = stix2.ThreatActor(
            id=_sdo_id("threat-actor", f"{export.node}/{dataset}/{a.actor_id}"),
            name=f"{dataset}/{a.actor_id}", threat_actor_types=["criminal"], first_seen=first,
            last_seen=_utc(run.started_at), created_by_ref=lab.id,
            description=f"flagged actor {a.actor_id} of dataset {dataset}, matched by {len(a.peers)} other lab(s)",
            **common,
        )
        observables = _dedupe(_observable(k, v) for k, v in a.identifiers)
        objects += [actor, *observables]
        observed = []
        if observables:
            custom = any(isinstance(o, PsiShareIdentifier) for o in observables)
            extension_used |= custom
            od = stix2.ObservedData(
                id=_sdo_id("observed-data", f"{run.id}/{a.actor_id}"), first_observed=first,
                last_observed=_utc(run.started_at), number_observed=len(a.peers),
                object_refs=[o.id for o in observables], created_by_ref=lab.id, allow_custom=custom, **common,
            )
            objects.append(od)
            observed = [od.id]
        objects.append(stix2.Sighting(
            id=_sdo_id("sighting", f"{run.id}/{a.actor_id}"), sighting_of_ref=actor.id, count=len(a.peers),
            first_seen=first, last_seen=_utc(run.started_at), where_sighted_refs=[peers[p].id for p in a.peers],
            observed_data_refs=observed or None, created_by_ref=lab.id,
            description=f"matched by {', '.join(a.peers)} in job {run.job_name} run {run.id}",
            **common,
        ))
    objects += _chain_objects(export, lab, peers, common)
    if extension_used:
        objects.insert(1, stix2.ExtensionDefinition(
            id=EXTENSION_ID, created_by_ref=lab.id, name="psi-share identifier",
            description="An identifier of a kind STIX 2.1 has no object for: kind (phone, "
                        "payment_fingerprint, device_id) and value as the lab recorded it.",
            schema="type x-psi-share-identifier; properties: kind (string, required), value (string, "
                   "required); id contributing properties: kind, value.",
            version="1.0.0", extension_types=["new-sco"], **common,
        ))
    bundle = stix2.Bundle(objects=objects, id=_sdo_id("bundle", f"{export.node}/{run.id}"), allow_custom=extension_used)
    # stix2's pretty=True orders properties with a quadratic search (minutes
    # for a few thousand objects); indent the compact form instead.
    return json.dumps(json.loads(bundle.serialize()), indent=2) + "\n"


def _chain_objects(export: RunExport, lab, peers, common) -> list:  # type: ignore[no-untyped-def]
    """Prompt chains: an attack-pattern each, "uses" from each actor it links, a sighting at its labs."""
    run, out, done = export.run, [], set()
    for a in export.actors:
        actor_id = _sdo_id("threat-actor", f"{export.node}/{run.parameters.get('dataset', 'flagged')}/{a.actor_id}")
        for c in a.chains:
            pattern_id = _sdo_id("attack-pattern", f"{export.node}/{c.chain}")
            if c.chain not in done:
                done.add(c.chain)
                out.append(stix2.AttackPattern(
                    id=pattern_id, name=f"prompt chain {c.chain}", created_by_ref=lab.id,
                    description=f"an automated prompt chain (template) sent to this lab, matched by its LSH band items "
                                f"at {len(c.peers)} other lab(s); best match {c.best_bands} of {c.bands} bands. "
                                "The prompts themselves are not exported.", **common,
                ))
                out.append(stix2.Sighting(
                    id=_sdo_id("sighting", f"{run.id}/{c.chain}"), sighting_of_ref=pattern_id, count=len(c.peers),
                    where_sighted_refs=[peers[p].id for p in c.peers], created_by_ref=lab.id, **common,
                ))
            out.append(stix2.Relationship(
                id=_sdo_id("relationship", f"{run.id}/{a.actor_id}/{c.chain}"), relationship_type="uses",
                source_ref=actor_id, target_ref=pattern_id, created_by_ref=lab.id, **common,
            ))
    return out


def render(export: RunExport, fmt: str) -> str:
    if fmt not in FORMATS:
        raise PsiShareError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    return {"csv": to_csv, "json": to_json, "stix": to_stix}[fmt](export)


def _observable(kind: str, value: str):  # type: ignore[no-untyped-def]
    if kind == "email":
        return stix2.EmailAddress(value=value, object_marking_refs=[stix2.TLP_RED])
    if kind in ("ipv4", "ipv6", "ip_prefix"):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            net = None
        if net is not None:
            text = str(net) if kind == "ip_prefix" else str(net.network_address)
            cls = stix2.IPv4Address if net.version == 4 else stix2.IPv6Address
            return cls(value=text, object_marking_refs=[stix2.TLP_RED])
    if kind == "account_handle":
        return stix2.UserAccount(account_login=value, object_marking_refs=[stix2.TLP_RED])
    return PsiShareIdentifier(kind=kind, value=value, object_marking_refs=[stix2.TLP_RED])


def _dedupe(objects) -> list:  # type: ignore[no-untyped-def]
    seen, out = set(), []
    for o in objects:
        if o.id not in seen:
            seen.add(o.id)
            out.append(o)
    return out


def _sdo_id(kind: str, name: str) -> str:
    return f"{kind}--{uuid.uuid5(_NAMESPACE, name)}"


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else _utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")
