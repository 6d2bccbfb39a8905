"""HTTPS: `robotcam gen-cert` and the daemon serving with what it makes.

The certificates are checked with cryptography's own path validation (name constraints and
all), the way browsers check them; the daemon is the real `robotcam run` subprocess, fetched
over TLS by a client that trusts only the generated CA. The page loading in Chromium over
HTTPS is in test_browser.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from robotcam.cli import main
from robotcam.service.tls import LEAF_DAYS, TLSError, generate
from tests.conftest import REPO, free_port
from tests.daemon_process import DaemonProcess


def gen_cert(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "robotcam", "gen-cert", "--out-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    return result.returncode, result.stdout, result.stderr


def verify(chain_pem: bytes, ca_pem: bytes, name: x509.GeneralName) -> None:
    chain = x509.load_pem_x509_certificates(chain_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)
    verifier.verify(chain[0], chain[1:])


def test_gen_cert_makes_a_ca_and_a_server_certificate_phones_accept(tmp_path: Path) -> None:
    code, out, err = gen_cert(tmp_path, "--hostname", "Robbie", "--ip", "192.168.1.20", "--ip", "10.0.0.7")
    assert code == 0, err
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.crt"
    assert f"certificate: {cert}" in out and f"key:         {key}" in out
    assert f"server:\n  tls:\n    cert: {cert}\n    key: {key}\n" in out  # the lines to add
    assert "install it on every phone" in out

    assert stat.S_IMODE(key.stat().st_mode) == 0o600  # no group robotcam on this machine
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644

    leaf, chained_ca = x509.load_pem_x509_certificates(cert.read_bytes())
    root = x509.load_pem_x509_certificate(ca.read_bytes())
    assert chained_ca == root  # the server sends its CA along
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["robbie", "robbie.local", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("192.168.1.20", "10.0.0.7", "127.0.0.1", "::1")
    ]
    for certificate in (leaf, root):
        assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
        assert certificate.public_key().curve.name == "secp256r1"
    leaf_bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_bc.critical and leaf_bc.value.ca is False
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=LEAF_DAYS, hours=1)  # iOS: at most 825 days
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_bc.ca is True and root_bc.path_length == 0  # installable as a CA on Android
    assert root.not_valid_after_utc - root.not_valid_before_utc > datetime.timedelta(days=3600)

    for name in ("robbie.local", "robbie", "localhost"):
        verify(cert.read_bytes(), ca.read_bytes(), x509.DNSName(name))
    for address in ("192.168.1.20", "127.0.0.1", "::1"):
        verify(cert.read_bytes(), ca.read_bytes(), x509.IPAddress(ipaddress.ip_address(address)))
    with pytest.raises(VerificationError):
        verify(cert.read_bytes(), ca.read_bytes(), x509.DNSName("example.com"))


def test_the_ca_cannot_vouch_for_anything_but_this_robot(tmp_path: Path) -> None:
    """Name constraints: even with ca.key, no certificate for a public name or address."""
    from robotcam.service.tls import make_leaf, names_for
    from cryptography.hazmat.primitives import serialization

    assert gen_cert(tmp_path, "--hostname", "robbie", "--ip", "192.168.1.20")[0] == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), None)
    dns, addresses = names_for("bank.example.com", ["8.8.8.8"])
    forged, _ = make_leaf(ca, ca_key, "bank.example.com", dns, addresses, 30)  # type: ignore[arg-type]
    pem = forged.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(VerificationError):
        verify(pem, (tmp_path / "ca.crt").read_bytes(), x509.DNSName("bank.example.com"))
    with pytest.raises(VerificationError):
        verify(pem, (tmp_path / "ca.crt").read_bytes(), x509.IPAddress(ipaddress.ip_address("8.8.8.8")))


def test_gen_cert_keeps_what_exists_unless_forced_and_renews_with_the_same_ca(tmp_path: Path) -> None:
    assert gen_cert(tmp_path, "--hostname", "robbie", "--ip", "192.168.1.20")[0] == 0
    ca_before = (tmp_path / "ca.crt").read_bytes()
    cert_before = (tmp_path / "cert.pem").read_bytes()

    code, out, err = gen_cert(tmp_path, "--hostname", "robbie")
    assert code == 1 and out == ""
    assert err == (
        f"robotcam gen-cert: {tmp_path / 'cert.pem'} already exists: --force replaces the "
        f"certificate (the CA in {tmp_path / 'ca.crt'} is kept when it covers the names, so "
        "phones keep trusting it)\n"
    )
    assert (tmp_path / "cert.pem").read_bytes() == cert_before

    code, out, err = gen_cert(tmp_path, "--hostname", "robbie", "--ip", "192.168.1.21", "--force")
    assert code == 0, err
    assert "the same CA as before" in out
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "cert.pem").read_bytes() != cert_before
    verify((tmp_path / "cert.pem").read_bytes(), ca_before, x509.IPAddress(ipaddress.ip_address("192.168.1.21")))

    # another host name is outside the old CA's constraints: a new CA, and it says so
    code, out, err = gen_cert(tmp_path, "--hostname", "rover", "--force")
    assert code == 0, err
    assert "new: install it on every phone" in out
    assert (tmp_path / "ca.crt").read_bytes() != ca_before


def test_gen_cert_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-cert", "--out-dir", str(tmp_path), "--ip", "not-an-ip"]) == 1
    assert "robotcam gen-cert: --ip: 'not-an-ip' does not appear to be an IPv4 or IPv6 address" in capsys.readouterr().err
    assert main(["gen-cert", "--out-dir", str(tmp_path), "--days", "0"]) == 1
    assert "--days must be at least 1" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["gen-cert", "--out-dir", str(blocker / "tls"), "--ip", "10.0.0.1"]) == 1
    assert "--out-dir: cannot create" in capsys.readouterr().err
    with pytest.raises(TLSError):
        generate(tmp_path / "x", "robbie", ["999.1.1.1"])


def test_key_readable_by_the_service_group_when_it_exists(tmp_path: Path, monkeypatch) -> None:
    import grp

    group = grp.getgrgid(os.getgid())
    monkeypatch.setattr("robotcam.service.tls.GROUP", group.gr_name)
    if os.geteuid() != 0:
        pytest.skip("only root hands files to another group")
    issued = generate(tmp_path, "robbie", ["10.0.0.2"])
    assert issued.key_group == group.gr_name
    mode = issued.key.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o640 and mode.st_gid == group.gr_gid
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600  # the CA key: root only


# --- the daemon over HTTPS ---------------------------------------------------------------------


def tls_daemon(workdir: Path, tls: str, auth: str = "{enabled: false}") -> DaemonProcess:
    """The daemon launched with `tls` as its server.tls value (not waited for: it may refuse)."""
    port = free_port()
    return DaemonProcess(workdir, port=port, config_text=(
        f"server: {{host: 127.0.0.1, port: {port}, tls: {tls}}}\n"
        "video: {source: testpattern, width: 320, height: 240, fps: 15}\n"
        "audio: {source: none}\n"
        "webrtc: {host_addresses: [127.0.0.1], ice_servers: []}\n"
        f"auth: {auth}\n"
    )).launch()


def fetch(url: str, context: ssl.SSLContext, timeout: float = 20.0) -> tuple[int, bytes, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=3) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "")
        except (urllib.error.URLError, ConnectionError) as exc:
            if isinstance(getattr(exc, "reason", None), ssl.SSLError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_daemon_serves_https_with_gen_cert_output(tmp_path: Path) -> None:
    assert gen_cert(tmp_path, "--hostname", "robbie", "--ip", "127.0.0.1")[0] == 0
    daemon = tls_daemon(tmp_path, f"{{cert: {tmp_path / 'cert.pem'}, key: {tmp_path / 'key.pem'}}}",
                        auth=f"{{state_directory: {tmp_path / 'state'}}}")
    try:
        trusting_the_ca = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        status, body, _ = fetch(f"https://localhost:{daemon.port}/health", trusting_the_ca)
        assert status == 200, body
        # over HTTPS the session cookie is Secure (the first-run admin signs in)
        password = daemon.output().split("initial admin password: ")[1].split()[0]
        login = urllib.request.Request(
            f"https://localhost:{daemon.port}/api/login", method="POST",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, context=trusting_the_ca, timeout=10) as response:
            cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        status, body, _ = fetch(f"https://127.0.0.1:{daemon.port}/", trusting_the_ca)
        assert status == 200 and b"<title>robotcam</title>" in body
        # the CA, for phones to install, in the form they take
        status, body, kind = fetch(f"https://localhost:{daemon.port}/robotcam-ca.crt", trusting_the_ca)
        assert status == 200 and kind == "application/x-x509-ca-cert"
        assert x509.load_der_x509_certificate(body) == x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
        # a client that does not trust the CA is refused, as a browser would warn
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"https://localhost:{daemon.port}/health", context=ssl.create_default_context(), timeout=5)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()
    assert f"robotcam is up: open https://127.0.0.1:{daemon.port}/" in daemon.log.read_text()


def _bad_tls_cases(tmp_path: Path) -> list[tuple[str, str]]:
    good = tmp_path / "good"
    other = tmp_path / "other"
    assert gen_cert(good, "--hostname", "robbie", "--ip", "127.0.0.1")[0] == 0
    assert gen_cert(other, "--hostname", "robbie", "--ip", "127.0.0.1")[0] == 0
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    return [
        (f"{{cert: {missing}, key: {good / 'key.pem'}}}",
         f"server.tls.cert: {missing} does not exist (sudo robotcam gen-cert makes one)"),
        (f"{{cert: {good / 'cert.pem'}, key: {missing}}}",
         f"server.tls.key: {missing} does not exist (sudo robotcam gen-cert makes one)"),
        (f"{{cert: {good / 'cert.pem'}, key: {other / 'key.pem'}}}",
         f"server.tls.key does not match server.tls.cert: {other / 'key.pem'} is not the key of "
         f"{good / 'cert.pem'} (regenerate both with robotcam gen-cert --force)"),
        (f"{{cert: {garbage}, key: {good / 'key.pem'}}}",
         f"server.tls.cert: {garbage} holds no PEM certificate"),
        (f"{{cert: {good / 'cert.pem'}, key: {garbage}}}",
         f"server.tls.key: {garbage} holds no PEM private key"),
        (f"{{cert: {good}, key: {good / 'key.pem'}}}",
         f"server.tls.cert: {good} is a directory, not a PEM file"),
    ]


def test_bad_tls_files_stop_the_daemon_with_a_message_naming_the_key(tmp_path: Path) -> None:
    for number, (tls, message) in enumerate(_bad_tls_cases(tmp_path)):
        workdir = tmp_path / f"case{number}"
        workdir.mkdir()
        daemon = tls_daemon(workdir, tls)
        try:
            code = daemon.proc.wait(30)
        finally:
            daemon.stop()
        log = daemon.log.read_text()
        assert code == 1, log
        assert message in log, log
