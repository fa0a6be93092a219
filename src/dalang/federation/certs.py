"""Development certificates: a throwaway CA and site certificates for loopback TLS."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dalang.errors import DalangError

#: Names every development site certificate is valid for.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Paths of a PEM certificate and its private key."""

    cert: Path
    key: Path


def _require() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency
        raise DalangError("dalang certs needs: pip install cryptography") from None


def _write_key(key: object, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def create_ca(out: str | os.PathLike[str], *, name: str = "dalang development CA") -> CertFiles:
    """Write ``ca.pem`` and ``ca.key`` (EC P-256, valid 365 days) into ``out``."""
    _require()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(out_dir / "ca.pem", out_dir / "ca.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files


def create_site_cert(
    ca: CertFiles,
    name: str,
    out: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    client: bool = True,
) -> CertFiles:
    """Write ``<name>.pem`` and ``<name>.key`` signed by ``ca``, valid for ``hosts`` (SANs).

    The certificate serves TLS and (``client=True``) also works as an mTLS client certificate.
    """
    _require()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    files = CertFiles(out_dir / f"{name}.pem", out_dir / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files


def dev_certificates(
    out: str | os.PathLike[str], sites: Sequence[str], *, hosts: Sequence[str] = LOOPBACK_HOSTS
) -> tuple[CertFiles, dict[str, CertFiles]]:
    """A new CA in ``out`` and one certificate per site name; returns (ca, {site: files})."""
    ca = create_ca(out)
    return ca, {s: create_site_cert(ca, s, out, hosts=hosts) for s in sites}
