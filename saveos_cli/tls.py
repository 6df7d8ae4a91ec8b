"""The fleet's own CA and the API server's certificate (the `cryptography` library).

`saveos ca init` makes the CA once (10 years) and a server certificate (about 13 months) whose
subject alternative names are the configured names and addresses; `saveos ca renew` issues a
new server certificate from the same CA (same names unless given), so renewal needs no change
on the hosts. A new CA (`saveos ca init --new-ca`) needs a re-deploy: the role copies ca.crt to
every host, and the agents trust that CA only.

Files in $SAVEOS_DATA_DIR/tls: ca.crt, ca.key (0600), server.crt, server.key (0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from saveos_rules import write_atomically

from saveos_cli.errors import SaveOSError

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a leaf certificate


@dataclass(frozen=True)
class Paths:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"


def default_names() -> list[str]:
    names = ["localhost"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    return names


def split_sans(values: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) from a mixed list; SaveOSError for a value that is neither."""
    names, addresses = [], []
    for value in values:
        value = value.strip().strip("[]")
        try:
            addresses.append(str(ipaddress.ip_address(value)))
            continue
        except ValueError:
            pass
        label = value.rstrip(".")
        if (
            not label
            or len(label) > 253
            or not all(
                part and len(part) <= 63 and part.replace("-", "").isalnum()
                for part in label.split(".")
            )
        ):
            raise SaveOSError(f"{value!r} is neither a DNS name nor an IP address.")
        names.append(label.lower())
    return names, addresses


def _dns_label(part: str) -> bool:
    return (
        0 < len(part) <= 63
        and part.replace("-", "").isalnum()
        and part.isascii()
        and not part.startswith("-")
        and not part.endswith("-")
    )


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(str(path), data, 0o600 if private else 0o644)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(paths: Paths, common_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    _write(paths.ca_key, _pem_key(key), private=True)
    _write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), private=False)


def _load_ca(paths: Paths):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from saveos_cli.config import read_private

    if not paths.ca_cert.is_file() or not paths.ca_key.is_file():
        raise SaveOSError(f"no CA in {paths.dir}.", hint="Run `saveos ca init` first.")
    key = serialization.load_pem_private_key(read_private(paths.ca_key).encode(), None)
    return x509.load_pem_x509_certificate(paths.ca_cert.read_bytes()), key


def issue_server(paths: Paths, names: list[str], addresses: list[str]) -> dict:
    """A server certificate from the CA for these names and addresses; what it holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names and not addresses:
        raise SaveOSError("the server certificate needs at least one name or address.")
    ca_cert, ca_key = _load_ca(paths)
    key = _key()
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName(n) for n in names] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in addresses
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses)[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.server_key, _pem_key(key), private=True)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return describe(paths)


def server_context(config, default):
    """uvicorn's ssl_context_factory for `saveos server`: its context for the certificate and
    key, with TLS 1.2 at least and one TLS 1.3 session ticket per handshake instead of
    OpenSSL's two (an agent keeps one session to resume the next connection of its run: a
    second ticket is crypto and a write per handshake that nobody uses)."""
    import ssl

    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 1
    return context


def describe(paths: Paths) -> dict:
    """The server certificate's names, addresses and validity, and the CA's fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    out = {
        "dir": str(paths.dir),
        "ca": str(paths.ca_cert),
        "ca_sha256": ca.fingerprint(hashes.SHA256()).hex(":"),
        "ca_not_after": ca.not_valid_after_utc.isoformat(),
    }
    if paths.server_cert.is_file():
        cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out.update(
            server_cert=str(paths.server_cert),
            names=san.get_values_for_type(x509.DNSName),
            addresses=[str(a) for a in san.get_values_for_type(x509.IPAddress)],
            not_after=cert.not_valid_after_utc.isoformat(),
        )
    return out
