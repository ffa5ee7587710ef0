"""Certificates for a cluster's TLS: a CA, node certificates, client certificates.

For ``make cluster`` (a throw-away CA in ``.cluster/tls/``) and for operators
(``tadpole certs create-ca|issue``). Keys are ECDSA P-256, certificates SHA-256
signed, private keys written 0600.

Who a certificate speaks for is in its subject common name:

* ``node/<id>`` -- a node. Usable as server and as client (peers call each other);
  SANs name its addresses (IP or DNS), which clients check against the address they
  dialled. A peer call is accepted only from ``node/<id>`` of a configured peer, and
  only about itself (``docs/security.md``).
* ``client/<name>`` -- a client (the CLI, an application). Client use only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.tls import server_name_for

__all__ = [
    "CertError",
    "Issued",
    "client_name",
    "create_ca",
    "issue",
    "node_name",
    "pkcs12_bundle",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Certificates are valid from this long before they are issued, so that a host whose
# clock is behind the issuer's (by up to this) still accepts them: TLS checks
# not-before against the wall clock, which nothing else in the cluster relies on.
BACKDATE = dt.timedelta(days=1)


class CertError(Exception):
    """A certificate could not be made (bad name, existing file, unreadable CA)."""


def node_name(node_id: str) -> str:
    return f"node/{node_id}"


def client_name(name: str) -> str:
    return f"client/{name}"


@dataclass(frozen=True)
class Issued:
    cert: str
    key: str


def _write_private(path: str, data: bytes, *, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CertError(f"{path}: already exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def create_ca(directory: str, *, days: int = 3650, name: str = "tadpole cluster CA") -> Issued:
    """Write ``ca.pem`` and ``ca.key`` (0600) into ``directory``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key"))
    _write_private(issued.key, _key_pem(key), overwrite=False)
    with open(issued.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return issued


def _load_ca(ca_dir: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        with open(os.path.join(ca_dir, "ca.pem"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(ca_dir, "ca.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as exc:
        raise CertError(f"{ca_dir}: cannot read the CA (ca.pem, ca.key): {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{ca_dir}/ca.key: not an EC key")
    return cert, key


def issue(
    ca_dir: str,
    out_dir: str,
    file_stem: str,
    *,
    node_id: str = "",
    client: str = "",
    hosts: tuple[str, ...] = (),
    days: int = 825,
    overwrite: bool = False,
) -> Issued:
    """Issue a node certificate (``node_id``, with ``hosts`` as SANs) or a client
    certificate (``client``), signed by the CA in ``ca_dir``; write
    ``<file_stem>.pem`` and ``<file_stem>.key`` (0600) into ``out_dir``."""
    if bool(node_id) == bool(client):
        raise CertError("issue a certificate for a node or for a client, one of the two")
    name = node_id or client
    if not _NAME.match(name):
        raise CertError(f"{name!r}: use 1-64 of [A-Za-z0-9_.-]")
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    common = node_name(node_id) if node_id else client_name(client)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if node_id
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if node_id:
        sans: list[x509.GeneralName] = [x509.DNSName(server_name_for(node_id))]
        for host in hosts or ("127.0.0.1", "localhost"):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    issued = Issued(
        os.path.join(out_dir, f"{file_stem}.pem"), os.path.join(out_dir, f"{file_stem}.key")
    )
    _write_private(issued.key, _key_pem(key), overwrite=overwrite)
    tmp = issued.cert + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, issued.cert)
    return issued


def pkcs12_bundle(cert_file: str, key_file: str) -> bytes:
    """The certificate and its key as one PKCS#12 file, the form browsers import a
    client certificate in (no password: the file is kept 0600 like the key)."""
    with open(cert_file, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_file, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_file}: not an EC private key")
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return pkcs12.serialize_key_and_certificates(
        str(name).encode(), key, cert, None, serialization.NoEncryption()
    )
