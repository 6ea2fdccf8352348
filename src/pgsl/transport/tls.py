"""Certificates for mutual TLS: one CA, one server certificate, one client certificate per site.

Layout of a TLS folder (``pgsl certs --out DIR``): ``ca.pem`` (+ ``ca.key``, keep it offline),
``server.pem``/``server.key``, and ``<site>.pem``/``<site>.key`` per site. The server knows a site
by its certificate's common name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VALID_DAYS = 365


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgsl"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           server_names: list[str] | None = None, client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(out: Path, sites: list[str], hosts: list[str] | None = None) -> list[Path]:
    """Create a CA, a server certificate valid for ``hosts`` and one client certificate per site."""
    hosts = hosts or ["localhost", "127.0.0.1"]
    bad = [s for s in sites if not SITE_NAME.match(s)]
    if bad or not sites:
        raise ValueError(f"site names must match {SITE_NAME.pattern}; got {bad or 'none'}")
    if len(set(sites)) != len(sites) or "server" in sites or "ca" in sites:
        raise ValueError("site names must be unique and not 'server' or 'ca'")
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("pgsl-ca", ca_key, _name("pgsl-ca"), ca_key, ca=True)
    _write(out, "ca", ca_key, ca_cert)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(out, "server", server_key,
           _issue("pgsl-server", server_key, ca_cert.subject, ca_key, server_names=hosts))
    for site in sites:
        key = ec.generate_private_key(ec.SECP256R1())
        _write(out, site, key, _issue(site, key, ca_cert.subject, ca_key, client=True))
    return sorted(out.iterdir())


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"TLS file {path} is missing (create it with `pgsl certs`)")
    return path.read_bytes()


def server_credentials(folder: Path) -> grpc.ServerCredentials:
    """Server side: present server.pem, require a client certificate signed by ca.pem."""
    return grpc.ssl_server_credentials(
        [(_read(folder / "server.key"), _read(folder / "server.pem"))],
        root_certificates=_read(folder / "ca.pem"), require_client_auth=True,
    )


def client_credentials(folder: Path, site: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(folder / "ca.pem"), private_key=_read(folder / f"{site}.key"),
        certificate_chain=_read(folder / f"{site}.pem"),
    )
