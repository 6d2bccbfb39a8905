"""HTTPS: the server's SSLContext, and `robotcam gen-cert`'s certificates.

Browsers give the microphone (the talk button) only to secure pages, so a robot on a LAN needs
HTTPS with a certificate its viewers' phones trust. No single self-signed certificate is
trusted everywhere:

  - Android installs only CA certificates (basicConstraints CA:TRUE) as trusted "CA
    certificates"; a CA:FALSE one is taken for a client certificate and wants a private key.
    Chrome's desktop "Authorities" import refuses a non-CA certificate too.
  - Firefox refuses a CA:TRUE certificate as a server's own certificate
    (MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY).
  - iOS and macOS refuse server certificates valid for more than 825 days, or without the
    serverAuth extended key usage (Apple, "Requirements for trusted certificates in iOS 13").

So gen-cert does what mkcert does: a small CA for this robot (CA:TRUE, 10 years; the file
phones install once) signs the server's certificate (CA:FALSE, serverAuth, the robot's names
and addresses, 825 days). Renewing re-signs the server certificate with the same CA, so phones
keep trusting it. The CA is name-constrained to this robot's host names and to private,
loopback and link-local addresses, so its key (ca.key, root-only) could not vouch for any
public site even if it leaked. All keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import ifaddr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/etc/robotcam/tls")
LEAF_DAYS = 825  # the longest iOS/macOS accept for a server certificate
CA_DAYS = 3650
GROUP = "robotcam"  # the service's group: it must read key.pem
CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "cert.pem", "key.pem"

# Addresses the CA may vouch for: private, loopback, link-local, carrier-grade NAT (VPNs such
# as Tailscale), and IPv6 unique-local / link-local.
PRIVATE_NETWORKS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10", "::1/128", "fc00::/7", "fe80::/10",
)]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TLSError(Exception):
    """A certificate or key that cannot be used; the message names the config key."""


# --- serving ---------------------------------------------------------------------------------


def _read(key: str, path: str) -> bytes:
    file = Path(path)
    if not file.exists():
        raise TLSError(f"{key}: {path} does not exist (sudo robotcam gen-cert makes one)")
    if file.is_dir():
        raise TLSError(f"{key}: {path} is a directory, not a PEM file")
    try:
        return file.read_bytes()
    except OSError as exc:
        user = _user()
        raise TLSError(
            f"{key}: cannot read {path} as user {user}: {exc.strerror or exc} "
            f"(gen-cert makes the key readable by the '{GROUP}' group)"
        ) from None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_checked(cert_path: str, key_path: str) -> list[x509.Certificate]:
    """The certificate chain, after checking both files and that they belong together."""
    cert_pem = _read("server.tls.cert", cert_path)
    key_pem = _read("server.tls.key", key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TLSError(f"server.tls.cert: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSError(f"server.tls.key: {key_path} is encrypted: robotcam needs an unencrypted key") from None
    except ValueError:
        raise TLSError(f"server.tls.key: {key_path} holds no PEM private key") from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise TLSError(
            f"server.tls.key does not match server.tls.cert: {key_path} is not the key of "
            f"{cert_path} (regenerate both with robotcam gen-cert --force)"
        )
    return chain


def server_context(cert_path: str, key_path: str) -> tuple[ssl.SSLContext, x509.Certificate]:
    """The SSLContext for aiohttp, and the server certificate (to log its expiry). Blocking."""
    chain = load_checked(cert_path, key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise TLSError(f"server.tls.cert/server.tls.key: OpenSSL refuses them: {exc}") from None
    return context, chain[0]


def ca_certificate_der(cert_path: str) -> bytes:
    """The CA in the server's chain (what phones install), DER-encoded. Blocking."""
    chain = x509.load_pem_x509_certificates(_read("server.tls.cert", cert_path))
    for certificate in reversed(chain):
        try:
            if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return certificate.public_bytes(serialization.Encoding.DER)
        except x509.ExtensionNotFound:
            continue
    raise TLSError("server.tls.cert has no CA certificate in its chain (it was not made by robotcam gen-cert)")


# --- gen-cert --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    ca: Path
    dns_names: list[str]
    ips: list[str]
    not_after: datetime.datetime
    ca_reused: bool
    key_group: str | None  # the group that may read the key, when one was set


def default_hostname() -> str:
    return socket.gethostname().split(".")[0] or "robot"


