"""``psi-share audit``: verify, scan and report on the compliance audit log.

These commands only read the node home: they never open the node, never
append to the log, and run while ``serve`` is running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..audit.log import DEFAULT_CHECKPOINT_SECONDS, MAX_UNSIGNED, AuditError, load_public_key_hex, public_key_hex
from ..audit.verify import VerifyResult, genesis_key, verify_log
from ..errors import ConfigError
from ..node.home import AUDIT_KEY, NodeHome

EXIT_FAILED = 1
EXIT_UNSIGNED = 3  # intact, but the last entries are not yet under a signed checkpoint


def _home(ctx: click.Context) -> NodeHome:
    home = NodeHome(ctx.find_root().obj.home)
    if not (home.audit_path / "log.jsonl").exists():
        raise AuditError(f"{home.path} holds no audit log yet (audit/log.jsonl)")
    return home


def _node_key(home: NodeHome) -> Ed25519PublicKey:
    """The public half of the node's own keys/audit.key (not a pinned key)."""
    path = home.keys_path / AUDIT_KEY
    if not path.exists():
        raise ConfigError(f"{path} is missing: give the audit public key your compliance officer pinned with --key")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key.public_key()


def _pinned_key(value: str) -> Ed25519PublicKey:
    """--key: 64 hex digits as printed by 'audit key', or a file holding them."""
    text = value.strip()
    if len(text) != 64 or not all(c in "0123456789abcdefABCDEF" for c in text):
        path = Path(value)
        if not path.is_file():
            raise click.BadParameter("give the audit public key as 64 hex digits ('psi-share audit key') "
                                     "or a file holding them", param_hint="--key")
        text = path.read_text(encoding="ascii", errors="replace")
    return load_public_key_hex(text)


def _parse_head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    count, _, head = value.partition(":")
    if not count.isdigit() or len(head) != 64:
        raise click.BadParameter("use COUNT:HASH as printed by 'psi-share audit head'")
    return int(count), head.lower()


@click.group()
def audit() -> None:
    """Check the tamper-evident record of everything this node sent and received."""


@audit.command("verify")
@click.option("--key", "pinned", default=None, metavar="PUBLIC_KEY",
              help="The audit public key pinned beforehand ('psi-share audit key'): 64 hex digits, or a file "
                   "holding them. Without it the key is read from this node's keys/audit.key, which its "
                   "operators could have replaced.")
@click.option("--public-key", "pinned_file", default=None, hidden=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))  # the earlier spelling of --key FILE
@click.option("--expect-head", default=None, metavar="COUNT:HASH",
              help="A head exported earlier ('audit head'): the log must still hold exactly that prefix.")
@click.pass_context
def audit_verify(ctx: click.Context, pinned: str | None, pinned_file: Path | None, expect_head: str | None) -> None:
    """Check the hash chain, checkpoint signatures, the bound on unsigned entries and transcripts.

    Detects an edited, deleted, inserted, reordered or truncated entry, a log
    rebuilt without the signing key, and a swapped key, and names the first
    bad entry. Exit code 0 when every entry is intact and signed; 1 when the
    log fails; 3 when it is intact but its last entries (at most 1000) are not
    yet under a signed checkpoint: the node is running (it signs within a few
    seconds) or did not close the log (a crash), or the log was cut back and
    appended to. --expect-head and a pinned --key close the gaps a local check
    cannot.
    """
    home = _home(ctx)
    name = home.load_config().name
    if pinned is not None or pinned_file is not None:
        trusted = _pinned_key(pinned if pinned is not None else str(pinned_file))
        source = "pinned with --key"
    else:
        trusted = _node_key(home)
        source = "taken from keys/audit.key, NOT pinned: pass --key with the key recorded from 'psi-share audit key'"
    result = verify_log(home.audit_path, trusted, node=name, expect_head=_parse_head(expect_head))
    if not result.ok:
        click.echo(f"audit log of {name}: FAILED: first bad entry at {result.first_bad}", err=True)
        for problem in result.problems:
            click.echo(f"  {problem}", err=True)
        click.echo(f"  trusted audit key {public_key_hex(trusted)} ({source}); the log claims {result.log_key or 'none'}",
                   err=True)
        sys.exit(EXIT_FAILED)
    _report_intact(name, result, public_key_hex(trusted), source)
    if not result.signed:
        click.echo(
            f"audit log of {name}: UNSIGNED TAIL: the last {result.uncovered} entries, from {result.first_unsigned}, "
            f"follow the last signed checkpoint (seq {result.last_checkpoint_count}) and are protected by the hash "
            f"chain only. A running node signs them within {DEFAULT_CHECKPOINT_SECONDS:g} s and at shutdown; a node "
            f"that crashed signs them when it next appends; at most {MAX_UNSIGNED} may ever be unsigned. Otherwise "
            "the log may have been cut back and appended to: check it against a head exported earlier "
            "(--expect-head).", err=True,
        )
        sys.exit(EXIT_UNSIGNED)


def _report_intact(name: str, result: VerifyResult, key: str, source: str) -> None:
    click.echo(
        f"audit log of {name}: {'OK' if result.signed else 'intact'}: {result.entries} entries, "
        f"{result.checkpoints} signed checkpoints, head {result.entries}:{result.head}"
    )
    click.echo(f"audit key: {key} ({source})")
    click.echo(
        f"transcripts: {result.transcripts_checked} verified, {result.transcripts_pruned} pruned by retention; "
        f"entries after the last checkpoint: {result.uncovered}"
    )


