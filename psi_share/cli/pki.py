"""``psi-share pki``: the federation CA, node certificates and revocation.

The CA commands work on a CA directory (``--ca-dir``, env ``PSI_SHARE_CA``),
which need not be a node home; ``install`` and ``show`` work on the node home.
Private keys are written mode 0600 and never printed.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ..pki import (
    DEFAULT_CA_DAYS,
    DEFAULT_CRL_DAYS,
    DEFAULT_NODE_DAYS,
    FederationCA,
    PkiError,
    describe,
    init_ca,
    issue_node,
    load_certificate,
    create_request,
    refresh_crl,
    revoke,
    sign_request,
)
from .output import emit, emit_object, format_option

ca_dir_option = click.option(
    "--ca-dir", type=click.Path(file_okay=False, path_type=Path), envvar="PSI_SHARE_CA",
    default=Path("federation-ca"), show_default=True, help="The federation CA directory (env PSI_SHARE_CA).",
)


def _pki_errors(fn):  # type: ignore[no-untyped-def]
    """PkiError becomes the CLI's one-line error (exit 1)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except PkiError as exc:
            raise ConfigError(str(exc)) from None

    return wrapper


@click.group()
def pki() -> None:
    """The federation's certificate authority: node certificates and revocation."""


@pki.command("init-ca")
@ca_dir_option
@click.option("--name", default="psi-share federation CA", show_default=True, help="The CA's common name.")
@click.option("--days", default=DEFAULT_CA_DAYS, show_default=True, help="Validity of the CA certificate.")
@click.option("--crl-days", default=DEFAULT_CRL_DAYS, show_default=True, help="Validity of each revocation list.")
@_pki_errors
def init_ca_cmd(ca_dir: Path, name: str, days: int, crl_days: int) -> None:
    """Create the federation CA in --ca-dir: ca.key (0600), ca.crt, crl.pem.

    Keep ca.key where only the CA operator can read it; ca.crt and crl.pem
    go to every node.
    """
    ca = init_ca(ca_dir, name, days=days, crl_days=crl_days)
    cert = ca.certificate()
    click.echo(f"created federation CA {name!r} in {ca.path}")
    click.echo(f"CA certificate sha256: {describe(cert)['sha256']}")


@pki.command("issue")
@click.argument("name")
@ca_dir_option
@click.option("--address", "addresses", multiple=True,
              help="A HOST or HOST:PORT the node is reached at (repeatable); becomes a SAN.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write node.key, node.crt, ca.crt, crl.pem into (default: ./NAME-tls).")
@click.option("--days", default=DEFAULT_NODE_DAYS, show_default=True, help="Validity of the certificate.")
@_pki_errors
def issue_cmd(name: str, ca_dir: Path, addresses: tuple[str, ...], out: Path | None, days: int) -> None:
    """Issue a certificate naming node NAME, with a fresh key.

    The certificate carries NAME as its common name and as a DNS subject
    alternative name (the identity peers check), plus one SAN per --address.
    Hand the output directory to the lab; it installs it with
    'psi-share init NAME --tls-from DIR' or 'psi-share pki install DIR'.
    """
    issued = issue_node(FederationCA(ca_dir), name, out or Path(f"{name}-tls"), addresses=addresses, days=days)
    click.echo(f"issued certificate {issued.serial} for node {name!r}, valid until {issued.not_after:%Y-%m-%d}")
    click.echo(f"wrote {issued.directory}/ (node.key is mode 0600: move it only over a safe channel)")


@pki.command("request")
@click.option("--address", "addresses", multiple=True,
              help="A HOST or HOST:PORT this node is reached at (repeatable); becomes a SAN.")