def default_ips() -> list[str]:
    """This machine's addresses a phone could use (no link-local IPv6: not usable in URLs)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(address.split("%")[0])
            except ValueError:
                continue
            if parsed.is_loopback or (parsed.version == 6 and parsed.is_link_local):
                continue
            if str(parsed) not in found:
                found.append(str(parsed))
    return found


def names_for(hostname: str, ips: list[str]) -> tuple[list[str], list[IPAddress]]:
    """The certificate's DNS names and addresses: hostname, hostname.local, localhost, the
    given addresses, 127.0.0.1 and ::1."""
    host = hostname.strip().rstrip(".").lower()
    dns = [host]
    if not host.endswith(".local") and "." not in host:
        dns.append(f"{host}.local")
    dns.append("localhost")
    addresses: list[IPAddress] = []
    for text in [*ips, "127.0.0.1", "::1"]:
        address = ipaddress.ip_address(text)
        if address not in addresses:
            addresses.append(address)
    return list(dict.fromkeys(dns)), addresses


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _permitted_networks(addresses: list[IPAddress]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = list(PRIVATE_NETWORKS)
    for address in addresses:
        if not any(address in network for network in networks):
            networks.append(ipaddress.ip_network(address))  # a public address: just itself
    return networks


def make_ca(hostname: str, dns: list[str], addresses: list[IPAddress], days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "robotcam"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"robotcam CA for {hostname}"),
    ])
    now = _now()
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    permitted += [x509.IPAddress(n) for n in _permitted_networks(addresses)]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def make_leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hostname: str, dns: list[str],
    addresses: list[IPAddress], days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca.not_valid_after_utc)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "robotcam"),
            x509.NameAttribute(NameOID.COMMON_NAME, dns[0]),
        ]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in dns] + [x509.IPAddress(a) for a in addresses]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def _ca_covers(ca: x509.Certificate, dns: list[str], addresses: list[IPAddress], days: int) -> bool:
    """Whether an existing CA can sign a certificate for these names for `days` more days."""
    if ca.not_valid_after_utc < _now() + datetime.timedelta(days=min(days, LEAF_DAYS)):
        return False
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    permitted = constraints.permitted_subtrees or []
    dns_ok = [g.value for g in permitted if isinstance(g, x509.DNSName)]
    ip_ok = [
        g.value for g in permitted
        if isinstance(g, x509.IPAddress) and isinstance(g.value, (ipaddress.IPv4Network, ipaddress.IPv6Network))
    ]
    def dns_covered(name: str) -> bool:
        return any(name == base or name.endswith("." + base) for base in dns_ok)
    return all(map(dns_covered, dns)) and all(any(a in n for n in ip_ok) for a in addresses)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int, group: int | None = None) -> None:
    """Atomically, with the final mode from the first byte (a key is never world-readable)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)  # the umask may have taken bits away
        if group is not None:
            os.chown(temporary, -1, group)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _service_group() -> tuple[str, int] | None:
    try:
        return GROUP, grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


def generate(
    out_dir: Path, hostname: str, ips: list[str], days: int = LEAF_DAYS, force: bool = False,
) -> Issued:
    """Write ca.crt/ca.key (kept if present and still usable), cert.pem (server certificate
    followed by the CA) and key.pem. Raises TLSError for anything the caller must change."""
    try:
        dns, addresses = names_for(hostname, ips)
    except ValueError as exc:
        raise TLSError(f"--ip: {exc}") from None
    if days < 1:
        raise TLSError("--days must be at least 1")
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    ca_path, ca_key_path = out_dir / CA_FILE, out_dir / CA_KEY_FILE
    existing = [p for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise TLSError(
            f"{existing[0]} already exists: --force replaces the certificate "
            f"(the CA in {ca_path} is kept when it covers the names, so phones keep trusting it)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLSError(f"--out-dir: cannot create {out_dir}: {exc.strerror or exc}") from None

    ca = ca_key = None
    if ca_path.exists() and ca_key_path.exists():
        try:
            ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
        except (OSError, ValueError, TypeError):
            ca = ca_key = None
        if ca is None or ca_key is None or _spki(ca.public_key()) != _spki(ca_key.public_key()) \
                or not _ca_covers(ca, dns, addresses, days):
            if not force:
                raise TLSError(
                    f"the CA in {ca_path} cannot sign for these names or dates: --force makes "
                    "a new one (phones must then install the new ca.crt)"
                )
            ca = ca_key = None
    reused = ca is not None
    if ca is None or ca_key is None:
        ca, ca_key = make_ca(dns[0], dns, addresses, max(CA_DAYS, days + 1))
    leaf, leaf_key = make_leaf(ca, ca_key, dns[0], dns, addresses, days)

    service = _service_group()
    gid = service[1] if service is not None and os.geteuid() == 0 else None
    try:
        if not reused:
            _write(ca_key_path, _pem_key(ca_key), 0o600)
            _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _pem_key(leaf_key), 0o640 if gid is not None else 0o600, gid)
        _write(cert_path, leaf.public_bytes(serialization.Encoding.PEM)
               + ca.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise TLSError(f"--out-dir: cannot write to {out_dir}: {exc.strerror or exc}") from None
    return Issued(
        cert=cert_path, key=key_path, ca=ca_path, dns_names=dns,
        ips=[str(a) for a in addresses], not_after=leaf.not_valid_after_utc, ca_reused=reused,
        key_group=service[0] if gid is not None and service is not None else None,
    )


def warn_if_expiring(certificate: x509.Certificate, path: str, days: int = 30) -> None:
    """One log line when the server certificate has expired or soon will: browsers then
    refuse the page, and the fix is one command."""
    left = certificate.not_valid_after_utc - _now()
    if left < datetime.timedelta(days=days):
        state = "expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
        log.warning(
            "server.tls.cert: %s %s (%s): renew it with sudo robotcam gen-cert --force",
            path, state, f"{certificate.not_valid_after_utc:%Y-%m-%d}",
        )
