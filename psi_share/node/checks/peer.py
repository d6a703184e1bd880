"""``peers check``: prove, peer by peer, that matching would work before a job runs.

For each peer, in order (a failure stops the checks that need it):

``connect``  the peer's address answers TLS;
``tls``      its certificate is the federation's, names it, is valid and not
             revoked (certificate.py; a warning when it expires soon);
``access``   it answers NodeInfo (we are a known, unrevoked peer there);
``identity`` NodeInfo's node_name is the peer's name;
``versions`` wire protocol version, canonicalization version per kind (the
             kinds that differ are named), OpenMined PSI release;
``prompts``  only when either node has a ``[prompts]`` seed: NodeInfo's prompt
             parameter set against ours, each differing field named;
``grants``   which protocols, datasets and kinds it grants us;
``canary``   real PSI sessions on synthetic items (canary.py).

Every message goes through the node's egress, so the audit log records the
check like any session; the TLS probes send no message (only our public
certificate, in the handshake).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from ...crypto.openmined import OPENMINED_PSI_VERSION
from ...errors import PeerRefused, PeerUnavailable, PsiShareError, UntrustedPeer, VersionMismatch
from ...identifiers import canonical_versions
from ...names import NAME_PATTERN
from ...prompts import wire as prompt_wire
from ...prompts.params import check_agreement
from ...prompts.signature import KIND as PROMPT_KIND
from ...protocols import PROTOCOL_VERSION
from ...v1 import node_pb2 as pb
from .canary import DEFAULT_SIZES, CanaryTarget, run_canaries
from .certificate import check_certificate
from .report import FAIL, OK, SKIPPED, WARN, PeerReport

# The deadline of every call a check makes (the canaries included).
CHECK_TIMEOUT = 120.0


def check_peers(node, peers: Iterable[str] | None = None, *, sizes: Sequence[int] = DEFAULT_SIZES,  # type: ignore[no-untyped-def]
                canary: bool = True) -> list[PeerReport]:
    """Check ``peers`` (every known peer when None), one after the other.

    Raises NotFound for a name that is not a known peer, before contacting any.
    """
    names = [p.name for p in node.store.peers()] if peers is None else list(dict.fromkeys(peers))
    for name in names:
        node.store.peer(name)
    return [check_peer(node, name, sizes=sizes, canary=canary) for name in names]


def check_peer(node, name: str, *, sizes: Sequence[int] = DEFAULT_SIZES, canary: bool = True) -> PeerReport:  # type: ignore[no-untyped-def]
    report = PeerReport(name, node.store.peer(name).address)
    with node.peer_client(name, timeout=CHECK_TIMEOUT) as client:
        if not _connect_and_tls(node, client, report):
            return report
        info = _access(client, report)
        if info is None:
            return report
        if not _identity(info, report):
            return report
        agreeing = _versions(info, report)
        _prompt_params(node, info, report)
        targets = _grants(info, agreeing, report)
        if not canary:
            report.add("canary", SKIPPED, "not asked for (--no-canary)")
        elif not targets:
            report.add("canary", SKIPPED, "no dataset is granted to us on a kind whose versions agree")
        else:
            run_canaries(node, client, targets, sizes, report)
    return report


def _connect_and_tls(node, client, report: PeerReport) -> bool:  # type: ignore[no-untyped-def]
    if node.insecure:
        report.add("tls", WARN, "--insecure: plaintext, no certificates; anyone could answer as this peer")
        return True
    try:
        cert = client.server_certificate(verify=False)
    except PeerUnavailable as exc:
        report.add("connect", FAIL, str(exc))
        return False
    except UntrustedPeer as exc:  # TLS answered, with no certificate at all
        report.add("connect", OK, f"{report.address} answers TLS")
        report.add("tls", FAIL, str(exc))
        return False
    report.add("connect", OK, f"{report.address} answers TLS")
    tls = node.tls
    return check_certificate(report, cert, ca=tls.ca_cert, crl=tls.crl, now=dt.datetime.now(dt.timezone.utc))


def _access(client, report: PeerReport) -> pb.NodeInfoResponse | None:  # type: ignore[no-untyped-def]
    try:
        info = client.node_info()
    except PeerUnavailable as exc:
        # Under --insecure this is the first contact; with TLS the peer went away
        # or refused our certificate during the handshake.
        report.add("connect" if not any(f.check == "connect" for f in report.findings) else "access", FAIL, str(exc))
        return None
    except PeerRefused as exc:
        report.add("access", FAIL, f"{report.peer} refuses us: {exc.code}: {exc.details}", code=exc.code)
        return None
    except PsiShareError as exc:
        report.add("access", FAIL, str(exc))
        return None
    report.add("access", OK, f"{report.peer} answers NodeInfo")
    return info


def _identity(info: pb.NodeInfoResponse, report: PeerReport) -> bool:
    if info.node_name != report.peer:
        report.add("identity", FAIL, f"the node at {report.address} calls itself {info.node_name!r} in NodeInfo, "
                   f"not {report.peer!r}", node_name=info.node_name)
        return False
    report.add("identity", OK, f"NodeInfo names {report.peer}", node_name=info.node_name)
    return True


def _versions(info: pb.NodeInfoResponse, report: PeerReport) -> set[str]:
    """The ``versions`` finding; returns the kinds whose canonicalization versions agree."""
    ours = canonical_versions()
    theirs = {kv.kind: kv.version for kv in info.canonicalization}
    differ = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
    only_ours, only_theirs = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    facts = {"protocol_version": info.protocol_version, "software_version": info.software_version,
             "openmined_psi_version": info.openmined_psi_version, "canonicalization_differs": differ,
             "kinds_only_we_know": only_ours, "kinds_only_peer_knows": only_theirs}
    problems, notes = [], []
    if info.protocol_version != PROTOCOL_VERSION:
        problems.append(f"it speaks wire protocol version {info.protocol_version}, we speak {PROTOCOL_VERSION}")
    if differ:
        problems.append("canonicalization versions differ for " + ", ".join(
            f"{k} (ours v{ours[k]}, theirs v{theirs[k]})" for k in differ) + ": those kinds can never match")
    if only_ours or only_theirs:
        notes.append(f"kinds only we know: {', '.join(only_ours) or 'none'}; only it knows: "
                     f"{', '.join(only_theirs) or 'none'}")
    if info.openmined_psi_version != OPENMINED_PSI_VERSION:
        notes.append(f"OpenMined PSI {info.openmined_psi_version} there, {OPENMINED_PSI_VERSION} here "
                     "(the canary shows whether they interoperate)")
    agree = (ours.keys() & theirs.keys()) - set(differ)
    summary = (f"wire protocol {info.protocol_version}, OpenMined PSI {info.openmined_psi_version}, "
               f"canonicalization agrees on {len(agree)} kinds")
    if problems:
        report.add("versions", FAIL, "; ".join(problems + notes), **facts)
    else:
        report.add("versions", WARN if notes else OK, "; ".join([summary] + notes), **facts)
    return agree if info.protocol_version == PROTOCOL_VERSION else set()


def _prompt_params(node, info: pb.NodeInfoResponse, report: PeerReport) -> None:  # type: ignore[no-untyped-def]
    """The ``prompts`` finding, when either node has a ``[prompts]`` seed: do the parameter
    sets agree? A difference fails naming each field (every prompt session between the two
    would be refused with ``FAILED_PRECONDITION``); one side without prompts only warns."""
    prompts = node.config.prompts
    ours = prompts.params.describe() if prompts.enabled else None
    theirs = prompt_wire.from_message(info.prompt_params, info.HasField("prompt_params"))
    if ours is None and theirs is None:
        return
    if ours is None or theirs is None:
        where = f"{report.peer} has" if theirs is None else "we have"
        report.add("prompts", WARN, f"{where} no [prompts] seed: prompt sessions between us would be refused "
                   "(other kinds are not affected)", ours=ours, theirs=theirs)
        return
    try:
        check_agreement(ours, theirs, us=node.config.name, peer=report.peer)
    except VersionMismatch as exc:
        report.add("prompts", FAIL, f"{exc}: every prompt session with {report.peer} would be refused",
                   ours=ours, theirs={k: str(v)[:24] for k, v in theirs.items()})
        return
    report.add("prompts", OK, f"prompt parameters agree: {ours['bands']} bands x {ours['rows']} rows, "
               f"{ours['shingle_words']}-word shingles, normalisation v{ours['normalisation_version']}, "
               f"{ours['minhash']}, seed id {ours['seed_id']}", ours=ours)


def _grants(info: pb.NodeInfoResponse, agreeing: set[str], report: PeerReport) -> list[CanaryTarget]:
    """The ``grants`` finding; returns the datasets a canary can run on."""
    protocols = list(info.protocols)
    datasets = {d.name: list(d.kinds) for d in info.datasets if NAME_PATTERN.fullmatch(d.name)}
    facts = {"protocols": protocols, "datasets": datasets}
    shown = "; ".join(f"{n} ({', '.join(k) or 'no kinds'})" for n, k in sorted(datasets.items())) or "none"
    detail = f"protocols: {', '.join(protocols) or 'none'}; datasets: {shown}"
    if len(datasets) != len(info.datasets):
        report.add("grants", FAIL, f"{report.peer}'s NodeInfo lists {len(info.datasets) - len(datasets)} dataset "
                   f"names that are not plain names ({detail})", **facts)
        return []
    if not protocols:
        report.add("grants", FAIL, f"{report.peer} grants us no protocol (its [policy.peers.<us>] protocols)", **facts)
        return []
    if not datasets and {"psi", "intersection-sum"} & set(protocols):
        # Matching needs a dataset; a federation total does not.
        usable = "federation-total" in protocols
        report.add("grants", WARN if usable else FAIL, f"{report.peer} grants us no dataset holding data ({detail}): "
                   "every match would be refused", **facts)
        return []
    report.add("grants", OK, detail, **facts)
    if "psi" not in protocols:
        return []
    # Canaries are identifier items; prompt band items need the prompt parameters agreed
    # (a session of its own), so a prompt kind is never a canary kind.
    targets = [CanaryTarget(n, tuple(k for k in kinds if k in agreeing and k != PROMPT_KIND))
               for n, kinds in sorted(datasets.items())]
    return [t for t in targets if t.kinds]
