"""Test certificates made by trustme: one CA, server certificates per name, a client one.

Files only (no process, no socket): the TLS tests write them into tmp_path and point the
SSL* directives at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme", reason="trustme (the test extra) is not installed")


@dataclass
class Pki:
    """A CA and the files made from it under `root`."""

    root: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        path = self.root / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def server(self, name: str, *aliases: str, tag: str = "") -> tuple[Path, Path]:
        """(certificate, key) for `name` (and aliases); `tag` makes a second pair."""
        cert = self.ca.issue_cert(name, *aliases)
        crt, key = self.root / f"{name}{tag}.crt", self.root / f"{name}{tag}.key"
        cert.cert_chain_pems[0].write_to_path(str(crt))
        cert.private_key_pem.write_to_path(str(key))
        return crt, key

    def client(self, email: str, common_name: str, *, intermediate: bool = False) -> Path:
        """A client certificate and its key in one PEM, as ssl's load_cert_chain takes; with
        `intermediate`, issued by a CA the root signed, which the PEM's chain carries."""
        issuer = self.ca.create_child_ca() if intermediate else self.ca
        cert = issuer.issue_cert(email, common_name=common_name)
        tag = "-via-intermediate" if intermediate else ""
        path = self.root / f"client-{common_name.replace(' ', '_')}{tag}.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    return Pki(root, trustme.CA())


def encrypted_key(key: Path, out: Path) -> Path:
    """The same private key, protected by a passphrase."""
    from cryptography.hazmat.primitives import serialization

    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    out.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return out
