"""``fedforge certs``: a certificate authority, a server certificate and one client
certificate per participant, made with ``cryptography`` (ECDSA P-256, SHA-256).

DIR/
  ca.pem, ca.key                 the federation's CA (keep ca.key offline in production)
  server.pem, server.key         SAN: 127.0.0.1, localhost and any extra hosts
  participants/ID.pem, ID.key    CN = the participant id (its identity on the wire)
  revoked.json                   {"revoked": [ids]}; the server re-reads it when it changes
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_DAYS = 825


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedforge federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca.key'} is not an EC key made by `fedforge certs`")
    return cert, key


def _issue(
    subject: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(ca[1], hashes.SHA256()), key


def make_ca(folder: Path, name: str = "fedforge CA") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_cert(folder / "ca.pem", cert)
    _write_key(folder / "ca.key", key)


def make_server_cert(folder: Path, hosts: Iterable[str] = ()) -> None:
    sans: list[x509.GeneralName] = []
    for h in ["127.0.0.1", "localhost", *hosts]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert, key = _issue("fedforge server", _load(folder), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write_cert(folder / "server.pem", cert)
    _write_key(folder / "server.key", key)


def make_participant_cert(folder: Path, client_id: str) -> Path:
    if not client_id or "/" in client_id or client_id.startswith("."):
        raise ValueError(f"participant id {client_id!r} cannot name a certificate file")
    out = folder / "participants"
    out.mkdir(exist_ok=True)
    cert, key = _issue(client_id, _load(folder), ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(out / f"{client_id}.pem", cert)
    _write_key(out / f"{client_id}.key", key)
    return out / f"{client_id}.pem"


def make_all(folder: Path, participants: Iterable[str], hosts: Iterable[str] = ()) -> list[str]:
    """CA (if missing), server certificate, and one certificate per participant that has
    none yet: a participant's existing key is never replaced.
    Returns the ids whose certificates already existed and were kept."""
    if not (folder / "ca.pem").is_file():
        make_ca(folder)
    make_server_cert(folder, hosts)
    kept = []
    for cid in participants:
        if (folder / "participants" / f"{cid}.pem").is_file():
            kept.append(cid)
            continue
        make_participant_cert(folder, cid)
    revoked = folder / "revoked.json"
    if not revoked.is_file():
        revoked.write_text(json.dumps({"revoked": []}) + "\n")
    return kept


def revoke(folder: Path, client_id: str) -> None:
    path = folder / "revoked.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"revoked": []}
    ids = set(doc.get("revoked", []))
    ids.add(client_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"revoked": sorted(ids)}) + "\n")
    os.replace(tmp, path)
