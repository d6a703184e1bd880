"""A node home: the folder holding one node's config, keys and store.

Layout::

    HOME/config.toml        node configuration (TOML)
    HOME/store.sqlite3      datasets, peers, sessions, results, job runs
    HOME/keys/              private keys, mode 0700; files 0600
    HOME/keys/node_identity.key   Ed25519 key naming this node installation
    HOME/keys/audit.key     Ed25519 key signing audit checkpoints (apart from the
                            identity key: it can be rotated or escrowed on its own)
    HOME/audit/             the compliance audit log (see psi_share/audit/log.py)
    HOME/tls/               mutual-TLS material from the federation CA, mode 0700:
                            ca.crt, crl.pem, node.crt, node.key (0600)

Chosen with ``--home`` or ``PSI_SHARE_HOME``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import ConfigError
from .config import NodeConfig, load_config, parse_config, render_config

_LISTEN_PATTERN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}\Z")

CONFIG_FILE = "config.toml"
STORE_FILE = "store.sqlite3"
KEYS_DIR = "keys"
IDENTITY_KEY = "node_identity.key"
AUDIT_KEY = "audit.key"
AUDIT_DIR = "audit"
TLS_DIR = "tls"


@dataclass(frozen=True)
class NodeHome:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    @property
    def keys_path(self) -> Path:
        return self.path / KEYS_DIR

    @property
    def audit_path(self) -> Path:
        return self.path / AUDIT_DIR

    def audit_key(self) -> Ed25519PrivateKey:
        """The audit checkpoint key; created (0600) for homes made before it existed."""
        path = self.keys_path / AUDIT_KEY
        if not path.exists():
            self.keys_path.mkdir(mode=0o700, exist_ok=True)
            try:
                _write_private(path, _new_ed25519_pem())
            except FileExistsError:  # another process created it first
                pass
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} does not hold an Ed25519 private key")
        return key

    def load_config(self) -> NodeConfig:
        if not self.config_path.exists():
            raise ConfigError(
                f"{self.path} is not a psi-share node home (no {CONFIG_FILE}); create one with 'psi-share init'"
            )
        return load_config(self.config_path)

    @property
    def tls_path(self) -> Path:
        return self.path / TLS_DIR

    def tls_file(self, configured: str) -> Path:
        """A [tls] path from the config, relative to the home unless absolute."""
        p = Path(configured).expanduser()
        return p if p.is_absolute() else self.path / p

    def load_tls(self, config: NodeConfig):  # type: ignore[no-untyped-def]
        """This node's checked TLS material (:class:`psi_share.pki.NodeTls`);
        ConfigError naming the file and the fix when anything is wrong."""
        from ..crl import CRL_IN_FORCE
        from ..pki import load_node_tls

        t = config.tls
        cert = self.tls_file(t.cert)
        if not cert.exists():
            raise ConfigError(
                f"TLS: no node certificate at {cert}: ask the federation CA for one "
                f"('psi-share pki issue {config.name} ...') and install it with 'psi-share pki install DIR' "
                "(plaintext only with --insecure, never in production)"
            )
        return load_node_tls(
            name=config.name, ca=self.tls_file(t.ca), cert=cert, key=self.tls_file(t.key), crl=self.tls_file(t.crl),
            crl_in_force=self.tls_path / CRL_IN_FORCE,  # CRL numbers only go up, across restarts too
        )

    def identity_fingerprint(self) -> str:
        """SHA-256 of the node identity public key (hex, first 32 chars)."""
        pem = (self.keys_path / IDENTITY_KEY).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:32]


def init_home(
    path: Path, name: str, listen: str, *, force: bool = False, tls_from: Path | None = None
) -> NodeHome:
    """Create a node home; refuses to overwrite an existing one unless ``force``.

    ``tls_from`` is a directory written by ``psi-share pki issue NAME``; its
    certificate must name this node. Without it, ``HOME/tls/`` is created
    empty, to receive the files later (``psi-share pki install``).
    """
    home = NodeHome(path)
    if home.config_path.exists() and not force:
        raise ConfigError(f"{path} already holds a node ({CONFIG_FILE} exists); use --force to overwrite its config")
    from ..names import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        raise ConfigError(f"invalid node name {name!r}: use lowercase letters, digits, '-' or '_', starting with a letter")
    if not _LISTEN_PATTERN.match(listen):
        raise ConfigError(f"invalid listen address {listen!r}: use HOST:PORT, e.g. 127.0.0.1:7400")
    text = render_config(name, listen)
    parse_config(tomllib.loads(text), "generated config")
    if tls_from is not None:
        _check_tls_source(tls_from, name)  # before anything is written
    path.mkdir(parents=True, exist_ok=True)
    home.keys_path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(home.keys_path, 0o700)
    key_file = home.keys_path / IDENTITY_KEY
    if not key_file.exists():
        _write_private(key_file, _new_ed25519_pem())
    home.audit_key()
    home.tls_path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(home.tls_path, 0o700)
    if tls_from is not None:
        install_tls(home, tls_from, name)
    tmp = home.config_path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(home.config_path)
    from ..store import Store

    Store(home.store_path).close()
    from ..audit.log import AuditLog

    AuditLog(home.audit_path, node=name, key=home.audit_key()).close()  # the log starts with the node
    return home


def _new_ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
def install_tls(home: NodeHome, source: Path, name: str) -> None:
    """Copy a 'pki issue' output into HOME/tls/ after checking it names ``name``."""
    from ..pki import PkiError, install_node_files

    # Everything is checked before a single file is copied; a 'pki sign' output
    # carries no key: the node's own key (from 'pki request') must match.
    _check_tls_source(source, name, key_dir=home.tls_path)
    try:
        install_node_files(source, home.tls_path)
    except PkiError as exc:
        raise ConfigError(f"TLS: {exc}") from None


def _check_tls_source(source: Path, name: str, key_dir: Path | None = None) -> None:
    """CA signature, name, key, expiry and revocation of a 'pki issue' / 'pki sign' output."""
    from ..pki import CA_CERT, CRL_FILE, NODE_CERT, NODE_KEY, load_node_tls

    key = source / NODE_KEY
    if not key.exists() and key_dir is not None:
        key = key_dir / NODE_KEY
    load_node_tls(name=name, ca=source / CA_CERT, cert=source / NODE_CERT, key=key, crl=source / CRL_FILE)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