@audit.command("key")
@click.pass_context
def audit_key(ctx: click.Context) -> None:
    """Print the audit public key (hex) for the compliance officer to pin.

    Record it where the node's operators cannot change it, and verify with
    'psi-share audit verify --key KEY': a log signed with any other key then
    fails. Exit 1 if the log on disk names another key.
    """
    home = NodeHome(ctx.find_root().obj.home)
    key = public_key_hex(_node_key(home))
    if (home.audit_path / "log.jsonl").exists():
        claimed = genesis_key(home.audit_path)
        if claimed != key:  # nothing on stdout: a script must not pin either key
            click.echo(f"keys/audit.key holds key {key}, but the audit log was started with key "
                       f"{claimed or '(unreadable)'}: do not pin either before finding out why", err=True)
            sys.exit(EXIT_FAILED)
    click.echo(key)


@audit.command("head")
@click.pass_context
def audit_head(ctx: click.Context) -> None:
    """Print COUNT:HASH of the log's last entry, to keep somewhere the node's operators cannot edit."""
    home = _home(ctx)
    result = verify_log(home.audit_path, _node_key(home), check_transcripts=False)
    if not result.ok:
        click.echo(f"the log does not verify (first bad entry at {result.first_bad}); run 'audit verify'", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{result.entries}:{result.head}")


@audit.command("scan")
@click.option("--against", "against", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The lab's own raw data file (CSV or JSONL, as imported). Repeatable; more files may follow.")
@click.argument("more", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def audit_scan(ctx: click.Context, against: tuple[Path, ...], more: tuple[Path, ...]) -> None:
    """Search every transcript for any form of the identifiers in FILE...

    Forms: raw text, canonical text, the domain-separated item, and the MD5,
    SHA-1, SHA-256 and SHA-512 of each (raw bytes, hex, HEX, base64). Also
    checks that each recorded message parses as the type the log names and
    holds only what that type may hold. Reports every hit with its place
    (log entry and byte offset; the identifier by file and line, never by
    value). Exit code 0 when nothing is found, 1 on any hit or bad message.
    Messages sent while transcripts were off cannot be scanned: they are
    counted, and the text fields their entries record are searched.
    """
    import time

    from ..audit.scan import scan_audit

    home = _home(ctx)
    config = home.load_config()
    verified = verify_log(home.audit_path, _node_key(home), node=config.name)
    if not verified.ok:
        click.echo(f"audit log of {config.name} does not verify (first bad entry at {verified.first_bad}); "
                   "run 'psi-share audit verify'", err=True)
        sys.exit(EXIT_FAILED)
    started = time.perf_counter()
    result = scan_audit(home.audit_path, [*against, *more], config.canonicalization)
    seconds = time.perf_counter() - started
    click.echo(
        f"scanned {result.transcripts} transcripts ({result.transcript_bytes} bytes, {result.messages_checked} messages) "
        f"for {result.needles} forms of {result.identifiers} identifiers in {seconds:.1f}s"
    )
    if result.skipped_short:
        click.echo(f"  ({result.skipped_short} text forms shorter than 8 bytes searched only through their items and digests)")
    if result.sent_without_transcript:
        click.echo(f"  {result.sent_without_transcript} messages were sent while transcripts were off: "
                   "their digests and text fields are logged (the text was searched), their bytes cannot be scanned")
    for finding in result.hits:
        click.echo(f"IDENTIFIER FOUND: {finding.place}: {finding.what}", err=True)
    for finding in result.invalid:
        click.echo(f"BAD MESSAGE: {finding.place}: {finding.what}", err=True)
    if result.clean:
        click.echo(f"audit scan of {config.name}: CLEAN: no form of any identifier, every message as its type allows")
        return
    click.echo(f"audit scan of {config.name}: FOUND {len(result.hits)} identifier form(s), "
               f"{len(result.invalid)} bad message(s)", err=True)
    sys.exit(EXIT_FAILED)


@audit.command("report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.md and report.html (default: HOME/audit/report).")
@click.pass_context
def audit_report(ctx: click.Context, out_dir: Path | None) -> None:
    """Write the compliance report: Markdown and a self-contained HTML page.

    Bytes sent per peer per day (with a chart), what left to whom and when
    under which protection, and a disclosure ledger per peer: its queries,
    how many of our items they covered, and every result it received.
    """
    import time

    from ..audit.log import load_entries
    from ..audit.report import build_report, render_html, render_markdown

    home = _home(ctx)
    name = home.load_config().name
    verified = verify_log(home.audit_path, _node_key(home), node=name)
    report = build_report(name, load_entries(home.audit_path), verified, time.time_ns())
    out = out_dir or home.audit_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in (("report.md", render_markdown(report)), ("report.html", render_html(report))):
        tmp = out / (file_name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / file_name)
    click.echo(f"wrote {out / 'report.md'} and {out / 'report.html'} (log {'intact' if verified.ok else 'FAILED verification'})")
    if not verified.ok:
        sys.exit(EXIT_FAILED)