@click.pass_obj
@_pki_errors
def request_cmd(c, addresses: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """Make this node's key (kept in tls/, mode 0600) and a certificate request for the CA.

    Send tls/node.csr to the federation CA ('psi-share pki sign'); the key
    never leaves this node. Install the answer with 'psi-share pki install DIR'.
    """
    from ..node.home import NodeHome

    home = NodeHome(c.home)
    config = home.load_config()
    path = create_request(home.tls_path, config.name, addresses)
    click.echo(f"wrote certificate request {path} for node {config.name!r}; send it to the federation CA")


@pki.command("sign")
@click.argument("csr", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@ca_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write node.crt, ca.crt, crl.pem into (no key: the node has it).")
@click.option("--days", default=DEFAULT_NODE_DAYS, show_default=True, help="Validity of the certificate.")
@_pki_errors
def sign_cmd(csr: Path, ca_dir: Path, out: Path, days: int) -> None:
    """Issue a certificate for a node's request CSR (from 'psi-share pki request').

    The node name and addresses are checked by the same rules as 'issue'.
    """
    issued = sign_request(FederationCA(ca_dir), csr, out, days=days)
    click.echo(f"issued certificate {issued.serial} for node {issued.name!r}, valid until {issued.not_after:%Y-%m-%d}")
    click.echo(f"wrote {issued.directory}/ (public files only); the node installs it with 'psi-share pki install'")


@pki.command("revoke")
@click.argument("name", required=False)
@ca_dir_option
@click.option("--serial", default=None, help="Revoke only the certificate with this serial (hex).")
@click.option("--crl-days", default=DEFAULT_CRL_DAYS, show_default=True, help="Validity of the new revocation list.")
@_pki_errors
def revoke_cmd(name: str | None, ca_dir: Path, serial: str | None, crl_days: int) -> None:
    """Revoke every certificate issued to node NAME (or one --serial); re-sign crl.pem.

    Copy the new crl.pem to every node's tls/ folder: a running node re-reads
    it on the next connection, and refuses the revoked certificates.
    """
    ca = FederationCA(ca_dir)
    new = revoke(ca, name=name, serial=serial, crl_days=crl_days)
    if new:
        click.echo(f"revoked {', '.join(new)}; new revocation list in {ca.crl_path}")
    else:
        click.echo(f"already revoked; revocation list re-signed in {ca.crl_path}")


@pki.command("refresh-crl")
@ca_dir_option
@click.option("--crl-days", default=DEFAULT_CRL_DAYS, show_default=True, help="Validity of the new revocation list.")
@_pki_errors
def refresh_crl_cmd(ca_dir: Path, crl_days: int) -> None:
    """Re-sign the revocation list with a fresh validity window."""
    ca = FederationCA(ca_dir)
    refresh_crl(ca, crl_days=crl_days)
    click.echo(f"revocation list re-signed in {ca.crl_path}")


@pki.command("list")
@ca_dir_option
@format_option
@_pki_errors
def list_cmd(ca_dir: Path, fmt: str) -> None:
    """List the certificates this CA issued, and whether each is revoked."""
    ca = FederationCA(ca_dir)
    revoked = ca.revoked_serials()
    rows = []
    for cert in ca.issued():
        d = describe(cert)
        rows.append({"serial": d["serial"], "subject": d["subject"], "not_after": d["not_after"],
                     "revoked": cert.serial_number in revoked, "sans": ",".join(d["sans"])})  # type: ignore[arg-type]
    emit(rows, ("serial", "subject", "not_after", "revoked", "sans"), fmt, "issued certificates")


@pki.command("install")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_obj
def install_cmd(c, directory: Path) -> None:  # type: ignore[no-untyped-def]
    """Install a 'pki issue' output DIRECTORY into this node's tls/ folder.

    The certificate must name this node and come from the CA in DIRECTORY.
    """
    from ..node.home import NodeHome, install_tls

    home = NodeHome(c.home)
    config = home.load_config()
    install_tls(home, directory, config.name)
    click.echo(f"installed TLS material for {config.name} in {home.tls_path}")


@pki.command("show")
@format_option
@click.pass_obj
def show_cmd(c, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """Show this node's certificate (subject, SANs, validity) and check it."""
    from ..node.home import NodeHome

    home = NodeHome(c.home)
    config = home.load_config()
    tls = home.load_tls(config)
    info = describe(load_certificate(tls.cert_path))
    info["ca"] = describe(tls.ca_cert)["subject"]
    info["crl_next_update"] = tls.crl.next_update.isoformat() if tls.crl and tls.crl.next_update else ""
    emit_object(info, fmt, title=f"certificate of {config.name}")


__all__ = ["pki"]
